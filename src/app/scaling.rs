//! The scaling phase: after sft, the same training on sub-worlds of growing size (which sizes,
//! and each size's run: train/scaling.rs), one size at a time while the ranks outside it wait
//! at a barrier, so nothing competes. At size 1 every GPU trains at once as a replica of its
//! own: their median is the baseline, and the slowest one is named. Each size's row is printed
//! and written to /scaling as it ends.

use super::session::Session;
use super::sft::{fit, planned_bytes, train, Crew};
use super::Stop;
use h200_mpibench::backend::cuda::Gpu;
use h200_mpibench::cli::scaling::{sweep_plan, ScalingPlan, SWEEP_SIZES_GPU, SWEEP_SIZES_HOST};
use h200_mpibench::cli::SftPlan;
use h200_mpibench::dist::nccl::NcclComm;
use h200_mpibench::dist::phase;
use h200_mpibench::dist::world::{Group, World};
use h200_mpibench::model::layout::Layout;
use h200_mpibench::sweep;
use h200_mpibench::sweep::device_nccl::NcclEngine;
use h200_mpibench::sweep::host_mpi::HostMpiEngine;
use h200_mpibench::telemetry::figures;
use h200_mpibench::train::metrics::StepRecord;
use h200_mpibench::train::run_config::RunConfig;
use h200_mpibench::train::scaling::{self, Measured, Mode, Point, Row, StepsByRank, STEP_FIELDS};
use h200_mpibench::zero::step_model::{predict, Placement, Rates};
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::CommunicatorCollectives;
use std::time::Duration;

/// One size of one mode: its run, or why it cannot have one.
pub struct Slot {
    pub mode: Mode,
    pub size: usize,
    pub run: Result<RunConfig, String>,
}

/// What the checks settled: every rank's host, the ranks per host the sizes are built on (the
/// fewest any host has), the sizes and each mode's slots.
pub struct Sizes {
    hosts: Vec<String>,
    per_host: usize,
    sizes: Vec<usize>,
    slots: Vec<Slot>,
}

/// Collective: each size's run in each mode, or why it is skipped: a strong-scaling global
/// batch that does not divide over the size, or a run that does not fit (the planner's reason,
/// from the first rank of the size it does not fit). The sizes take the ranks as mpirun fills
/// hosts by default, host after host: a larger size is ranks 0 to size − 1.
pub fn check(world: &World, gpu: Option<&Gpu>, sft: &SftPlan, plan: &ScalingPlan) -> Result<Sizes, Stop> {
    let hosts = world.all_gather_string(&world.host);
    let per_host = world.all_gather_f64(&[world.local_size as f64]).into_iter().fold(f64::INFINITY, f64::min) as usize;
    let sizes = scaling::sizes(world.size, per_host);
    let mut slots = Vec::new();
    for &mode in &plan.modes {
        for &size in &sizes {
            let run = scaling::run_at(&sft.run, mode, size, world.size, (plan.steps, plan.warmup_steps));
            let run = match run {
                Ok(run) => {
                    // Every rank is a replica at size 1; otherwise ranks 0..size take part,
                    // those on this host together.
                    let (takes_part, on_host) = match size {
                        1 => (true, world.local_size),
                        _ => (world.rank < size, hosts[..size].iter().filter(|h| **h == world.host).count()),
                    };
                    let fits = if takes_part { fit(gpu, &sft.model, &run, size, on_host) } else { Ok(()) };
                    world.agree(fits).map(|_| run)
                }
                Err(why) => Err(why),
            };
            slots.push(Slot { mode, size, run });
        }
    }
    if plan.sweep {
        let bytes: &[usize] = if gpu.is_some() { &SWEEP_SIZES_GPU } else { &SWEEP_SIZES_HOST };
        super::sweeps::check(world, gpu, "", &sweep_plan(bytes, 0, Duration::from_secs(1)))?;
    }
    Ok(Sizes { hosts, per_host, sizes, slots })
}

