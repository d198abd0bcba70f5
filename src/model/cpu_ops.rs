//! The Llama step's ops on the CPU (model/ops.rs): the reference ops of backend/cpu, in f32
//! (training) or f64 (gradient checks), on buffers that hold every element in that type (token
//! ids and labels too: exact below 2^24). Weights and gradients are found in the rank's unit
//! stores (zero/places.rs), whole or in two slots as on the GPU.

use super::config::LlamaConfig;
use super::layout::{Layout, Tensor};
use super::llama::{Activations, Llama};
use super::ops::{Dims, Heads, LlamaOps, Rows, Shape};
use crate::backend::cpu::{attention, cross_entropy, embedding, matmul, rmsnorm, rope, swiglu, Real};
use crate::zero::buffers::{step_buffers, Allocated, BufferSpec, Category, PlanInput, Step};
use crate::zero::places::UnitStore;
use crate::zero::schedule::{self, Piece, UnitWork};
use anyhow::Result;
use std::cell::{Ref, RefCell, RefMut};

/// A host buffer; the ops borrow it for the length of one op.
pub type HostBuf<T> = RefCell<Vec<T>>;

/// A table entry on the host: NaN, so that a value read before it is written shows in the loss.
pub fn host_buffer<T: Real>(spec: &BufferSpec) -> HostBuf<T> {
    RefCell::new(vec![T::nan(); spec.count as usize])
}

pub struct CpuOps<'a, T> {
    pub weights: &'a UnitStore<HostBuf<T>>,
    pub grads: &'a UnitStore<HostBuf<T>>,
}

impl<T: Real> CpuOps<'_, T> {
    fn w(&self, t: &Tensor) -> Ref<'_, [T]> {
        let (buffer, i) = self.weights.locate(t.unit, t.offset);
        Ref::map(buffer.borrow(), |b| &b[i..i + t.rows * t.cols])
    }

    fn g(&self, t: &Tensor) -> RefMut<'_, [T]> {
        let (buffer, i) = self.grads.locate(t.unit, t.offset);
        RefMut::map(buffer.borrow_mut(), |b| &mut b[i..i + t.rows * t.cols])
    }
}

fn ids<T: Real>(buffer: &HostBuf<T>) -> Vec<u32> {
    buffer.borrow().iter().map(|&t| t.f64() as u32).collect()
}

fn labels<T: Real>(buffer: &HostBuf<T>) -> Vec<i32> {
    buffer.borrow().iter().map(|&t| t.f64() as i32).collect()
}

