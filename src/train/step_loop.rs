//! The one SFT loop, for the GPU model and the CPU rank alike: this rank's share of each global
//! batch in micro-batches, the loss averaged over ranks, the global gradient norm, clipping,
//! the learning-rate schedule, AdamW, and one StepRecord per step. A trainer supplies the
//! compute and the communication behind the StepEngine trait.

use super::data::Source;
use super::data_parallel::first_sample;
use super::metrics::StepRecord;
use super::run_config::RunConfig;
use crate::backend::cpu::adamw::{clip_factor, AdamW};
use crate::backend::cpu::cross_entropy;
use crate::dist::fault::Fault;
use crate::dist::ranks::Ranks;
use anyhow::Result;
use std::time::Instant;

/// What a step's figures need from the trainer besides the loss and the norm.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepCosts {
    pub forward_s: f64,
    pub backward_s: f64,
    /// From the sum of squares to the end of the update (not the gathers after it).
    pub optimizer_s: f64,
    /// Communication: exposed (the compute waiting for it), busy, bytes this rank sent.
    pub comm_s: f64,
    pub comm_busy_s: f64,
    pub comm_bytes: u64,
    pub peak_memory_bytes: u64,
}

/// One trainer's side of an optimizer step, called in this order each step: begin, one
/// micro_batch per micro-batch, grad_sum_squares, update, end.
pub trait StepEngine {
    /// Before the first micro-batch of step `step` (from 1).
    fn begin_step(&mut self, step: usize) -> Result<()>;
    /// Forward and backward of one micro-batch, its gradients × `grad_scale` added; `last`: the
    /// step's last micro-batch, whose backward sums the gradients over the ranks. Returns the
    /// micro-batch's mean loss.
    fn micro_batch(&mut self, tokens: &[u32], labels: &[i32], grad_scale: f64, last: bool) -> Result<f64>;
    /// Sum of squares of this rank's part of the summed gradients.
    fn grad_sum_squares(&mut self) -> Result<f64>;
    /// Whether that part is the whole sum (stage 0: every rank all-reduces everything).
    fn holds_whole_sum(&self) -> bool;
    /// One AdamW step (`t` from 1) on this rank's part, the summed gradients times `scale`.
    fn update(&mut self, opt: &AdamW, t: u64, scale: f64) -> Result<()>;
    /// After the update: the step's costs.
    fn end_step(&mut self) -> Result<StepCosts>;
}

/// Trains `run.steps` steps; `on_step` sees each record (loss: mean over ranks) as it lands.
pub fn train(
    engine: &mut dyn StepEngine,
    run: &RunConfig,
    vocab: usize,
    data: &Source,
    ranks: &dyn Ranks,
    on_step: &mut dyn FnMut(&StepRecord),
) -> Result<Vec<StepRecord>> {
    let per_step = run.micro_batch * run.grad_accum;
    let accum = run.grad_accum as f64;
    let n = ranks.count() as f64;
    let mut records = Vec::with_capacity(run.steps);
    // The test hook `slow:R:MS` (dist/fault.rs): rank R computes that much longer each step.
    let delay = Fault::from_env().ok().and_then(|f| f.step_delay(ranks.job_rank()));
    for step in 1..=run.steps {
        let start = Instant::now();
        engine.begin_step(step)?;
        if let Some(d) = delay {
            std::thread::sleep(d);
        }
        let (mut loss, mut loss_tokens) = (0.0, 0);
        for micro in 0..run.grad_accum {
            let first = first_sample(run, step, micro, ranks.rank(), ranks.count());
            let (tokens, labels) = data.batch(first, run.micro_batch, run.seq, vocab);
            loss_tokens += cross_entropy::counted(&labels);
            loss += engine.micro_batch(&tokens, &labels, 1.0 / accum, micro + 1 == run.grad_accum)? / accum;
        }
        // The reductions summed over ranks: 1/n goes into the norm and the update's scale.
        let squares = engine.grad_sum_squares()?;
        let loss = ranks.sum_f64(loss) / n;
        let squares = if engine.holds_whole_sum() { squares } else { ranks.sum_f64(squares) };
        let grad_norm = squares.sqrt() / n;
        let opt = run.optimizer_at(step);
        engine.update(&opt, step as u64, clip_factor(grad_norm, run.max_grad_norm) / n)?;
        let c = engine.end_step()?;
        let record = StepRecord {
            step,
            loss,
            lr: opt.lr,
            grad_norm,
            step_s: start.elapsed().as_secs_f64(),
            forward_s: c.forward_s,
            backward_s: c.backward_s,
            comm_s: c.comm_s,
            comm_busy_s: c.comm_busy_s,
            comm_bytes: c.comm_bytes,
            optimizer_s: c.optimizer_s,
            tokens: per_step * run.seq,
            loss_tokens,
            samples: per_step,
            peak_memory_bytes: c.peak_memory_bytes,
        };
        on_step(&record);
        records.push(record);
    }
    Ok(records)
}
