//! One rank's telemetry for the length of a suite: its sampler, an energy meter of its own for
//! the step and series boundaries, and the batches: every rank sends what it sampled to rank 0
//! at each phase end (`flush`) and at least every FLUSH_EVERY (`maybe_flush`, rank 0's clock
//! deciding for all), where the rows go to /telemetry, each event is printed as one warning
//! line, and the measured samples are summed up per rank (figures.rs).

use super::clock::RunClock;
use super::figures::RankStats;
use super::sample::Sample;
use super::sampler::{Event, Sampler};
use super::source::{HostSource, NvmlSource, Source, PCIE_PERIOD_MS};
use crate::dist::world::{print_line, World};
use anyhow::{Context, Result};
use std::time::{Duration, Instant};

/// The longest a batch waits on its rank: a killed run loses at most this much.
pub const FLUSH_EVERY: Duration = Duration::from_secs(10);

/// Where rank 0 keeps the rows: results/telemetry.rs's /telemetry tables.
pub trait Sink {
    fn sample(&self, rank: usize, s: &Sample) -> Result<bool>;
    fn event(&self, rank: usize, host: &str, e: &Event) -> Result<bool>;
    fn flush(&self) -> Result<()>;
    /// Each rank's figures, at the end.
    fn finish(&self, stats: &[RankStats]) -> Result<()>;
}

/// What opens rank 0's sink: the results file.
pub trait SinkOpener {
    /// Sampling every `period_ms`; `sources[rank]` says what each rank samples.
    fn open_telemetry(&self, period_ms: u64, sources: &[String]) -> Result<Box<dyn Sink>>;
}

/// One rank's batch as it travels to rank 0.
#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Batch {
    samples: Vec<Sample>,
    events: Vec<Event>,
}

/// The health counters whose rise during the run is worth a warning line each.
const HEALTH: [&str; 6] =
    ["ecc_corrected", "ecc_uncorrected", "remapped_rows_corrected", "remapped_rows_uncorrected", "remapped_rows_pending", "remapped_rows_failed"];

/// Rank 0's side: the table, every rank's host, each rank's measured statistics (of the phase
/// running, and of the whole run) and the last value of its health counters.
struct Collector {
    log: Option<Box<dyn Sink>>,
    hosts: Vec<String>,
    phase_stats: Vec<RankStats>,
    run_stats: Vec<RankStats>,
    health: Vec<[f64; HEALTH.len()]>,
}

pub struct Telemetry {
    sampler: Option<Sampler>,
    meter: Option<Box<dyn Source>>,
    collector: Option<Collector>,
    last_flush: Instant,
    /// Which samples of the phase running count in the figures (e.g. SFT steps after the
    /// warm-up), by the phase they name.
    measured: Box<dyn Fn(&str) -> bool>,
}

/// This rank's source: NVML for its GPU (`pci_bus_id`), else the process alone; the sampler's
/// has the XID event set and, at `period_ms` of PCIE_PERIOD_MS or more, PCIe.
fn source(pci_bus_id: Option<&str>, why_none: &str, sampler: Option<u64>) -> Box<dyn Source> {
    let (xid, pcie) = (sampler.is_some(), sampler.is_some_and(|ms| ms >= PCIE_PERIOD_MS));
    match pci_bus_id.map(|id| NvmlSource::open(id, xid, pcie)) {
        Some(Ok(nvml)) => Box::new(nvml),
        Some(Err(e)) => Box::new(HostSource { why: format!("{e:#}") }),
        None => Box::new(HostSource { why: why_none.to_string() }),
    }
}

impl Telemetry {
    /// Collective. Every `period_ms` (0: no sampler, and no /telemetry), from now on; `gpu`:
    /// this rank's GPU's PCI bus id, or None with why not; `file`: rank 0's results. No sample
    /// counts in the figures until a phase begins.
    pub fn start(world: &World, period_ms: u64, gpu: Option<&str>, why_none: &str, file: Option<&dyn SinkOpener>) -> Result<Telemetry> {
        let clock = RunClock::agree(world);
        let mut telemetry = Telemetry { sampler: None, meter: None, collector: None, last_flush: Instant::now(), measured: Box::new(|_| false) };
        if period_ms == 0 {
            return Ok(telemetry);
        }
        let sampled = source(gpu, why_none, Some(period_ms));
        let described = world.gather_string_to_root(&sampled.describe());
        let hosts = world.gather_string_to_root(&world.host);
        if world.is_root() {
            let log = file.map(|f| f.open_telemetry(period_ms, &described)).transpose()?;
            let stats = vec![RankStats::new(); world.size];
            telemetry.collector =
                Some(Collector { log, phase_stats: stats.clone(), run_stats: stats, health: vec![[f64::NAN; HEALTH.len()]; world.size], hosts });
        }
        telemetry.meter = Some(source(gpu, why_none, None));
        telemetry.sampler = Some(Sampler::start(sampled, Duration::from_millis(period_ms), clock));
        Ok(telemetry)
    }

