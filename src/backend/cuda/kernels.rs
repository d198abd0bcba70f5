//! Our CUDA kernels: sources embedded from kernels/, compiled by NVRTC for the GPU at hand
//! (sm_90 on Hopper), loaded once per rank.

use super::Gpu;
use anyhow::{Context, Result};
use cudarc::driver::{CudaFunction, CudaModule};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions, Ptx};
use std::sync::Arc;

pub const FILL_VERIFY_SOURCE: &str = include_str!("../../../kernels/fill_verify.cu");

/// The model's kernels, one file per op family, after the shared bf16 helpers.
pub fn model_source() -> String {
    [
        include_str!("../../../kernels/bf16.cuh"),
        include_str!("../../../kernels/rmsnorm.cu"),
        include_str!("../../../kernels/rope.cu"),
        include_str!("../../../kernels/swiglu.cu"),
        include_str!("../../../kernels/embedding.cu"),
        include_str!("../../../kernels/cross_entropy.cu"),
        include_str!("../../../kernels/adamw.cu"),
        include_str!("../../../kernels/attention.cu"),
    ]
    .join("\n")
}

/// The model source's kernels other than attention's flash kernels (super::attention lists those).
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
    ROW_KERNELS.iter().map(|name| (name.to_string(), 0)).chain(super::attention::flash_kernels()).collect()
}

/// Compiles `source` for compute capability `major.minor`; errors carry NVRTC's log.
pub fn compile(source: &str, name: &str, major: i32, minor: i32) -> Result<Ptx> {
    let opts = CompileOptions {
        options: vec![format!("--gpu-architecture=sm_{major}{minor}"), "--std=c++17".into()],
        name: Some(name.into()),
        ..Default::default()
    };
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
        Ok(FillVerify {
            fill_pattern: module.load_function("fill_pattern")?,
            count_wrong: module.load_function("count_wrong")?,
            _module: module,
        })
    }
}
