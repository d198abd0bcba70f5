//! The ops a backend gives the Llama step (model/llama.rs): the CPU reference ops
//! (model/cpu_ops.rs: the oracle and the no-GPU path) and our CUDA kernels with cuBLASLt
//! (model/gpu_ops.rs). Activations are the backend's buffers; weights and gradients are named by
//! their tensor (model/layout.rs) and the backend finds them in its unit store (zero/places.rs),
//! so a schedule that computes on a unit not in place stops there. Outputs are overwritten
//! unless `accumulate` says otherwise; weight gradients always accumulate (micro-batches).

use super::layout::Tensor;
pub use crate::backend::cpu::attention::Shape;
pub use crate::backend::cpu::matmul::Dims;
use anyhow::Result;

/// `rows` rows of `width` elements.
#[derive(Clone, Copy, Debug)]
pub struct Rows {
    pub rows: usize,
    pub width: usize,
}

/// `rows` tokens of `heads` vectors of `head_dim` each; a token's position is its row mod `seq`.
#[derive(Clone, Copy, Debug)]
pub struct Heads {
    pub rows: usize,
    pub seq: usize,
    pub heads: usize,
    pub head_dim: usize,
}

pub trait LlamaOps {
    /// An activation buffer.
    type Buf;

    /// The micro-batch's token ids, and its labels (IGNORE where a position does not count).
    fn load_batch(&self, tokens: &Self::Buf, labels: &Self::Buf, token_ids: &[u32], label_ids: &[i32]) -> Result<()>;
    /// x[t] = E[tokens[t]].
    fn embedding_forward(&self, x: &Self::Buf, table: &Tensor, tokens: &Self::Buf, r: Rows) -> Result<()>;
    /// dE[tokens[t]] += dx[t].
    fn embedding_backward(&self, dtable: &Tensor, dx: &Self::Buf, tokens: &Self::Buf, r: Rows) -> Result<()>;
    /// out = [y, inv_rms]: y = x · inv_rms ⊙ w per row.
    fn rmsnorm_forward(&self, out: [&Self::Buf; 2], x: &Self::Buf, w: &Tensor, r: Rows, eps: f64) -> Result<()>;
    /// saved = [x, inv_rms] of the forward; w's gradient accumulates.
    fn rmsnorm_backward(&self, dx: &Self::Buf, dy: &Self::Buf, saved: [&Self::Buf; 2], w: &Tensor, r: Rows) -> Result<()>;
    /// y (+)= x · Wᵀ.
    fn matmul(&self, y: &Self::Buf, x: &Self::Buf, w: &Tensor, d: Dims, accumulate: bool) -> Result<()>;
    /// dx (+)= dy · W.
    fn matmul_backward_input(&self, dx: &Self::Buf, dy: &Self::Buf, w: &Tensor, d: Dims, accumulate: bool) -> Result<()>;
    /// dW += dyᵀ · x.
    fn matmul_backward_weight(&self, dw: &Tensor, dy: &Self::Buf, x: &Self::Buf, d: Dims) -> Result<()>;
    /// RoPE in place; `backward` turns back.
    fn rope(&self, x: &Self::Buf, h: Heads, theta: f64, backward: bool) -> Result<()>;
    /// out = [o, lse] from [q, k, v]: causal GQA attention.
    fn attention_forward(&self, out: [&Self::Buf; 2], qkv: [&Self::Buf; 3], s: Shape) -> Result<()>;
    /// grads = [dq, dk, dv] from [d_o, delta scratch] and the forward's [q, k, v, o, lse].
    fn attention_backward(&self, grads: [&Self::Buf; 3], d_o: [&Self::Buf; 2], saved: [&Self::Buf; 5], s: Shape) -> Result<()>;
    /// h = silu(gate) ⊙ up over `n` elements.
    fn swiglu_forward(&self, h: &Self::Buf, gate_up: [&Self::Buf; 2], n: usize) -> Result<()>;
    /// grads = [dgate, dup].
    fn swiglu_backward(&self, grads: [&Self::Buf; 2], dh: &Self::Buf, gate_up: [&Self::Buf; 2], n: usize) -> Result<()>;
    /// dst = src (`n` elements): the residual stream that the next product accumulates onto.
    fn copy(&self, dst: &Self::Buf, src: &Self::Buf, n: usize) -> Result<()>;
    /// y += x.
    fn add(&self, y: &Self::Buf, x: &Self::Buf, n: usize) -> Result<()>;
    /// Per-row losses (0 on ignored rows); the logits become (softmax − onehot) · scale.
    fn cross_entropy(&self, logits: &Self::Buf, losses: &Self::Buf, labels: &Self::Buf, r: Rows, scale: f64) -> Result<()>;
    /// Σ of the first `n` per-row losses (waits for the device).
    fn loss_sum(&self, losses: &Self::Buf, n: usize) -> Result<f64>;
}
