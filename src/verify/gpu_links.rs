//! The links between GPUs: within each host (every host at once) the copy-engine bandwidth of
//! every ordered pair of its GPUs (cuMemcpyPeer from the rank's GPU to another's memory, like
//! nvbandwidth's write CE; one pair per host at a time) and NCCL all_reduce over its GPUs; and
//! NCCL all_reduce over the GPUs of every pair of hosts, which is where a bad NIC or cable
//! shows.

use super::figure::{Measurement, Subject, HOST_ALL_REDUCE, HOST_PAIR_ALL_REDUCE, P2P_COPY};
use super::hosts::Hosts;
use crate::backend::cuda::op_timer::timed;
use crate::backend::cuda::Gpu;
use crate::dist::nccl::{check, NcclComm};
use crate::dist::watchdog::Watchdog;
use crate::dist::world::World;
use anyhow::{Context, Result};
use cudarc::driver::{result, sys, CudaContext};
use std::sync::Arc;
use std::time::Duration;

pub const P2P_BYTES: usize = 256 << 20;
pub const ALL_REDUCE_BYTES: usize = 1 << 30;
const WARMUP: usize = 2;
const REPETITIONS: usize = 10;

/// What the link probes run on: this rank's GPU, the world's NCCL communicator (split per probe),
/// the watchdog and its timeout, and the slowprobe hook's `repeat`.
pub struct Links<'a> {
    pub world: &'a World,
    pub hosts: &'a Hosts,
    pub gpu: &'a Gpu,
    pub comm: &'a NcclComm,
    pub watchdog: &'a Watchdog,
    pub timeout: Duration,
    pub repeat: usize,
}

/// Device memory on another GPU of this host, freed in that GPU's context.
struct PeerBuffer {
    ctx: Arc<CudaContext>,
    ptr: sys::CUdeviceptr,
}

impl Drop for PeerBuffer {
    fn drop(&mut self) {
        if self.ctx.bind_to_thread().is_ok() {
            unsafe {
                let _ = result::free_sync(self.ptr);
            }
        }
    }
}

/// Collective. The copy bandwidth from this rank's GPU to each other GPU of its host (the pairs
/// of each host one at a time); skipped, with the reason, where hosts have one GPU (on every
/// rank) or a rank cannot open another GPU (exclusive compute mode: that rank's copies only).
pub fn peer_copies(l: &Links) -> Result<std::result::Result<Vec<Measurement>, String>> {
    let (world, hosts, gpu, repeat) = (l.world, l.hosts, l.gpu, l.repeat);
    let most = hosts.most_per_host();
    if most < 2 {
        return Ok(Err("one GPU per host: no GPU-to-GPU copies".into()));
    }
    crate::dist::phase::set("verify p2p");
    let mut out = Vec::new();
    let mut unopened = None;
    for from in 0..most {
        // This rank's turn: the other GPUs' contexts, opened once for all its copies.
        let mine = world.local_rank == from;
        let peers: Vec<(usize, Arc<CudaContext>)> = match mine {
            true => match (0..world.local_size).filter(|&to| to != from).map(|to| Ok((to, CudaContext::new(to)?))).collect::<Result<Vec<_>>>() {
                Ok(peers) => peers,
                Err(e) => {
                    unopened = Some(format!("rank {} cannot open another GPU of {} ({e:#}): no GPU-to-GPU copies from it", world.rank, world.host));
                    Vec::new()
                }
            },
            false => Vec::new(),
        };
        for to in (0..most).filter(|&t| t != from) {
            if let Some((_, peer)) = peers.iter().find(|(t, _)| *t == to) {
                let seconds = copy_to_peer(gpu, peer, repeat).with_context(|| format!("copying from GPU {from} to GPU {to} of {}", world.host))?;
                let to_rank = hosts.rank_of(hosts.host_of[world.rank], to).unwrap_or(world.rank);
                let subject = Subject { label: format!("{} GPU {from} → GPU {to}", world.host), ranks: vec![world.rank, to_rank] };
                out.push(Measurement::new(P2P_COPY, subject, P2P_BYTES as f64 / 1e9, seconds));
            }
            world.quiet_barrier();
        }
        // Dropping a context makes it current first (cudarc): ours again after them.
        drop(peers);
        gpu.ctx.bind_to_thread()?;
    }
    Ok(unopened.map_or(Ok(out), Err))
}

/// The seconds of each repetition of copying P2P_BYTES from this rank's GPU to `peer`'s memory.
fn copy_to_peer(gpu: &Gpu, peer: &Arc<CudaContext>, repeat: usize) -> Result<Vec<f64>> {
    peer.bind_to_thread()?;
    let target = PeerBuffer { ptr: unsafe { result::malloc_sync(P2P_BYTES) }?, ctx: peer.clone() };
    gpu.ctx.bind_to_thread()?;
    // Direct access where the pair allows it (NVLink, PCIe P2P); otherwise the driver stages the
    // copy through the host, and the figure shows it.
    let enabled = unsafe { sys::cuCtxEnablePeerAccess(peer.cu_ctx(), 0) };
    tracing::debug!(?enabled, "peer access");
    let source = gpu.alloc(P2P_BYTES)?;
    let (stream, from_ctx) = (gpu.stream.cu_stream(), gpu.ctx.cu_ctx());
    let seconds = timed(gpu, WARMUP, REPETITIONS, repeat, &mut || {
        Ok(unsafe { result::memcpy_peer_async(peer.cu_ctx(), target.ptr, from_ctx, source.ptr, P2P_BYTES, stream) }?)
    })?;
    drop(target);
    gpu.ctx.bind_to_thread()?;
    Ok(seconds)
}

