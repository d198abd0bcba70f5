//! The model's matrix multiplies on cuBLAS (bf16 operands, fp32 accumulation), in the
//! row-major terms of backend/cpu/matmul.rs: y = x·Wᵀ, dx = dy·W, dW += dyᵀ·x (fp32).
//! cuBLAS is column-major, so each call computes the transposed product.

use super::Gpu;
use anyhow::{Context, Result};
use cudarc::cublas::{result, sys, CudaBlas};
use std::ffi::c_void;

pub use crate::backend::cpu::matmul::Dims;

pub struct Gemm {
    blas: CudaBlas,
}

const BF16: sys::cudaDataType = sys::cudaDataType::CUDA_R_16BF;
const F32: sys::cudaDataType = sys::cudaDataType::CUDA_R_32F;

impl Gemm {
    pub fn new(gpu: &Gpu) -> Result<Gemm> {
        Ok(Gemm { blas: CudaBlas::new(gpu.stream.clone()).context("cannot create a cuBLAS handle")? })
    }

    /// C (m×n, col-major, ldc) = alpha·op(A)·op(B) + beta·C, compute in fp32.
    #[allow(clippy::too_many_arguments)]
    fn gemm(&self, ta: bool, tb: bool, m: usize, n: usize, k: usize, a: u64, lda: usize, b: u64, ldb: usize, c: u64, c_type: sys::cudaDataType, ldc: usize, beta: f32) -> Result<()> {
        let op = |t| if t { sys::cublasOperation_t::CUBLAS_OP_T } else { sys::cublasOperation_t::CUBLAS_OP_N };
        let alpha = 1f32;
        unsafe {
            result::gemm_ex(
                *self.blas.handle(),
                op(ta),
                op(tb),
                m as i32,
                n as i32,
                k as i32,
                &alpha as *const f32 as *const c_void,
                a as *const c_void,
                BF16,
                lda as i32,
                b as *const c_void,
                BF16,
                ldb as i32,
                &beta as *const f32 as *const c_void,
                c as *mut c_void,
                c_type,
                ldc as i32,
                sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .context("cublasGemmEx failed")
    }

    /// y [m, n] (bf16) = x [m, k] · W [n, k]ᵀ
    pub fn forward(&self, y: u64, x: u64, w: u64, d: Dims) -> Result<()> {
        self.gemm(true, false, d.n, d.m, d.k, w, d.k, x, d.k, y, BF16, d.n, 0.0)
    }

    /// dx [m, k] (bf16) = dy [m, n] · W [n, k]
    pub fn backward_input(&self, dx: u64, dy: u64, w: u64, d: Dims) -> Result<()> {
        self.gemm(false, false, d.k, d.m, d.n, w, d.k, dy, d.n, dx, BF16, d.k, 0.0)
    }

    /// dW [n, k] (fp32) += dy [m, n]ᵀ · x [m, k]
    pub fn backward_weight(&self, dw: u64, dy: u64, x: u64, d: Dims) -> Result<()> {
        self.gemm(false, true, d.k, d.n, d.m, x, d.k, dy, d.n, dw, F32, d.k, 1.0)
    }
}
