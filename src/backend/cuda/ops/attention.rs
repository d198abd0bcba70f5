//! Causal GQA attention on the GPU: kernels/attention.cu's flash kernels, and on Hopper at
//! head_dim 64 and 128 kernels/attention_hopper.cu's wgmma ones. The forward saves only each query
//! row's log-sum-exp (`lse`, fp32 [batch, heads, seq]); the backward recomputes the
//! probabilities from it, tile by tile, so no seq × seq matrix is ever stored.
//! Layouts are backend/cpu/attention.rs's (the reference): q, o [batch, seq, heads, hd],
//! k, v [batch, seq, kv_heads, hd].

use super::super::check::{bf16s, compare, f32s, Check, Input, Inputs, BF16_TOLERANCE, F32_TOLERANCE};
use super::super::kernels::{aligned_16, launch, ModelOps, OpSource, THREADS as ELEMENT_THREADS};
use super::super::view::{lengths, View};
use super::tensor_map::{self, TensorMap};
use super::wgmma;
use crate::backend::cpu::attention::{self, Shape};
use anyhow::{ensure, Result};
use cudarc::driver::{LaunchConfig, PushKernelArg};
use half::bf16;

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

// The Hopper kernels (kernels/attention_hopper.cu, sm_90a): wgmma on 128-byte-swizzled tiles.
/// Head dimensions they are instantiated for (Llama's 128, and 64); the others take the flash
/// kernels on Hopper too.
pub const HOPPER_HEAD_DIMS: [usize; 2] = [64, 128];
/// Rows of a Hopper item (queries, or keys for dK/dV): two consumer warpgroups of 64.
const HOPPER_ROWS: usize = 128;
/// Keys per streamed K and V tile of the forward: S is one m64n128 wgmma product per warpgroup.
const HOPPER_KEYS: usize = 128;
/// Keys per streamed tile of the dQ kernel and queries per streamed tile of dK/dV: with S and dP
/// both live, 64 keeps a thread under 255 registers.
const HOPPER_DQ_KEYS: usize = 64;
const HOPPER_DKDV_QUERIES: usize = 64;
/// lse or delta values a dK/dV tile copies: its queries' from the 16-byte boundary at or below
/// the first, into buffers that start on 128-byte boundaries, as the tensor memory accelerator
/// needs.
const HOPPER_STATS_RUN: usize = HOPPER_DKDV_QUERIES + 32;
/// Threads of a Hopper block's two consumer warpgroups, and of its producer warpgroup (which
/// issues the copies and gives its registers to the consumers: setmaxnreg).
const HOPPER_THREADS: u32 = 256;
const HOPPER_PRODUCER_THREADS: u32 = 128;
/// Registers a thread after setmaxnreg: 65536 / 384 = 170 at launch (168 allocated), the
/// producers' 144 a thread given over to the consumers.
const HOPPER_PRODUCER_REGISTERS: u32 = 24;
const HOPPER_CONSUMER_REGISTERS: u32 = 240;
/// Blocks of a cluster that share the query heads of a GQA group in the dK/dV kernel (where the
/// group divides by it): a 70B layer's 8 KV heads make 128 blocks of 128 keys at batch 1, fewer
/// than the SMs, the first keys' blocks (which see every query of 8 heads) its critical path.
/// At that layer's backward, 2 measured 0.55 ms, 4 0.63 ms, no split 0.79 ms.
const HOPPER_DKDV_SPLIT: usize = 2;
/// Buffers of the streamed tiles (kernels/attention_hopper.cu's pipeline): the forward's K and V
/// tiles fit three beside the Q tile; four for the backward's smaller tiles (two passes for a
/// tile to land) measured 2.6 % slower than three.
const HOPPER_STAGES: usize = 3;
/// How far (log2 units) the Hopper forward lets a row's running maximum fall behind before the
/// rows of its warp rescale (kernels/attention.cu's softmax_tile): probabilities up to 2^8.
const HOPPER_SOFTMAX_SLACK: f32 = 8.0;
/// Bytes of streamed tiles (K and V, or Q and dO) a group of a persistent kernel's heads may
/// read together (kernels/attention_hopper.cu's ItemOrder): a third of an H200's 50 MB L2.
const HOPPER_L2_BYTES: usize = 16 << 20;

