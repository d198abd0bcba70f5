//! The no-GPU engine: the same sweeps over MPI on host memory (CI, laptops, clusters without
//! NCCL). MPI has no 16- or 8-bit floats, so those reduce through a user-defined MPI_Op that
//! rounds each partial result to the element type, as a GPU reduction does.

use super::dtype::DType;
use super::engine::{Buffer, Engine, Launch, Region, Timing};
use super::minifloat::Fp8;
use super::pattern::{Mapping, Pattern};
use super::redop::RedOp;
use crate::dist::collective::Collective;
use crate::dist::world::Group;
use anyhow::{ensure, Result};
use mpi::ffi;
use mpi::traits::AsRaw;
use std::cell::Cell;
use std::ffi::{c_int, c_void};
use std::time::Instant;

pub struct HostMpiEngine<'w> {
    world: &'w Group,
    send: Vec<u64>,
    recv: Vec<u64>,
    /// The input of in-place calls, and of float avg scaled by 1/n (NCCL's PreMulSum).
    staged: Vec<u64>,
    small_float_op: ffi::MPI_Op,
}

thread_local! {
    /// The (dtype, op) of the collective in flight: MPI calls the user op on this thread,
    /// inside the blocking call.
    static IN_FLIGHT: Cell<(DType, RedOp)> = const { Cell::new((DType::Float16, RedOp::Sum)) };
}

impl<'w> HostMpiEngine<'w> {
    pub fn new(world: &'w Group) -> Self {
        let mut op: ffi::MPI_Op = unsafe { ffi::RSMPI_SUM };
        unsafe { ffi::MPI_Op_create(Some(reduce_small_floats), 1, &mut op) };
        HostMpiEngine { world, send: Vec::new(), recv: Vec::new(), staged: Vec::new(), small_float_op: op }
    }

    fn bytes_mut(&mut self, buffer: Buffer) -> &mut [u8] {
        match buffer {
            Buffer::Send => bytemuck::cast_slice_mut(&mut self.send),
            Buffer::Recv => bytemuck::cast_slice_mut(&mut self.recv),
        }
    }

    fn region_mut(&mut self, r: Region, shift: usize) -> &mut [u8] {
        &mut self.bytes_mut(r.buffer)[r.offset + shift..r.offset + shift + r.bytes]
    }

    fn ptr(&mut self, r: Region, shift: usize) -> *mut c_void {
        self.bytes_mut(r.buffer)[r.offset + shift..].as_mut_ptr() as *mut c_void
    }

    fn mpi_op(&self, dtype: DType, op: RedOp) -> ffi::MPI_Op {
        if small_float(dtype).is_some() {
            return self.small_float_op;
        }
        unsafe {
            match op {
                RedOp::Sum | RedOp::Avg => ffi::RSMPI_SUM,
                RedOp::Prod => ffi::RSMPI_PROD,
                RedOp::Min => ffi::RSMPI_MIN,
                RedOp::Max => ffi::RSMPI_MAX,
            }
        }
    }

