//! The collective sweeps (`--suite nccl`): every chosen collective × dtype × op over the size
//! schedule, printed as nccl-tests prints them and written series by series to the results file.

pub mod device_nccl;
pub mod dtype;
pub mod engine;
pub mod host_mpi;
pub mod minifloat;
pub mod pattern;
pub mod redop;
pub mod runner;
pub mod schedule;
pub mod table;

use crate::cli::SweepPlan;
use crate::dist::watchdog::Watchdog;
use crate::dist::world::{Group, World};
use crate::results::hdf5_file::{ResultsFile, SeriesEnergy, SeriesSettings};
use crate::telemetry::collect::Telemetry;
use crate::telemetry::figures;
use anyhow::Result;
use engine::Engine;
use redop::RedOp;
use runner::{Measurement, Sweep};
use std::io::Write;
use std::time::Instant;

/// The largest send (and receive) buffer any series of the plan needs, bytes per rank.
pub fn largest_buffer(plan: &SweepPlan, ranks: usize) -> usize {
    let series = plan.collectives.iter().flat_map(|&c| plan.dtypes.iter().map(move |&d| (c, d)));
    series.map(|(c, d)| runner::capacity(c, d, &plan.settings.sizes, ranks)).max().unwrap_or(0)
}

/// What the sweeps found: wrong elements over all series and ranks, and per rank each row's
/// launch time over the median over ranks of that row (the straggler measure).
pub struct Outcome {
    pub wrong: u64,
    pub launch_ratio_per_rank: Vec<Vec<f64>>,
    /// Per series in the order run, the out-of-place busbw at its largest size.
    pub largest_size_busbw_gbs: Vec<f64>,
}

/// Runs the whole plan over `world` (the job's ranks, or a sub-world's). Each series goes to
/// `results`' file under its group path (`nccl`) with its energy and wall time per rank, and
/// its telemetry to rank 0 over the job's World as it ends; without `telemetry` (a sub-world,
/// whose ranks cannot send it alone: the sends are collective over the job) neither is read.
pub fn run_all(
    world: &Group,
    engine: &mut dyn Engine,
    plan: &SweepPlan,
    watchdog: &Watchdog,
    results: Option<(&ResultsFile, &str)>,
    mut telemetry: Option<(&mut Telemetry, &World)>,
) -> Result<Outcome> {
    let s = &plan.settings;
    let engine_name = engine.name();
    let recorded = SeriesSettings {
        iters: s.iters,
        warmup_iters: s.warmup_iters,
        check_iters: s.check_iters,
        graph_launches: s.graph_launches,
        aggregate: ["rank0", "avg", "min", "max"][s.aggregate as usize],
        engine: engine_name,
    };
    let mut sweep = Sweep { world, engine, settings: s, watchdog, fault: plan.fault };
    let (mut wrong, mut checked, mut busbw_sum, mut halves) = (0u64, 0usize, 0f64, 0usize);
    let mut ratios = vec![Vec::new(); world.size];
    let mut largest_size_busbw_gbs = Vec::new();
    for &collective in &plan.collectives {
        if world.is_root() {
            println!("#\n# {collective}\n{}", table::header());
        }
        for &dtype in &plan.dtypes {
            // Ops matter only where the collective reduces.
            let ops: &[RedOp] = if collective.reduces() { &plan.ops } else { &[RedOp::Sum] };
            for &op in ops {
                let op_name = collective.reduces().then(|| op.name());
                let root = collective.has_root().then_some(s.root);
                let mut pending: Option<Measurement> = None;
                let energy_now = |t: &mut Option<(&mut Telemetry, &World)>| t.as_mut().map_or(f64::NAN, |(t, _)| t.energy_j());
                let (energy_at_start, start) = (energy_now(&mut telemetry), Instant::now());
                let mut telemetry_error = None;
                // Every rank finishes each row together: the telemetry batches may go then
                // (maybe_flush is collective), so a long series loses at most FLUSH_EVERY.
                let mut on_row = |m: &Measurement| {
                    if let Some(Err(e)) = telemetry.as_mut().map(|(t, job)| t.maybe_flush(job)) {
                        telemetry_error.get_or_insert(e);
                    }
                    if !world.is_root() {
                        return;
                    }
                    match pending.take() {
                        None => pending = Some(m.clone()),
                        Some(first) => {
                            println!("{}{}{}", table::row_start(&first, dtype.name(), op_name, root), table::row_half(&first), table::row_half(m));
                            let _ = std::io::stdout().flush();
                        }
                    }
                };
                let series = sweep.run_series(collective, dtype, op, &mut on_row)?;
                if let Some(e) = telemetry_error {
                    return Err(e.context("cannot send the telemetry to rank 0"));
                }
                let mine = [energy_now(&mut telemetry) - energy_at_start, start.elapsed().as_secs_f64()];
                if let Some((t, job)) = telemetry.as_mut() {
                    t.flush(job)?;
                }
                let energy = SeriesEnergy::from_ranks(&world.all_gather_f64(&mine));
                if world.is_root() && energy.total_j().is_finite() {
                    println!("#  energy {:.1} J over {} rank(s), mean power {:.0} W per GPU", energy.total_j(), world.size, energy.mean_power_w());
                }
                for row in &series.rows {
                    let median = figures::median(&row.rank_time_us);
                    if median > 0.0 {
                        ratios.iter_mut().zip(&row.rank_time_us).for_each(|(r, t)| r.push(t / median));
                    }
                    wrong += row.wrong.unwrap_or(0);
                    checked += row.wrong.is_some() as usize;
                    busbw_sum += row.busbw_gbs;
                    halves += 1;
                }
                largest_size_busbw_gbs.extend(series.rows.iter().rfind(|r| !r.in_place).map(|r| r.busbw_gbs));
                if let Some((file, under)) = results {
                    file.write_series(under, &series, &recorded, &energy)?;
                }
            }
        }
    }
    if world.is_root() {
        println!("{}", table::footer((checked > 0).then_some(wrong), busbw_sum, halves));
    }
    Ok(Outcome { wrong, launch_ratio_per_rank: ratios, largest_size_busbw_gbs })
}
