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
use crate::dist::world::World;
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
}

/// Runs the whole plan. Each series' energy and wall time per rank go with it to the file,
/// and its telemetry to rank 0 as it ends.
pub fn run_all(
    world: &World,
    engine: &mut dyn Engine,
    plan: &SweepPlan,
    watchdog: &Watchdog,
    results: Option<&ResultsFile>,
    telemetry: &mut Telemetry,
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
                let (energy_at_start, start) = (telemetry.energy_j(), Instant::now());
                let mut telemetry_error = None;
                // Every rank finishes each row together: the telemetry batches may go then
                // (maybe_flush is collective), so a long series loses at most FLUSH_EVERY.
                let mut on_row = |m: &Measurement| {
                    if let Err(e) = telemetry.maybe_flush(world) {
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
                let mine = [telemetry.energy_j() - energy_at_start, start.elapsed().as_secs_f64()];
                telemetry.flush(world)?;
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
                if let Some(file) = results {
                    file.write_series(&series, &recorded, &energy)?;
                }
            }
        }
    }
    if world.is_root() {
        println!("{}", table::footer((checked > 0).then_some(wrong), busbw_sum, halves));
    }
    Ok(Outcome { wrong, launch_ratio_per_rank: ratios })
}
