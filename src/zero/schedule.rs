//! The order of one micro-batch's work, unit by unit, for both trainers: when each unit's
//! weights must be in place and the next one's gather may start, when its gradients get a
//! place, when they are summed over the ranks, and the compute in between. The GPU runs it
//! with NCCL on a communication stream (model/gpu_model.rs), the CPU with MPI on host buffers
//! (train/cpu_rank.rs); what a stage keeps and releases is zero/stage.rs's.

use super::stage::Shards;
use crate::model::layout::Layout;
use anyhow::Result;
use std::ops::Range;

/// A piece of the model's compute: the embedding, one layer, or the final norm with the head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Piece {
    Embedding,
    Layer(usize),
    Head,
}

/// What a trainer does at each point of the schedule. The collective hooks do nothing by
/// default: a single whole model (the CPU oracle) needs only the compute.
pub trait UnitWork {
    /// Before `unit`'s compute: its current weights in place; `next` (the unit computed after
    /// it) may start arriving so that it overlaps this compute.
    fn weights_for(&mut self, _unit: usize, _next: Option<usize>) -> Result<()> {
        Ok(())
    }
    /// Before `unit`'s backward: a zeroed place for its gradients where they are released
    /// between uses.
    fn grads_for(&mut self, _unit: usize) -> Result<()> {
        Ok(())
    }
    /// After `unit`'s backward on the step's last micro-batch: its gradients summed over the
    /// ranks.
    fn reduce(&mut self, _unit: usize) -> Result<()> {
        Ok(())
    }
    /// After the backward that reduced: every sum complete before the optimizer reads them.
    fn drain(&mut self) -> Result<()> {
        Ok(())
    }
    fn forward(&mut self, piece: Piece) -> Result<()>;
    fn backward(&mut self, piece: Piece) -> Result<()>;
}

/// The units whose weights are gathered as soon as their update is done, rather than when the
/// next forward asks, so that the gathers overlap the rest of the update: every unit while the
/// whole weights stay (stages 1-2), the two that the forward starts with at stage 3 (one per
/// slot), none at stage 0 (each rank updates its own copy).
pub fn gathered_after_update(layout: &Layout, shards: &Shards) -> Range<usize> {
    let units = layout.units.len();
    match shards.stage {
        0 => 0..0,
        1 | 2 => 0..units,
        _ => 0..units.min(2),
    }
}

/// Every piece in forward order with its unit.
fn pieces(layout: &Layout) -> Vec<(Piece, usize)> {
    let layers = layout.layers.iter().enumerate().map(|(i, lt)| (Piece::Layer(i), lt.wq.unit));
    std::iter::once((Piece::Embedding, layout.embedding.unit)).chain(layers).chain(std::iter::once((Piece::Head, layout.lm_head.unit))).collect()
}

/// The forward: each unit's weights before its first piece, with the next unit's on the way.
pub fn forward(layout: &Layout, work: &mut dyn UnitWork) -> Result<()> {
    let order = pieces(layout);
    for (i, &(piece, unit)) in order.iter().enumerate() {
        if i == 0 || order[i - 1].1 != unit {
            let next = (unit + 1 < layout.units.len()).then_some(unit + 1);
            work.weights_for(unit, next)?;
        }
        work.forward(piece)?;
    }
    Ok(())
}

/// The backward, from the head down: a unit's weights (and the next lower unit's on the way)
/// and its gradients' place when the backward enters it, at its highest piece; with `reduce`
/// (the step's last micro-batch) its sum over the ranks once its lowest piece is done, which
/// overlaps the rest of the backward. The embedding's backward reads no weights.
pub fn backward(layout: &Layout, work: &mut dyn UnitWork, reduce: bool) -> Result<()> {
    let order = pieces(layout);
    let embedding = layout.embedding.unit;
    for (i, &(piece, unit)) in order.iter().enumerate().rev() {
        if i + 1 == order.len() || order[i + 1].1 != unit {
            if piece != Piece::Embedding {
                let below = (unit - 1 > embedding).then_some(unit - 1);
                work.weights_for(unit, below)?;
            }
            work.grads_for(unit)?;
        }
        work.backward(piece)?;
        if reduce && (i == 0 || order[i - 1].1 != unit) {
            work.reduce(unit)?;
        }
    }
    if reduce {
        work.drain()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::LlamaConfig;

    /// Writes down what the schedule asks for.
    #[derive(Default)]
    struct Log(Vec<String>);

    impl Log {
        fn note(&mut self, entry: String) -> Result<()> {
            self.0.push(entry);
            Ok(())
        }
    }

    impl UnitWork for Log {
        fn weights_for(&mut self, unit: usize, next: Option<usize>) -> Result<()> {
            self.note(format!("w{unit}>{}", next.map_or("-".into(), |n| n.to_string())))
        }
        fn grads_for(&mut self, unit: usize) -> Result<()> {
            self.note(format!("g{unit}"))
        }
        fn reduce(&mut self, unit: usize) -> Result<()> {
            self.note(format!("r{unit}"))
        }
        fn drain(&mut self) -> Result<()> {
            self.note("drain".into())
        }
        fn forward(&mut self, piece: Piece) -> Result<()> {
            self.note(format!("F{piece:?}"))
        }
        fn backward(&mut self, piece: Piece) -> Result<()> {
            self.note(format!("B{piece:?}"))
        }
    }

    #[test]
    fn units_of_two_layers_are_fetched_once_and_reduced_after_their_lowest_layer() {
        let mut c = LlamaConfig::load("tiny").unwrap();
        c.n_layers = 3;
        // Units: embedding 0, layers {0,1} 1, layer {2} 2, head 3.
        let layout = Layout::sharded(&c, 2, 2);
        let mut log = Log::default();
        forward(&layout, &mut log).unwrap();
        backward(&layout, &mut log, true).unwrap();
        let expected = "w0>1 FEmbedding w1>2 FLayer(0) FLayer(1) w2>3 FLayer(2) w3>- FHead \
                        w3>2 g3 BHead r3 w2>1 g2 BLayer(2) r2 w1>- g1 BLayer(1) BLayer(0) r1 g0 BEmbedding r0 drain";
        assert_eq!(log.0.join(" "), expected);
        let mut log = Log::default();
        backward(&layout, &mut log, false).unwrap();
        assert!(!log.0.iter().any(|s| s.starts_with('r') || s == "drain"), "{:?}", log.0);
    }
}
