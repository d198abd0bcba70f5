//! One rank's model state on the CPU and the unit-wise collectives of its ZeRO stage over MPI,
//! run in zero/schedule.rs's order as the GPU runs them, on the GPU's buffer table
//! (zero/buffers.rs): whole weights and gradients, or the two unit slots of stages 2-3, so a
//! schedule that computes on a unit out of place stops as it would on the GPU.

use super::run_config::RunConfig;
use crate::backend::cpu::adamw::{global_norm, AdamW};
use crate::dist::collective::Collective;
use crate::dist::ranks::Ranks;
use crate::model::cpu_ops::{host_buffer, CpuOps, HostBuf};
use crate::model::init::{initialise, initialise_range};
use crate::model::llama::{Activations, Llama};
use crate::zero::buffers::{slot_gradients, step_buffers, Allocated, Step};
use crate::zero::places::UnitStore;
use crate::zero::schedule::{self, Piece, UnitWork};
use crate::zero::stage::Shards;
use anyhow::Result;
use std::cell::Ref;
use std::time::Instant;

pub struct CpuRank<'a> {
    pub model: &'a Llama,
    shards: &'a Shards,
    ranks: &'a dyn Ranks,
    /// The full weights the model computes with: whole, or (stage 3) two unit slots.
    weights: UnitStore<HostBuf<f32>>,
    /// The gradients of this rank's micro-batches: whole, or (stages 2-3 without accumulation)
    /// two unit slots.
    grads: UnitStore<HostBuf<f32>>,
    acts: Activations<HostBuf<f32>>,
    /// This rank's master weights and Adam moments, in shard order (every unit at stage 0),
    /// and whether each element is decayed.
    master: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
    decay: Vec<bool>,
    /// From stage 1: this rank's chunks of the gradients summed over ranks (stage 0 sums in
    /// place, in the whole gradients).
    summed: Option<HostBuf<f32>>,
    /// Communication so far: seconds, bytes sent.
    pub comm_s: f64,
    pub comm_bytes: u64,
}

impl<'a> CpuRank<'a> {
    /// Every buffer of the CPU table, and the seeded initialisation; at stage 3 no unit is in
    /// place until gathered.
    pub fn new(model: &'a Llama, shards: &'a Shards, ranks: &'a dyn Ranks, seed: u64, run: &RunConfig) -> Result<CpuRank<'a>> {
        let (layout, input) = (&model.layout, run.plan_input(&model.config, ranks.count()));
        let mut all = Allocated::new(&step_buffers(&input, Step::Cpu), |spec| Ok(host_buffer::<f32>(spec)))?;
        let acts = Activations::take(&mut all, model.config.n_layers, model.recompute)?;
        let (mut master, mut m, mut v) = (all.take("master weights")?.into_inner(), all.take("adam m")?.into_inner(), all.take("adam v")?.into_inner());
        let mut decay = vec![false; master.len()];
        for c in shards.owned() {
            initialise_range(&mut master[c.local..c.local + c.global.len()], layout, seed, c.global.clone());
        }
        for s in shards.segments(layout) {
            decay[s.local..s.local + s.global.len()].fill(s.decay);
        }
        m.fill(0.0);
        v.fill(0.0);
        let weights = if shards.releases_weights() {
            UnitStore::slots([all.take("weight slot 0")?, all.take("weight slot 1")?], layout)
        } else {
            let whole = all.take("weights")?;
            initialise(&mut whole.borrow_mut(), layout, seed);
            UnitStore::whole(whole, layout)
        };
        let grads = if slot_gradients(&input) {
            UnitStore::slots([all.take("gradient slot 0")?, all.take("gradient slot 1")?], layout)
        } else {
            UnitStore::whole(all.take("gradients")?, layout)
        };
        let summed = if shards.all_reduces() { None } else { Some(all.take("summed gradients")?) };
        all.finish()?;
        Ok(CpuRank { model, shards, ranks, weights, grads, acts, master, m, v, decay, summed, comm_s: 0.0, comm_bytes: 0 })
    }

    /// Before a step's first micro-batch: whole gradients start from zero.
    pub fn begin_step(&mut self) {
        if let Some(g) = self.grads.whole_buffer() {
            g.borrow_mut().fill(0.0);
        }
    }

    /// Whether each rank holds the whole sum of the gradients (stage 0).
    pub fn holds_whole_sum(&self) -> bool {
        self.summed.is_none()
    }

    /// The sum of squares of this rank's part of the summed gradients.
    pub fn grad_sum_squares(&self) -> f64 {
        global_norm(&summed_part(&self.summed, &self.grads)).powi(2)
    }

    /// One AdamW step (t from 1) on the master weights with the summed gradients × `scale`.
    pub fn update(&mut self, opt: &AdamW, t: u64, scale: f64) {
        let summed = summed_part(&self.summed, &self.grads);
        opt.step(&mut self.master, &summed, &mut self.m, &mut self.v, &self.decay, t, scale);
    }

    /// After the update: stage 0 copies its own master weights (no communication); from stage 1
    /// every unit is stale until gathered again, some of them at once (zero/schedule.rs).
    pub fn weights_updated(&mut self) {
        if self.shards.all_reduces() {
            self.weights.whole_buffer().expect("stage 0 keeps whole weights").borrow_mut().copy_from_slice(&self.master);
            return;
        }
        self.weights.places.forget();
        for unit in schedule::gathered_after_update(&self.model.layout, self.shards) {
            self.ensure_weights(unit);
        }
    }

    /// `unit`'s weights gathered from every rank's master chunk, unless current; at stage 3
    /// into its slot, pushing out the unit before.
    fn ensure_weights(&mut self, unit: usize) {
        if self.weights.places.holds(unit) {
            return;
        }
        self.weights.places.claim(unit);
        let t = Instant::now();
        let c = self.shards.part.chunk(unit, self.shards.rank);
        let (buffer, start) = self.weights.unit_start(unit);
        let all = &mut buffer.borrow_mut()[start..start + self.weights.unit_len(unit)];
        self.ranks.all_gather_f32(&self.master[c.local..c.local + c.global.len()], all);
        self.comm_bytes += Collective::AllGather.bus_bytes(self.ranks.count(), 4 * all.len());
        self.comm_s += t.elapsed().as_secs_f64();
    }

    /// A micro-batch loaded: the schedule's hooks and the model's pieces on this rank.
    pub fn micro_batch<'r>(&'r mut self, tokens: &[u32], labels: &[i32], grad_scale: f64) -> Result<MicroBatch<'r, 'a>> {
        let logits_scale = self.model.load_batch(&self.ops(), &self.acts, tokens, labels, grad_scale)?;
        Ok(MicroBatch { rank: self, logits_scale })
    }

