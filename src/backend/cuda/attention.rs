//! Causal GQA attention on the GPU as cuBLASLt batched products around the causal softmax
//! kernels: S = Q·Kᵀ (fp32), P = softmax(S/√d) (bf16, kept for the backward), O = P·V. The
//! layouts are backend/cpu/attention.rs's: q, o [batch, seq, heads, hd], k, v [batch, seq,
//! kv_heads, hd]; scores [batch, heads, seq, seq]. One call per (batch, group member) covers
//! every KV head at once: query head h = kv·group + g.
//!
//! Causal blocks: the products run per block of queries (or, for dK and dV, of keys) over
//! only the keys (queries) the mask lets through, so with 4 blocks they do 5/8 of the dense
//! work. Score entries outside those ranges are never read: the softmax kernels read j ≤ i
//! and write P and dS up to the end of the query's block, zeros above the diagonal.

use super::gemm::{Operand, Output};
use super::model_ops::ModelOps;
use crate::backend::cpu::attention::Shape;
use anyhow::Result;

/// Device buffers of one attention call (addresses). `p` is saved for the backward;
/// `scores` (fp32) and `ds` (bf16) are scratch of [batch, heads, seq, seq].
pub struct Buffers {
    pub scores: u64,
    pub p: u64,
    pub ds: u64,
}

/// Blocks the sequence is cut into for the causal products.
const CAUSAL_BLOCKS: usize = 4;

/// Positions per causal block of a sequence of `t`.
fn block_size(t: usize) -> usize {
    t.div_ceil(CAUSAL_BLOCKS)
}

/// (first, end) of each block of `t` positions.
fn causal_blocks(t: usize) -> impl Iterator<Item = (usize, usize)> {
    let size = block_size(t);
    (0..t).step_by(size).map(move |first| (first, (first + size).min(t)))
}

fn shape_of(s: &Shape) -> (usize, usize, usize, usize, usize) {
    (s.seq, s.heads, s.kv_heads, s.head_dim, s.heads / s.kv_heads)
}

/// One batched product's place: element offsets of (batch b, group member g) in q/o, k/v and
/// the score matrices, g itself, and the causal block [first, end).
struct Block {
    qo: usize,
    ko: usize,
    so: usize,
    g: usize,
    first: usize,
    end: usize,
}

/// Every (batch, group member, causal block), each one call covering all KV heads.
fn blocks(s: &Shape) -> impl Iterator<Item = Block> + '_ {
    let (t, h, kv, hd, group) = shape_of(s);
    (0..s.batch).flat_map(move |b| {
        (0..group).flat_map(move |g| {
            let (qo, ko, so) = (b * t * h * hd + g * hd, b * t * kv * hd, (b * h + g) * t * t);
            causal_blocks(t).map(move |(first, end)| Block { qo, ko, so, g, first, end })
        })
    })
}

/// `out` (fp32, score layout) = rows·colsᵀ per head: rows like q [batch, seq, heads, hd], cols
/// like k [batch, seq, kv_heads, hd]; queries [first, end) against keys [0, end).
/// S = Q·Kᵀ and dP = dO·Vᵀ. Column-major: outᵀ (t×t) = op(cols)=T over hd×t, rows as hd×t.
fn causal_scores(ops: &ModelOps, out: u64, rows: u64, cols: u64, s: &Shape) -> Result<()> {
    let (t, h, kv, hd, group) = shape_of(s);
    for Block { qo, ko, so, first, end, .. } in blocks(s) {
        let cc = Operand { ptr: cols + 2 * ko as u64, ld: kv * hd, stride: hd, transposed: true };
        let rr = Operand { ptr: rows + 2 * (qo + first * h * hd) as u64, ld: h * hd, stride: group * hd, transposed: false };
        let oo = Output { ptr: out + 4 * (so + first * t) as u64, ld: t, stride: group * t * t, fp32: true, beta: 0.0 };
        ops.gemm.batched((end, end - first, hd), cc, rr, oo, kv, 1.0)?;
    }
    Ok(())
}

