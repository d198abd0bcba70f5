//! `h200-mpibench verify`: every rank takes its inventory and runs its probes (the GPU ones on
//! the GPU path, the host and MPI ones on both), rank 0 judges them all, prints the table and
//! one line per failure, and writes /verify; exit code 5 when anything failed.

use super::session::Session;
use super::{check_gpu_memory, check_host_memory, Stop};
use h200_mpibench::backend::cuda::{self, Gpu};
use h200_mpibench::cli::verify::{Level, VerifyPlan};
use h200_mpibench::dist::world::{print_line, World};
use h200_mpibench::dist::{nccl, phase};
use h200_mpibench::results::verify::VerifySettings;
use h200_mpibench::verify::figure::{Subject, GEMM_BF16};
use h200_mpibench::verify::gpu_links::{self, Links};
use h200_mpibench::verify::gpu_probes::{self, gemm_flop};
use h200_mpibench::verify::hosts::Hosts;
use h200_mpibench::verify::outcome::{Outcome, RankReport};
use h200_mpibench::verify::{burn, health, host_probes, inventory, mpi_pairs};
use std::time::{Duration, Instant};

/// The exit code of a run in which a component failed verification.
pub const FAILED_VERIFICATION: i32 = 5;

/// verify's host buffers: the memory copy's two and the MPI ping-pong's.
fn host_need() -> Option<u64> {
    Some(2 * host_probes::MEMCPY_BYTES as u64 + 2 * mpi_pairs::BANDWIDTH_BYTES as u64)
}

/// Collective: refuses, before anything runs, probes this rank's GPU or host cannot hold;
/// returns the banner's note on the host path.
pub fn check(world: &World, gpu: Option<&Gpu>) -> Result<Option<String>, Stop> {
    check_host_memory(world, host_need(), "verify's host buffers", "fewer ranks per host")?;
    match gpu {
        Some(gpu) => {
            let need = gpu_probes::gpu_bytes() + 2 * gpu_links::ALL_REDUCE_BYTES as u64;
            check_gpu_memory(world, gpu, Some(need), "verify's probe buffers", "free the GPU: another process holds its memory")?;
            Ok(None)
        }
        None => Ok(Some("verify checks the hosts and MPI only".to_string())),
    }
}

pub fn run(s: &mut Session, plan: &VerifyPlan) -> Result<i32, Stop> {
    let started = Instant::now();
    let (world, cli) = (s.world, s.cli);
    let repeat = plan.fault.probe_repeat(world.rank);
    let mut mine = RankReport { inventory: inventory::host(&world.host, &World::mpi_library_version()), ..Default::default() };
    match &s.gpu {
        Some(gpu) => {
            let (cuda_version, nccl_version) = (cuda::driver_cuda_version(), nccl::version());
            if let Err(e) = inventory::add_gpu(&mut mine.inventory, &gpu.pci_bus_id(), gpu.ordinal, &cuda_version, &nccl_version) {
                mine.health.push(format!("nvml: cannot read the GPU's inventory and health: {e:#}"));
            }
            // Read at idle, before any probe loads the GPU.
            mine.health.extend(health::failures(&mine.inventory, 0));
        }
        None => mine.skipped.push(format!("GPU inventory, health and probes, GPU-to-GPU copies and NCCL: {}", s.why_no_gpu)),
    }
    s.telemetry.begin_phase(world, Box::new(|p| p.starts_with("verify")))?;
    let hosts = Hosts::gather(world);
    phase::set("verify host memory");
    mine.measurements.push(host_probes::memcpy(world, &hosts, repeat));
    s.telemetry.flush(world)?;
    if s.gpu.is_some() {
        gpu_phases(s, plan, &hosts, &mut mine)?;
    }
    phase::set("verify mpi");
    mine.measurements.extend(mpi_pairs::probe(world, &hosts));
    let stats = s.telemetry.end_phase(world)?;

    let reports = world.gather_string_to_root(&serde_json::to_string(&mine).map_err(anyhow::Error::from)?);
    let mut failed = 0;
    if world.is_root() {
        let mut reports: Vec<RankReport> = reports
            .iter()
            .enumerate()
            .map(|(rank, json)| serde_json::from_str(json).map_err(|e| anyhow::anyhow!("rank {rank}'s verify report: {e}")))
            .collect::<Result<_, _>>()?;
        for (report, stat) in reports.iter_mut().zip(&stats) {
            report.health.extend(health::xid_failure(stat.xid_events));
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
        if let Some(file) = s.file {
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
fn gpu_phases(s: &mut Session, plan: &VerifyPlan, hosts: &Hosts, mine: &mut RankReport) -> Result<(), Stop> {
    let world = s.world;
    let repeat = plan.fault.probe_repeat(world.rank);
    let timeout = Duration::from_secs(s.cli.timeout);
    let (Some(gpu), Some(comm)) = (&s.gpu, &s.comm) else { return Ok(()) };
    let (watchdog, telemetry) = (&s.watchdog, &mut s.telemetry);
    let subject = Subject { label: format!("{} GPU {} ({})", world.host, gpu.ordinal, gpu.uuid()), ranks: vec![world.rank] };
    let (found, load) = gpu_probes::run(gpu, &subject, s.cli.seed, repeat)?;
    let gemm_tflops = found.measurements.iter().find(|m| m.kind == GEMM_BF16.name).map_or(f64::NAN, |m| m.value());
    mine.measurements.extend(found.measurements);
    if let Some(wrong) = found.wrong_sum {
        mine.health.push(format!("read_sum: {wrong}: this GPU computes wrong"));
    }
    telemetry.flush(world)?;

    let links = Links { world, hosts, gpu, comm, watchdog, timeout, repeat };
    for probe in [gpu_links::peer_copies, gpu_links::host_all_reduce, gpu_links::host_pair_all_reduce] {
        match probe(&links)? {
            Ok(measured) => mine.measurements.extend(measured),
            Err(why) => mine.skipped.push(why),
        }
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
