//! Masked cross-entropy over the logits, which become their own gradient (kernels/cross_entropy.cu).

use super::super::check::{bf16s, compare, f32s, Check, Inputs, BF16_TOLERANCE, F32_TOLERANCE};
use super::super::kernels::{aligned_16, launch, per_row, ModelOps, OpSource};
use super::super::view::{lengths, View};
use crate::backend::cpu::cross_entropy::{self, IGNORE};
use crate::sweep::pattern::mix;
use anyhow::{ensure, Result};
use cudarc::driver::PushKernelArg;
use half::bf16;

pub fn source() -> OpSource {
    OpSource::plain(include_str!("../../../../kernels/cross_entropy.cu"), &["cross_entropy"])
}

/// The GPU cross-entropy reads rows of logits 8 bf16 (16 bytes) at a time: the vocabulary must be a
/// multiple.
pub const VOCAB_MULTIPLE: usize = 8;

impl ModelOps<'_> {
    /// Per-row losses (fp32, 0 where the label is negative); the logits, one row per label,
    /// become d(loss)/d(logits) × `scale`.
    pub fn cross_entropy(&self, logits: View<bf16>, losses: View<f32>, labels: View<i32>, scale: f64) -> Result<()> {
        let rows = labels.len();
        ensure!(rows > 0 && logits.len() % rows == 0, "cross-entropy: {} logits are not {rows} rows", logits.len());
        lengths("cross-entropy", &[(losses.len(), rows, "losses")])?;
        let vocab = logits.len() / rows;
        ensure!(vocab % VOCAB_MULTIPLE == 0, "cross-entropy: the kernel reads rows {VOCAB_MULTIPLE} logits at a time; vocabulary {vocab} is not a multiple");
        let (vocab, scale) = (vocab as i32, scale as f32);
        let (logits, losses, labels) = (logits.ptr(), losses.ptr(), labels.ptr());
        aligned_16(&[logits])?;
        launch!(self, "cross_entropy", per_row(rows, 1024), logits, losses, labels, vocab, scale)
    }
}

/// Over the Llama vocabulary, a quarter of the positions ignored.
pub fn checks(ops: &ModelOps, r: &mut Inputs) -> Result<Vec<Check>> {
    let gpu = ops.gpu();
    let (rows, vocab) = (64, 32000);
    let shape = format!("rows {rows} vocab {vocab}");
    let logits = r.take(rows * vocab, 8.0);
    let labels: Vec<i32> = (0..rows as u64).map(|i| if i % 4 == 3 { IGNORE } else { (mix(r.seed, 77, i) % vocab as u64) as i32 }).collect();
    let counted = cross_entropy::counted(&labels);
    let (gl, glab, gloss) = (gpu.upload(&logits.bits)?, gpu.upload(&labels)?, gpu.alloc(rows * 4)?);
    ops.cross_entropy(gl.view(), gloss.view(), glab.view(), 1.0 / counted as f64)?;
    let mut grad = logits.values.clone();
    let mean = cross_entropy::mean_loss(&mut grad, &labels, vocab);
    let gpu_mean = f32s(gpu, &gloss)?.iter().sum::<f64>() / counted as f64;
    Ok(vec![
        compare("cross-entropy mean loss (fp32)", &shape, &[gpu_mean], &[mean], F32_TOLERANCE),
        compare("cross-entropy dlogits (bf16)", &shape, &bf16s(gpu, &gl)?, &grad, BF16_TOLERANCE),
    ])
}
