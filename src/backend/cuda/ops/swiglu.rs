//! SwiGLU, h = silu(gate) ⊙ up, forward and backward (kernels/swiglu.cu), 8 bf16 per access.

use super::super::check::{bf16s, compare, Check, Inputs, BF16_TOLERANCE};
use super::super::kernels::{aligned_16, launch, ModelOps, OpSource};
use super::super::view::{lengths, View};
use crate::backend::cpu::swiglu;
use anyhow::Result;
use cudarc::driver::PushKernelArg;
use half::bf16;

pub fn source() -> OpSource {
    OpSource::plain(include_str!("../../../../kernels/swiglu.cu"), &["swiglu_forward", "swiglu_backward"])
}

impl ModelOps<'_> {
    pub fn swiglu_forward(&self, h: View<bf16>, gate: View<bf16>, up: View<bf16>) -> Result<()> {
        let n = h.len();
        lengths("swiglu", &[(gate.len(), n, "gate"), (up.len(), n, "up")])?;
        let (h, gate, up) = (h.ptr(), gate.ptr(), up.ptr());
        aligned_16(&[h, gate, up])?;
        let n = n as u64;
        launch!(self, "swiglu_forward", self.elementwise(n.div_ceil(8)), h, gate, up, n)
    }

    pub fn swiglu_backward(&self, dgate: View<bf16>, dup: View<bf16>, dh: View<bf16>, gate: View<bf16>, up: View<bf16>) -> Result<()> {
        let n = dh.len();
        lengths("swiglu backward", &[(dgate.len(), n, "dgate"), (dup.len(), n, "dup"), (gate.len(), n, "gate"), (up.len(), n, "up")])?;
        let (dgate, dup, dh, gate, up) = (dgate.ptr(), dup.ptr(), dh.ptr(), gate.ptr(), up.ptr());
        aligned_16(&[dgate, dup, dh, gate, up])?;
        let n = n as u64;
        launch!(self, "swiglu_backward", self.elementwise(n.div_ceil(8)), dgate, dup, dh, gate, up, n)
    }
}

/// 8 elements per step, and a tail.
pub fn checks(ops: &ModelOps, r: &mut Inputs) -> Result<Vec<Check>> {
    let gpu = ops.gpu();
    let n = 256 * 1024 + 5;
    let shape = format!("n {n}");
    let (g, u, dh) = (r.take(n, 4.0), r.take(n, 1.0), r.take(n, 1.0));
    let (gg, gu, gdh) = (gpu.upload(&g.bits)?, gpu.upload(&u.bits)?, gpu.upload(&dh.bits)?);
    let (gh, gdg, gdu) = (gpu.alloc(n * 2)?, gpu.alloc(n * 2)?, gpu.alloc(n * 2)?);
    ops.swiglu_forward(gh.view(), gg.view(), gu.view())?;
    ops.swiglu_backward(gdg.view(), gdu.view(), gdh.view(), gg.view(), gu.view())?;
    let (mut h, mut dg, mut du) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
    swiglu::forward(&mut h, &g.values, &u.values);
    swiglu::backward(&mut dg, &mut du, &dh.values, &g.values, &u.values);
    Ok(vec![
        compare("swiglu forward (bf16)", &shape, &bf16s(gpu, &gh)?, &h, BF16_TOLERANCE),
        compare("swiglu backward dgate (bf16)", &shape, &bf16s(gpu, &gdg)?, &dg, BF16_TOLERANCE),
        compare("swiglu backward dup (bf16)", &shape, &bf16s(gpu, &gdu)?, &du, BF16_TOLERANCE),
    ])
}
