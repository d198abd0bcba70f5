//! The sum of a buffer's 32-bit words on the GPU (kernels/read_sum.cu): verify's read-only HBM
//! probe. Its CPU reference is `cpu_sum`; `check` compares the two on fresh random words.

use super::kernels::compile;
use super::{DeviceBuffer, Gpu};
use anyhow::{ensure, Context, Result};
use cudarc::driver::{CudaFunction, CudaModule, LaunchConfig, PushKernelArg};
use std::sync::Arc;

pub const SOURCE: &str = include_str!("../../../kernels/read_sum.cu");
const THREADS: u32 = 512;

pub struct ReadSum<'g> {
    gpu: &'g Gpu,
    _module: Arc<CudaModule>,
    function: CudaFunction,
    /// The u64 the blocks add their sums to.
    total: DeviceBuffer,
}

/// What the kernel computes: the wrapping sum of the words as u64.
pub fn cpu_sum(words: &[u32]) -> u64 {
    words.iter().fold(0u64, |s, &w| s.wrapping_add(w as u64))
}

impl<'g> ReadSum<'g> {
    pub fn load(gpu: &'g Gpu) -> Result<ReadSum<'g>> {
        let (major, minor) = gpu.compute_capability()?;
        let module = gpu.ctx.load_module(compile(SOURCE, "read_sum.cu", major, minor)?).context("cannot load the read_sum kernel")?;
        Ok(ReadSum { function: module.load_function("read_sum")?, _module: module, total: gpu.alloc(8)?, gpu })
    }

    /// Queues the sum of the first `bytes` of `buffer` (a multiple of 16) on the stream; its
    /// result is read by `result`.
    pub fn launch(&self, buffer: &DeviceBuffer, bytes: usize) -> Result<()> {
        ensure!(bytes % 16 == 0 && bytes <= buffer.bytes, "read_sum reads whole 16-byte words of its buffer: {bytes} of {} B", buffer.bytes);
        self.gpu.memset(self.total.ptr, 0, 8)?;
        let (data, n16, out) = (buffer.ptr, (bytes / 16) as u64, self.total.ptr);
        // Enough blocks to keep every SM's loads in flight, each thread a few strides.
        let blocks = n16.div_ceil(THREADS as u64 * 4).clamp(1, self.gpu.sm_count() as u64 * 4) as u32;
        let config = LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 };
        let mut b = self.gpu.stream.launch_builder(&self.function);
        b.arg(&data).arg(&n16).arg(&out);
        unsafe { b.launch(config) }.context("launching read_sum")?;
        Ok(())
    }

    /// The sum of the last launch (waits for it).
    pub fn result(&self) -> Result<u64> {
        Ok(self.gpu.download::<u64>(&self.total)?[0])
    }

    /// The GPU's sum of `count` words drawn from `seed` (count a multiple of 4) against the
    /// CPU's: Err names both where they differ.
    pub fn check(&self, seed: u64, count: usize) -> Result<std::result::Result<(), String>> {
        let words: Vec<u32> = (0..count as u64).map(|i| (crate::sweep::pattern::mix(seed, 0x5eed, i) >> 32) as u32).collect();
        let buffer = self.gpu.upload(&words)?;
        self.launch(&buffer, count * 4)?;
        let (gpu, cpu) = (self.result()?, cpu_sum(&words));
        Ok(if gpu == cpu { Ok(()) } else { Err(format!("the GPU summed {count} words from seed {seed} to {gpu}, the CPU to {cpu}")) })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_cpu_sum_neither_overflows_nor_loses_words() {
        assert_eq!(super::cpu_sum(&[u32::MAX; 4]), 4 * u32::MAX as u64);
        assert_eq!(super::cpu_sum(&[]), 0);
    }
}
