//! The step-time model: the seconds one optimizer step of an SFT run takes on GPUs, predicted
//! from the compute rate (a model-FLOP utilisation), the bytes each ZeRO stage moves per step
//! (zero/stage.rs's collectives, counted as nccl-tests' bus bytes) over the bus bandwidth of
//! the link class its ranks span, and AdamW's time per parameter a rank owns. Exposed
//! communication is what the unit schedule (zero/schedule.rs) cannot hide behind compute.

use super::buffers::PlanInput;
use super::planner::{plan, LIBRARY_RESERVE};
use crate::model::config::LlamaConfig;
use crate::model::layout::Layout;
use crate::train::metrics::PEAK_FLOPS;
use crate::train::run_config::{RunConfig, MAX_MICRO_BATCH_TOKENS};

/// nccl-tests all_reduce bus bandwidth on one 8×H100/H200 host with NVLink SHARP off, GB/s
/// (../shared/TESTBED.md): the rate within a host unless a sweep says otherwise.
pub const WITHIN_HOST_BUSBW_GBS: f64 = 370.0;
/// What one 400G NIC carries, GB/s (../shared/TESTBED.md: 46-48).
pub const NIC_GBS: f64 = 47.0;
/// AdamW's bytes per parameter it updates: the fp32 gradient read, the fp32 master weight and
/// both moments each read and written, the bf16 weight written.
pub const ADAMW_BYTES_PER_PARAM: f64 = 30.0;
/// The H200's device copy rate, GB/s (configs/reference/h200.json): AdamW at that speed is
/// the optimizer time unless a measured step says otherwise.
pub const HBM_GBS: f64 = 4250.0;

/// The rates the prediction is built from.
#[derive(Clone, Debug, PartialEq)]
pub struct Rates {
    /// Model FLOP/s per GPU during forward and backward ÷ PEAK_FLOPS.
    pub mfu: f64,
    /// AdamW seconds per parameter a rank owns.
    pub optimizer_s_per_param: f64,
    /// Bus bandwidth of a collective, GB/s, when its ranks share one host, and when they span
    /// several (the ring through the NICs).
    pub within_host_gbs: f64,
    pub between_hosts_gbs: f64,
    /// Where each rate came from, for the output.
    pub origin: String,
}

impl Rates {
    /// The published and reference rates: compute at `mfu`, AdamW at the copy rate, NVLink
    /// within a host, `nics_per_host` NICs of `nic_gbs` between hosts (a ring crossing hosts
    /// runs one channel per NIC, never faster than within a host).
    pub fn reference(mfu: f64, nics_per_host: usize, nic_gbs: f64) -> Rates {
        Rates {
            mfu,
            optimizer_s_per_param: ADAMW_BYTES_PER_PARAM / (HBM_GBS * 1e9),
            within_host_gbs: WITHIN_HOST_BUSBW_GBS,
            between_hosts_gbs: (nics_per_host as f64 * nic_gbs).min(WITHIN_HOST_BUSBW_GBS),
            origin: format!(
                "compute at {:.0}% MFU, AdamW at {HBM_GBS} GB/s, {WITHIN_HOST_BUSBW_GBS} GB/s busbw within a host, {nics_per_host} × {nic_gbs} GB/s NICs",
                100.0 * mfu
            ),
        }
    }
}

/// Ranks and how many share a host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    pub ranks: usize,
    pub per_host: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    pub compute_s: f64,
    pub optimizer_s: f64,
    /// Seconds the communication stream is busy, and the part the compute waits for.
    pub comm_busy_s: f64,
    pub comm_exposed_s: f64,
    /// Bus bytes per GPU per step, and the bus bandwidth they move at.
    pub bus_bytes: f64,
    pub busbw_gbs: f64,
    pub step_s: f64,
    pub tokens_per_s_per_gpu: f64,
    pub mfu: f64,
}

/// How much more than the model FLOPs the GPU computes: with recompute the forward runs twice
/// (forward 1/3 of forward + backward, so 4/3).
fn recompute_factor(recompute: bool) -> f64 {
    if recompute {
        4.0 / 3.0
    } else {
        1.0
    }
}

/// The compute rate `predict` takes (its `Rates::mfu`) from a measured step: `tokens` tokens
/// of `flops_per_token` model FLOPs in `compute_s` seconds of forward and backward, the
/// forward run twice with `recompute`.
pub fn compute_mfu(tokens: f64, flops_per_token: f64, recompute: bool, compute_s: f64) -> f64 {
    tokens * flops_per_token * recompute_factor(recompute) / compute_s / PEAK_FLOPS
}

/// The part of `comm` seconds, spread over `units` units each sent behind the compute of the
/// unit after it, that `window` seconds of that compute cannot hide: at least one unit's share
/// (the first gather or the last reduction has nothing to hide behind).
fn exposed(comm: f64, window: f64, units: usize) -> f64 {
    if comm <= 0.0 {
        return 0.0;
    }
    let u = units.max(1) as f64;
    (comm / u).max(comm - window * (u - 1.0) / u)
}