/// kernels/attention.cu and attention_hopper.cu after their FLASH_* and HOPPER_* defines (from
/// the constants above, so Rust and CUDA cannot disagree on the tiles) and the wgmma wrappers,
/// and their kernels: every flash kernel, the backward's delta, the Hopper kernels.
pub fn source() -> OpSource {
    let defines = format!(
        "#define FLASH_THREADS {THREADS}\n#define FLASH_ROWS {ROWS}\n#define FLASH_DKDV_QUERIES {DKDV_QUERIES}\n#define FLASH_PAD {PAD}\n\
         #define HOPPER_ROWS {HOPPER_ROWS}\n#define HOPPER_KEYS {HOPPER_KEYS}\n#define HOPPER_DQ_KEYS {HOPPER_DQ_KEYS}\n\
         #define HOPPER_DKDV_QUERIES {HOPPER_DKDV_QUERIES}\n#define HOPPER_THREADS {HOPPER_THREADS}\n\
         #define HOPPER_PRODUCER_THREADS {HOPPER_PRODUCER_THREADS}\n#define HOPPER_PRODUCER_REGISTERS {HOPPER_PRODUCER_REGISTERS}\n\
         #define HOPPER_CONSUMER_REGISTERS {HOPPER_CONSUMER_REGISTERS}\n\
         #define HOPPER_STAGES {HOPPER_STAGES}\n#define HOPPER_DKDV_SPLIT {HOPPER_DKDV_SPLIT}\n#define HOPPER_STATS_RUN {HOPPER_STATS_RUN}\n\
         #define HOPPER_L2_BYTES {HOPPER_L2_BYTES}ull\n#define HOPPER_SOFTMAX_SLACK {HOPPER_SOFTMAX_SLACK:.1}f\n"
    );
    let wgmma = format!("#if defined(__CUDA_ARCH_FEAT_SM90_ALL)\n{}#endif\n", wgmma::wrappers(&[64, 128]));
    let mut kernels = flash_kernels();
    kernels.push(("attention_delta".to_string(), 0));
    kernels.extend(hopper_kernels());
    let source = defines + include_str!("../../../../kernels/attention.cu") + &wgmma + include_str!("../../../../kernels/attention_hopper.cu");
    OpSource { source, kernels }
}

/// The Hopper kernels: the three kinds of the flash kernels, and dK/dV with the GQA group split
/// over a cluster.
const HOPPER_KINDS: [&str; 4] = ["forward", "backward_dq", "backward_dkdv", "backward_dkdv_split"];

/// Dynamic shared memory of Hopper kernel `kind`, its tiles unpadded (swizzled instead), and
/// 1 KiB to align them to the swizzle's 1024 bytes: the forward keeps a Q tile and streams K and
/// V; dQ keeps Q and dO and streams K and V; dK/dV (split or not) keeps K and V and streams Q
/// and dO with their rows' lse and delta.
fn hopper_shared_bytes(kind: &str, hd: usize) -> u32 {
    let n = HOPPER_STAGES;
    let bytes = match kind {
        "forward" => (HOPPER_ROWS + n * 2 * HOPPER_KEYS) * hd * 2,
        "backward_dq" => (2 * HOPPER_ROWS + n * 2 * HOPPER_DQ_KEYS) * hd * 2,
        _ => (2 * HOPPER_ROWS + n * 2 * HOPPER_DKDV_QUERIES) * hd * 2 + n * 2 * 4 * HOPPER_STATS_RUN,
    };
    (bytes + 1024) as u32
}

/// Every Hopper kernel (all head dimensions) with its dynamic shared memory.
fn hopper_kernels() -> Vec<(String, u32)> {
    HOPPER_HEAD_DIMS.iter().flat_map(|&hd| HOPPER_KINDS.map(|kind| (format!("hopper_{kind}_{hd}"), hopper_shared_bytes(kind, hd)))).collect()
}

/// Bytes of one shared tile of `rows` rows of `hd` bf16 (padded).
fn tile_bytes(rows: usize, hd: usize) -> usize {
    rows * (hd + PAD) * 2
}

/// The flash kernels.
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

