//! h200-mpibench: one rank per GPU under mpirun/srun (or alone), every number to one HDF5 file.
//! Exit codes: 0 success, 1 runtime failure (every rank is stopped), 2 bad input or
//! environment (every rank says why), 3 wrong elements found by verification.

use anyhow::Context;
use clap::Parser;
use h200_mpibench::cli::{self, Backend, Cli, Command, Suite};
use h200_mpibench::dist::nccl::NcclComm;
use h200_mpibench::dist::watchdog::Watchdog;
use h200_mpibench::dist::world::{print_line, World};
use h200_mpibench::results::hdf5_file::ResultsFile;
use h200_mpibench::results::metadata::{self, GpuIdentity, RunMetadata};
use h200_mpibench::backend::cuda;
use h200_mpibench::{dist, sweep};
use std::path::PathBuf;
use std::time::Duration;

/// Why the run stopped early.
enum Stop {
    /// Every rank knows the same cause: each prints it and exits 2 after MPI_Finalize.
    Agreed(String),
    /// This rank failed mid-run: it prints the cause and MPI_Abort ends every rank.
    Fatal(anyhow::Error),
    /// --help / --version: printed by rank 0, exit 0.
    Info(String),
}

impl From<anyhow::Error> for Stop {
    fn from(e: anyhow::Error) -> Self {
        Stop::Fatal(e)
    }
}

/// Diagnostics on stderr for operators: `H200_MPIBENCH_LOG=debug` (any tracing filter) shows
/// each rank's phases; every line carries the rank and host.
fn start_logging(world: &World) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("H200_MPIBENCH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).with_ansi(ansi).init();
    // The span stays entered for the whole run, so every event names its rank and host.
    let span = tracing::info_span!("rank", rank = world.rank, host = %world.host);
    std::mem::forget(span.entered());
}

fn main() {
    let code = {
        let world = World::init();
        start_logging(&world);
        tracing::debug!(ranks = world.size, local_rank = world.local_rank, "MPI started");
        match run(&world) {
            Ok(code) => code,
            Err(Stop::Info(text)) => {
                if world.is_root() {
                    print!("{text}");
                }
                0
            }
            Err(Stop::Agreed(cause)) => {
                print_line(&format!("h200-mpibench: error: {cause}"));
                2
            }
            Err(Stop::Fatal(e)) => {
                print_line(&format!("h200-mpibench: error: {}: {e:#}", world.who()));
                world.abort(1)
            }
        }
    };
    std::process::exit(code)
}

fn parse_cli() -> Result<Cli, Stop> {
    Cli::try_parse().map_err(|e| match e.kind() {
        clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => Stop::Info(e.to_string()),
        _ => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            Stop::Agreed(format!("{} (see --help)", first.trim_start_matches("error: ")))
        }
    })
}

/// What carries the bytes on this run.
enum Path {
    Gpu { ordinal: usize },
    Host { reason: String },
}

/// Collective: the same backend on every rank, or an error every rank reports.
fn choose_path(world: &World, backend: Backend) -> Result<Path, Stop> {
    let probe = match backend {
        Backend::Mpi => Err("--backend mpi".to_string()),
        _ => cuda::probe(),
    };
    tracing::debug!(?probe, "GPU probe");
    if let (Backend::Nccl, Err(reason)) = (backend, &probe) {
        world.agree(Err::<(), _>(format!("--backend nccl: {reason}"))).map_err(Stop::Agreed)?;
    }
    let gpu_ranks = world.sum_u64(probe.is_ok() as u64) as usize;
    let mixed = gpu_ranks != 0 && gpu_ranks != world.size;
    let mine = match &probe {
        Err(reason) if mixed => Err(format!("{reason}, while {gpu_ranks} other rank(s) have GPUs and NCCL")),
        Err(reason) => Ok(Path::Host { reason: reason.clone() }),
        Ok(visible) => cuda::gpu_for_local_rank(world.local_rank, world.local_size, *visible)
            .map(|ordinal| Path::Gpu { ordinal }),
    };
    world.agree(mine).map_err(Stop::Agreed)
}

fn default_out(suite: &str) -> Result<PathBuf, String> {
    std::fs::create_dir_all("results").map_err(|e| format!("cannot create results/: {e}"))?;
    Ok(PathBuf::from(format!("results/{}_{suite}.h5", metadata::utc_now(true))))
}

/// A validated request: what the run will do.
enum Work {
    Sweeps(cli::SweepPlan),
    Sft(cli::SftPlan),
    Selftest,
}