    /// One blocking collective call at byte shift `shift`.
    fn call(&mut self, l: &Launch, shift: usize) -> Result<()> {
        let rank = self.world.rank;
        let n = self.world.size;
        let comm = self.world.comm().as_raw();
        let dt = mpi_type(l.dtype);
        let op = self.mpi_op(l.dtype, l.op);
        let size = l.dtype.size();
        let (input, output) = (l.input(rank), l.output(rank));
        let mut send = self.ptr(input, shift);
        let recv = self.ptr(output, shift);
        // rsmpi has no portable MPI_IN_PLACE, and float avg must not scale the caller's input:
        // both run out of place from a staged copy of the input.
        let scale = l.op == RedOp::Avg && l.dtype.is_float() && l.collective.reduces();
        let moves_in_place = l.in_place && !matches!(l.collective, Collective::Broadcast | Collective::SendRecv);
        if scale || moves_in_place {
            let src = self.region_mut(input, shift).to_vec();
            self.staged.resize(src.len().div_ceil(8), 0);
            let staged: &mut [u8] = &mut bytemuck::cast_slice_mut(&mut self.staged)[..src.len()];
            if scale {
                scale_elements(l.dtype, &src, staged, 1.0 / n as f64);
            } else {
                staged.copy_from_slice(&src);
            }
            send = staged.as_mut_ptr() as *mut c_void;
        }
        let count = |c: usize| -> Result<c_int> { c_int::try_from(c).map_err(|_| anyhow::anyhow!("the MPI host path takes at most 2^31-1 elements per call")) };
        IN_FLIGHT.with(|f| f.set((l.dtype, l.op)));
        let status = unsafe {
            match l.collective {
                Collective::AllReduce => ffi::MPI_Allreduce(send, recv, count(l.counts.param)?, dt, op, comm),
                Collective::ReduceScatter => ffi::MPI_Reduce_scatter_block(send, recv, count(l.counts.param)?, dt, op, comm),
                Collective::AllGather => {
                    let c = count(l.counts.param)?;
                    ffi::MPI_Allgather(send, c, dt, recv, c, dt, comm)
                }
                Collective::AllToAll => {
                    let c = count(l.counts.param)?;
                    ffi::MPI_Alltoall(send, c, dt, recv, c, dt, comm)
                }
                Collective::Broadcast => {
                    if rank == l.root && send != recv {
                        std::ptr::copy_nonoverlapping(send as *const u8, recv as *mut u8, l.counts.recv * size);
                    }
                    ffi::MPI_Bcast(recv, count(l.counts.param)?, dt, l.root as c_int, comm)
                }
                Collective::SendRecv => {
                    let (next, prev) = (((rank + 1) % n) as c_int, ((rank + n - 1) % n) as c_int);
                    let c = count(l.counts.param)?;
                    if send == recv {
                        ffi::MPI_Sendrecv_replace(recv, c, dt, next, 0, prev, 0, comm, ffi::RSMPI_STATUS_IGNORE)
                    } else {
                        ffi::MPI_Sendrecv(send, c, dt, next, 0, recv, c, dt, prev, 0, comm, ffi::RSMPI_STATUS_IGNORE)
                    }
                }
            }
        };
        ensure!(status == 0, "MPI call for {} failed with code {status}", l.collective);
        if l.op == RedOp::Avg && !l.dtype.is_float() && l.collective.reduces() {
            divide_elements(l.dtype, self.region_mut(output, shift), n as i64);
        }
        Ok(())
    }
}

impl Engine for HostMpiEngine<'_> {
    fn name(&self) -> &'static str {
        "mpi-host"
    }

    fn allocate(&mut self, bytes: usize) -> Result<()> {
        let words = bytes.div_ceil(8);
        for buffer in [&mut self.send, &mut self.recv] {
            if buffer.len() < words {
                buffer.resize(words, 0);
            }
        }
        Ok(())
    }

    /// `graph_launches` is 0 here: app/sweeps.rs refuses -G on the host path before it runs.
    fn run(&mut self, launch: &Launch, shifts: &[usize], _graph_launches: usize, per_launch: bool) -> Result<Timing> {
        let mut times = Vec::with_capacity(shifts.len());
        let start = Instant::now();
        for &shift in shifts {
            let t = Instant::now();
            self.call(launch, shift)?;
            if per_launch {
                times.push(t.elapsed().as_secs_f64());
            }
        }
        let mean = start.elapsed().as_secs_f64() / shifts.len().max(1) as f64;
        Ok(Timing { mean, per_launch: times })
    }

    fn fill(&mut self, launch: &Launch, pattern: &Pattern) -> Result<()> {
        let rank = self.world.rank;
        self.region_mut(launch.output(rank), 0).fill(0xFF);
        pattern.write_values(rank, self.region_mut(launch.input(rank), 0));
        Ok(())
    }

    fn corrupt_output(&mut self, launch: &Launch) -> Result<()> {
        if let Some(byte) = self.region_mut(launch.output(self.world.rank), 0).first_mut() {
            *byte ^= 1;
        }
        Ok(())
    }

    fn count_wrong(&mut self, launch: &Launch, pattern: &Pattern, mapping: Mapping) -> Result<u64> {
        let output = launch.output(self.world.rank);
        Ok(pattern.count_mismatches(mapping, self.region_mut(output, 0)))
    }
}

impl Drop for HostMpiEngine<'_> {
    fn drop(&mut self) {
        unsafe { ffi::MPI_Op_free(&mut self.small_float_op) };
    }
}

