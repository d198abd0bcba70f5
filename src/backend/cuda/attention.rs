//! Causal GQA attention on the GPU as cuBLAS batched products around the causal softmax
//! kernels: S = Q·Kᵀ (fp32), P = softmax(S/√d) (bf16, kept for the backward), O = P·V. The
//! layouts are backend/cpu/attention.rs's: q, o [batch, seq, heads, hd], k, v [batch, seq,
//! kv_heads, hd]; scores [batch, heads, seq, seq]. One call per (batch, group member) covers
//! every KV head at once: query head h = kv·group + g.
//!
//! Causal blocks: the products run per block of queries (or, for dK and dV, of keys) over
//! only the keys (queries) the mask lets through, so with 4 blocks they do 5/8 of the dense
//! work. Score entries outside those ranges are never read: the softmax kernels read j ≤ i
//! and write every P and dS entry, zeros above the diagonal.

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

/// (first, end) of each block of `t` positions.
fn causal_blocks(t: usize) -> impl Iterator<Item = (usize, usize)> {
    let size = t.div_ceil(CAUSAL_BLOCKS);
    (0..t).step_by(size).map(move |first| (first, (first + size).min(t)))
}

fn shape_of(s: &Shape) -> (usize, usize, usize, usize, usize) {
    (s.seq, s.heads, s.kv_heads, s.head_dim, s.heads / s.kv_heads)
}

/// Element offsets of (batch b, group member g) in q/o, k/v and the score matrices.
fn offsets(s: &Shape, b: usize, g: usize) -> (usize, usize, usize) {
    let (t, h, kv, hd, _) = shape_of(s);
    (b * t * h * hd + g * hd, b * t * kv * hd, (b * h + g) * t * t)
}

pub fn forward(ops: &ModelOps, o: u64, q: u64, k: u64, v: u64, buf: &Buffers, s: Shape) -> Result<()> {
    let (t, h, kv, hd, group) = shape_of(&s);
    let scale = 1.0 / (hd as f64).sqrt();
    for b in 0..s.batch {
        for g in 0..group {
            let (qo, ko, so) = offsets(&s, b, g);
            // S = Q·Kᵀ: column-major Sᵀ (t×t) = Kᵀᵀ... i.e. op(K)=T over hd×t, Q as hd×t;
            // queries [first, end) against keys [0, end).
            for (first, end) in causal_blocks(t) {
                let kk = Operand { ptr: k + 2 * ko as u64, ld: kv * hd, stride: hd, transposed: true };
                let qq = Operand { ptr: q + 2 * (qo + first * h * hd) as u64, ld: h * hd, stride: group * hd, transposed: false };
                let ss = Output { ptr: buf.scores + 4 * (so + first * t) as u64, ld: t, stride: group * t * t, fp32: true, beta: 0.0 };
                ops.gemm.batched((end, end - first, hd), kk, qq, ss, kv, 1.0)?;
            }
        }
    }
    ops.causal_softmax_forward(buf.p, buf.scores, s.batch * h * t, t, scale)?;
    for b in 0..s.batch {
        for g in 0..group {
            let (qo, ko, so) = offsets(&s, b, g);
            // O = P·V: column-major Oᵀ (hd×t) = Vᵀ (hd×t) · Pᵀ (t×t).
            for (first, end) in causal_blocks(t) {
                let vv = Operand { ptr: v + 2 * ko as u64, ld: kv * hd, stride: hd, transposed: false };
                let pp = Operand { ptr: buf.p + 2 * (so + first * t) as u64, ld: t, stride: group * t * t, transposed: false };
                let oo = Output { ptr: o + 2 * (qo + first * h * hd) as u64, ld: h * hd, stride: group * hd, fp32: false, beta: 0.0 };
                ops.gemm.batched((hd, end - first, end), vv, pp, oo, kv, 1.0)?;
            }
        }
    }
    Ok(())
}

/// dq, dk, dv (bf16) are overwritten; `dp` is fp32 scratch like `scores` (may be the same).
#[allow(clippy::too_many_arguments)]
pub fn backward(ops: &ModelOps, dq: u64, dk: u64, dv: u64, d_o: u64, q: u64, k: u64, v: u64, buf: &Buffers, s: Shape) -> Result<()> {
    let (t, h, kv, hd, group) = shape_of(&s);
    let scale = 1.0 / (hd as f64).sqrt();
    let dp = buf.scores;
    for b in 0..s.batch {
        for g in 0..group {
            let (qo, ko, so) = offsets(&s, b, g);
            // dP = dO·Vᵀ (fp32), same form as S = Q·Kᵀ.
            for (first, end) in causal_blocks(t) {
                let vv = Operand { ptr: v + 2 * ko as u64, ld: kv * hd, stride: hd, transposed: true };
                let dd = Operand { ptr: d_o + 2 * (qo + first * h * hd) as u64, ld: h * hd, stride: group * hd, transposed: false };
                let out = Output { ptr: dp + 4 * (so + first * t) as u64, ld: t, stride: group * t * t, fp32: true, beta: 0.0 };
                ops.gemm.batched((end, end - first, hd), vv, dd, out, kv, 1.0)?;
            }
        }
    }
    ops.causal_softmax_backward(buf.ds, buf.p, dp, s.batch * h * t, t, scale)?;
    for b in 0..s.batch {
        for g in 0..group {
            let (qo, ko, so) = offsets(&s, b, g);
            let beta = if g == 0 { 0.0 } else { 1.0 }; // dK, dV sum over the group's query heads
            for (first, end) in causal_blocks(t) {
                // dQ = dS·K: column-major dQᵀ (hd×t) = Kᵀ (hd×t) · dSᵀ; queries [first, end)
                // against keys [0, end).
                let kk = Operand { ptr: k + 2 * ko as u64, ld: kv * hd, stride: hd, transposed: false };
                let ds = Operand { ptr: buf.ds + 2 * (so + first * t) as u64, ld: t, stride: group * t * t, transposed: false };
                let dqo = Output { ptr: dq + 2 * (qo + first * h * hd) as u64, ld: h * hd, stride: group * hd, fp32: false, beta: 0.0 };
                ops.gemm.batched((hd, end - first, end), kk, ds, dqo, kv, 1.0)?;
                // dK += dSᵀ·Q: column-major dKᵀ (hd×t) = Qᵀ (hd×t) · dS; keys [first, end)
                // against queries [first, t).
                let below = (so + first * t + first) as u64;
                let ds_t = Operand { ptr: buf.ds + 2 * below, ld: t, stride: group * t * t, transposed: true };
                let qq = Operand { ptr: q + 2 * (qo + first * h * hd) as u64, ld: h * hd, stride: group * hd, transposed: false };
                let dko = Output { ptr: dk + 2 * (ko + first * kv * hd) as u64, ld: kv * hd, stride: hd, fp32: false, beta };
                ops.gemm.batched((hd, end - first, t - first), qq, ds_t, dko, kv, 1.0)?;
                // dV += Pᵀ·dO: column-major dVᵀ (hd×t) = dOᵀ (hd×t) · P, blocked as dK.
                let p_t = Operand { ptr: buf.p + 2 * below, ld: t, stride: group * t * t, transposed: true };
                let dd = Operand { ptr: d_o + 2 * (qo + first * h * hd) as u64, ld: h * hd, stride: group * hd, transposed: false };
                let dvo = Output { ptr: dv + 2 * (ko + first * kv * hd) as u64, ld: kv * hd, stride: hd, fp32: false, beta };
                ops.gemm.batched((hd, end - first, t - first), dd, p_t, dvo, kv, 1.0)?;
            }
        }
    }
    Ok(())
}
