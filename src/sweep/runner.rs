//! One sweep series (a collective, dtype and op over all sizes) with nccl-tests' rules:
//! warm-up of every size first, then per size an out-of-place and an in-place timed batch of
//! `-n` launches walking through the buffers, times averaged over ranks per `-a`, then `-c`
//! checks on fresh pattern data, wrong elements summed over ranks.

use super::dtype::DType;
use super::engine::{Engine, Launch};
use super::pattern::{Mapping, Pattern};
use super::redop::RedOp;
use crate::dist::collective::Collective;
use crate::dist::fault::Fault;
use crate::dist::watchdog::Watchdog;
use crate::dist::world::Group;
use anyhow::{Context, Result};
use std::time::Duration;

/// How the reported time is taken over ranks (nccl-tests' `-a`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aggregate {
    Rank0 = 0,
    Avg = 1,
    Min = 2,
    Max = 3,
}

#[derive(Clone, Debug)]
pub struct SweepSettings {
    pub sizes: Vec<usize>,
    pub iters: usize,
    pub warmup_iters: usize,
    pub check_iters: usize,
    pub graph_launches: usize,
    pub aggregate: Aggregate,
    pub root: usize,
    pub seed: u64,
    /// Longest a single batch may take before the watchdog ends the job.
    pub timeout: Duration,
}

/// One row half: a size run out-of-place or in-place.
#[derive(Clone, Debug)]
pub struct Measurement {
    pub bytes: usize,
    pub count: usize,
    pub in_place: bool,
    /// Per-rank mean time of a launch: min, avg, max over ranks, and the `-a` pick.
    pub time_us_min: f64,
    pub time_us_avg: f64,
    pub time_us_max: f64,
    pub time_us: f64,
    /// Each rank's mean launch time (what min/avg/max and the `-a` pick are taken over).
    pub rank_time_us: Vec<f64>,
    pub algbw_gbs: f64,
    pub busbw_gbs: f64,
    /// Wrong elements over all ranks and checks; None where the result is not checked
    /// (`-c 0`, and in-place alltoall and sendrecv, as nccl-tests).
    pub wrong: Option<u64>,
    /// Every rank's per-launch times from a second batch with a timer per launch
    /// (rank-major: ranks × launches), microseconds.
    pub iteration_us: Vec<f64>,
}

pub struct Series {
    pub collective: Collective,
    pub dtype: DType,
    /// The reduction, for reducing collectives.
    pub op: Option<RedOp>,
    /// The root, for rooted collectives.
    pub root: Option<usize>,
    pub ranks: usize,
    pub rows: Vec<Measurement>,
}

impl Series {
    /// Launches behind each `iteration_us` entry per rank: `-n`, or the graph launch count.
    pub fn launches_per_row(&self) -> usize {
        self.rows.first().map_or(0, |r| r.iteration_us.len() / self.ranks.max(1))
    }
}

pub struct Sweep<'a> {
    pub world: &'a Group,
    pub engine: &'a mut dyn Engine,
    pub settings: &'a SweepSettings,
    pub watchdog: &'a Watchdog,
    pub fault: Fault,
}

