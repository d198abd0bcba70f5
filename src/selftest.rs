//! `h200-mpibench selftest`: every GPU op of the model against its CPU reference (each op
//! file's checks, backend/cuda/ops/; the rules in backend/cuda/check.rs) on fresh random inputs
//! from a recorded seed, then whole steps of the tiny model against the CPU step and trainer,
//! and the GPU's allocation against the plan at every ZeRO stage.

use crate::backend::cuda::check::{compare, Inputs, EXACT, F32_TOLERANCE};
pub use crate::backend::cuda::check::{fresh_seed, Check};
use crate::backend::cuda::model_ops::ModelOps;
use crate::backend::cuda::{ops, Gpu};
use anyhow::Result;

/// The checks so far; each goes to `on_check` as it completes (the results file's rows; the
/// whole-model checks go as one group when the last of them is done).
struct Recorder<'a> {
    all: Vec<Check>,
    on_check: &'a mut dyn FnMut(&Check),
}

impl Recorder<'_> {
    fn push(&mut self, check: Check) {
        (self.on_check)(&check);
        self.all.push(check);
    }

    fn extend(&mut self, checks: Vec<Check>) {
        checks.into_iter().for_each(|c| self.push(c));
    }
}

/// Runs every op check on `gpu` on inputs drawn from `seed`, handing each check to `on_check`
/// as it completes; the caller prints and judges.
pub fn run(gpu: &Gpu, seed: u64, on_check: &mut dyn FnMut(&Check)) -> Result<Vec<Check>> {
    let ops = ModelOps::load(gpu, gpu.alloc(crate::backend::cuda::gemm::WORKSPACE_BYTES)?)?;
    let mut r = Inputs::from(seed);
    let mut checks = Recorder { all: Vec::new(), on_check };
    ops::checks(&ops, &mut r, &mut |op_checks| checks.extend(op_checks))?;
    drop(ops);
    checks.extend(model_checks(gpu, seed)?);
    Ok(checks.all)
}

/// Bound on a whole step's relative error: the bf16 bound of the single ops (measured: 5e-3).
pub const STEP_TOLERANCE: f64 = 1e-2;

/// Bound on two GPU loss curves that differ only in the order of atomic fp32 additions
/// (embedding and RMSNorm weight gradients) and in the GEMM algorithms each model timed as
/// fastest: measured up to 4.8e-5 over 50 steps, while a missed gather or a wrong shard moves
/// the curve by far more.
pub const REORDER_TOLERANCE: f64 = 1e-3;