    /// The energy counter now, joules (NaN without one, or without telemetry).
    pub fn energy_j(&mut self) -> f64 {
        self.meter.as_mut().and_then(|m| m.energy_j()).unwrap_or(f64::NAN)
    }

    /// Collective: every rank's samples so far to rank 0's table.
    pub fn flush(&mut self, world: &World) -> Result<()> {
        let Some(sampler) = &self.sampler else { return Ok(()) };
        let (samples, events) = sampler.take();
        self.send(world, Batch { samples, events })
    }

    /// Collective: a flush when FLUSH_EVERY has passed on rank 0 since the last.
    pub fn maybe_flush(&mut self, world: &World) -> Result<()> {
        if self.sampler.is_none() {
            return Ok(());
        }
        let mut due = [(world.is_root() && self.last_flush.elapsed() >= FLUSH_EVERY) as u8];
        world.broadcast_from_root(&mut due);
        if due[0] == 1 {
            self.flush(world)?;
        }
        Ok(())
    }

    /// Collective: a phase begins; from now on `measured` says which of its samples count.
    /// (The samples so far are sent first, and count by the phase before.)
    pub fn begin_phase(&mut self, world: &World, measured: Box<dyn Fn(&str) -> bool>) -> Result<()> {
        self.flush(world)?;
        self.measured = measured;
        if let Some(c) = &mut self.collector {
            c.phase_stats = vec![RankStats::new(); c.phase_stats.len()];
        }
        Ok(())
    }

    /// Collective: the phase ends; on rank 0 each rank's figures over its measured samples
    /// (empty elsewhere, and without telemetry).
    pub fn end_phase(&mut self, world: &World) -> Result<Vec<RankStats>> {
        self.flush(world)?;
        self.measured = Box::new(|_| false);
        Ok(self.collector.as_ref().map_or(Vec::new(), |c| c.phase_stats.clone()))
    }

    /// Collective: stops sampling, sends the rest, writes each rank's figures over every phase.
    pub fn finish(mut self, world: &World) -> Result<()> {
        let Some(sampler) = self.sampler.take() else { return Ok(()) };
        let (samples, events) = sampler.stop();
        self.send(world, Batch { samples, events })?;
        if let Some(Collector { log: Some(log), run_stats, .. }) = self.collector.take() {
            log.finish(&run_stats)?;
        }
        Ok(())
    }

    fn send(&mut self, world: &World, batch: Batch) -> Result<()> {
        self.last_flush = Instant::now();
        let all = world.gather_string_to_root(&serde_json::to_string(&batch)?);
        let Some(c) = &mut self.collector else { return Ok(()) };
        for (rank, json) in all.iter().enumerate() {
            let batch: Batch = serde_json::from_str(json).with_context(|| format!("rank {rank}'s telemetry batch"))?;
            c.phase_stats[rank].xid_events += batch.events.len();
            c.run_stats[rank].xid_events += batch.events.len();
            for e in &batch.events {
                print_line(&format!("h200-mpibench: warning: rank {rank} on {}: its GPU reported {} at {:.1} s", c.hosts[rank], e.what, e.t_s));
                if let Some(log) = &c.log {
                    log.event(rank, &c.hosts[rank], e)?;
                }
            }
            for s in &batch.samples {
                for (last, name) in c.health[rank].iter_mut().zip(HEALTH) {
                    let now = s.get(name);
                    if now > *last {
                        print_line(&format!(
                            "h200-mpibench: warning: rank {rank} on {}: its GPU's {name} rose from {last} to {now} at {:.1} s",
                            c.hosts[rank], s.t_s
                        ));
                    }
                    if now.is_finite() {
                        *last = now;
                    }
                }
                if (self.measured)(&s.phase) {
                    c.phase_stats[rank].add(s);
                    c.run_stats[rank].add(s);
                }
                if let Some(log) = &c.log {
                    log.sample(rank, s)?;
                }
            }
        }
        if let Some(log) = &c.log {
            log.flush()?;
        }
        Ok(())
    }
}
