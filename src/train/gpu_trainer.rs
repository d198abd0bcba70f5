//! The GPU model as a step engine (train/step_loop.rs): gradients summed over ranks through
//! NCCL, phase times from CUDA events on the compute stream.

use super::data::Source;
use super::metrics::StepRecord;
use super::run_config::RunConfig;
use super::step_loop::{self, StepCosts, StepEngine};
use crate::backend::cpu::adamw::AdamW;
use crate::backend::cuda::op_timer::StepProfile;
use crate::backend::cuda::Gpu;
use crate::dist::nccl::NcclComm;
use crate::dist::ranks::Ranks;
use crate::model::config::LlamaConfig;
use crate::model::gpu_model::GpuModel;
use crate::model::layout::Layout;
use crate::zero::stage::Shards;
use anyhow::Result;
use cudarc::driver::{sys::CUevent_flags, CudaEvent};

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
    let mut engine =
        GpuEngine { gpu, model, profiled_step: profile.then_some(run.steps), step: 0, micro_marks: Vec::new(), optimizer_marks: None, profile: None };
    let records = step_loop::train(&mut engine, run, model.llama.config.vocab_size, data, ranks, on_step)?;
    // The profiled step is the last: its op times beside its wall time.
    let profile = engine.profile.map(|p| StepProfile { step_ms: records.last().map_or(0.0, |r| r.step_s * 1e3), ..p });
    Ok((records, profile))
}

/// The GPU model stepping, with the CUDA events that time this step's phases.
struct GpuEngine<'a, 'g> {
    gpu: &'g Gpu,
    model: &'a GpuModel<'g>,
    /// The step whose every op is timed (--profile: the last).
    profiled_step: Option<usize>,
    step: usize,
    /// Per micro-batch: before the forward, between forward and backward, after the backward.
    micro_marks: Vec<[CudaEvent; 3]>,
    /// Before the sum of squares, after the update.
    optimizer_marks: Option<(CudaEvent, CudaEvent)>,
    profile: Option<StepProfile>,
}

impl GpuEngine<'_, '_> {
    /// A CUDA event on the compute stream: the phase split is GPU time, not host time.
    fn mark(&self) -> Result<CudaEvent> {
        let e = self.gpu.ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
        e.record(&self.gpu.stream)?;
        Ok(e)
    }
}

impl StepEngine for GpuEngine<'_, '_> {
    fn begin_step(&mut self, step: usize) -> Result<()> {
        self.step = step;
        self.micro_marks.clear();
        self.model.ops.timer.enable(self.profiled_step == Some(step));
        self.model.zero_grads()
    }

    fn micro_batch(&mut self, tokens: &[u32], labels: &[i32], grad_scale: f64, last: bool) -> Result<f64> {
        let before = self.mark()?;
        let loss = self.model.forward(tokens, labels, grad_scale)?;
        let forwarded = self.mark()?;
        self.model.backward(last)?;
        self.micro_marks.push([before, forwarded, self.mark()?]);
        Ok(loss)
    }

    fn grad_sum_squares(&mut self) -> Result<f64> {
        self.optimizer_marks = None;
        let start = self.mark()?;
        let squares = self.model.grad_sum_squares();
        self.optimizer_marks = Some((start, self.mark()?));
        squares
    }

    fn holds_whole_sum(&self) -> bool {
        self.model.holds_whole_sum()
    }

    fn update(&mut self, opt: &AdamW, t: u64, scale: f64) -> Result<()> {
        self.model.update(opt, t, scale)?;
        if let Some((_, end)) = &self.optimizer_marks {
            end.record(&self.gpu.stream)?;
        }
        Ok(())
    }

    fn end_step(&mut self) -> Result<StepCosts> {
        let comm = self.model.take_comm_cost()?;
        let seconds = |a: &CudaEvent, b: &CudaEvent| -> Result<f64> { Ok(a.elapsed_ms(b)? as f64 / 1e3) };
        let (mut forward_s, mut backward_s) = (0.0, 0.0);
        for [a, b, c] in &self.micro_marks {
            forward_s += seconds(a, b)?;
            backward_s += seconds(b, c)?;
        }
        let optimizer_s = match &self.optimizer_marks {
            Some((start, end)) => seconds(start, end)?,
            None => 0.0,
        };
        let timer = &self.model.ops.timer;
        if self.profiled_step == Some(self.step) {
            self.profile = Some(StepProfile { step_ms: 0.0, ops: timer.totals()? });
            timer.enable(false);
        }
        Ok(StepCosts {
            forward_s,
            backward_s,
            optimizer_s,
            comm_s: comm.exposed_s,
            comm_busy_s: comm.busy_s,
            comm_bytes: comm.bytes,
            peak_memory_bytes: self.gpu.peak_allocated(),
        })
    }
}
