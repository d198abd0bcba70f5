//! The Llama-2 step, written once over a backend's ops (model/ops.rs): pre-norm blocks
//! x += Wo·attn(rope(Wq·n(x)), rope(Wk·n(x)), Wv·n(x)); x += Wdown·(silu(Wgate·n(x)) ⊙ Wup·n(x));
//! logits = Wlm·n(x), cross-entropy fused with its backward. Run a piece (zero/schedule.rs) at a
//! time: the schedule's hooks put each unit's weights and gradients in place first.

use super::config::LlamaConfig;
use super::layout::{LayerTensors, Layout};
use super::ops::{Dims, Heads, LlamaOps, Rows, Shape};
use crate::backend::cpu::cross_entropy;
use crate::zero::buffers::Allocated;
use crate::zero::schedule::Piece;
use anyhow::{ensure, Result};

/// One layer's forward activations that its backward reads (names: zero/buffers.rs LAYER_ACTS);
/// the layer's input lives apart, in `Activations::inputs`.
pub struct LayerActs<B> {
    xn: B,
    inv1: B,
    q: B,
    k: B,
    v: B,
    lse: B,
    o: B,
    x2: B,
    xn2: B,
    inv2: B,
    gate: B,
    up: B,
    h: B,
}

/// Gradients of activations and other scratch, reused by every layer (zero/buffers.rs SCRATCH).
struct Scratch<B> {
    /// The attention backward's rowsum(dO ⊙ O).
    delta: B,
    dx: B,
    dx2: B,
    dxn: B,
    dq: B,
    dk: B,
    dv: B,
    d_o: B,
    dgate: B,
    dup: B,
    dh: B,
}

/// Every activation of a micro-batch's step, taken out of the buffer table.
pub struct Activations<B> {
    /// Each layer's input, then the last layer's output.
    inputs: Vec<B>,
    /// Every layer's saved activations, or with recompute one set that each layer refills in its
    /// backward (activation checkpointing at layer boundaries).
    layers: Vec<LayerActs<B>>,
    s: Scratch<B>,
    xf: B,
    invf: B,
    /// The logits, then their gradient.
    logits: B,
    losses: B,
    tokens: B,
    labels: B,
}

