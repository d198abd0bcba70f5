//! Distribution: the MPI world, NCCL bootstrap over it, and the watchdog that keeps any
//! rank's failure from hanging the others.

pub mod nccl;
pub mod watchdog;
pub mod world;
