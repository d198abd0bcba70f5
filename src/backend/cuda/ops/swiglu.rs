//! SwiGLU, h = silu(gate) ⊙ up, forward and backward (kernels/swiglu.cu), 8 bf16 per access.

use super::super::kernels::{aligned_16, elementwise, launch, ModelOps, OpSource};
use anyhow::Result;
use cudarc::driver::PushKernelArg;

pub fn source() -> OpSource {
    OpSource::plain(include_str!("../../../../kernels/swiglu.cu"), &["swiglu_forward", "swiglu_backward"])
}

impl ModelOps<'_> {
    pub fn swiglu_forward(&self, h: u64, gate: u64, up: u64, n: usize) -> Result<()> {
        aligned_16(&[h, gate, up])?;
        let n = n as u64;
        launch!(self, "swiglu_forward", elementwise(n.div_ceil(8)), h, gate, up, n)
    }

    pub fn swiglu_backward(&self, dgate: u64, dup: u64, dh: u64, gate: u64, up: u64, n: usize) -> Result<()> {
        aligned_16(&[dgate, dup, dh, gate, up])?;
        let n = n as u64;
        launch!(self, "swiglu_backward", elementwise(n.div_ceil(8)), dgate, dup, dh, gate, up, n)
    }
}