impl<T: Real> LlamaOps for CpuOps<'_, T> {
    type Buf = HostBuf<T>;

    fn load_batch(&self, tokens: &HostBuf<T>, labels: &HostBuf<T>, token_ids: &[u32], label_ids: &[i32]) -> Result<()> {
        tokens.borrow_mut().iter_mut().zip(token_ids).for_each(|(t, &id)| *t = T::of(id as f64));
        labels.borrow_mut().iter_mut().zip(label_ids).for_each(|(t, &id)| *t = T::of(id as f64));
        Ok(())
    }

    fn embedding_forward(&self, x: &HostBuf<T>, table: &Tensor, tokens: &HostBuf<T>, r: Rows) -> Result<()> {
        embedding::forward(&mut x.borrow_mut(), &self.w(table), &ids(tokens), r.width);
        Ok(())
    }

    fn embedding_backward(&self, dtable: &Tensor, dx: &HostBuf<T>, tokens: &HostBuf<T>, r: Rows) -> Result<()> {
        embedding::backward(&mut self.g(dtable), &dx.borrow(), &ids(tokens), r.width);
        Ok(())
    }

    fn rmsnorm_forward(&self, [y, inv]: [&HostBuf<T>; 2], x: &HostBuf<T>, w: &Tensor, r: Rows, eps: f64) -> Result<()> {
        rmsnorm::forward(&mut y.borrow_mut(), &mut inv.borrow_mut(), &x.borrow(), &self.w(w), r.width, eps);
        Ok(())
    }

    fn rmsnorm_backward(&self, dx: &HostBuf<T>, dy: &HostBuf<T>, [x, inv]: [&HostBuf<T>; 2], w: &Tensor, r: Rows) -> Result<()> {
        rmsnorm::backward(&mut dx.borrow_mut(), &mut self.g(w), &dy.borrow(), &x.borrow(), &self.w(w), &inv.borrow(), r.width);
        Ok(())
    }

    fn matmul(&self, y: &HostBuf<T>, x: &HostBuf<T>, w: &Tensor, d: Dims, accumulate: bool) -> Result<()> {
        matmul::forward(&mut y.borrow_mut(), &x.borrow(), &self.w(w), d, accumulate);
        Ok(())
    }

    fn matmul_backward_input(&self, dx: &HostBuf<T>, dy: &HostBuf<T>, w: &Tensor, d: Dims, accumulate: bool) -> Result<()> {
        matmul::backward_input(&mut dx.borrow_mut(), &dy.borrow(), &self.w(w), d, accumulate);
        Ok(())
    }

    fn matmul_backward_weight(&self, dw: &Tensor, dy: &HostBuf<T>, x: &HostBuf<T>, d: Dims) -> Result<()> {
        matmul::backward_weight(&mut self.g(dw), &dy.borrow(), &x.borrow(), d);
        Ok(())
    }

    fn rope(&self, x: &HostBuf<T>, h: Heads, theta: f64, backward: bool) -> Result<()> {
        let turn = if backward { rope::backward } else { rope::forward };
        turn(&mut x.borrow_mut(), h.seq, h.heads, h.head_dim, theta);
        Ok(())
    }

    fn attention_forward(&self, [o, lse]: [&HostBuf<T>; 2], [q, k, v]: [&HostBuf<T>; 3], s: Shape) -> Result<()> {
        attention::forward(&mut o.borrow_mut(), &mut lse.borrow_mut(), &q.borrow(), &k.borrow(), &v.borrow(), s);
        Ok(())
    }

    /// The reference computes each row's rowsum(dO ⊙ O) where it needs it: no delta scratch.
    fn attention_backward(&self, [dq, dk, dv]: [&HostBuf<T>; 3], [d_o, _delta]: [&HostBuf<T>; 2], [q, k, v, o, lse]: [&HostBuf<T>; 5], s: Shape) -> Result<()> {
        let (q, k, v, o, lse) = (q.borrow(), k.borrow(), v.borrow(), o.borrow(), lse.borrow());
        attention::backward(&mut dq.borrow_mut(), &mut dk.borrow_mut(), &mut dv.borrow_mut(), &d_o.borrow(), &q, &k, &v, &o, &lse, s);
        Ok(())
    }

    fn swiglu_forward(&self, h: &HostBuf<T>, [gate, up]: [&HostBuf<T>; 2], n: usize) -> Result<()> {
        swiglu::forward(&mut h.borrow_mut()[..n], &gate.borrow()[..n], &up.borrow()[..n]);
        Ok(())
    }

    fn swiglu_backward(&self, [dgate, dup]: [&HostBuf<T>; 2], dh: &HostBuf<T>, [gate, up]: [&HostBuf<T>; 2], n: usize) -> Result<()> {
        swiglu::backward(&mut dgate.borrow_mut()[..n], &mut dup.borrow_mut()[..n], &dh.borrow()[..n], &gate.borrow()[..n], &up.borrow()[..n]);
        Ok(())
    }

    fn copy(&self, dst: &HostBuf<T>, src: &HostBuf<T>, n: usize) -> Result<()> {
        dst.borrow_mut()[..n].copy_from_slice(&src.borrow()[..n]);
        Ok(())
    }

    fn add(&self, y: &HostBuf<T>, x: &HostBuf<T>, n: usize) -> Result<()> {
        y.borrow_mut()[..n].iter_mut().zip(&x.borrow()[..n]).for_each(|(a, &b)| *a = *a + b);
        Ok(())
    }

    fn cross_entropy(&self, logits: &HostBuf<T>, losses: &HostBuf<T>, labels_buf: &HostBuf<T>, r: Rows, scale: f64) -> Result<()> {
        cross_entropy::forward_backward(&mut logits.borrow_mut(), &mut losses.borrow_mut(), &labels(labels_buf), r.width, scale);
        Ok(())
    }

    fn loss_sum(&self, losses: &HostBuf<T>, n: usize) -> Result<f64> {
        Ok(losses.borrow()[..n].iter().map(|l| l.f64()).sum())
    }
}

