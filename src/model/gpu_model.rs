//! The Llama-2 step on one GPU: the same pre-norm blocks as cpu_model.rs, on bf16 weights and
//! activations (fp32 master weights, gradients and Adam moments), our kernels and cuBLAS.
//! Every parameter buffer is flat in the layout's order, so a tensor is an offset.

use super::config::LlamaConfig;
use super::layout::{Kind, LayerTensors, Layout, Tensor};
use crate::backend::cpu::adamw::{clip_factor, AdamW};
use crate::backend::cpu::attention::Shape;
use crate::backend::cpu::matmul::Dims;
use crate::backend::cuda::attention::{self as attn, Buffers};
use crate::backend::cuda::model_ops::ModelOps;
use crate::backend::cuda::{DeviceBuffer, Gpu};
use crate::dist::nccl::NcclComm;
use anyhow::Result;
use crate::train::data_parallel::Ranks;
use crate::zero::partition::Partition;
use rayon::prelude::*;
use cudarc::driver::CudaStream;
use std::ops::Range;

/// One layer's forward activations that its backward reads (bf16 unless noted); the layer's
/// input lives apart, in `GpuModel::inputs`.
struct LayerActs {
    xn: DeviceBuffer,
    inv1: DeviceBuffer, // fp32
    q: DeviceBuffer,
    k: DeviceBuffer,
    v: DeviceBuffer,
    p: DeviceBuffer, // attention probabilities [batch, heads, seq, seq]
    o: DeviceBuffer,
    x2: DeviceBuffer,
    xn2: DeviceBuffer,
    inv2: DeviceBuffer, // fp32
    gate: DeviceBuffer,
    up: DeviceBuffer,
    h: DeviceBuffer,
}

/// Gradients of activations and other scratch, reused by every layer.
struct Scratch {
    scores: DeviceBuffer, // fp32 [batch, heads, seq, seq]; also dP
    ds: DeviceBuffer,
    dx: DeviceBuffer,
    dx2: DeviceBuffer,
    dxn: DeviceBuffer,
    dq: DeviceBuffer,
    dk: DeviceBuffer,
    dv: DeviceBuffer,
    d_o: DeviceBuffer,
    dgate: DeviceBuffer,
    dup: DeviceBuffer,
    dh: DeviceBuffer,
}

/// Allocates what zero::planner plans for stages 0 and 1 (the sft run prints both).
pub struct GpuModel<'g> {
    pub config: LlamaConfig,
    pub layout: Layout,
    gpu: &'g Gpu,
    pub ops: ModelOps<'g>,
    pub batch: usize,
    pub seq: usize,
    master: DeviceBuffer,  // fp32
    weights: DeviceBuffer, // bf16 working copy
    grads: DeviceBuffer,   // fp32
    m: DeviceBuffer,
    v: DeviceBuffer,
    /// Each layer's input, then the last layer's output.
    inputs: Vec<DeviceBuffer>,
    /// Every layer's activations, or with recompute one set that each layer refills in its
    /// backward (activation checkpointing at layer boundaries).
    acts: Vec<LayerActs>,
    recompute: bool,
    xf: DeviceBuffer,
    invf: DeviceBuffer,
    logits: DeviceBuffer,
    losses: DeviceBuffer,
    tokens: DeviceBuffer,
    labels: DeviceBuffer,
    norm: DeviceBuffer, // fp64 sum of squares
    /// ZeRO-1: this rank's slice of the summed gradients.
    grad_shard: Option<DeviceBuffer>,
    shards: Shards,
    s: Scratch,
}

/// How the flat buffer is split over the ranks and which ZeRO stage the step runs.
#[derive(Clone, Copy, Debug)]
pub struct Shards {
    pub part: Partition,
    pub rank: usize,
    pub stage: u8,
}

impl Shards {
    /// The elements whose master weights and moments this rank keeps.
    pub fn own(&self) -> Range<usize> {
        if self.stage >= 1 {
            self.part.range(self.rank)
        } else {
            0..self.part.total
        }
    }
}