pub fn run(session: &mut Session, sft: &SftPlan, plan: &ScalingPlan, checked: &Sizes) -> Result<i32, Stop> {
    let (world, file) = (session.world, session.file);
    let Sizes { hosts, per_host, sizes, slots } = checked;
    let per_host = *per_host;
    let flops_per_token = sft.model.flops_per_token(sft.run.seq);
    let params = Layout::new(&sft.model).parameters() as f64;
    if world.is_root() {
        let modes: Vec<&str> = plan.modes.iter().map(|m| m.name()).collect();
        println!(
            "# scaling ({}): sizes {sizes:?} GPUs, {} steps each ({} warm-up); size 1 runs on every GPU at once, a larger size on ranks 0 to size-1 while the others wait",
            modes.join(", "),
            plan.steps,
            plan.warmup_steps
        );
    }
    let warmup = plan.warmup_steps;
    let counted = move |label: &str| {
        label.rsplit_once(" step ").and_then(|(what, n)| what.starts_with("scaling ").then(|| n.parse::<usize>().ok())).flatten().is_some_and(|n| n > warmup)
    };
    session.telemetry.begin_phase(world, Box::new(counted))?;
    let log = file.map(|f| f.begin_scaling(plan, sizes, per_host, flops_per_token)).transpose()?;
    let (sweep_busbw, wrong) = if plan.sweep { sweep_sizes(session, sizes)? } else { (Vec::new(), 0) };
    let mut rows = Vec::new();
    // Each mode's 1-GPU replicas' step times, [rank][step].
    let mut replicas = Vec::new();
    for &mode in &plan.modes {
        let mut baseline: Option<(usize, Point)> = None;
        let mut rates: Option<Rates> = None;
        for slot in slots.iter().filter(|s| s.mode == mode) {
            let job_ranks: Vec<usize> = (0..if slot.size == 1 { world.size } else { slot.size }).collect();
            let mut span: Vec<&str> = job_ranks.iter().take(slot.size).map(|&r| hosts[r].as_str()).collect();
            span.sort();
            span.dedup();
            let (micro_batch, grad_accum) = slot.run.as_ref().map_or((sft.run.micro_batch, 0), |r| (r.micro_batch, r.grad_accum));
            let planned_memory_bytes = slot.run.as_ref().map_or(0, |r| planned_bytes(&sft.model, r, slot.size));
            let steps = match &slot.run {
                Ok(run) => measure(session, sft, run, slot)?,
                Err(_) => None,
            };
            if !world.is_root() {
                continue;
            }
            let mut predicted = None;
            let measured = match (&slot.run, &steps) {
                (Err(why), _) => Err(why.clone()),
                (Ok(run), Some(steps)) => {
                    let tokens_per_step = (run.micro_batch * run.grad_accum * run.seq) as f64;
                    let point = scaling::point(steps, slot.size, warmup, tokens_per_step, flops_per_token, session.gpu.is_some());
                    // On GPUs the step-time model, calibrated on this mode's 1-GPU point, predicts each size.
                    if session.gpu.is_some() && slot.size == 1 {
                        rates = Some(scaling::rates_from(&point, run, flops_per_token, params));
                    }
                    predicted = rates.as_ref().map(|rates| predict(&sft.model, run, Placement { ranks: slot.size, per_host }, rates).tokens_per_s_per_gpu);
                    let (baseline_ranks, base) = baseline.get_or_insert_with(|| (slot.size, point.clone()));
                    Ok(Measured { efficiency: scaling::efficiency(&point, base), baseline_ranks: *baseline_ranks, point })
                }
                (Ok(_), None) => unreachable!("rank 0 takes part in every size"),
            };
            let row = Row {
                mode,
                ranks: slot.size,
                hosts: span.len(),
                micro_batch,
                grad_accum,
                planned_memory_bytes,
                predicted_tokens_per_s_per_gpu: predicted,
                all_reduce_busbw_gbs: sweep_busbw.iter().find(|(size, _)| *size == slot.size).map(|(_, b)| *b),
                measured,
            };
            if let Some(steps) = steps.as_ref().filter(|_| slot.size == 1) {
                replicas.push((mode, steps.step_s.clone()));
            }
            print!("{}", row.line());
            if let Some(log) = &log {
                log.row(&row, steps.as_ref().map(|s| (s, job_ranks.as_slice())))?;
            }
            rows.push(row);
        }
    }
    let stats = session.telemetry.end_phase(world)?;
    if world.is_root() {
        print!(
            "# scaling table (efficiency: weak, tokens/s/GPU ÷ the smallest size's; strong, speed-up ÷ GPU ratio; predicted: the step-time model \
             calibrated on the 1-GPU point, so close to it there)\n{}",
            scaling::table(&rows)
        );
        let pct = session.cli.straggler_pct;
        for (mode, step_s) in &replicas {
            // The replicas' spread names the slowest GPU (its clock reasons from the phase's telemetry).
            let spread = figures::stragglers(step_s, warmup, pct).lines(hosts, &stats, pct, (&format!("{} 1-GPU replica step", mode.name()), " s"));
            print!("{spread}");
        }
    }
    // As the sweeps: exit code 3 when a check found wrong elements.
    Ok(if wrong == 0 { 0 } else { 3 })
}

/// A sub-world while it is measured: its MPI group (on its members) and, on GPUs at more than
/// one rank, its NCCL communicator.
struct SubWorld {
    group: Option<Group>,
    comm: Option<NcclComm>,
}

/// Collective: the sub-world of `size` ranks (at size 1 every rank its own, else ranks 0 to
/// size − 1), split from the job's MPI and NCCL communicators.
fn enter(session: &Session, size: usize) -> Result<SubWorld, Stop> {
    let world = session.world;
    let color = if size == 1 { Some(world.rank as u32) } else { (world.rank < size).then_some(0) };
    let group = world.split(color);
    let comm = match &session.comm {
        Some(job) if size > 1 => job.split(color, world.rank, &session.watchdog, Duration::from_secs(session.cli.timeout))?,
        _ => None,
    };
    if group.is_none() {
        phase::set(&format!("scaling: waiting while ranks 0 to {} measure", size - 1));
    }
    Ok(SubWorld { group, comm })
}

