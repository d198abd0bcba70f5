//! The CPU rank as a step engine (train/step_loop.rs): the model piece by piece over MPI in
//! the GPU's unit-by-unit order (train/cpu_rank.rs, zero/schedule.rs), AdamW on fp32 master
//! weights, host timers.

use super::cpu_rank::{CpuRank, MicroBatch};
use super::data::Source;
use super::data_parallel::Ranks;
use super::metrics::StepRecord;
use super::run_config::RunConfig;
use super::step_loop::{self, StepCosts, StepEngine};
use crate::backend::cpu::adamw::{global_norm, AdamW};
use crate::model::config::LlamaConfig;
use crate::model::cpu_model::{Batch, CpuModel, CpuPass};
use crate::model::layout::Layout;
use crate::zero::schedule;
use crate::zero::stage::Shards;
use anyhow::Result;
use std::time::Instant;

/// Trains `run.steps` steps from the seeded initialisation (`seed`) on this rank's share of
/// each global batch; `on_step` sees each record (loss: mean over ranks) as it lands.
pub fn train(config: &LlamaConfig, run: &RunConfig, seed: u64, data: &Source, ranks: &dyn Ranks, on_step: &mut dyn FnMut(&StepRecord)) -> Result<Vec<StepRecord>> {
    let layout = Layout::sharded(config, ranks.count(), run.bucket_layers);
    let shards = Shards::new(&layout, ranks.count(), ranks.rank(), run.zero);
    let rank = CpuRank::new(&layout, &shards, ranks, seed, run.grad_accum);
    let mut decay = vec![false; rank.master.len()];
    for s in shards.segments(&layout) {
        decay[s.local..s.local + s.global.len()].fill(s.decay);
    }
    let (m, v) = (vec![0f32; decay.len()], vec![0f32; decay.len()]);
    let model = CpuModel { config, layout: &layout };
    let mut engine = CpuEngine { model, layout: &layout, shards: &shards, rank, decay, m, v, run, costs: StepCosts::default(), comm_at_start: (0.0, 0), optimizer_start: Instant::now() };
    step_loop::train(&mut engine, run, config.vocab_size, data, ranks, on_step)
}

/// A CPU rank's model, optimizer state and this step's costs so far.
struct CpuEngine<'a> {
    model: CpuModel<'a>,
    layout: &'a Layout,
    shards: &'a Shards,
    rank: CpuRank<'a>,
    decay: Vec<bool>,
    m: Vec<f32>,
    v: Vec<f32>,
    run: &'a RunConfig,
    costs: StepCosts,
    /// The rank's communication seconds and bytes when the step began.
    comm_at_start: (f64, u64),
    optimizer_start: Instant,
}

impl StepEngine for CpuEngine<'_> {
    fn begin_step(&mut self, _step: usize) -> Result<()> {
        self.costs = StepCosts::default();
        self.comm_at_start = (self.rank.comm_s, self.rank.comm_bytes);
        self.rank.begin_step();
        Ok(())
    }

    fn micro_batch(&mut self, tokens: &[u32], labels: &[i32], grad_scale: f64, last: bool) -> Result<f64> {
        let batch = Batch { tokens, labels, batch: self.run.micro_batch, seq: self.run.seq };
        let layout = self.layout;
        let mut work = self.rank.micro_batch(CpuPass::new(&self.model, &batch, grad_scale));
        self.costs.forward_s += compute_s(&mut work, |w| schedule::forward(layout, w))?;
        self.costs.backward_s += compute_s(&mut work, |w| schedule::backward(layout, w, last))?;
        Ok(work.pass.loss)
    }

    fn grad_sum_squares(&mut self) -> Result<f64> {
        self.optimizer_start = Instant::now();
        Ok(global_norm(&self.rank.summed).powi(2))
    }

    fn holds_whole_sum(&self) -> bool {
        self.shards.all_reduces()
    }

    fn update(&mut self, opt: &AdamW, t: u64, scale: f64) -> Result<()> {
        opt.step(&mut self.rank.master, &self.rank.summed, &mut self.m, &mut self.v, &self.decay, t, scale);
        self.costs.optimizer_s = self.optimizer_start.elapsed().as_secs_f64();
        // Its gathers count as communication, not as optimizer time.
        self.rank.weights_updated();
        Ok(())
    }

    fn end_step(&mut self) -> Result<StepCosts> {
        let comm_s = self.rank.comm_s - self.comm_at_start.0;
        Ok(StepCosts { comm_s, comm_busy_s: comm_s, comm_bytes: self.rank.comm_bytes - self.comm_at_start.1, peak_memory_bytes: peak_rss_bytes(), ..self.costs })
    }
}