impl Sweep<'_> {
    /// Runs every size of one series; `on_row` sees each measurement as it completes.
    pub fn run_series(&mut self, collective: Collective, dtype: DType, op: RedOp, on_row: &mut dyn FnMut(&Measurement)) -> Result<Series> {
        let ranks = self.world.size;
        let s = self.settings;
        let launch_at =
            |bytes: usize, in_place: bool| Launch { collective, dtype, op, root: s.root, counts: collective.counts(bytes, dtype.size(), ranks), in_place };
        let capacity = capacity(collective, dtype, &s.sizes, ranks);
        tracing::debug!(%collective, %dtype, %op, capacity, "series start");
        self.engine.allocate(capacity.max(1))?;

        self.watch(&format!("{collective} {dtype} warm-up"));
        for &bytes in &s.sizes {
            for in_place in [false, true] {
                let launch = launch_at(bytes, in_place);
                self.engine
                    .run(&launch, &shifts(&launch, capacity, s.warmup_iters), 0, false)
                    .with_context(|| format!("{collective} {dtype} warm-up at {bytes} B"))?;
            }
        }
        let mut rows = Vec::new();
        for &bytes in &s.sizes {
            for in_place in [false, true] {
                let launch = launch_at(bytes, in_place);
                self.watch(&format!("{collective} {dtype} {bytes} B"));
                let place = if in_place { "in-place" } else { "out-of-place" };
                let row = self.measure(&launch, capacity).with_context(|| format!("{collective} {dtype} {op} {place} at {bytes} B"))?;
                on_row(&row);
                rows.push(row);
            }
        }
        self.watchdog.disarm();
        Ok(Series { collective, dtype, op: collective.reduces().then_some(op), root: collective.has_root().then_some(s.root), ranks, rows })
    }

    fn watch(&self, phase: &str) {
        self.watchdog.arm(phase, self.settings.timeout);
    }

    fn measure(&mut self, launch: &Launch, capacity: usize) -> Result<Measurement> {
        let s = self.settings;
        let world = self.world;
        let size = launch.dtype.size();
        let batch = shifts(launch, capacity, s.iters);
        if self.fault == Fault::Stall(world.rank) {
            loop {
                std::thread::park();
            }
        }
        world.barrier();
        let timing = self.engine.run(launch, &batch, s.graph_launches, false)?;
        let means = world.all_gather_f64(&[timing.mean]);
        // A second batch with a timer per launch, for the distribution (p50, p99).
        world.barrier();
        let sampled = self.engine.run(launch, &batch, s.graph_launches, true)?;
        let iteration_us: Vec<f64> = world.all_gather_f64(&sampled.per_launch).iter().map(|t| t * 1e6).collect();
        let (min, max) = means.iter().fold((f64::MAX, 0f64), |(lo, hi), &t| (lo.min(t), hi.max(t)));
        let avg = means.iter().sum::<f64>() / means.len() as f64;
        let reported = match s.aggregate {
            Aggregate::Rank0 => means[0],
            Aggregate::Avg => avg,
            Aggregate::Min => min,
            Aggregate::Max => max,
        };
        let algbw = launch.collective.algbw_gbs(launch.counts.param, size, world.size, reported);
        let checked = s.check_iters > 0 && (!launch.in_place || launch.collective.in_place_is_checked());
        let wrong = if checked { Some(self.check(launch)?) } else { None };
        Ok(Measurement {
            bytes: launch.footprint(),
            count: launch.counts.param,
            in_place: launch.in_place,
            time_us_min: min * 1e6,
            time_us_avg: avg * 1e6,
            time_us_max: max * 1e6,
            time_us: reported * 1e6,
            rank_time_us: means.iter().map(|t| t * 1e6).collect(),
            algbw_gbs: algbw,
            busbw_gbs: algbw * launch.collective.busbw_factor(world.size),
            wrong,
            iteration_us,
        })
    }

    /// `-c` rounds of fresh data, one launch, exact comparison; wrong elements of all ranks.
    fn check(&mut self, launch: &Launch) -> Result<u64> {
        let world = self.world;
        let mut wrong = 0;
        for round in 0..self.settings.check_iters {
            let pattern = Pattern {
                dtype: launch.dtype,
                op: if launch.collective.reduces() { launch.op } else { RedOp::Sum },
                ranks: world.size,
                seed: self.settings.seed.wrapping_add(round as u64),
            };
            let mapping = Mapping::of(launch.collective, &launch.counts, world.rank, world.size, launch.root);
            self.engine.fill(launch, &pattern)?;
            world.barrier();
            self.engine.run(launch, &[0], 0, false)?;
            if self.fault == Fault::Corrupt(world.rank) {
                self.engine.corrupt_output(launch)?;
            }
            wrong += world.sum_u64(self.engine.count_wrong(launch, &pattern, mapping)?);
        }
        Ok(wrong)
    }
}

/// Bytes each of the send and receive buffers holds for a series: its largest footprint.
pub fn capacity(collective: Collective, dtype: DType, sizes: &[usize], ranks: usize) -> usize {
    sizes.iter().map(|&b| collective.counts(b, dtype.size(), ranks).bytes(dtype.size())).max().unwrap_or(0)
}

/// Byte shift of each launch of a batch: nccl-tests steps through the buffer in units of
/// the row's footprint so consecutive launches touch different memory.
fn shifts(launch: &Launch, capacity: usize, iters: usize) -> Vec<usize> {
    let footprint = launch.footprint();
    let steps = capacity.checked_div(footprint).unwrap_or(1).max(1);
    (0..iters).map(|i| footprint * (i % steps)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shifts_walk_the_buffer_and_stay_inside() {
        let launch = Launch {
            collective: Collective::AllReduce,
            dtype: DType::Float32,
            op: RedOp::Sum,
            root: 0,
            counts: Collective::AllReduce.counts(1024, 4, 2),
            in_place: false,
        };
        assert_eq!(shifts(&launch, 4096, 6), vec![0, 1024, 2048, 3072, 0, 1024]);
        assert_eq!(shifts(&launch, 1024, 3), vec![0, 0, 0]);
        assert!(shifts(&launch, 4000, 20).iter().all(|&s| s + 1024 <= 4000));
    }
}
