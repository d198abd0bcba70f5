//! `h200-mpibench selftest`: every GPU op of the model against its CPU reference (f64 on the
//! same bf16-rounded inputs) on fresh random inputs. Relative error ‖gpu − ref‖₂ / ‖ref‖₂ must
//! stay under 1e-2 for bf16 outputs and 1e-5 for fp32 ones; NaN never passes.

use crate::backend::cpu::adamw::AdamW;
use crate::backend::cpu::cross_entropy::IGNORE;
use crate::backend::cpu::matmul::Dims;
use crate::backend::cpu::{attention, cross_entropy, embedding, matmul, rmsnorm, rope, swiglu};
use crate::backend::cuda::ops::attention as cuda_attention;
use crate::backend::cuda::model_ops::ModelOps;
use crate::backend::cuda::{DeviceBuffer, Gpu};
use crate::sweep::pattern::mix;
use anyhow::Result;
use half::bf16;

pub const BF16_TOLERANCE: f64 = 1e-2;
pub const F32_TOLERANCE: f64 = 1e-5;

/// One compared output.
#[derive(Clone, Debug)]
pub struct Check {
    pub op: String,
    pub shape: String,
    pub rel_err: f64,
    pub max_abs_err: f64,
    /// Where the largest error is, with both values there: a lead when a check fails.
    pub worst: (usize, f64, f64),
    pub tolerance: f64,
}

impl Check {
    pub fn passed(&self) -> bool {
        self.rel_err.is_finite() && self.rel_err < self.tolerance
    }
}

fn compare(op: &str, shape: &str, got: &[f64], want: &[f64], tolerance: f64) -> Check {
    assert_eq!(got.len(), want.len(), "{op}");
    let diff: f64 = got.iter().zip(want).map(|(g, w)| (g - w) * (g - w)).sum::<f64>().sqrt();
    let norm: f64 = want.iter().map(|w| w * w).sum::<f64>().sqrt();
    let worst = (0..got.len()).max_by(|&a, &b| {
        let (ea, eb) = ((got[a] - want[a]).abs(), (got[b] - want[b]).abs());
        ea.partial_cmp(&eb).unwrap_or(if ea.is_nan() { std::cmp::Ordering::Greater } else { std::cmp::Ordering::Less })
    });
    let worst = worst.map_or((0, 0.0, 0.0), |i| (i, got[i], want[i]));
    let max_abs = (worst.1 - worst.2).abs();
    let rel_err = if got.iter().any(|g| !g.is_finite()) { f64::NAN } else { diff / norm.max(f64::MIN_POSITIVE) };
    Check { op: op.into(), shape: shape.into(), rel_err, max_abs_err: max_abs, worst, tolerance }
}

/// Random values in [-scale, scale), rounded to bf16; returned as the bf16 bits and as f64.
struct Input {
    bits: Vec<bf16>,
    values: Vec<f64>,
}

struct Inputs {
    seed: u64,
    next: u64,
}

/// A seed for fresh inputs: the clock's nanoseconds (recorded, so any run can be repeated).
pub fn fresh_seed() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
}

impl Inputs {
    fn from(seed: u64) -> Inputs {
        Inputs { seed, next: 0 }
    }

    fn take(&mut self, n: usize, scale: f64) -> Input {
        self.next += 1;
        let bits: Vec<bf16> = (0..n as u64)
            .map(|i| bf16::from_f64(((mix(self.seed, self.next, i) >> 11) as f64 / (1u64 << 52) as f64 - 1.0) * scale))
            .collect();
        let values = bits.iter().map(|b| b.to_f64()).collect();
        Input { bits, values }
    }
}

fn bf16s(gpu: &Gpu, b: &DeviceBuffer) -> Result<Vec<f64>> {
    Ok(gpu.download::<bf16>(b)?.iter().map(|v| v.to_f64()).collect())
}

