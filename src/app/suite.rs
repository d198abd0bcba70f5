//! One run of the suite's phases (verify, nccl, sft, scaling) in one process and one results file:
//! the path every rank takes and its GPU, chosen once; every phase's checks before any phase
//! runs (a run refused for its environment leaves nothing behind); one banner, one watchdog,
//! one telemetry sampler from before the first phase to the end, one NCCL communicator, made
//! before the checks where a phase uses it. A failed verify stops the benchmarks after it unless
//! --keep-going; the exit code is the first failing phase's.

use super::session::Session;
use super::{announce, choose_path, open_gpu, record_gpu_software, Path, Stop};
use h200_mpibench::cli::scaling::ScalingPlan;
use h200_mpibench::cli::verify::VerifyPlan;
use h200_mpibench::cli::{phases_name, Cli, Phase, SftPlan, SweepPlan};
use h200_mpibench::dist::nccl::NcclComm;
use h200_mpibench::dist::watchdog::Watchdog;
use h200_mpibench::dist::world::{print_line, World};
use h200_mpibench::results::hdf5_file::ResultsFile;
use h200_mpibench::results::metadata::{GpuIdentity, RunMetadata};
use h200_mpibench::telemetry::collect::{SinkOpener, Telemetry};
use std::time::Duration;

/// The validated plan of each phase asked for.
pub struct SuitePlans {
    pub verify: Option<VerifyPlan>,
    pub sweeps: Option<SweepPlan>,
    pub sft: Option<SftPlan>,
    pub scaling: Option<ScalingPlan>,
}

impl SuitePlans {
    pub fn phases(&self) -> Vec<Phase> {
        [
            (self.verify.is_some(), Phase::Verify),
            (self.sweeps.is_some(), Phase::Nccl),
            (self.sft.is_some(), Phase::Sft),
            (self.scaling.is_some(), Phase::Scaling),
        ]
        .into_iter()
        .filter_map(|(asked, phase)| asked.then_some(phase))
        .collect()
    }
}

