//! The model's GPU op set: launch wrappers of kernels/*.cu (bf16 activations, fp32 gradients
//! of parameters) and cuBLASLt matrix multiplies. Arguments are device addresses; each op's
//! CPU twin in backend/cpu/ is its reference (selftest.rs compares them).

use super::attention;
use super::gemm::Gemm;
pub use super::kernels::ModelOps;
use super::kernels::{aligned_16, compile, launch, THREADS};
use super::op_timer::OpTimer;
use super::Gpu;
use crate::backend::cpu::adamw::AdamW;
use anyhow::{ensure, Context, Result};
use cudarc::driver::sys::CUfunction_attribute;
use cudarc::driver::{LaunchConfig, PushKernelArg};
use std::rc::Rc;

/// Rows each RMSNorm-backward block reduces before adding its gain gradient.
/// RMSNorm backward blocks: enough to fill every SM several times over (a block's rows run one
/// after another), few enough that the per-block dw atomics stay cheap.
const RMS_BACKWARD_BLOCKS: usize = 512;

/// Columns of a row that each RMSNorm-backward thread holds in registers (kernels/rmsnorm.cu:
/// 8 × RMS_CHUNKS).
const RMS_COLUMNS_PER_THREAD: usize = 16;

/// Threads per row for the RMSNorm kernels, which read rows of `d` 8 bf16 at a time.
fn rms_threads(d: usize) -> Result<u32> {
    ensure!(d % 8 == 0, "the RMSNorm kernels need a width that is a multiple of 8, not {d}");
    let threads = d.div_ceil(RMS_COLUMNS_PER_THREAD).next_multiple_of(32).clamp(THREADS as usize, 1024);
    ensure!(d <= RMS_COLUMNS_PER_THREAD * threads, "row width {d} above the RMSNorm kernels' 16384");
    Ok(threads as u32)
}

fn elementwise(n: u64) -> LaunchConfig {
    let blocks = n.div_ceil(THREADS as u64).clamp(1, 132 * 32) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 }
}