fn f32s(gpu: &Gpu, b: &DeviceBuffer) -> Result<Vec<f64>> {
    Ok(gpu.download::<f32>(b)?.iter().map(|&v| v as f64).collect())
}

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

    // Matrix multiplies: y = x·Wᵀ, dx = dy·W, dW += dyᵀ·x
    let dims = Dims { m: 256, k: 512, n: 384 };
    let shape = format!("m {} k {} n {}", dims.m, dims.k, dims.n);
    let (x, w, dy) = (r.take(dims.m * dims.k, 1.0), r.take(dims.n * dims.k, 0.05), r.take(dims.m * dims.n, 1.0));
    let dw0 = r.take(dims.n * dims.k, 1.0);
    let (gx, gw, gdy) = (gpu.upload(&x.bits)?, gpu.upload(&w.bits)?, gpu.upload(&dy.bits)?);
    let gy = gpu.alloc(dims.m * dims.n * 2)?;
    ops.gemm.forward(gy.ptr, gx.ptr, gw.ptr, dims, false)?;
    let mut want = vec![0.0; dims.m * dims.n];
    matmul::forward(&mut want, &x.values, &w.values, dims, false);
    checks.push(compare("matmul forward (bf16 y)", &shape, &bf16s(gpu, &gy)?, &want, BF16_TOLERANCE));
    let gdx = gpu.alloc(dims.m * dims.k * 2)?;
    let dw0_f32: Vec<f32> = dw0.values.iter().map(|&v| v as f32).collect();
    let gdw = gpu.upload(&dw0_f32)?;
    ops.gemm.backward_input(gdx.ptr, gdy.ptr, gw.ptr, dims, false)?;
    ops.gemm.backward_weight(gdw.ptr, gdy.ptr, gx.ptr, dims)?;
    let (mut want_dx, mut want_dw) = (vec![0.0; dims.m * dims.k], dw0_f32.iter().map(|&v| v as f64).collect::<Vec<_>>());
    matmul::backward_input(&mut want_dx, &dy.values, &w.values, dims, false);
    matmul::backward_weight(&mut want_dw, &dy.values, &x.values, dims);
    checks.push(compare("matmul backward dx (bf16)", &shape, &bf16s(gpu, &gdx)?, &want_dx, BF16_TOLERANCE));
    checks.push(compare("matmul backward dW += (fp32)", &shape, &f32s(gpu, &gdw)?, &want_dw, F32_TOLERANCE));

    // RMSNorm a little wider than 7B's: the last threads hold part of a row
    let (rows, d, eps) = (128, 4104, 1e-5);
    let shape = format!("rows {rows} d {d}");
    let (x, w, dy) = (r.take(rows * d, 2.0), r.take(d, 1.0), r.take(rows * d, 1.0));
    let (gx, gw, gdy) = (gpu.upload(&x.bits)?, gpu.upload(&w.bits)?, gpu.upload(&dy.bits)?);
    let (gy, ginv, gdx) = (gpu.alloc(rows * d * 2)?, gpu.alloc(rows * 4)?, gpu.alloc(rows * d * 2)?);
    let gdw = gpu.upload(&vec![0f32; d])?;
    ops.rmsnorm_forward(gy.ptr, ginv.ptr, gx.ptr, gw.ptr, rows, d, eps)?;
    ops.rmsnorm_backward(gdx.ptr, gdw.ptr, gdy.ptr, gx.ptr, gw.ptr, ginv.ptr, rows, d)?;
    let (mut y, mut inv) = (vec![0.0; rows * d], vec![0.0; rows]);
    rmsnorm::forward(&mut y, &mut inv, &x.values, &w.values, d, eps);
    let (mut dx, mut dw) = (vec![0.0; rows * d], vec![0.0; d]);
    rmsnorm::backward(&mut dx, &mut dw, &dy.values, &x.values, &w.values, &inv, d);
    checks.push(compare("rmsnorm forward (bf16 y)", &shape, &bf16s(gpu, &gy)?, &y, BF16_TOLERANCE));
    checks.push(compare("rmsnorm forward 1/rms (fp32)", &shape, &f32s(gpu, &ginv)?, &inv, F32_TOLERANCE));
    checks.push(compare("rmsnorm backward dx (bf16)", &shape, &bf16s(gpu, &gdx)?, &dx, BF16_TOLERANCE));
    checks.push(compare("rmsnorm backward dw (fp32)", &shape, &f32s(gpu, &gdw)?, &dw, F32_TOLERANCE));

    // RoPE on a 7B-shaped query block, both directions
    let (seq, heads, hd, theta) = (512, 8, 128, 10000.0);
    let rows = 2 * seq;
    let shape = format!("rows {rows} heads {heads} head_dim {hd}");
    let x = r.take(rows * heads * hd, 1.0);
    let gx = gpu.upload(&x.bits)?;
    ops.rope(gx.ptr, rows, seq, heads, hd, theta, false)?;
    let mut want = x.values.clone();
    rope::forward(&mut want, seq, heads, hd, theta);
    checks.push(compare("rope forward (bf16)", &shape, &bf16s(gpu, &gx)?, &want, BF16_TOLERANCE));
    let gx = gpu.upload(&x.bits)?;
    ops.rope(gx.ptr, rows, seq, heads, hd, theta, true)?;
    let mut want = x.values.clone();
    rope::backward(&mut want, seq, heads, hd, theta);
    checks.push(compare("rope backward (bf16)", &shape, &bf16s(gpu, &gx)?, &want, BF16_TOLERANCE));

    // SwiGLU, and the residual add: 8 elements per step, and a tail
    let n = 256 * 1024 + 5;
    let shape = format!("n {n}");
    let (g, u, dh) = (r.take(n, 4.0), r.take(n, 1.0), r.take(n, 1.0));
    let (gg, gu, gdh) = (gpu.upload(&g.bits)?, gpu.upload(&u.bits)?, gpu.upload(&dh.bits)?);
    let (gh, gdg, gdu) = (gpu.alloc(n * 2)?, gpu.alloc(n * 2)?, gpu.alloc(n * 2)?);
    ops.swiglu_forward(gh.ptr, gg.ptr, gu.ptr, n)?;
    ops.swiglu_backward(gdg.ptr, gdu.ptr, gdh.ptr, gg.ptr, gu.ptr, n)?;
    let (mut h, mut dg, mut du) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
    swiglu::forward(&mut h, &g.values, &u.values);
    swiglu::backward(&mut dg, &mut du, &dh.values, &g.values, &u.values);
    checks.push(compare("swiglu forward (bf16)", &shape, &bf16s(gpu, &gh)?, &h, BF16_TOLERANCE));
    checks.push(compare("swiglu backward dgate (bf16)", &shape, &bf16s(gpu, &gdg)?, &dg, BF16_TOLERANCE));
    checks.push(compare("swiglu backward dup (bf16)", &shape, &bf16s(gpu, &gdu)?, &du, BF16_TOLERANCE));
    ops.add(gdg.ptr, gdh.ptr, n)?;
    let sum: Vec<f64> = dg.iter().zip(&dh.values).map(|(a, b)| a + b).collect();
    checks.push(compare("add (bf16)", &shape, &bf16s(gpu, &gdg)?, &sum, BF16_TOLERANCE));

    // Embedding
    let (vocab, d, rows) = (1000, 256, 512);
    let shape = format!("vocab {vocab} d {d} rows {rows}");
    let table = r.take(vocab * d, 1.0);
    let tokens: Vec<u32> = (0..rows as u64).map(|i| (mix(r.seed, 99, i) % vocab as u64) as u32).collect();
    let dx = r.take(rows * d, 1.0);
    let (gt, gtok, gdx) = (gpu.upload(&table.bits)?, gpu.upload(&tokens)?, gpu.upload(&dx.bits)?);
    let gx = gpu.alloc(rows * d * 2)?;
    let gdt = gpu.upload(&vec![0f32; vocab * d])?;
    ops.embedding_forward(gx.ptr, gt.ptr, gtok.ptr, rows, d)?;
    ops.embedding_backward(gdt.ptr, gdx.ptr, gtok.ptr, rows, d)?;
    let (mut x, mut dt) = (vec![0.0; rows * d], vec![0.0; vocab * d]);
    embedding::forward(&mut x, &table.values, &tokens, d);
    embedding::backward(&mut dt, &dx.values, &tokens, d);
    checks.push(compare("embedding forward (bf16)", &shape, &bf16s(gpu, &gx)?, &x, BF16_TOLERANCE));
    checks.push(compare("embedding backward (fp32)", &shape, &f32s(gpu, &gdt)?, &dt, F32_TOLERANCE));

    // Cross-entropy over the Llama vocabulary, a quarter of the positions ignored
    let (rows, vocab) = (64, 32000);
    let shape = format!("rows {rows} vocab {vocab}");
    let logits = r.take(rows * vocab, 8.0);
    let labels: Vec<i32> =
        (0..rows as u64).map(|i| if i % 4 == 3 { IGNORE } else { (mix(r.seed, 77, i) % vocab as u64) as i32 }).collect();
    let counted = labels.iter().filter(|&&l| l != IGNORE).count();
    let (gl, glab, gloss) = (gpu.upload(&logits.bits)?, gpu.upload(&labels)?, gpu.alloc(rows * 4)?);
    ops.cross_entropy(gl.ptr, gloss.ptr, glab.ptr, rows, vocab, 1.0 / counted as f64)?;
    let mut grad = logits.values.clone();
    let mean = cross_entropy::mean_loss(&mut grad, &labels, vocab);
    let gpu_mean = f32s(gpu, &gloss)?.iter().sum::<f64>() / counted as f64;
    checks.push(compare("cross-entropy mean loss (fp32)", &shape, &[gpu_mean], &[mean], F32_TOLERANCE));
    checks.push(compare("cross-entropy dlogits (bf16)", &shape, &bf16s(gpu, &gl)?, &grad, BF16_TOLERANCE));

    // Causal attention, forward and backward: GQA with four query heads per KV head; a
    // sequence that ends inside a tile (the kernels' 64- and 32-row tiles); Llama's head_dim 128.
    let shapes = [
        attention::Shape { batch: 2, seq: 128, heads: 8, kv_heads: 2, head_dim: 64 },
        attention::Shape { batch: 1, seq: 200, heads: 4, kv_heads: 4, head_dim: 128 },
        attention::Shape { batch: 2, seq: 77, heads: 4, kv_heads: 1, head_dim: 16 },
    ];
    for sh in shapes {
        checks.extend(attention_checks(gpu, &ops, &mut r, sh)?);
    }

    // AdamW (two steps) and the sum of squares behind the gradient norm
    let n = 1 << 20;
    let shape = format!("n {n}");
    let opt = AdamW { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1 };
    let p0: Vec<f32> = r.take(n, 1.0).values.iter().map(|&v| v as f32).collect();
    let grads: Vec<f32> = r.take(n, 1.0).values.iter().map(|&v| v as f32).collect();
    let (gp, gg, gm, gv) = (gpu.upload(&p0)?, gpu.upload(&grads)?, gpu.upload(&vec![0f32; n])?, gpu.upload(&vec![0f32; n])?);
    let gpb = gpu.alloc(n * 2)?;
    let (mut p, mut m, mut v) = (p0.clone(), vec![0f32; n], vec![0f32; n]);
    for t in 1..=2 {
        ops.adamw(&opt, gp.ptr, gpb.ptr, gg.ptr, gm.ptr, gv.ptr, n, t, true, 0.5)?;
        opt.step(&mut p, &grads, &mut m, &mut v, &vec![true; n], t, 0.5);
    }
    let want: Vec<f64> = p.iter().map(|&x| x as f64).collect();
    checks.push(compare("adamw params (fp32)", &shape, &f32s(gpu, &gp)?, &want, F32_TOLERANCE));
    checks.push(compare("adamw bf16 copy", &shape, &bf16s(gpu, &gpb)?, &want, BF16_TOLERANCE));
    let total = gpu.upload(&[0f64])?;
    ops.sum_squares(total.ptr, gg.ptr, n)?;
    let want = grads.iter().map(|&g| g as f64 * g as f64).sum::<f64>();
    checks.push(compare("sum of squares (fp64)", &shape, &gpu.download::<f64>(&total)?, &[want], F32_TOLERANCE));
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

