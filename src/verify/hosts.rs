//! Which host every rank is on: the hosts in the order of their first ranks, each rank's host
//! and local rank; gathered once per verify run for every probe that goes host by host.

use crate::dist::world::World;

/// Every rank's host, as an index in the order of the hosts' first ranks, and its local rank.
pub struct Hosts {
    pub names: Vec<String>,
    pub host_of: Vec<usize>,
    pub local_rank_of: Vec<usize>,
}

impl Hosts {
    /// Collective.
    pub fn gather(world: &World) -> Hosts {
        let all = world.all_gather_string(&world.host);
        let local_rank_of = world.all_gather_f64(&[world.local_rank as f64]).into_iter().map(|r| r as usize).collect();
        let mut names: Vec<String> = Vec::new();
        let host_of = all
            .iter()
            .map(|h| match names.iter().position(|n| n == h) {
                Some(i) => i,
                None => {
                    names.push(h.clone());
                    names.len() - 1
                }
            })
            .collect();
        Hosts { names, host_of, local_rank_of }
    }

    /// The world rank of `local` on host `host`.
    pub fn rank_of(&self, host: usize, local: usize) -> Option<usize> {
        (0..self.host_of.len()).find(|&r| self.host_of[r] == host && self.local_rank_of[r] == local)
    }

    /// The most ranks any host runs.
    pub fn most_per_host(&self) -> usize {
        self.local_rank_of.iter().max().map_or(0, |m| m + 1)
    }

    /// Each host's first rank, in host order.
    pub fn first_ranks(&self) -> Vec<usize> {
        (0..self.names.len()).filter_map(|h| self.rank_of(h, 0)).collect()
    }
}
