//! The MPI world as every rank sees it: global and node-local rank, host name, and the
//! collective helpers the rest of the program needs (agreeing on errors, gathering numbers).
//! The same over a sub-world (a Group split from the world): the scaling phase's.

use mpi::collective::SystemOperation;
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::*;

/// The job's MPI: the environment and the group of every rank (World derefs to it).
pub struct World {
    _universe: mpi::environment::Universe,
    all: Group,
}

/// Ranks joined by one communicator, as each of them sees it.
pub struct Group {
    comm: SimpleCommunicator,
    pub rank: usize,
    pub size: usize,
    /// Rank among the group's ranks on this host (MPI shared-memory split): picks the GPU.
    pub local_rank: usize,
    pub local_size: usize,
    pub host: String,
}

impl World {
    /// Starts MPI (also as a singleton without mpirun). Threads may call MPI_Abort (watchdog).
    pub fn init() -> World {
        let (universe, _threading) = mpi::initialize_with_threading(mpi::Threading::Multiple).unwrap_or_else(|| {
            print_line("h200-mpibench: error: MPI was already initialised");
            std::process::exit(1)
        });
        let host = mpi::environment::processor_name().unwrap_or_else(|_| "unknown-host".into());
        let all = Group::of(universe.world(), host);
        World { all, _universe: universe }
    }

    /// Ends every rank of the job: the one-line cause is printed by the caller first.
    pub fn abort(&self, code: i32) -> ! {
        abort_world(code)
    }

    pub fn mpi_library_version() -> String {
        mpi::environment::library_version().map(|v| v.split('\0').next().unwrap_or("").lines().next().unwrap_or("").trim().to_string()).unwrap_or_default()
    }
}

impl std::ops::Deref for World {
    type Target = Group;
    fn deref(&self) -> &Group {
        &self.all
    }
}

impl Group {
    /// Collective over `comm`: the group, its ranks on each host found by a shared-memory split.
    fn of(comm: SimpleCommunicator, host: String) -> Group {
        let rank = comm.rank() as usize;
        let local = comm.split_shared(rank as i32);
        Group { rank, size: comm.size() as usize, local_rank: local.rank() as usize, local_size: local.size() as usize, host, comm }
    }

    /// Collective: the ranks passing the same `color` form a sub-group, ranked as in this one;
    /// a rank passing None joins none.
    pub fn split(&self, color: Option<u32>) -> Option<Group> {
        let color = color.map_or(mpi::topology::Color::undefined(), |c| mpi::topology::Color::with_value(c as i32));
        let sub = self.comm.split_by_color_with_key(color, self.rank as i32);
        // Every rank of this group takes part in the split; only members build the sub-group.
        sub.map(|comm| Group::of(comm, self.host.clone()))
    }

    pub fn comm(&self) -> &SimpleCommunicator {
        &self.comm
    }

    pub fn is_root(&self) -> bool {
        self.rank == 0
    }

    /// "rank 3/8 (node-a)": the prefix of every line a rank prints about itself.
    pub fn who(&self) -> String {
        format!("rank {}/{} ({})", self.rank, self.size, self.host)
    }

    pub fn barrier(&self) {
        self.comm.barrier();
    }