/// Collective: the sub-world's communicator destroyed, every rank past a barrier that sleeps,
/// the telemetry batches sent (between sizes, where every rank of the job is).
fn leave(session: &mut Session, sub: SubWorld) -> Result<(), Stop> {
    phase::set("scaling: between sizes");
    if let Some(comm) = sub.comm {
        comm.destroy(&session.watchdog)?;
    }
    session.world.quiet_barrier();
    session.telemetry.maybe_flush(session.world)?;
    Ok(())
}

/// Collective: trains `run` on `slot`'s sub-world while the other ranks wait; every
/// participant's step figures on rank 0 (None elsewhere).
fn measure(session: &mut Session, sft: &SftPlan, run: &RunConfig, slot: &Slot) -> Result<Option<StepsByRank>, Stop> {
    let world = session.world;
    let replicas = slot.size == 1;
    if world.is_root() {
        let on = match (replicas, world.size) {
            (true, 1) => "1 GPU".to_string(),
            (true, n) => format!("1 GPU ({n} replicas at once)"),
            (false, _) => format!("{} GPUs", slot.size),
        };
        println!("# scaling {}, {on}: micro-batch {} × accumulation {} per GPU, {} steps", slot.mode.name(), run.micro_batch, run.grad_accum, run.steps);
    }
    let sub = enter(session, slot.size)?;
    let mut gathered = None;
    if let Some(group) = &sub.group {
        let (cli, watchdog) = (session.cli, &session.watchdog);
        let timeout = Duration::from_secs(cli.timeout);
        let label = format!("scaling {} {}", slot.mode.name(), slot.size);
        if let Some(gpu) = &session.gpu {
            gpu.reset_peak();
        }
        phase::set(&format!("{label}: building the model"));
        let crew = Crew { gpu: session.gpu.as_ref(), comm: sub.comm.as_ref(), ranks: group.comm() };
        let mut ready = || watchdog.arm(&format!("{label} step 1"), timeout);
        let mut on_step = |s: &StepRecord| watchdog.arm(&format!("{label} step {}", s.step + 1), timeout);
        let (records, _) = train(&crew, sft, run, cli, &mut ready, &mut on_step)?;
        watchdog.disarm();
        // The participants: every replica (the job) at size 1, else the sub-world.
        gathered = Some(gather(if replicas { world.comm() } else { group.comm() }, &records));
    }
    leave(session, sub)?;
    Ok(gathered.filter(|_| world.is_root()).map(|columns| StepsByRank::from_gathered(columns, run.steps)))
}

/// Collective: --scaling-sweep's all_reduce on each sub-world of more than one rank while the
/// others wait, each size's series in /scaling/sweep_<size>; on rank 0 the out-of-place busbw
/// at the largest message per size; on every rank the wrong elements found.
fn sweep_sizes(session: &mut Session, sizes: &[usize]) -> Result<(Vec<(usize, f64)>, u64), Stop> {
    let world = session.world;
    let bytes: &[usize] = if session.gpu.is_some() { &SWEEP_SIZES_GPU } else { &SWEEP_SIZES_HOST };
    let plan = sweep_plan(bytes, session.cli.seed, Duration::from_secs(session.cli.timeout));
    let (mut busbw, mut wrong) = (Vec::new(), 0);
    for &size in sizes.iter().filter(|&&s| s > 1) {
        if world.is_root() {
            println!("# scaling sweep on {size} ranks");
        }
        let sub = enter(session, size)?;
        if let Some(group) = &sub.group {
            let under = format!("scaling/sweep_{size}");
            let results = session.file.map(|f| (f, under.as_str()));
            let outcome = match (&session.gpu, &sub.comm) {
                (Some(gpu), Some(comm)) => sweep::run_all(group, &mut NcclEngine::new(group, gpu, comm)?, &plan, &session.watchdog, results, None)?,
                _ => sweep::run_all(group, &mut HostMpiEngine::new(group), &plan, &session.watchdog, results, None)?,
            };
            // Summed over the sub-world's ranks: the same on each of them, and rank 0 is in every one.
            wrong += outcome.wrong;
            busbw.extend(outcome.largest_size_busbw_gbs.first().map(|&b| (size, b)));
        }
        leave(session, sub)?;
    }
    Ok((busbw, world.sum_u64(if world.is_root() { wrong } else { 0 })))
}

/// Collective over `comm`: each of STEP_FIELDS' columns, every rank's steps one rank after
/// another.
fn gather(comm: &SimpleCommunicator, records: &[StepRecord]) -> Vec<Vec<f64>> {
    STEP_FIELDS
        .iter()
        .map(|(_, field)| {
            let mine: Vec<f64> = records.iter().map(field).collect();
            let mut all = vec![0.0; mine.len() * comm.size() as usize];
            comm.all_gather_into(&mine[..], &mut all[..]);
            all
        })
        .collect()
}
