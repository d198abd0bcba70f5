//! `--suite sft`: Llama supervised fine-tuning steps on the GPU (data parallel over ranks) or
//! on the CPU, every step's figures printed by rank 0 and written to /sft.

use super::session::Session;
use super::{gpu_free_bytes, host_memory_fit, Stop};
use h200_mpibench::backend::cuda::op_timer::StepProfile;
use h200_mpibench::backend::cuda::{self, Gpu};
use h200_mpibench::cli::{Backend, Cli, SftPlan};
use h200_mpibench::dist::nccl::NcclComm;
use h200_mpibench::dist::ranks::Ranks;
use h200_mpibench::dist::world::World;
use h200_mpibench::model::config::LlamaConfig;
use h200_mpibench::telemetry::figures;
use h200_mpibench::train::metrics::StepRecord;
use h200_mpibench::train::run_config::RunConfig;
use h200_mpibench::train::{cpu_trainer, gpu_trainer, metrics};
use h200_mpibench::zero::planner;
use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

/// This rank's sft plan, or why it cannot do it (the caller agrees over the ranks: the model
/// file, the data file and the GPU are each rank's own).
pub fn plan(cli: &Cli) -> Result<SftPlan, String> {
    let probe = if cli.backend == Backend::Mpi { Err("--backend cpu".to_string()) } else { cuda::probe().map(|_| ()) };
    if let (Backend::Nccl, Err(reason)) = (cli.backend, &probe) {
        return Err(format!("--suite sft --backend nccl: {reason}"));
    }
    let on_gpu = probe.is_ok();
    cli.sft.plan(if on_gpu { "7b" } else { "tiny" }, cli.seed)
}

/// The planner's bytes per GPU of `run` of model `m` on `ranks` ranks.
pub fn planned_bytes(m: &LlamaConfig, r: &RunConfig, ranks: usize) -> u64 {
    planner::plan(&r.plan_input(m, ranks)).total()
}

/// Collective: refuses, before anything is allocated, a model the GPU kernels do not take or a
/// run that does not fit this rank's GPU (or its host's memory, on the CPU path).
pub fn check(world: &World, gpu: Option<&Gpu>, plan: &SftPlan) -> Result<(), Stop> {
    let m = &plan.model;
    if gpu.is_some() {
        world.agree(gpu_kernels_take(m)).map_err(Stop::Agreed)?;
    }
    world.agree(fit(gpu, m, &plan.run, world.size, world.local_size)).map_err(Stop::Agreed)
}

/// Whether the GPU kernels take model `m`: its head_dim the attention's, its vocabulary a multiple
/// of what the cross-entropy reads at a time.
fn gpu_kernels_take(m: &LlamaConfig) -> Result<(), String> {
    let (head_dim, kernels_take) = (m.head_dim(), cuda::ops::attention::HEAD_DIMS);
    let vocab_multiple = cuda::ops::cross_entropy::VOCAB_MULTIPLE;
    if !kernels_take.contains(&head_dim) {
        Err(format!("{}: head_dim {head_dim} (dim / heads); the GPU attention kernels take {kernels_take:?}", m.name))
    } else if m.vocab_size % vocab_multiple != 0 {
        Err(format!("{}: vocab_size {}; the GPU cross-entropy takes multiples of {vocab_multiple}", m.name, m.vocab_size))
    } else {
        Ok(())
    }
}

