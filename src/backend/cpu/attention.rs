//! Causal self-attention with grouped KV heads (GQA), flash-style: the forward keeps only the
//! log-sum-exp of each score row, the backward recomputes the probabilities from it.
//! q, o: [batch, seq, heads, head_dim]; k, v: [batch, seq, kv_heads, head_dim];
//! lse: [batch, heads, seq]. Query head h reads KV head h / (heads / kv_heads).

use super::{dot, Real};
use rayon::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Shape {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl Shape {
    /// Elements of q or o (and their gradients).
    pub fn q_len(&self) -> usize {
        self.batch * self.seq * self.heads * self.head_dim
    }
    /// Elements of k or v (and their gradients).
    pub fn kv_len(&self) -> usize {
        self.batch * self.seq * self.kv_heads * self.head_dim
    }
    /// Query rows: the length of lse and delta.
    pub fn rows(&self) -> usize {
        self.batch * self.heads * self.seq
    }
    fn q_at(&self, b: usize, t: usize, h: usize) -> usize {
        ((b * self.seq + t) * self.heads + h) * self.head_dim
    }
    fn kv_at(&self, b: usize, t: usize, h: usize) -> usize {
        ((b * self.seq + t) * self.kv_heads + h) * self.head_dim
    }
    fn group(&self) -> usize {
        self.heads / self.kv_heads
    }
    fn scale(&self) -> f64 {
        1.0 / (self.head_dim as f64).sqrt()
    }
}

/// Scores of query (b, i, h) against keys 0..=i.
fn scores<T: Real>(s: &Shape, q: &[T], k: &[T], b: usize, i: usize, h: usize) -> Vec<f64> {
    let hd = s.head_dim;
    let qi = &q[s.q_at(b, i, h)..][..hd];
    let kvh = h / s.group();
    (0..=i).map(|j| dot(qi, &k[s.kv_at(b, j, kvh)..][..hd]) * s.scale()).collect()
}

pub fn forward<T: Real>(o: &mut [T], lse: &mut [T], q: &[T], k: &[T], v: &[T], s: Shape) {
    let hd = s.head_dim;
    // One task per (batch, position): writes that position's output rows and lse entries.
    let rows: Vec<(usize, usize, Vec<T>, Vec<T>)> = (0..s.batch * s.seq)
        .into_par_iter()
        .map(|bt| {
            let (b, i) = (bt / s.seq, bt % s.seq);
            let mut out = vec![T::zero(); s.heads * hd];
            let mut lses = vec![T::zero(); s.heads];
            for h in 0..s.heads {
                let sc = scores(&s, q, k, b, i, h);
                let max = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = sc.iter().map(|x| (x - max).exp()).sum();
                let kvh = h / s.group();
                for c in 0..hd {
                    let acc: f64 = sc.iter().enumerate().map(|(j, x)| (x - max).exp() / sum * v[s.kv_at(b, j, kvh) + c].f64()).sum();
                    out[h * hd + c] = T::of(acc);
                }
                lses[h] = T::of(max + sum.ln());
            }
            (b, i, out, lses)
        })
        .collect();
    for (b, i, out, lses) in rows {
        o[s.q_at(b, i, 0)..][..s.heads * hd].copy_from_slice(&out);
        for (h, l) in lses.into_iter().enumerate() {
            lse[(b * s.heads + h) * s.seq + i] = l;
        }
    }
}

/// The gradients one (batch, kv head) task produces: dK and dV rows of the head, and the dQ
/// row (position, query head) of each query head in its group.
struct KvHeadGrads {
    b: usize,
    kvh: usize,
    dk: Vec<f64>,
    dv: Vec<f64>,
    dq: Vec<(usize, usize, Vec<f64>)>,
}

/// dq, dk, dv are overwritten.
#[allow(clippy::too_many_arguments)]
pub fn backward<T: Real>(dq: &mut [T], dk: &mut [T], dv: &mut [T], d_o: &[T], q: &[T], k: &[T], v: &[T], o: &[T], lse: &[T], s: Shape) {
    let hd = s.head_dim;
    dq.iter_mut().chain(dk.iter_mut()).chain(dv.iter_mut()).for_each(|x| *x = T::zero());
    // One task per (batch, kv head): owns dK, dV of that head and dQ of its query heads.
    let parts: Vec<KvHeadGrads> = (0..s.batch * s.kv_heads)
        .into_par_iter()
        .map(|bk| {
            let (b, kvh) = (bk / s.kv_heads, bk % s.kv_heads);
            let (mut dkh, mut dvh) = (vec![0.0; s.seq * hd], vec![0.0; s.seq * hd]);
            let mut dqs = Vec::new();
            for h in kvh * s.group()..(kvh + 1) * s.group() {
                for i in 0..s.seq {
                    let sc = scores(&s, q, k, b, i, h);
                    let l = lse[(b * s.heads + h) * s.seq + i].f64();
                    let doi = &d_o[s.q_at(b, i, h)..][..hd];
                    let d_row = dot(doi, &o[s.q_at(b, i, h)..][..hd]);
                    let mut dqi = vec![0.0; hd];
                    for (j, x) in sc.iter().enumerate() {
                        let p = (x - l).exp();
                        let dp = dot(doi, &v[s.kv_at(b, j, kvh)..][..hd]);
                        let ds = p * (dp - d_row) * s.scale();
                        for c in 0..hd {
                            dqi[c] += ds * k[s.kv_at(b, j, kvh) + c].f64();
                            dkh[j * hd + c] += ds * q[s.q_at(b, i, h) + c].f64();
                            dvh[j * hd + c] += p * doi[c].f64();
                        }
                    }
                    dqs.push((i, h, dqi));
                }
            }
            KvHeadGrads { b, kvh, dk: dkh, dv: dvh, dq: dqs }
        })
        .collect();
    for KvHeadGrads { b, kvh, dk: dkh, dv: dvh, dq: dqs } in parts {
        for j in 0..s.seq {
            for c in 0..hd {
                dk[s.kv_at(b, j, kvh) + c] = T::of(dkh[j * hd + c]);
                dv[s.kv_at(b, j, kvh) + c] = T::of(dvh[j * hd + c]);
            }
        }
        for (i, h, dqi) in dqs {
            for c in 0..hd {
                dq[s.q_at(b, i, h) + c] = T::of(dqi[c]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::gradcheck::*;

    #[test]
    fn gqa_gradients_match_finite_differences() {
        let s = Shape { batch: 2, seq: 4, heads: 4, kv_heads: 2, head_dim: 3 };
        let (nq, nkv) = (s.q_len(), s.kv_len());
        let (q, k, v, g) = (random(nq, 15), random(nkv, 16), random(nkv, 17), random(nq, 18));
        let run = |q: &[f64], k: &[f64], v: &[f64]| {
            let (mut o, mut lse) = (vec![0.0; nq], vec![0.0; s.batch * s.heads * s.seq]);
            forward(&mut o, &mut lse, q, k, v, s);
            (o, lse)
        };
        let (o, lse) = run(&q, &k, &v);
        let (mut dq, mut dk, mut dv) = (vec![0.0; nq], vec![0.0; nkv], vec![0.0; nkv]);
        backward(&mut dq, &mut dk, &mut dv, &g, &q, &k, &v, &o, &lse, s);
        assert!(max_rel_err(&dq, &numeric_grad(&q, &mut |p| dot(&run(p, &k, &v).0, &g))) < 1e-6);
        assert!(max_rel_err(&dk, &numeric_grad(&k, &mut |p| dot(&run(&q, p, &v).0, &g))) < 1e-6);
        assert!(max_rel_err(&dv, &numeric_grad(&v, &mut |p| dot(&run(&q, &k, p).0, &g))) < 1e-6);
        // causal: the first position attends only to itself, so its output is its own value row
        let first = &o[s.q_at(1, 0, 3)..][..3];
        assert!(max_rel_err(first, &v[s.kv_at(1, 0, 1)..][..3]) < 1e-12);
    }
}