fn run(world: &World) -> Result<i32, Stop> {
    let cli = parse_cli()?;
    // Everything is validated before anything is created.
    let (work, suite) = match (cli.command, cli.suite) {
        (Some(Command::Selftest), _) => (Work::Selftest, "selftest"),
        (None, Suite::Nccl) => (Work::Sweeps(cli.sweep_plan(world.size).map_err(Stop::Agreed)?), "nccl"),
        (None, Suite::Sft) => (Work::Sft(sft_plan(&cli)?), "sft"),
    };
    let start_utc = metadata::utc_now(false);

    // The results file exists, writable, before any GPU work.
    let file = if world.is_root() {
        let path = cli.out.clone().map_or_else(|| default_out(suite), Ok);
        path.and_then(|p| ResultsFile::create(&p).map_err(|e| format!("{e:#}"))).map(Some)
    } else {
        Ok(None)
    };
    let file = world.agree(file).map_err(Stop::Agreed)?;

    let mut meta = RunMetadata {
        version: env!("CARGO_PKG_VERSION").into(),
        git_commit: metadata::git_commit().into(),
        command_line: std::env::args().collect::<Vec<_>>().join(" "),
        suite: suite.into(),
        engine: String::new(),
        start_utc,
        driver_version: "none".into(),
        cuda_version: "none".into(),
        nccl_version: "none".into(),
        mpi_version: World::mpi_library_version(),
        nccl_env_json: metadata::nccl_env_json(),
        ranks: Vec::new(),
    };
    let outcome = match work {
        Work::Sweeps(plan) => run_sweeps(world, &cli, &plan, file.as_ref(), &mut meta),
        Work::Sft(plan) => run_sft(world, &cli, &plan, file.as_ref(), &mut meta),
        Work::Selftest => run_selftest(world, file.as_ref(), &mut meta),
    };
    let code = match (outcome, file.as_ref()) {
        // A run refused for its environment (no GPU, too many ranks) leaves no file behind.
        (Err(Stop::Agreed(cause)), Some(f)) => {
            f.discard();
            return Err(Stop::Agreed(cause));
        }
        (outcome, _) => outcome?,
    };
    if let Some(file) = file {
        let path = file.finish(&metadata::utc_now(false), code).context("cannot complete the results file")?;
        println!("# results: {}", path.display());
    }
    Ok(code)
}

/// The sft plan, or why this run cannot do it (the same answer on every rank).
fn sft_plan(cli: &Cli) -> Result<cli::SftPlan, Stop> {
    let on_gpu = cli.backend != Backend::Mpi && cuda::probe().is_ok();
    if cli.backend == Backend::Nccl && !on_gpu {
        let reason = cuda::probe().err().unwrap_or_default();
        return Err(Stop::Agreed(format!("--suite sft --backend nccl: {reason}")));
    }
    let plan = cli.sft.plan(if on_gpu { "7b" } else { "tiny" }, cli.seed).map_err(Stop::Agreed)?;
    if plan.run.recompute && !on_gpu {
        return Err(Stop::Agreed("--recompute applies to the GPU step; the CPU path keeps every activation".into()));
    }
    Ok(plan)
}