/// Byte counts must agree exactly (any difference of bytes up to 2^40 is above this).
pub const EXACT: f64 = 1e-13;

/// One tiny-model step (loss and every parameter's gradient) against the CPU model in f64 on
/// the same bf16 weights, then 50 training steps' losses against the CPU trainer's.
fn model_checks(gpu: &Gpu, seed: u64) -> Result<Vec<Check>> {
    use crate::model::config::LlamaConfig;
    use crate::model::cpu_ops::{forward_backward, Batch};
    use crate::train::data::{synthetic_batch, Source};
    use crate::dist::ranks::Alone;
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
    let gpu_losses: Vec<f64> = gpu_trainer::train(gpu, &model, &run, &Source::Synthetic { seed }, &Alone, false, &mut |_| {})?.0.iter().map(|r| r.loss).collect();
    let cpu_losses: Vec<f64> = cpu_trainer::train(&config, &run, seed, &Source::Synthetic { seed }, &Alone, &mut |_| {})?.iter().map(|r| r.loss).collect();
    checks.push(compare("50-step loss curve vs CPU trainer", &shape, &gpu_losses, &cpu_losses, STEP_TOLERANCE));
    drop(model);

    // The ZeRO stages on one GPU run the same schedule with copies for collectives: unit
    // slots, shards and their bookkeeping must reproduce stage 0's curve, up to atomics' order.
    // The last also puts both layers in one bucket.
    for (stage, bucket_layers) in [(1, 1), (2, 1), (3, 1), (3, 2)] {
        let run = RunConfig { zero: stage, bucket_layers, ..run.clone() };
        let model = build(&run, &mut checks)?;
        let losses: Vec<f64> = gpu_trainer::train(gpu, &model, &run, &Source::Synthetic { seed }, &Alone, false, &mut |_| {})?.0.iter().map(|r| r.loss).collect();
        let name = format!("ZeRO-{stage}, {bucket_layers}-layer buckets vs 0");
        checks.push(compare(&name, &shape, &losses, &gpu_losses, REORDER_TOLERANCE));
    }
    Ok(checks)
}

