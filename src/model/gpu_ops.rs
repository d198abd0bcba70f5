//! The Llama step's ops on one GPU (model/ops.rs): our kernels (backend/cuda/ops/) and cuBLASLt
//! on bf16 activations and weights, fp32 weight gradients; a tensor's weights and gradients are
//! found in the unit buffers that the ZeRO stage keeps (backend/cuda/unit_buffers.rs).

use super::layout::Tensor;
use super::ops::{Dims, Heads, LlamaOps, Rows, Shape};
use crate::backend::cuda::model_ops::ModelOps;
use crate::backend::cuda::ops::attention as attn;
use crate::backend::cuda::DeviceBuffer;
use crate::backend::cuda::unit_buffers::UnitBuffers;
use anyhow::Result;

pub struct GpuOps<'a, 'g> {
    pub ops: &'a ModelOps<'g>,
    pub weights: &'a UnitBuffers,
    pub grads: &'a UnitBuffers,
}

impl GpuOps<'_, '_> {
    fn w(&self, t: &Tensor) -> u64 {
        self.weights.at(t.unit, t.offset)
    }

    fn g(&self, t: &Tensor) -> u64 {
        self.grads.at(t.unit, t.offset)
    }
}

impl LlamaOps for GpuOps<'_, '_> {
    type Buf = DeviceBuffer;

    fn load_batch(&self, tokens: &DeviceBuffer, labels: &DeviceBuffer, token_ids: &[u32], label_ids: &[i32]) -> Result<()> {
        let gpu = self.ops.gpu();
        gpu.copy_to_device(bytemuck::cast_slice(token_ids), tokens.ptr)?;
        gpu.copy_to_device(bytemuck::cast_slice(label_ids), labels.ptr)
    }

    fn embedding_forward(&self, x: &DeviceBuffer, table: &Tensor, tokens: &DeviceBuffer, r: Rows) -> Result<()> {
        self.ops.embedding_forward(x.ptr, self.w(table), tokens.ptr, r.rows, r.width)
    }

    fn embedding_backward(&self, dtable: &Tensor, dx: &DeviceBuffer, tokens: &DeviceBuffer, r: Rows) -> Result<()> {
        self.ops.embedding_backward(self.g(dtable), dx.ptr, tokens.ptr, r.rows, r.width)
    }

    fn rmsnorm_forward(&self, [y, inv]: [&DeviceBuffer; 2], x: &DeviceBuffer, w: &Tensor, r: Rows, eps: f64) -> Result<()> {
        self.ops.rmsnorm_forward(y.ptr, inv.ptr, x.ptr, self.w(w), r.rows, r.width, eps)
    }

    fn rmsnorm_backward(&self, dx: &DeviceBuffer, dy: &DeviceBuffer, [x, inv]: [&DeviceBuffer; 2], w: &Tensor, r: Rows) -> Result<()> {
        self.ops.rmsnorm_backward(dx.ptr, self.g(w), dy.ptr, x.ptr, self.w(w), inv.ptr, r.rows, r.width)
    }

    fn matmul(&self, y: &DeviceBuffer, x: &DeviceBuffer, w: &Tensor, d: Dims, accumulate: bool) -> Result<()> {
        self.ops.gemm.forward(y.ptr, x.ptr, self.w(w), d, accumulate)
    }

    fn matmul_backward_input(&self, dx: &DeviceBuffer, dy: &DeviceBuffer, w: &Tensor, d: Dims, accumulate: bool) -> Result<()> {
        self.ops.gemm.backward_input(dx.ptr, dy.ptr, self.w(w), d, accumulate)
    }

    fn matmul_backward_weight(&self, dw: &Tensor, dy: &DeviceBuffer, x: &DeviceBuffer, d: Dims) -> Result<()> {
        self.ops.gemm.backward_weight(self.g(dw), dy.ptr, x.ptr, d)
    }

    fn rope(&self, x: &DeviceBuffer, h: Heads, theta: f64, backward: bool) -> Result<()> {
        self.ops.rope(x.ptr, h.rows, h.seq, h.heads, h.head_dim, theta, backward)
    }

    fn attention_forward(&self, [o, lse]: [&DeviceBuffer; 2], [q, k, v]: [&DeviceBuffer; 3], s: Shape) -> Result<()> {
        attn::forward(self.ops, o.ptr, lse.ptr, q.ptr, k.ptr, v.ptr, s)
    }

    fn attention_backward(&self, [dq, dk, dv]: [&DeviceBuffer; 3], [d_o, delta]: [&DeviceBuffer; 2], [q, k, v, o, lse]: [&DeviceBuffer; 5], s: Shape) -> Result<()> {
        attn::backward(self.ops, dq.ptr, dk.ptr, dv.ptr, d_o.ptr, q.ptr, k.ptr, v.ptr, o.ptr, lse.ptr, delta.ptr, s)
    }

    fn swiglu_forward(&self, h: &DeviceBuffer, [gate, up]: [&DeviceBuffer; 2], n: usize) -> Result<()> {
        self.ops.swiglu_forward(h.ptr, gate.ptr, up.ptr, n)
    }

    fn swiglu_backward(&self, [dgate, dup]: [&DeviceBuffer; 2], dh: &DeviceBuffer, [gate, up]: [&DeviceBuffer; 2], n: usize) -> Result<()> {
        self.ops.swiglu_backward(dgate.ptr, dup.ptr, dh.ptr, gate.ptr, up.ptr, n)
    }

    fn copy(&self, dst: &DeviceBuffer, src: &DeviceBuffer, n: usize) -> Result<()> {
        self.ops.copy_bf16(dst.ptr, src.ptr, n)
    }

    fn add(&self, y: &DeviceBuffer, x: &DeviceBuffer, n: usize) -> Result<()> {
        self.ops.add(y.ptr, x.ptr, n)
    }

    fn cross_entropy(&self, logits: &DeviceBuffer, losses: &DeviceBuffer, labels: &DeviceBuffer, r: Rows, scale: f64) -> Result<()> {
        self.ops.cross_entropy(logits.ptr, losses.ptr, labels.ptr, r.rows, r.width, scale)
    }

    fn loss_sum(&self, losses: &DeviceBuffer, n: usize) -> Result<f64> {
        let losses: Vec<f32> = self.ops.gpu().download(losses)?;
        Ok(losses[..n].iter().map(|&x| x as f64).sum())
    }
}
