//! The Llama-2 forward and backward on the CPU reference ops: the oracle for the GPU path and
//! the no-GPU training path. Pre-norm blocks: x += Wo·attn(rope(Wq·n(x)), rope(Wk·n(x)), Wv·n(x));
//! x += Wdown·(silu(Wgate·n(x)) ⊙ Wup·n(x)); logits = Wlm·n(x).

use super::config::LlamaConfig;
use super::layout::{LayerTensors, Layout};
use crate::backend::cpu::attention::Shape;
use crate::backend::cpu::matmul::Dims;
use crate::backend::cpu::{attention, cross_entropy, embedding, matmul, rmsnorm, rope, swiglu, Real};

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

/// The forward's saved state: every layer's activations, the final norm's input and output,
/// and the logits' gradient.
pub struct Tape<T> {
    layers: Vec<Saved<T>>,
    x: Vec<T>,
    xf: Vec<T>,
    invf: Vec<T>,
    dlogits: Vec<T>,
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

    /// Runs the micro-batch forward to the loss (its mean over counted labels) and keeps
    /// what the backward needs, with d(loss)·`grad_scale`/d(logits) already computed.
    pub fn forward<T: Real>(&self, params: &[T], b: &Batch, grad_scale: f64) -> (f64, Tape<T>) {
        let (c, l) = (self.config, self.layout);
        let (n, d, v) = (b.batch * b.seq, c.dim, c.vocab_size);
        assert_eq!((b.tokens.len(), b.labels.len()), (n, n));
        let mut x = zeros(n * d);
        embedding::forward(&mut x, &params[l.embedding.range()], b.tokens, d);
        let mut layers = Vec::with_capacity(l.layers.len());
        for lt in &l.layers {
            let (out, s) = self.layer_forward(params, lt, x, b);
            layers.push(s);
            x = out;
        }
        let (mut xf, mut invf) = (zeros(n * d), zeros(n));
        rmsnorm::forward(&mut xf, &mut invf, &x, &params[l.final_norm.range()], d, c.norm_eps);
        let mut dlogits = zeros(n * v);
        matmul::forward(&mut dlogits, &xf, &params[l.lm_head.range()], Dims { m: n, k: d, n: v });
        let loss = cross_entropy::forward_backward(&mut dlogits, b.labels, v, grad_scale);
        (loss, Tape { layers, x, xf, invf, dlogits })
    }

    /// Adds the micro-batch's gradient (scaled as in `forward`) into `grads`. `done` hears of
    /// each unit (model/layout.rs) whose gradient is complete, with that unit's slice of
    /// `grads`: the head, then every layer from the last, then the embedding.
    pub fn backward<T: Real>(&self, params: &[T], grads: &mut [T], tape: Tape<T>, b: &Batch, done: &mut dyn FnMut(usize, &mut [T])) {
        let (c, l) = (self.config, self.layout);
        let (n, d, v) = (b.batch * b.seq, c.dim, c.vocab_size);
        let mut finish = |unit: usize, grads: &mut [T]| done(unit, &mut grads[l.units[unit].clone()]);
        let mut dxf = zeros(n * d);
        matmul::backward(&mut dxf, &mut grads[l.lm_head.range()], &tape.dlogits, &tape.xf, &params[l.lm_head.range()], Dims { m: n, k: d, n: v });
        let mut dx = zeros(n * d);
        rmsnorm::backward(&mut dx, &mut grads[l.final_norm.range()], &dxf, &tape.x, &params[l.final_norm.range()], &tape.invf, d);
        finish(l.lm_head.unit, grads);
        for (i, (lt, s)) in l.layers.iter().zip(&tape.layers).enumerate().rev() {
            dx = self.layer_backward(params, grads, lt, s, dx, b);
            if l.first_in_unit(i) {
                finish(lt.wq.unit, grads);
            }
        }
        embedding::backward(&mut grads[l.embedding.range()], &dx, b.tokens, d);
        finish(l.embedding.unit, grads);
    }

    /// forward then backward: the mean loss, its gradient × `grad_scale` added into `grads`.
    pub fn forward_backward<T: Real>(&self, params: &[T], grads: &mut [T], b: &Batch, grad_scale: f64) -> f64 {
        let (loss, tape) = self.forward(params, b, grad_scale);
        self.backward(params, grads, tape, b, &mut |_, _| {});
        loss
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
