//! The /sft group of the results file (model and run settings; one column per step figure,
//! appended as the steps complete; the summary over the measured steps at the end: formulas in
//! train/metrics.rs) and the /selftest group (one row per check, appended as they complete).

use super::append_table::{AppendTable, Cell, Kind};
use super::hdf5_file::{put_column, put_num, put_str, ResultsFile};
use crate::backend::cuda::op_timer::StepProfile;
use crate::model::config::LlamaConfig;
use crate::selftest::Check;
use crate::telemetry::figures::{EnergyFigures, Stragglers};
use crate::train::metrics::{StepRecord, Summary, PEAK_FLOPS};
use crate::train::run_config::RunConfig;
use anyhow::Result;
use hdf5::Group;

type StepField = fn(&StepRecord, f64) -> Cell;

/// Every per-step column of /sft: its name, type and value (the second argument is the
/// model FLOPs per token). A new step figure is one line here.
const STEP_COLUMNS: [(&str, Kind, StepField); 19] = [
    ("step", Kind::U64, |r, _| Cell::U64(r.step as u64)),
    ("loss", Kind::F64, |r, _| Cell::F64(r.loss)),
    ("lr", Kind::F64, |r, _| Cell::F64(r.lr)),
    ("grad_norm", Kind::F64, |r, _| Cell::F64(r.grad_norm)),
    ("step_s", Kind::F64, |r, _| Cell::F64(r.step_s)),
    ("forward_s", Kind::F64, |r, _| Cell::F64(r.forward_s)),
    ("backward_s", Kind::F64, |r, _| Cell::F64(r.backward_s)),
    ("comm_s", Kind::F64, |r, _| Cell::F64(r.comm_s)),
    ("comm_busy_s", Kind::F64, |r, _| Cell::F64(r.comm_busy_s)),
    ("comm_bytes", Kind::U64, |r, _| Cell::U64(r.comm_bytes)),
    ("comm_compute_ratio", Kind::F64, |r, _| Cell::F64(r.comm_compute_ratio())),
    ("optimizer_s", Kind::F64, |r, _| Cell::F64(r.optimizer_s)),
    ("tokens", Kind::U64, |r, _| Cell::U64(r.tokens as u64)),
    ("loss_tokens", Kind::U64, |r, _| Cell::U64(r.loss_tokens as u64)),
    ("samples", Kind::U64, |r, _| Cell::U64(r.samples as u64)),
    ("tokens_per_s", Kind::F64, |r, _| Cell::F64(r.tokens_per_s())),
    ("samples_per_s", Kind::F64, |r, _| Cell::F64(r.samples_per_s())),
    ("model_tflops", Kind::F64, |r, flops_per_token| Cell::F64(r.model_flops(flops_per_token) / 1e12)),
    ("peak_memory_bytes", Kind::U64, |r, _| Cell::U64(r.peak_memory_bytes)),
];

/// /sft while the run trains.
pub struct SftLog {
    group: Group,
    steps: AppendTable,
    flops_per_token: f64,
}

impl ResultsFile {
    /// /sft with the model and run settings and empty step columns, flushed.
    pub fn begin_sft(&self, model: &LlamaConfig, run: &RunConfig, engine: &str, planned_bytes: u64) -> Result<SftLog> {
        let g = self.file.create_group("sft")?;
        put_str(&g, "engine", engine)?;
        put_str(&g, "model", &model.name)?;
        put_str(
            &g,
            "model_json",
            &serde_json::to_string(&serde_json::json!({
                "dim": model.dim, "ffn_dim": model.ffn_dim, "n_layers": model.n_layers, "n_heads": model.n_heads,
                "n_kv_heads": model.n_kv_heads, "vocab_size": model.vocab_size, "norm_eps": model.norm_eps, "rope_theta": model.rope_theta,
            }))?,
        )?;
        put_str(&g, "run_json", &serde_json::to_string(run)?)?;
        let flops_per_token = model.flops_per_token(run.seq);
        put_num(&g, "matmul_params", model.matmul_params() as u64)?;
        put_num(&g, "flops_per_token", flops_per_token)?;
        put_num(&g, "peak_flops", PEAK_FLOPS)?;
        put_num(&g, "warmup_steps", run.warmup_steps as u64)?;
        put_num(&g, "planned_memory_bytes", planned_bytes)?;
        let columns: Vec<(&str, Kind)> = STEP_COLUMNS.iter().map(|&(name, kind, _)| (name, kind)).collect();
        let steps = self.table(&g, &columns)?;
        self.file.flush()?;
        Ok(SftLog { group: g, steps, flops_per_token })
    }

