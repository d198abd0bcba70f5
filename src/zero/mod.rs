//! ZeRO: how model state is split over ranks: the partition of the flat buffer and the memory
//! planner. Stage 0 (plain data parallelism) runs on GPUs and CPUs, stage 1 on CPUs; stages
//! 2-3 are planned here but not yet executed.

pub mod partition;
pub mod planner;
