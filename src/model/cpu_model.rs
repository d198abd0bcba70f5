//! The Llama-2 forward and backward on the CPU reference ops: the oracle for the GPU path and
//! the no-GPU training path. Pre-norm blocks: x += Wo·attn(rope(Wq·n(x)), rope(Wk·n(x)), Wv·n(x));
//! x += Wdown·(silu(Wgate·n(x)) ⊙ Wup·n(x)); logits = Wlm·n(x).

use super::config::LlamaConfig;
use super::layout::{LayerTensors, Layout};
use crate::backend::cpu::attention::Shape;
use crate::backend::cpu::matmul::Dims;
use crate::backend::cpu::{attention, cross_entropy, embedding, matmul, rmsnorm, rope, swiglu, Real};
use crate::zero::schedule::{self, Piece, UnitWork};
use anyhow::Result;

/// One micro-batch: `batch` sequences of `seq` tokens; labels use cross_entropy::IGNORE.
pub struct Batch<'a> {
    pub tokens: &'a [u32],
    pub labels: &'a [i32],
    pub batch: usize,
    pub seq: usize,
}

/// What one layer's backward needs from its forward.
struct Saved<T> {
    x: Vec<T>,
    xn: Vec<T>,
    inv1: Vec<T>,
    q: Vec<T>,
    k: Vec<T>,
    v: Vec<T>,
    o: Vec<T>,
    lse: Vec<T>,
    x2: Vec<T>,
    xn2: Vec<T>,
    inv2: Vec<T>,
    gate: Vec<T>,
    up: Vec<T>,
    h: Vec<T>,
}

pub struct CpuModel<'a> {
    pub config: &'a LlamaConfig,
    pub layout: &'a Layout,
}

fn zeros<T: Real>(n: usize) -> Vec<T> {
    vec![T::zero(); n]
}

