//! The GPU of this rank: driver context and stream, raw device buffers, and our kernels
//! compiled at start-up with NVRTC for the device's own architecture.

pub mod check;
pub mod exchange;
pub mod gemm;
pub mod kernels;
pub mod model_ops;
pub mod op_bench;
pub mod op_timer;
pub mod ops;
pub mod read_sum;
pub mod unit_buffers;
pub mod view;

use anyhow::{anyhow, Context, Result};
use cudarc::driver::{result, sys, CudaContext, CudaStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Why this host cannot run the GPU path, or the number of visible GPUs. Never panics:
/// uses cudarc's non-panicking library checks before touching any CUDA library.
pub fn probe() -> Result<usize, String> {
    if !unsafe { sys::is_culib_present() } {
        return Err("no CUDA driver (libcuda.so) on this host".into());
    }
    if !unsafe { cudarc::nccl::sys::is_culib_present() } {
        return Err("no NCCL library (libnccl.so) on this host".into());
    }
    if !unsafe { cudarc::cublaslt::sys::is_culib_present() } {
        return Err("no cuBLASLt library (libcublasLt.so) on this host".into());
    }
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err("no NVRTC library (libnvrtc.so) on this host".into());
    }
    result::init().map_err(|e| format!("CUDA driver failed to initialise: {e}"))?;
    let count = result::device::get_count().map_err(|e| format!("cannot count GPUs: {e}"))?;
    if count <= 0 {
        return Err("the CUDA driver sees no GPU (check CUDA_VISIBLE_DEVICES)".into());
    }
    Ok(count as usize)
}

/// One rank per GPU: local rank i uses visible GPU i.
pub fn gpu_for_local_rank(local_rank: usize, local_size: usize, visible: usize) -> Result<usize, String> {
    if local_size > visible {
        let cvd = std::env::var("CUDA_VISIBLE_DEVICES").unwrap_or_else(|_| "unset".into());
        return Err(format!(
            "{local_size} ranks on this host but only {visible} visible GPU(s) (CUDA_VISIBLE_DEVICES={cvd}): \
             start at most {visible} ranks per host, one per GPU"
        ));
    }
    Ok(local_rank)
}

pub struct Gpu {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    pub ordinal: usize,
    /// Streaming multiprocessors: what grid-stride launches are sized by.
    sm_count: u32,
    /// Bytes of our live buffers, and the most there ever were (cuBLASLt and the context aside).
    allocated: Arc<AtomicU64>,
    peak: AtomicU64,
}

