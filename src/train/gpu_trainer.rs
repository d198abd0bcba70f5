//! The SFT loop on a GPU: the same schedule, data and accumulation as cpu_trainer.rs, on
//! GpuModel; gradients summed over ranks through NCCL. Phase times come from CUDA events.

use super::data::Source;
use super::data_parallel::{first_sample, Ranks};
use super::metrics::StepRecord;
use super::run_config::RunConfig;
use crate::backend::cuda::op_timer::StepProfile;
use crate::backend::cuda::Gpu;
use cudarc::driver::{sys::CUevent_flags, CudaEvent};
use crate::dist::nccl::NcclComm;
use crate::model::config::LlamaConfig;
use crate::model::gpu_model::{GpuModel, Shards};
use crate::zero::partition::Partition;
use crate::model::init::initialise;
use crate::model::layout::Layout;
use anyhow::Result;
use std::time::Instant;

/// The model on `gpu` initialised from `seed`, sized for the run's micro-batches and sharded
/// over `ranks` at the run's ZeRO stage.
pub fn build<'g>(gpu: &'g Gpu, config: &LlamaConfig, run: &RunConfig, seed: u64, ranks: &dyn Ranks) -> Result<GpuModel<'g>> {
    let layout = Layout::new(config);
    let mut master = vec![0f32; layout.total];
    initialise(&mut master, &layout, seed);
    let shards = Shards { part: Partition::new(layout.total, ranks.count()), rank: ranks.rank(), stage: run.zero };
    GpuModel::new(gpu, config, &master, run.micro_batch, run.seq, run.recompute, shards)
}

/// Runs the steps on this rank's share of each global batch, gradients summed over `comm`
/// (several ranks) or not (one); with `profile`, the last step records a CUDA event pair
/// around every op.
#[allow(clippy::too_many_arguments)]
pub fn train(
    gpu: &Gpu,
    model: &GpuModel,
    run: &RunConfig,
    data: &Source,
    ranks: &dyn Ranks,
    comm: Option<&NcclComm>,
    profile: bool,
    on_step: &mut dyn FnMut(&StepRecord),
) -> Result<(Vec<StepRecord>, Option<StepProfile>)> {
    let per_step = run.micro_batch * run.grad_accum;
    let vocab = model.config.vocab_size;
    let timer = &model.ops.gemm.timer;
    // Gradient sums run on a stream of their own, each slice as soon as the last micro-batch's
    // backward has queued it, overlapping the rest of the backward.
    let comm_stream = gpu.ctx.new_stream()?;
    let mut records = Vec::with_capacity(run.steps);
    let mut profiled = None;
    for step in 1..=run.steps {
        timer.enable(profile && step == run.steps);
        let start = Instant::now();
        // CUDA events at the phase boundaries: the split is GPU time, not host time.
        let mark = || -> Result<CudaEvent> {
            let e = gpu.ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
            e.record(&gpu.stream)?;
            Ok(e)
        };
        model.zero_grads()?;
        let mut loss = 0.0;
        let mut micro_marks = Vec::with_capacity(run.grad_accum);
        for micro in 0..run.grad_accum {
            let first = first_sample(run, step, micro, ranks.rank(), ranks.count());
            let (tokens, labels) = data.batch(first, run.micro_batch, run.seq, vocab);
            let before = mark()?;
            loss += model.forward(&tokens, &labels, 1.0 / run.grad_accum as f64)? / run.grad_accum as f64;
            let forwarded = mark()?;
            let last_micro = micro + 1 == run.grad_accum;
            model.backward(&mut |slice| match comm {
                Some(comm) if last_micro && model.sums_during_backward() => {
                    comm_stream.wait(&gpu.stream.record_event(None)?)?;
                    model.sum_grads(comm, slice, &comm_stream)
                }
                _ => Ok(()),
            })?;
            micro_marks.push((before, forwarded, mark()?));
        }
        // Communication the optimizer waits for: what the backward's overlap did not hide
        // (stage 0), or the reduce-scatter before and the all-gather after the update (stage 1).
        let reduce_start = mark()?;
        gpu.stream.wait(&comm_stream.record_event(None)?)?;
        model.reduce_gradients(comm)?;
        let optimizer_start = mark()?;
        let loss = ranks.sum_f64(loss) / ranks.count() as f64;
        let opt = run.optimizer_at(step);
        let grad_norm = model.optimizer_step(&opt, step as u64, run.max_grad_norm, ranks)?;
        let gather_start = mark()?;
        model.gather_weights(comm)?;
        let optimizer_end = mark()?;
        gpu.synchronize()?;
        let seconds = |a: &CudaEvent, b: &CudaEvent| -> Result<f64> { Ok(a.elapsed_ms(b)? as f64 / 1e3) };
        let (mut forward_s, mut backward_s) = (0.0, 0.0);
        for (a, b, c) in &micro_marks {
            forward_s += seconds(a, b)?;
            backward_s += seconds(b, c)?;
        }
        let comm_s = seconds(&reduce_start, &optimizer_start)? + seconds(&gather_start, &optimizer_end)?;
        let optimizer_s = seconds(&optimizer_start, &gather_start)?;
        let record = StepRecord {
            step,
            loss,
            lr: opt.lr,
            grad_norm,
            step_s: start.elapsed().as_secs_f64(),
            forward_s,
            backward_s,
            comm_s,
            optimizer_s,
            tokens: per_step * run.seq,
            samples: per_step,
            peak_memory_bytes: gpu.peak_allocated(),
        };
        if profile && step == run.steps {
            profiled = Some(StepProfile { step_ms: record.step_s * 1e3, ops: timer.totals()? });
            timer.enable(false);
        }
        on_step(&record);
        records.push(record);
    }
    Ok((records, profiled))
}