impl CpuModel<'_> {
    fn shape(&self, b: &Batch) -> Shape {
        let c = self.config;
        Shape { batch: b.batch, seq: b.seq, heads: c.n_heads, kv_heads: c.n_kv_heads, head_dim: c.head_dim() }
    }

    fn layer_forward<T: Real>(&self, p: &[T], lt: &LayerTensors, x: Vec<T>, b: &Batch) -> (Vec<T>, Saved<T>) {
        let c = self.config;
        let (n, d, kv, f) = (b.batch * b.seq, c.dim, c.kv_dim(), c.ffn_dim);
        let (mut xn, mut inv1) = (zeros(n * d), zeros(n));
        rmsnorm::forward(&mut xn, &mut inv1, &x, &p[lt.attn_norm.range()], d, c.norm_eps);
        let (mut q, mut k, mut v) = (zeros(n * d), zeros(n * kv), zeros(n * kv));
        matmul::forward(&mut q, &xn, &p[lt.wq.range()], Dims { m: n, k: d, n: d });
        matmul::forward(&mut k, &xn, &p[lt.wk.range()], Dims { m: n, k: d, n: kv });
        matmul::forward(&mut v, &xn, &p[lt.wv.range()], Dims { m: n, k: d, n: kv });
        rope::forward(&mut q, b.seq, c.n_heads, c.head_dim(), c.rope_theta);
        rope::forward(&mut k, b.seq, c.n_kv_heads, c.head_dim(), c.rope_theta);
        let (mut o, mut lse) = (zeros(n * d), zeros(b.batch * c.n_heads * b.seq));
        attention::forward(&mut o, &mut lse, &q, &k, &v, self.shape(b));
        let mut x2 = zeros(n * d);
        matmul::forward(&mut x2, &o, &p[lt.wo.range()], Dims { m: n, k: d, n: d });
        x2.iter_mut().zip(&x).for_each(|(a, &r)| *a = *a + r);
        let (mut xn2, mut inv2) = (zeros(n * d), zeros(n));
        rmsnorm::forward(&mut xn2, &mut inv2, &x2, &p[lt.mlp_norm.range()], d, c.norm_eps);
        let (mut gate, mut up, mut h) = (zeros(n * f), zeros(n * f), zeros(n * f));
        matmul::forward(&mut gate, &xn2, &p[lt.w_gate.range()], Dims { m: n, k: d, n: f });
        matmul::forward(&mut up, &xn2, &p[lt.w_up.range()], Dims { m: n, k: d, n: f });
        swiglu::forward(&mut h, &gate, &up);
        let mut out = zeros(n * d);
        matmul::forward(&mut out, &h, &p[lt.w_down.range()], Dims { m: n, k: f, n: d });
        out.iter_mut().zip(&x2).for_each(|(a, &r)| *a = *a + r);
        (out, Saved { x, xn, inv1, q, k, v, o, lse, x2, xn2, inv2, gate, up, h })
    }

    /// Takes d(loss)/d(layer output), returns d(loss)/d(layer input); adds into `g`.
    fn layer_backward<T: Real>(&self, p: &[T], g: &mut [T], lt: &LayerTensors, s: &Saved<T>, dout: Vec<T>, b: &Batch) -> Vec<T> {
        let c = self.config;
        let (n, d, kv, f) = (b.batch * b.seq, c.dim, c.kv_dim(), c.ffn_dim);
        // MLP: out = x2 + Wdown·h
        let mut dh = zeros(n * f);
        matmul::backward(&mut dh, &mut g[lt.w_down.range()], &dout, &s.h, &p[lt.w_down.range()], Dims { m: n, k: f, n: d });
        let (mut dgate, mut dup) = (zeros(n * f), zeros(n * f));
        swiglu::backward(&mut dgate, &mut dup, &dh, &s.gate, &s.up);
        let (mut dxn2, mut part) = (zeros(n * d), zeros(n * d));
        matmul::backward(&mut dxn2, &mut g[lt.w_gate.range()], &dgate, &s.xn2, &p[lt.w_gate.range()], Dims { m: n, k: d, n: f });
        matmul::backward(&mut part, &mut g[lt.w_up.range()], &dup, &s.xn2, &p[lt.w_up.range()], Dims { m: n, k: d, n: f });
        dxn2.iter_mut().zip(&part).for_each(|(a, &r)| *a = *a + r);
        let mut dx2 = zeros(n * d);
        rmsnorm::backward(&mut dx2, &mut g[lt.mlp_norm.range()], &dxn2, &s.x2, &p[lt.mlp_norm.range()], &s.inv2, d);
        dx2.iter_mut().zip(&dout).for_each(|(a, &r)| *a = *a + r);
        // Attention: x2 = x + Wo·attn
        let mut d_o = zeros(n * d);
        matmul::backward(&mut d_o, &mut g[lt.wo.range()], &dx2, &s.o, &p[lt.wo.range()], Dims { m: n, k: d, n: d });
        let (mut dq, mut dk, mut dv) = (zeros(n * d), zeros(n * kv), zeros(n * kv));
        attention::backward(&mut dq, &mut dk, &mut dv, &d_o, &s.q, &s.k, &s.v, &s.o, &s.lse, self.shape(b));
        rope::backward(&mut dq, b.seq, c.n_heads, c.head_dim(), c.rope_theta);
        rope::backward(&mut dk, b.seq, c.n_kv_heads, c.head_dim(), c.rope_theta);
        let mut dxn = zeros(n * d);
        matmul::backward(&mut dxn, &mut g[lt.wq.range()], &dq, &s.xn, &p[lt.wq.range()], Dims { m: n, k: d, n: d });
        for (dproj, w) in [(&dk, &lt.wk), (&dv, &lt.wv)] {
            matmul::backward(&mut part, &mut g[w.range()], dproj, &s.xn, &p[w.range()], Dims { m: n, k: d, n: kv });
            dxn.iter_mut().zip(&part).for_each(|(a, &r)| *a = *a + r);
        }
        let mut dx = zeros(n * d);
        rmsnorm::backward(&mut dx, &mut g[lt.attn_norm.range()], &dxn, &s.x, &p[lt.attn_norm.range()], &s.inv1, d);
        dx.iter_mut().zip(&dx2).for_each(|(a, &r)| *a = *a + r);
        dx
    }

    /// forward then backward: the mean loss, its gradient × `grad_scale` added into `grads`.
    pub fn forward_backward<T: Real>(&self, params: &[T], grads: &mut [T], b: &Batch, grad_scale: f64) -> f64 {
        let mut whole = Whole { pass: CpuPass::new(self, b, grad_scale), params, grads };
        let ran = schedule::forward(self.layout, &mut whole).and_then(|_| schedule::backward(self.layout, &mut whole, false));
        ran.expect("the CPU model's compute cannot fail");
        whole.pass.loss
    }
}