/// Whether `r` of model `m` over `ranks` ranks fits this rank's GPU (the planner's bytes
/// against the memory free), or on the CPU path this host with `on_host` such ranks on it;
/// the refusal says what would fit.
pub fn fit(gpu: Option<&Gpu>, m: &LlamaConfig, r: &RunConfig, ranks: usize, on_host: usize) -> Result<(), String> {
    let Some(gpu) = gpu else {
        let advice = "run it on GPUs, or a smaller --model (tiny), --layers, --micro-batch or --seq";
        let what = format!("{} on the CPU path (micro-batch {} × seq {})", m.name, r.micro_batch, r.seq);
        return host_memory_fit(Some(cpu_trainer::host_bytes(m, r, ranks)), on_host, &what, advice);
    };
    let planned = r.plan_input(m, ranks);
    let plan_bytes = planned_bytes(m, r, ranks);
    let free = gpu_free_bytes(gpu).map_err(|e| format!("cannot read the GPU's free memory: {e}"))?;
    if plan_bytes + planner::LIBRARY_RESERVE <= free {
        return Ok(());
    }
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    let advice = planner::suggestions(&planned, free);
    let advice = if advice.is_empty() { "fewer --layers".to_string() } else { advice.join(", or ") };
    Err(format!(
        "{} with {} layers, micro-batch {} × seq {} plans {:.1} GiB per GPU (+{:.0} GiB for cuBLASLt and the context), \
         {:.1} GiB free: would fit with {advice}",
        m.name,
        m.n_layers,
        r.micro_batch,
        r.seq,
        gib(plan_bytes),
        gib(planner::LIBRARY_RESERVE),
        gib(free)
    ))
}

/// Where a training run runs: this rank's GPU (none: the CPU path), the ranks it is data
/// parallel over and, on GPUs where there are several, their NCCL communicator.
pub struct Crew<'a> {
    pub gpu: Option<&'a Gpu>,
    pub comm: Option<&'a NcclComm>,
    pub ranks: &'a dyn Ranks,
}

/// Trains `run` of `plan`'s model on its data with `crew`: builds the model, calls `ready`
/// (the start-up done, step 1 next), then runs the steps, each seen by `on_step`.
pub fn train(
    crew: &Crew,
    plan: &SftPlan,
    run: &RunConfig,
    cli: &Cli,
    ready: &mut dyn FnMut(),
    on_step: &mut dyn FnMut(&StepRecord),
) -> anyhow::Result<(Vec<StepRecord>, Option<StepProfile>)> {
    match crew.gpu {
        Some(g) => {
            let model = gpu_trainer::build(g, &plan.model, run, cli.seed, crew.ranks, crew.comm)?;
            ready();
            gpu_trainer::train(g, &model, run, &plan.data, crew.ranks, cli.sft.profile, on_step)
        }
        None => {
            ready();
            Ok((cpu_trainer::train(&plan.model, run, cli.seed, &plan.data, crew.ranks, on_step)?, None))
        }
    }
}

/// What the banner calls the run.
pub fn title(world: &World, on_gpu: bool, plan: &SftPlan) -> String {
    match (on_gpu, world.size) {
        (true, 1) => "Llama SFT on one GPU".to_string(),
        (true, n) => format!("Llama SFT, data parallel over {n} GPUs, ZeRO stage {}", plan.run.zero),
        (false, 1) => "Llama SFT on the CPU".to_string(),
        (false, n) => format!("Llama SFT on the CPU, data parallel over {n} ranks, ZeRO stage {}", plan.run.zero),
    }
}

