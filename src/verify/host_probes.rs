//! The host's memory bandwidth as each rank sees it: a copy between two buffers of its own,
//! timed by one rank of each host at a time (every host at once) while the host's other ranks
//! wait, so that ranks sharing a host do not share its bandwidth while they are measured.

use super::figure::{Measurement, Subject, HOST_MEMCPY};
use super::hosts::Hosts;
use crate::dist::world::World;
use std::time::Instant;

/// Bytes of each buffer: far beyond any CPU's caches.
pub const MEMCPY_BYTES: usize = 256 << 20;
const WARMUP: usize = 2;
const REPETITIONS: usize = 10;

/// Collective. This rank's host copy bandwidth; `repeat`: copies per timed repetition, of which
/// one counts (1; the slowprobe test hook makes it more, so that the figure drops).
pub fn memcpy(world: &World, hosts: &Hosts, repeat: usize) -> Measurement {
    let mut seconds = Vec::new();
    for turn in 0..hosts.most_per_host() {
        if turn == world.local_rank {
            seconds = time_copies(repeat);
        }
        world.quiet_barrier();
    }
    let subject = Subject { label: format!("rank {} on {}", world.rank, world.host), ranks: vec![world.rank] };
    // One copy's bytes, whatever `repeat` is: the hook's extra copies only cost time.
    Measurement::new(HOST_MEMCPY, subject, (2 * MEMCPY_BYTES) as f64 / 1e9, seconds)
}

/// The seconds of each timed repetition of `repeat` copies (bytes read and written: 2 × MEMCPY_BYTES each).
fn time_copies(repeat: usize) -> Vec<f64> {
    let source: Vec<u8> = (0..MEMCPY_BYTES).map(|i| (i * 131 % 251) as u8).collect();
    let mut target = vec![0u8; MEMCPY_BYTES];
    let mut seconds = Vec::with_capacity(REPETITIONS);
    for rep in 0..WARMUP + REPETITIONS {
        let start = Instant::now();
        for _ in 0..repeat {
            target.copy_from_slice(std::hint::black_box(&source));
            std::hint::black_box(&mut target);
        }
        if rep >= WARMUP {
            seconds.push(start.elapsed().as_secs_f64());
        }
    }
    seconds
}
