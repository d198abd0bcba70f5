//! The GPU engine: NCCL collectives on device buffers, one stream, CUDA events between
//! launches for per-iteration times, optional CUDA-graph replay (-G), and the fill/verify
//! kernels of kernels/fill_verify.cu for exact checking on the device.

use super::dtype::{DType, Encoding};
use super::engine::{Buffer, Engine, Launch, Region, Timing};
use super::pattern::{Mapping, Pattern};
use super::redop::RedOp;
use crate::backend::cuda::kernels::FillVerify;
use crate::backend::cuda::{DeviceBuffer, Gpu};
use crate::dist::collective::Collective;
use crate::dist::nccl::{check, NcclComm};
use crate::dist::world::Group;
use anyhow::{bail, Result};
use cudarc::driver::{sys as cu, DeviceRepr, LaunchConfig, PushKernelArg};
use cudarc::nccl::sys as nccl;
use std::ffi::c_void;
use std::time::Instant;

/// Mirrors `struct PatternArgs` in kernels/fill_verify.cu field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PatternArgs {
    seed: u64,
    ranks: u64,
    capacity: i64,
    mask: u64,
    elem_size: u32,
    encoding: u32,
    exponent_bits: u32,
    mantissa_bits: u32,
    max_power_of_two: u32,
    op: u32,
}

unsafe impl DeviceRepr for PatternArgs {}

impl PatternArgs {
    pub fn of(p: &Pattern) -> PatternArgs {
        let (encoding, exponent_bits, mantissa_bits) = match p.dtype.encoding() {
            Encoding::Signed => (0, 0, 0),
            Encoding::Unsigned => (1, 0, 0),
            Encoding::Float { exponent_bits, mantissa_bits } => (2, exponent_bits, mantissa_bits),
        };
        PatternArgs {
            seed: p.seed,
            ranks: p.ranks as u64,
            capacity: p.dtype.exact_capacity(),
            mask: p.dtype.mask(),
            elem_size: p.dtype.size() as u32,
            encoding,
            exponent_bits,
            mantissa_bits,
            max_power_of_two: p.dtype.max_power_of_two(),
            op: p.op.code() as u32,
        }
    }
}

pub struct NcclEngine<'w> {
    world: &'w Group,
    gpu: &'w Gpu,
    comm: &'w NcclComm,
    kernels: FillVerify,
    send: Option<DeviceBuffer>,
    recv: Option<DeviceBuffer>,
    wrong: DeviceBuffer,
}

impl<'w> NcclEngine<'w> {
    pub fn new(world: &'w Group, gpu: &'w Gpu, comm: &'w NcclComm) -> Result<Self> {
        Ok(NcclEngine { kernels: FillVerify::load(gpu)?, wrong: gpu.alloc(8)?, world, gpu, comm, send: None, recv: None })
    }

    /// Our fill and verify kernels against the CPU reference (pattern.rs) for every dtype and
    /// op on a fresh seed: wrong kernels would make every check of the sweep meaningless.
    pub fn check_kernels_against_cpu(&mut self, seed: u64) -> Result<()> {
        const COUNT: usize = 4099;
        let fresh = seed ^ std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos() as u64;
        let rank = self.world.rank;
        let buffer = self.gpu.alloc(COUNT * 8)?;
        for dtype in DType::ALL {
            for op in RedOp::ALL {
                let pattern = Pattern { dtype, op, ranks: self.world.size, seed: fresh };
                let bytes = COUNT * dtype.size();
                let mut want = vec![0u8; bytes];
                pattern.write_values(rank, &mut want);
                self.launch_fill(buffer.ptr, COUNT as u64, &pattern)?;
                let mut got = vec![0u8; bytes];
                self.gpu.copy_to_host(buffer.ptr, &mut got)?;
                if let Some(i) = (0..bytes).find(|&i| got[i] != want[i]) {
                    bail!("fill kernel differs from the CPU reference: {dtype} {op}, byte {i}");
                }
                // The verify kernel must accept the CPU's expected output and catch one change.
                let mapping = Mapping::Reduce { offset: 0 };
                let mut expected: Vec<u8> =
                    (0..COUNT as u64).flat_map(|j| dtype.encode(pattern.expected(mapping, j)).to_le_bytes()[..dtype.size()].to_vec()).collect();
                for flips in [0u64, 1] {
                    if flips == 1 {
                        expected[dtype.size() * 1234] ^= 1;
                    }
                    self.gpu.copy_to_device(&expected, buffer.ptr)?;
                    let wrong = self.launch_count_wrong(buffer.ptr, COUNT as u64, &pattern, mapping)?;
                    if wrong != flips {
                        bail!("verify kernel counted {wrong} wrong elements where the CPU reference has {flips}: {dtype} {op}");
                    }
                }
            }
        }
        Ok(())
    }

