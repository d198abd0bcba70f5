//! The per-unit collectives of the ZeRO stages on the GPU, queued on a communication stream of
//! their own so that they overlap the compute stream, and the accounting of what they cost:
//! how long the compute stream stalled waiting for them (exposed communication), how long the
//! communication stream was busy, and how many bytes each rank sent (nccl-tests' bus bytes).
//! With one rank (no communicator) a gather or a reduce-scatter is a copy and an all-reduce
//! nothing, so every stage runs the same schedule on one GPU.

use crate::backend::cuda::Gpu;
use crate::dist::collective::Collective;
use crate::dist::nccl::{check, NcclComm};
use anyhow::Result;
use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{result, CudaEvent, CudaStream};
use cudarc::nccl::sys as nccl;
use std::cell::{Cell, RefCell};
use std::ffi::c_void;
use std::sync::Arc;

/// Element types the stages exchange.
#[derive(Clone, Copy)]
pub enum Elem {
    Bf16,
    F32,
}

impl Elem {
    fn bytes(self) -> usize {
        match self {
            Elem::Bf16 => 2,
            Elem::F32 => 4,
        }
    }

    fn nccl(self) -> nccl::ncclDataType_t {
        match self {
            Elem::Bf16 => nccl::ncclDataType_t::ncclBfloat16,
            Elem::F32 => nccl::ncclDataType_t::ncclFloat32,
        }
    }
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

    fn copy(&self, dst: u64, src: u64, bytes: usize) -> Result<()> {
        if dst == src {
            return Ok(());
        }
        Ok(unsafe { result::memcpy_dtod_async(dst, src, bytes, self.stream.cu_stream()) }?)
    }

    /// `dst` (ranks × `count` elements) gets every rank's `src` (`count` elements) in rank order.
    pub fn all_gather(&self, src: u64, dst: u64, count: usize, elem: Elem) -> Result<()> {
        if self.comm.is_none() {
            return self.copy(dst, src, count * elem.bytes());
        }
        let bus = Collective::AllGather.bus_bytes(self.ranks, self.ranks * count * elem.bytes());
        self.collective("ncclAllGather", bus, |c, s| unsafe {
            nccl::ncclAllGather(src as *const c_void, dst as *mut c_void, count, elem.nccl(), c, s)
        })
    }

    /// `dst` (`count` fp32) gets this rank's block of the element-wise sum over ranks of `src`
    /// (ranks × `count`).
    pub fn reduce_scatter(&self, src: u64, dst: u64, count: usize) -> Result<()> {
        if self.comm.is_none() {
            return self.copy(dst, src, 4 * count);
        }
        let bus = Collective::ReduceScatter.bus_bytes(self.ranks, self.ranks * count * 4);
        self.collective("ncclReduceScatter", bus, |c, s| unsafe {
            nccl::ncclReduceScatter(src as *const c_void, dst as *mut c_void, count, nccl::ncclDataType_t::ncclFloat32, nccl::ncclRedOp_t::ncclSum, c, s)
        })
    }

    /// In place: `count` fp32 at `ptr` become their sum over ranks.
    pub fn all_reduce(&self, ptr: u64, count: usize) -> Result<()> {
        if self.comm.is_none() {
            return Ok(());
        }
        let bus = Collective::AllReduce.bus_bytes(self.ranks, count * 4);
        self.collective("ncclAllReduce", bus, |c, s| unsafe {
            nccl::ncclAllReduce(ptr as *const c_void, ptr as *mut c_void, count, nccl::ncclDataType_t::ncclFloat32, nccl::ncclRedOp_t::ncclSum, c, s)
        })
    }

    /// The cost since the last call (waits for both streams).
    pub fn take_cost(&self) -> Result<CommCost> {
        self.stream.synchronize()?;
        self.gpu.synchronize()?;
        let sum = |pairs: Vec<(CudaEvent, CudaEvent)>| -> Result<f64> {
            pairs.iter().try_fold(0.0, |total, (a, b)| Ok(total + a.elapsed_ms(b)? as f64 / 1e3))
        };
        Ok(CommCost { exposed_s: sum(self.stalls.take())?, busy_s: sum(self.busy.take())?, bytes: self.bytes.replace(0) })
    }
}