/// The whole model on one set of weights and gradients, compute only (no ZeRO hooks).
struct Whole<'a, T> {
    model: &'a Llama,
    ops: CpuOps<'a, T>,
    acts: &'a Activations<HostBuf<T>>,
    logits_scale: f64,
}

impl<T: Real> UnitWork for Whole<'_, T> {
    fn forward(&mut self, piece: Piece) -> Result<()> {
        self.model.forward(&self.ops, self.acts, piece, self.logits_scale)
    }
    fn backward(&mut self, piece: Piece) -> Result<()> {
        self.model.backward(&self.ops, self.acts, piece)
    }
}

/// One micro-batch: `batch` sequences of `seq` tokens; labels use cross_entropy::IGNORE.
pub struct Batch<'a> {
    pub tokens: &'a [u32],
    pub labels: &'a [i32],
    pub batch: usize,
    pub seq: usize,
}

/// One micro-batch's forward and backward on whole `params` (model/layout.rs's one-rank
/// layout): the mean loss, and the gradient × `grad_scale` added into `grads`. The oracle of
/// the GPU step (selftest) and of the gradient checks.
pub fn forward_backward<T: Real>(config: &LlamaConfig, params: &[T], grads: &mut [T], b: &Batch, grad_scale: f64) -> Result<f64> {
    let (batch, seq, tokens, labels) = (b.batch, b.seq, b.tokens, b.labels);
    let model = Llama { config: config.clone(), layout: Layout::new(config), batch, seq, recompute: false };
    let input = PlanInput { model: config.clone(), ranks: 1, stage: 0, micro_batch: batch, grad_accum: 1, seq, recompute: false, bucket_layers: 1 };
    let table: Vec<BufferSpec> =
        step_buffers(&input, Step::Cpu).into_iter().filter(|b| matches!(b.category, Category::Activations | Category::Workspace)).collect();
    let mut all = Allocated::new(&table, |spec| Ok(host_buffer::<T>(spec)))?;
    let acts = Activations::take(&mut all, config.n_layers, false)?;
    all.finish()?;
    let (weights, gradients) = (UnitStore::whole(RefCell::new(params.to_vec()), &model.layout), UnitStore::whole(RefCell::new(grads.to_vec()), &model.layout));
    let ops = CpuOps { weights: &weights, grads: &gradients };
    let logits_scale = model.load_batch(&ops, &acts, tokens, labels, grad_scale)?;
    let mut whole = Whole { model: &model, ops, acts: &acts, logits_scale };
    schedule::forward(&model.layout, &mut whole)?;
    schedule::backward(&model.layout, &mut whole, false)?;
    let loss = model.mean_loss(&whole.ops, &acts, labels)?;
    grads.copy_from_slice(&gradients.whole_buffer().expect("whole gradients").borrow());
    Ok(loss)
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
        // Larger than init-scale weights so every path carries signal.
        let params: Vec<f64> = random(layout.total, 21).iter().map(|v| v * 0.5).collect();
        let tokens = [3u32, 7, 1, 10, 0, 5, 5, 2, 9, 4];
        let labels = [7, 1, IGNORE, 0, 5, 5, 2, IGNORE, 4, 6];
        let b = Batch { tokens: &tokens, labels: &labels, batch: 2, seq: 5 };
        let mut grads = vec![0.0; layout.total];
        forward_backward(&c, &params, &mut grads, &b, 1.0).unwrap();
        let num = numeric_grad(&params, &mut |p| forward_backward(&c, p, &mut vec![0.0; layout.total], &b, 1.0).unwrap());
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
            losses.push(forward_backward(&c, &params, &mut grads, &b, 1.0).unwrap());
            opt.step(&mut params, &grads, &mut m, &mut v, &decay, t, 1.0);
        }
        let first = losses[0];
        assert!((first - (c.vocab_size as f64).ln()).abs() < 0.3, "initial loss {first} far from ln(vocab)");
        assert!(losses[39] < 0.3 * first, "loss went {first} -> {}", losses[39]);
    }
}
