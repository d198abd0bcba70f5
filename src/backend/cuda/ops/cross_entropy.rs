//! Masked cross-entropy over the logits, which become their own gradient (kernels/cross_entropy.cu).

use super::super::kernels::{launch, per_row, ModelOps, OpSource};
use anyhow::Result;
use cudarc::driver::PushKernelArg;

pub fn source() -> OpSource {
    OpSource::plain(include_str!("../../../../kernels/cross_entropy.cu"), &["cross_entropy"])
}

impl ModelOps<'_> {
    /// Per-row losses to `losses` (fp32); logits become d(loss)/d(logits) × `scale`.
    pub fn cross_entropy(&self, logits: u64, losses: u64, labels: u64, rows: usize, vocab: usize, scale: f64) -> Result<()> {
        let (vocab, scale) = (vocab as i32, scale as f32);
        launch!(self, "cross_entropy", per_row(rows, 1024), logits, losses, labels, vocab, scale)
    }
}
