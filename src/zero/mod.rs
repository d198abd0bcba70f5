//! ZeRO: how model state is split over ranks: the partition of the flat buffer and the memory
//! planner. Stages 0 (plain data parallelism) and 1 run on GPUs and CPUs; stages 2-3 are
//! planned here but not yet executed.

pub mod partition;
pub mod planner;