/// Wall time of `pass` less the communication inside it.
fn compute_s(work: &mut MicroBatch, pass: impl FnOnce(&mut MicroBatch) -> Result<()>) -> Result<f64> {
    let (t, comm) = (Instant::now(), work.comm_s());
    pass(work)?;
    Ok(t.elapsed().as_secs_f64() - (work.comm_s() - comm))
}

/// Bytes one rank holds on the CPU path, estimated from the shapes alone (nothing is built, so
/// absurd sizes cost nothing; None: beyond u64): fp32 weights and gradients of the whole
/// (padded) buffer; master weights, Adam moments and summed gradients of its part; every
/// layer's saved activations, the logits and their gradient, and one layer's scratch.
pub fn host_bytes(config: &LlamaConfig, run: &RunConfig, ranks: usize) -> Option<u64> {
    let c = |v: usize| v as u64;
    let (d, kv, f, vocab, layers) = (c(config.dim), c(config.kv_dim()), c(config.ffn_dim), c(config.vocab_size), c(config.n_layers));
    let per_layer = (2 * d).checked_add(d.checked_mul(2 * d + 2 * kv + 3 * f)?)?;
    let units = 2 + layers.div_ceil(c(run.bucket_layers));
    let padding = units.checked_mul(8 * c(ranks))?;
    let total = layers.checked_mul(per_layer)?.checked_add(vocab.checked_mul(2 * d)?)?.checked_add(d + padding)?;
    let owned = if run.zero >= 1 { total / c(ranks) + padding } else { total };
    let state = total.checked_mul(2)?.checked_add(owned.checked_mul(4)?)?;
    let tokens = c(run.micro_batch).checked_mul(c(run.seq))?;
    let saved_per_token = 6 * d + 2 * kv + 3 * f + c(config.n_heads) + 2;
    let per_token = layers.checked_add(1)?.checked_mul(saved_per_token)?.checked_add(2 * vocab)?;
    let activations = tokens.checked_mul(per_token)?;
    state.checked_add(activations)?.checked_mul(4)
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
    fn host_estimate_covers_the_state_and_refuses_absurd_sizes() {
        let config = LlamaConfig::load("tiny").unwrap();
        let run = RunConfig::defaults_for("tiny");
        let layout = Layout::sharded(&config, 2, 1);
        // at least what CpuRank allocates for the model state: weights, gradients, owned parts
        let state = 4 * (2 * layout.total + 4 * layout.total / 2) as u64;
        assert!(host_bytes(&config, &run, 2).unwrap() > state);
        let wide = LlamaConfig { dim: 1 << 16, ffn_dim: 1 << 18, n_layers: 1 << 10, vocab_size: 1 << 22, n_heads: 1 << 8, n_kv_heads: 1 << 8, ..config };
        let long = RunConfig { micro_batch: 1 << 12, seq: 1 << 12, ..run };
        assert!(host_bytes(&wide, &long, 1 << 20).is_none_or(|b| b > 1 << 50));
    }

    #[test]
    fn tiny_model_learns_the_synthetic_task() {
        let config = LlamaConfig::load("tiny").unwrap();
        let run = RunConfig::defaults_for("tiny");
        let records = train(&config, &run, 1, &Source::Synthetic { seed: 1 }, &Alone, &mut |_| {}).unwrap();
        let (first, last) = (records[0].loss, records[run.steps - 1].loss);
        assert!(last < 0.5 * first, "loss {first} -> {last}");
        assert!(records.iter().all(|r| r.grad_norm.is_finite() && r.step_s > 0.0 && r.tokens == 8 * 64));
        // same seed, same run
        let again = train(&config, &RunConfig { steps: 2, ..run }, 1, &Source::Synthetic { seed: 1 }, &Alone, &mut |_| {}).unwrap();
        assert_eq!(again[1].loss, records[1].loss);
    }
}
