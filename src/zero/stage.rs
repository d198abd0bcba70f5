//! What a ZeRO stage keeps on a rank and which unit-wise collectives it runs, for both
//! trainers (GPU: NCCL on device buffers, overlapped; CPU: MPI on host buffers).
//!
//! Stage 0: every rank keeps everything; each unit's gradients are all-reduced.
//! Stage 1: fp32 master weights and Adam moments only for this rank's chunks; each unit's
//!          gradients are reduce-scattered into the gradient shard; after the update every unit's
//!          bf16 weights are all-gathered from the owners.
//! Stage 2: as 1, and the full gradients exist only while a unit's backward runs (except with
//!          accumulation, where they sum over the micro-batches and are reduced on the last).
//! Stage 3: as 2, and the full weights exist only while a unit is used: all-gathered before
//!          each use in the forward and the backward, released after.

use super::partition::{Chunk, Partition};
use crate::model::layout::{Kind, Layout};
use std::ops::Range;

#[derive(Clone, Debug)]
pub struct Shards {
    pub part: Partition,
    pub rank: usize,
    pub stage: u8,
}

/// A run of shard elements that belongs to one tensor: the optimizer's unit of work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub unit: usize,
    pub global: Range<usize>,
    pub local: usize,
    pub decay: bool,
}

impl Shards {
    pub fn new(layout: &Layout, ranks: usize, rank: usize, stage: u8) -> Shards {
        Shards { part: Partition::new(layout, ranks), rank, stage }
    }

    /// The pieces of the flat buffer whose optimizer state this rank keeps, and where each
    /// starts in that state: its chunks from stage 1, every whole unit at stage 0.
    pub fn owned(&self) -> Vec<Chunk> {
        if self.stage >= 1 {
            self.part.chunks(self.rank).collect()
        } else {
            let units = self.part.units.iter().enumerate();
            units.map(|(unit, u)| Chunk { unit, global: u.clone(), local: u.start }).collect()
        }
    }

    /// Elements of this rank's optimizer state (and of its summed gradients).
    pub fn owned_len(&self) -> usize {
        if self.stage >= 1 {
            self.part.shard()
        } else {
            self.part.shard() * self.part.ranks
        }
    }

    /// The owned elements cut at tensor boundaries (padding left out), in shard order.
    pub fn segments(&self, layout: &Layout) -> Vec<Segment> {
        let mut out = Vec::new();
        for chunk in self.owned() {
            for t in layout.tensors().into_iter().filter(|t| t.unit == chunk.unit) {
                let (start, end) = (t.offset.max(chunk.global.start), t.range().end.min(chunk.global.end));
                if start < end {
                    out.push(Segment { unit: chunk.unit, global: start..end, local: chunk.local + start - chunk.global.start, decay: t.kind != Kind::Gain });
                }
            }
        }
        out
    }

    /// Gradients are summed over ranks (not just into shards) at stage 0.
    pub fn all_reduces(&self) -> bool {
        self.stage == 0
    }

    /// The full gradients are released unit by unit after their reduction.
    pub fn releases_gradients(&self) -> bool {
        self.stage >= 2
    }

    /// The full weights are gathered for each use and released after it.
    pub fn releases_weights(&self) -> bool {
        self.stage >= 3
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::LlamaConfig;

    #[test]
    fn segments_cover_each_owned_tensor_element_once() {
        let layout = Layout::sharded(&LlamaConfig::load("tiny").unwrap(), 3, 2);
        let mut seen = vec![0u8; layout.total];
        for rank in 0..3 {
            let shards = Shards::new(&layout, 3, rank, 1);
            assert_eq!(shards.owned_len(), layout.total / 3);
            for s in shards.segments(&layout) {
                assert!(s.local + s.global.len() <= shards.owned_len());
                seen[s.global].iter_mut().for_each(|x| *x += 1);
            }
        }
        for t in layout.tensors() {
            assert!(seen[t.range()].iter().all(|&x| x == 1), "{}", t.name);
        }
        assert_eq!(seen.iter().map(|&x| x as usize).sum::<usize>(), layout.parameters());
        let whole = Shards::new(&layout, 3, 0, 0);
        assert_eq!(whole.owned_len(), layout.total);
    }
}
