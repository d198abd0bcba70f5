//! The Llama-2 model: shapes, the flat parameter layout, initialisation, the step written once
//! (llama.rs) over the op trait (ops.rs) with its CPU and GPU ops, and the GPU model's state.

pub mod config;
pub mod cpu_ops;
pub mod gpu_model;
pub mod gpu_ops;
pub mod init;
pub mod layout;
pub mod llama;
pub mod ops;
