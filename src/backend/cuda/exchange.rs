//! The per-unit collectives of the ZeRO stages on the GPU, queued on a communication stream of
//! their own so that they overlap the compute stream, and the accounting of what they cost:
//! how long the compute stream stalled waiting for them (exposed communication), how long the
//! communication stream was busy, and how many bytes each rank sent (nccl-tests' bus bytes).
//! With one rank (no communicator) a gather or a reduce-scatter is a copy and an all-reduce
//! nothing, so every stage runs the same schedule on one GPU.

use super::view::{lengths, View};
use super::Gpu;
use crate::dist::collective::Collective;
use crate::dist::nccl::{check, NcclComm};
use anyhow::Result;
use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{result, CudaEvent, CudaStream};
use cudarc::nccl::sys as nccl;
use std::cell::{Cell, RefCell};
use std::ffi::c_void;
use std::sync::Arc;

/// Element types the stages exchange: bf16 weights, fp32 gradients.
pub trait Exchanged {
    const NCCL: nccl::ncclDataType_t;
}

impl Exchanged for half::bf16 {
    const NCCL: nccl::ncclDataType_t = nccl::ncclDataType_t::ncclBfloat16;
}

impl Exchanged for f32 {
    const NCCL: nccl::ncclDataType_t = nccl::ncclDataType_t::ncclFloat32;
}

/// What one step's communication cost, in seconds of GPU time and bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CommCost {
    /// The compute stream waiting for communication.
    pub exposed_s: f64,
    /// The communication stream running collectives.
    pub busy_s: f64,
    /// Bytes this rank sent (Collective::bus_bytes).
    pub bytes: u64,
}

pub struct Exchange<'g> {
    gpu: &'g Gpu,
    comm: Option<&'g NcclComm>,
    ranks: usize,
    stream: Arc<CudaStream>,
    stalls: RefCell<Vec<(CudaEvent, CudaEvent)>>,
    busy: RefCell<Vec<(CudaEvent, CudaEvent)>>,
    bytes: Cell<u64>,
}

impl<'g> Exchange<'g> {
    pub fn new(gpu: &'g Gpu, comm: Option<&'g NcclComm>, ranks: usize) -> Result<Exchange<'g>> {
        assert!(comm.is_some() || ranks == 1, "several ranks need a communicator");
        let stream = gpu.ctx.new_stream()?;
        Ok(Exchange { gpu, comm, ranks, stream, stalls: RefCell::default(), busy: RefCell::default(), bytes: Cell::new(0) })
    }

    fn timed_event(&self, stream: &CudaStream) -> Result<CudaEvent> {
        let e = self.gpu.ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
        e.record(stream)?;
        Ok(e)
    }

    /// Communication queued from now on starts after the compute queued so far.
    pub fn after_compute(&self) -> Result<()> {
        Ok(self.stream.wait(&self.gpu.stream.record_event(None)?)?)
    }

    /// Marks the communication queued so far: compute can wait for exactly that.
    pub fn mark(&self) -> Result<CudaEvent> {
        Ok(self.stream.record_event(None)?)
    }

    /// Compute queued from now on waits for `done`; the stall is timed.
    pub fn compute_waits(&self, done: &CudaEvent) -> Result<()> {
        let before = self.timed_event(&self.gpu.stream)?;
        self.gpu.stream.wait(done)?;
        let after = self.timed_event(&self.gpu.stream)?;
        self.stalls.borrow_mut().push((before, after));
        Ok(())
    }

    /// Compute queued from now on waits for all communication queued so far.
    pub fn drain(&self) -> Result<()> {
        self.compute_waits(&self.mark()?)
    }

    fn collective(&self, what: &str, bus_bytes: u64, call: impl FnOnce(nccl::ncclComm_t, nccl::cudaStream_t) -> nccl::ncclResult_t) -> Result<()> {
        let start = self.timed_event(&self.stream)?;
        if let Some(comm) = self.comm {
            check(call(comm.raw(), self.stream.cu_stream() as nccl::cudaStream_t), what, Some(comm.raw()))?;
        }
        self.busy.borrow_mut().push((start, self.timed_event(&self.stream)?));
        self.bytes.set(self.bytes.get() + bus_bytes);
        Ok(())
    }

    fn copy<T>(&self, dst: View<T>, src: View<T>) -> Result<()> {
        if dst.ptr() == src.ptr() {
            return Ok(());
        }
        Ok(unsafe { result::memcpy_dtod_async(dst.ptr(), src.ptr(), src.len() * std::mem::size_of::<T>(), self.stream.cu_stream()) }?)
    }

    /// `dst` (ranks × src's elements) gets every rank's `src` in rank order.
    pub fn all_gather<T: Exchanged>(&self, src: View<T>, dst: View<T>) -> Result<()> {
        lengths("all_gather", &[(dst.len(), self.ranks * src.len(), "the gathered buffer")])?;
        if self.comm.is_none() {
            return self.copy(dst, src);
        }
        let bus = Collective::AllGather.bus_bytes(self.ranks, dst.len() * std::mem::size_of::<T>());
        self.collective("ncclAllGather", bus, |c, s| unsafe {
            nccl::ncclAllGather(src.ptr() as *const c_void, dst.ptr() as *mut c_void, src.len(), T::NCCL, c, s)
        })
    }

    /// `dst` gets this rank's block of the element-wise sum over ranks of `src` (ranks × dst's
    /// elements).
    pub fn reduce_scatter(&self, src: View<f32>, dst: View<f32>) -> Result<()> {
        lengths("reduce_scatter", &[(src.len(), self.ranks * dst.len(), "the reduced buffer")])?;
        if self.comm.is_none() {
            return self.copy(dst, src);
        }
        let bus = Collective::ReduceScatter.bus_bytes(self.ranks, src.len() * 4);
        self.collective("ncclReduceScatter", bus, |c, s| unsafe {
            nccl::ncclReduceScatter(src.ptr() as *const c_void, dst.ptr() as *mut c_void, dst.len(), f32::NCCL, nccl::ncclRedOp_t::ncclSum, c, s)
        })
    }

    /// In place: `x` becomes its sum over ranks.
    pub fn all_reduce(&self, x: View<f32>) -> Result<()> {
        if self.comm.is_none() {
            return Ok(());
        }
        let bus = Collective::AllReduce.bus_bytes(self.ranks, x.len() * 4);
        self.collective("ncclAllReduce", bus, |c, s| unsafe {
            nccl::ncclAllReduce(x.ptr() as *const c_void, x.ptr() as *mut c_void, x.len(), f32::NCCL, nccl::ncclRedOp_t::ncclSum, c, s)
        })
    }

    /// The cost since the last call (waits for both streams).
    pub fn take_cost(&self) -> Result<CommCost> {
        self.stream.synchronize()?;
        self.gpu.synchronize()?;
        let sum = |pairs: Vec<(CudaEvent, CudaEvent)>| -> Result<f64> { pairs.iter().try_fold(0.0, |total, (a, b)| Ok(total + a.elapsed_ms(b)? as f64 / 1e3)) };
        Ok(CommCost { exposed_s: sum(self.stalls.take())?, busy_s: sum(self.busy.take())?, bytes: self.bytes.replace(0) })
    }
}