    fn ops(&self) -> CpuOps<'_, f32> {
        CpuOps { weights: &self.weights, grads: &self.grads }
    }
}

/// This rank's part of the gradients summed over the ranks: its chunks, or (stage 0, no
/// `summed`) the whole sum, in place in the gradients.
fn summed_part<'s>(summed: &'s Option<HostBuf<f32>>, grads: &'s UnitStore<HostBuf<f32>>) -> Ref<'s, Vec<f32>> {
    match summed {
        Some(s) => s.borrow(),
        None => grads.whole_buffer().expect("stage 0 keeps whole gradients").borrow(),
    }
}

/// One micro-batch on a rank: the schedule's hooks on the rank's buffers.
pub struct MicroBatch<'r, 'a> {
    rank: &'r mut CpuRank<'a>,
    logits_scale: f64,
}

impl MicroBatch<'_, '_> {
    /// The rank's communication seconds so far.
    pub fn comm_s(&self) -> f64 {
        self.rank.comm_s
    }

    /// The mean loss of the micro-batch, once the forward ran.
    pub fn loss(&self, labels: &[i32]) -> Result<f64> {
        self.rank.model.mean_loss(&self.rank.ops(), &self.rank.acts, labels)
    }
}

impl UnitWork for MicroBatch<'_, '_> {
    fn weights_for(&mut self, unit: usize, next: Option<usize>) -> Result<()> {
        self.rank.ensure_weights(unit);
        if let Some(next) = next {
            self.rank.ensure_weights(next);
        }
        Ok(())
    }

    fn grads_for(&mut self, unit: usize) -> Result<()> {
        let grads = &self.rank.grads;
        if grads.places.is_slots() {
            grads.places.claim(unit);
            let (buffer, start) = grads.unit_start(unit);
            buffer.borrow_mut()[start..start + grads.unit_len(unit)].fill(0.0);
        }
        Ok(())
    }

    /// Stage 0 all-reduces the unit in place; from stage 1 its sum is reduce-scattered into
    /// this rank's chunk, and from stage 2 the full gradients are released (NaN where whole).
    fn reduce(&mut self, unit: usize) -> Result<()> {
        let r = &mut *self.rank;
        let t = Instant::now();
        let (buffer, start) = r.grads.unit_start(unit);
        let g = &mut buffer.borrow_mut()[start..start + r.grads.unit_len(unit)];
        let n = r.ranks.count();
        match &mut r.summed {
            None => {
                r.ranks.sum_f32(g);
                r.comm_bytes += Collective::AllReduce.bus_bytes(n, 4 * g.len());
            }
            Some(summed) => {
                let c = r.shards.part.chunk(unit, r.shards.rank);
                r.ranks.reduce_scatter_sum_f32(g, &mut summed.borrow_mut()[c.local..c.local + c.global.len()]);
                r.comm_bytes += Collective::ReduceScatter.bus_bytes(n, 4 * g.len());
            }
        }
        if r.shards.releases_gradients() {
            g.fill(f32::NAN);
        }
        r.comm_s += t.elapsed().as_secs_f64();
        Ok(())
    }

    fn forward(&mut self, piece: Piece) -> Result<()> {
        let r = &*self.rank;
        r.model.forward(&r.ops(), &r.acts, piece, self.logits_scale)
    }

    fn backward(&mut self, piece: Piece) -> Result<()> {
        let r = &*self.rank;
        r.model.backward(&r.ops(), &r.acts, piece)
    }
}
