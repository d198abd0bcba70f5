//! RMSNorm forward and backward (kernels/rmsnorm.cu): rows read 8 bf16 at a time.

use super::super::check::{bf16s, compare, f32s, Check, Inputs, BF16_TOLERANCE, F32_TOLERANCE};
use super::super::kernels::{aligned_16, launch, per_row, ModelOps, OpSource, MAX_BLOCK_THREADS, THREADS};
use super::super::view::{lengths, View};
use crate::backend::cpu::rmsnorm;
use anyhow::{ensure, Result};
use cudarc::driver::PushKernelArg;
use half::bf16;

pub fn source() -> OpSource {
    OpSource::plain(include_str!("../../../../kernels/rmsnorm.cu"), &["rmsnorm_forward", "rmsnorm_backward"])
}

/// RMSNorm backward blocks: enough to fill every SM several times over (a block's rows run one
/// after another), few enough that the per-block dw atomics stay cheap.
const RMS_BACKWARD_BLOCKS: usize = 512;

/// Columns of a row that each RMSNorm-backward thread holds in registers (kernels/rmsnorm.cu:
/// 8 × RMS_CHUNKS).
const RMS_COLUMNS_PER_THREAD: usize = 16;

/// Threads per row for the RMSNorm kernels, which read rows of `d` 8 bf16 at a time.
fn rms_threads(d: usize) -> Result<u32> {
    ensure!(d % 8 == 0, "the RMSNorm kernels need a width that is a multiple of 8, not {d}");
    let threads = d.div_ceil(RMS_COLUMNS_PER_THREAD).next_multiple_of(32).clamp(THREADS as usize, MAX_BLOCK_THREADS);
    ensure!(d <= RMS_COLUMNS_PER_THREAD * threads, "row width {d} above the RMSNorm kernels' 16384");
    Ok(threads as u32)
}

impl ModelOps<'_> {
    /// y = x · inv_rms ⊙ w over rows of w's width; one inv_rms per row.
    pub fn rmsnorm_forward(&self, y: View<bf16>, inv_rms: View<f32>, x: View<bf16>, w: View<bf16>, eps: f64) -> Result<()> {
        let (rows, d) = (inv_rms.len(), w.len());
        lengths("rmsnorm", &[(x.len(), rows * d, "x"), (y.len(), rows * d, "y")])?;
        let threads = rms_threads(d)?;
        let (y, inv_rms, x, w) = (y.ptr(), inv_rms.ptr(), x.ptr(), w.ptr());
        aligned_16(&[y, x, w])?;
        let (d, eps) = (d as i32, eps as f32);
        launch!(self, "rmsnorm_forward", per_row(rows, threads), y, inv_rms, x, w, d, eps)
    }

    /// dx overwritten, dw (fp32) accumulated; x and inv_rms are the forward's.
    pub fn rmsnorm_backward(&self, dx: View<bf16>, dw: View<f32>, dy: View<bf16>, x: View<bf16>, w: View<bf16>, inv_rms: View<f32>) -> Result<()> {
        let (rows, d) = (inv_rms.len(), w.len());
        lengths("rmsnorm backward", &[(dx.len(), rows * d, "dx"), (dy.len(), rows * d, "dy"), (x.len(), rows * d, "x"), (dw.len(), d, "dw")])?;
        let threads = rms_threads(d)?;
        let (dx, dw, dy, x, w, inv_rms) = (dx.ptr(), dw.ptr(), dy.ptr(), x.ptr(), w.ptr(), inv_rms.ptr());
        aligned_16(&[dx, dy, x, w])?;
        let per_block = rows.div_ceil(RMS_BACKWARD_BLOCKS);
        let blocks = rows.div_ceil(per_block);
        let (d, rows, per) = (d as i32, rows as i32, per_block as i32);
        launch!(self, "rmsnorm_backward", per_row(blocks, threads), dx, dw, dy, x, w, inv_rms, d, rows, per)
    }
}

/// A little wider than 7B's rows, so the last threads hold part of a row; more rows than
/// RMS_BACKWARD_BLOCKS, so a backward block takes several (its next row loaded while it reduces
/// this one), the last block fewer.
pub fn checks(ops: &ModelOps, r: &mut Inputs) -> Result<Vec<Check>> {
    let gpu = ops.gpu();
    let (rows, d, eps) = (1100, 4104, 1e-5);
    let shape = format!("rows {rows} d {d}");
    let (x, w, dy) = (r.take(rows * d, 2.0), r.take(d, 1.0), r.take(rows * d, 1.0));
    let (gx, gw, gdy) = (gpu.upload(&x.bits)?, gpu.upload(&w.bits)?, gpu.upload(&dy.bits)?);
    let (gy, ginv, gdx) = (gpu.alloc(rows * d * 2)?, gpu.alloc(rows * 4)?, gpu.alloc(rows * d * 2)?);
    let gdw = gpu.upload(&vec![0f32; d])?;
    ops.rmsnorm_forward(gy.view(), ginv.view(), gx.view(), gw.view(), eps)?;
    ops.rmsnorm_backward(gdx.view(), gdw.view(), gdy.view(), gx.view(), gw.view(), ginv.view())?;
    let (mut y, mut inv) = (vec![0.0; rows * d], vec![0.0; rows]);
    rmsnorm::forward(&mut y, &mut inv, &x.values, &w.values, d, eps);
    let (mut dx, mut dw) = (vec![0.0; rows * d], vec![0.0; d]);
    rmsnorm::backward(&mut dx, &mut dw, &dy.values, &x.values, &w.values, &inv, d);
    Ok(vec![
        compare("rmsnorm forward (bf16 y)", &shape, &bf16s(gpu, &gy)?, &y, BF16_TOLERANCE),
        compare("rmsnorm forward 1/rms (fp32)", &shape, &f32s(gpu, &ginv)?, &inv, F32_TOLERANCE),
        compare("rmsnorm backward dx (bf16)", &shape, &bf16s(gpu, &gdx)?, &dx, BF16_TOLERANCE),
        compare("rmsnorm backward dw (fp32)", &shape, &f32s(gpu, &gdw)?, &dw, F32_TOLERANCE),
    ])
}
