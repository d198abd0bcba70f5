//! Matrix multiplies on cuBLAS (bf16 operands, fp32 accumulation), in the row-major terms of
//! backend/cpu/matmul.rs: y = x·Wᵀ, dx = dy·W, dW += dyᵀ·x (fp32). cuBLAS is column-major: a
//! row-major [r, c] matrix is its column-major transpose, so each call computes Cᵀ = Bᵀ·Aᵀ.

use super::op_timer::OpTimer;
use super::Gpu;
use anyhow::{Context, Result};
use cudarc::cublas::{result, sys, CudaBlas};
use std::ffi::c_void;
use std::rc::Rc;

pub use crate::backend::cpu::matmul::Dims;

/// A bf16 column-major operand: address, leading dimension, batch stride (elements).
#[derive(Clone, Copy, Debug)]
pub struct Operand {
    pub ptr: u64,
    pub ld: usize,
    pub stride: usize,
    pub transposed: bool,
}

/// The column-major result: bf16 or fp32, overwritten (beta 0) or accumulated (beta 1).
#[derive(Clone, Copy, Debug)]
pub struct Output {
    pub ptr: u64,
    pub ld: usize,
    pub stride: usize,
    pub fp32: bool,
    pub beta: f32,
}

pub struct Gemm {
    blas: CudaBlas,
    pub timer: Rc<OpTimer>,
}

const BF16: sys::cudaDataType = sys::cudaDataType::CUDA_R_16BF;
const F32: sys::cudaDataType = sys::cudaDataType::CUDA_R_32F;


impl Gemm {
    pub fn new(gpu: &Gpu, timer: Rc<OpTimer>) -> Result<Gemm> {
        Ok(Gemm { blas: CudaBlas::new(gpu.stream.clone()).context("cannot create a cuBLAS handle")?, timer })
    }

    /// `batch` products C (m×n) = alpha·op(A)·op(B) + beta·C, fp32 compute.
    pub fn batched(&self, (m, n, k): (usize, usize, usize), a: Operand, b: Operand, c: Output, batch: usize, alpha: f32) -> Result<()> {
        let name = if batch > 1 { format!("cuBLAS batched {m}x{n}x{k} x{batch}") } else { format!("cuBLAS {m}x{n}x{k}") };
        self.timer.time(&name, || self.queue((m, n, k), a, b, c, batch, alpha))
    }

    fn queue(&self, (m, n, k): (usize, usize, usize), a: Operand, b: Operand, c: Output, batch: usize, alpha: f32) -> Result<()> {
        let t = |x: Operand| if x.transposed { sys::cublasOperation_t::CUBLAS_OP_T } else { sys::cublasOperation_t::CUBLAS_OP_N };
        unsafe {
            result::gemm_strided_batched_ex(
                *self.blas.handle(),
                t(a),
                t(b),
                m as i32,
                n as i32,
                k as i32,
                &alpha as *const f32 as *const c_void,
                a.ptr as *const c_void,
                BF16,
                a.ld as i32,
                a.stride as i64,
                b.ptr as *const c_void,
                BF16,
                b.ld as i32,
                b.stride as i64,
                &c.beta as *const f32 as *const c_void,
                c.ptr as *mut c_void,
                if c.fp32 { F32 } else { BF16 },
                c.ld as i32,
                c.stride as i64,
                batch as i32,
                sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .context("cublasGemmStridedBatchedEx failed")
    }

    fn single(&self, mnk: (usize, usize, usize), a: Operand, b: Operand, c: Output) -> Result<()> {
        self.batched(mnk, a, b, c, 1, 1.0)
    }

    /// y [m, n] (bf16) = x [m, k] · W [n, k]ᵀ, added to y's contents when `accumulate`
    /// (the residual add, fused into the product).
    pub fn forward(&self, y: u64, x: u64, w: u64, d: Dims, accumulate: bool) -> Result<()> {
        let a = Operand { ptr: w, ld: d.k, stride: 0, transposed: true };
        let b = Operand { ptr: x, ld: d.k, stride: 0, transposed: false };
        let beta = if accumulate { 1.0 } else { 0.0 };
        self.single((d.n, d.m, d.k), a, b, Output { ptr: y, ld: d.n, stride: 0, fp32: false, beta })
    }

    /// dx [m, k] (bf16) = dy [m, n] · W [n, k], added to dx's contents when `accumulate`.
    pub fn backward_input(&self, dx: u64, dy: u64, w: u64, d: Dims, accumulate: bool) -> Result<()> {
        let a = Operand { ptr: w, ld: d.k, stride: 0, transposed: false };
        let b = Operand { ptr: dy, ld: d.n, stride: 0, transposed: false };
        let beta = if accumulate { 1.0 } else { 0.0 };
        self.single((d.k, d.m, d.n), a, b, Output { ptr: dx, ld: d.k, stride: 0, fp32: false, beta })
    }

    /// dW [n, k] (fp32) += dy [m, n]ᵀ · x [m, k]
    pub fn backward_weight(&self, dw: u64, dy: u64, x: u64, d: Dims) -> Result<()> {
        let a = Operand { ptr: x, ld: d.k, stride: 0, transposed: false };
        let b = Operand { ptr: dy, ld: d.n, stride: 0, transposed: true };
        self.single((d.k, d.n, d.m), a, b, Output { ptr: dw, ld: d.k, stride: 0, fp32: true, beta: 1.0 })
    }
}
