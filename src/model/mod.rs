//! The Llama-2 model: shapes, the flat parameter layout, initialisation, and the CPU
//! forward/backward.

pub mod config;
pub mod cpu_model;
pub mod gpu_model;
pub mod init;
pub mod layout;