/// One step of `run` of `model` on `place`:
/// - compute = tokens per GPU × model FLOPs per token ÷ (MFU × PEAK), × 4/3 with recompute
///   (the forward runs twice);
/// - bus bytes per GPU, with P parameters and f = (n − 1)/n: stage 0 all-reduces the fp32
///   gradients (2f·4P); stages 1-2 reduce-scatter them (f·4P) and all-gather the bf16 weights
///   after the update (f·2P); stage 3 reduce-scatters (f·4P) and all-gathers each unit before
///   its forward and its backward in every micro-batch (2·A·f·2P);
/// - exposed: the reductions hide behind the last micro-batch's backward (2/3 of its compute;
///   3/4 with recompute, which redoes the forward there), the gathers of stages 1-2 behind the
///   first forward (the rest), stage 3's everything behind the whole compute, each less one
///   unit's share (exposed());
/// - optimizer = owned parameters (P, or P/n from stage 1) × seconds per parameter.
pub fn predict(model: &LlamaConfig, run: &RunConfig, place: Placement, rates: &Rates) -> Prediction {
    let n = place.ranks.max(1);
    let layout = Layout::sharded(model, 1, run.bucket_layers);
    let (p, units) = (layout.parameters() as f64, layout.units.len());
    let tokens = (run.micro_batch * run.grad_accum * run.seq) as f64;
    let flops_per_token = model.flops_per_token(run.seq);
    let compute_s = tokens * flops_per_token * recompute_factor(run.recompute) / (rates.mfu * PEAK_FLOPS);
    let f = (n - 1) as f64 / n as f64;
    let accum = run.grad_accum as f64;
    let (reduce_bytes, gather_bytes) = match run.zero {
        0 => (2.0 * f * 4.0 * p, 0.0),
        1 | 2 => (f * 4.0 * p, f * 2.0 * p),
        _ => (f * 4.0 * p, 2.0 * accum * f * 2.0 * p),
    };
    let busbw_gbs = if n <= place.per_host { rates.within_host_gbs } else { rates.between_hosts_gbs };
    let (reduce_s, gather_s) = (reduce_bytes / (busbw_gbs * 1e9), gather_bytes / (busbw_gbs * 1e9));
    // A micro-batch's forward and the rest (its backward, and the forward again with recompute).
    let forward = compute_s / accum / (3.0 * recompute_factor(run.recompute));
    let backward = compute_s / accum - forward;
    let comm_exposed_s = match run.zero {
        0 => exposed(reduce_s, backward, units),
        1 | 2 => exposed(reduce_s, backward, units) + exposed(gather_s, forward, units),
        _ => exposed(reduce_s + gather_s, compute_s, units),
    };
    let owned = if run.zero == 0 { p } else { p / n as f64 };
    let optimizer_s = owned * rates.optimizer_s_per_param;
    let step_s = compute_s + optimizer_s + comm_exposed_s;
    let tokens_per_s_per_gpu = tokens / step_s;
    Prediction {
        compute_s,
        optimizer_s,
        comm_busy_s: reduce_s + gather_s,
        comm_exposed_s,
        bus_bytes: reduce_bytes + gather_bytes,
        busbw_gbs,
        step_s,
        tokens_per_s_per_gpu,
        mfu: tokens_per_s_per_gpu * flops_per_token / PEAK_FLOPS,
    }
}

