//! Tensor maps for Hopper's tensor memory accelerator (TMA): what kernels/attention_hopper.cu's
//! copies read their tiles through (`cp.async.bulk.tensor`), encoded on the host by
//! cuTensorMapEncodeTiled and passed to a kernel by value (a `__grid_constant__` parameter).
//! The hardware zero-fills a box's elements past the tensor's extent, so a tile that crosses a
//! sequence's end needs no bounds check in the kernel.

use anyhow::{ensure, Context, Result};
use cudarc::driver::{sys, DeviceRepr};
use std::ffi::c_void;

/// One encoded map, 128 opaque bytes (the kernels' `TensorMap`).
#[repr(transparent)]
#[derive(Clone, Copy)]
pub struct TensorMap(sys::CUtensorMap);

// SAFETY: a plain C struct the kernel takes by value, as the driver API defines it.
unsafe impl DeviceRepr for TensorMap {}

/// bf16 columns a box row carries: 128 bytes, the span of the 128-byte swizzle (wider head
/// dimensions are copied as several 64-column panels).
pub const PANEL: usize = 64;

/// A [batch, seq, heads, head_dim] bf16 tensor at `ptr` (16-byte aligned) as boxes of `rows`
/// sequence rows of one head and PANEL columns, swizzled by 128 bytes as wgmma reads them:
/// coordinates (column, head, row, batch); rows past `seq` read as zeros.
pub fn heads(ptr: u64, [batch, seq, heads, head_dim]: [usize; 4], rows: usize) -> Result<TensorMap> {
    ensure!(head_dim % PANEL == 0, "a TMA tile of head_dim {head_dim} is not whole {PANEL}-column panels");
    let row_bytes = (heads * head_dim * 2) as u64;
    let dims = [head_dim as u64, heads as u64, seq as u64, batch as u64];
    let strides = [(head_dim * 2) as u64, row_bytes, row_bytes * seq as u64];
    let boxes = [PANEL as u32, 1, rows as u32, 1];
    encode(sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, ptr, &dims, &strides, &boxes, sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_128B)
}

/// `n` fp32 values at `ptr` (any 4-byte offset) as boxes of `run` consecutive values, and the
/// coordinate of value 0: the map starts at the 16-byte boundary at or below `ptr`, as the
/// hardware needs, so the kernel adds that lead to every coordinate (and starts each box at a
/// multiple of 4: 16-byte aligned too). Values past the end read as zeros.
pub fn floats(ptr: u64, n: usize, run: usize) -> Result<(TensorMap, i32)> {
    let lead = (ptr % 16) / 4;
    ensure!(n as u64 + lead <= i32::MAX as u64, "{n} fp32 values: more than a TMA coordinate reaches");
    let dims = [n as u64 + lead];
    let map = encode(
        sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_FLOAT32,
        ptr - lead * 4,
        &dims,
        &[],
        &[run as u32],
        sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_NONE,
    )?;
    Ok((map, lead as i32))
}

fn encode(kind: sys::CUtensorMapDataType, ptr: u64, dims: &[u64], strides: &[u64], boxes: &[u32], swizzle: sys::CUtensorMapSwizzle) -> Result<TensorMap> {
    ensure!(ptr % 16 == 0 && strides.iter().all(|s| s % 16 == 0), "a TMA tensor needs 16-byte aligned rows");
    let mut map = std::mem::MaybeUninit::<sys::CUtensorMap>::zeroed();
    let element_strides = vec![1u32; dims.len()];
    // SAFETY: every array holds `dims.len()` entries (strides one fewer), as the call reads them.
    unsafe {
        sys::cuTensorMapEncodeTiled(
            map.as_mut_ptr(),
            kind,
            dims.len() as u32,
            ptr as *mut c_void,
            dims.as_ptr(),
            strides.as_ptr(),
            boxes.as_ptr(),
            element_strides.as_ptr(),
            sys::CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
            swizzle,
            sys::CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
            sys::CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
        )
        .result()
        .with_context(|| format!("encoding a TMA tensor map of dims {dims:?}, box {boxes:?}"))?;
        Ok(TensorMap(map.assume_init()))
    }
}
