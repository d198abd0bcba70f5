//! Tensor maps for Hopper's tensor memory accelerator (TMA): what kernels/attention_hopper.cu's
//! copies read their tiles through (`cp.async.bulk.tensor`), encoded on the host by
//! cuTensorMapEncodeTiled and passed to a kernel by value (a `__grid_constant__` parameter).
//! The hardware zero-fills a box's elements past the tensor's extent, so a heads map's tile that
//! crosses a sequence's end needs no bounds check in the kernel (a floats map runs on into the
//! next head: the kernel masks those values).

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
const PANEL: usize = 64;

/// What a map is encoded from: the global address, the dims (innermost first), the strides in
/// bytes of every dim but the innermost, and the box.
#[derive(Debug, PartialEq)]
struct Layout {
    base: u64,
    dims: Vec<u64>,
    strides: Vec<u64>,
    boxes: Vec<u32>,
}

/// A [batch, seq, heads, head_dim] bf16 tensor at `ptr` (16-byte aligned) as boxes of `rows`
/// sequence rows of one head and PANEL columns, swizzled by 128 bytes as wgmma reads them:
/// coordinates (column, head, row, batch); rows past `seq` read as zeros.
pub fn heads(ptr: u64, shape: [usize; 4], rows: usize) -> Result<TensorMap> {
    encode(sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, &heads_layout(ptr, shape, rows)?, sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_128B)
}

fn heads_layout(ptr: u64, [batch, seq, heads, head_dim]: [usize; 4], rows: usize) -> Result<Layout> {
    ensure!(head_dim % PANEL == 0, "a TMA tile of head_dim {head_dim} is not whole {PANEL}-column panels");
    let row_bytes = (heads * head_dim * 2) as u64;
    Ok(Layout {
        base: ptr,
        dims: vec![head_dim as u64, heads as u64, seq as u64, batch as u64],
        strides: vec![(head_dim * 2) as u64, row_bytes, row_bytes * seq as u64],
        boxes: vec![PANEL as u32, 1, rows as u32, 1],
    })
}

/// `n` fp32 values at `ptr` (any 4-byte offset) as boxes of `run` consecutive values, and the
/// coordinate of value 0: the map starts at the 16-byte boundary at or below `ptr`, as the
/// hardware needs, so the kernel adds that lead to every coordinate (and starts each box at a
/// multiple of 4: 16-byte aligned too). Values past the end read as zeros.
pub fn floats(ptr: u64, n: usize, run: usize) -> Result<(TensorMap, i32)> {
    let (layout, lead) = floats_layout(ptr, n, run)?;
    Ok((encode(sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_FLOAT32, &layout, sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_NONE)?, lead))
}

fn floats_layout(ptr: u64, n: usize, run: usize) -> Result<(Layout, i32)> {
    let lead = (ptr % 16) / 4;
    ensure!(n as u64 + lead <= i32::MAX as u64, "{n} fp32 values: more than a TMA coordinate reaches");
    Ok((Layout { base: ptr - lead * 4, dims: vec![n as u64 + lead], strides: vec![], boxes: vec![run as u32] }, lead as i32))
}

fn encode(kind: sys::CUtensorMapDataType, l: &Layout, swizzle: sys::CUtensorMapSwizzle) -> Result<TensorMap> {
    ensure!(l.base % 16 == 0 && l.strides.iter().all(|s| s % 16 == 0), "a TMA tensor needs 16-byte aligned rows");
    let mut map = std::mem::MaybeUninit::<sys::CUtensorMap>::zeroed();
    let element_strides = vec![1u32; l.dims.len()];
    // SAFETY: every array holds `dims.len()` entries (strides one fewer), as the call reads them.
    unsafe {
        sys::cuTensorMapEncodeTiled(
            map.as_mut_ptr(),
            kind,
            l.dims.len() as u32,
            l.base as *mut c_void,
            l.dims.as_ptr(),
            l.strides.as_ptr(),
            l.boxes.as_ptr(),
            element_strides.as_ptr(),
            sys::CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
            swizzle,
            sys::CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
            sys::CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
        )
        .result()
        .with_context(|| format!("encoding a TMA tensor map of dims {:?}, box {:?}", l.dims, l.boxes))?;
        Ok(TensorMap(map.assume_init()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heads_map_walks_columns_heads_rows_then_batches() {
        // A 70B layer's K: batch 2, seq 333, 8 KV heads of 128; boxes of 64 rows.
        let l = heads_layout(4096, [2, 333, 8, 128], 64).unwrap();
        assert_eq!(l.dims, [128, 8, 333, 2]);
        assert_eq!(l.strides, [256, 8 * 128 * 2, 8 * 128 * 2 * 333]);
        assert_eq!(l.boxes, [64, 1, 64, 1]);
        assert_eq!(l.boxes[0] as usize * 2, 128, "a box row is the 128-byte swizzle's span");
        assert!(heads_layout(4096, [1, 8, 1, 80], 64).is_err(), "80 columns are not whole panels");
    }

    #[test]
    fn a_float_run_starts_at_the_16_byte_boundary_below() {
        for offset in [0u64, 4, 8, 12] {
            let (l, lead) = floats_layout(1 << 20 | offset, 1000, 96).unwrap();
            assert_eq!((l.base, lead as u64), (1 << 20, offset / 4));
            assert_eq!(l.dims, [1000 + offset / 4]);
            assert!(l.strides.is_empty() && l.boxes == [96]);
        }
        assert!(floats_layout(0, i32::MAX as usize, 96).is_ok());
        assert!(floats_layout(4, i32::MAX as usize, 96).is_err(), "a coordinate past i32");
    }
}
