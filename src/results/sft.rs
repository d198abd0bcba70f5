//! The /sft group of the results file (model and run settings, one column per step figure,
//! the summary over the measured steps: formulas in train/metrics.rs) and the /selftest group.

use super::hdf5_file::{put_column, put_num, put_str, ResultsFile};
use crate::backend::cuda::op_timer::StepProfile;
use crate::model::config::LlamaConfig;
use crate::train::metrics::{StepRecord, Summary, PEAK_FLOPS};
use crate::train::run_config::RunConfig;
use anyhow::Result;

impl ResultsFile {
    #[allow(clippy::too_many_arguments)]
    pub fn write_sft(
        &self,
        model: &LlamaConfig,
        run: &RunConfig,
        engine: &str,
        records: &[StepRecord],
        summary: &Summary,
        profile: Option<&StepProfile>,
        planned_bytes: u64,
    ) -> Result<()> {
        let g = self.file.create_group("sft")?;
        put_str(&g, "engine", engine)?;
        put_str(&g, "model", &model.name)?;
        put_str(&g, "model_json", &serde_json::to_string(&serde_json::json!({
            "dim": model.dim, "ffn_dim": model.ffn_dim, "n_layers": model.n_layers, "n_heads": model.n_heads,
            "n_kv_heads": model.n_kv_heads, "vocab_size": model.vocab_size, "norm_eps": model.norm_eps, "rope_theta": model.rope_theta,
        }))?)?;
        put_str(&g, "run_json", &serde_json::to_string(run)?)?;
        let flops_per_token = model.flops_per_token(run.seq);
        put_num(&g, "matmul_params", model.matmul_params() as u64)?;
        put_num(&g, "flops_per_token", flops_per_token)?;
        put_num(&g, "peak_flops", PEAK_FLOPS)?;
        put_num(&g, "warmup_steps", run.warmup_steps as u64)?;
        put_num(&g, "planned_memory_bytes", planned_bytes)?;
        put_num(&g, "summary_measured_steps", summary.measured_steps as u64)?;
        put_num(&g, "summary_step_s", summary.step_s)?;
        put_num(&g, "summary_tokens_per_s", summary.tokens_per_s)?;
        put_num(&g, "summary_model_tflops", summary.model_tflops)?;
        put_num(&g, "summary_mfu", summary.mfu.unwrap_or(f64::NAN))?;
        put_num(&g, "summary_comm_s", summary.comm_s)?;
        put_num(&g, "summary_comm_busy_s", summary.comm_busy_s)?;
        put_num(&g, "summary_comm_bytes", summary.comm_bytes)?;
        let col = |f: &dyn Fn(&StepRecord) -> f64| -> Vec<f64> { records.iter().map(f).collect() };
        put_column(&g, "step", &records.iter().map(|r| r.step as u64).collect::<Vec<_>>())?;
        put_column(&g, "loss", &col(&|r| r.loss))?;
        put_column(&g, "lr", &col(&|r| r.lr))?;
        put_column(&g, "grad_norm", &col(&|r| r.grad_norm))?;
        put_column(&g, "step_s", &col(&|r| r.step_s))?;
        put_column(&g, "forward_s", &col(&|r| r.forward_s))?;
        put_column(&g, "backward_s", &col(&|r| r.backward_s))?;
        put_column(&g, "comm_s", &col(&|r| r.comm_s))?;
        put_column(&g, "comm_busy_s", &col(&|r| r.comm_busy_s))?;
        put_column(&g, "comm_bytes", &records.iter().map(|r| r.comm_bytes).collect::<Vec<_>>())?;
        put_column(&g, "comm_compute_ratio", &col(&|r| r.comm_compute_ratio()))?;
        put_column(&g, "optimizer_s", &col(&|r| r.optimizer_s))?;
        put_column(&g, "tokens", &records.iter().map(|r| r.tokens as u64).collect::<Vec<_>>())?;
        put_column(&g, "samples", &records.iter().map(|r| r.samples as u64).collect::<Vec<_>>())?;
        put_column(&g, "tokens_per_s", &col(&|r| r.tokens_per_s()))?;
        put_column(&g, "samples_per_s", &col(&|r| r.samples_per_s()))?;
        put_column(&g, "model_tflops", &col(&|r| r.model_flops(flops_per_token) / 1e12))?;
        put_column(&g, "peak_memory_bytes", &records.iter().map(|r| r.peak_memory_bytes).collect::<Vec<_>>())?;
        if let Some(p) = profile {
            let pg = g.create_group("profile")?;
            put_num(&pg, "step_ms", p.step_ms)?;
            let names: Vec<hdf5::types::VarLenUnicode> = p.ops.iter().map(|o| o.name.parse()).collect::<Result<_, _>>()?;
            put_column(&pg, "op", &names)?;
            put_column(&pg, "calls", &p.ops.iter().map(|o| o.calls as u64).collect::<Vec<_>>())?;
            put_column(&pg, "ms", &p.ops.iter().map(|o| o.ms).collect::<Vec<_>>())?;
        }
        self.file.flush()?;
        Ok(())
    }
}

impl ResultsFile {
    /// /selftest: rank 0's checks, one entry each, and every rank's failed-check count.
    pub fn write_selftest(&self, checks: &[crate::selftest::Check], failed_per_rank: &[u64]) -> Result<()> {
        let g = self.file.create_group("selftest")?;
        let text = |f: &dyn Fn(&crate::selftest::Check) -> String| -> Result<Vec<hdf5::types::VarLenUnicode>> {
            checks.iter().map(|c| Ok(f(c).parse()?)).collect()
        };
        put_column(&g, "op", &text(&|c| c.op.clone())?)?;
        put_column(&g, "shape", &text(&|c| c.shape.clone())?)?;
        put_column(&g, "rel_err", &checks.iter().map(|c| c.rel_err).collect::<Vec<_>>())?;
        put_column(&g, "max_abs_err", &checks.iter().map(|c| c.max_abs_err).collect::<Vec<_>>())?;
        put_column(&g, "tolerance", &checks.iter().map(|c| c.tolerance).collect::<Vec<_>>())?;
        put_column(&g, "passed", &checks.iter().map(|c| c.passed() as u8).collect::<Vec<_>>())?;
        put_column(&g, "failed_per_rank", failed_per_rank)?;
        self.file.flush()?;
        Ok(())
    }
}