/// The launch of attention kernel `kind` for this shape on `heads` heads of every batch: the
/// Hopper kernel on sm_90a at its head dimensions, otherwise the flash kernel. A Hopper item is
/// HOPPER_ROWS queries of a head (forward, dQ) or HOPPER_ROWS keys of a KV head (dK/dV); the
/// kernels are persistent, a block an SM (`sm_count`) taking items in turn, except dK/dV with a
/// cluster of HOPPER_DKDV_SPLIT blocks an item sharing the group's query heads (where it divides
/// evenly).
fn kernel_launch(hopper: bool, kind: &str, s: &Shape, heads: usize, sm_count: u32) -> Result<(String, LaunchConfig)> {
    if !on_hopper(hopper, s) {
        return flash_launch(kind, s, heads);
    }
    ensure!(s.kv_heads > 0 && s.heads % s.kv_heads == 0, "{} heads do not share {} KV heads evenly", s.heads, s.kv_heads);
    let items = s.seq.div_ceil(HOPPER_ROWS) * s.batch * heads;
    ensure!(items <= i32::MAX as usize / HOPPER_DKDV_SPLIT, "attention: {items} tiles of {HOPPER_ROWS} rows, more than the kernels count");
    let (kind, blocks) = match kind {
        "backward_dkdv" if (s.heads / s.kv_heads) % HOPPER_DKDV_SPLIT == 0 => ("backward_dkdv_split", HOPPER_DKDV_SPLIT * items),
        _ => (kind, items.min(sm_count as usize)),
    };
    let cfg = LaunchConfig {
        grid_dim: (blocks as u32, 1, 1),
        block_dim: (HOPPER_THREADS + HOPPER_PRODUCER_THREADS, 1, 1),
        shared_mem_bytes: hopper_shared_bytes(kind, s.head_dim),
    };
    Ok((format!("hopper_{kind}_{}", s.head_dim), cfg))
}

/// Whether shape `s` runs on the Hopper kernels (the module compiled for sm_90a: `hopper`).
fn on_hopper(hopper: bool, s: &Shape) -> bool {
    hopper && HOPPER_HEAD_DIMS.contains(&s.head_dim)
}

/// Rows of an item's own tiles that a Hopper kernel copies at a time: a consumer warpgroup's, each
/// copied when that warpgroup is done with the last item's.
const HOPPER_OWN_ROWS: usize = HOPPER_ROWS / 2;

/// The Hopper kernels' maps of a q-like tensor (Q, dO) and a kv-like one (K, V), boxes of `rows`
/// sequence rows.
fn q_map(ptr: u64, s: &Shape, rows: usize) -> Result<TensorMap> {
    tensor_map::heads(ptr, [s.batch, s.seq, s.heads, s.head_dim], rows)
}
fn kv_map(ptr: u64, s: &Shape, rows: usize) -> Result<TensorMap> {
    tensor_map::heads(ptr, [s.batch, s.seq, s.kv_heads, s.head_dim], rows)
}

/// attention_delta's launch: head_dim / 8 threads a row (every head dimension of the kernels
/// is a power of two from 16 to 128, as the kernel needs: checked by the launches before it).
fn delta_launch(s: &Shape) -> LaunchConfig {
    let threads = (s.rows() * s.head_dim / 8) as u64;
    LaunchConfig { grid_dim: (threads.div_ceil(ELEMENT_THREADS as u64) as u32, 1, 1), block_dim: (ELEMENT_THREADS, 1, 1), shared_mem_bytes: 0 }
}

/// The kernels' shape arguments: batch (the Hopper kernels' only), seq, heads, kv_heads, and the
/// softmax scale.
fn dims(s: &Shape) -> (i32, i32, i32, i32, f32) {
    (s.batch as i32, s.seq as i32, s.heads as i32, s.kv_heads as i32, (1.0 / (s.head_dim as f64).sqrt()) as f32)
}

/// Queries (or their gradients) [batch, seq, heads, hd] and keys and values [batch, seq,
/// kv_heads, hd], bf16.
#[derive(Clone, Copy)]
pub struct Qkv<'a> {
    pub q: View<'a, bf16>,
    pub k: View<'a, bf16>,
    pub v: View<'a, bf16>,
}

/// What the backward reads of the forward: its inputs, output and log-sum-exp.
#[derive(Clone, Copy)]
pub struct Saved<'a> {
    pub qkv: Qkv<'a>,
    pub o: View<'a, bf16>,
    pub lse: View<'a, f32>,
}