fn run_sft(world: &World, cli: &Cli, plan: &cli::SftPlan, file: Option<&ResultsFile>, meta: &mut RunMetadata) -> Result<i32, Stop> {
    use h200_mpibench::model::gpu_model::device_bytes;
    use h200_mpibench::train::{cpu_trainer, gpu_trainer, metrics};
    let (m, r) = (&plan.model, &plan.run);
    let gpu = match cli.backend {
        Backend::Mpi => None,
        _ => match choose_path(world, cli.backend)? {
            Path::Gpu { ordinal } => Some(world.agree(cuda::Gpu::open(ordinal).map_err(|e| format!("{e:#}"))).map_err(Stop::Agreed)?),
            Path::Host { .. } => None,
        },
    };
    // Validate the fit before allocating anything on the GPU.
    if let Some(gpu) = &gpu {
        let need = device_bytes(m, r.micro_batch, r.seq, r.recompute);
        let (free, _) = gpu.ctx.mem_get_info().map_err(|e| Stop::Fatal(e.into()))?;
        if need > free as u64 {
            let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
            return Err(Stop::Agreed(format!(
                "{} with {} layers, micro-batch {} × seq {} needs {:.1} GiB on the GPU, {:.1} GiB free: \
                 use --recompute, fewer --layers or a smaller --micro-batch (sharding across GPUs is not built yet)",
                m.name, m.n_layers, r.micro_batch, r.seq, gib(need), gib(free as u64)
            )));
        }
    }
    meta.engine = if gpu.is_some() { "cuda" } else { "cpu" }.into();
    let identity = match &gpu {
        Some(g) => GpuIdentity { index: Some(g.ordinal), name: g.name(), pci_bus_id: g.pci_bus_id(), uuid: g.uuid() },
        None => GpuIdentity { name: "none".into(), pci_bus_id: "none".into(), uuid: "none".into(), index: None },
    };
    if gpu.is_some() {
        meta.cuda_version = cuda::driver_cuda_version();
    }
    meta.ranks = metadata::gather_ranks(world, &identity);
    if let Some(file) = file {
        file.write_metadata(meta)?;
    }
    let flops_per_token = m.flops_per_token(r.seq);
    let title = match (&gpu, world.size) {
        (Some(_), 1) => "Llama SFT on one GPU".to_string(),
        (Some(_), n) => format!("Llama SFT, data parallel over {n} GPUs (every rank holds the whole model)"),
        (None, 1) => "Llama SFT on the CPU".to_string(),
        (None, n) => format!("Llama SFT on the CPU, data parallel over {n} ranks"),
    };
    if world.is_root() {
        print_banner(meta, &title, None);
    }
    if world.is_root() {
        println!(
            "# model {}: {} layers, dim {}, ffn {}, heads {}/{} kv, vocab {}, {:.3}e9 matmul parameters",
            m.name, m.n_layers, m.dim, m.ffn_dim, m.n_heads, m.n_kv_heads, m.vocab_size, m.matmul_params() as f64 / 1e9
        );
        let recompute = if r.recompute { ", activation recompute" } else { "" };
        println!(
            "# seq {}, micro-batch {} × accumulation {} per rank, global batch {} sequences, {} steps ({} warm-up), lr {:.1e}{recompute}",
            r.seq, r.micro_batch, r.grad_accum, r.micro_batch * r.grad_accum * world.size, r.steps, r.warmup_steps, r.lr
        );
    }
    let mut diverged = None;
    let mut report = |s: &metrics::StepRecord| {
        let mfu = if gpu.is_some() { format!("  MFU {:.1}%", 100.0 * s.model_flops(flops_per_token) / metrics::PEAK_FLOPS) } else { String::new() };
        if world.is_root() {
            println!(
                "step {:>4}/{}  loss {:.4}  lr {:.2e}  grad norm {:.3}  {:.3} s  {:.0} tokens/s/rank  {:.2} TFLOP/s{mfu}",
                s.step, r.steps, s.loss, s.lr, s.grad_norm, s.step_s, s.tokens_per_s(), s.model_flops(flops_per_token) / 1e12
            );
        }
        if !s.loss.is_finite() && diverged.is_none() {
            diverged = Some(s.step);
        }
    };
    let (records, profile) = match &gpu {
        Some(g) => {
            let watchdog = Watchdog::start(world.who());
            let comm = match world.size {
                1 => None,
                _ => Some(NcclComm::bootstrap(world, &watchdog, Duration::from_secs(cli.timeout))?),
            };
            let model = gpu_trainer::build(g, m, r, cli.seed)?;
            gpu_trainer::train(g, &model, r, &plan.data, world, comm.as_ref(), cli.sft.profile, &mut report)?
        }
        None => (cpu_trainer::train(m, r, cli.seed, &plan.data, world, &mut report), None),
    };
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
    }
    if let Some(file) = file {
        file.write_sft(m, r, &meta.engine, &records, &summary, profile.as_ref())?;
    }
    match diverged {
        Some(step) => Err(Stop::Fatal(anyhow::anyhow!("the loss is not finite from step {step} on"))),
        None => Ok(0),
    }
}

fn run_selftest(world: &World, file: Option<&ResultsFile>, meta: &mut RunMetadata) -> Result<i32, Stop> {
    let ordinal = match choose_path(world, Backend::Auto)? {
        Path::Gpu { ordinal } => ordinal,
        Path::Host { reason } => return Err(Stop::Agreed(format!("selftest checks GPU kernels, and {reason}"))),
    };
    let gpu = world.agree(cuda::Gpu::open(ordinal).map_err(|e| format!("{e:#}"))).map_err(Stop::Agreed)?;
    meta.engine = "cuda".into();
    let identity = GpuIdentity { index: Some(ordinal), name: gpu.name(), pci_bus_id: gpu.pci_bus_id(), uuid: gpu.uuid() };
    meta.cuda_version = cuda::driver_cuda_version();
    meta.ranks = metadata::gather_ranks(world, &identity);
    if let Some(file) = file {
        file.write_metadata(meta)?;
    }
    if world.is_root() {
        print_banner(meta, "selftest: GPU ops against the CPU reference", None);
    }
    let checks = h200_mpibench::selftest::run(&gpu)?;
    let failed: Vec<&h200_mpibench::selftest::Check> = checks.iter().filter(|c| !c.passed()).collect();
    let failed_per_rank: Vec<u64> =
        world.all_gather_f64(&[failed.len() as f64]).iter().map(|&f| f as u64).collect();
    if world.is_root() {
        print!("{}", h200_mpibench::selftest::table(&checks));
    } else if !failed.is_empty() {
        let names: Vec<&str> = failed.iter().map(|c| c.op.as_str()).collect();
        print_line(&format!("h200-mpibench: {}: selftest failed: {}", world.who(), names.join(", ")));
    }
    if let Some(file) = file {
        file.write_selftest(&checks, &failed_per_rank)?;
    }
    let total: u64 = failed_per_rank.iter().sum();
    if world.is_root() {
        println!("# selftest: {} checks on each of {} GPU(s), {total} failed", checks.len(), world.size);
    }
    Ok(if total == 0 { 0 } else { 3 })
}

