//! `--suite sft`: Llama supervised fine-tuning steps on the GPU (data parallel over ranks) or
//! on the CPU, every step's figures printed by rank 0 and written to /sft.

use super::{announce, check_host_memory, choose_path, open_gpu, record_gpu_software, Path, Stop};
use h200_mpibench::backend::cuda;
use h200_mpibench::cli::{Backend, Cli, SftPlan};
use h200_mpibench::dist::nccl::NcclComm;
use h200_mpibench::dist::watchdog::Watchdog;
use h200_mpibench::dist::world::World;
use h200_mpibench::results::hdf5_file::ResultsFile;
use h200_mpibench::results::metadata::{GpuIdentity, RunMetadata};
use h200_mpibench::telemetry::collect::{SinkOpener, Telemetry};
use h200_mpibench::telemetry::figures;
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

pub fn run(world: &World, cli: &Cli, plan: &SftPlan, file: Option<&ResultsFile>, meta: &mut RunMetadata) -> Result<i32, Stop> {
    let (m, r) = (&plan.model, &plan.run);
    let gpu = match choose_path(world, cli.backend)? {
        Path::Gpu { ordinal } => Some(open_gpu(world, ordinal)?),
        Path::Host { .. } => None,
    };
    // Validate the fit before allocating anything on the GPU.
    let planned = r.plan_input(m, world.size);
    let plan_bytes = planner::plan(&planned).total();
    if let Some(gpu) = &gpu {
        let (head_dim, kernels_take) = (m.head_dim(), cuda::ops::attention::HEAD_DIMS);
        let supported = if kernels_take.contains(&head_dim) {
            Ok(())
        } else {
            Err(format!("{}: head_dim {head_dim} (dim / heads); the GPU attention kernels take {kernels_take:?}", m.name))
        };
        world.agree(supported).map_err(Stop::Agreed)?;
        let free = gpu.ctx.mem_get_info().map_err(|e| Stop::Fatal(e.into()))?.0 as u64;
        let fit = if plan_bytes + planner::LIBRARY_RESERVE <= free {
            Ok(())
        } else {
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
        };
        world.agree(fit).map_err(Stop::Agreed)?;
    }
    if gpu.is_none() {
        let advice = "run it on GPUs, or a smaller --model (tiny), --layers, --micro-batch or --seq";
        let what = format!("{} on the CPU path (micro-batch {} × seq {})", m.name, r.micro_batch, r.seq);
        check_host_memory(world, Some(cpu_trainer::host_bytes(m, r, world.size)), &what, advice)?;
    }
    meta.engine = if gpu.is_some() { "cuda" } else { "cpu" }.into();
    if gpu.is_some() {
        record_gpu_software(meta, world.size > 1);
    }
    let identity = gpu.as_ref().map_or_else(GpuIdentity::none, |g| g.identity());
    let flops_per_token = m.flops_per_token(r.seq);
    let title = match (&gpu, world.size) {
        (Some(_), 1) => "Llama SFT on one GPU".to_string(),
        (Some(_), n) => format!("Llama SFT, data parallel over {n} GPUs, ZeRO stage {}", r.zero),
        (None, 1) => "Llama SFT on the CPU".to_string(),
        (None, n) => format!("Llama SFT on the CPU, data parallel over {n} ranks, ZeRO stage {}", r.zero),
    };
    announce(world, file, meta, &identity, &title, None)?;
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
    let log = file.map(|f| f.begin_sft(m, r, &meta.engine, plan_bytes)).transpose()?;
    // Samples of the steps after the warm-up make the figures; every rank's energy counter is
    // read at each step boundary.
    let warmup = r.warmup_steps;
    let measured = move |phase: &str| phase.strip_prefix("sft step ").and_then(|n| n.parse::<usize>().ok()).is_some_and(|n| n > warmup);
    let pci = gpu.as_ref().map(|g| g.pci_bus_id());
    let telemetry =
        RefCell::new(Telemetry::start(world, cli.telemetry_ms, pci.as_deref(), "the CPU path", file.map(|f| f as &dyn SinkOpener), Box::new(measured))?);
    // The energy counter and the clock at the last step boundary (the first: just before step 1,
    // after the start-up), and per step their rise.
    let reading = || (telemetry.borrow_mut().energy_j(), Instant::now());
    let boundary = Cell::new(reading());
    let (mut step_energy, mut step_wall) = (Vec::with_capacity(r.steps), Vec::with_capacity(r.steps));
    let mut telemetry_error = None;
    let mut log_error = None;
    // Never hang: each step must finish within --timeout, or every rank is stopped.
    let watchdog = Watchdog::start(world.who());
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
    let (records, profile) = match &gpu {
        Some(g) => {
            let comm = match world.size {
                1 => None,
                _ => Some(NcclComm::bootstrap(world, &watchdog, timeout)?),
            };
            let model = gpu_trainer::build(g, m, r, cli.seed, world, comm.as_ref())?;
            boundary.set(reading());
            watchdog.arm("sft step 1", timeout);
            gpu_trainer::train(g, &model, r, &plan.data, world, cli.sft.profile, &mut report)?
        }
        None => {
            boundary.set(reading());
            watchdog.arm("sft step 1", timeout);
            (cpu_trainer::train(m, r, cli.seed, &plan.data, world, &mut report)?, None)
        }
    };
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
    if let (Some(g), true) = (&gpu, world.is_root()) {
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        let peak = g.peak_allocated();
        println!(
            "# GPU memory: planned {:.2} GiB, our buffers' peak {:.2} GiB ({:+.2}%)",
            gib(plan_bytes),
            gib(peak),
            100.0 * (peak as f64 / plan_bytes as f64 - 1.0)
        );
    }
    let stats = telemetry.into_inner().finish(world)?;
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
