//! The optimizer's kernels (kernels/adamw.cu): AdamW on fp32 master weights with their bf16
//! copy (eight elements per thread where the buffers are aligned for it), and the sum of squares
//! behind the global gradient norm.

use super::super::check::{bf16s, compare, f32s, Check, Inputs, BF16_TOLERANCE, F32_TOLERANCE};
use super::super::kernels::{launch, ModelOps, OpSource};
use super::super::view::{lengths, View};
use super::super::DeviceBuffer;
use crate::backend::cpu::adamw::AdamW;
use anyhow::Result;
use cudarc::driver::PushKernelArg;
use half::bf16;

pub fn source() -> OpSource {
    OpSource::plain(include_str!("../../../../kernels/adamw.cu"), &["adamw", "adamw_x8", "sum_squares"])
}

/// Which step of the optimizer, on what.
#[derive(Clone, Copy, Debug)]
pub struct AdamStep {
    /// From 1.
    pub t: u64,
    /// Whether weight decay applies (matrices and the embedding, not the norm gains).
    pub decay: bool,
    /// The gradients' factor (1 / ranks, and the clipping).
    pub grad_scale: f64,
}

impl ModelOps<'_> {
    /// One AdamW step over fp32 `params` with moments `[m, v]`, refreshing their bf16 copy.
    pub fn adamw(&self, opt: &AdamW, params: View<f32>, params_bf16: View<bf16>, grads: View<f32>, [m, v]: [View<f32>; 2], s: AdamStep) -> Result<()> {
        let n = params.len();
        lengths("adamw", &[(params_bf16.len(), n, "the bf16 copy"), (grads.len(), n, "grads"), (m.len(), n, "m"), (v.len(), n, "v")])?;
        let (lr, b1, b2, eps) = (opt.lr as f32, opt.beta1 as f32, opt.beta2 as f32, opt.eps as f32);
        let wd = if s.decay { opt.weight_decay as f32 } else { 0.0 };
        let (c1, c2) = ((1.0 - opt.beta1.powi(s.t as i32)) as f32, (1.0 - opt.beta2.powi(s.t as i32)) as f32);
        let scale = s.grad_scale as f32;
        let (params, params_bf16, grads, m, v, n) = (params.ptr(), params_bf16.ptr(), grads.ptr(), m.ptr(), v.ptr(), n as u64);
        // 16-byte fp32 and 8-byte bf16 accesses where every buffer allows them.
        let wide = [params, grads, m, v].iter().all(|p| p % 16 == 0) && params_bf16 % 8 == 0;
        let (name, cfg) = if wide { ("adamw_x8", self.elementwise(n.div_ceil(8))) } else { ("adamw", self.elementwise(n)) };
        launch!(self, name, cfg, params, params_bf16, grads, m, v, n, lr, b1, b2, eps, wd, c1, c2, scale)
    }

    /// Adds Σx² of the fp32 `x` into the fp64 `total` (x at any 4-byte offset: eight elements a
    /// thread from its first 16-byte boundary).
    pub fn sum_squares(&self, total: View<f64>, x: View<f32>) -> Result<()> {
        lengths("sum of squares", &[(total.len(), 1, "total")])?;
        let (total, n, x) = (total.ptr(), x.len() as u64, x.ptr());
        launch!(self, "sum_squares", self.elementwise(n.div_ceil(8)), total, x, n)
    }
}

/// Two AdamW steps eight elements per thread (with a tail of 3), and one element per thread (the
/// buffers one element off 16-byte alignment); the sum of squares from every offset mod 16 bytes,
/// over the whole buffer and over spans short enough to be all head and tail.
pub fn checks(ops: &ModelOps, r: &mut Inputs) -> Result<Vec<Check>> {
    let gpu = ops.gpu();
    // 5 quads and 3 elements past 2^20: the last pass has threads with one quad and no second.
    let n = (1 << 20) + 23;
    let opt = AdamW { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1 };
    let p0: Vec<f32> = r.take(n, 1.0).values.iter().map(|&v| v as f32).collect();
    let grads: Vec<f32> = r.take(n, 1.0).values.iter().map(|&v| v as f32).collect();
    let mut out = Vec::new();
    for (skip, path) in [(0, "x8"), (1, "x1")] {
        let shape = format!("n {} ({path})", n - skip);
        let (gp, gg, gm, gv) = (gpu.upload(&p0)?, gpu.upload(&grads)?, gpu.upload(&vec![0f32; n])?, gpu.upload(&vec![0f32; n])?);
        let gpb = gpu.alloc(n * 2)?;
        fn from(b: &DeviceBuffer, skip: usize) -> View<'_, f32> {
            b.view().slice(skip..b.view::<f32>().len())
        }
        let part = |b| from(b, skip);
        let (mut p, mut m, mut v) = (p0[skip..].to_vec(), vec![0f32; n - skip], vec![0f32; n - skip]);
        for t in 1..=2 {
            let bf16_copy = gpb.view::<bf16>().slice(skip..n);
            ops.adamw(&opt, part(&gp), bf16_copy, part(&gg), [part(&gm), part(&gv)], AdamStep { t, decay: true, grad_scale: 0.5 })?;
            opt.step(&mut p, &grads[skip..], &mut m, &mut v, &vec![true; n - skip], t, 0.5);
        }
        let want: Vec<f64> = p.iter().map(|&x| x as f64).collect();
        out.push(compare(&format!("adamw params (fp32, {path})"), &shape, &f32s(gpu, &gp)?[skip..], &want, F32_TOLERANCE));
        out.push(compare(&format!("adamw bf16 copy ({path})"), &shape, &bf16s(gpu, &gpb)?[skip..], &want, BF16_TOLERANCE));
    }
    // From 16-byte aligned and 1-3 elements past it (a head of 3-1 before the first 16-byte
    // boundary), and short spans (0-9 elements) from each of those starts: heads and tails alone.
    let gg = gpu.upload(&grads)?;
    for skip in 0..4 {
        let total = gpu.upload(&[0f64])?;
        ops.sum_squares(total.view(), gg.view().slice(skip..n))?;
        let squares = grads[skip..].iter().map(|&g| g as f64 * g as f64).sum::<f64>();
        out.push(compare("sum of squares (fp64)", &format!("n {} from {skip}", n - skip), &gpu.download::<f64>(&total)?, &[squares], F32_TOLERANCE));
    }
    let spans: Vec<(usize, usize)> = (0..4).flat_map(|skip| (0..10).map(move |len| (skip, len))).collect();
    let totals = gpu.upload(&vec![0f64; spans.len()])?;
    for (i, &(skip, len)) in spans.iter().enumerate() {
        ops.sum_squares(totals.view().slice(i..i + 1), gg.view().slice(skip..skip + len))?;
    }
    let want: Vec<f64> = spans.iter().map(|&(skip, len)| grads[skip..skip + len].iter().map(|&g| g as f64 * g as f64).sum()).collect();
    out.push(compare("sum of squares (fp64)", "n 0-9 from 0-3", &gpu.download::<f64>(&totals)?, &want, F32_TOLERANCE));
    Ok(out)
}
