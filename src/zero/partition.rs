//! The flat parameter buffer cut into one equal shard per rank (the last one padded), the unit
//! every ZeRO stage shards by.

use std::ops::Range;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Partition {
    pub total: usize,
    pub ranks: usize,
    /// Elements per shard; ranks × shard ≥ total.
    pub shard: usize,
}

impl Partition {
    pub fn new(total: usize, ranks: usize) -> Partition {
        Partition { total, ranks, shard: total.div_ceil(ranks) }
    }

    /// Length of the padded buffers the collectives exchange.
    pub fn padded(&self) -> usize {
        self.shard * self.ranks
    }

    /// The real (unpadded) elements rank `rank` owns.
    pub fn range(&self, rank: usize) -> Range<usize> {
        let start = (rank * self.shard).min(self.total);
        start..(start + self.shard).min(self.total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_tile_the_buffer() {
        let p = Partition::new(10, 4);
        assert_eq!((p.shard, p.padded()), (3, 12));
        let ranges: Vec<_> = (0..4).map(|r| p.range(r)).collect();
        assert_eq!(ranges, vec![0..3, 3..6, 6..9, 9..10]);
        assert_eq!(Partition::new(2, 4).range(3), 2..2);
    }
}