/// The table rank 0 prints.
pub fn table(checks: &[Check]) -> String {
    let mut out = format!("# {:<32} {:<30} {:>10} {:>10} {:>9}  result\n", "op", "shape", "rel err", "max |err|", "limit");
    for c in checks {
        let verdict = if c.passed() {
            "PASS".to_string()
        } else {
            format!("FAIL (element {}: got {:e}, want {:e})", c.worst.0, c.worst.1, c.worst.2)
        };
        out += &format!("  {:<32} {:<30} {:>10.2e} {:>10.2e} {:>9.0e}  {verdict}\n", c.op, c.shape, c.rel_err, c.max_abs_err, c.tolerance);
    }
    out
}

/// The flash attention kernels against the CPU reference on one shape: o and lse from the
/// forward, dq dk dv from the backward (which reads the GPU's own o and lse).
fn attention_checks(gpu: &Gpu, ops: &ModelOps, r: &mut Inputs, sh: attention::Shape) -> Result<Vec<Check>> {
    let shape = format!("b {} t {} h {}/{} kv hd {}", sh.batch, sh.seq, sh.heads, sh.kv_heads, sh.head_dim);
    let (nq, nkv, rows) = (sh.batch * sh.seq * sh.heads * sh.head_dim, sh.batch * sh.seq * sh.kv_heads * sh.head_dim, sh.batch * sh.heads * sh.seq);
    let (q, k, v, d_o) = (r.take(nq, 1.0), r.take(nkv, 1.0), r.take(nkv, 1.0), r.take(nq, 1.0));
    let (gq, gk, gv, gdo) = (gpu.upload(&q.bits)?, gpu.upload(&k.bits)?, gpu.upload(&v.bits)?, gpu.upload(&d_o.bits)?);
    let (go, glse, gdelta) = (gpu.alloc(nq * 2)?, gpu.alloc(rows * 4)?, gpu.alloc(rows * 4)?);
    let (gdq, gdk, gdv) = (gpu.alloc(nq * 2)?, gpu.alloc(nkv * 2)?, gpu.alloc(nkv * 2)?);
    cuda_attention::forward(ops, go.ptr, glse.ptr, gq.ptr, gk.ptr, gv.ptr, sh)?;
    cuda_attention::backward(ops, gdq.ptr, gdk.ptr, gdv.ptr, gdo.ptr, gq.ptr, gk.ptr, gv.ptr, go.ptr, glse.ptr, gdelta.ptr, sh)?;
    let (mut o, mut lse) = (vec![0.0; nq], vec![0.0; rows]);
    attention::forward(&mut o, &mut lse, &q.values, &k.values, &v.values, sh);
    let (mut dq, mut dk, mut dv) = (vec![0.0; nq], vec![0.0; nkv], vec![0.0; nkv]);
    attention::backward(&mut dq, &mut dk, &mut dv, &d_o.values, &q.values, &k.values, &v.values, &o, &lse, sh);
    Ok(vec![
        compare("attention forward (bf16 o)", &shape, &bf16s(gpu, &go)?, &o, BF16_TOLERANCE),
        compare("attention forward lse (fp32)", &shape, &f32s(gpu, &glse)?, &lse, F32_TOLERANCE),
        compare("attention backward dq (bf16)", &shape, &bf16s(gpu, &gdq)?, &dq, BF16_TOLERANCE),
        compare("attention backward dk (bf16)", &shape, &bf16s(gpu, &gdk)?, &dk, BF16_TOLERANCE),
        compare("attention backward dv (bf16)", &shape, &bf16s(gpu, &gdv)?, &dv, BF16_TOLERANCE),
    ])
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparison_rules() {
        assert!(compare("x", "", &[1.0, 2.0], &[1.0, 2.0], 1e-5).passed());
        assert!(!compare("x", "", &[1.1, 2.0], &[1.0, 2.0], 1e-2).passed());
        assert!(!compare("x", "", &[f64::NAN, 2.0], &[1.0, 2.0], 1.0).passed());
        let c = compare("x", "", &[3.0, 4.0], &[0.0, 4.0], 1.0);
        assert!((c.rel_err - 0.75).abs() < 1e-12);
        assert_eq!(c.worst, (0, 3.0, 0.0));
        assert!(table(&[compare("op", "s", &[1.0], &[1.0], 1e-5)]).contains("PASS"));
    }
}