    /// A barrier that sleeps while it waits instead of polling: the ranks waiting for another
    /// one's measurement leave it the host's CPUs and memory.
    pub fn quiet_barrier(&self) {
        let mut request = self.comm.immediate_barrier();
        loop {
            match request.test() {
                Ok(_) => return,
                Err(pending) => request = pending,
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    }

    /// Collective: every rank passes its own outcome and gets Ok only if all ranks succeeded,
    /// otherwise the lowest failing rank's message (naming that rank) on every rank.
    pub fn agree<T>(&self, outcome: Result<T, String>) -> Result<T, String> {
        let mine = if outcome.is_err() { self.rank as u64 } else { u64::MAX };
        let mut first = u64::MAX;
        self.comm.all_reduce_into(&mine, &mut first, SystemOperation::min());
        if first == u64::MAX {
            return outcome;
        }
        let mut message = match &outcome {
            Err(e) if first == self.rank as u64 => format!("{}: {e}", self.who()).into_bytes(),
            _ => Vec::new(),
        };
        let mut len = message.len() as u64;
        let root = self.comm.process_at_rank(first as i32);
        root.broadcast_into(&mut len);
        message.resize(len as usize, 0);
        root.broadcast_into(&mut message[..]);
        Err(String::from_utf8_lossy(&message).into_owned())
    }

    /// Every rank's value of `x`, on every rank, in rank order.
    pub fn all_gather_f64(&self, x: &[f64]) -> Vec<f64> {
        let mut out = vec![0.0; x.len() * self.size];
        self.comm.all_gather_into(x, &mut out[..]);
        out
    }

    pub fn all_gather_string(&self, s: &str) -> Vec<String> {
        let (lens, padded) = self.padded(s);
        let mut all = vec![0u8; padded.len() * self.size];
        self.comm.all_gather_into(&padded[..], &mut all[..]);
        unpad(&all, &lens)
    }

    /// Every rank's string, on rank 0 only (in rank order; empty elsewhere).
    pub fn gather_string_to_root(&self, s: &str) -> Vec<String> {
        let (lens, padded) = self.padded(s);
        let root = self.comm.process_at_rank(0);
        if !self.is_root() {
            root.gather_into(&padded[..]);
            return Vec::new();
        }
        let mut all = vec![0u8; padded.len() * self.size];
        root.gather_into_root(&padded[..], &mut all[..]);
        unpad(&all, &lens)
    }

    /// Collective: every rank's length of `s`, and `s`'s bytes padded to the longest (at least 1).
    fn padded(&self, s: &str) -> (Vec<u64>, Vec<u8>) {
        let mut lens = vec![0u64; self.size];
        self.comm.all_gather_into(&(s.len() as u64), &mut lens[..]);
        let mut padded = s.as_bytes().to_vec();
        padded.resize((*lens.iter().max().unwrap_or(&0) as usize).max(1), 0);
        (lens, padded)
    }

    pub fn sum_u64(&self, x: u64) -> u64 {
        let mut out = 0u64;
        self.comm.all_reduce_into(&x, &mut out, SystemOperation::sum());
        out
    }

    /// Broadcasts rank 0's bytes (e.g. the NCCL unique id) into `buf` on every rank.
    pub fn broadcast_from_root(&self, buf: &mut [u8]) {
        self.comm.process_at_rank(0).broadcast_into(buf);
    }
}

/// Each rank's string from padded blocks of equal width.
fn unpad(all: &[u8], lens: &[u64]) -> Vec<String> {
    let width = all.len() / lens.len().max(1);
    all.chunks(width.max(1)).zip(lens).map(|(chunk, &len)| String::from_utf8_lossy(&chunk[..len as usize]).into_owned()).collect()
}

/// Prints one line to stderr in a single write, so lines of ranks sharing a terminal or
/// pipe never interleave.
pub fn print_line(text: &str) {
    use std::io::Write;
    let line = format!("{}\n", text.split_whitespace().collect::<Vec<_>>().join(" "));
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// MPI_Abort on MPI_COMM_WORLD, callable from any thread (the watchdog's).
pub fn abort_world(code: i32) -> ! {
    unsafe {
        mpi::ffi::MPI_Abort(mpi::ffi::RSMPI_COMM_WORLD, code);
    }
    std::process::exit(code)
}

/// Data-parallel training sums over an MPI communicator: the world's (Group::comm) or a
/// sub-world's (Group::split).
impl crate::dist::ranks::Ranks for SimpleCommunicator {
    fn rank(&self) -> usize {
        Communicator::rank(self) as usize
    }
    fn count(&self) -> usize {
        self.size() as usize
    }
    fn job_rank(&self) -> usize {
        Communicator::rank(&SimpleCommunicator::world()) as usize
    }
    fn sum_f64(&self, x: f64) -> f64 {
        let mut out = 0.0;
        self.all_reduce_into(&x, &mut out, SystemOperation::sum());
        out
    }
    fn sum_f32(&self, values: &mut [f32]) {
        if self.size() > 1 {
            let mine = values.to_vec();
            self.all_reduce_into(&mine[..], values, SystemOperation::sum());
        }
    }
    fn reduce_scatter_sum_f32(&self, all: &[f32], mine: &mut [f32]) {
        self.reduce_scatter_block_into(all, mine, SystemOperation::sum());
    }
    fn all_gather_f32(&self, mine: &[f32], all: &mut [f32]) {
        self.all_gather_into(mine, all);
    }
}
