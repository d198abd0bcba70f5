//! h200-mpibench: one rank per GPU under mpirun/srun (or alone), every number to one HDF5 file.
//! Exit codes: 0 success, 1 runtime failure (every rank is stopped), 2 bad input or
//! environment (every rank says why), 3 wrong elements found by verification, 4 interrupted
//! by SIGINT or SIGTERM (dist/interrupt.rs), 5 a component failed `verify`.

mod app;

use anyhow::Context;
use app::Stop;
use h200_mpibench::cli::scope::RunKind;
use h200_mpibench::cli::{self, Cli, Command, Phase};
use h200_mpibench::dist::interrupt;
use h200_mpibench::dist::world::{print_line, World};
use h200_mpibench::results::hdf5_file::ResultsFile;
use h200_mpibench::results::metadata::{self, RunMetadata};
use h200_mpibench::results::out_path;
use std::path::Path;

/// Diagnostics on stderr for operators: `H200_MPIBENCH_LOG=debug` (any tracing filter) shows
/// each rank's phases; every line carries the rank and host.
fn start_logging(world: &World) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("H200_MPIBENCH_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
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
        if let Err(e) = interrupt::install(world.who(), world.is_root()) {
            print_line(&format!("h200-mpibench: error: {}: cannot watch for SIGINT/SIGTERM: {e}", world.who()));
            world.abort(1)
        }
        tracing::debug!(ranks = world.size, local_rank = world.local_rank, "MPI started");
        let code = match run(&world) {
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
                interrupt::save_and_settle(1);
                print_line(&format!("h200-mpibench: error: {}: {e:#}", world.who()));
                world.abort(1)
            }
        };
        // Settled before MPI_Finalize: a signal from here on only confirms the code.
        interrupt::settle(code);
        code
    };
    std::process::exit(code)
}

fn parse_cli() -> Result<Cli, Stop> {
    Cli::from_env().map_err(|e| match e.kind() {
        clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => Stop::Info(e.to_string()),
        _ => {
            let text = e.to_string();
            // clap's first line, with the next one where the first only announces it
            // ("the following required arguments were not provided:").
            let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
            let first = lines.next().unwrap_or("invalid arguments").trim_start_matches("error: ");
            let line = match (first.ends_with(':'), lines.next()) {
                (true, Some(next)) => format!("{first} {next}"),
                _ => first.to_string(),
            };
            Stop::Agreed(format!("{line} (see --help)"))
        }
    })
}

fn run(world: &World) -> Result<i32, Stop> {
    let cli = parse_cli()?;
    let kind = match &cli.command {
        Some(Command::Plan { .. }) => RunKind::Plan,
        Some(Command::Selftest) => RunKind::Selftest,
        Some(Command::Op(_)) => RunKind::Op,
        Some(Command::Verify) if cli.suite.is_none() => RunKind::Suite(vec![Phase::Verify]),
        Some(Command::Verify) => return Err(Stop::Agreed("verify runs the verify phase: give either `verify` or --suite (e.g. --suite full)".into())),
        None => RunKind::Suite(cli.phases()),
    };
    // Everything is validated before anything is created, and agreed over the ranks: a file
    // or a GPU one rank lacks stops every rank with that rank's line.
    let agreed = |outcome: Result<(), String>| world.agree(outcome).map_err(Stop::Agreed);
    agreed(cli.check_common(&kind))?;
    let given_seed = cli.given.iter().any(|g| g == "seed").then_some(cli.seed);
    // The suite's plans, or None for selftest.
    let (plans, suite) = match (&cli.command, &kind) {
        (Some(Command::Plan { ranks, gpu_memory_gib, predict }), _) => {
            let report = cli.memory_report(*ranks, *gpu_memory_gib).and_then(|memory| Ok(memory + &cli.prediction_report(*ranks, *gpu_memory_gib, predict)?));
            let report = world.agree(report).map_err(Stop::Agreed)?;
            if world.is_root() {
                print!("{report}");
            }
            return Ok(0);
        }
        (Some(Command::Op(args)), _) => {
            let plan = world.agree(args.plan(&cli.given, &h200_mpibench::backend::cuda::ops::attention::HEAD_DIMS)).map_err(Stop::Agreed)?;
            return app::op::run(world, &plan, given_seed);
        }
        (_, RunKind::Suite(phases)) => {
            let wants = |p: Phase| phases.contains(&p);
            let plans = app::suite::SuitePlans {
                verify: wants(Phase::Verify).then(|| world.agree(cli.verify.plan(&cli.given, world.size))).transpose().map_err(Stop::Agreed)?,
                sweeps: wants(Phase::Nccl).then(|| world.agree(cli.sweep_plan(world.size))).transpose().map_err(Stop::Agreed)?,
                sft: wants(Phase::Sft).then(|| world.agree(app::sft::plan(&cli))).transpose().map_err(Stop::Agreed)?,
                scaling: wants(Phase::Scaling).then(|| world.agree(cli.scaling.plan())).transpose().map_err(Stop::Agreed)?,
            };
            let name = if phases == &Phase::ALL { "full".to_string() } else { cli::phases_name(phases) };
            (Some(plans), name)
        }
        _ => (None, "selftest".to_string()),
    };
    let start_utc = metadata::utc_now();

    // The results file exists, writable and new (or --overwrite), before any work.
    let file = if world.is_root() {
        let inputs: Vec<&Path> = [cli.sft.data.as_deref(), cli.sft.model.as_deref()].into_iter().flatten().map(Path::new).collect();
        let target = out_path::choose(cli.out.as_deref(), &suite.replace(',', "-"), cli.overwrite, &inputs);
        target.and_then(|p| ResultsFile::create(&p, cli.overwrite).map_err(|e| format!("{e:#}"))).map(Some)
    } else {
        Ok(None)
    };
    let file = world.agree(file).map_err(Stop::Agreed)?;

    let mut meta = RunMetadata {
        version: env!("CARGO_PKG_VERSION").into(),
        git_commit: metadata::git_commit().into(),
        command_line: std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" "),
        suite: suite.clone(),
        engine: String::new(),
        start_utc,
        driver_version: "none".into(),
        cuda_version: "none".into(),
        nccl_version: "none".into(),
        mpi_version: World::mpi_library_version(),
        nccl_env_json: metadata::nccl_env_json(),
        ranks: Vec::new(),
    };
    let outcome = match plans {
        Some(plans) => app::suite::run(world, &cli, &plans, file.as_ref(), &mut meta),
        None => app::selftest::run(world, given_seed, file.as_ref(), &mut meta),
    };
    let code = match (outcome, file.as_ref()) {
        // A run refused for its environment (no GPU, too many ranks) leaves no file behind.
        (Err(Stop::Agreed(cause)), Some(f)) => {
            interrupt::settle(2);
            f.discard();
            return Err(Stop::Agreed(cause));
        }
        (outcome, _) => outcome?,
    };
    if let Some(file) = file {
        let path = file.finish(&metadata::utc_now(), code).context("cannot complete the results file")?;
        println!("# results: {}", path.display());
    }
    Ok(code)
}
