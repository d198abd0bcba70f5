//! Matrix multiplies on cuBLASLt (bf16 operands, fp32 accumulation), in the row-major terms of
//! backend/cpu/matmul.rs: y = x·Wᵀ, dx = dy·W, dW += dyᵀ·x (fp32). cuBLASLt is column-major: a
//! row-major [r, c] matrix is its column-major transpose, so each call computes Cᵀ = Bᵀ·Aᵀ.
//!
//! Epilogues: D = A·B + beta·C with C = D, so beta 1 fuses the residual add (forward,
//! input gradient) and the fp32 gradient accumulation into the product. Llama has no bias or
//! GELU for cuBLASLt's other epilogues to take.
//!
//! A product's descriptors are made once per geometry (shapes, strides, types, pointer
//! alignment) and kept: every step repeats the same products. Each geometry also keeps the
//! fastest of the heuristic's first few algorithms, timed with CUDA events on the real
//! operands: at once when the product overwrites its output (each candidate may run), and
//! otherwise over the geometry's first calls, one candidate per call, since an accumulating
//! product can run only once. Per-layer products settle in the first step; the head's, which
//! run once per micro-batch, in the first few.

use super::{DeviceBuffer, Gpu};
use anyhow::{bail, Context, Result};
use cudarc::cublaslt::{result, sys};
use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{CudaEvent, CudaStream};
use std::cell::RefCell;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::Arc;

pub use crate::backend::cpu::matmul::Dims;

/// cuBLASLt's scratch, NVIDIA's recommendation for Hopper. The planner counts it.
pub const WORKSPACE_BYTES: usize = 32 << 20;

/// Algorithms timed per geometry.
const CANDIDATES: usize = 4;

/// A bf16 column-major operand: address, leading dimension (elements), whether op() transposes it.
#[derive(Clone, Copy, Debug)]
struct Operand {
    ptr: u64,
    ld: usize,
    transposed: bool,
}

/// The column-major result: bf16 or fp32, overwritten (beta 0) or accumulated (beta 1).
#[derive(Clone, Copy, Debug)]
struct Output {
    ptr: u64,
    ld: usize,
    fp32: bool,
    beta: f32,
}

/// Everything a product's descriptors and algorithm depend on (not its addresses or scalars).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Geometry {
    mnk: (usize, usize, usize),
    a: (usize, bool),
    b: (usize, bool),
    c: (usize, bool),
    /// Alignment in bytes (up to 256) of A, B and C: the heuristic may only pick kernels that
    /// the actual addresses allow.
    align: [u32; 3],
}

fn alignment(ptr: u64) -> u32 {
    1u32 << ptr.trailing_zeros().min(8)
}

/// The descriptors of one geometry, its candidate algorithms (the heuristic's order) and,
/// once the trials are done, the fastest.
struct Plan {
    desc: sys::cublasLtMatmulDesc_t,
    layouts: [sys::cublasLtMatrixLayout_t; 3],
    candidates: Vec<sys::cublasLtMatmulAlgo_t>,
    /// (candidate, start, end) of each timed call so far.
    trials: Vec<(usize, CudaEvent, CudaEvent)>,
    chosen: Option<usize>,
}

impl Drop for Plan {
    fn drop(&mut self) {
        unsafe {
            for layout in self.layouts {
                let _ = result::destroy_matrix_layout(layout);
            }
            let _ = result::destroy_matmul_desc(self.desc);
        }
    }
}

/// cuBLASLt's handle, its workspace, and the plans made so far.
pub struct Gemm {
    handle: sys::cublasLtHandle_t,
    workspace: DeviceBuffer,
    gpu_stream: Arc<CudaStream>,
    plans: RefCell<HashMap<Geometry, Plan>>,
}

impl Drop for Gemm {
    fn drop(&mut self) {
        self.plans.borrow_mut().clear();
        unsafe {
            let _ = result::destroy_handle(self.handle);
        }
    }
}

const BF16: sys::cudaDataType = sys::cudaDataType::CUDA_R_16BF;
const F32: sys::cudaDataType = sys::cudaDataType::CUDA_R_32F;

/// A column-major layout of `rows`×`cols` with leading dimension `ld`.
fn layout(dtype: sys::cudaDataType, rows: usize, cols: usize, ld: usize) -> Result<sys::cublasLtMatrixLayout_t> {
    Ok(result::create_matrix_layout(dtype, rows as u64, cols as u64, ld as i64)?)
}

