//! The backward's residual adds, y += x in bf16 (kernels/residual.cu), 8 per access.

use super::super::kernels::{aligned_16, elementwise, launch, ModelOps, OpSource};
use anyhow::Result;
use cudarc::driver::PushKernelArg;

pub fn source() -> OpSource {
    OpSource::plain(include_str!("../../../../kernels/residual.cu"), &["add_bf16"])
}

impl ModelOps<'_> {
    /// y += x over `n` bf16 values.
    pub fn add(&self, y: u64, x: u64, n: usize) -> Result<()> {
        aligned_16(&[y, x])?;
        let n = n as u64;
        launch!(self, "add_bf16", elementwise(n.div_ceil(8)), y, x, n)
    }
}