fn run_sweeps(world: &World, cli: &Cli, plan: &cli::SweepPlan, file: Option<&ResultsFile>, meta: &mut RunMetadata) -> Result<i32, Stop> {
    let watchdog = Watchdog::start(world.who());
    let timeout = Duration::from_secs(cli.timeout);
    let wrong = match choose_path(world, cli.backend)? {
        Path::Gpu { ordinal } => {
            let gpu = world.agree(cuda::Gpu::open(ordinal).map_err(|e| format!("{e:#}"))).map_err(Stop::Agreed)?;
            let comm = NcclComm::bootstrap(world, &watchdog, timeout)?;
            let mut engine = sweep::device_nccl::NcclEngine::new(world, &gpu, &comm)?;
            engine.check_kernels_against_cpu(cli.seed)?;
            let identity = GpuIdentity { index: Some(ordinal), name: gpu.name(), pci_bus_id: gpu.pci_bus_id(), uuid: gpu.uuid() };
            meta.driver_version = nvml_wrapper::Nvml::init()
                .and_then(|n| n.sys_driver_version())
                .unwrap_or_else(|_| "unknown".into());
            meta.cuda_version = cuda::driver_cuda_version();
            meta.nccl_version = dist::nccl::version();
            sweep_and_record(world, plan, &watchdog, file, &mut engine, &identity, meta, None)?
        }
        Path::Host { reason } => {
            let mut engine = sweep::host_mpi::HostMpiEngine::new(world);
            sweep_and_record(world, plan, &watchdog, file, &mut engine, &GpuIdentity::default(), meta, Some(&reason))?
        }
    };
    Ok(if wrong == 0 { 0 } else { 3 })
}

#[allow(clippy::too_many_arguments)]
fn sweep_and_record(
    world: &World,
    plan: &cli::SweepPlan,
    watchdog: &Watchdog,
    file: Option<&ResultsFile>,
    engine: &mut dyn sweep::engine::Engine,
    gpu: &GpuIdentity,
    meta: &mut RunMetadata,
    host_reason: Option<&str>,
) -> Result<u64, Stop> {
    meta.engine = engine.name().into();
    let identity = GpuIdentity {
        name: if gpu.name.is_empty() { "none".into() } else { gpu.name.clone() },
        pci_bus_id: if gpu.pci_bus_id.is_empty() { "none".into() } else { gpu.pci_bus_id.clone() },
        uuid: if gpu.uuid.is_empty() { "none".into() } else { gpu.uuid.clone() },
        index: gpu.index,
    };
    meta.ranks = metadata::gather_ranks(world, &identity);
    if let Some(file) = file {
        file.write_metadata(meta)?;
    }
    if world.is_root() {
        let title = format!("collective sweeps over {}", meta.engine);
        print_banner(meta, &title, host_reason);
    }
    Ok(sweep::run_all(world, engine, plan, watchdog, file)?)
}

fn print_banner(meta: &RunMetadata, title: &str, host_reason: Option<&str>) {
    let mut hosts: Vec<&str> = meta.ranks.iter().map(|r| r.host.as_str()).collect();
    hosts.dedup();
    println!("# h200-mpibench {} ({}): {title}", meta.version, meta.git_commit);
    println!(
        "# {} ranks on {} host(s); NCCL {}; CUDA driver {} ({}); {}",
        meta.ranks.len(),
        hosts.len(),
        meta.nccl_version,
        meta.cuda_version,
        meta.driver_version,
        meta.mpi_version
    );
    if let Some(reason) = host_reason {
        println!("# no GPU path ({reason}): sweeping with MPI on host memory; these figures measure MPI, not NCCL");
    }
    for (rank, r) in meta.ranks.iter().enumerate() {
        println!("#  rank {rank:3} on {} local {} GPU {} {} [{}]", r.host, r.local_rank, r.gpu_index, r.gpu_name, r.gpu_pci_bus_id);
    }
}