pub fn run(session: &mut Session, plan: &SftPlan) -> Result<i32, Stop> {
    let (m, r) = (&plan.model, &plan.run);
    let (world, cli, file) = (session.world, session.cli, session.file);
    let gpu = session.gpu.as_ref();
    let plan_bytes = planned_bytes(m, r, world.size);
    let engine = if gpu.is_some() { "cuda" } else { "cpu" };
    let flops_per_token = m.flops_per_token(r.seq);
    if world.is_root() {
        println!(
            "# model {}: {} layers, dim {}, ffn {}, heads {}/{} kv, vocab {}, {:.3}e9 matmul parameters",
            m.name,
            m.n_layers,
            m.dim,
            m.ffn_dim,
            m.n_heads,
            m.n_kv_heads,
            m.vocab_size,
            m.matmul_params() as f64 / 1e9
        );
        let recompute = if r.recompute { ", activation recompute" } else { "" };
        println!(
            "# seq {}, micro-batch {} × accumulation {} per rank, global batch {} sequences, {} steps ({} warm-up), lr {:.1e}{recompute}",
            r.seq,
            r.micro_batch,
            r.grad_accum,
            r.micro_batch * r.grad_accum * world.size,
            r.steps,
            r.warmup_steps,
            r.lr
        );
    }
    // Steps land in the file as they complete, so a run cut short keeps the ones it finished.
    let log = file.map(|f| f.begin_sft(m, r, engine, plan_bytes)).transpose()?;
    // Samples of the steps after the warm-up make the figures; every rank's energy counter is
    // read at each step boundary.
    let warmup = r.warmup_steps;
    let measured = move |phase: &str| phase.strip_prefix("sft step ").and_then(|n| n.parse::<usize>().ok()).is_some_and(|n| n > warmup);
    session.telemetry.begin_phase(world, Box::new(measured))?;
    let telemetry = RefCell::new(&mut session.telemetry);
    // The energy counter and the clock at the last step boundary (the first: just before step 1,
    // after the start-up), and per step their rise.
    let reading = || (telemetry.borrow_mut().energy_j(), Instant::now());
    let boundary = Cell::new(reading());
    let (mut step_energy, mut step_wall) = (Vec::with_capacity(r.steps), Vec::with_capacity(r.steps));
    let mut telemetry_error = None;
    let mut log_error = None;
    // Never hang: each step must finish within --timeout, or every rank is stopped.
    let watchdog = &session.watchdog;
    let timeout = Duration::from_secs(cli.timeout);
    let mut diverged = None;
    let mut report = |s: &metrics::StepRecord| {
        let ((energy, at), now) = (boundary.get(), reading());
        step_energy.push(now.0 - energy);
        step_wall.push(now.1.duration_since(at).as_secs_f64());
        boundary.set(now);
        if let Err(e) = telemetry.borrow_mut().maybe_flush(world) {
            telemetry_error.get_or_insert(e);
        }
        watchdog.arm(&format!("sft step {}", s.step + 1), timeout);
        // Shown only once kept: after an interrupt's save no step is printed that the file lacks.
        let kept = match (&log, &log_error) {
            (Some(log), None) => log.step(s).unwrap_or_else(|e| {
                log_error = Some(e);
                true
            }),
            _ => true,
        };
        if !kept {
            return;
        }
        let mfu = if gpu.is_some() { format!("  MFU {:.1}%", 100.0 * s.model_flops(flops_per_token) / metrics::PEAK_FLOPS) } else { String::new() };
        if world.is_root() {
            println!(
                "step {:>4}/{}  loss {:.4}  lr {:.2e}  grad norm {:.3}  {:.3} s  {:.0} tokens/s/rank  {:.2} TFLOP/s{mfu}",
                s.step,
                r.steps,
                s.loss,
                s.lr,
                s.grad_norm,
                s.step_s,
                s.tokens_per_s(),
                s.model_flops(flops_per_token) / 1e12
            );
        }
        if !s.loss.is_finite() && diverged.is_none() {
            diverged = Some(s.step);
        }
    };
    // One rank has nothing to exchange (the communicator is there for other phases).
    // The start-up's samples say so (not the phase before's label).
    h200_mpibench::dist::phase::set("sft: building the model");
    let crew = Crew { gpu, comm: session.comm.as_ref().filter(|_| world.size > 1), ranks: world.comm() };
    let mut ready = || {
        boundary.set(reading());
        watchdog.arm("sft step 1", timeout);
    };
    let (records, profile) = train(&crew, plan, r, cli, &mut ready, &mut report)?;
    watchdog.disarm();
    // Samples from here on belong to no step.
    h200_mpibench::dist::phase::set("sft summary");
    if let Some(e) = telemetry_error {
        return Err(Stop::Fatal(e.context("cannot send the telemetry to rank 0")));
    }
    if let Some(e) = log_error {
        return Err(Stop::Fatal(e.context("cannot write the steps to the results file")));
    }
    if let (Some(p), true) = (&profile, world.is_root()) {
        print!("# GPU time of step {} by op (CUDA events around each op)\n{}", r.steps, p.table());
    }
    let summary = metrics::summarize(&records, r.warmup_steps, flops_per_token, gpu.is_some());
    let mfu = summary.mfu.map_or(String::new(), |u| format!(", MFU {:.1}%", 100.0 * u));
    if world.is_root() {
        println!(
            "# {} measured steps (rank 0): {:.3} s/step, {:.0} tokens/s per rank, {:.2} model TFLOP/s per rank{mfu}",
            summary.measured_steps, summary.step_s, summary.tokens_per_s, summary.model_tflops
        );
        if world.size > 1 {
            println!(
                "# communication per step (rank 0): {:.1} ms exposed, {:.1} ms in collectives, {:.2} GB sent",
                1e3 * summary.comm_s,
                1e3 * summary.comm_busy_s,
                summary.comm_bytes / 1e9
            );
        }
    }
    if let (Some(g), true) = (gpu, world.is_root()) {
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        let peak = g.peak_allocated();
        println!(
            "# GPU memory: planned {:.2} GiB, our buffers' peak {:.2} GiB ({:+.2}%)",
            gib(plan_bytes),
            gib(peak),
            100.0 * (peak as f64 / plan_bytes as f64 - 1.0)
        );
    }
    let stats = telemetry.into_inner().end_phase(world)?;
    // Every rank's own step times, split and energy, [steps, ranks]: what the energy figures
    // and the straggler naming are computed from.
    let column = |f: fn(&metrics::StepRecord) -> f64| world.all_gather_f64(&records.iter().map(f).collect::<Vec<_>>());
    let by_rank = |flat: &[f64]| -> Vec<Vec<f64>> { flat.chunks(records.len().max(1)).map(|c| c.to_vec()).collect() };
    let (energy_j, boundary_s) = (world.all_gather_f64(&step_energy), world.all_gather_f64(&step_wall));
    let energy = figures::energy(&by_rank(&energy_j), &by_rank(&boundary_s), r.micro_batch * r.grad_accum * r.seq, r.warmup_steps);
    let compute_s = by_rank(&column(|s| s.step_s - s.comm_s));
    let stragglers = figures::stragglers(&compute_s, r.warmup_steps, cli.straggler_pct);
    let per_rank: Vec<(&str, Vec<f64>)> = vec![
        ("rank_step_s", column(|s| s.step_s)),
        ("rank_forward_s", column(|s| s.forward_s)),
        ("rank_backward_s", column(|s| s.backward_s)),
        ("rank_optimizer_s", column(|s| s.optimizer_s)),
        ("rank_comm_s", column(|s| s.comm_s)),
        ("rank_energy_j", energy_j),
        ("rank_boundary_s", boundary_s),
    ];
    let hosts = world.all_gather_string(&world.host);
    if world.is_root() {
        print!("{}", figures::sft_lines(&energy, &stats));
        print!("{}", stragglers.lines(&hosts, &stats, cli.straggler_pct, ("step compute", " s")));
    }
    if let Some(log) = &log {
        log.per_rank(records.len(), &per_rank, &energy, &stragglers, cli.straggler_pct)?;
        log.finish(&summary, profile.as_ref())?;
    }
    match diverged {
        Some(step) => Err(Stop::Fatal(anyhow::anyhow!("the loss is not finite from step {step} on"))),
        None => Ok(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_kernels_refuse_head_dims_and_vocabularies_they_do_not_take() {
        let llama = LlamaConfig::load("7b").unwrap();
        assert_eq!(gpu_kernels_take(&llama), Ok(()));
        let odd_vocab = LlamaConfig { vocab_size: 32001, ..llama.clone() };
        assert!(gpu_kernels_take(&odd_vocab).unwrap_err().contains("vocab_size 32001"));
        let wide_heads = LlamaConfig { n_heads: 16, n_kv_heads: 16, ..llama };
        assert!(gpu_kernels_take(&wide_heads).unwrap_err().contains("head_dim 256"));
    }
}
