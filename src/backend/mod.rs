//! The machines the work runs on. `cpu/` holds the model's reference ops (generic over
//! f32/f64, f64 accumulation: the oracle and the no-GPU path); `cuda/` the GPU context,
//! buffers, our NVRTC-compiled kernels and cuBLASLt, tested against `cpu/`.

pub mod cpu;
pub mod cuda;