    /// /selftest while the checks run; `seed` drew their inputs.
    pub fn begin_selftest(&self, seed: u64) -> Result<SelftestLog> {
        let group = self.file.create_group("selftest")?;
        put_num(&group, "seed", seed)?;
        let columns =
            [("op", Kind::Text), ("shape", Kind::Text), ("rel_err", Kind::F64), ("max_abs_err", Kind::F64), ("tolerance", Kind::F64), ("passed", Kind::U8)];
        let checks = self.table(&group, &columns)?;
        Ok(SelftestLog { group, checks })
    }
}

impl SftLog {
    /// One step's row (written in batches: append_table.rs); false once the run was
    /// interrupted (the row is not kept, so it must not be shown either).
    pub fn step(&self, r: &StepRecord) -> Result<bool> {
        self.steps.append(STEP_COLUMNS.iter().map(|(_, _, field)| field(r, self.flops_per_token)).collect())
    }

    /// Every rank's per-step figures `(name, rank-major values as gathered)`, each written as
    /// [steps, ranks] (`rank_boundary_s`: the time between the energy readings at two step
    /// boundaries, the step and its bookkeeping); the energy figures and who straggled.
    pub fn per_rank(&self, steps: usize, columns: &[(&str, Vec<f64>)], e: &EnergyFigures, s: &Stragglers, pct: f64) -> Result<()> {
        let g = &self.group;
        for (name, flat) in columns {
            let by_rank = ndarray::Array2::from_shape_vec((flat.len() / steps.max(1), steps), flat.clone())?;
            g.new_dataset_builder().with_data(&by_rank.t().as_standard_layout()).create(*name)?;
        }
        put_num(g, "summary_joules_per_token", e.joules_per_token)?;
        put_num(g, "summary_tokens_per_kwh", e.tokens_per_kwh)?;
        put_column(g, "mean_power_w_per_rank", &e.mean_power_w)?;
        put_column(g, "median_compute_s_per_rank", &s.median_per_rank)?;
        put_num(g, "slowest_rank", s.slowest as u64)?;
        put_num(g, "straggler_pct", pct)?;
        put_column(g, "straggler_ranks", &s.slow.iter().map(|&r| r as u64).collect::<Vec<_>>())?;
        Ok(())
    }

    /// The remaining steps, the summary attributes and the profile.
    pub fn finish(&self, summary: &Summary, profile: Option<&StepProfile>) -> Result<()> {
        self.steps.flush()?;
        let g = &self.group;
        put_num(g, "summary_measured_steps", summary.measured_steps as u64)?;
        put_num(g, "summary_step_s", summary.step_s)?;
        put_num(g, "summary_tokens_per_s", summary.tokens_per_s)?;
        put_num(g, "summary_model_tflops", summary.model_tflops)?;
        put_num(g, "summary_mfu", summary.mfu.unwrap_or(f64::NAN))?;
        put_num(g, "summary_comm_s", summary.comm_s)?;
        put_num(g, "summary_comm_busy_s", summary.comm_busy_s)?;
        put_num(g, "summary_comm_bytes", summary.comm_bytes)?;
        if let Some(p) = profile {
            let pg = g.create_group("profile")?;
            put_num(&pg, "step_ms", p.step_ms)?;
            let names: Vec<hdf5::types::VarLenUnicode> = p.ops.iter().map(|o| o.name.parse()).collect::<Result<_, _>>()?;
            put_column(&pg, "op", &names)?;
            put_column(&pg, "calls", &p.ops.iter().map(|o| o.calls as u64).collect::<Vec<_>>())?;
            put_column(&pg, "ms", &p.ops.iter().map(|o| o.ms).collect::<Vec<_>>())?;
        }
        self.steps.flush()
    }
}

/// /selftest while the checks run.
pub struct SelftestLog {
    group: Group,
    checks: AppendTable,
}

impl SelftestLog {
    /// Rank 0's check, as it completes (false once interrupted: not kept).
    pub fn check(&self, c: &Check) -> Result<bool> {
        self.checks.append(vec![
            Cell::Text(c.op.clone()),
            Cell::Text(c.shape.clone()),
            Cell::F64(c.rel_err),
            Cell::F64(c.max_abs_err),
            Cell::F64(c.tolerance),
            Cell::U8(c.passed() as u8),
        ])
    }

    /// Every rank's failed-check count, at the end.
    pub fn finish(&self, failed_per_rank: &[u64]) -> Result<()> {
        self.checks.flush()?;
        put_column(&self.group, "failed_per_rank", failed_per_rank)?;
        self.checks.flush()
    }
}
