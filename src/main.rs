//! h200-mpibench: one rank per GPU under mpirun/srun (or alone), every number to one HDF5 file.
//! Exit codes: 0 success, 1 runtime failure (every rank is stopped), 2 bad input or
//! environment (every rank says why), 3 wrong elements found by verification.

mod app;

use anyhow::Context;
use app::Stop;
use clap::Parser;
use h200_mpibench::cli::{self, Cli, Command, Suite};
use h200_mpibench::dist::world::{print_line, World};
use h200_mpibench::results::hdf5_file::ResultsFile;
use h200_mpibench::results::metadata::{self, RunMetadata};
use std::path::PathBuf;

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
    let (work, suite) = match (cli.command.clone(), cli.suite()) {
        (Some(Command::Plan { ranks, gpu_memory_gib }), _) => {
            let report = cli.memory_report(ranks, gpu_memory_gib).map_err(Stop::Agreed)?;
            if world.is_root() {
                print!("{report}");
            }
            return Ok(0);
        }
        (Some(Command::Selftest), _) => (Work::Selftest, "selftest"),
        (None, Suite::Nccl) => (Work::Sweeps(cli.sweep_plan(world.size).map_err(Stop::Agreed)?), "nccl"),
        (None, Suite::Sft) => (Work::Sft(app::sft::plan(&cli)?), "sft"),
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
        Work::Sweeps(plan) => app::sweeps::run(world, &cli, &plan, file.as_ref(), &mut meta),
        Work::Sft(plan) => app::sft::run(world, &cli, &plan, file.as_ref(), &mut meta),
        Work::Selftest => app::selftest::run(world, file.as_ref(), &mut meta),
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
