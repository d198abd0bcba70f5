//! The model's GPU ops, one file each: its CUDA source (kernels/<op>.cu), the kernels it
//! defines, their launchers on ModelOps (typed views, checked against the op's shape) and its
//! selftest checks against its CPU twin in backend/cpu/ (check.rs). The matrix multiplies are
//! cuBLASLt (gemm.rs).

pub mod adamw;
pub mod attention;
pub mod cross_entropy;
pub mod embedding;
pub mod matmul;
pub mod residual;
pub mod rmsnorm;
pub mod rope;
pub mod swiglu;
pub mod tensor_map;
pub mod wgmma;

use super::check::{Check, Inputs};
use super::kernels::{ModelOps, OpSource};
use anyhow::Result;

/// Every op's source and kernels, in the order the model source concatenates them.
pub fn all() -> Vec<OpSource> {
    vec![
        rmsnorm::source(),
        rope::source(),
        swiglu::source(),
        embedding::source(),
        cross_entropy::source(),
        adamw::source(),
        residual::source(),
        attention::source(),
    ]
}

/// Every op's checks, op by op, each handed to `on_checks` as its op completes.
pub fn checks(ops: &ModelOps, r: &mut Inputs, on_checks: &mut dyn FnMut(Vec<Check>)) -> Result<()> {
    type OpChecks = fn(&ModelOps, &mut Inputs) -> Result<Vec<Check>>;
    let all: [OpChecks; 9] = [
        matmul::checks,
        rmsnorm::checks,
        rope::checks,
        swiglu::checks,
        residual::checks,
        embedding::checks,
        cross_entropy::checks,
        attention::checks,
        adamw::checks,
    ];
    for op in all {
        on_checks(op(ops, r)?);
    }
    Ok(())
}
