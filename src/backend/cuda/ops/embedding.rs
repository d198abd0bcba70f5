//! The token embedding: a lookup forward, an fp32 scatter-add backward (kernels/embedding.cu).

use super::super::kernels::{elementwise, launch, ModelOps, OpSource};
use anyhow::Result;
use cudarc::driver::PushKernelArg;

pub fn source() -> OpSource {
    OpSource::plain(include_str!("../../../../kernels/embedding.cu"), &["embedding_forward", "embedding_backward"])
}

impl ModelOps<'_> {
    pub fn embedding_forward(&self, x: u64, table: u64, tokens: u64, rows: usize, d: usize) -> Result<()> {
        let (rows, d) = (rows as u64, d as i32);
        launch!(self, "embedding_forward", elementwise(rows * d as u64), x, table, tokens, rows, d)
    }

    /// dtable (fp32) is accumulated.
    pub fn embedding_backward(&self, dtable: u64, dx: u64, tokens: u64, rows: usize, d: usize) -> Result<()> {
        let (rows, d) = (rows as u64, d as i32);
        launch!(self, "embedding_backward", elementwise(rows * d as u64), dtable, dx, tokens, rows, d)
    }
}
