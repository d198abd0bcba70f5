//! The model's GPU op set, loaded: every op file's kernels (ops/, launchers beside their
//! sources) compiled as one module, and cuBLASLt for the matrix multiplies (gemm.rs).

use super::gemm::Gemm;
pub use super::kernels::ModelOps;
use super::kernels::{compile, target};
use super::op_timer::OpTimer;
use super::ops;
use super::{DeviceBuffer, Gpu};
use anyhow::{Context, Result};
use cudarc::driver::sys::CUfunction_attribute;

/// The model's kernels: the shared bf16 helpers, then every op file's source (ops/).
pub fn model_source() -> String {
    let mut source = include_str!("../../../kernels/bf16.cuh").to_string();
    for op in ops::all() {
        source += "\n";
        source += &op.source;
    }
    source
}

/// Every kernel the model source defines, with the dynamic shared memory (bytes) it launches with.
pub fn model_kernels() -> Vec<(String, u32)> {
    ops::all().into_iter().flat_map(|op| op.kernels).collect()
}

impl<'g> ModelOps<'g> {
    /// The model's kernels on `gpu`, and cuBLASLt with `gemm_workspace` (gemm::WORKSPACE_BYTES).
    pub fn load(gpu: &'g Gpu, gemm_workspace: DeviceBuffer) -> Result<ModelOps<'g>> {
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
        let timer = OpTimer::new(gpu.ctx.clone(), gpu.stream.clone());
        let hopper = target(major, minor) == "sm_90a";
        Ok(ModelOps { gpu, _module: module, functions, gemm: Gemm::new(gpu, gemm_workspace)?, hopper, timer })
    }
}
