//! Distribution: the MPI world, NCCL bootstrap over it, and the watchdog that keeps any
//! rank's failure from hanging the others.

pub mod interrupt;
pub mod nccl;
pub mod phase;
pub mod watchdog;
pub mod world;