/// Each buffer holds what shape `s` needs.
fn shaped(op: &str, qkv: &Qkv, o: View<bf16>, lse: View<f32>, s: &Shape) -> Result<()> {
    let (nq, nkv, rows) = (s.q_len(), s.kv_len(), s.rows());
    lengths(op, &[(qkv.q.len(), nq, "q"), (qkv.k.len(), nkv, "k"), (qkv.v.len(), nkv, "v"), (o.len(), nq, "o"), (lse.len(), rows, "lse")])
}

impl ModelOps<'_> {
    /// o (bf16) and lse (fp32 [batch, heads, seq]) are overwritten.
    pub fn attention_forward(&self, o: View<bf16>, lse: View<f32>, x: Qkv, s: Shape) -> Result<()> {
        shaped("attention", &x, o, lse, &s)?;
        let (o, lse, q, k, v) = (o.ptr(), lse.ptr(), x.q.ptr(), x.k.ptr(), x.v.ptr());
        aligned_16(&[o, q, k, v])?;
        let (batch, seq, heads, kv_heads, scale) = dims(&s);
        let (name, cfg) = kernel_launch(self.hopper, "forward", &s, s.heads, self.gpu.sm_count())?;
        if !on_hopper(self.hopper, &s) {
            return launch!(self, &name, cfg, o, lse, q, k, v, seq, heads, kv_heads, scale);
        }
        let (q, k, v) = (q_map(q, &s, HOPPER_OWN_ROWS)?, kv_map(k, &s, HOPPER_KEYS)?, kv_map(v, &s, HOPPER_KEYS)?);
        launch!(self, &name, cfg, o, lse, q, k, v, batch, seq, heads, kv_heads, scale)
    }

    /// `grads` (dq, dk, dv) are overwritten from d_o; `delta` is fp32 scratch shaped like lse.
    pub fn attention_backward(&self, grads: Qkv, d_o: View<bf16>, saved: Saved, delta: View<f32>, s: Shape) -> Result<()> {
        shaped("attention backward", &saved.qkv, saved.o, saved.lse, &s)?;
        shaped("attention backward", &grads, d_o, delta, &s)?;
        let (dq, dk, dv, d_o, delta) = (grads.q.ptr(), grads.k.ptr(), grads.v.ptr(), d_o.ptr(), delta.ptr());
        let (q, k, v, o, lse) = (saved.qkv.q.ptr(), saved.qkv.k.ptr(), saved.qkv.v.ptr(), saved.o.ptr(), saved.lse.ptr());
        aligned_16(&[dq, dk, dv, d_o, q, k, v, o])?;
        let (batch, seq, heads, kv_heads, scale) = dims(&s);
        let (dq_name, dq_cfg) = kernel_launch(self.hopper, "backward_dq", &s, s.heads, self.gpu.sm_count())?;
        let (dkdv_name, dkdv_cfg) = kernel_launch(self.hopper, "backward_dkdv", &s, s.kv_heads, self.gpu.sm_count())?;
        let (n, hd) = (s.rows() as u64, s.head_dim as i32);
        launch!(self, "attention_delta", delta_launch(&s), delta, d_o, o, n, seq, heads, hd)?;
        if !on_hopper(self.hopper, &s) {
            launch!(self, &dq_name, dq_cfg, dq, d_o, q, k, v, lse, delta, seq, heads, kv_heads, scale)?;
            return launch!(self, &dkdv_name, dkdv_cfg, dk, dv, d_o, q, k, v, lse, delta, seq, heads, kv_heads, scale);
        }
        // dQ: its own Q and dO tiles, K and V streamed; dK/dV: its own K and V, Q and dO streamed
        // with their rows' lse and delta.
        let (own_q, own_do, keys) = (q_map(q, &s, HOPPER_OWN_ROWS)?, q_map(d_o, &s, HOPPER_OWN_ROWS)?, HOPPER_DQ_KEYS);
        let (k_tiles, v_tiles) = (kv_map(k, &s, keys)?, kv_map(v, &s, keys)?);
        launch!(self, &dq_name, dq_cfg, dq, own_do, own_q, k_tiles, v_tiles, lse, delta, batch, seq, heads, kv_heads, scale)?;
        let (queries, rows) = (HOPPER_DKDV_QUERIES, s.rows());
        let (q_tiles, do_tiles, own_k, own_v) =
            (q_map(q, &s, queries)?, q_map(d_o, &s, queries)?, kv_map(k, &s, HOPPER_OWN_ROWS)?, kv_map(v, &s, HOPPER_OWN_ROWS)?);
        let ((lse, lse_lead), (delta, delta_lead)) = (tensor_map::floats(lse, rows, HOPPER_STATS_RUN)?, tensor_map::floats(delta, rows, HOPPER_STATS_RUN)?);
        launch!(self, &dkdv_name, dkdv_cfg, dk, dv, do_tiles, q_tiles, own_k, own_v, lse, delta, lse_lead, delta_lead, batch, seq, heads, kv_heads, scale)
    }
}