    fn launch_fill(&self, out: u64, count: u64, pattern: &Pattern) -> Result<()> {
        if count > 0 {
            let (args, rank) = (PatternArgs::of(pattern), self.world.rank as u64);
            let mut b = self.gpu.stream.launch_builder(&self.kernels.fill_pattern);
            b.arg(&out).arg(&count).arg(&args).arg(&rank);
            unsafe { b.launch(self.launch_config(count as usize)) }?;
        }
        self.gpu.synchronize()
    }

    fn launch_count_wrong(&self, out: u64, count: u64, pattern: &Pattern, mapping: Mapping) -> Result<u64> {
        if count == 0 {
            return Ok(0);
        }
        self.gpu.memset(self.wrong.ptr, 0, 8)?;
        let (code, a, b_arg) = mapping.kernel_args();
        let (args, wrong) = (PatternArgs::of(pattern), self.wrong.ptr);
        let mut b = self.gpu.stream.launch_builder(&self.kernels.count_wrong);
        b.arg(&out).arg(&count).arg(&args).arg(&code).arg(&a).arg(&b_arg).arg(&wrong);
        unsafe { b.launch(self.launch_config(count as usize)) }?;
        let mut host = [0u8; 8];
        self.gpu.copy_to_host(self.wrong.ptr, &mut host)?;
        Ok(u64::from_le_bytes(host))
    }

    fn ptr(&self, r: Region, shift: usize) -> u64 {
        let base = match r.buffer {
            Buffer::Send => self.send.as_ref(),
            Buffer::Recv => self.recv.as_ref(),
        };
        base.expect("buffers allocated before use").ptr + (r.offset + shift) as u64
    }

    fn stream(&self) -> nccl::cudaStream_t {
        self.gpu.stream.cu_stream() as nccl::cudaStream_t
    }

    /// Enqueues one collective at byte shift `shift`.
    fn enqueue(&self, l: &Launch, shift: usize) -> Result<()> {
        let rank = self.world.rank;
        let n = self.world.size;
        let send = self.ptr(l.input(rank), shift) as *const c_void;
        let recv = self.ptr(l.output(rank), shift) as *mut c_void;
        let (count, dt, op, comm, stream) = (l.counts.param, nccl_type(l.dtype), nccl_op(l.op), self.comm.raw(), self.stream());
        let r = unsafe {
            match l.collective {
                Collective::AllReduce => nccl::ncclAllReduce(send, recv, count, dt, op, comm, stream),
                Collective::ReduceScatter => nccl::ncclReduceScatter(send, recv, count, dt, op, comm, stream),
                Collective::AllGather => nccl::ncclAllGather(send, recv, count, dt, comm, stream),
                Collective::Broadcast => nccl::ncclBroadcast(send, recv, count, dt, l.root as i32, comm, stream),
                Collective::AllToAll => {
                    // As nccl-tests: one grouped send and receive per peer.
                    let block = count * l.dtype.size();
                    check(nccl::ncclGroupStart(), "ncclGroupStart", Some(comm))?;
                    for peer in 0..n {
                        let s = (send as *const u8).add(peer * block) as *const c_void;
                        let d = (recv as *mut u8).add(peer * block) as *mut c_void;
                        check(nccl::ncclSend(s, count, dt, peer as i32, comm, stream), "ncclSend", Some(comm))?;
                        check(nccl::ncclRecv(d, count, dt, peer as i32, comm, stream), "ncclRecv", Some(comm))?;
                    }
                    nccl::ncclGroupEnd()
                }
                Collective::SendRecv => {
                    let (next, prev) = ((rank + 1) % n, (rank + n - 1) % n);
                    check(nccl::ncclGroupStart(), "ncclGroupStart", Some(comm))?;
                    check(nccl::ncclSend(send, count, dt, next as i32, comm, stream), "ncclSend", Some(comm))?;
                    check(nccl::ncclRecv(recv, count, dt, prev as i32, comm, stream), "ncclRecv", Some(comm))?;
                    nccl::ncclGroupEnd()
                }
            }
        };
        check(r, l.collective.name(), Some(comm))
    }

    fn launch_config(&self, count: usize) -> LaunchConfig {
        let blocks = count.div_ceil(256).clamp(1, self.gpu.sm_count() as usize * 16) as u32;
        LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 }
    }
}

