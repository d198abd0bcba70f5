//! The SFT loop on the CPU: gradient accumulation over micro-batches, global-norm clipping,
//! AdamW on fp32 master weights, the learning-rate schedule, per-step timing, and the ZeRO
//! stages over MPI in the GPU's unit-by-unit order (train/cpu_rank.rs, zero/schedule.rs).

use super::cpu_rank::{CpuRank, MicroBatch};
use super::data::Source;
use super::data_parallel::{first_sample, Ranks};
use super::metrics::StepRecord;
use super::run_config::RunConfig;
use crate::backend::cpu::adamw::{clip_factor, global_norm};
use crate::model::config::LlamaConfig;
use crate::model::cpu_model::{Batch, CpuModel, CpuPass};
use crate::model::layout::Layout;
use crate::zero::schedule;
use crate::zero::stage::Shards;
use std::time::Instant;

/// Trains `steps` steps from the seeded initialisation on this rank's share of each global
/// batch; `on_step` sees each record (loss: mean over ranks) as it lands.
/// `seed` drives the initialisation.
pub fn train(config: &LlamaConfig, run: &RunConfig, seed: u64, data: &Source, ranks: &dyn Ranks, on_step: &mut dyn FnMut(&StepRecord)) -> Vec<StepRecord> {
    let layout = Layout::sharded(config, ranks.count(), run.bucket_layers);
    let model = CpuModel { config, layout: &layout };
    let shards = Shards::new(&layout, ranks.count(), ranks.rank(), run.zero);
    let mut rank = CpuRank::new(&layout, &shards, ranks, seed, run.grad_accum);
    let mut decay = vec![false; rank.master.len()];
    for s in shards.segments(&layout) {
        decay[s.local..s.local + s.global.len()].fill(s.decay);
    }
    let (mut m, mut v) = (vec![0f32; decay.len()], vec![0f32; decay.len()]);
    let per_step = run.micro_batch * run.grad_accum;
    let mut records = Vec::with_capacity(run.steps);
    for step in 1..=run.steps {
        let start = Instant::now();
        let (comm_s0, comm_bytes0) = (rank.comm_s, rank.comm_bytes);
        rank.begin_step();
        let (mut loss, mut forward_s, mut backward_s) = (0.0, 0.0, 0.0);
        for micro in 0..run.grad_accum {
            let first = first_sample(run, step, micro, ranks.rank(), ranks.count());
            let (tokens, labels) = data.batch(first, run.micro_batch, run.seq, config.vocab_size);
            let batch = Batch { tokens: &tokens, labels: &labels, batch: run.micro_batch, seq: run.seq };
            let mut work = rank.micro_batch(CpuPass::new(&model, &batch, 1.0 / run.grad_accum as f64));
            forward_s += compute_s(&mut work, |w| schedule::forward(&layout, w));
            backward_s += compute_s(&mut work, |w| schedule::backward(&layout, w, micro + 1 == run.grad_accum));
            loss += work.pass.loss / run.grad_accum as f64;
        }
        // Average over ranks: the reductions summed, so 1/ranks goes into the norm and the
        // update's scale. Stage 0 holds the whole sum; from stage 1 each rank a part of it.
        let t = Instant::now();
        let n = ranks.count() as f64;
        let loss = ranks.sum_f64(loss) / n;
        let sum_squares = global_norm(&rank.summed).powi(2);
        let norm = if shards.all_reduces() { sum_squares } else { ranks.sum_f64(sum_squares) }.sqrt() / n;
        let opt = run.optimizer_at(step);
        let scale = clip_factor(norm, run.max_grad_norm) / n;
        opt.step(&mut rank.master, &rank.summed, &mut m, &mut v, &decay, step as u64, scale);
        let optimizer_s = t.elapsed().as_secs_f64();
        // Its gathers count as communication, not as optimizer time.
        rank.weights_updated();
        let comm_s = rank.comm_s - comm_s0;
        let record = StepRecord {
            step,
            loss,
            lr: opt.lr,
            grad_norm: norm,
            step_s: start.elapsed().as_secs_f64(),
            forward_s,
            backward_s,
            comm_s,
            comm_busy_s: comm_s,
            comm_bytes: rank.comm_bytes - comm_bytes0,
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

/// Wall time of `pass` less the communication inside it.
fn compute_s(work: &mut MicroBatch, pass: impl FnOnce(&mut MicroBatch) -> anyhow::Result<()>) -> f64 {
    let (t, comm) = (Instant::now(), work.comm_s());
    pass(work).expect("the CPU path's compute and collectives cannot fail: MPI ends the job on errors");
    t.elapsed().as_secs_f64() - (work.comm_s() - comm)
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
        let records = train(&config, &run, 1, &Source::Synthetic { seed: 1 }, &Alone, &mut |_| {});
        let (first, last) = (records[0].loss, records[run.steps - 1].loss);
        assert!(last < 0.5 * first, "loss {first} -> {last}");
        assert!(records.iter().all(|r| r.grad_norm.is_finite() && r.step_s > 0.0 && r.tokens == 8 * 64));
        // same seed, same run
        let again = train(&config, &RunConfig { steps: 2, ..run }, 1, &Source::Synthetic { seed: 1 }, &Alone, &mut |_| {});
        assert_eq!(again[1].loss, records[1].loss);
    }
}
