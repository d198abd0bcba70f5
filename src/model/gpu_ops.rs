//! The Llama step's ops on one GPU (model/ops.rs): our kernels (backend/cuda/ops/) and cuBLASLt
//! on bf16 activations and weights, fp32 weight gradients; a tensor's weights and gradients are
//! found in the unit buffers that the ZeRO stage keeps (backend/cuda/unit_buffers.rs).

use super::layout::Tensor;
use super::ops::{Dims, Heads, LlamaOps, Rows, Shape};
use crate::backend::cuda::model_ops::ModelOps;
use crate::backend::cuda::ops::attention::{Qkv, Saved};
use crate::backend::cuda::unit_buffers::UnitBuffers;
use crate::backend::cuda::view::{lengths, View};
use crate::backend::cuda::DeviceBuffer;
use anyhow::Result;
use half::bf16;

pub struct GpuOps<'a, 'g> {
    pub ops: &'a ModelOps<'g>,
    pub weights: &'a UnitBuffers<bf16>,
    pub grads: &'a UnitBuffers<f32>,
}

/// Every activation buffer as bf16, but the fp32 ones: the 1/rms rows, lse, delta, losses.
fn h(b: &DeviceBuffer) -> View<'_, bf16> {
    b.view()
}

fn f(b: &DeviceBuffer) -> View<'_, f32> {
    b.view()
}

/// The first `n` bf16 of a buffer.
fn first(b: &DeviceBuffer, n: usize) -> View<'_, bf16> {
    h(b).slice(0..n)
}

impl LlamaOps for GpuOps<'_, '_> {
    type Buf = DeviceBuffer;

    fn load_batch(&self, tokens: &DeviceBuffer, labels: &DeviceBuffer, token_ids: &[u32], label_ids: &[i32]) -> Result<()> {
        let gpu = self.ops.gpu();
        lengths("a micro-batch", &[(tokens.view::<u32>().len(), token_ids.len(), "tokens"), (labels.view::<i32>().len(), label_ids.len(), "labels")])?;
        gpu.copy_to_device(bytemuck::cast_slice(token_ids), tokens.ptr)?;
        gpu.copy_to_device(bytemuck::cast_slice(label_ids), labels.ptr)
    }

    fn embedding_forward(&self, x: &DeviceBuffer, table: &Tensor, tokens: &DeviceBuffer, _: Rows) -> Result<()> {
        self.ops.embedding_forward(h(x), self.weights.tensor(table), tokens.view())
    }

    fn embedding_backward(&self, dtable: &Tensor, dx: &DeviceBuffer, tokens: &DeviceBuffer, _: Rows) -> Result<()> {
        self.ops.embedding_backward(self.grads.tensor(dtable), h(dx), tokens.view())
    }

    fn rmsnorm_forward(&self, [y, inv]: [&DeviceBuffer; 2], x: &DeviceBuffer, w: &Tensor, _: Rows, eps: f64) -> Result<()> {
        self.ops.rmsnorm_forward(h(y), f(inv), h(x), self.weights.tensor(w), eps)
    }

    fn rmsnorm_backward(&self, dx: &DeviceBuffer, dy: &DeviceBuffer, [x, inv]: [&DeviceBuffer; 2], w: &Tensor, _: Rows) -> Result<()> {
        self.ops.rmsnorm_backward(h(dx), self.grads.tensor(w), h(dy), h(x), self.weights.tensor(w), f(inv))
    }

    fn matmul(&self, y: &DeviceBuffer, x: &DeviceBuffer, w: &Tensor, d: Dims, accumulate: bool) -> Result<()> {
        self.ops.matmul(h(y), h(x), self.weights.tensor(w), d, accumulate)
    }

    fn matmul_backward_input(&self, dx: &DeviceBuffer, dy: &DeviceBuffer, w: &Tensor, d: Dims, accumulate: bool) -> Result<()> {
        self.ops.matmul_backward_input(h(dx), h(dy), self.weights.tensor(w), d, accumulate)
    }

    fn matmul_backward_weight(&self, dw: &Tensor, dy: &DeviceBuffer, x: &DeviceBuffer, d: Dims) -> Result<()> {
        self.ops.matmul_backward_weight(self.grads.tensor(dw), h(dy), h(x), d)
    }

    fn rope(&self, x: &DeviceBuffer, s: Heads, theta: f64, backward: bool) -> Result<()> {
        self.ops.rope(h(x), s.seq, s.heads, s.head_dim, theta, backward)
    }

    fn attention_forward(&self, [o, lse]: [&DeviceBuffer; 2], [q, k, v]: [&DeviceBuffer; 3], s: Shape) -> Result<()> {
        self.ops.attention_forward(h(o), f(lse), Qkv { q: h(q), k: h(k), v: h(v) }, s)
    }

    fn attention_backward(
        &self,
        [dq, dk, dv]: [&DeviceBuffer; 3],
        [d_o, delta]: [&DeviceBuffer; 2],
        [q, k, v, o, lse]: [&DeviceBuffer; 5],
        s: Shape,
    ) -> Result<()> {
        let saved = Saved { qkv: Qkv { q: h(q), k: h(k), v: h(v) }, o: h(o), lse: f(lse) };
        self.ops.attention_backward(Qkv { q: h(dq), k: h(dk), v: h(dv) }, h(d_o), saved, f(delta), s)
    }

    fn swiglu_forward(&self, out: &DeviceBuffer, [gate, up]: [&DeviceBuffer; 2], n: usize) -> Result<()> {
        self.ops.swiglu_forward(first(out, n), first(gate, n), first(up, n))
    }

    fn swiglu_backward(&self, [dgate, dup]: [&DeviceBuffer; 2], dh: &DeviceBuffer, [gate, up]: [&DeviceBuffer; 2], n: usize) -> Result<()> {
        self.ops.swiglu_backward(first(dgate, n), first(dup, n), first(dh, n), first(gate, n), first(up, n))
    }

    fn copy(&self, dst: &DeviceBuffer, src: &DeviceBuffer, n: usize) -> Result<()> {
        self.ops.copy_bf16(first(dst, n), first(src, n))
    }

    fn add(&self, y: &DeviceBuffer, x: &DeviceBuffer, n: usize) -> Result<()> {
        self.ops.add(first(y, n), first(x, n))
    }

    fn cross_entropy(&self, logits: &DeviceBuffer, losses: &DeviceBuffer, labels: &DeviceBuffer, _: Rows, scale: f64) -> Result<()> {
        self.ops.cross_entropy(h(logits), f(losses), labels.view(), scale)
    }

    fn loss_sum(&self, losses: &DeviceBuffer, n: usize) -> Result<f64> {
        let losses: Vec<f32> = self.ops.gpu().download(losses)?;
        Ok(losses[..n].iter().map(|&x| x as f64).sum())
    }
}
