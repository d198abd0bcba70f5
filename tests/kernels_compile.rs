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

/// The Hopper attention kernels issue wgmma and TMA copies on sm_90a and only there: on another
/// architecture the model source still compiles, without them. The sm_90a PTX is left in target/ptx/ for
/// `ptxas -arch=sm_90a -v` on a GPU host (registers, spills, wgmma serialisation warnings).
#[test]
fn hopper_kernels_use_wgmma_and_tma_on_sm90a_only() {
    let hopper = compile(&model_source(), "model.cu", 9, 0).unwrap().to_src();
    assert!(hopper.contains("wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16"), "no wgmma in the sm_90a PTX");
    assert!(hopper.contains("wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16"), "no m64n64 wgmma (the backward) in the sm_90a PTX");
    assert!(hopper.contains("cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"), "no TMA tile copy in the sm_90a PTX");
    assert!(hopper.contains("cp.async.bulk.tensor.1d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"), "no TMA run copy (lse, delta)");
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("../ptx");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("model_sm90a.ptx"), &hopper).unwrap();
    let ampere = compile(&model_source(), "model.cu", 8, 0).unwrap().to_src();
    assert!(!ampere.contains("wgmma") && !ampere.contains("cp.async.bulk") && ampere.contains(".entry hopper_backward_dkdv_128("));
}
