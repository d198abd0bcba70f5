//! `--suite nccl`: the collective sweeps on the GPU path (NCCL) or the host path (MPI).

use super::{announce, check_gpu_memory, check_host_memory, choose_path, open_gpu, record_gpu_software, Path, Stop};
use h200_mpibench::cli::{Cli, SweepPlan};
use h200_mpibench::dist::nccl::NcclComm;
use h200_mpibench::dist::watchdog::Watchdog;
use h200_mpibench::dist::world::World;
use h200_mpibench::results::hdf5_file::ResultsFile;
use h200_mpibench::results::metadata::{GpuIdentity, RunMetadata};
use h200_mpibench::sweep;
use h200_mpibench::sweep::engine::Engine;
use h200_mpibench::telemetry::collect::{SinkOpener, Telemetry};
use h200_mpibench::telemetry::figures;
use std::time::Duration;

pub fn run(world: &World, cli: &Cli, plan: &SweepPlan, file: Option<&ResultsFile>, meta: &mut RunMetadata) -> Result<i32, Stop> {
    let watchdog = Watchdog::start(world.who());
    let timeout = Duration::from_secs(cli.timeout);
    let wrong = match choose_path(world, cli.backend)? {
        Path::Gpu { ordinal } => {
            let gpu = open_gpu(world, ordinal)?;
            let comm = NcclComm::bootstrap(world, &watchdog, timeout)?;
            let need = (sweep::largest_buffer(plan, world.size) as u64).checked_mul(2);
            check_gpu_memory(world, &gpu, need, "the sweep's send and receive buffers for the largest size", "a smaller -e")?;
            let mut engine = sweep::device_nccl::NcclEngine::new(world, &gpu, &comm)?;
            engine.check_kernels_against_cpu(cli.seed)?;
            record_gpu_software(meta, true);
            meta.engine = "nccl".into();
            announce(world, file, meta, &gpu.identity(), "collective sweeps over nccl", None)?;
            sampled(world, cli, plan, &mut engine, &watchdog, file, (Some(&gpu.pci_bus_id()), ""))?
        }
        Path::Host { reason } if plan.settings.graph_launches > 0 => {
            return Err(Stop::Agreed(format!("-G (CUDA graphs) needs the NCCL engine, and this run sweeps over MPI on host memory ({reason})")));
        }
        Path::Host { reason } => {
            // Send, receive, the staged input of in-place calls and MPI's own copy of a message.
            let need = (sweep::largest_buffer(plan, world.size) as u64).checked_mul(4);
            check_host_memory(world, need, "the sweep's host buffers for the largest size", "a smaller -e, or fewer ranks per host")?;
            let mut engine = sweep::host_mpi::HostMpiEngine::new(world);
            meta.engine = "mpi-host".into();
            let note = format!("no GPU path ({reason}): sweeping with MPI on host memory; these figures measure MPI, not NCCL");
            announce(world, file, meta, &GpuIdentity::none(), "collective sweeps over mpi-host", Some(&note))?;
            sampled(world, cli, plan, &mut engine, &watchdog, file, (None, &reason))?
        }
    };
    Ok(if wrong == 0 { 0 } else { 3 })
}

/// The sweeps with telemetry from the first series to the last (`source`: this rank's GPU's
/// PCI bus id, or why it has none), then the slowest rank and any straggler named; returns the
/// wrong elements found.
fn sampled(
    world: &World,
    cli: &Cli,
    plan: &SweepPlan,
    engine: &mut dyn Engine,
    watchdog: &Watchdog,
    file: Option<&ResultsFile>,
    source: (Option<&str>, &str),
) -> Result<u64, Stop> {
    let mut telemetry = Telemetry::start(world, cli.telemetry_ms, source.0, source.1, file.map(|f| f as &dyn SinkOpener), Box::new(|_| true))?;
    let outcome = sweep::run_all(world, engine, plan, watchdog, file, &mut telemetry)?;
    let stats = telemetry.finish(world)?;
    let hosts = world.all_gather_string(&world.host);
    if world.is_root() {
        let slow = figures::stragglers(&outcome.launch_ratio_per_rank, 0, cli.straggler_pct);
        print!("{}", slow.lines(&hosts, &stats, cli.straggler_pct, ("launch time against its row's median over ranks", "x")));
    }
    Ok(outcome.wrong)
}
