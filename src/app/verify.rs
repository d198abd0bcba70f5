//! `h200-mpibench verify`: every rank takes its inventory and runs its probes (the GPU ones on
//! the GPU path, the host and MPI ones on both), rank 0 judges them all, prints the table and
//! one line per failure, and writes /verify; exit code 5 when anything failed.

use super::{announce, check_gpu_memory, check_host_memory, choose_path, open_gpu, record_gpu_software, Path, Stop};
use h200_mpibench::backend::cuda::Gpu;
use h200_mpibench::cli::verify::{Level, VerifyPlan};
use h200_mpibench::cli::Cli;
use h200_mpibench::dist::nccl::NcclComm;
use h200_mpibench::dist::phase;
use h200_mpibench::dist::watchdog::Watchdog;
use h200_mpibench::dist::world::{print_line, World};
use h200_mpibench::results::hdf5_file::ResultsFile;
use h200_mpibench::results::metadata::{GpuIdentity, RunMetadata};
use h200_mpibench::results::verify::VerifySettings;
use h200_mpibench::telemetry::collect::{SinkOpener, Telemetry};
use h200_mpibench::verify::figure::{Subject, GEMM_BF16};
use h200_mpibench::verify::gpu_links::{self, Hosts};
use h200_mpibench::verify::gpu_probes::{self, gemm_flop};
use h200_mpibench::verify::outcome::{Outcome, RankReport};
use h200_mpibench::verify::{burn, health, host_probes, inventory, mpi_pairs};
use std::time::{Duration, Instant};

/// The exit code of a run in which a component failed verification.
pub const FAILED_VERIFICATION: i32 = 5;

const TITLE: &str = "verify: inventory, health and probes of every GPU, host and link";

pub fn run(world: &World, cli: &Cli, plan: &VerifyPlan, file: Option<&ResultsFile>, meta: &mut RunMetadata) -> Result<i32, Stop> {
    let started = Instant::now();
    let watchdog = Watchdog::start(world.who());
    let repeat = plan.fault.probe_repeat(world.rank);
    let mut mine = RankReport { inventory: inventory::host(&world.host, &meta.mpi_version), ..Default::default() };
    let host_need = Some(2 * host_probes::MEMCPY_BYTES as u64 + 2 * mpi_pairs::BANDWIDTH_BYTES as u64);
    let (gpu, why_no_gpu) = match choose_path(world, cli.backend)? {
        Path::Gpu { ordinal } => {
            let gpu = open_gpu(world, ordinal)?;
            let need = gpu_probes::gpu_bytes() + 2 * gpu_links::ALL_REDUCE_BYTES as u64;
            check_gpu_memory(world, &gpu, Some(need), "verify's probe buffers", "free the GPU: another process holds its memory")?;
            check_host_memory(world, host_need, "verify's host buffers", "fewer ranks per host")?;
            record_gpu_software(meta, true);
            meta.engine = "cuda".into();
            if let Err(e) = inventory::add_gpu(&mut mine.inventory, &gpu.pci_bus_id(), gpu.ordinal, &meta.cuda_version, &meta.nccl_version) {
                mine.health.push(format!("nvml: cannot read the GPU's inventory and health: {e:#}"));
            }
            // Read at idle, before any probe loads the GPU.
            mine.health.extend(health::failures(&mine.inventory, 0));
            announce(world, file, meta, &gpu.identity(), TITLE, None)?;
            (Some(gpu), String::new())
        }
        Path::Host { reason } => {
            check_host_memory(world, host_need, "verify's host buffers", "fewer ranks per host")?;
            meta.engine = "mpi-host".into();
            mine.skipped.push(format!("GPU inventory, health and probes, GPU-to-GPU copies and NCCL: {reason}"));
            let note = format!("no GPU path ({reason}): verifying the hosts and MPI only");
            announce(world, file, meta, &GpuIdentity::none(), TITLE, Some(&note))?;
            (None, reason)
        }
    };
    let pci = gpu.as_ref().map(|g| g.pci_bus_id());
    let sink = file.map(|f| f as &dyn SinkOpener);
    let mut telemetry = Telemetry::start(world, cli.telemetry_ms, pci.as_deref(), &why_no_gpu, sink, Box::new(|p| p.starts_with("verify")))?;

    phase::set("verify host memory");
    mine.measurements.push(host_probes::memcpy(world, repeat));
    telemetry.flush(world)?;
    if let Some(gpu) = &gpu {
        gpu_phases(world, cli, plan, gpu, &watchdog, &mut telemetry, &mut mine)?;
    }
    phase::set("verify mpi");
    mine.measurements.extend(mpi_pairs::probe(world));
    let stats = telemetry.finish(world)?;

    let reports = world.gather_string_to_root(&serde_json::to_string(&mine).map_err(anyhow::Error::from)?);
    let mut failed = 0;
    if world.is_root() {
        let mut reports: Vec<RankReport> = reports
            .iter()
            .enumerate()
            .map(|(rank, json)| serde_json::from_str(json).map_err(|e| anyhow::anyhow!("rank {rank}'s verify report: {e}")))
            .collect::<Result<_, _>>()?;
        for (report, s) in reports.iter_mut().zip(&stats) {
            report.health.extend(health::failures(&Default::default(), s.xid_events));
        }
        let outcome = Outcome::judge(reports, plan.tolerances, plan.reference.as_ref());
        print!("{}", outcome.table(plan.tolerances));
        for (rank, r) in outcome.reports.iter().enumerate() {
            if let Some(b) = &r.burn {
                println!("# burn-in of rank {rank}, {} s: {}", b.windows.len(), b.drift().line());
            }
        }
        for line in outcome.failure_lines() {
            print_line(&format!("h200-mpibench: verify FAILED: {line}"));
        }
        if let Some(file) = file {
            let level = match plan.level {
                Level::Quick => "quick",
                Level::Long => "long",
            };
            file.write_verify(&outcome, &VerifySettings { level, tolerances: plan.tolerances, burn_s: plan.burn_s, seed: cli.seed })?;
        }
        let (figures, ranks) = outcome.failed();
        failed = figures + ranks;
        println!("# verify took {:.1} s", started.elapsed().as_secs_f64());
    }
    Ok(if world.sum_u64(failed as u64) > 0 { FAILED_VERIFICATION } else { 0 })
}