impl<'g> GpuModel<'g> {
    /// Allocates everything for micro-batches of `batch` × `seq` and uploads `master` (fp32).
    /// With `shards.stage` ≥ 1 this rank keeps fp32 master weights and Adam moments for its
    /// shard of the flat buffer only (ZeRO-1); `master` is always the whole initialisation.
    pub fn new(gpu: &'g Gpu, config: &LlamaConfig, master: &[f32], batch: usize, seq: usize, recompute: bool, shards: Shards) -> Result<GpuModel<'g>> {
        let c = config;
        let layout = Layout::new(c);
        let n = batch * seq;
        let (d, kv, f) = (c.dim, c.kv_dim(), c.ffn_dim);
        let scores = batch * c.n_heads * seq * seq;
        let bf = |elems: usize| gpu.alloc(2 * elems);
        let f32s = |elems: usize| gpu.alloc(4 * elems);
        let kept = if recompute { 1 } else { c.n_layers };
        let acts = (0..kept)
            .map(|_| {
                Ok(LayerActs {
                    xn: bf(n * d)?,
                    inv1: f32s(n)?,
                    q: bf(n * d)?,
                    k: bf(n * kv)?,
                    v: bf(n * kv)?,
                    p: bf(scores)?,
                    o: bf(n * d)?,
                    x2: bf(n * d)?,
                    xn2: bf(n * d)?,
                    inv2: f32s(n)?,
                    gate: bf(n * f)?,
                    up: bf(n * f)?,
                    h: bf(n * f)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let s = Scratch {
            scores: f32s(scores)?,
            ds: bf(scores)?,
            dx: bf(n * d)?,
            dx2: bf(n * d)?,
            dxn: bf(n * d)?,
            dq: bf(n * d)?,
            dk: bf(n * kv)?,
            dv: bf(n * kv)?,
            d_o: bf(n * d)?,
            dgate: bf(n * f)?,
            dup: bf(n * f)?,
            dh: bf(n * f)?,
        };
        // The bf16 working copy of the whole model (rounded on the host, as the kernel would),
        // and the fp32 master weights this rank updates.
        let mut weights: Vec<half::bf16> = master.par_iter().map(|&w| half::bf16::from_f32(w)).collect();
        weights.resize(shards.part.padded(), half::bf16::ZERO);
        let own = shards.own();
        let mut own_master = master[own.clone()].to_vec();
        own_master.resize(if shards.stage >= 1 { shards.part.shard } else { own.len() }, 0.0);
        let model = GpuModel {
            ops: ModelOps::load(gpu)?,
            master: gpu.upload(&own_master)?,
            weights: gpu.upload(&weights)?,
            grads: f32s(shards.part.padded())?,
            m: gpu.upload(&vec![0f32; own_master.len()])?,
            v: gpu.upload(&vec![0f32; own_master.len()])?,
            grad_shard: if shards.stage >= 1 { Some(f32s(shards.part.shard)?) } else { None },
            shards,
            inputs: (0..=c.n_layers).map(|_| bf(n * d)).collect::<Result<Vec<_>>>()?,
            acts,
            recompute,
            xf: bf(n * d)?,
            invf: f32s(n)?,
            logits: bf(n * c.vocab_size)?,
            losses: f32s(n)?,
            tokens: gpu.alloc(4 * n)?,
            labels: gpu.alloc(4 * n)?,
            norm: gpu.alloc(8)?,
            s,
            config: c.clone(),
            layout,
            gpu,
            batch,
            seq,
        };
        Ok(model)
    }

    fn acts_of(&self, layer: usize) -> &LayerActs {
        &self.acts[if self.recompute { 0 } else { layer }]
    }

    fn w(&self, t: &Tensor) -> u64 {
        self.weights.ptr + 2 * t.offset as u64
    }

    fn g(&self, t: &Tensor) -> u64 {
        self.grads.ptr + 4 * t.offset as u64
    }

    fn shape(&self) -> Shape {
        let c = &self.config;
        Shape { batch: self.batch, seq: self.seq, heads: c.n_heads, kv_heads: c.n_kv_heads, head_dim: c.head_dim() }
    }

    fn dims(&self, k: usize, n: usize) -> Dims {
        Dims { m: self.batch * self.seq, k, n }
    }

    /// The residual stream copied into the buffer its next product accumulates onto.
    fn copy_residual(&self, dst: u64, src: u64, elems: usize) -> Result<()> {
        self.ops.gemm.timer.time("copy residual", || self.gpu.copy_device(dst, src, 2 * elems))
    }

    pub fn zero_grads(&self) -> Result<()> {
        self.gpu.memset(self.grads.ptr, 0, self.grads.bytes)
    }

    /// The layer's forward from input `x`; `out` None (a recompute) skips the last product,
    /// whose result the backward does not read.
    fn layer_forward(&self, lt: &LayerTensors, x: u64, a: &LayerActs, out: Option<u64>) -> Result<()> {
        let (c, ops, n) = (&self.config, &self.ops, self.batch * self.seq);
        let (d, kv, f) = (c.dim, c.kv_dim(), c.ffn_dim);
        ops.rmsnorm_forward(a.xn.ptr, a.inv1.ptr, x, self.w(&lt.attn_norm), n, d, c.norm_eps)?;
        ops.gemm.forward(a.q.ptr, a.xn.ptr, self.w(&lt.wq), self.dims(d, d), false)?;
        ops.gemm.forward(a.k.ptr, a.xn.ptr, self.w(&lt.wk), self.dims(d, kv), false)?;
        ops.gemm.forward(a.v.ptr, a.xn.ptr, self.w(&lt.wv), self.dims(d, kv), false)?;
        ops.rope(a.q.ptr, n, self.seq, c.n_heads, c.head_dim(), c.rope_theta, false)?;
        ops.rope(a.k.ptr, n, self.seq, c.n_kv_heads, c.head_dim(), c.rope_theta, false)?;
        let buf = Buffers { scores: self.s.scores.ptr, p: a.p.ptr, ds: self.s.ds.ptr };
        attn::forward(ops, a.o.ptr, a.q.ptr, a.k.ptr, a.v.ptr, &buf, self.shape())?;
        self.copy_residual(a.x2.ptr, x, n * d)?;
        ops.gemm.forward(a.x2.ptr, a.o.ptr, self.w(&lt.wo), self.dims(d, d), true)?;
        ops.rmsnorm_forward(a.xn2.ptr, a.inv2.ptr, a.x2.ptr, self.w(&lt.mlp_norm), n, d, c.norm_eps)?;
        ops.gemm.forward(a.gate.ptr, a.xn2.ptr, self.w(&lt.w_gate), self.dims(d, f), false)?;
        ops.gemm.forward(a.up.ptr, a.xn2.ptr, self.w(&lt.w_up), self.dims(d, f), false)?;
        ops.swiglu_forward(a.h.ptr, a.gate.ptr, a.up.ptr, n * f)?;
        match out {
            Some(out) => {
                self.copy_residual(out, a.x2.ptr, n * d)?;
                ops.gemm.forward(out, a.h.ptr, self.w(&lt.w_down), self.dims(f, d), true)
            }
            None => Ok(()),
        }
    }

    /// `dx` holds d(loss)/d(layer output) and becomes d(loss)/d(layer input).
    fn layer_backward(&self, lt: &LayerTensors, x: u64, a: &LayerActs) -> Result<()> {
        let (c, ops, s, n) = (&self.config, &self.ops, &self.s, self.batch * self.seq);
        let (d, kv, f) = (c.dim, c.kv_dim(), c.ffn_dim);
        let dout = s.dx.ptr;
        // MLP: out = x2 + Wdown·h
        ops.gemm.backward_input(s.dh.ptr, dout, self.w(&lt.w_down), self.dims(f, d), false)?;
        ops.gemm.backward_weight(self.g(&lt.w_down), dout, a.h.ptr, self.dims(f, d))?;
        ops.swiglu_backward(s.dgate.ptr, s.dup.ptr, s.dh.ptr, a.gate.ptr, a.up.ptr, n * f)?;
        ops.gemm.backward_input(s.dxn.ptr, s.dgate.ptr, self.w(&lt.w_gate), self.dims(d, f), false)?;
        ops.gemm.backward_input(s.dxn.ptr, s.dup.ptr, self.w(&lt.w_up), self.dims(d, f), true)?;
        ops.gemm.backward_weight(self.g(&lt.w_gate), s.dgate.ptr, a.xn2.ptr, self.dims(d, f))?;
        ops.gemm.backward_weight(self.g(&lt.w_up), s.dup.ptr, a.xn2.ptr, self.dims(d, f))?;
        ops.rmsnorm_backward(s.dx2.ptr, self.g(&lt.mlp_norm), s.dxn.ptr, a.x2.ptr, self.w(&lt.mlp_norm), a.inv2.ptr, n, d)?;
        ops.add(s.dx2.ptr, dout, n * d)?;
        // Attention: x2 = x + Wo·attn
        ops.gemm.backward_input(s.d_o.ptr, s.dx2.ptr, self.w(&lt.wo), self.dims(d, d), false)?;
        ops.gemm.backward_weight(self.g(&lt.wo), s.dx2.ptr, a.o.ptr, self.dims(d, d))?;
        let buf = Buffers { scores: s.scores.ptr, p: a.p.ptr, ds: s.ds.ptr };
        attn::backward(ops, s.dq.ptr, s.dk.ptr, s.dv.ptr, s.d_o.ptr, a.q.ptr, a.k.ptr, a.v.ptr, &buf, self.shape())?;
        ops.rope(s.dq.ptr, n, self.seq, c.n_heads, c.head_dim(), c.rope_theta, true)?;
        ops.rope(s.dk.ptr, n, self.seq, c.n_kv_heads, c.head_dim(), c.rope_theta, true)?;
        ops.gemm.backward_input(s.dxn.ptr, s.dq.ptr, self.w(&lt.wq), self.dims(d, d), false)?;
        ops.gemm.backward_input(s.dxn.ptr, s.dk.ptr, self.w(&lt.wk), self.dims(d, kv), true)?;
        ops.gemm.backward_input(s.dxn.ptr, s.dv.ptr, self.w(&lt.wv), self.dims(d, kv), true)?;
        ops.gemm.backward_weight(self.g(&lt.wq), s.dq.ptr, a.xn.ptr, self.dims(d, d))?;
        ops.gemm.backward_weight(self.g(&lt.wk), s.dk.ptr, a.xn.ptr, self.dims(d, kv))?;
        ops.gemm.backward_weight(self.g(&lt.wv), s.dv.ptr, a.xn.ptr, self.dims(d, kv))?;
        ops.rmsnorm_backward(s.dx.ptr, self.g(&lt.attn_norm), s.dxn.ptr, x, self.w(&lt.attn_norm), a.inv1.ptr, n, d)?;
        ops.add(s.dx.ptr, s.dx2.ptr, n * d)
    }

    /// Forward of one micro-batch to the per-position losses; the logits become their gradient
    /// × `grad_scale` / counted positions. Returns the mean loss (waits for the GPU).
    pub fn forward(&self, tokens: &[u32], labels: &[i32], grad_scale: f64) -> Result<f64> {
        let (c, ops, n) = (&self.config, &self.ops, self.batch * self.seq);
        let l = &self.layout;
        self.gpu.copy_to_device(bytemuck::cast_slice(tokens), self.tokens.ptr)?;
        self.gpu.copy_to_device(bytemuck::cast_slice(labels), self.labels.ptr)?;
        ops.embedding_forward(self.inputs[0].ptr, self.w(&l.embedding), self.tokens.ptr, n, c.dim)?;
        for (i, lt) in l.layers.iter().enumerate() {
            self.layer_forward(lt, self.inputs[i].ptr, self.acts_of(i), Some(self.inputs[i + 1].ptr))?;
        }
        let last = self.inputs[l.layers.len()].ptr;
        ops.rmsnorm_forward(self.xf.ptr, self.invf.ptr, last, self.w(&l.final_norm), n, c.dim, c.norm_eps)?;
        ops.gemm.forward(self.logits.ptr, self.xf.ptr, self.w(&l.lm_head), self.dims(c.dim, c.vocab_size), false)?;
        let counted = labels.iter().filter(|&&x| x >= 0).count().max(1);
        ops.cross_entropy(self.logits.ptr, self.losses.ptr, self.labels.ptr, n, c.vocab_size, grad_scale / counted as f64)?;
        let losses: Vec<f32> = self.gpu.download(&self.losses)?;
        Ok(losses.iter().map(|&x| x as f64).sum::<f64>() / counted as f64)
    }

    /// Adds the micro-batch's gradient into the fp32 gradient buffer. `done` hears of each
    /// slice of the buffer (parameter elements) whose gradient this backward has finished
    /// queueing: the head, then every layer from the last, then the embedding.
    pub fn backward(&self, done: &mut dyn FnMut(Range<usize>) -> Result<()>) -> Result<()> {
        let (c, ops, s, n) = (&self.config, &self.ops, &self.s, self.batch * self.seq);
        let l = &self.layout;
        let (d, v) = (c.dim, c.vocab_size);
        ops.gemm.backward_input(s.dxn.ptr, self.logits.ptr, self.w(&l.lm_head), self.dims(d, v), false)?;
        ops.gemm.backward_weight(self.g(&l.lm_head), self.logits.ptr, self.xf.ptr, self.dims(d, v))?;
        let last = self.inputs[l.layers.len()].ptr;
        ops.rmsnorm_backward(s.dx.ptr, self.g(&l.final_norm), s.dxn.ptr, last, self.w(&l.final_norm), self.invf.ptr, n, d)?;
        done(l.final_norm.offset..l.lm_head.range().end)?;
        for (i, lt) in l.layers.iter().enumerate().rev() {
            if self.recompute {
                self.layer_forward(lt, self.inputs[i].ptr, self.acts_of(i), None)?;
            }
            self.layer_backward(lt, self.inputs[i].ptr, self.acts_of(i))?;
            done(lt.attn_norm.offset..lt.w_down.range().end)?;
        }
        ops.embedding_backward(self.g(&l.embedding), s.dx.ptr, self.tokens.ptr, n, d)?;
        done(l.embedding.range())
    }

    /// Queues on `stream` the in-place sum over the communicator's ranks of the gradient
    /// elements `range` (data parallel).
    pub fn sum_grads(&self, comm: &NcclComm, range: Range<usize>, stream: &CudaStream) -> Result<()> {
        use cudarc::nccl::sys as nccl;
        let p = (self.grads.ptr + 4 * range.start as u64) as *mut std::ffi::c_void;
        let (f32_, sum) = (nccl::ncclDataType_t::ncclFloat32, nccl::ncclRedOp_t::ncclSum);
        let s = stream.cu_stream() as nccl::cudaStream_t;
        let r = unsafe { nccl::ncclAllReduce(p, p, range.len(), f32_, sum, comm.raw(), s) };
        crate::dist::nccl::check(r, "ncclAllReduce of the gradients", Some(comm.raw()))
    }

    /// ZeRO-1: reduce-scatters the gradients so this rank holds its shard of their sum
    /// (stage 0 sums during the backward: nothing to do).
    pub fn reduce_gradients(&self, comm: Option<&NcclComm>) -> Result<()> {
        use cudarc::nccl::sys as nccl;
        let Some(shard) = &self.grad_shard else { return Ok(()) };
        let count = self.shards.part.shard;
        match comm {
            Some(c) => self.ops.gemm.timer.time("ncclReduceScatter gradients", || {
                let (f32_, sum) = (nccl::ncclDataType_t::ncclFloat32, nccl::ncclRedOp_t::ncclSum);
                let (src, dst) = (self.grads.ptr as *const std::ffi::c_void, shard.ptr as *mut std::ffi::c_void);
                let r = unsafe { nccl::ncclReduceScatter(src, dst, count, f32_, sum, c.raw(), self.nccl_stream()) };
                crate::dist::nccl::check(r, "ncclReduceScatter of the gradients", Some(c.raw()))
            }),
            None => self.gpu.copy_device(shard.ptr, self.grads.ptr, 4 * count),
        }
    }

    /// Global gradient norm, clipping and one AdamW step (t from 1) on this rank's part of the
    /// gradients summed over the ranks (their mean is what counts); returns the mean's norm.
    pub fn optimizer_step(&self, opt: &AdamW, t: u64, max_norm: f64, ranks: &dyn Ranks) -> Result<f64> {
        let own = self.shards.own();
        let grads = self.grad_shard.as_ref().map_or(self.grads.ptr, |g| g.ptr);
        self.gpu.memset(self.norm.ptr, 0, 8)?;
        self.ops.sum_squares(self.norm.ptr, grads, own.len())?;
        let mut squares = self.gpu.download::<f64>(&self.norm)?[0];
        if self.shards.stage >= 1 {
            squares = ranks.sum_f64(squares);
        }
        let n = ranks.count() as f64;
        let norm = squares.sqrt() / n;
        let scale = clip_factor(norm, max_norm) / n;
        for tensor in self.layout.tensors() {
            let (start, end) = (tensor.offset.max(own.start), tensor.range().end.min(own.end));
            if start >= end {
                continue;
            }
            let local = (start - own.start) as u64;
            self.ops.adamw(
                opt,
                self.master.ptr + 4 * local,
                self.weights.ptr + 2 * start as u64,
                grads + 4 * local,
                self.m.ptr + 4 * local,
                self.v.ptr + 4 * local,
                end - start,
                t,
                tensor.kind != Kind::Gain,
                scale,
            )?;
        }
        Ok(norm)
    }

    /// ZeRO-1: all-gathers the updated bf16 weights from every rank's shard.
    pub fn gather_weights(&self, comm: Option<&NcclComm>) -> Result<()> {
        use cudarc::nccl::sys as nccl;
        let (sh, Some(c)) = (self.shards, comm) else { return Ok(()) };
        if sh.stage == 0 {
            return Ok(());
        }
        self.ops.gemm.timer.time("ncclAllGather weights", || {
            let mine = (self.weights.ptr + 2 * (sh.rank * sh.part.shard) as u64) as *const std::ffi::c_void;
            let all = self.weights.ptr as *mut std::ffi::c_void;
            let bf16 = nccl::ncclDataType_t::ncclBfloat16;
            let r = unsafe { nccl::ncclAllGather(mine, all, sh.part.shard, bf16, c.raw(), self.nccl_stream()) };
            crate::dist::nccl::check(r, "ncclAllGather of the weights", Some(c.raw()))
        })
    }

    fn nccl_stream(&self) -> cudarc::nccl::sys::cudaStream_t {
        self.gpu.stream.cu_stream() as cudarc::nccl::sys::cudaStream_t
    }

    /// ZeRO-1 leaves the gradient sum to the optimizer step; stage 0 sums during the backward.
    pub fn sums_during_backward(&self) -> bool {
        self.shards.stage == 0
    }

    pub fn grads(&self) -> Result<Vec<f32>> {
        self.gpu.download(&self.grads)
    }

    /// The bf16 weights the GPU computes with, widened to f32.
    pub fn weights_f32(&self) -> Result<Vec<f32>> {
        Ok(self.gpu.download::<half::bf16>(&self.weights)?.iter().map(|w| w.to_f32()).collect())
    }
}
