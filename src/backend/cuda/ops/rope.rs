//! Rotary position embedding, in place, both directions (kernels/rope.cu).

use super::super::kernels::{launch, per_row, ModelOps, OpSource, THREADS};
use anyhow::{ensure, Result};
use cudarc::driver::PushKernelArg;

pub fn source() -> OpSource {
    OpSource::plain(include_str!("../../../../kernels/rope.cu"), &["rope"])
}

impl ModelOps<'_> {
    /// In place on [rows, heads, head_dim]; `backward` applies the inverse rotation.
    #[allow(clippy::too_many_arguments)]
    pub fn rope(&self, x: u64, rows: usize, seq: usize, heads: usize, head_dim: usize, theta: f64, backward: bool) -> Result<()> {
        let half = head_dim / 2;
        ensure!(half > 0 && half <= 1024, "head_dim {head_dim} outside the RoPE kernel's 2..2048");
        // A multiple of the pairs per head: each thread keeps one pair index.
        let threads = (half * (THREADS as usize / half).max(1)) as u32;
        let (seq, heads, hd, theta) = (seq as i32, heads as i32, head_dim as i32, theta as f32);
        let sign = if backward { -1f32 } else { 1f32 };
        launch!(self, "rope", per_row(rows, threads), x, seq, heads, hd, theta, sign)
    }
}
