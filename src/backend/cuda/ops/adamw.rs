//! The optimizer's kernels (kernels/adamw.cu): AdamW on fp32 master weights with their bf16
//! copy, and the sum of squares behind the global gradient norm.

use super::super::kernels::{elementwise, launch, ModelOps, OpSource};
use crate::backend::cpu::adamw::AdamW;
use anyhow::Result;
use cudarc::driver::PushKernelArg;

pub fn source() -> OpSource {
    OpSource::plain(include_str!("../../../../kernels/adamw.cu"), &["adamw", "sum_squares"])
}

impl ModelOps<'_> {
    /// One AdamW step (t from 1) over `n` fp32 parameters, refreshing their bf16 copy.
    #[allow(clippy::too_many_arguments)]
    pub fn adamw(&self, opt: &AdamW, params: u64, params_bf16: u64, grads: u64, m: u64, v: u64, n: usize, t: u64, decay: bool, grad_scale: f64) -> Result<()> {
        let n = n as u64;
        let (lr, b1, b2, eps) = (opt.lr as f32, opt.beta1 as f32, opt.beta2 as f32, opt.eps as f32);
        let wd = if decay { opt.weight_decay as f32 } else { 0.0 };
        let (c1, c2) = ((1.0 - opt.beta1.powi(t as i32)) as f32, (1.0 - opt.beta2.powi(t as i32)) as f32);
        let scale = grad_scale as f32;
        launch!(self, "adamw", elementwise(n), params, params_bf16, grads, m, v, n, lr, b1, b2, eps, wd, c1, c2, scale)
    }

    /// Adds Σx² of `n` fp32 values into the fp64 at `total`.
    pub fn sum_squares(&self, total: u64, x: u64, n: usize) -> Result<()> {
        let n = n as u64;
        launch!(self, "sum_squares", elementwise(n), total, x, n)
    }
}
