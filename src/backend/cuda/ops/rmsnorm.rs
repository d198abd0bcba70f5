//! RMSNorm forward and backward (kernels/rmsnorm.cu): rows read 8 bf16 at a time.

use super::super::kernels::{aligned_16, launch, per_row, ModelOps, OpSource, THREADS};
use anyhow::{ensure, Result};
use cudarc::driver::PushKernelArg;

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
    let threads = d.div_ceil(RMS_COLUMNS_PER_THREAD).next_multiple_of(32).clamp(THREADS as usize, 1024);
    ensure!(d <= RMS_COLUMNS_PER_THREAD * threads, "row width {d} above the RMSNorm kernels' 16384");
    Ok(threads as u32)
}

impl ModelOps<'_> {
    #[allow(clippy::too_many_arguments)]
    pub fn rmsnorm_forward(&self, y: u64, inv_rms: u64, x: u64, w: u64, rows: usize, d: usize, eps: f64) -> Result<()> {
        let threads = rms_threads(d)?;
        aligned_16(&[y, x, w])?;
        let (d, eps) = (d as i32, eps as f32);
        launch!(self, "rmsnorm_forward", per_row(rows, threads), y, inv_rms, x, w, d, eps)
    }

    /// dw (fp32) is accumulated.
    #[allow(clippy::too_many_arguments)]
    pub fn rmsnorm_backward(&self, dx: u64, dw: u64, dy: u64, x: u64, w: u64, inv_rms: u64, rows: usize, d: usize) -> Result<()> {
        let threads = rms_threads(d)?;
        aligned_16(&[dx, dy, x, w])?;
        let per_block = rows.div_ceil(RMS_BACKWARD_BLOCKS);
        let blocks = rows.div_ceil(per_block);
        let (d, rows, per) = (d as i32, rows as i32, per_block as i32);
        launch!(self, "rmsnorm_backward", per_row(blocks, threads), dx, dw, dy, x, w, inv_rms, d, rows, per)
    }
}
