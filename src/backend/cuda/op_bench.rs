//! One op timed alone (`h200-mpibench op`): its buffers allocated and filled, untimed warm-up
//! runs, then repetitions each between two CUDA events, and the work one run does (FLOP or
//! bytes) by the formula that names its rate.

use super::check::Inputs;
use super::model_ops::ModelOps;
use super::op_timer::timed;
use super::ops::adamw::AdamStep;
use super::ops::attention::{Qkv, Saved};
use crate::backend::cpu::adamw::AdamW;
use crate::backend::cpu::attention::Shape;
use crate::cli::op::{OpName, OpPlan};
use crate::zero::step_model::ADAMW_BYTES_PER_PARAM;
use anyhow::Result;
use half::bf16;

/// What one run of an op does, for its rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Work {
    /// Floating-point operations (TFLOP/s).
    Flop(f64),
    /// Bytes read plus bytes written (GB/s).
    Bytes(f64),
}

/// One timed op: its name and shape, the seconds of each repetition, the work of one run.
#[derive(Clone, Debug)]
pub struct OpTiming {
    pub name: &'static str,
    pub shape: String,
    pub seconds: Vec<f64>,
    pub work: Work,
}

/// Causal attention's FLOP, the convention the anchors and FlashAttention use: the two matrix
/// products of the forward (4·B·H·S²·D) over the causal half, and 2.5× that for the backward's
/// five. Returns (forward, backward).
pub fn attention_flop(s: &Shape) -> (f64, f64) {
    let forward = 4.0 * s.batch as f64 * s.heads as f64 * (s.seq as f64).powi(2) * s.head_dim as f64 / 2.0;
    (forward, 2.5 * forward)
}

/// Device memory an op takes at shape `plan` (what the caller checks is free first).
pub fn gpu_bytes(op: OpName, plan: &OpPlan) -> u64 {
    let s = &plan.attention;
    let (nq, nkv, rows) = (s.q_len() as u64, s.kv_len() as u64, s.rows() as u64);
    match op {
        // q, o, dO, dq and k, v, dk, dv in bf16; lse and delta in fp32.
        OpName::Attention => 4 * 2 * nq + 4 * 2 * nkv + 2 * 4 * rows,
        // fp32 params, grads, m, v and the bf16 copy.
        OpName::Adamw => 18 * plan.elements,
        OpName::Copy => 2 * 4 * plan.elements,
    }
}

/// Times `op`: attention gives its forward and its backward, the others one timing each.
pub fn run(ops: &ModelOps, op: OpName, plan: &OpPlan, inputs: &mut Inputs) -> Result<Vec<OpTiming>> {
    let gpu = ops.gpu();
    let time = |work: &mut dyn FnMut() -> Result<()>| timed(gpu, plan.warmup, plan.repetitions, 1, work);
    match op {
        OpName::Attention => {
            let s = plan.attention;
            let (nq, nkv, rows) = (s.q_len(), s.kv_len(), s.rows());
            let upload = |n: usize, inputs: &mut Inputs| gpu.upload(&inputs.take(n, 1.0).bits);
            let (q, k, v, d_o) = (upload(nq, inputs)?, upload(nkv, inputs)?, upload(nkv, inputs)?, upload(nq, inputs)?);
            let (o, lse, delta) = (gpu.alloc(nq * 2)?, gpu.alloc(rows * 4)?, gpu.alloc(rows * 4)?);
            let (dq, dk, dv) = (gpu.alloc(nq * 2)?, gpu.alloc(nkv * 2)?, gpu.alloc(nkv * 2)?);
            let qkv = Qkv { q: q.view(), k: k.view(), v: v.view() };
            let forward = time(&mut || ops.attention_forward(o.view(), lse.view(), qkv, s))?;
            let saved = Saved { qkv, o: o.view(), lse: lse.view() };
            let grads = Qkv { q: dq.view::<bf16>(), k: dk.view(), v: dv.view() };
            let backward = time(&mut || ops.attention_backward(grads, d_o.view(), saved, delta.view(), s))?;
            let shape = format!("b {} h {} kv {} s {} d {} causal", s.batch, s.heads, s.kv_heads, s.seq, s.head_dim);
            let (f, b) = attention_flop(&s);
            Ok(vec![
                OpTiming { name: "attention forward", shape: shape.clone(), seconds: forward, work: Work::Flop(f) },
                OpTiming { name: "attention backward", shape, seconds: backward, work: Work::Flop(b) },
            ])
        }
        OpName::Adamw => {
            let n = plan.elements as usize;
            // Positive values for every buffer (0x3c3c3c3c is 0.0115 as fp32): the moments'
            // square root stays real, and the update is the same arithmetic as in training.
            let fp32 = || -> Result<_> {
                let b = gpu.alloc(n * 4)?;
                gpu.memset(b.ptr, 0x3c, n * 4)?;
                Ok(b)
            };
            let (params, grads, m, v, copy) = (fp32()?, fp32()?, fp32()?, fp32()?, gpu.alloc(n * 2)?);
            let opt = AdamW { lr: 1e-5, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1 };
            let step = AdamStep { t: 10, decay: true, grad_scale: 1.0 };
            let seconds = time(&mut || ops.adamw(&opt, params.view(), copy.view(), grads.view(), [m.view(), v.view()], step))?;
            Ok(vec![OpTiming { name: "adamw", shape: format!("n {n}"), seconds, work: Work::Bytes(ADAMW_BYTES_PER_PARAM * n as f64) }])
        }
        OpName::Copy => {
            let bytes = plan.elements as usize * 4;
            let (src, dst) = (gpu.alloc(bytes)?, gpu.alloc(bytes)?);
            gpu.memset(src.ptr, 0x5a, bytes)?;
            let seconds = time(&mut || gpu.copy_device(dst.ptr, src.ptr, bytes))?;
            Ok(vec![OpTiming { name: "device copy", shape: format!("{bytes} B"), seconds, work: Work::Bytes(2.0 * bytes as f64) }])
        }
    }
}