/// The head's saved state: the final norm's input, output and 1/rms, and the logits' gradient.
struct HeadTape<T> {
    x: Vec<T>,
    xf: Vec<T>,
    invf: Vec<T>,
    dlogits: Vec<T>,
}

/// One micro-batch's forward and backward, a piece (zero/schedule.rs) at a time, on whatever
/// weights and gradients the caller holds.
pub struct CpuPass<'m, 'b, T> {
    model: &'m CpuModel<'m>,
    b: &'b Batch<'b>,
    grad_scale: f64,
    /// The residual stream in the forward, its gradient in the backward.
    x: Vec<T>,
    layers: Vec<Saved<T>>,
    head: Option<HeadTape<T>>,
    /// The mean loss over counted labels, once the head's forward ran.
    pub loss: f64,
}

impl<'m, 'b, T: Real> CpuPass<'m, 'b, T> {
    /// The logits' gradient will be d(loss)·`grad_scale`/d(logits).
    pub fn new(model: &'m CpuModel<'m>, b: &'b Batch<'b>, grad_scale: f64) -> Self {
        let n = b.batch * b.seq;
        assert_eq!((b.tokens.len(), b.labels.len()), (n, n));
        CpuPass { model, b, grad_scale, x: Vec::new(), layers: Vec::new(), head: None, loss: 0.0 }
    }

    pub fn forward(&mut self, params: &[T], piece: Piece) {
        let (c, l, b) = (self.model.config, self.model.layout, self.b);
        let (n, d, v) = (b.batch * b.seq, c.dim, c.vocab_size);
        match piece {
            Piece::Embedding => {
                self.x = zeros(n * d);
                embedding::forward(&mut self.x, &params[l.embedding.range()], b.tokens, d);
            }
            Piece::Layer(i) => {
                assert_eq!(self.layers.len(), i, "layers run in order");
                let (out, saved) = self.model.layer_forward(params, &l.layers[i], std::mem::take(&mut self.x), b);
                self.layers.push(saved);
                self.x = out;
            }
            Piece::Head => {
                let (mut xf, mut invf) = (zeros(n * d), zeros(n));
                rmsnorm::forward(&mut xf, &mut invf, &self.x, &params[l.final_norm.range()], d, c.norm_eps);
                let mut dlogits = zeros(n * v);
                matmul::forward(&mut dlogits, &xf, &params[l.lm_head.range()], Dims { m: n, k: d, n: v });
                self.loss = cross_entropy::forward_backward(&mut dlogits, b.labels, v, self.grad_scale);
                self.head = Some(HeadTape { x: std::mem::take(&mut self.x), xf, invf, dlogits });
            }
        }
    }

    /// Adds the piece's gradient into `grads` (the forward must have run).
    pub fn backward(&mut self, params: &[T], grads: &mut [T], piece: Piece) {
        let (c, l, b) = (self.model.config, self.model.layout, self.b);
        let (n, d, v) = (b.batch * b.seq, c.dim, c.vocab_size);
        match piece {
            Piece::Head => {
                let t = self.head.take().expect("the head's forward ran");
                let mut dxf = zeros(n * d);
                matmul::backward(&mut dxf, &mut grads[l.lm_head.range()], &t.dlogits, &t.xf, &params[l.lm_head.range()], Dims { m: n, k: d, n: v });
                self.x = zeros(n * d);
                rmsnorm::backward(&mut self.x, &mut grads[l.final_norm.range()], &dxf, &t.x, &params[l.final_norm.range()], &t.invf, d);
            }
            Piece::Layer(i) => {
                assert_eq!(self.layers.len(), i + 1, "layers run backwards");
                let saved = self.layers.pop().expect("the layer's forward ran");
                self.x = self.model.layer_backward(params, grads, &l.layers[i], &saved, std::mem::take(&mut self.x), b);
            }
            Piece::Embedding => embedding::backward(&mut grads[l.embedding.range()], &self.x, b.tokens, d),
        }
    }
}