impl Engine for NcclEngine<'_> {
    fn name(&self) -> &'static str {
        "nccl"
    }

    fn allocate(&mut self, bytes: usize) -> Result<()> {
        if self.send.as_ref().is_some_and(|b| b.bytes >= bytes) {
            return Ok(());
        }
        (self.send, self.recv) = (None, None);
        self.send = Some(self.gpu.alloc(bytes)?);
        self.recv = Some(self.gpu.alloc(bytes)?);
        Ok(())
    }

    fn run(&mut self, launch: &Launch, shifts: &[usize], graph_launches: usize, per_launch: bool) -> Result<Timing> {
        let stream = &self.gpu.stream;
        // Without graphs a mark is one launch; with graphs one replay of `shifts.len()` launches.
        let (marks, launches_per_mark) = if graph_launches > 0 { (graph_launches, shifts.len().max(1)) } else { (shifts.len(), 1) };
        let events = if per_launch {
            let timing = Some(cu::CUevent_flags::CU_EVENT_DEFAULT);
            (0..=marks).map(|_| self.gpu.ctx.new_event(timing)).collect::<Result<Vec<_>, _>>()?
        } else {
            Vec::new()
        };
        let graph = if graph_launches > 0 {
            stream.begin_capture(cu::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)?;
            for &shift in shifts {
                self.enqueue(launch, shift)?;
            }
            let Some(graph) = stream.end_capture(cu::CUgraphInstantiate_flags(0))? else {
                bail!("CUDA graph capture of {} produced no graph", launch.collective);
            };
            graph.upload()?;
            self.gpu.synchronize()?;
            self.world.barrier();
            Some(graph)
        } else {
            None
        };
        let start = Instant::now();
        #[allow(clippy::needless_range_loop)] // a mark is one launch or one graph replay
        for mark in 0..marks {
            if let Some(event) = events.get(mark) {
                event.record(stream)?;
            }
            match &graph {
                Some(g) => g.launch()?,
                None => self.enqueue(launch, shifts[mark])?,
            }
        }
        if let Some(last) = events.last() {
            last.record(stream)?;
        }
        self.gpu.synchronize()?;
        let mean = start.elapsed().as_secs_f64() / (marks * launches_per_mark).max(1) as f64;
        let per_launch = events.windows(2).map(|w| Ok(w[0].elapsed_ms(&w[1])? as f64 / 1e3 / launches_per_mark as f64)).collect::<Result<Vec<_>>>()?;
        Ok(Timing { mean, per_launch })
    }

    fn fill(&mut self, launch: &Launch, pattern: &Pattern) -> Result<()> {
        let rank = self.world.rank;
        let output = launch.output(rank);
        self.gpu.memset(self.ptr(output, 0), 0xFF, output.bytes)?;
        let input = launch.input(rank);
        self.launch_fill(self.ptr(input, 0), (input.bytes / launch.dtype.size()) as u64, pattern)
    }

    fn corrupt_output(&mut self, launch: &Launch) -> Result<()> {
        let output = launch.output(self.world.rank);
        if output.bytes > 0 {
            let mut byte = [0u8];
            self.gpu.copy_to_host(self.ptr(output, 0), &mut byte)?;
            byte[0] ^= 1;
            self.gpu.copy_to_device(&byte, self.ptr(output, 0))?;
        }
        Ok(())
    }

    fn count_wrong(&mut self, launch: &Launch, pattern: &Pattern, mapping: Mapping) -> Result<u64> {
        let output = launch.output(self.world.rank);
        self.launch_count_wrong(self.ptr(output, 0), (output.bytes / launch.dtype.size()) as u64, pattern, mapping)
    }
}

fn nccl_type(d: DType) -> nccl::ncclDataType_t {
    use nccl::ncclDataType_t::*;
    match d {
        DType::Int8 => ncclInt8,
        DType::Uint8 => ncclUint8,
        DType::Int32 => ncclInt32,
        DType::Uint32 => ncclUint32,
        DType::Int64 => ncclInt64,
        DType::Uint64 => ncclUint64,
        DType::Float16 => ncclFloat16,
        DType::Float32 => ncclFloat32,
        DType::Float64 => ncclFloat64,
        DType::Bfloat16 => ncclBfloat16,
        DType::Float8e4m3 => ncclFloat8e4m3,
        DType::Float8e5m2 => ncclFloat8e5m2,
    }
}

fn nccl_op(op: RedOp) -> nccl::ncclRedOp_t {
    use nccl::ncclRedOp_t::*;
    match op {
        RedOp::Sum => ncclSum,
        RedOp::Prod => ncclProd,
        RedOp::Min => ncclMin,
        RedOp::Max => ncclMax,
        RedOp::Avg => ncclAvg,
    }
}
