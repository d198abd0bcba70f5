//! Distribution: the MPI world, NCCL bootstrap over it, the collectives' arithmetic, what
//! training needs from the ranks, and the watchdog that keeps any rank's failure from hanging
//! the others.

pub mod collective;
pub mod fault;
pub mod interrupt;
pub mod nccl;
pub mod phase;
pub mod ranks;
pub mod watchdog;
pub mod world;