/// Of every ZeRO stage, micro-batch (powers of two, within the run's tokens bound) and
/// recompute setting at the run's accumulation, the one predicted fastest that the planner
/// fits in `gpu_bytes`; None if none fits.
pub fn fastest(model: &LlamaConfig, run: &RunConfig, place: Placement, rates: &Rates, gpu_bytes: u64) -> Option<(RunConfig, Prediction)> {
    let mut best: Option<(RunConfig, Prediction)> = None;
    for zero in 0..=3u8 {
        for micro_batch in (0..8).map(|k| 1usize << k).filter(|m| m * run.seq <= MAX_MICRO_BATCH_TOKENS) {
            for recompute in [false, true] {
                let candidate = RunConfig { zero, micro_batch, recompute, ..run.clone() };
                let input: PlanInput = candidate.plan_input(model, place.ranks);
                if plan(&input).total() + LIBRARY_RESERVE > gpu_bytes {
                    continue;
                }
                let p = predict(model, &candidate, place, rates);
                if best.as_ref().is_none_or(|(_, b)| p.tokens_per_s_per_gpu > b.tokens_per_s_per_gpu) {
                    best = Some((candidate, p));
                }
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rates() -> Rates {
        Rates { mfu: 0.5, optimizer_s_per_param: 1e-11, within_host_gbs: 400.0, between_hosts_gbs: 100.0, origin: String::new() }
    }

    #[test]
    fn a_step_by_hand() {
        let model = LlamaConfig::load("7b").unwrap().with_layers(2).unwrap();
        let run = RunConfig { micro_batch: 2, grad_accum: 2, seq: 1024, zero: 1, bucket_layers: 1, recompute: false, ..RunConfig::defaults_for("7b") };
        let p = Layout::new(&model).parameters() as f64;
        let units = Layout::sharded(&model, 1, 1).units.len() as f64;
        assert_eq!(units, 4.0, "embedding, two layers, head");
        let tokens = 4096.0;
        let compute = tokens * model.flops_per_token(1024) / (0.5 * PEAK_FLOPS);
        // 8 ranks on one host: NVLink; stage 1 reduce-scatters fp32 and gathers bf16
        let one_host = predict(&model, &run, Placement { ranks: 8, per_host: 8 }, &rates());
        let f = 7.0 / 8.0;
        assert!((one_host.bus_bytes - f * 6.0 * p).abs() < 1.0);
        assert_eq!(one_host.busbw_gbs, 400.0);
        let (reduce, gather) = (f * 4.0 * p / 400e9, f * 2.0 * p / 400e9);
        let hide = |comm: f64, window: f64| (comm / units).max(comm - window * (units - 1.0) / units);
        let exposed = hide(reduce, compute / 2.0 * 2.0 / 3.0) + hide(gather, compute / 2.0 / 3.0);
        assert!((one_host.compute_s - compute).abs() < 1e-12);
        assert!((one_host.comm_busy_s - (reduce + gather)).abs() < 1e-12);
        assert!((one_host.comm_exposed_s - exposed).abs() < 1e-12);
        assert!((one_host.optimizer_s - p / 8.0 * 1e-11).abs() < 1e-12);
        let step = compute + exposed + p / 8.0 * 1e-11;
        assert!((one_host.step_s - step).abs() < 1e-12);
        assert!((one_host.tokens_per_s_per_gpu - tokens / step).abs() < 1e-6);
        // 16 ranks over two hosts go through the NICs' bandwidth
        let two_hosts = predict(&model, &run, Placement { ranks: 16, per_host: 8 }, &rates());
        assert_eq!(two_hosts.busbw_gbs, 100.0);
        assert!(two_hosts.step_s > one_host.step_s);
        // one rank moves nothing and owns everything
        let alone = predict(&model, &RunConfig { zero: 0, ..run.clone() }, Placement { ranks: 1, per_host: 8 }, &rates());
        assert_eq!((alone.bus_bytes, alone.comm_exposed_s), (0.0, 0.0));
        assert!((alone.step_s - (compute + p * 1e-11)).abs() < 1e-12);
        // stage 0 all-reduces (2f·4P); stage 3 gathers twice per micro-batch
        let s0 = predict(&model, &RunConfig { zero: 0, ..run.clone() }, Placement { ranks: 8, per_host: 8 }, &rates());
        assert!((s0.bus_bytes - 2.0 * f * 4.0 * p).abs() < 1.0);
        let s3 = predict(&model, &RunConfig { zero: 3, ..run.clone() }, Placement { ranks: 8, per_host: 8 }, &rates());
        assert!((s3.bus_bytes - (f * 4.0 * p + 2.0 * 2.0 * f * 2.0 * p)).abs() < 1.0);
        // recompute runs the forward twice, and the backward hides more
        let again = predict(&model, &RunConfig { recompute: true, ..run.clone() }, Placement { ranks: 8, per_host: 8 }, &rates());
        assert!((again.compute_s - compute * 4.0 / 3.0).abs() < 1e-12);
        let (forward, backward) = (compute / 2.0 / 3.0, compute / 2.0);
        assert!((again.comm_exposed_s - (hide(reduce, backward) + hide(gather, forward))).abs() < 1e-12);
        // a measured step's rate is what predict takes back
        let tokens_s = tokens * model.flops_per_token(1024) * 4.0 / 3.0 / (0.5 * PEAK_FLOPS);
        assert!((compute_mfu(tokens, model.flops_per_token(1024), true, tokens_s) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn exposed_communication_is_at_least_one_unit() {
        assert_eq!(exposed(0.0, 1.0, 4), 0.0);
        assert_eq!(exposed(4.0, 100.0, 4), 1.0);
        assert_eq!(exposed(4.0, 2.0, 4), 4.0 - 1.5);
    }

    #[test]
    fn the_fastest_layout_fits() {
        let model = LlamaConfig::load("70b").unwrap();
        let run = RunConfig::defaults_for("llama2-70b");
        let place = Placement { ranks: 64, per_host: 8 };
        let (best, p) = fastest(&model, &run, place, &Rates::reference(0.5, 8, NIC_GBS), 140 << 30).unwrap();
        assert!(plan(&best.plan_input(&model, 64)).total() + LIBRARY_RESERVE <= 140 << 30);
        assert!(best.zero >= 2, "70B replicated or with whole gradients does not fit 140 GiB");
        assert!(p.mfu > 0.0 && p.mfu < 0.5);
        assert!(fastest(&model, &run, Placement { ranks: 1, per_host: 8 }, &Rates::reference(0.5, 8, NIC_GBS), 140 << 30).is_none());
    }
}
