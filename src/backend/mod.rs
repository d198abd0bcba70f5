//! The op set the Llama model needs. `cpu/` is the reference (generic over f32/f64, f64
//! accumulation) and the no-GPU path; the GPU kernels are tested against it.

pub mod cpu;
