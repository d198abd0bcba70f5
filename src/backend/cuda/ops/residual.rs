//! The residual stream: the backward's adds, y += x in bf16 (kernels/residual.cu), 8 per
//! access, and the forward's copies that a product then accumulates onto.

use super::super::check::{bf16s, compare, Check, Inputs, BF16_TOLERANCE, EXACT};
use super::super::kernels::{aligned_16, launch, ModelOps, OpSource};
use super::super::view::{lengths, View};
use anyhow::Result;
use cudarc::driver::PushKernelArg;
use half::bf16;

pub fn source() -> OpSource {
    OpSource::plain(include_str!("../../../../kernels/residual.cu"), &["add_bf16"])
}

impl ModelOps<'_> {
    /// y += x.
    pub fn add(&self, y: View<bf16>, x: View<bf16>) -> Result<()> {
        lengths("add", &[(x.len(), y.len(), "x")])?;
        let (n, y, x) = (y.len() as u64, y.ptr(), x.ptr());
        aligned_16(&[y, x])?;
        launch!(self, "add_bf16", self.elementwise(n.div_ceil(8)), y, x, n)
    }

    /// dst = src (a device copy, timed as an op).
    pub fn copy_bf16(&self, dst: View<bf16>, src: View<bf16>) -> Result<()> {
        lengths("copy", &[(src.len(), dst.len(), "src")])?;
        self.timer.time(|| "copy residual".into(), || self.gpu.copy_device(dst.ptr(), src.ptr(), 2 * dst.len()))
    }
}

/// 8 elements per step, and a tail; the copy exactly.
pub fn checks(ops: &ModelOps, r: &mut Inputs) -> Result<Vec<Check>> {
    let gpu = ops.gpu();
    let n = 256 * 1024 + 5;
    let shape = format!("n {n}");
    let (y, x) = (r.take(n, 1.0), r.take(n, 1.0));
    let (gy, gx, gcopy) = (gpu.upload(&y.bits)?, gpu.upload(&x.bits)?, gpu.alloc(n * 2)?);
    ops.add(gy.view(), gx.view())?;
    ops.copy_bf16(gcopy.view(), gx.view())?;
    let sum: Vec<f64> = y.values.iter().zip(&x.values).map(|(a, b)| a + b).collect();
    Ok(vec![compare("add (bf16)", &shape, &bf16s(gpu, &gy)?, &sum, BF16_TOLERANCE), compare("copy (bf16)", &shape, &bf16s(gpu, &gcopy)?, &x.values, EXACT)])
}
