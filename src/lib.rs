//! h200-mpibench as a library: the binary (src/main.rs) and the integration tests share it.

pub mod backend;
pub mod cli;
pub mod dist;
pub mod model;
pub mod results;
pub mod selftest;
pub mod sweep;
pub mod telemetry;
pub mod train;
pub mod verify;
pub mod zero;