/// Runs `plans`' phases in order on every rank; returns the exit code.
pub fn run(world: &World, cli: &Cli, plans: &SuitePlans, file: Option<&ResultsFile>, meta: &mut RunMetadata) -> Result<i32, Stop> {
    let phases = plans.phases();
    let (gpu, why_no_gpu) = match choose_path(world, cli.backend)? {
        Path::Gpu { ordinal } => (Some(open_gpu(world, ordinal)?), String::new()),
        Path::Host { reason } => (None, reason),
    };
    // NCCL first where a phase uses it (verify's links, the sweeps, data-parallel SFT), so the
    // memory checks count its buffers.
    let watchdog = Watchdog::start(world.who());
    let nccl = gpu.is_some() && (phases.contains(&Phase::Verify) || phases.contains(&Phase::Nccl) || world.size > 1);
    let comm = match (&gpu, nccl) {
        (Some(gpu), true) => {
            // NCCL takes the thread's current GPU: this rank's.
            gpu.ctx.bind_to_thread().map_err(anyhow::Error::from)?;
            Some(NcclComm::bootstrap(world, &watchdog, Duration::from_secs(cli.timeout))?)
        }
        _ => None,
    };
    // Every check before anything runs.
    let mut notes = Vec::new();
    if plans.verify.is_some() {
        notes.extend(super::verify::check(world, gpu.as_ref())?);
    }
    if let Some(plan) = &plans.sweeps {
        notes.extend(super::sweeps::check(world, gpu.as_ref(), &why_no_gpu, plan)?);
    }
    if let Some(plan) = &plans.sft {
        super::sft::check(world, gpu.as_ref(), plan)?;
    }
    let scaling_sizes = match (&plans.sft, &plans.scaling) {
        (Some(sft), Some(scaling)) => Some(super::scaling::check(world, gpu.as_ref(), sft, scaling)?),
        _ => None,
    };
    meta.engine = match (&gpu, phases.as_slice()) {
        (Some(_), [Phase::Nccl]) => "nccl",
        (Some(_), _) => "cuda",
        (None, [Phase::Sft] | [Phase::Sft, Phase::Scaling]) => "cpu",
        (None, _) => "mpi-host",
    }
    .into();
    if gpu.is_some() {
        record_gpu_software(meta, nccl);
    }
    let identity = gpu.as_ref().map_or_else(GpuIdentity::none, |g| g.identity());
    let title = title(world, gpu.is_some(), plans);
    let note = (!notes.is_empty()).then(|| format!("no GPU path ({why_no_gpu}): {}", notes.join("; ")));
    announce(world, file, meta, &identity, &title, note.as_deref())?;

    let telemetry = {
        let (pci, why) = (gpu.as_ref().map(|g| g.pci_bus_id()), why_no_gpu.clone());
        Telemetry::start(world, cli.telemetry_ms, pci.as_deref(), &why, file.map(|f| f as &dyn SinkOpener))?
    };
    let mut session = Session { world, cli, file, comm, gpu, why_no_gpu, watchdog, telemetry };
    let mut code = 0;
    let mut stopped = None;
    for phase in &phases {
        let started = std::time::Instant::now();
        // Each phase's peak memory is its own.
        if let Some(gpu) = &session.gpu {
            gpu.reset_peak();
        }
        let outcome = match phase {
            Phase::Verify => super::verify::run(&mut session, plans.verify.as_ref().expect("planned")),
            Phase::Nccl => super::sweeps::run(&mut session, plans.sweeps.as_ref().expect("planned")),
            Phase::Sft => super::sft::run(&mut session, plans.sft.as_ref().expect("planned")),
            Phase::Scaling => {
                let (sft, scaling, sizes) = (plans.sft.as_ref(), plans.scaling.as_ref(), scaling_sizes.as_ref());
                super::scaling::run(&mut session, sft.expect("planned"), scaling.expect("planned"), sizes.expect("checked"))
            }
        }?;
        let seconds = started.elapsed().as_secs_f64();
        if world.is_root() {
            println!("# phase {} took {seconds:.1} s (exit code {outcome})", phase.name());
        }
        if let Some(file) = file {
            file.note_phase(phase.name(), seconds, outcome)?;
        }
        if code == 0 {
            code = outcome;
        }
        if *phase == Phase::Verify && outcome != 0 && phases.len() > 1 && !cli.keep_going {
            let rest: Vec<Phase> = phases.iter().copied().filter(|p| *p != Phase::Verify).collect();
            let why = format!("verify failed: {} not run (--keep-going runs them anyway)", phases_name(&rest));
            if world.is_root() {
                print_line(&format!("h200-mpibench: {why}"));
            }
            stopped = Some(why);
            break;
        }
    }
    session.telemetry.finish(world)?;
    if let Some(comm) = session.comm.take() {
        comm.destroy(&session.watchdog)?;
    }
    if let (Some(file), Some(why)) = (file, &stopped) {
        file.note_stopped(why)?;
    }
    Ok(code)
}

/// The banner's title: each phase, what it runs on.
fn title(world: &World, on_gpu: bool, plans: &SuitePlans) -> String {
    let mut parts = Vec::new();
    if plans.verify.is_some() {
        parts.push("verify: inventory, health and probes of every GPU, host and link".to_string());
    }
    if plans.sweeps.is_some() {
        parts.push(format!("collective sweeps over {}", if on_gpu { "nccl" } else { "mpi-host" }));
    }
    if let Some(plan) = &plans.sft {
        parts.push(super::sft::title(world, on_gpu, plan));
    }
    if let Some(plan) = &plans.scaling {
        let modes: Vec<&str> = plan.modes.iter().map(|m| m.name()).collect();
        parts.push(format!("{} scaling on sub-worlds of 1 to {} {}", modes.join(" and "), world.size, if on_gpu { "GPUs" } else { "ranks" }));
    }
    parts.join("; then ")
}