/// One tiny-model step (loss and every parameter's gradient) against the CPU model in f64 on
/// the same bf16 weights, then 50 training steps' losses against the CPU trainer's.
fn model_checks(gpu: &Gpu, seed: u64) -> Result<Vec<Check>> {
    use crate::dist::ranks::Alone;
    use crate::model::config::LlamaConfig;
    use crate::model::cpu_ops::{forward_backward, Batch};
    use crate::train::data::{synthetic_batch, Source};
    use crate::train::{cpu_trainer, gpu_trainer, run_config::RunConfig};
    let config = LlamaConfig::load("tiny").map_err(anyhow::Error::msg)?;
    let run = RunConfig { steps: 50, ..RunConfig::defaults_for("tiny") };
    let mut checks = Vec::new();
    let shape = format!("tiny, batch {} seq {}", run.micro_batch, run.seq);
    // Every model built here must allocate exactly what the planner sums (zero/buffers.rs).
    let build = |run: &RunConfig, checks: &mut Vec<Check>| -> Result<crate::model::gpu_model::GpuModel> {
        let before = gpu.allocated();
        let model = gpu_trainer::build(gpu, &config, run, seed, &Alone, None)?;
        let planned = crate::zero::planner::plan(&run.plan_input(&config, 1)).total();
        let buckets = if run.bucket_layers > 1 { format!(" {}-layer", run.bucket_layers) } else { String::new() };
        let what = format!("alloc = plan ZeRO-{}{buckets}{}", run.zero, if run.recompute { " recompute" } else { "" });
        checks.push(compare(&what, &shape, &[(gpu.allocated() - before) as f64], &[planned as f64], EXACT));
        Ok(model)
    };
    let model = build(&run, &mut checks)?;

    let (tokens, labels) = synthetic_batch(0, run.micro_batch, run.seq, config.vocab_size, seed);
    model.zero_grads()?;
    let gpu_loss = model.forward(&tokens, &labels, 1.0)?;
    model.backward(true)?;
    let gpu_grads = model.grads()?;
    let weights: Vec<f64> = model.weights_f32()?.iter().map(|&w| w as f64).collect();
    let layout = &model.llama.layout;
    let mut cpu_grads = vec![0.0; layout.total];
    let batch = Batch { tokens: &tokens, labels: &labels, batch: run.micro_batch, seq: run.seq };
    let cpu_loss = forward_backward(&config, &weights, &mut cpu_grads, &batch, 1.0)?;
    checks.push(compare("model step loss", &shape, &[gpu_loss], &[cpu_loss], STEP_TOLERANCE));
    // Each tensor's gradient on its own: the worst one is the check.
    let worst = layout
        .tensors()
        .into_iter()
        .map(|t| {
            let got: Vec<f64> = gpu_grads[t.range()].iter().map(|&g| g as f64).collect();
            compare(&format!("model step grad {}", t.name), &shape, &got, &cpu_grads[t.range()], STEP_TOLERANCE)
        })
        .max_by(|a, b| a.rel_err.partial_cmp(&b.rel_err).unwrap_or(std::cmp::Ordering::Greater))
        .expect("a model has tensors");
    checks.push(worst);
    drop(model);

    // Recompute redoes the same forward: the gradients agree to fp32 summation order.
    let recomputing = build(&RunConfig { recompute: true, ..run.clone() }, &mut checks)?;
    recomputing.zero_grads()?;
    let loss = recomputing.forward(&tokens, &labels, 1.0)?;
    recomputing.backward(true)?;
    let again: Vec<f64> = recomputing.grads()?.iter().map(|&g| g as f64).collect();
    let first: Vec<f64> = gpu_grads.iter().map(|&g| g as f64).collect();
    checks.push(compare("model step with --recompute: grads", &shape, &again, &first, F32_TOLERANCE));
    checks.push(compare("model step with --recompute: loss", &shape, &[loss], &[gpu_loss], F32_TOLERANCE));
    drop(recomputing);

    let model = gpu_trainer::build(gpu, &config, &run, seed, &Alone, None)?;
    let gpu_losses: Vec<f64> =
        gpu_trainer::train(gpu, &model, &run, &Source::Synthetic { seed }, &Alone, false, &mut |_| {})?.0.iter().map(|r| r.loss).collect();
    let cpu_losses: Vec<f64> = cpu_trainer::train(&config, &run, seed, &Source::Synthetic { seed }, &Alone, &mut |_| {})?.iter().map(|r| r.loss).collect();
    checks.push(compare("50-step loss curve vs CPU trainer", &shape, &gpu_losses, &cpu_losses, STEP_TOLERANCE));
    drop(model);

    // The ZeRO stages on one GPU run the same schedule with copies for collectives: unit
    // slots, shards and their bookkeeping must reproduce stage 0's curve, up to atomics' order.
    // The last also puts both layers in one bucket.
    for (stage, bucket_layers) in [(1, 1), (2, 1), (3, 1), (3, 2)] {
        let run = RunConfig { zero: stage, bucket_layers, ..run.clone() };
        let model = build(&run, &mut checks)?;
        let losses: Vec<f64> =
            gpu_trainer::train(gpu, &model, &run, &Source::Synthetic { seed }, &Alone, false, &mut |_| {})?.0.iter().map(|r| r.loss).collect();
        let name = format!("ZeRO-{stage}, {bucket_layers}-layer buckets vs 0");
        checks.push(compare(&name, &shape, &losses, &gpu_losses, REORDER_TOLERANCE));
    }
    Ok(checks)
}

/// The table rank 0 prints.
pub fn table(checks: &[Check]) -> String {
    let mut out = format!("# {:<32} {:<30} {:>10} {:>10} {:>9}  result\n", "op", "shape", "rel err", "max |err|", "limit");
    for c in checks {
        let verdict = if c.passed() { "PASS".to_string() } else { format!("FAIL (element {}: got {:e}, want {:e})", c.worst.0, c.worst.1, c.worst.2) };
        out += &format!("  {:<32} {:<30} {:>10.2e} {:>10.2e} {:>9.0e}  {verdict}\n", c.op, c.shape, c.rel_err, c.max_abs_err, c.tolerance);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_says_pass_or_where_it_failed() {
        assert!(table(&[compare("op", "s", &[1.0], &[1.0], 1e-5)]).contains("PASS"));
        assert!(table(&[compare("op", "s", &[3.0, 4.0], &[0.0, 4.0], 1e-5)]).contains("FAIL (element 0: got 3e0, want 0e0)"));
    }
}