fn mpi_type(dtype: DType) -> ffi::MPI_Datatype {
    unsafe {
        match dtype {
            DType::Int8 => ffi::RSMPI_INT8_T,
            DType::Uint8 | DType::Float8e4m3 | DType::Float8e5m2 => ffi::RSMPI_UINT8_T,
            DType::Int32 => ffi::RSMPI_INT32_T,
            DType::Uint32 => ffi::RSMPI_UINT32_T,
            DType::Int64 => ffi::RSMPI_INT64_T,
            DType::Uint64 => ffi::RSMPI_UINT64_T,
            DType::Float16 | DType::Bfloat16 => ffi::RSMPI_UINT16_T,
            DType::Float32 => ffi::RSMPI_FLOAT,
            DType::Float64 => ffi::RSMPI_DOUBLE,
        }
    }
}

/// Exact decoder and rounding encoder of one of the float types MPI lacks.
type SmallFloatCodec = (fn(u16) -> f64, fn(f64) -> u16);

fn small_float(dtype: DType) -> Option<SmallFloatCodec> {
    match dtype {
        DType::Float16 => Some((|b| half::f16::from_bits(b).to_f64(), |x| half::f16::from_f64(x).to_bits())),
        DType::Bfloat16 => Some((|b| half::bf16::from_bits(b).to_f64(), |x| half::bf16::from_f64(x).to_bits())),
        DType::Float8e4m3 => Some((|b| Fp8::E4M3.decode(b as u8), |x| Fp8::E4M3.encode(x) as u16)),
        DType::Float8e5m2 => Some((|b| Fp8::E5M2.decode(b as u8), |x| Fp8::E5M2.encode(x) as u16)),
        _ => None,
    }
}

fn read_element(bytes: &[u8]) -> u64 {
    let mut padded = [0u8; 8];
    padded[..bytes.len()].copy_from_slice(bytes);
    u64::from_le_bytes(padded)
}

/// Element-wise `combine(inout, in)` on 16- and 8-bit floats, rounding like the GPU does.
unsafe extern "C" fn reduce_small_floats(input: *mut c_void, inout: *mut c_void, len: *mut c_int, _datatype: *mut ffi::MPI_Datatype) {
    let (dtype, op) = IN_FLIGHT.with(|f| f.get());
    let Some((decode, encode)) = small_float(dtype) else { return };
    let size = dtype.size();
    let n = *len as usize * size;
    let a = std::slice::from_raw_parts(input as *const u8, n);
    let b = std::slice::from_raw_parts_mut(inout as *mut u8, n);
    for (x, y) in a.chunks(size).zip(b.chunks_mut(size)) {
        let (u, v) = (decode(read_element(x) as u16), decode(read_element(y) as u16));
        let r = match op {
            RedOp::Sum | RedOp::Avg => u + v,
            RedOp::Prod => u * v,
            RedOp::Min => u.min(v),
            RedOp::Max => u.max(v),
        };
        y.copy_from_slice(&encode(r).to_le_bytes()[..size]);
    }
}

/// dst = src * factor element-wise, rounded to the (float) element type.
fn scale_elements(dtype: DType, src: &[u8], dst: &mut [u8], factor: f64) {
    let size = dtype.size();
    for (x, y) in src.chunks(size).zip(dst.chunks_mut(size)) {
        let bits = read_element(x);
        let scaled: u64 = match dtype {
            DType::Float32 => ((f32::from_bits(bits as u32) as f64 * factor) as f32).to_bits() as u64,
            DType::Float64 => (f64::from_bits(bits) * factor).to_bits(),
            _ => {
                let (decode, encode) = small_float(dtype).expect("float dtype");
                encode(decode(bits as u16) * factor) as u64
            }
        };
        y.copy_from_slice(&scaled.to_le_bytes()[..size]);
    }
}

/// Integer avg: the reduced sum divided by the rank count, truncating (NCCL's SumPostDiv).
fn divide_elements(dtype: DType, bytes: &mut [u8], n: i64) {
    let size = dtype.size();
    let bits = 8 * size as u32;
    for element in bytes.chunks_mut(size) {
        let raw = read_element(element);
        let value = match dtype.encoding() {
            super::dtype::Encoding::Signed => ((raw << (64 - bits)) as i64) >> (64 - bits),
            _ => raw as i64,
        };
        let q = if dtype.encoding() == super::dtype::Encoding::Unsigned { ((raw as u128) / n as u128) as u64 } else { (value / n) as u64 };
        element.copy_from_slice(&q.to_le_bytes()[..size]);
    }
}
