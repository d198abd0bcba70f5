//! Every CUDA source in kernels/ compiles with NVRTC for Hopper (sm_90a, the target
//! kernels::target gives compute capability 9.0), without a GPU.
//! NVRTC comes from the pip wheel nvidia-cuda-nvrtc (scripts/setup.sh, scripts/env.sh).

use h200_mpibench::backend::cuda::kernels::{compile, FILL_VERIFY_SOURCE};
use h200_mpibench::backend::cuda::model_ops::{model_kernels, model_source};
use h200_mpibench::backend::cuda::read_sum;

fn compiles_with(source: &str, name: &str, kernels: &[String]) {
    assert!(
        unsafe { cudarc::nvrtc::sys::is_culib_present() },
        "libnvrtc not found: run scripts/setup.sh and `. scripts/env.sh` (puts the nvidia-cuda-nvrtc wheel on LD_LIBRARY_PATH)"
    );
    let ptx = compile(source, name, 9, 0).unwrap_or_else(|e| panic!("{e:#}"));
    let text = ptx.to_src();
    for kernel in kernels {
        assert!(text.contains(&format!(".entry {kernel}(")), "{kernel} missing from the PTX of {name}");
    }
    assert!(text.contains(".target sm_90a"), "{name}: PTX not built for sm_90a");
}

#[test]
fn sweep_kernels_compile_for_sm90a() {
    compiles_with(FILL_VERIFY_SOURCE, "fill_verify.cu", &["fill_pattern".into(), "count_wrong".into()]);
}

#[test]
fn model_kernels_compile_for_sm90a() {
    let names: Vec<String> = model_kernels().into_iter().map(|(name, _)| name).collect();
    compiles_with(&model_source(), "model.cu", &names);
}

#[test]
fn verify_kernels_compile_for_sm90a() {
    compiles_with(read_sum::SOURCE, "read_sum.cu", &["read_sum".into()]);
}