impl Plan {
    fn new(handle: sys::cublasLtHandle_t, g: &Geometry) -> Result<Plan> {
        use sys::cublasLtMatmulDescAttributes_t::*;
        use sys::cublasLtMatmulPreferenceAttributes_t::*;
        let (m, n, k) = g.mnk;
        let desc = result::create_matmul_desc(sys::cublasComputeType_t::CUBLAS_COMPUTE_32F, F32)?;
        // Stored shapes: op(A) is m×k and op(B) k×n, so a transposed operand is stored k×m (n×k).
        let stored = |(ld, transposed): (usize, bool), rows: usize, cols: usize| {
            let (r, c) = if transposed { (cols, rows) } else { (rows, cols) };
            layout(BF16, r, c, ld)
        };
        let mut plan = Plan {
            desc,
            layouts: [stored(g.a, m, k)?, stored(g.b, k, n)?, layout(if g.c.1 { F32 } else { BF16 }, m, n, g.c.0)?],
            candidates: Vec::new(),
            trials: Vec::new(),
            chosen: None,
        };
        let preference = result::create_matmul_pref()?;
        unsafe {
            for (attr, t) in [(CUBLASLT_MATMUL_DESC_TRANSA, g.a.1), (CUBLASLT_MATMUL_DESC_TRANSB, g.b.1)] {
                let v = t as i32; // cublasOperation_t: CUBLAS_OP_N 0, CUBLAS_OP_T 1
                result::set_matmul_desc_attribute(desc, attr, &v as *const _ as *const c_void, std::mem::size_of_val(&v))?;
            }
            let workspace = WORKSPACE_BYTES as u64;
            result::set_matmul_pref_attribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace as *const u64 as *const c_void, 8)?;
            let [a, b, c] = g.align;
            for (attr, bytes) in [
                (CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, a),
                (CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, b),
                (CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, c),
                (CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, c),
            ] {
                result::set_matmul_pref_attribute(preference, attr, &bytes as *const u32 as *const c_void, 4)?;
            }
            let [la, lb, lc] = plan.layouts;
            let mut found: [sys::cublasLtMatmulHeuristicResult_t; CANDIDATES] = std::mem::zeroed();
            let mut count = 0;
            let status = sys::cublasLtMatmulAlgoGetHeuristic(handle, desc, la, lb, lc, lc, preference, CANDIDATES as i32, found.as_mut_ptr(), &mut count);
            let _ = result::destroy_matmul_pref(preference);
            status.result()?;
            let usable = found[..count as usize].iter().filter(|h| h.state == sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS);
            plan.candidates = usable.map(|h| h.algo).collect();
        }
        if plan.candidates.is_empty() {
            bail!("cuBLASLt has no algorithm for {m}x{n}x{k}");
        }
        Ok(plan)
    }

    /// The fastest timed candidate; the trials are over.
    fn choose(&mut self) -> Result<usize> {
        let mut best = (f32::INFINITY, 0);
        for (candidate, start, end) in self.trials.drain(..) {
            let ms = start.elapsed_ms(&end)?;
            if ms < best.0 {
                best = (ms, candidate);
            }
        }
        self.chosen = Some(best.1);
        Ok(best.1)
    }
}

impl Gemm {
    /// `workspace`: WORKSPACE_BYTES of the GPU for cuBLASLt's scratch.
    pub fn new(gpu: &Gpu, workspace: DeviceBuffer) -> Result<Gemm> {
        anyhow::ensure!(workspace.bytes >= WORKSPACE_BYTES, "cuBLASLt's workspace needs {WORKSPACE_BYTES} B");
        gpu.ctx.bind_to_thread()?;
        let handle = result::create_handle().context("cannot create a cuBLASLt handle")?;
        Ok(Gemm { handle, workspace, gpu_stream: gpu.stream.clone(), plans: RefCell::new(HashMap::new()) })
    }

