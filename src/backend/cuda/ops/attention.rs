//! Causal GQA attention on the GPU: kernels/attention.cu's flash kernels. The forward saves
//! only each query row's log-sum-exp (`lse`, fp32 [batch, heads, seq]); the backward
//! recomputes the probabilities from it, tile by tile, so no seq × seq matrix is ever stored.
//! Layouts are backend/cpu/attention.rs's (the reference): q, o [batch, seq, heads, hd],
//! k, v [batch, seq, kv_heads, hd].

use super::super::kernels::{aligned_16, launch, per_warp, ModelOps, OpSource};
use crate::backend::cpu::attention::Shape;
use anyhow::{ensure, Result};
use cudarc::driver::{LaunchConfig, PushKernelArg};

/// Head dimensions the flash kernels are instantiated for (FLASH_KERNELS in attention.cu).
pub const HEAD_DIMS: [usize; 4] = [16, 32, 64, 128];

// Tile geometry: attention.cu gets it as its FLASH_* defines (source()).
/// Threads of a flash block: 4 warps.
const THREADS: u32 = 128;
/// Rows a block owns (and key rows per streamed tile).
const ROWS: usize = 64;
/// Query rows per streamed tile of the dK/dV kernel (registers).
const DKDV_QUERIES: usize = 32;
/// bf16 after each shared row: rows 16 bytes apart mod 128, so ldmatrix has no bank conflicts.
const PAD: usize = 8;

/// kernels/attention.cu after its FLASH_* defines (from the constants above, so Rust and CUDA
/// cannot disagree on the tiles), and its kernels: every flash kernel and the backward's delta.
pub fn source() -> OpSource {
    let defines = format!("#define FLASH_THREADS {THREADS}\n#define FLASH_ROWS {ROWS}\n#define FLASH_DKDV_QUERIES {DKDV_QUERIES}\n#define FLASH_PAD {PAD}\n");
    let mut kernels = flash_kernels();
    kernels.push(("attention_delta".to_string(), 0));
    OpSource { source: defines + include_str!("../../../../kernels/attention.cu"), kernels }
}

/// Bytes of one shared tile of `rows` rows of `hd` bf16 (padded).
fn tile_bytes(rows: usize, hd: usize) -> usize {
    rows * (hd + PAD) * 2
}

/// The flash kernels: forward, backward_dq, backward_dkdv.
const KINDS: [&str; 3] = ["forward", "backward_dq", "backward_dkdv"];

/// Dynamic shared memory of flash kernel `kind` at head dimension `hd`: the forward keeps a Q
/// tile and streams K and V tiles (two buffers each); dQ also keeps dO; dK/dV keeps K and V and
/// streams Q and dO tiles with their rows' lse and delta.
fn shared_bytes(kind: &str, hd: usize) -> u32 {
    let bytes = match kind {
        "forward" => (1 + 2 * 2) * tile_bytes(ROWS, hd),
        "backward_dq" => (2 + 2 * 2) * tile_bytes(ROWS, hd),
        _ => 2 * tile_bytes(ROWS, hd) + 2 * (2 * tile_bytes(DKDV_QUERIES, hd) + 2 * 4 * DKDV_QUERIES),
    };
    bytes as u32
}

/// Every flash kernel (all head dimensions) with the dynamic shared memory it launches with.
fn flash_kernels() -> Vec<(String, u32)> {
    HEAD_DIMS.iter().flat_map(|&hd| KINDS.map(|kind| (format!("flash_{kind}_{hd}"), shared_bytes(kind, hd)))).collect()
}

/// The launch of flash kernel `kind` for this shape: its name, and a block per ROWS rows of
/// the sequence for each of `heads` heads of every batch.
fn flash_launch(kind: &str, s: &Shape, heads: usize) -> Result<(String, LaunchConfig)> {
    ensure!(HEAD_DIMS.contains(&s.head_dim), "the attention kernels take head_dim {HEAD_DIMS:?}, not {}", s.head_dim);
    ensure!(s.kv_heads > 0 && s.heads % s.kv_heads == 0, "{} heads do not share {} KV heads evenly", s.heads, s.kv_heads);
    let grid = (s.seq.div_ceil(ROWS) as u32, (s.batch * heads) as u32, 1);
    let cfg = LaunchConfig { grid_dim: grid, block_dim: (THREADS, 1, 1), shared_mem_bytes: shared_bytes(kind, s.head_dim) };
    Ok((format!("flash_{kind}_{}", s.head_dim), cfg))
}

fn dims(s: &Shape) -> (i32, i32, i32, f32) {
    (s.seq as i32, s.heads as i32, s.kv_heads as i32, (1.0 / (s.head_dim as f64).sqrt()) as f32)
}

/// o (bf16) and lse (fp32) are overwritten.
pub fn forward(ops: &ModelOps, o: u64, lse: u64, q: u64, k: u64, v: u64, s: Shape) -> Result<()> {
    aligned_16(&[o, q, k, v])?;
    let (seq, heads, kv_heads, scale) = dims(&s);
    let (name, cfg) = flash_launch("forward", &s, s.heads)?;
    launch!(ops, &name, cfg, o, lse, q, k, v, seq, heads, kv_heads, scale)
}

/// dq, dk, dv (bf16) are overwritten; `delta` is fp32 scratch like `lse`. `o` and `lse` are
/// the forward's.
#[allow(clippy::too_many_arguments)]
pub fn backward(ops: &ModelOps, dq: u64, dk: u64, dv: u64, d_o: u64, q: u64, k: u64, v: u64, o: u64, lse: u64, delta: u64, s: Shape) -> Result<()> {
    aligned_16(&[dq, dk, dv, d_o, q, k, v])?;
    let (seq, heads, kv_heads, scale) = dims(&s);
    let rows = s.batch * s.seq * s.heads;
    let (n, hd) = (rows as u64, s.head_dim as i32);
    launch!(ops, "attention_delta", per_warp(rows), delta, d_o, o, n, seq, heads, hd)?;
    let (name, cfg) = flash_launch("backward_dq", &s, s.heads)?;
    launch!(ops, &name, cfg, dq, d_o, q, k, v, lse, delta, seq, heads, kv_heads, scale)?;
    let (name, cfg) = flash_launch("backward_dkdv", &s, s.kv_heads)?;
    launch!(ops, &name, cfg, dk, dv, d_o, q, k, v, lse, delta, seq, heads, kv_heads, scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_flash_kernel_fits_hoppers_shared_memory() {
        let kernels = flash_kernels();
        assert_eq!(kernels.len(), HEAD_DIMS.len() * KINDS.len());
        // A Hopper block may opt in to 227 KiB; two blocks of the largest share one SM.
        let largest = kernels.iter().map(|(_, bytes)| *bytes).max().unwrap();
        assert_eq!(largest, 6 * 64 * (128 + 8) * 2, "dQ at head_dim 128: Q, dO and two K/V buffers");
        assert!(2 * largest <= 227 * 1024);
    }
}
