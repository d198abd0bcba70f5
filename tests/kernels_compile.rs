//! Every CUDA source in kernels/ compiles with NVRTC for Hopper (sm_90), without a GPU.
//! NVRTC comes from the pip wheel nvidia-cuda-nvrtc (scripts/setup.sh, scripts/env.sh).

use h200_mpibench::backend::cuda::kernels::{compile, FILL_VERIFY_SOURCE};

#[test]
fn kernels_compile_for_sm90() {
    assert!(
        unsafe { cudarc::nvrtc::sys::is_culib_present() },
        "libnvrtc not found: run scripts/setup.sh and `. scripts/env.sh` (puts the nvidia-cuda-nvrtc wheel on LD_LIBRARY_PATH)"
    );
    let ptx = compile(FILL_VERIFY_SOURCE, "fill_verify.cu", 9, 0).unwrap_or_else(|e| panic!("{e:#}"));
    let text = ptx.to_src();
    for kernel in ["fill_pattern", "count_wrong"] {
        assert!(text.contains(&format!(".entry {kernel}")), "{kernel} missing from the PTX");
    }
    assert!(text.contains(".target sm_90"), "PTX not built for sm_90");
}
