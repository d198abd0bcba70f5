//! The residual stream: the backward's adds, y += x in bf16 (kernels/residual.cu), 8 per
//! access, and the forward's copies that a product then accumulates onto.

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

    /// dst = src over `n` bf16 values (a device copy, timed as an op).
    pub fn copy_bf16(&self, dst: u64, src: u64, n: usize) -> Result<()> {
        self.gemm.timer.time(|| "copy residual".into(), || self.gpu.copy_device(dst, src, 2 * n))
    }
}