/// The GPU's probes, its host's links (GPU-to-GPU copies, NCCL all_reduce inside the host) and,
/// with --level long, the burn-in: each phase's telemetry flushed as it ends.
fn gpu_phases(
    world: &World,
    cli: &Cli,
    plan: &VerifyPlan,
    gpu: &Gpu,
    watchdog: &Watchdog,
    telemetry: &mut Telemetry,
    mine: &mut RankReport,
) -> Result<(), Stop> {
    let repeat = plan.fault.probe_repeat(world.rank);
    let timeout = Duration::from_secs(cli.timeout);
    let subject = Subject { label: format!("{} GPU {} ({})", world.host, gpu.ordinal, gpu.uuid()), ranks: vec![world.rank] };
    let (found, load) = gpu_probes::run(gpu, &subject, cli.seed, repeat)?;
    let gemm_tflops = found.measurements.iter().find(|m| m.kind == GEMM_BF16.name).map_or(f64::NAN, |m| m.value());
    mine.measurements.extend(found.measurements);
    if let Some(wrong) = found.wrong_sum {
        mine.health.push(format!("read_sum: {wrong}: this GPU computes wrong"));
    }
    telemetry.flush(world)?;

    let hosts = Hosts::gather(world);
    match gpu_links::peer_copies(world, &hosts, gpu, repeat)? {
        Ok(copies) => mine.measurements.extend(copies),
        Err(why) => mine.skipped.push(why),
    }
    // NCCL takes the thread's current GPU: this rank's.
    gpu.ctx.bind_to_thread().map_err(anyhow::Error::from)?;
    let comm = NcclComm::bootstrap(world, watchdog, timeout)?;
    match gpu_links::host_all_reduce(world, &hosts, gpu, &comm, watchdog, timeout, repeat)? {
        Ok(measured) => mine.measurements.extend(measured),
        Err(why) => mine.skipped.push(why),
    }
    match gpu_links::host_pair_all_reduce(world, &hosts, gpu, &comm, watchdog, timeout, repeat)? {
        Ok(measured) => mine.measurements.extend(measured),
        Err(why) => mine.skipped.push(why),
    }
    telemetry.flush(world)?;

    if plan.burn_s > 0 {
        let gemm_s = gemm_flop() / 1e12 / gemm_tflops;
        let burned = burn::run(gpu, &load, gemm_s, plan.burn_s, repeat, &mut || telemetry.maybe_flush(world))?;
        mine.measurements.push(burned.measurement(subject));
        let drift = burned.drift();
        let bad = health::bad_throttle(drift.throttled.iter().map(|(name, _)| *name));
        if !bad.is_empty() {
            mine.health.push(format!("burn-in throttle_reasons {}: the GPU slowed itself under load ({})", bad.join(","), drift.line()));
        }
        mine.burn = Some(burned);
        telemetry.flush(world)?;
    }
    Ok(())
}
