//! What a sweep needs from the machinery that moves the bytes: NCCL on GPU buffers
//! (`device_nccl.rs`) or MPI on host buffers (`host_mpi.rs`). The runner owns the schedule,
//! timing rules and bookkeeping; an engine only allocates, fills, launches and checks.

use super::dtype::DType;
use super::pattern::{Mapping, Pattern};
use super::redop::RedOp;
use crate::dist::collective::{Collective, Counts};
use anyhow::Result;

/// One collective call of a sweep row.
#[derive(Clone, Copy, Debug)]
pub struct Launch {
    pub collective: Collective,
    pub dtype: DType,
    pub op: RedOp,
    pub root: usize,
    pub counts: Counts,
    pub in_place: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Buffer {
    Send,
    Recv,
}

/// A region of one of the two buffers, in bytes from its start (before the per-iteration shift).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub buffer: Buffer,
    pub offset: usize,
    pub bytes: usize,
}

impl Launch {
    /// Where this rank's input lives: the send buffer, or inside the receive buffer in place
    /// (nccl-tests' `sendInplaceOffset`).
    pub fn input(&self, rank: usize) -> Region {
        let size = self.dtype.size();
        let bytes = self.counts.send * size;
        if self.in_place {
            Region { buffer: Buffer::Recv, offset: self.counts.send_inplace_offset * rank * size, bytes }
        } else {
            Region { buffer: Buffer::Send, offset: 0, bytes }
        }
    }

    pub fn output(&self, rank: usize) -> Region {
        let size = self.dtype.size();
        let bytes = self.counts.recv * size;
        let offset = if self.in_place { self.counts.recv_inplace_offset * rank * size } else { 0 };
        Region { buffer: Buffer::Recv, offset, bytes }
    }

    /// The byte span one iteration touches in each buffer: consecutive iterations shift by
    /// this much through the buffers, as nccl-tests does, so small sizes do not replay the cache.
    pub fn footprint(&self) -> usize {
        self.counts.bytes(self.dtype.size())
    }
}

/// Times of one timed batch, in seconds.
pub struct Timing {
    /// Wall time of the whole batch divided by the launch count (nccl-tests' figure).
    pub mean: f64,
    /// Each launch's own time, when asked for (an event between launches on the GPU, which
    /// costs a few microseconds per launch at mid sizes, so never in the batch whose mean is
    /// reported); with graphs, each replay's time divided by the launches it holds.
    pub per_launch: Vec<f64>,
}

pub trait Engine {
    /// "nccl" or "mpi-host": recorded in the output and the results file.
    fn name(&self) -> &'static str;

    /// Makes both buffers at least `bytes` long.
    fn allocate(&mut self, bytes: usize) -> Result<()>;

    /// Launches `shifts.len()` calls, the i-th with both regions moved `shifts[i]` bytes, and
    /// waits for all of them. With `graph_launches` > 0 the calls are captured once and the
    /// capture replayed that many times (CUDA graphs; the host engine refuses). `per_launch`
    /// asks for each launch's time too.
    fn run(&mut self, launch: &Launch, shifts: &[usize], graph_launches: usize, per_launch: bool) -> Result<Timing>;

    /// Poisons the output region, then writes `pattern`'s values into the input region.
    fn fill(&mut self, launch: &Launch, pattern: &Pattern) -> Result<()>;

    /// Flips the lowest bit of the first output element (the corrupt fault hook).
    fn corrupt_output(&mut self, launch: &Launch) -> Result<()>;

    /// Output elements that differ (bitwise) from `pattern`'s expectation under `mapping`.
    fn count_wrong(&mut self, launch: &Launch, pattern: &Pattern, mapping: Mapping) -> Result<u64>;
}
