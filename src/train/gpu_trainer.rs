//! The SFT loop on a GPU: the same schedule, data and accumulation as cpu_trainer.rs, on
//! GpuModel; gradients summed over ranks through NCCL. Phase times come from CUDA events.

use super::data::Source;
use super::data_parallel::{first_sample, Ranks};
use super::metrics::StepRecord;
use super::run_config::RunConfig;
use crate::backend::cuda::op_timer::StepProfile;
use crate::backend::cuda::Gpu;
use crate::dist::nccl::NcclComm;
use crate::model::config::LlamaConfig;
use crate::model::gpu_model::GpuModel;
use crate::model::layout::Layout;
use crate::zero::stage::Shards;
use anyhow::Result;
use cudarc::driver::{sys::CUevent_flags, CudaEvent};
use std::time::Instant;

/// The model on `gpu` initialised from `seed`, sized for the run's micro-batches and sharded
/// over `ranks` (joined by `comm` when there are several) at the run's ZeRO stage.
pub fn build<'g>(gpu: &'g Gpu, config: &LlamaConfig, run: &RunConfig, seed: u64, ranks: &dyn Ranks, comm: Option<&'g NcclComm>) -> Result<GpuModel<'g>> {
    let layout = Layout::sharded(config, ranks.count(), run.bucket_layers);
    let shards = Shards::new(&layout, ranks.count(), ranks.rank(), run.zero);
    GpuModel::new(gpu, config, run, seed, shards, comm)
}

/// Runs the steps on this rank's share of each global batch; with `profile`, the last step
/// records a CUDA event pair around every op.
pub fn train(
    gpu: &Gpu,
    model: &GpuModel,
    run: &RunConfig,
    data: &Source,
    ranks: &dyn Ranks,
    profile: bool,
    on_step: &mut dyn FnMut(&StepRecord),
) -> Result<(Vec<StepRecord>, Option<StepProfile>)> {
    let per_step = run.micro_batch * run.grad_accum;
    let vocab = model.config.vocab_size;
    let timer = &model.ops.gemm.timer;
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
            model.backward(micro + 1 == run.grad_accum)?;
            micro_marks.push((before, forwarded, mark()?));
        }
        let optimizer_start = mark()?;
        let loss = ranks.sum_f64(loss) / ranks.count() as f64;
        let opt = run.optimizer_at(step);
        let grad_norm = model.optimizer_step(&opt, step as u64, run.max_grad_norm, ranks)?;
        let optimizer_end = mark()?;
        let comm = model.take_comm_cost()?;
        let seconds = |a: &CudaEvent, b: &CudaEvent| -> Result<f64> { Ok(a.elapsed_ms(b)? as f64 / 1e3) };
        let (mut forward_s, mut backward_s) = (0.0, 0.0);
        for (a, b, c) in &micro_marks {
            forward_s += seconds(a, b)?;
            backward_s += seconds(b, c)?;
        }
        let record = StepRecord {
            step,
            loss,
            lr: opt.lr,
            grad_norm,
            step_s: start.elapsed().as_secs_f64(),
            forward_s,
            backward_s,
            comm_s: comm.exposed_s,
            comm_busy_s: comm.busy_s,
            comm_bytes: comm.bytes,
            optimizer_s: seconds(&optimizer_start, &optimizer_end)?,
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
