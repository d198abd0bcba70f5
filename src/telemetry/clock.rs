//! One clock for all ranks: each rank's offset to rank 0's wall clock, read by every rank right
//! as a barrier lets them go (the skew is the barrier's exit, microseconds), so that every
//! sample's time is on rank 0's clock.

use crate::dist::world::World;
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch on this host's clock.
pub fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// This rank's clock and rank 0's: a time on it maps to rank 0's.
#[derive(Clone, Copy, Debug)]
pub struct RunClock {
    /// Rank 0's clock minus this rank's.
    pub offset_s: f64,
    /// Rank 0's clock at the start: sample times count from it.
    pub start_s: f64,
}

impl RunClock {
    /// Collective: every rank reads its clock as the barrier ends; rank 0's readings go to all.
    pub fn agree(world: &World) -> RunClock {
        world.barrier();
        let mine = unix_now();
        let all = world.all_gather_f64(&[mine]);
        RunClock { offset_s: all[0] - mine, start_s: all[0] }
    }

    /// Seconds since the start on rank 0's clock, for a time on this rank's.
    pub fn since_start(&self, local_unix_s: f64) -> f64 {
        local_unix_s + self.offset_s - self.start_s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rank_behind_rank_0_is_moved_forward() {
        let c = RunClock { offset_s: 2.0, start_s: 100.0 };
        assert_eq!(c.since_start(99.0), 1.0);
    }
}