fn per_row(rows: usize, threads: u32) -> LaunchConfig {
    LaunchConfig { grid_dim: (rows as u32, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 }
}

/// The model's kernels, one file per op family, after the shared bf16 helpers; attention's
/// tile geometry comes from attention.rs, so Rust and CUDA cannot disagree on it.
pub fn model_source() -> String {
    [
        include_str!("../../../kernels/bf16.cuh"),
        include_str!("../../../kernels/rmsnorm.cu"),
        include_str!("../../../kernels/rope.cu"),
        include_str!("../../../kernels/swiglu.cu"),
        include_str!("../../../kernels/embedding.cu"),
        include_str!("../../../kernels/cross_entropy.cu"),
        include_str!("../../../kernels/adamw.cu"),
        &attention::source_defines(),
        include_str!("../../../kernels/attention.cu"),
    ]
    .join("\n")
}

/// The model source's kernels other than attention's flash kernels (attention.rs lists those).
const ROW_KERNELS: [&str; 12] = [
    "rmsnorm_forward",
    "rmsnorm_backward",
    "rope",
    "swiglu_forward",
    "swiglu_backward",
    "embedding_forward",
    "embedding_backward",
    "cross_entropy",
    "adamw",
    "sum_squares",
    "attention_delta",
    "add_bf16",
];

/// Every kernel the model source defines, with the dynamic shared memory (bytes) it launches with.
pub fn model_kernels() -> Vec<(String, u32)> {
    ROW_KERNELS.iter().map(|name| (name.to_string(), 0)).chain(attention::flash_kernels()).collect()
}

impl<'g> ModelOps<'g> {
    pub fn load(gpu: &'g Gpu) -> Result<ModelOps<'g>> {
        let (major, minor) = gpu.compute_capability()?;
        let ptx = compile(&model_source(), "model.cu", major, minor)?;
        let module = gpu.ctx.load_module(ptx).context("cannot load the model kernels")?;
        let functions = model_kernels()
            .into_iter()
            .map(|(name, shared_bytes)| {
                let function = module.load_function(&name)?;
                if shared_bytes > 0 {
                    // Above 48 KiB a kernel must ask for its dynamic shared memory.
                    function
                        .set_attribute(CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, shared_bytes as i32)
                        .with_context(|| format!("{name} cannot have {shared_bytes} bytes of shared memory"))?;
                }
                Ok((name, function))
            })
            .collect::<Result<Vec<_>>>()?;
        let timer = Rc::new(OpTimer::new(gpu.ctx.clone(), gpu.stream.clone()));
        Ok(ModelOps { gpu, _module: module, functions, gemm: Gemm::new(gpu, timer)? })
    }

    #[allow(clippy::too_many_arguments)]
    pub fn rmsnorm_forward(&self, y: u64, inv_rms: u64, x: u64, w: u64, rows: usize, d: usize, eps: f64) -> Result<()> {
        let threads = rms_threads(d)?;
        aligned_16(&[y, x, w])?;
        let (d, eps) = (d as i32, eps as f32);
        launch!(self, "rmsnorm_forward", per_row(rows, threads), y, inv_rms, x, w, d, eps)
    }

    /// dw (fp32) is accumulated.
    #[allow(clippy::too_many_arguments)]
    pub fn rmsnorm_backward(&self, dx: u64, dw: u64, dy: u64, x: u64, w: u64, inv_rms: u64, rows: usize, d: usize) -> Result<()> {
        let threads = rms_threads(d)?;
        aligned_16(&[dx, dy, x, w])?;
        let per_block = rows.div_ceil(RMS_BACKWARD_BLOCKS);
        let blocks = rows.div_ceil(per_block);
        let (d, rows, per) = (d as i32, rows as i32, per_block as i32);
        launch!(self, "rmsnorm_backward", per_row(blocks, threads), dx, dw, dy, x, w, inv_rms, d, rows, per)
    }

    /// In place on [rows, heads, head_dim]; `backward` applies the inverse rotation.
    #[allow(clippy::too_many_arguments)]
    pub fn rope(&self, x: u64, rows: usize, seq: usize, heads: usize, head_dim: usize, theta: f64, backward: bool) -> Result<()> {
        let half = head_dim / 2;
        ensure!(half > 0 && half <= 1024, "head_dim {head_dim} outside the RoPE kernel's 2..2048");
        // A multiple of the pairs per head: each thread keeps one pair index.
        let threads = (half * (THREADS as usize / half).max(1)) as u32;
        let (seq, heads, hd, theta) = (seq as i32, heads as i32, head_dim as i32, theta as f32);
        let sign = if backward { -1f32 } else { 1f32 };
        launch!(self, "rope", per_row(rows, threads), x, seq, heads, hd, theta, sign)
    }

    pub fn swiglu_forward(&self, h: u64, gate: u64, up: u64, n: usize) -> Result<()> {
        aligned_16(&[h, gate, up])?;
        let n = n as u64;
        launch!(self, "swiglu_forward", elementwise(n.div_ceil(8)), h, gate, up, n)
    }

    pub fn swiglu_backward(&self, dgate: u64, dup: u64, dh: u64, gate: u64, up: u64, n: usize) -> Result<()> {
        aligned_16(&[dgate, dup, dh, gate, up])?;
        let n = n as u64;
        launch!(self, "swiglu_backward", elementwise(n.div_ceil(8)), dgate, dup, dh, gate, up, n)
    }

    pub fn embedding_forward(&self, x: u64, table: u64, tokens: u64, rows: usize, d: usize) -> Result<()> {
        let (rows, d) = (rows as u64, d as i32);
        launch!(self, "embedding_forward", elementwise(rows * d as u64), x, table, tokens, rows, d)
    }

    /// dtable (fp32) is accumulated.
    pub fn embedding_backward(&self, dtable: u64, dx: u64, tokens: u64, rows: usize, d: usize) -> Result<()> {
        let (rows, d) = (rows as u64, d as i32);
        launch!(self, "embedding_backward", elementwise(rows * d as u64), dtable, dx, tokens, rows, d)
    }

    /// Per-row losses to `losses` (fp32); logits become d(loss)/d(logits) × `scale`.
    pub fn cross_entropy(&self, logits: u64, losses: u64, labels: u64, rows: usize, vocab: usize, scale: f64) -> Result<()> {
        let (vocab, scale) = (vocab as i32, scale as f32);
        launch!(self, "cross_entropy", per_row(rows, 1024), logits, losses, labels, vocab, scale)
    }

    /// One AdamW step (t from 1) over `n` fp32 parameters, refreshing their bf16 copy.
    #[allow(clippy::too_many_arguments)]
    pub fn adamw(&self, opt: &AdamW, params: u64, params_bf16: u64, grads: u64, m: u64, v: u64, n: usize, t: u64, decay: bool, grad_scale: f64) -> Result<()> {
        let n = n as u64;
        let (lr, b1, b2, eps) = (opt.lr as f32, opt.beta1 as f32, opt.beta2 as f32, opt.eps as f32);
        let wd = if decay { opt.weight_decay as f32 } else { 0.0 };
        let (c1, c2) = ((1.0 - opt.beta1.powi(t as i32)) as f32, (1.0 - opt.beta2.powi(t as i32)) as f32);
        let scale = grad_scale as f32;
        launch!(self, "adamw", elementwise(n), params, params_bf16, grads, m, v, n, lr, b1, b2, eps, wd, c1, c2, scale)
    }

    /// Adds Σx² of `n` fp32 values into the fp64 at `total`.
    pub fn sum_squares(&self, total: u64, x: u64, n: usize) -> Result<()> {
        let n = n as u64;
        launch!(self, "sum_squares", elementwise(n), total, x, n)
    }

    /// y += x over `n` bf16 values.
    pub fn add(&self, y: u64, x: u64, n: usize) -> Result<()> {
        aligned_16(&[y, x])?;
        let n = n as u64;
        launch!(self, "add_bf16", elementwise(n.div_ceil(8)), y, x, n)
    }
}
