//! The flat buffer's units (model/layout.rs) cut into one equal chunk per rank: rank r owns
//! chunk r of every unit, and its shard is those chunks laid end to end. So each unit is one
//! reduce-scatter (gradients into the shards) and one all-gather (weights out of them), and a
//! unit's chunk sits at offset `unit.start / ranks` of every shard.

use crate::model::layout::Layout;
use std::ops::Range;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    pub ranks: usize,
    /// The layout's units; each is a multiple of `ranks` long.
    pub units: Vec<Range<usize>>,
}

/// One rank's chunk of one unit: where it is in the flat buffer and in the shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub unit: usize,
    pub global: Range<usize>,
    pub local: usize,
}

impl Partition {
    pub fn new(layout: &Layout, ranks: usize) -> Partition {
        assert!(layout.units.iter().all(|u| u.len() % ranks == 0), "the layout is not padded for {ranks} ranks");
        Partition { ranks, units: layout.units.clone() }
    }

    /// Elements per shard.
    pub fn shard(&self) -> usize {
        self.units.last().map_or(0, |u| u.end) / self.ranks
    }

    /// Unit `unit`'s chunk on `rank`.
    pub fn chunk(&self, unit: usize, rank: usize) -> Chunk {
        let u = &self.units[unit];
        let len = u.len() / self.ranks;
        let start = u.start + rank * len;
        Chunk { unit, global: start..start + len, local: u.start / self.ranks }
    }

    /// Every chunk `rank` owns, in buffer order.
    pub fn chunks(&self, rank: usize) -> impl Iterator<Item = Chunk> + '_ {
        (0..self.units.len()).map(move |u| self.chunk(u, rank))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::LlamaConfig;

    #[test]
    fn chunks_tile_each_unit_and_each_shard() {
        let layout = Layout::sharded(&LlamaConfig::load("tiny").unwrap(), 4, 1);
        let p = Partition::new(&layout, 4);
        assert_eq!(p.shard() * 4, layout.total);
        for (u, unit) in layout.units.iter().enumerate() {
            let mut next = unit.start;
            for r in 0..4 {
                let c = p.chunk(u, r);
                assert_eq!(c.global.start, next);
                next = c.global.end;
            }
            assert_eq!(next, unit.end);
        }
        let mut local = 0;
        for c in p.chunks(2) {
            assert_eq!(c.local, local);
            local += c.global.len();
        }
        assert_eq!(local, p.shard());
    }
}