/// GQA with four query heads per KV head; sequences that end inside a tile (the flash kernels'
/// 64- and 32-row tiles, the Hopper kernels' 128 and 64); head_dim 64 over many tiles (heads'
/// rows off 16-byte boundaries in lse and delta, as at 333); Llama's
/// head_dim 128, forward and backward, with one KV head and with GQA; the forward with keys that
/// make the rows' maxima climb (KEY_RAMP).
/// At sequence 2048: forward and backward with eight query heads on one KV head (a 70B layer's
/// group of eight, over every causal tile of a Llama sequence), then the forward alone (the
/// backward's CPU reference would take minutes) on a 7B layer's heads and a 70B layer's (64
/// query heads on 8 KV heads). The shapes run one after another on grids of 8 to 132 persistent
/// blocks (fewer items than SMs, and more), so every check after the first also checks that the
/// kernels' item counters were put back to zero by the launch before.
pub fn checks(ops: &ModelOps, r: &mut Inputs) -> Result<Vec<Check>> {
    let shapes = [
        (Shape { batch: 2, seq: 160, heads: 8, kv_heads: 2, head_dim: 64 }, true, 0.0),
        (Shape { batch: 1, seq: 1101, heads: 8, kv_heads: 2, head_dim: 64 }, true, 0.0),
        (Shape { batch: 1, seq: 200, heads: 4, kv_heads: 4, head_dim: 128 }, true, 0.0),
        (Shape { batch: 2, seq: 333, heads: 8, kv_heads: 2, head_dim: 128 }, true, 0.0),
        (Shape { batch: 2, seq: 77, heads: 4, kv_heads: 1, head_dim: 16 }, true, 0.0),
        (Shape { batch: 1, seq: 700, heads: 4, kv_heads: 2, head_dim: 128 }, false, KEY_RAMP),
        (Shape { batch: 1, seq: 2048, heads: 8, kv_heads: 1, head_dim: 128 }, true, 0.0),
        (Shape { batch: 1, seq: 2048, heads: 32, kv_heads: 32, head_dim: 128 }, false, 0.0),
        (Shape { batch: 1, seq: 2048, heads: 64, kv_heads: 8, head_dim: 128 }, false, 0.0),
    ];
    let mut out = Vec::new();
    for (s, backward, ramp) in shapes {
        out.extend(shape_checks(ops, r, s, backward, ramp)?);
    }
    Ok(out)
}

/// Random scores stay within about one log2 unit of their row's first maximum; keys scaled up
/// along the sequence (key j by 1 + KEY_RAMP · j / seq) make the maxima climb tile after tile,
/// far past the Hopper forward's HOPPER_SOFTMAX_SLACK, so its rescaling is checked too.
const KEY_RAMP: f64 = 30.0;

/// Key rows of `k` ([batch, seq, kv_heads, hd]) scaled by 1 + ramp · j / seq, rounded to bf16.
fn ramped(k: Input, s: &Shape, ramp: f64) -> Input {
    if ramp == 0.0 {
        return k;
    }
    let row = s.kv_heads * s.head_dim;
    let bits: Vec<bf16> = k.values.iter().enumerate().map(|(i, v)| bf16::from_f64(v * (1.0 + ramp * ((i / row) % s.seq) as f64 / s.seq as f64))).collect();
    let values = bits.iter().map(|b| b.to_f64()).collect();
    Input { bits, values }
}

