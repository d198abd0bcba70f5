//! The model's GPU ops, one file each: its CUDA source (kernels/<op>.cu), the kernels it
//! defines and their launchers on ModelOps. The matrix multiplies are cuBLASLt (gemm.rs); each
//! op's CPU twin in backend/cpu/ is its reference (selftest.rs compares them).

pub mod adamw;
pub mod attention;
pub mod cross_entropy;
pub mod embedding;
pub mod residual;
pub mod rmsnorm;
pub mod rope;
pub mod swiglu;

use super::kernels::OpSource;

/// Every op's source and kernels, in the order the model source concatenates them.
pub fn all() -> Vec<OpSource> {
    vec![rmsnorm::source(), rope::source(), swiglu::source(), embedding::source(), cross_entropy::source(), adamw::source(), residual::source(), attention::source()]
}