/// The whole model on one set of weights and gradients: compute only.
struct Whole<'p, 'm, 'b, T> {
    pass: CpuPass<'m, 'b, T>,
    params: &'p [T],
    grads: &'p mut [T],
}

impl<T: Real> UnitWork for Whole<'_, '_, '_, T> {
    fn forward(&mut self, piece: Piece) -> Result<()> {
        self.pass.forward(self.params, piece);
        Ok(())
    }
    fn backward(&mut self, piece: Piece) -> Result<()> {
        self.pass.backward(self.params, self.grads, piece);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::adamw::AdamW;
    use crate::backend::cpu::cross_entropy::IGNORE;
    use crate::backend::cpu::gradcheck::{max_rel_err, numeric_grad, random};
    use crate::model::init::initialise;

    fn small() -> LlamaConfig {
        LlamaConfig {
            name: "grad-check".into(),
            dim: 8,
            ffn_dim: 12,
            n_layers: 2,
            n_heads: 2,
            n_kv_heads: 1,
            vocab_size: 11,
            norm_eps: 1e-5,
            rope_theta: 10000.0,
        }
    }

    #[test]
    fn whole_model_gradient_matches_finite_differences() {
        let c = small();
        let layout = Layout::new(&c);
        let model = CpuModel { config: &c, layout: &layout };
        // Larger than init-scale weights so every path carries signal.
        let params: Vec<f64> = random(layout.total, 21).iter().map(|v| v * 0.5).collect();
        let tokens = [3u32, 7, 1, 10, 0, 5, 5, 2, 9, 4];
        let labels = [7, 1, IGNORE, 0, 5, 5, 2, IGNORE, 4, 6];
        let b = Batch { tokens: &tokens, labels: &labels, batch: 2, seq: 5 };
        let mut grads = vec![0.0; layout.total];
        model.forward_backward(&params, &mut grads, &b, 1.0);
        let num = numeric_grad(&params, &mut |p| model.forward_backward(p, &mut vec![0.0; layout.total], &b, 1.0));
        let err = max_rel_err(&grads, &num);
        assert!(err < 1e-6, "max relative error {err}");
        // tokens that never occur get no embedding gradient
        let e = &grads[layout.embedding.range()];
        assert!(e[8 * c.dim..9 * c.dim].iter().all(|&g| g == 0.0));
    }

    #[test]
    fn loss_falls_when_overfitting_one_batch() {
        let c = LlamaConfig::load("tiny").unwrap();
        let layout = Layout::new(&c);
        let model = CpuModel { config: &c, layout: &layout };
        let mut params = vec![0f32; layout.total];
        initialise(&mut params, &layout, 1);
        let (batch, seq) = (2, 16);
        let tokens: Vec<u32> = (0..batch * seq).map(|i| ((i * 37 + 11) % c.vocab_size) as u32).collect();
        let labels: Vec<i32> = (0..batch * seq).map(|i| if i % seq == seq - 1 { IGNORE } else { tokens[i + 1] as i32 }).collect();
        let b = Batch { tokens: &tokens, labels: &labels, batch, seq };
        let opt = AdamW { lr: 3e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.0 };
        let (mut m, mut v) = (vec![0f32; layout.total], vec![0f32; layout.total]);
        let decay = layout.decay_mask();
        let mut losses = Vec::new();
        for t in 1..=40 {
            let mut grads = vec![0f32; layout.total];
            losses.push(model.forward_backward(&params, &mut grads, &b, 1.0));
            opt.step(&mut params, &grads, &mut m, &mut v, &decay, t, 1.0);
        }
        let first = losses[0];
        assert!((first - (c.vocab_size as f64).ln()).abs() < 0.3, "initial loss {first} far from ln(vocab)");
        assert!(losses[39] < 0.3 * first, "loss went {first} -> {}", losses[39]);
    }
}