/// `out` (bf16, like q) = weights·values per head: weights bf16 in score layout, values like
/// k; queries [first, end) against keys [0, end). O = P·V and dQ = dS·K. Column-major:
/// outᵀ (hd×t) = valuesᵀ (hd×t) · weightsᵀ (t×t).
fn weighted_sum(ops: &ModelOps, out: u64, weights: u64, values: u64, s: &Shape) -> Result<()> {
    let (t, h, kv, hd, group) = shape_of(s);
    for Block { qo, ko, so, first, end, .. } in blocks(s) {
        let vv = Operand { ptr: values + 2 * ko as u64, ld: kv * hd, stride: hd, transposed: false };
        let ww = Operand { ptr: weights + 2 * (so + first * t) as u64, ld: t, stride: group * t * t, transposed: false };
        let oo = Output { ptr: out + 2 * (qo + first * h * hd) as u64, ld: h * hd, stride: group * hd, fp32: false, beta: 0.0 };
        ops.gemm.batched((hd, end - first, end), vv, ww, oo, kv, 1.0)?;
    }
    Ok(())
}

/// `out` (bf16, like k) = weightsᵀ·rows summed over each KV head's query heads: weights bf16
/// in score layout, rows like q; keys [first, end) against queries [first, t). dK = dSᵀ·Q and
/// dV = Pᵀ·dO. Column-major: outᵀ (hd×t) = rowsᵀ (hd×t) · weights.
fn transposed_weighted_sum(ops: &ModelOps, out: u64, weights: u64, rows: u64, s: &Shape) -> Result<()> {
    let (t, h, kv, hd, group) = shape_of(s);
    for Block { qo, ko, so, g, first, end } in blocks(s) {
        let beta = if g == 0 { 0.0 } else { 1.0 };
        let ww = Operand { ptr: weights + 2 * (so + first * t + first) as u64, ld: t, stride: group * t * t, transposed: true };
        let rr = Operand { ptr: rows + 2 * (qo + first * h * hd) as u64, ld: h * hd, stride: group * hd, transposed: false };
        let oo = Output { ptr: out + 2 * (ko + first * kv * hd) as u64, ld: kv * hd, stride: hd, fp32: false, beta };
        ops.gemm.batched((hd, end - first, t - first), rr, ww, oo, kv, 1.0)?;
    }
    Ok(())
}

pub fn forward(ops: &ModelOps, o: u64, q: u64, k: u64, v: u64, buf: &Buffers, s: Shape) -> Result<()> {
    let (t, h, hd) = (s.seq, s.heads, s.head_dim);
    causal_scores(ops, buf.scores, q, k, &s)?;
    ops.causal_softmax_forward(buf.p, buf.scores, s.batch * h * t, t, block_size(t), 1.0 / (hd as f64).sqrt())?;
    weighted_sum(ops, o, buf.p, v, &s)
}

/// dq, dk, dv (bf16) are overwritten; `scores` serves as the fp32 dP.
#[allow(clippy::too_many_arguments)]
pub fn backward(ops: &ModelOps, dq: u64, dk: u64, dv: u64, d_o: u64, q: u64, k: u64, v: u64, buf: &Buffers, s: Shape) -> Result<()> {
    let (t, h, hd) = (s.seq, s.heads, s.head_dim);
    let dp = buf.scores;
    causal_scores(ops, dp, d_o, v, &s)?;
    ops.causal_softmax_backward(buf.ds, buf.p, dp, s.batch * h * t, t, block_size(t), 1.0 / (hd as f64).sqrt())?;
    weighted_sum(ops, dq, buf.ds, k, &s)?;
    transposed_weighted_sum(ops, dk, buf.ds, q, &s)?;
    transposed_weighted_sum(ops, dv, buf.p, d_o, &s)
}
