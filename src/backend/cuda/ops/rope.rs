//! Rotary position embedding, in place, both directions (kernels/rope.cu).

use super::super::check::{bf16s, compare, Check, Inputs, BF16_TOLERANCE};
use super::super::kernels::{aligned_16, launch, per_row, ModelOps, OpSource, MAX_BLOCK_THREADS};
use super::super::view::View;
use crate::backend::cpu::rope;
use anyhow::{ensure, Result};
use cudarc::driver::PushKernelArg;
use half::bf16;

pub fn source() -> OpSource {
    OpSource::plain(include_str!("../../../../kernels/rope.cu"), &["rope"])
}

/// Heads a RoPE block turns at once. A thread's four sincos serve heads / 4 of them: at 16 (a
/// block of 256 threads at head_dim 128, two heads a thread) the sincos made rope 14-25 % slower
/// than the 4-byte kernel before it (one H200, `--profile`, 7B 8 layers micro-batch 4).
const ROPE_HEADS_AT_ONCE: usize = 4;

impl ModelOps<'_> {
    /// In place on rows of `heads` × `head_dim`, a row's position its index mod `seq`;
    /// `backward` applies the inverse rotation.
    pub fn rope(&self, x: View<bf16>, seq: usize, heads: usize, head_dim: usize, theta: f64, backward: bool) -> Result<()> {
        let chunks = head_dim / 8; // a head's 16-byte accesses
        ensure!(
            head_dim > 0 && head_dim % 8 == 0 && chunks * ROPE_HEADS_AT_ONCE <= MAX_BLOCK_THREADS,
            "head_dim {head_dim}: the RoPE kernel takes multiples of 8 up to {}",
            8 * MAX_BLOCK_THREADS / ROPE_HEADS_AT_ONCE
        );
        ensure!(heads > 0 && x.len() % (heads * head_dim) == 0, "rope: {} elements are not rows of {heads} × {head_dim}", x.len());
        let rows = x.len() / (heads * head_dim);
        // A multiple of a head's chunks: each thread keeps the four pair indices of one over a
        // share of the heads.
        let threads = (chunks * ROPE_HEADS_AT_ONCE.min(heads)) as u32;
        let (x, seq, heads, hd, theta) = (x.ptr(), seq as i32, heads as i32, head_dim as i32, theta as f32);
        aligned_16(&[x])?;
        let sign = if backward { -1f32 } else { 1f32 };
        launch!(self, "rope", per_row(rows, threads), x, seq, heads, hd, theta, sign)
    }
}

/// A 7B-shaped query block, and fewer heads than a block turns at once at the tiny model's
/// head_dim; both directions.
pub fn checks(ops: &ModelOps, r: &mut Inputs) -> Result<Vec<Check>> {
    let gpu = ops.gpu();
    let theta = 10000.0;
    let mut out = Vec::new();
    for (seq, heads, hd) in [(512, 8, 128), (77, 3, 16)] {
        let rows = 2 * seq;
        let shape = format!("rows {rows} heads {heads} head_dim {hd}");
        let x = r.take(rows * heads * hd, 1.0);
        for (backward, name) in [(false, "rope forward (bf16)"), (true, "rope backward (bf16)")] {
            let gx = gpu.upload(&x.bits)?;
            ops.rope(gx.view(), seq, heads, hd, theta, backward)?;
            let mut want = x.values.clone();
            let turn = if backward { rope::backward } else { rope::forward };
            turn(&mut want, seq, heads, hd, theta);
            out.push(compare(name, &shape, &bf16s(gpu, &gx)?, &want, BF16_TOLERANCE));
        }
    }
    Ok(out)
}
