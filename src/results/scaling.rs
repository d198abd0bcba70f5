//! /scaling in the results file: one row per mode and size in /scaling/points (a skipped size
//! with its reason), written as each size ends; and for each measured size a group
//! /scaling/<mode>_<size> with every participating rank's figures of every step, [steps,
//! ranks], and the job ranks they were: the raw data behind each row (train/scaling.rs has
//! the formulas).

use super::append_table::{AppendTable, Cell, Kind};
use super::hdf5_file::{put_column, put_num, put_str, ResultsFile};
use crate::cli::scaling::ScalingPlan;
use crate::train::metrics::PEAK_FLOPS;
use crate::train::scaling::{Row, StepsByRank};
use anyhow::Result;
use hdf5::Group;

const POINT_COLUMNS: [(&str, Kind); 23] = [
    ("mode", Kind::Text),
    ("ranks", Kind::U64),
    ("hosts", Kind::U64),
    ("sub_worlds", Kind::U64),
    ("micro_batch", Kind::U64),
    ("grad_accum", Kind::U64),
    ("global_batch", Kind::U64),
    ("tokens_per_s_per_gpu", Kind::F64),
    ("predicted_tokens_per_s_per_gpu", Kind::F64),
    ("mfu", Kind::F64),
    ("step_s", Kind::F64),
    ("forward_s", Kind::F64),
    ("backward_s", Kind::F64),
    ("optimizer_s", Kind::F64),
    ("comm_s", Kind::F64),
    ("comm_busy_s", Kind::F64),
    ("comm_compute_ratio", Kind::F64),
    ("efficiency", Kind::F64),
    ("baseline_ranks", Kind::U64),
    ("planned_memory_bytes", Kind::U64),
    ("peak_memory_bytes", Kind::F64),
    ("all_reduce_busbw_gbs", Kind::F64),
    ("skipped", Kind::Text),
];

/// /scaling while the sizes run.
pub struct ScalingLog {
    group: Group,
    points: AppendTable,
}

impl ResultsFile {
    /// /scaling with the plan and the sizes, and an empty table of points, flushed.
    pub fn begin_scaling(&self, plan: &ScalingPlan, sizes: &[usize], per_host: usize, flops_per_token: f64) -> Result<ScalingLog> {
        let g = self.file.create_group("scaling")?;
        put_str(&g, "modes", &plan.modes.iter().map(|m| m.name()).collect::<Vec<_>>().join(","))?;
        put_column(&g, "sizes", &sizes.iter().map(|&s| s as u64).collect::<Vec<_>>())?;
        put_num(&g, "ranks_per_host", per_host as u64)?;
        put_num(&g, "steps", plan.steps as u64)?;
        put_num(&g, "warmup_steps", plan.warmup_steps as u64)?;
        put_num(&g, "flops_per_token", flops_per_token)?;
        put_num(&g, "peak_flops", PEAK_FLOPS)?;
        let points = self.table(&g.create_group("points")?, &POINT_COLUMNS)?;
        self.file.flush()?;
        Ok(ScalingLog { group: g, points })
    }
}

impl ScalingLog {
    /// One size's row, its raw step figures (measured sizes) from the job ranks `ranks`, flushed.
    pub fn row(&self, row: &Row, steps: Option<(&StepsByRank, &[usize])>) -> Result<()> {
        if let Some((steps, ranks)) = steps {
            let g = self.group.create_group(&format!("{}_{}", row.mode.name(), row.ranks))?;
            put_column(&g, "job_ranks", &ranks.iter().map(|&r| r as u64).collect::<Vec<_>>())?;
            for (name, by_rank) in steps.named() {
                let flat: Vec<f64> = by_rank.iter().flatten().copied().collect();
                let array = ndarray::Array2::from_shape_vec((by_rank.len(), flat.len() / by_rank.len().max(1)), flat)?;
                g.new_dataset_builder().with_data(&array.t().as_standard_layout()).create(name)?;
            }
        }
        let nan = f64::NAN;
        let (m, skipped) = match &row.measured {
            Ok(m) => (Some(m), String::new()),
            Err(why) => (None, why.clone()),
        };
        let p = m.map(|m| &m.point);
        let f = |value: Option<f64>| Cell::F64(value.unwrap_or(nan));
        self.points.append(vec![
            Cell::Text(row.mode.name().into()),
            Cell::U64(row.ranks as u64),
            Cell::U64(row.hosts as u64),
            Cell::U64(p.map_or(0, |p| p.per_sub_world.len() as u64)),
            Cell::U64(row.micro_batch as u64),
            Cell::U64(row.grad_accum as u64),
            Cell::U64(row.global_batch() as u64),
            f(p.map(|p| p.tokens_per_s_per_gpu)),
            f(row.predicted_tokens_per_s_per_gpu),
            f(p.and_then(|p| p.mfu)),
            f(p.map(|p| p.step_s)),
            f(p.map(|p| p.forward_s)),
            f(p.map(|p| p.backward_s)),
            f(p.map(|p| p.optimizer_s)),
            f(p.map(|p| p.comm_s)),
            f(p.map(|p| p.comm_busy_s)),
            f(p.map(|p| p.comm_compute_ratio)),
            f(m.map(|m| m.efficiency)),
            Cell::U64(m.map_or(0, |m| m.baseline_ranks as u64)),
            Cell::U64(row.planned_memory_bytes),
            f(p.map(|p| p.peak_memory_bytes)),
            f(row.all_reduce_busbw_gbs),
            Cell::Text(skipped),
        ])?;
        self.points.flush()
    }
}
