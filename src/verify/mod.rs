//! `h200-mpibench verify`: what every rank's GPU and host are (inventory), whether they are
//! healthy, and how fast each GPU, host and link is (probes), each figure judged against the
//! median of the same figure over all its peers and against the reference table of the GPU
//! model (configs/reference/), so that one slow GPU, host or link is named before anyone
//! benchmarks.

pub mod burn;
pub mod figure;
pub mod gpu_links;
pub mod gpu_probes;
pub mod health;
pub mod host_probes;
pub mod hosts;
pub mod inventory;
pub mod mpi_pairs;
pub mod outcome;
pub mod reference;
pub mod schedule;
pub mod verdict;
