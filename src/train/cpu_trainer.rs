//! The SFT loop on the CPU (one rank): gradient accumulation over micro-batches, global-norm
//! clipping, AdamW on fp32 weights, the learning-rate schedule, and per-step timing.

use super::data::Source;
use super::data_parallel::{first_sample, Ranks};
use super::metrics::StepRecord;
use super::run_config::RunConfig;
use crate::backend::cpu::adamw::{clip_factor, global_norm};
use crate::model::config::LlamaConfig;
use crate::model::cpu_model::{Batch, CpuModel};
use crate::model::init::initialise;
use crate::model::layout::Layout;
use crate::zero::partition::Partition;
use std::time::Instant;

/// Trains `steps` steps from the seeded initialisation on this rank's share of each global
/// batch; `on_step` sees each record (loss: mean over ranks) as it lands.
/// `seed` drives the initialisation.
pub fn train(config: &LlamaConfig, run: &RunConfig, seed: u64, data: &Source, ranks: &dyn Ranks, on_step: &mut dyn FnMut(&StepRecord)) -> Vec<StepRecord> {
    let layout = Layout::new(config);
    let model = CpuModel { config, layout: &layout };
    let mut params = vec![0f32; layout.total];
    initialise(&mut params, &layout, seed);
    // ZeRO-1: this rank keeps Adam moments for its shard only and updates only that shard.
    let part = Partition::new(layout.total, ranks.count());
    let mine = if run.zero >= 1 { part.range(ranks.rank()) } else { 0..layout.total };
    let (mut m, mut v) = (vec![0f32; mine.len()], vec![0f32; mine.len()]);
    let mut grads = vec![0f32; layout.total];
    let decay = layout.decay_mask();
    let per_step = run.micro_batch * run.grad_accum;
    let mut records = Vec::with_capacity(run.steps);
    for step in 1..=run.steps {
        let start = Instant::now();
        grads.iter_mut().for_each(|g| *g = 0.0);
        let (mut loss, mut forward_s, mut backward_s) = (0.0, 0.0, 0.0);
        for micro in 0..run.grad_accum {
            let first = first_sample(run, step, micro, ranks.rank(), ranks.count());
            let (tokens, labels) = data.batch(first, run.micro_batch, run.seq, config.vocab_size);
            let batch = Batch { tokens: &tokens, labels: &labels, batch: run.micro_batch, seq: run.seq };
            let t = Instant::now();
            let (l, tape) = model.forward(&params, &batch, 1.0 / run.grad_accum as f64);
            forward_s += t.elapsed().as_secs_f64();
            let t = Instant::now();
            model.backward(&params, &mut grads, tape, &batch);
            backward_s += t.elapsed().as_secs_f64();
            loss += l / run.grad_accum as f64;
        }
        // Average over ranks: sum, then fold 1/ranks into the norm and the update's scale.
        // Stage 0 sums everything everywhere; stage 1 sums each shard on its owner only.
        let t = Instant::now();
        let n = ranks.count() as f64;
        let mut shard_grads = vec![0f32; part.shard];
        if run.zero >= 1 {
            let mut padded = grads.clone();
            padded.resize(part.padded(), 0.0);
            ranks.reduce_scatter_sum_f32(&padded, &mut shard_grads);
        } else {
            ranks.sum_f32(&mut grads);
        }
        let my_grads = if run.zero >= 1 { &shard_grads[..mine.len()] } else { &grads[..] };
        let comm_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let loss = ranks.sum_f64(loss) / n;
        let sum_squares = global_norm(my_grads).powi(2);
        let norm = if run.zero >= 1 { ranks.sum_f64(sum_squares) } else { sum_squares }.sqrt() / n;
        let opt = run.optimizer_at(step);
        let scale = clip_factor(norm, run.max_grad_norm) / n;
        opt.step(&mut params[mine.clone()], my_grads, &mut m, &mut v, &decay[mine.clone()], step as u64, scale);
        if run.zero >= 1 {
            let mut shard = params[mine.clone()].to_vec();
            shard.resize(part.shard, 0.0);
            let mut all = vec![0f32; part.padded()];
            ranks.all_gather_f32(&shard, &mut all);
            params.copy_from_slice(&all[..layout.total]);
        }
        let optimizer_s = t.elapsed().as_secs_f64();
        let record = StepRecord {
            step,
            loss,
            lr: opt.lr,
            grad_norm: norm,
            step_s: start.elapsed().as_secs_f64(),
            forward_s,
            backward_s,
            comm_s,
            optimizer_s,
            tokens: per_step * run.seq,
            samples: per_step,
            peak_memory_bytes: peak_rss_bytes(),
        };
        on_step(&record);
        records.push(record);
    }
    records
}

/// The process's peak resident memory (the CPU path's "peak memory").
fn peak_rss_bytes() -> u64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } == 0 {
        usage.ru_maxrss as u64 * 1024
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::data_parallel::Alone;

    #[test]
    fn tiny_model_learns_the_synthetic_task() {
        let config = LlamaConfig::load("tiny").unwrap();
        let run = RunConfig::defaults_for("tiny");
        let records = train(&config, &run, 1, &Source::Synthetic { seed: 1 }, &Alone, &mut |_| {});
        let (first, last) = (records[0].loss, records[run.steps - 1].loss);
        assert!(last < 0.5 * first, "loss {first} -> {last}");
        assert!(records.iter().all(|r| r.grad_norm.is_finite() && r.step_s > 0.0 && r.tokens == 8 * 64));
        // same seed, same run
        let again = train(&config, &RunConfig { steps: 2, ..run }, 1, &Source::Synthetic { seed: 1 }, &Alone, &mut |_| {});
        assert_eq!(again[1].loss, records[1].loss);
    }
}
