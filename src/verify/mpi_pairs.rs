//! MPI point-to-point between the members of the job, pair by pair: latency (8-byte ping-pong)
//! and bandwidth (4 MiB ping-pong). With several hosts the members are the hosts, each by its
//! first rank, and a round-robin schedule measures every pair of hosts, the pairs of one round
//! at once (each host's network is in one pair per round); on one host the members are its
//! ranks, one pair at a time (pairs at once would share the host's memory).

use super::figure::{Measurement, Subject, MPI_BANDWIDTH, MPI_LATENCY};
use super::hosts::Hosts;
use super::schedule::round_robin;
use crate::dist::world::World;
use mpi::traits::*;
use std::time::Instant;

const LATENCY_TRIPS: usize = 100;
const LATENCY_REPETITIONS: usize = 20;
pub const BANDWIDTH_BYTES: usize = 4 << 20;
const BANDWIDTH_REPETITIONS: usize = 10;
const WARMUP: usize = 2;

/// Collective. The measurements of the pairs this rank led (the lower rank of each pair).
pub fn probe(world: &World, hosts: &Hosts) -> Vec<Measurement> {
    let names = &hosts.names;
    let one_host = names.len() == 1;
    let members: Vec<usize> = if one_host { (0..world.size).collect() } else { hosts.first_ranks() };
    let schedule = round_robin(members.len());
    let rounds: Vec<Vec<(usize, usize)>> = if one_host { schedule.into_iter().flatten().map(|pair| vec![pair]).collect() } else { schedule };
    let mut out = Vec::new();
    for round in rounds {
        for &(a, b) in &round {
            let (ra, rb) = (members[a], members[b]);
            if world.rank != ra && world.rank != rb {
                continue;
            }
            let leads = world.rank == ra;
            let peer = if leads { rb } else { ra };
            let latency = ping_pong(world, peer, leads, 8, LATENCY_TRIPS, LATENCY_REPETITIONS);
            let bandwidth = ping_pong(world, peer, leads, BANDWIDTH_BYTES, 1, BANDWIDTH_REPETITIONS);
            if leads {
                let label = match one_host {
                    true => format!("rank {ra} ↔ rank {rb} on {}", world.host),
                    false => format!("{} ↔ {} (ranks {ra}, {rb})", names[a], names[b]),
                };
                let subject = Subject { label, ranks: vec![ra, rb] };
                out.push(Measurement::new(MPI_LATENCY, subject.clone(), (2 * LATENCY_TRIPS) as f64, latency));
                out.push(Measurement::new(MPI_BANDWIDTH, subject, (2 * BANDWIDTH_BYTES) as f64 / 1e9, bandwidth));
            }
        }
        world.quiet_barrier();
    }
    out
}

/// The seconds of each repetition of `trips` round trips of `bytes` with `peer`; the leader
/// sends first.
fn ping_pong(world: &World, peer: usize, leads: bool, bytes: usize, trips: usize, repetitions: usize) -> Vec<f64> {
    let other = world.comm().process_at_rank(peer as i32);
    let mut buffer = vec![0u8; bytes];
    let mut seconds = Vec::with_capacity(repetitions);
    for rep in 0..WARMUP + repetitions {
        let start = Instant::now();
        for _ in 0..trips {
            if leads {
                other.send(&buffer[..]);
                other.receive_into(&mut buffer[..]);
            } else {
                other.receive_into(&mut buffer[..]);
                other.send(&buffer[..]);
            }
        }
        if rep >= WARMUP {
            seconds.push(start.elapsed().as_secs_f64());
        }
    }
    seconds
}