impl Gpu {
    pub fn open(ordinal: usize) -> Result<Gpu> {
        let ctx = CudaContext::new(ordinal).with_context(|| format!("cannot open GPU {ordinal}"))?;
        // One stream, ordered by us: cudarc's per-buffer event tracking would only add launches.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream()?;
        let sm_count = ctx.attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)? as u32;
        Ok(Gpu { ctx, stream, ordinal, sm_count, allocated: Arc::new(AtomicU64::new(0)), peak: AtomicU64::new(0) })
    }

    pub fn name(&self) -> String {
        self.ctx.name().unwrap_or_else(|_| "unknown GPU".into())
    }

    /// The number of streaming multiprocessors.
    pub fn sm_count(&self) -> u32 {
        self.sm_count
    }

    pub fn compute_capability(&self) -> Result<(i32, i32)> {
        Ok(self.ctx.compute_capability()?)
    }

    /// PCI bus id as nvidia-smi prints it, e.g. 00000000:1B:00.0.
    pub fn pci_bus_id(&self) -> String {
        use sys::CUdevice_attribute::*;
        let get = |a| self.ctx.attribute(a).unwrap_or(-1);
        format!("{:08X}:{:02X}:{:02X}.0", get(CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID), get(CU_DEVICE_ATTRIBUTE_PCI_BUS_ID), get(CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID))
    }

    pub fn uuid(&self) -> String {
        match self.ctx.uuid() {
            Ok(u) => {
                let b: Vec<String> = u.bytes.iter().map(|x| format!("{:02x}", *x as u8)).collect();
                format!("GPU-{}-{}-{}-{}-{}", b[..4].concat(), b[4..6].concat(), b[6..8].concat(), b[8..10].concat(), b[10..].concat())
            }
            Err(_) => "unknown".into(),
        }
    }

    /// What the results file records of this GPU.
    pub fn identity(&self) -> crate::results::metadata::GpuIdentity {
        crate::results::metadata::GpuIdentity { index: Some(self.ordinal), name: self.name(), pci_bus_id: self.pci_bus_id(), uuid: self.uuid() }
    }

    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().context("CUDA stream synchronisation failed")
    }

    pub fn alloc(&self, bytes: usize) -> Result<DeviceBuffer> {
        self.ctx.bind_to_thread()?;
        let ptr = unsafe { result::malloc_sync(bytes.max(1)) }.map_err(|e| {
            let (free, total) = self.ctx.mem_get_info().unwrap_or((0, 0));
            anyhow!("cannot allocate {bytes} B on GPU {} ({free} of {total} B free): {e}", self.ordinal)
        })?;
        let now = self.allocated.fetch_add(bytes as u64, Ordering::SeqCst) + bytes as u64;
        self.peak.fetch_max(now, Ordering::SeqCst);
        Ok(DeviceBuffer { ptr, bytes, ctx: self.ctx.clone(), allocated: self.allocated.clone() })
    }

    /// The bytes our buffers hold now.
    pub fn allocated(&self) -> u64 {
        self.allocated.load(Ordering::SeqCst)
    }

    /// The most bytes our buffers held at once since the start (or the last `reset_peak`).
    pub fn peak_allocated(&self) -> u64 {
        self.peak.load(Ordering::SeqCst)
    }

    /// Starts the peak afresh from what is allocated now (a phase of the suite begins).
    pub fn reset_peak(&self) {
        self.peak.store(self.allocated(), Ordering::SeqCst);
    }

    /// A new device buffer holding `data`.
    pub fn upload<T: bytemuck::Pod>(&self, data: &[T]) -> Result<DeviceBuffer> {
        let buffer = self.alloc(std::mem::size_of_val(data))?;
        self.copy_to_device(bytemuck::cast_slice(data), buffer.ptr)?;
        Ok(buffer)
    }

    /// The whole of `buffer` read back as `T`s.
    pub fn download<T: bytemuck::Pod>(&self, buffer: &DeviceBuffer) -> Result<Vec<T>> {
        let mut out = vec![T::zeroed(); buffer.bytes / std::mem::size_of::<T>()];
        self.copy_to_host(buffer.ptr, bytemuck::cast_slice_mut(&mut out))?;
        Ok(out)
    }

    /// Device-to-device copy, queued on our stream.
    pub fn copy_device(&self, dst: sys::CUdeviceptr, src: sys::CUdeviceptr, bytes: usize) -> Result<()> {
        unsafe { result::memcpy_dtod_async(dst, src, bytes, self.stream.cu_stream()) }?;
        Ok(())
    }

    pub fn memset(&self, ptr: sys::CUdeviceptr, byte: u8, bytes: usize) -> Result<()> {
        unsafe { result::memset_d8_async(ptr, byte, bytes, self.stream.cu_stream()) }?;
        Ok(())
    }

    /// Copies on our stream and waits. (The synchronous cuMemcpy runs on the legacy stream,
    /// which our non-blocking stream does not wait for, and from pageable memory it may return
    /// before the data lands: kernels queued next could read stale memory.)
    pub fn copy_to_device(&self, src: &[u8], dst: sys::CUdeviceptr) -> Result<()> {
        unsafe { result::memcpy_htod_async(dst, src, self.stream.cu_stream()) }?;
        self.synchronize()
    }

    pub fn copy_to_host(&self, src: sys::CUdeviceptr, dst: &mut [u8]) -> Result<()> {
        unsafe { result::memcpy_dtoh_async(dst, src, self.stream.cu_stream()) }?;
        self.synchronize()
    }
}

/// Device memory we own, freed on drop.
pub struct DeviceBuffer {
    pub ptr: sys::CUdeviceptr,
    pub bytes: usize,
    ctx: Arc<CudaContext>,
    allocated: Arc<AtomicU64>,
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        self.allocated.fetch_sub(self.bytes as u64, Ordering::SeqCst);
        if self.ctx.bind_to_thread().is_ok() {
            unsafe {
                let _ = result::free_sync(self.ptr);
            }
        }
    }
}

/// "13.0" from the driver's CUDA version number.
pub fn driver_cuda_version() -> String {
    let mut v = 0;
    match unsafe { sys::cuDriverGetVersion(&mut v) } {
        sys::CUresult::CUDA_SUCCESS => format!("{}.{}", v / 1000, v % 1000 / 10),
        _ => "unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rank_per_visible_gpu() {
        assert_eq!(gpu_for_local_rank(3, 4, 4), Ok(3));
        assert_eq!(gpu_for_local_rank(0, 1, 8), Ok(0));
        let e = gpu_for_local_rank(0, 5, 4).unwrap_err();
        assert!(e.contains("5 ranks on this host but only 4 visible GPU(s)"), "{e}");
    }
}
