//! /telemetry: one row per sample of every rank (a `rank` column; rows of a batch in rank
//! order, each rank's in time order), appended as the batches reach rank 0, with the events
//! (XID) in /telemetry/events and, at the end, each rank's figures as attributes.

use super::append_table::{AppendTable, Cell, Kind};
use super::hdf5_file::{put_column, put_num, put_str, ResultsFile};
use crate::telemetry::collect::{Sink, SinkOpener};
use crate::telemetry::figures::{RankStats, THROTTLE_REASONS};
use crate::telemetry::sample::{Sample, FIELDS};
use crate::telemetry::sampler::Event;
use anyhow::Result;
use hdf5::Group;

pub struct TelemetryLog {
    group: Group,
    samples: AppendTable,
    events: AppendTable,
}

impl SinkOpener for ResultsFile {
    /// /telemetry with its empty tables; `sources[rank]` says what each rank samples.
    fn open_telemetry(&self, period_ms: u64, sources: &[String]) -> Result<Box<dyn Sink>> {
        let group = self.file.create_group("telemetry")?;
        put_num(&group, "period_ms", period_ms)?;
        put_str(&group, "layout", "one row per sample: t_s (seconds since rank 0's start, on rank 0's clock), rank, phase, then every field (NaN: not read)")?;
        let kinds: Vec<hdf5::types::VarLenUnicode> = sources.iter().map(|s| s.parse()).collect::<Result<_, _>>()?;
        put_column(&group, "source_per_rank", &kinds)?;
        let mut columns = vec![("t_s", Kind::F64), ("rank", Kind::U64), ("phase", Kind::Text)];
        columns.extend(FIELDS.iter().map(|&f| (f, Kind::F64)));
        let samples = self.table(&group, &columns)?;
        let events_group = group.create_group("events")?;
        let events = self.table(&events_group, &[("t_s", Kind::F64), ("rank", Kind::U64), ("host", Kind::Text), ("event", Kind::Text)])?;
        self.file.flush()?;
        Ok(Box::new(TelemetryLog { group, samples, events }))
    }
}

impl Sink for TelemetryLog {
    fn sample(&self, rank: usize, s: &Sample) -> Result<bool> {
        let mut row = vec![Cell::F64(s.t_s), Cell::U64(rank as u64), Cell::Text(s.phase.clone())];
        row.extend(s.values.iter().map(|v| Cell::F64(v.unwrap_or(f64::NAN))));
        self.samples.append(row)
    }

    fn event(&self, rank: usize, host: &str, e: &Event) -> Result<bool> {
        self.events.append(vec![Cell::F64(e.t_s), Cell::U64(rank as u64), Cell::Text(host.into()), Cell::Text(e.what.clone())])
    }

    /// What is pending, written.
    fn flush(&self) -> Result<()> {
        self.samples.flush()?;
        self.events.flush()
    }

    /// Each rank's figures over the measured phases: peak temperatures, and per throttle
    /// reason (attribute `throttle_reasons`) the share of samples it was active in.
    fn finish(&self, stats: &[RankStats]) -> Result<()> {
        self.flush()?;
        let g = &self.group;
        put_column(g, "measured_samples_per_rank", &stats.iter().map(|s| s.samples as u64).collect::<Vec<_>>())?;
        put_column(g, "peak_temp_gpu_c_per_rank", &stats.iter().map(|s| s.peak_temp_gpu_c).collect::<Vec<_>>())?;
        put_column(g, "peak_temp_hbm_c_per_rank", &stats.iter().map(|s| s.peak_temp_hbm_c).collect::<Vec<_>>())?;
        let shares: Vec<f64> = stats.iter().flat_map(|s| s.throttle_shares()).collect();
        let shares = ndarray::Array2::from_shape_vec((stats.len(), THROTTLE_REASONS.len()), shares)?;
        g.new_dataset_builder().with_data(&shares).create("throttle_share_per_rank")?;
        put_str(g, "throttle_reasons", &THROTTLE_REASONS.map(|(n, _)| n).join(","))?;
        self.flush()
    }
}
