//! The SFT loop on the CPU: gradient accumulation over micro-batches, global-norm clipping,
//! AdamW on fp32 master weights, the learning-rate schedule, per-step timing, and the ZeRO
//! stages of zero/stage.rs over MPI, unit by unit as on the GPU. The CPU model needs the whole
//! buffer while it runs, so stage 3 gathers every unit before a micro-batch rather than one
//! at a time; released buffers are filled with NaN so that a missed gather or a read of
//! released gradients shows in the loss.

use super::data::Source;
use super::data_parallel::{first_sample, Ranks};
use super::metrics::StepRecord;
use super::run_config::RunConfig;
use crate::backend::cpu::adamw::{clip_factor, global_norm};
use crate::model::config::LlamaConfig;
use crate::model::cpu_model::{Batch, CpuModel};
use crate::model::init::initialise;
use crate::model::layout::Layout;
use crate::zero::stage::{Collective, Shards};
use std::time::Instant;

/// Trains `steps` steps from the seeded initialisation on this rank's share of each global
/// batch; `on_step` sees each record (loss: mean over ranks) as it lands.
/// `seed` drives the initialisation.
pub fn train(config: &LlamaConfig, run: &RunConfig, seed: u64, data: &Source, ranks: &dyn Ranks, on_step: &mut dyn FnMut(&StepRecord)) -> Vec<StepRecord> {
    let layout = Layout::sharded(config, ranks.count(), run.bucket_layers);
    let model = CpuModel { config, layout: &layout };
    let shards = Shards::new(&layout, ranks.count(), ranks.rank(), run.zero);
    let mut params = vec![0f32; layout.total];
    initialise(&mut params, &layout, seed);
    // This rank's master weights, Adam moments and summed gradients, in shard order.
    let owned = shards.owned();
    let mut master = vec![0f32; shards.owned_len()];
    for c in &owned {
        master[c.local..c.local + c.global.len()].copy_from_slice(&params[c.global.clone()]);
    }
    let mut decay = vec![false; master.len()];
    for s in shards.segments(&layout) {
        decay[s.local..s.local + s.global.len()].fill(s.decay);
    }
    let (mut m, mut v, mut summed) = (vec![0f32; master.len()], vec![0f32; master.len()], vec![0f32; master.len()]);
    let mut grads = vec![0f32; layout.total];
    // The full weights from every rank's master chunks (stage 0: this rank's own copy);
    // returns the bytes sent.
    let gather = |params: &mut [f32], master: &[f32]| -> u64 {
        let mut sent = 0;
        for c in &owned {
            let unit = &mut params[layout.units[c.unit].clone()];
            if shards.all_reduces() {
                unit.copy_from_slice(&master[c.local..c.local + c.global.len()]);
            } else {
                ranks.all_gather_f32(&master[c.local..c.local + c.global.len()], unit);
                sent += Collective::AllGather.bus_bytes(ranks.count(), 4 * unit.len());
            }
        }
        sent
    };
    if shards.releases_weights() {
        params.fill(f32::NAN);
    }
    let per_step = run.micro_batch * run.grad_accum;
    let mut records = Vec::with_capacity(run.steps);
    for step in 1..=run.steps {
        let start = Instant::now();
        grads.fill(0.0);
        let (mut loss, mut forward_s, mut backward_s, mut comm_s) = (0.0, 0.0, 0.0, 0.0);
        let mut comm_bytes = 0;
        for micro in 0..run.grad_accum {
            let first = first_sample(run, step, micro, ranks.rank(), ranks.count());
            let (tokens, labels) = data.batch(first, run.micro_batch, run.seq, config.vocab_size);
            let batch = Batch { tokens: &tokens, labels: &labels, batch: run.micro_batch, seq: run.seq };
            if shards.releases_weights() {
                let t = Instant::now();
                comm_bytes += gather(&mut params, &master);
                comm_s += t.elapsed().as_secs_f64();
            }
            let t = Instant::now();
            let (l, tape) = model.forward(&params, &batch, 1.0 / run.grad_accum as f64);
            forward_s += t.elapsed().as_secs_f64();
            let t = Instant::now();
            let last_micro = micro + 1 == run.grad_accum;
            let mut reduce_s = 0.0;
            model.backward(&params, &mut grads, tape, &batch, &mut |unit, g| {
                if !last_micro {
                    return;
                }
                let t = Instant::now();
                let c = shards.part.chunk(unit, shards.rank);
                if shards.all_reduces() {
                    ranks.sum_f32(g);
                    summed[layout.units[unit].clone()].copy_from_slice(g);
                    comm_bytes += Collective::AllReduce.bus_bytes(ranks.count(), 4 * g.len());
                } else {
                    ranks.reduce_scatter_sum_f32(g, &mut summed[c.local..c.local + c.global.len()]);
                    comm_bytes += Collective::ReduceScatter.bus_bytes(ranks.count(), 4 * g.len());
                }
                if shards.releases_gradients() {
                    g.fill(f32::NAN);
                }
                reduce_s += t.elapsed().as_secs_f64();
            });
            backward_s += t.elapsed().as_secs_f64() - reduce_s;
            comm_s += reduce_s;
            if shards.releases_weights() {
                params.fill(f32::NAN);
            }
            loss += l / run.grad_accum as f64;
        }
        // Average over ranks: the reductions summed, so 1/ranks goes into the norm and the
        // update's scale. Stage 0 holds the whole sum; from stage 1 each rank a part of it.
        let t = Instant::now();
        let n = ranks.count() as f64;
        let loss = ranks.sum_f64(loss) / n;
        let sum_squares = global_norm(&summed).powi(2);
        let norm = if shards.all_reduces() { sum_squares } else { ranks.sum_f64(sum_squares) }.sqrt() / n;
        let opt = run.optimizer_at(step);
        let scale = clip_factor(norm, run.max_grad_norm) / n;
        opt.step(&mut master, &summed, &mut m, &mut v, &decay, step as u64, scale);
        let optimizer_s = t.elapsed().as_secs_f64();
        if !shards.releases_weights() {
            // Stage 0 copies its own update (no communication).
            let t = Instant::now();
            comm_bytes += gather(&mut params, &master);
            if !shards.all_reduces() {
                comm_s += t.elapsed().as_secs_f64();
            }
        }
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
            comm_bytes,
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

/// Bytes of model state one rank holds on the CPU path (fp32 weights and gradients, and
/// master weights, Adam moments and summed gradients for its part): a lower bound on its
/// memory, activations aside, checked before anything is allocated.
pub fn state_bytes(config: &LlamaConfig, run: &RunConfig, ranks: usize) -> u64 {
    let layout = Layout::sharded(config, ranks, run.bucket_layers);
    let owned = if run.zero >= 1 { layout.total / ranks } else { layout.total };
    4 * (2 * layout.total + 4 * owned) as u64
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
