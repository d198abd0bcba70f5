//! `--suite nccl`: the collective sweeps on the GPU path (NCCL) or the host path (MPI).

use super::session::Session;
use super::{check_gpu_memory, check_host_memory, Stop};
use h200_mpibench::backend::cuda::Gpu;
use h200_mpibench::cli::SweepPlan;
use h200_mpibench::dist::collective::Collective;
use h200_mpibench::dist::watchdog::Watchdog;
use h200_mpibench::dist::world::World;
use h200_mpibench::results::hdf5_file::ResultsFile;
use h200_mpibench::sweep;
use h200_mpibench::sweep::engine::Engine;
use h200_mpibench::telemetry::collect::Telemetry;
use h200_mpibench::telemetry::figures;

/// Collective: refuses, before anything runs, sweeps this run cannot hold or make; returns the
/// banner's note on the host path.
pub fn check(world: &World, gpu: Option<&Gpu>, why_no_gpu: &str, plan: &SweepPlan) -> Result<Option<String>, Stop> {
    match gpu {
        Some(gpu) => {
            let need = (sweep::largest_buffer(plan, world.size) as u64).checked_mul(2);
            check_gpu_memory(world, gpu, need, "the sweep's send and receive buffers for the largest size", "a smaller -e")?;
            Ok(None)
        }
        None if plan.settings.graph_launches > 0 => {
            Err(Stop::Agreed(format!("-G (CUDA graphs) needs the NCCL engine, and this run sweeps over MPI on host memory ({why_no_gpu})")))
        }
        None => {
            // Send, receive, the staged input of in-place calls and MPI's own copy of a message.
            let need = (sweep::largest_buffer(plan, world.size) as u64).checked_mul(4);
            check_host_memory(world, need, "the sweep's host buffers for the largest size", "a smaller -e, or fewer ranks per host")?;
            Ok(Some("sweeping with MPI on host memory; these figures measure MPI, not NCCL".to_string()))
        }
    }
}

/// The sweeps with telemetry from the first series to the last, then the slowest rank and any
/// straggler named; exit code 3 if a check found wrong elements.
pub fn run(s: &mut Session, plan: &SweepPlan) -> Result<i32, Stop> {
    let world = s.world;
    let wrong = match (&s.gpu, &s.comm) {
        (Some(gpu), Some(comm)) => {
            let mut engine = sweep::device_nccl::NcclEngine::new(world, gpu, comm)?;
            engine.check_kernels_against_cpu(s.cli.seed)?;
            sampled(world, s.cli.straggler_pct, plan, &mut engine, &s.watchdog, s.file, &mut s.telemetry)?
        }
        _ => {
            let mut engine = sweep::host_mpi::HostMpiEngine::new(world);
            sampled(world, s.cli.straggler_pct, plan, &mut engine, &s.watchdog, s.file, &mut s.telemetry)?
        }
    };
    Ok(if wrong == 0 { 0 } else { 3 })
}

/// The sweeps as one telemetry phase (every collective's sample counts), then the slowest rank
/// and every rank more than `straggler_pct` slower named; returns the wrong elements found.
fn sampled(
    world: &World,
    straggler_pct: f64,
    plan: &SweepPlan,
    engine: &mut dyn Engine,
    watchdog: &Watchdog,
    file: Option<&ResultsFile>,
    telemetry: &mut Telemetry,
) -> Result<u64, Stop> {
    telemetry.begin_phase(world, Box::new(|phase| Collective::ALL.iter().any(|c| phase.starts_with(c.name()))))?;
    let outcome = sweep::run_all(world, engine, plan, watchdog, file.map(|f| (f, "nccl")), Some((&mut *telemetry, world)))?;
    let stats = telemetry.end_phase(world)?;
    let hosts = world.all_gather_string(&world.host);
    if world.is_root() {
        let slow = figures::stragglers(&outcome.launch_ratio_per_rank, 0, straggler_pct);
        print!("{}", slow.lines(&hosts, &stats, straggler_pct, ("launch time against its row's median over ranks", "x")));
    }
    Ok(outcome.wrong)
}