impl<B> Activations<B> {
    pub fn take(all: &mut Allocated<B>, n_layers: usize, recompute: bool) -> Result<Activations<B>> {
        let kept = if recompute { 1 } else { n_layers };
        let layers = (0..kept)
            .map(|layer| {
                let mut t = |name: &str| all.take(&format!("layer {layer} {name}"));
                Ok(LayerActs {
                    xn: t("xn")?,
                    inv1: t("inv1")?,
                    q: t("q")?,
                    k: t("k")?,
                    v: t("v")?,
                    lse: t("lse")?,
                    o: t("o")?,
                    x2: t("x2")?,
                    xn2: t("xn2")?,
                    inv2: t("inv2")?,
                    gate: t("gate")?,
                    up: t("up")?,
                    h: t("h")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut t = |name: &str| all.take(&format!("scratch {name}"));
        let s = Scratch {
            delta: t("delta")?,
            dx: t("dx")?,
            dx2: t("dx2")?,
            dxn: t("dxn")?,
            dq: t("dq")?,
            dk: t("dk")?,
            dv: t("dv")?,
            d_o: t("d_o")?,
            dgate: t("dgate")?,
            dup: t("dup")?,
            dh: t("dh")?,
        };
        let inputs = (0..=n_layers).map(|i| all.take(&format!("layer input {i}"))).collect::<Result<Vec<_>>>()?;
        Ok(Activations {
            inputs,
            layers,
            s,
            xf: all.take("final norm")?,
            invf: all.take("final 1/rms")?,
            logits: all.take("logits")?,
            losses: all.take("losses")?,
            tokens: all.take("tokens")?,
            labels: all.take("labels")?,
        })
    }
}

/// The model for one shape of micro-batch.
pub struct Llama {
    pub config: LlamaConfig,
    /// Padded for the rank count (model/layout.rs).
    pub layout: Layout,
    pub batch: usize,
    pub seq: usize,
    pub recompute: bool,
}

impl Llama {
    fn tokens(&self) -> usize {
        self.batch * self.seq
    }

    fn dims(&self, k: usize, n: usize) -> Dims {
        Dims { m: self.tokens(), k, n }
    }

    fn rows(&self, width: usize) -> Rows {
        Rows { rows: self.tokens(), width }
    }

    fn heads(&self, heads: usize) -> Heads {
        Heads { rows: self.tokens(), seq: self.seq, heads, head_dim: self.config.head_dim() }
    }

    fn shape(&self) -> Shape {
        let c = &self.config;
        Shape { batch: self.batch, seq: self.seq, heads: c.n_heads, kv_heads: c.n_kv_heads, head_dim: c.head_dim() }
    }

    fn acts_of<'a, B>(&self, a: &'a Activations<B>, layer: usize) -> &'a LayerActs<B> {
        &a.layers[if self.recompute { 0 } else { layer }]
    }

    /// Loads a micro-batch; returns the factor on the logits' gradient that makes it the mean
    /// loss's gradient × `grad_scale`: grad_scale / counted positions.
    pub fn load_batch<O: LlamaOps>(&self, ops: &O, a: &Activations<O::Buf>, tokens: &[u32], labels: &[i32], grad_scale: f64) -> Result<f64> {
        ensure!(tokens.len() == self.tokens() && labels.len() == self.tokens(), "a micro-batch of {} tokens, not {}", self.tokens(), tokens.len());
        ops.load_batch(&a.tokens, &a.labels, tokens, labels)?;
        Ok(grad_scale / counted(labels) as f64)
    }

    /// The mean loss over the counted positions, once the head's forward ran.
    pub fn mean_loss<O: LlamaOps>(&self, ops: &O, a: &Activations<O::Buf>, labels: &[i32]) -> Result<f64> {
        Ok(ops.loss_sum(&a.losses, self.tokens())? / counted(labels) as f64)
    }

    /// The layer's forward from input `x`; `out` None (a recompute) skips the last product,
    /// whose result the backward does not read.
    fn layer_forward<O: LlamaOps>(&self, ops: &O, lt: &LayerTensors, x: &O::Buf, a: &LayerActs<O::Buf>, out: Option<&O::Buf>) -> Result<()> {
        let c = &self.config;
        let (n, d, kv, f) = (self.tokens(), c.dim, c.kv_dim(), c.ffn_dim);
        ops.rmsnorm_forward([&a.xn, &a.inv1], x, &lt.attn_norm, self.rows(d), c.norm_eps)?;
        ops.matmul(&a.q, &a.xn, &lt.wq, self.dims(d, d), false)?;
        ops.matmul(&a.k, &a.xn, &lt.wk, self.dims(d, kv), false)?;
        ops.matmul(&a.v, &a.xn, &lt.wv, self.dims(d, kv), false)?;
        ops.rope(&a.q, self.heads(c.n_heads), c.rope_theta, false)?;
        ops.rope(&a.k, self.heads(c.n_kv_heads), c.rope_theta, false)?;
        ops.attention_forward([&a.o, &a.lse], [&a.q, &a.k, &a.v], self.shape())?;
        ops.copy(&a.x2, x, n * d)?;
        ops.matmul(&a.x2, &a.o, &lt.wo, self.dims(d, d), true)?;
        ops.rmsnorm_forward([&a.xn2, &a.inv2], &a.x2, &lt.mlp_norm, self.rows(d), c.norm_eps)?;
        ops.matmul(&a.gate, &a.xn2, &lt.w_gate, self.dims(d, f), false)?;
        ops.matmul(&a.up, &a.xn2, &lt.w_up, self.dims(d, f), false)?;
        ops.swiglu_forward(&a.h, [&a.gate, &a.up], n * f)?;
        match out {
            Some(out) => {
                ops.copy(out, &a.x2, n * d)?;
                ops.matmul(out, &a.h, &lt.w_down, self.dims(f, d), true)
            }
            None => Ok(()),
        }
    }

    /// `dx` holds d(loss)/d(layer output) and becomes d(loss)/d(layer input); the layer's weight
    /// gradients accumulate.
    fn layer_backward<O: LlamaOps>(&self, ops: &O, lt: &LayerTensors, x: &O::Buf, a: &LayerActs<O::Buf>, s: &Scratch<O::Buf>) -> Result<()> {
        let c = &self.config;
        let (n, d, kv, f) = (self.tokens(), c.dim, c.kv_dim(), c.ffn_dim);
        let dout = &s.dx;
        // MLP: out = x2 + Wdown·h
        ops.matmul_backward_input(&s.dh, dout, &lt.w_down, self.dims(f, d), false)?;
        ops.matmul_backward_weight(&lt.w_down, dout, &a.h, self.dims(f, d))?;
        ops.swiglu_backward([&s.dgate, &s.dup], &s.dh, [&a.gate, &a.up], n * f)?;
        ops.matmul_backward_input(&s.dxn, &s.dgate, &lt.w_gate, self.dims(d, f), false)?;
        ops.matmul_backward_input(&s.dxn, &s.dup, &lt.w_up, self.dims(d, f), true)?;
        ops.matmul_backward_weight(&lt.w_gate, &s.dgate, &a.xn2, self.dims(d, f))?;
        ops.matmul_backward_weight(&lt.w_up, &s.dup, &a.xn2, self.dims(d, f))?;
        ops.rmsnorm_backward(&s.dx2, &s.dxn, [&a.x2, &a.inv2], &lt.mlp_norm, self.rows(d))?;
        ops.add(&s.dx2, dout, n * d)?;
        // Attention: x2 = x + Wo·attn
        ops.matmul_backward_input(&s.d_o, &s.dx2, &lt.wo, self.dims(d, d), false)?;
        ops.matmul_backward_weight(&lt.wo, &s.dx2, &a.o, self.dims(d, d))?;
        ops.attention_backward([&s.dq, &s.dk, &s.dv], [&s.d_o, &s.delta], [&a.q, &a.k, &a.v, &a.o, &a.lse], self.shape())?;
        ops.rope(&s.dq, self.heads(c.n_heads), c.rope_theta, true)?;
        ops.rope(&s.dk, self.heads(c.n_kv_heads), c.rope_theta, true)?;
        ops.matmul_backward_input(&s.dxn, &s.dq, &lt.wq, self.dims(d, d), false)?;
        ops.matmul_backward_input(&s.dxn, &s.dk, &lt.wk, self.dims(d, kv), true)?;
        ops.matmul_backward_input(&s.dxn, &s.dv, &lt.wv, self.dims(d, kv), true)?;
        ops.matmul_backward_weight(&lt.wq, &s.dq, &a.xn, self.dims(d, d))?;
        ops.matmul_backward_weight(&lt.wk, &s.dk, &a.xn, self.dims(d, kv))?;
        ops.matmul_backward_weight(&lt.wv, &s.dv, &a.xn, self.dims(d, kv))?;
        ops.rmsnorm_backward(&s.dx, &s.dxn, [x, &a.inv1], &lt.attn_norm, self.rows(d))?;
        ops.add(&s.dx, &s.dx2, n * d)
    }

    /// The piece's forward on the loaded micro-batch; the head's leaves per-row losses and the
    /// logits' gradient × `logits_scale` (from `load_batch`).
    pub fn forward<O: LlamaOps>(&self, ops: &O, a: &Activations<O::Buf>, piece: Piece, logits_scale: f64) -> Result<()> {
        let (c, l) = (&self.config, &self.layout);
        match piece {
            Piece::Embedding => ops.embedding_forward(&a.inputs[0], &l.embedding, &a.tokens, self.rows(c.dim)),
            Piece::Layer(i) => self.layer_forward(ops, &l.layers[i], &a.inputs[i], self.acts_of(a, i), Some(&a.inputs[i + 1])),
            Piece::Head => {
                let last = &a.inputs[l.layers.len()];
                ops.rmsnorm_forward([&a.xf, &a.invf], last, &l.final_norm, self.rows(c.dim), c.norm_eps)?;
                ops.matmul(&a.logits, &a.xf, &l.lm_head, self.dims(c.dim, c.vocab_size), false)?;
                ops.cross_entropy(&a.logits, &a.losses, &a.labels, self.rows(c.vocab_size), logits_scale)
            }
        }
    }

    /// The piece's backward (its forward ran): its weight gradients accumulate.
    pub fn backward<O: LlamaOps>(&self, ops: &O, a: &Activations<O::Buf>, piece: Piece) -> Result<()> {
        let (c, l, s) = (&self.config, &self.layout, &a.s);
        let (d, v) = (c.dim, c.vocab_size);
        match piece {
            Piece::Head => {
                ops.matmul_backward_input(&s.dxn, &a.logits, &l.lm_head, self.dims(d, v), false)?;
                ops.matmul_backward_weight(&l.lm_head, &a.logits, &a.xf, self.dims(d, v))?;
                let last = &a.inputs[l.layers.len()];
                ops.rmsnorm_backward(&s.dx, &s.dxn, [last, &a.invf], &l.final_norm, self.rows(d))
            }
            Piece::Layer(i) => {
                if self.recompute {
                    self.layer_forward(ops, &l.layers[i], &a.inputs[i], self.acts_of(a, i), None)?;
                }
                self.layer_backward(ops, &l.layers[i], &a.inputs[i], self.acts_of(a, i), s)
            }
            Piece::Embedding => ops.embedding_backward(&l.embedding, &s.dx, &a.tokens, self.rows(d)),
        }
    }
}

/// Positions whose label counts (at least 1, so that an all-ignored batch has loss 0).
fn counted(labels: &[i32]) -> usize {
    cross_entropy::counted(labels).max(1)
}
