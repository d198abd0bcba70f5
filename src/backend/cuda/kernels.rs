//! Our CUDA kernels, the registry every op file (ops/) launches through (a leaf: it knows no op):
//! NVRTC compilation for the GPU at hand (sm_90a on Hopper), the loaded model kernels by name,
//! the launch macro and the launch-geometry helpers the op files share.

use super::gemm::Gemm;
use super::op_timer::OpTimer;
use super::Gpu;
use anyhow::{ensure, Context, Result};
use cudarc::driver::{CudaFunction, CudaModule, LaunchConfig};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions, Ptx};
use std::sync::Arc;

/// Launches kernel `name` with the given arguments (named locals: they must outlive the launch).
macro_rules! launch {
    ($ops:expr, $name:expr, $cfg:expr, $($arg:ident),+) => {{
        let name: &str = $name;
        $ops.timer.time(|| name.to_string(), || {
            let mut b = $ops.gpu.stream.launch_builder($ops.function(name));
            $( b.arg(&$arg); )+
            let launched = unsafe { b.launch($cfg) }.map(|_| ());
            anyhow::Context::with_context(launched, || format!("launching {}", name))
        })
    }};
}
pub(super) use launch;

/// The model's loaded kernels (by name), cuBLASLt and the op timer: what every op file's
/// launchers run on. model_ops.rs loads it with the list of every op's kernels.
pub struct ModelOps<'g> {
    pub(super) gpu: &'g Gpu,
    pub(super) _module: Arc<CudaModule>,
    pub(super) functions: Vec<(String, CudaFunction)>,
    pub(super) gemm: Gemm,
    /// Compiled for sm_90a (kernels::target): the Hopper kernels may run.
    pub(super) hopper: bool,
    /// Times every launch and cuBLASLt call when enabled (`--profile`).
    pub timer: OpTimer,
}

impl<'g> ModelOps<'g> {
    pub fn gpu(&self) -> &'g Gpu {
        self.gpu
    }

    pub(super) fn function(&self, name: &str) -> &CudaFunction {
        &self.functions.iter().find(|(n, _)| n == name).expect("kernel listed in model_ops::model_kernels()").1
    }
}

/// One op file's CUDA: its source and the kernels it defines, each with the dynamic shared
/// memory (bytes) it launches with.
pub struct OpSource {
    pub source: String,
    pub kernels: Vec<(String, u32)>,
}

impl OpSource {
    /// A source whose kernels use no dynamic shared memory.
    pub fn plain(source: &str, kernels: &[&str]) -> OpSource {
        OpSource { source: source.to_string(), kernels: kernels.iter().map(|k| (k.to_string(), 0)).collect() }
    }
}

/// Threads per block of the row kernels (RMSNorm, cross-entropy) and the element-wise ones.
pub(super) const THREADS: u32 = 256;

/// CUDA's most threads in a block.
pub(super) const MAX_BLOCK_THREADS: usize = 1024;

impl ModelOps<'_> {
    /// A grid-stride launch over `n` items: enough blocks to fill every SM several times over.
    pub(super) fn elementwise(&self, n: u64) -> LaunchConfig {
        let blocks = n.div_ceil(THREADS as u64).clamp(1, self.gpu.sm_count() as u64 * 32) as u32;
        LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 }
    }
}

/// A block of `threads` per row.
pub(super) fn per_row(rows: usize, threads: u32) -> LaunchConfig {
    LaunchConfig { grid_dim: (rows as u32, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 }
}

/// The 8-wide bf16 kernels (RMSNorm, swiglu, add) and attention's tile copies move 16 bytes at a time.
pub(super) fn aligned_16(addresses: &[u64]) -> Result<()> {
    ensure!(addresses.iter().all(|a| a % 16 == 0), "8-wide bf16 kernels need 16-byte aligned buffers: {addresses:x?}");
    Ok(())
}

pub const FILL_VERIFY_SOURCE: &str = include_str!("../../../kernels/fill_verify.cu");

/// The NVRTC target of compute capability `major.minor`: sm_90a on Hopper, whose
/// architecture-specific instructions (wgmma, the tensor memory accelerator) the Hopper
/// attention kernels use; sm_XY elsewhere.
pub fn target(major: i32, minor: i32) -> String {
    match (major, minor) {
        (9, 0) => "sm_90a".into(),
        _ => format!("sm_{major}{minor}"),
    }
}

/// Compiles `source` for compute capability `major.minor` (`target`); errors carry NVRTC's log.
pub fn compile(source: &str, name: &str, major: i32, minor: i32) -> Result<Ptx> {
    let arch = format!("--gpu-architecture={}", target(major, minor));
    let opts = CompileOptions { options: vec![arch, "--std=c++17".into()], name: Some(name.into()), ..Default::default() };
    compile_ptx_with_opts(source, opts).map_err(|e| anyhow::anyhow!("NVRTC failed on {name}: {e}"))
}

pub struct FillVerify {
    _module: Arc<CudaModule>,
    pub fill_pattern: CudaFunction,
    pub count_wrong: CudaFunction,
}

impl FillVerify {
    pub fn load(gpu: &Gpu) -> Result<FillVerify> {
        let (major, minor) = gpu.compute_capability()?;
        let ptx = compile(FILL_VERIFY_SOURCE, "fill_verify.cu", major, minor)?;
        let module = gpu.ctx.load_module(ptx).context("cannot load fill_verify kernels")?;
        Ok(FillVerify { fill_pattern: module.load_function("fill_pattern")?, count_wrong: module.load_function("count_wrong")?, _module: module })
    }
}
