//! The matrix multiplies, y = x·Wᵀ and its two backward products, on cuBLASLt (gemm.rs), each
//! timed as one op; bf16 operands, fp32 weight gradients.

use super::super::check::{bf16s, compare, f32s, Check, Inputs, BF16_TOLERANCE, F32_TOLERANCE};
use super::super::gemm::Gemm;
use super::super::kernels::ModelOps;
use super::super::view::{lengths, View};
use crate::backend::cpu::matmul::{self, Dims};
use anyhow::Result;
use half::bf16;

fn label((m, n, k): (usize, usize, usize)) -> String {
    format!("cuBLASLt {m}x{n}x{k}")
}

impl ModelOps<'_> {
    /// y (+)= x · Wᵀ: x [m, k], W [n, k], y [m, n].
    pub fn matmul(&self, y: View<bf16>, x: View<bf16>, w: View<bf16>, d: Dims, accumulate: bool) -> Result<()> {
        lengths("matmul", &[(x.len(), d.m * d.k, "x"), (w.len(), d.n * d.k, "W"), (y.len(), d.m * d.n, "y")])?;
        self.timer.time(|| label(Gemm::forward_mnk(d)), || self.gemm.forward(y.ptr(), x.ptr(), w.ptr(), d, accumulate))
    }

    /// dx (+)= dy · W.
    pub fn matmul_backward_input(&self, dx: View<bf16>, dy: View<bf16>, w: View<bf16>, d: Dims, accumulate: bool) -> Result<()> {
        lengths("matmul backward", &[(dx.len(), d.m * d.k, "dx"), (dy.len(), d.m * d.n, "dy"), (w.len(), d.n * d.k, "W")])?;
        self.timer.time(|| label(Gemm::backward_input_mnk(d)), || self.gemm.backward_input(dx.ptr(), dy.ptr(), w.ptr(), d, accumulate))
    }

    /// dW (fp32) += dyᵀ · x.
    pub fn matmul_backward_weight(&self, dw: View<f32>, dy: View<bf16>, x: View<bf16>, d: Dims) -> Result<()> {
        lengths("matmul backward", &[(dw.len(), d.n * d.k, "dW"), (dy.len(), d.m * d.n, "dy"), (x.len(), d.m * d.k, "x")])?;
        self.timer.time(|| label(Gemm::backward_weight_mnk(d)), || self.gemm.backward_weight(dw.ptr(), dy.ptr(), x.ptr(), d))
    }
}

/// y = x·Wᵀ, dx = dy·W, dW += dyᵀ·x against the reference.
pub fn checks(ops: &ModelOps, r: &mut Inputs) -> Result<Vec<Check>> {
    let gpu = ops.gpu();
    let d = Dims { m: 256, k: 512, n: 384 };
    let shape = format!("m {} k {} n {}", d.m, d.k, d.n);
    let (x, w, dy) = (r.take(d.m * d.k, 1.0), r.take(d.n * d.k, 0.05), r.take(d.m * d.n, 1.0));
    let dw0: Vec<f32> = r.take(d.n * d.k, 1.0).values.iter().map(|&v| v as f32).collect();
    let (gx, gw, gdy, gdw) = (gpu.upload(&x.bits)?, gpu.upload(&w.bits)?, gpu.upload(&dy.bits)?, gpu.upload(&dw0)?);
    let (gy, gdx) = (gpu.alloc(d.m * d.n * 2)?, gpu.alloc(d.m * d.k * 2)?);
    ops.matmul(gy.view(), gx.view(), gw.view(), d, false)?;
    ops.matmul_backward_input(gdx.view(), gdy.view(), gw.view(), d, false)?;
    ops.matmul_backward_weight(gdw.view(), gdy.view(), gx.view(), d)?;
    let (mut y, mut dx) = (vec![0.0; d.m * d.n], vec![0.0; d.m * d.k]);
    let mut dw: Vec<f64> = dw0.iter().map(|&v| v as f64).collect();
    matmul::forward(&mut y, &x.values, &w.values, d, false);
    matmul::backward_input(&mut dx, &dy.values, &w.values, d, false);
    matmul::backward_weight(&mut dw, &dy.values, &x.values, d);
    Ok(vec![
        compare("matmul forward (bf16 y)", &shape, &bf16s(gpu, &gy)?, &y, BF16_TOLERANCE),
        compare("matmul backward dx (bf16)", &shape, &bf16s(gpu, &gdx)?, &dx, BF16_TOLERANCE),
        compare("matmul backward dW += (fp32)", &shape, &f32s(gpu, &gdw)?, &dw, F32_TOLERANCE),
    ])
}