/// The seconds of each repetition of an fp32 sum all_reduce of `bytes` over `comm`, as `phase`
/// (the telemetry's and the watchdog's name for it), under the watchdog.
fn time_all_reduce(l: &Links, comm: &NcclComm, bytes: usize, phase: &str) -> Result<Vec<f64>> {
    let (send, recv) = (l.gpu.alloc(bytes)?, l.gpu.alloc(bytes)?);
    let stream = l.gpu.stream.cu_stream() as cudarc::nccl::sys::cudaStream_t;
    l.watchdog.arm(phase, l.timeout);
    let seconds = timed(l.gpu, WARMUP, REPETITIONS, l.repeat, &mut || {
        use cudarc::nccl::sys::{ncclAllReduce, ncclDataType_t::ncclFloat32, ncclRedOp_t::ncclSum};
        let r = unsafe { ncclAllReduce(send.ptr as *const _, recv.ptr as *mut _, bytes / 4, ncclFloat32, ncclSum, comm.raw(), stream) };
        check(r, "ncclAllReduce", Some(comm.raw()))
    });
    l.watchdog.disarm();
    seconds
}

/// nccl-tests' all_reduce busbw bytes of one operation of `bytes` over `n` ranks.
fn busbw_gb(bytes: usize, n: usize) -> f64 {
    bytes as f64 * 2.0 * (n as f64 - 1.0) / n as f64 / 1e9
}

/// Collective over `comm` (the world's): NCCL all_reduce (fp32 sum, ALL_REDUCE_BYTES) over the
/// GPUs of each host, every host at once; the host's first rank returns its measurement (the
/// others none).
/// Err(reason) where a host has one GPU.
pub fn host_all_reduce(l: &Links) -> Result<std::result::Result<Vec<Measurement>, String>> {
    let (world, watchdog) = (l.world, l.watchdog);
    let host = l.hosts.host_of[world.rank];
    let local = l.comm.split(Some(host as u32), world.local_rank, watchdog, l.timeout)?.context("ncclCommSplit gave no communicator")?;
    let outcome = if world.local_size < 2 {
        Err(format!("{} has one GPU: no all_reduce inside it", world.host))
    } else {
        let seconds = time_all_reduce(l, &local, ALL_REDUCE_BYTES, "verify host all_reduce")?;
        let subject = Subject { label: format!("{} ({} GPUs)", world.host, world.local_size), ranks: vec![world.rank] };
        Ok((world.local_rank == 0)
            .then(|| Measurement::new(HOST_ALL_REDUCE, subject, busbw_gb(ALL_REDUCE_BYTES, world.local_size), seconds))
            .into_iter()
            .collect())
    };
    local.destroy(watchdog)?;
    Ok(outcome)
}

/// The sizes of the all_reduce between two hosts.
pub const PAIR_SIZES: [(usize, &str); 3] = [(64 << 20, "64 MiB"), (256 << 20, "256 MiB"), (1 << 30, "1 GiB")];

/// Each rank's communicator colour in one round of host pairs: the pair its host is in, or None
/// (its host rests this round).
pub fn pair_colors(round: &[(usize, usize)], host_of: &[usize]) -> Vec<Option<u32>> {
    host_of.iter().map(|h| round.iter().position(|&(a, b)| a == *h || b == *h).map(|p| p as u32)).collect()
}

/// Collective over `comm` (the world's): NCCL all_reduce over the GPUs of every pair of hosts at
/// PAIR_SIZES, the pairs of a round-robin round at once, a communicator split per round; the
/// first rank of each pair's first host returns its measurements. Err(reason) with one host.
pub fn host_pair_all_reduce(l: &Links) -> Result<std::result::Result<Vec<Measurement>, String>> {
    let (world, hosts) = (l.world, l.hosts);
    if hosts.names.len() < 2 {
        return Ok(Err("one host: no NCCL between hosts".into()));
    }
    let mut out = Vec::new();
    for round in super::schedule::round_robin(hosts.names.len()) {
        let color = pair_colors(&round, &hosts.host_of)[world.rank];
        let Some(pair) = l.comm.split(color, world.rank, l.watchdog, l.timeout)? else { continue };
        let (a, b) = round[color.unwrap_or(0) as usize];
        let n = (0..world.size).filter(|&r| hosts.host_of[r] == a || hosts.host_of[r] == b).count();
        let leader = hosts.rank_of(a, 0) == Some(world.rank);
        for (bytes, size) in PAIR_SIZES {
            let seconds = time_all_reduce(l, &pair, bytes, &format!("verify host pairs {size}"))?;
            if leader {
                let label = format!("{} ↔ {} ({n} GPUs)", hosts.names[a], hosts.names[b]);
                let subject = Subject { label, ranks: vec![world.rank, hosts.rank_of(b, 0).unwrap_or(world.rank)] };
                out.push(Measurement::new(HOST_PAIR_ALL_REDUCE, subject, busbw_gb(bytes, n), seconds).with_variant(size.into()));
            }
        }
        pair.destroy(l.watchdog)?;
    }
    Ok(Ok(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_round_puts_the_ranks_of_a_pair_of_hosts_together_and_rests_the_others() {
        // Three hosts of two ranks: one rests each round.
        let host_of = [0, 0, 1, 1, 2, 2];
        let rounds = crate::verify::schedule::round_robin(3);
        for round in &rounds {
            let colors = pair_colors(round, &host_of);
            let (a, b) = round[0];
            for (rank, color) in colors.iter().enumerate() {
                assert_eq!(color.is_some(), host_of[rank] == a || host_of[rank] == b, "{round:?}: rank {rank}");
            }
        }
        assert_eq!(busbw_gb(1 << 30, 16), (1u64 << 30) as f64 * 2.0 * 15.0 / 16.0 / 1e9);
    }
}