    /// C (m×n) = op(A)·op(B) + beta·C, fp32 compute.
    fn product(&self, mnk: (usize, usize, usize), a: Operand, b: Operand, c: Output) -> Result<()> {
        let geometry = Geometry {
            mnk,
            a: (a.ld, a.transposed),
            b: (b.ld, b.transposed),
            c: (c.ld, c.fp32),
            align: [alignment(a.ptr), alignment(b.ptr), alignment(c.ptr)],
        };
        let mut plans = self.plans.borrow_mut();
        let plan = match plans.entry(geometry) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(Plan::new(self.handle, &geometry)?),
        };
        let run = |plan: &Plan, candidate: usize| self.run(plan, candidate, a, b, c);
        let chosen = match plan.chosen {
            Some(chosen) => chosen,
            None if c.beta == 0.0 => {
                // Each candidate twice (the first run may load its kernel), the second timed.
                for candidate in 0..plan.candidates.len() {
                    run(plan, candidate)?;
                    self.trial(plan, candidate, &run)?;
                }
                plan.choose()?
            }
            None if plan.trials.len() < plan.candidates.len() => return self.trial(plan, plan.trials.len(), &run),
            None => plan.choose()?,
        };
        // The output is the chosen algorithm's (candidates round differently).
        run(plan, chosen)
    }

    /// One run of `candidate` between CUDA events, kept with the plan's trials.
    fn trial(&self, plan: &mut Plan, candidate: usize, run: &dyn Fn(&Plan, usize) -> Result<()>) -> Result<()> {
        let event = || self.gpu_stream.context().new_event(Some(CUevent_flags::CU_EVENT_DEFAULT));
        let (start, end) = (event()?, event()?);
        start.record(&self.gpu_stream)?;
        run(plan, candidate)?;
        end.record(&self.gpu_stream)?;
        plan.trials.push((candidate, start, end));
        Ok(())
    }

    /// D = op(A)·op(B) + beta·C with C = D, by the plan's `candidate` algorithm.
    fn run(&self, plan: &Plan, candidate: usize, a: Operand, b: Operand, c: Output) -> Result<()> {
        let [la, lb, lc] = plan.layouts;
        let alpha = 1f32;
        let out = c.ptr as *mut c_void;
        unsafe {
            result::matmul(
                self.handle,
                plan.desc,
                &alpha as *const f32 as *const c_void,
                &c.beta as *const f32 as *const c_void,
                a.ptr as *const c_void,
                la,
                b.ptr as *const c_void,
                lb,
                out,
                lc,
                out,
                lc,
                &plan.candidates[candidate],
                self.workspace.ptr as *mut c_void,
                WORKSPACE_BYTES,
                self.gpu_stream.cu_stream() as sys::cudaStream_t,
            )
        }
        .context("cublasLtMatmul failed")
    }

    /// cuBLASLt's (m, n, k) of each product, which names it in the op timer.
    pub fn forward_mnk(d: Dims) -> (usize, usize, usize) {
        (d.n, d.m, d.k)
    }

    pub fn backward_input_mnk(d: Dims) -> (usize, usize, usize) {
        (d.k, d.m, d.n)
    }

    pub fn backward_weight_mnk(d: Dims) -> (usize, usize, usize) {
        (d.k, d.n, d.m)
    }

    /// y [m, n] (bf16) = x [m, k] · W [n, k]ᵀ, added to y's contents when `accumulate`
    /// (the residual add, fused into the product).
    pub fn forward(&self, y: u64, x: u64, w: u64, d: Dims, accumulate: bool) -> Result<()> {
        let a = Operand { ptr: w, ld: d.k, transposed: true };
        let b = Operand { ptr: x, ld: d.k, transposed: false };
        let beta = if accumulate { 1.0 } else { 0.0 };
        self.product(Gemm::forward_mnk(d), a, b, Output { ptr: y, ld: d.n, fp32: false, beta })
    }

    /// dx [m, k] (bf16) = dy [m, n] · W [n, k], added to dx's contents when `accumulate`.
    pub fn backward_input(&self, dx: u64, dy: u64, w: u64, d: Dims, accumulate: bool) -> Result<()> {
        let a = Operand { ptr: w, ld: d.k, transposed: false };
        let b = Operand { ptr: dy, ld: d.n, transposed: false };
        let beta = if accumulate { 1.0 } else { 0.0 };
        self.product(Gemm::backward_input_mnk(d), a, b, Output { ptr: dx, ld: d.k, fp32: false, beta })
    }

    /// dW [n, k] (fp32) += dy [m, n]ᵀ · x [m, k]
    pub fn backward_weight(&self, dw: u64, dy: u64, x: u64, d: Dims) -> Result<()> {
        let a = Operand { ptr: x, ld: d.k, transposed: false };
        let b = Operand { ptr: dy, ld: d.n, transposed: true };
        self.product(Gemm::backward_weight_mnk(d), a, b, Output { ptr: dw, ld: d.k, fp32: true, beta: 1.0 })
    }
}
