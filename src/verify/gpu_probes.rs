//! The probes of one rank's GPU, each timed with CUDA events on its stream over repetitions
//! after an untimed warm-up: bf16 GEMM 8192³ on cuBLASLt, HBM copy and read-only reduction,
//! pinned host-to-device and device-to-host copies. `repeat` (1; more under the slowprobe test
//! hook) runs each repetition's work that many times, of which one counts.

use super::figure::{Measurement, Subject, D2H, GEMM_BF16, H2D, HBM_COPY, HBM_READ};
use crate::backend::cpu::matmul::Dims;
use crate::backend::cuda::gemm::{Gemm, WORKSPACE_BYTES};
use crate::backend::cuda::op_timer::timed;
use crate::backend::cuda::read_sum::ReadSum;
use crate::backend::cuda::{DeviceBuffer, Gpu};
use crate::sweep::pattern::mix;
use anyhow::Result;
use half::bf16;

/// The GEMM's edge, as ../shared/anchors/ceilings.py measures it.
pub const GEMM_N: usize = 8192;
const GEMMS_PER_REPETITION: usize = 5;
/// Untimed GEMM repetitions first (about 0.7 s on an H200): a cold GPU runs its first tenth of a
/// second of GEMMs above the rate its power limit then holds (../shared/anchors/ceilings.py's 20
/// GEMMs measure that burst), and the probe measures the rate it holds.
const GEMM_WARMUP: usize = 20;
/// Each HBM buffer (the ceiling script's copy size).
pub const HBM_BYTES: usize = 2 << 30;
/// The pinned host buffer.
pub const PCIE_BYTES: usize = 256 << 20;
const WARMUP: usize = 3;
const REPETITIONS: usize = 20;

/// GPU memory the probes take at once (the HBM buffers and the GEMM's, the pinned copy's).
pub fn gpu_bytes() -> u64 {
    (2 * HBM_BYTES + 3 * GEMM_N * GEMM_N * 2 + WORKSPACE_BYTES + PCIE_BYTES) as u64
}

/// The GEMM's operands and cuBLASLt, ready to run y = x·wᵀ (bf16, fp32 accumulation) on random
/// values: data-dependent power draw is part of what a GEMM ceiling measures.
pub struct GemmLoad {
    gemm: Gemm,
    x: DeviceBuffer,
    w: DeviceBuffer,
    y: DeviceBuffer,
}

/// The FLOP of one GEMM.
pub fn gemm_flop() -> f64 {
    2.0 * (GEMM_N as f64).powi(3)
}

impl GemmLoad {
    pub fn new(gpu: &Gpu, seed: u64) -> Result<GemmLoad> {
        let random = |salt: u64| -> Vec<bf16> {
            (0..(GEMM_N * GEMM_N) as u64).map(|i| bf16::from_f64((mix(seed, salt, i) >> 11) as f64 / (1u64 << 52) as f64 - 1.0)).collect()
        };
        let (x, w) = (gpu.upload(&random(1))?, gpu.upload(&random(2))?);
        Ok(GemmLoad { gemm: Gemm::new(gpu, gpu.alloc(WORKSPACE_BYTES)?)?, x, w, y: gpu.alloc(GEMM_N * GEMM_N * 2)? })
    }

    pub fn run(&self) -> Result<()> {
        self.gemm.forward(self.y.ptr, self.x.ptr, self.w.ptr, Dims { m: GEMM_N, k: GEMM_N, n: GEMM_N }, false)
    }
}

/// What the GPU probes found: the measurements, and the read kernel's disagreement with the
/// CPU if any (a GPU that computes wrong fails verify).
pub struct GpuFindings {
    pub measurements: Vec<Measurement>,
    pub wrong_sum: Option<String>,
}

/// Every single-GPU probe of this rank, each phase named for the telemetry; `seed` draws the
/// GEMM's operands and the read kernel's check.
pub fn run(gpu: &Gpu, subject: &Subject, seed: u64, repeat: usize) -> Result<(GpuFindings, GemmLoad)> {
    let at = |kind, work: f64, seconds| Measurement::new(kind, subject.clone(), work, seconds);
    let mut out = Vec::new();

    crate::dist::phase::set("verify gemm");
    let load = GemmLoad::new(gpu, seed)?;
    let seconds = timed(gpu, GEMM_WARMUP * GEMMS_PER_REPETITION, REPETITIONS, GEMMS_PER_REPETITION * repeat, &mut || load.run())?;
    out.push(at(GEMM_BF16, GEMMS_PER_REPETITION as f64 * gemm_flop() / 1e12, seconds));

    crate::dist::phase::set("verify hbm");
    let (src, dst) = (gpu.alloc(HBM_BYTES)?, gpu.alloc(HBM_BYTES)?);
    gpu.memset(src.ptr, 0x5a, HBM_BYTES)?;
    let seconds = timed(gpu, WARMUP, REPETITIONS, repeat, &mut || gpu.copy_device(dst.ptr, src.ptr, HBM_BYTES))?;
    out.push(at(HBM_COPY, 2.0 * HBM_BYTES as f64 / 1e9, seconds));
    let reader = ReadSum::load(gpu)?;
    let wrong_sum = reader.check(seed, (1 << 20) + 4)?.err();
    let seconds = timed(gpu, WARMUP, REPETITIONS, repeat, &mut || reader.launch(&src, HBM_BYTES))?;
    out.push(at(HBM_READ, HBM_BYTES as f64 / 1e9, seconds));
    drop((src, dst));

    crate::dist::phase::set("verify pcie");
    let mut host = unsafe { gpu.ctx.alloc_pinned::<u8>(PCIE_BYTES) }?;
    let device = gpu.alloc(PCIE_BYTES)?;
    let stream = gpu.stream.cu_stream();
    let seconds =
        timed(gpu, WARMUP, REPETITIONS, repeat, &mut || Ok(unsafe { cudarc::driver::result::memcpy_htod_async(device.ptr, host.as_slice()?, stream) }?))?;
    out.push(at(H2D, PCIE_BYTES as f64 / 1e9, seconds));
    let seconds =
        timed(gpu, WARMUP, REPETITIONS, repeat, &mut || Ok(unsafe { cudarc::driver::result::memcpy_dtoh_async(host.as_mut_slice()?, device.ptr, stream) }?))?;
    out.push(at(D2H, PCIE_BYTES as f64 / 1e9, seconds));
    Ok((GpuFindings { measurements: out, wrong_sum }, load))
}