/// o and lse from the forward; with `backward`, dq dk dv from the backward (which reads the
/// GPU's own o and lse).
/// `ramp`: keys scaled up along the sequence (ramped()), 0 for none.
fn shape_checks(ops: &ModelOps, r: &mut Inputs, sh: Shape, backward: bool, ramp: f64) -> Result<Vec<Check>> {
    let gpu = ops.gpu();
    let mut shape = format!("b {} t {} h {}/{} kv hd {}", sh.batch, sh.seq, sh.heads, sh.kv_heads, sh.head_dim);
    if ramp > 0.0 {
        shape += &format!(" keys ramped ×{}", 1.0 + ramp);
    }
    let (nq, nkv, rows) = (sh.q_len(), sh.kv_len(), sh.rows());
    let (q, k, v) = (r.take(nq, 1.0), ramped(r.take(nkv, 1.0), &sh, ramp), r.take(nkv, 1.0));
    let (gq, gk, gv) = (gpu.upload(&q.bits)?, gpu.upload(&k.bits)?, gpu.upload(&v.bits)?);
    let (go, glse) = (gpu.alloc(nq * 2)?, gpu.alloc(rows * 4)?);
    let qkv = Qkv { q: gq.view(), k: gk.view(), v: gv.view() };
    ops.attention_forward(go.view(), glse.view(), qkv, sh)?;
    let (mut o, mut lse) = (vec![0.0; nq], vec![0.0; rows]);
    attention::forward(&mut o, &mut lse, &q.values, &k.values, &v.values, sh);
    let mut out = vec![
        compare("attention forward (bf16 o)", &shape, &bf16s(gpu, &go)?, &o, BF16_TOLERANCE),
        compare("attention forward lse (fp32)", &shape, &f32s(gpu, &glse)?, &lse, F32_TOLERANCE),
    ];
    if backward {
        let d_o = r.take(nq, 1.0);
        let (gdo, gdelta) = (gpu.upload(&d_o.bits)?, gpu.alloc(rows * 4)?);
        let (gdq, gdk, gdv) = (gpu.alloc(nq * 2)?, gpu.alloc(nkv * 2)?, gpu.alloc(nkv * 2)?);
        let saved = Saved { qkv, o: go.view(), lse: glse.view() };
        ops.attention_backward(Qkv { q: gdq.view(), k: gdk.view(), v: gdv.view() }, gdo.view(), saved, gdelta.view(), sh)?;
        let (mut dq, mut dk, mut dv) = (vec![0.0; nq], vec![0.0; nkv], vec![0.0; nkv]);
        attention::backward(&mut dq, &mut dk, &mut dv, &d_o.values, &q.values, &k.values, &v.values, &o, &lse, sh);
        out.extend([
            compare("attention backward dq (bf16)", &shape, &bf16s(gpu, &gdq)?, &dq, BF16_TOLERANCE),
            compare("attention backward dk (bf16)", &shape, &bf16s(gpu, &gdk)?, &dk, BF16_TOLERANCE),
            compare("attention backward dv (bf16)", &shape, &bf16s(gpu, &gdv)?, &dv, BF16_TOLERANCE),
        ]);
    }
    Ok(out)
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

    #[test]
    fn every_head_dim_suits_the_delta_kernel() {
        let all = HEAD_DIMS.iter().chain(&HOPPER_HEAD_DIMS);
        assert!(all.clone().all(|hd| hd.is_power_of_two() && (16..=256).contains(hd)));
        assert!(HOPPER_HEAD_DIMS.iter().all(|hd| HEAD_DIMS.contains(hd)), "the flash launch's check covers the Hopper head dims");
    }

    #[test]
    fn every_hopper_kernel_fits_one_block_an_sm() {
        let kernels = hopper_kernels();
        assert_eq!(kernels.len(), HOPPER_HEAD_DIMS.len() * HOPPER_KINDS.len());
        let dkdv = kernels.iter().find(|(name, _)| name == "hopper_backward_dkdv_128").unwrap().1;
        assert_eq!(dkdv, (2 * 128 + 6 * 64) * 128 * 2 + 6 * 4 * 96 + 1024, "K and V, three buffers of Q and dO, lse and delta");
        // setup_ring()'s mbarriers (two a buffer, two a consumer warpgroup for its rows of the own
        // tiles) and items (one a buffer) are static shared memory beside the dynamic.
        let barriers = 8 * (2 * HOPPER_STAGES as u32 + 4) + 4 * HOPPER_STAGES as u32;
        assert!(kernels.iter().all(|(_, bytes)| *bytes + barriers <= 227 * 1024));
    }
}
