//! One rank's model state on the CPU and the unit-wise collectives of its ZeRO stage over MPI,
//! run in zero/schedule.rs's order as the GPU runs them. What the GPU keeps in two unit slots
//! (stage 3 weights; stage 2-3 gradients without accumulation) lives here in the whole buffer,
//! but a unit that the GPU would not hold is filled with NaN, so that a schedule that reads
//! weights or gradients out of place shows in the loss.

use super::data_parallel::Ranks;
use crate::model::cpu_model::CpuPass;
use crate::model::init::initialise;
use crate::model::layout::Layout;
use crate::zero::places::Places;
use crate::zero::schedule::{self, Piece, UnitWork};
use crate::zero::stage::{Collective, Shards};
use anyhow::Result;
use std::time::Instant;

pub struct CpuRank<'a> {
    layout: &'a Layout,
    shards: &'a Shards,
    ranks: &'a dyn Ranks,
    /// The full weights the model computes with.
    params: Vec<f32>,
    /// The full gradients, summed over this rank's micro-batches.
    grads: Vec<f32>,
    /// This rank's master weights and its part of the gradients summed over ranks, in shard
    /// order (every unit at stage 0).
    pub master: Vec<f32>,
    pub summed: Vec<f32>,
    /// Which units' weights in `params` are current: the GPU's places for them (two slots at
    /// stage 3, unit u in slot u % 2; one per unit otherwise).
    weights: Places,
    /// Gradients are zeroed unit by unit when claimed, and released after their reduction.
    slotted_grads: bool,
    /// Communication so far: seconds, bytes sent.
    pub comm_s: f64,
    pub comm_bytes: u64,
}

impl<'a> CpuRank<'a> {
    /// The seeded initialisation; at stage 3 no unit is in place until gathered.
    pub fn new(layout: &'a Layout, shards: &'a Shards, ranks: &'a dyn Ranks, seed: u64, grad_accum: usize) -> CpuRank<'a> {
        let mut params = vec![0f32; layout.total];
        initialise(&mut params, layout, seed);
        let mut master = vec![0f32; shards.owned_len()];
        for c in shards.owned() {
            master[c.local..c.local + c.global.len()].copy_from_slice(&params[c.global.clone()]);
        }
        let slotted_grads = shards.releases_gradients() && grad_accum == 1;
        let released = shards.releases_weights();
        if released {
            params.fill(f32::NAN);
        }
        CpuRank {
            layout,
            shards,
            ranks,
            params,
            grads: vec![if slotted_grads { f32::NAN } else { 0.0 }; layout.total],
            summed: vec![0f32; master.len()],
            master,
            weights: if released { Places::slots() } else { Places::whole(layout.units.len(), true) },
            slotted_grads,
            comm_s: 0.0,
            comm_bytes: 0,
        }
    }

    /// Before a step's first micro-batch: whole gradients start from zero.
    pub fn begin_step(&mut self) {
        if !self.slotted_grads {
            self.grads.fill(0.0);
        }
    }

    /// After the update of the master weights: stage 0 copies its own (no communication);
    /// from stage 1 every unit is stale until gathered again, some of them at once
    /// (zero/schedule.rs).
    pub fn weights_updated(&mut self) {
        if self.shards.all_reduces() {
            self.params.copy_from_slice(&self.master);
        } else {
            self.weights.forget();
        }
        if self.shards.releases_weights() {
            self.params.fill(f32::NAN);
        }
        for unit in schedule::gathered_after_update(self.layout, self.shards) {
            self.ensure_weights(unit);
        }
    }

    /// `unit`'s weights gathered from every rank's master chunk, unless current; at stage 3
    /// into the slot of the GPU, whose previous unit is released.
    fn ensure_weights(&mut self, unit: usize) {
        if self.weights.holds(unit) {
            return;
        }
        if let Some(old) = self.weights.claim(unit) {
            self.params[self.layout.units[old].clone()].fill(f32::NAN);
        }
        let t = Instant::now();
        let c = self.shards.part.chunk(unit, self.shards.rank);
        let all = &mut self.params[self.layout.units[unit].clone()];
        self.ranks.all_gather_f32(&self.master[c.local..c.local + c.global.len()], all);
        self.comm_bytes += Collective::AllGather.bus_bytes(self.ranks.count(), 4 * all.len());
        self.comm_s += t.elapsed().as_secs_f64();
    }

    /// A micro-batch's pass over this rank's weights and gradients.
    pub fn micro_batch<'r, 'm, 'b>(&'r mut self, pass: CpuPass<'m, 'b, f32>) -> MicroBatch<'r, 'a, 'm, 'b> {
        MicroBatch { rank: self, pass }
    }
}

/// One micro-batch on a rank: the schedule's hooks on the rank's buffers, the compute on the
/// pass.
pub struct MicroBatch<'r, 'a, 'm, 'b> {
    rank: &'r mut CpuRank<'a>,
    pub pass: CpuPass<'m, 'b, f32>,
}

impl MicroBatch<'_, '_, '_, '_> {
    /// The rank's communication seconds so far.
    pub fn comm_s(&self) -> f64 {
        self.rank.comm_s
    }
}

impl UnitWork for MicroBatch<'_, '_, '_, '_> {
    fn weights_for(&mut self, unit: usize, next: Option<usize>) -> Result<()> {
        self.rank.ensure_weights(unit);
        if let Some(next) = next {
            self.rank.ensure_weights(next);
        }
        Ok(())
    }

    fn grads_for(&mut self, unit: usize) -> Result<()> {
        let r = &mut *self.rank;
        if r.slotted_grads {
            r.grads[r.layout.units[unit].clone()].fill(0.0);
        }
        Ok(())
    }

    /// Stage 0 all-reduces the unit; from stage 1 its sum is reduce-scattered into this
    /// rank's chunk, and from stage 2 the full gradients are released.
    fn reduce(&mut self, unit: usize) -> Result<()> {
        let r = &mut *self.rank;
        let t = Instant::now();
        let g = &mut r.grads[r.layout.units[unit].clone()];
        let n = r.ranks.count();
        if r.shards.all_reduces() {
            r.ranks.sum_f32(g);
            r.summed[r.layout.units[unit].clone()].copy_from_slice(g);
            r.comm_bytes += Collective::AllReduce.bus_bytes(n, 4 * g.len());
        } else {
            let c = r.shards.part.chunk(unit, r.shards.rank);
            r.ranks.reduce_scatter_sum_f32(g, &mut r.summed[c.local..c.local + c.global.len()]);
            r.comm_bytes += Collective::ReduceScatter.bus_bytes(n, 4 * g.len());
        }
        if r.shards.releases_gradients() {
            g.fill(f32::NAN);
        }
        r.comm_s += t.elapsed().as_secs_f64();
        Ok(())
    }

    fn forward(&mut self, piece: Piece) -> Result<()> {
        self.pass.forward(&self.rank.params, piece);
        Ok(())
    }

    fn backward(&mut self, piece: Piece) -> Result<()> {
        self.pass.backward(&self.rank.params, &mut self.rank.grads, piece);
        Ok(())
    }
}
