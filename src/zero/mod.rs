//! ZeRO: how model state is split over ranks. So far the memory planner; stage 0 (plain data
//! parallelism) runs in train/, stages 1-3 are planned here but not yet executed.

pub mod planner;
