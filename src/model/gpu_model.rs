//! The Llama-2 step on one GPU: model/llama.rs's blocks on our kernels and cuBLASLt
//! (model/gpu_ops.rs), bf16 weights and activations, fp32 master weights, gradients and Adam
//! moments. Every parameter buffer is flat in the layout's order, so a tensor is an offset; the
//! ZeRO stage (zero/stage.rs) decides which buffers are whole, which are this rank's shard, and
//! which are two slots that units pass through, and the step queues each unit's gathers and
//! reductions on the communication stream (backend/cuda/exchange.rs) as the compute reaches it.

use super::config::LlamaConfig;
use super::gpu_ops::GpuOps;
use super::init::initialise_range;
use super::layout::Layout;
use super::llama::{Activations, Llama};
use crate::backend::cpu::adamw::AdamW;
use crate::backend::cuda::exchange::{CommCost, Exchange};
use crate::backend::cuda::model_ops::ModelOps;
use crate::backend::cuda::ops::adamw::AdamStep;
use crate::backend::cuda::unit_buffers::UnitBuffers;
use crate::backend::cuda::view::View;
use crate::backend::cuda::{DeviceBuffer, Gpu};
use crate::dist::nccl::NcclComm;
use crate::train::run_config::RunConfig;
use crate::zero::buffers::{slot_gradients, step_buffers, Allocated, Step};
use crate::zero::schedule::{self, Piece, UnitWork};
use crate::zero::stage::{Segment, Shards};
use anyhow::{bail, Result};
use rayon::prelude::*;
use std::ops::Range;

/// One forward or backward pass of a micro-batch: the schedule's hooks on the model.
struct Pass<'a, 'g> {
    model: &'a GpuModel<'g>,
    /// The forward's factor on the logits' gradient: grad_scale / counted positions.
    logits_scale: f64,
}

impl UnitWork for Pass<'_, '_> {
    fn weights_for(&mut self, unit: usize, next: Option<usize>) -> Result<()> {
        self.model.weights_for(unit, next)
    }
    fn grads_for(&mut self, unit: usize) -> Result<()> {
        self.model.grads_for(unit)
    }
    fn reduce(&mut self, unit: usize) -> Result<()> {
        self.model.reduce_unit(unit)
    }
    fn drain(&mut self) -> Result<()> {
        self.model.exchange.drain()
    }
    fn forward(&mut self, piece: Piece) -> Result<()> {
        self.model.llama.forward(&self.model.step_ops(), &self.model.acts, piece, self.logits_scale)
    }
    fn backward(&mut self, piece: Piece) -> Result<()> {
        self.model.llama.backward(&self.model.step_ops(), &self.model.acts, piece)
    }
}

/// Allocates zero/buffers.rs's table, every buffer of it and nothing else.
pub struct GpuModel<'g> {
    /// The model and its micro-batch shape; its layout is padded for the rank count.
    pub llama: Llama,
    gpu: &'g Gpu,
    pub ops: ModelOps<'g>,
    shards: Shards,
    segments: Vec<Segment>,
    /// This rank's fp32 master weights and Adam moments (zero/stage.rs: `owned`).
    master: DeviceBuffer,
    m: DeviceBuffer,
    v: DeviceBuffer,
    /// bf16 working weights: whole, or (stage 3) two slots filled from `weight_shard`.
    weights: UnitBuffers<half::bf16>,
    weight_shard: Option<DeviceBuffer>,
    /// fp32 gradients of the micro-batches: whole, or (stages 2-3 without accumulation) two slots.
    grads: UnitBuffers<f32>,
    /// From stage 1: this rank's chunks of the gradients summed over ranks.
    summed: Option<DeviceBuffer>,
    exchange: Exchange<'g>,
    acts: Activations<DeviceBuffer>,
    norm: DeviceBuffer, // fp64 sum of squares
}

impl<'g> GpuModel<'g> {
    /// Allocates everything for the run's micro-batches and initialises, from `seed`, the
    /// pieces of the model this rank keeps. `comm` joins the ranks of `shards` (None: one rank).
    pub fn new(gpu: &'g Gpu, config: &LlamaConfig, run: &RunConfig, seed: u64, shards: Shards, comm: Option<&'g NcclComm>) -> Result<GpuModel<'g>> {
        let c = config;
        let (batch, seq, recompute) = (run.micro_batch, run.seq, run.recompute);
        let layout = Layout::sharded(c, shards.part.ranks, run.bucket_layers);
        let input = run.plan_input(c, shards.part.ranks);
        // Everything below comes out of the buffer table, and all of it is used.
        let mut all = Allocated::new(&step_buffers(&input, Step::Gpu), |spec| gpu.alloc(spec.bytes() as usize))?;
        let acts = Activations::take(&mut all, c.n_layers, recompute)?;
        let ops = ModelOps::load(gpu, all.take("cuBLASLt workspace")?)?;
        let (master, m, v) = (all.take("master weights")?, all.take("adam m")?, all.take("adam v")?);
        let (weights, weight_shard) = if shards.releases_weights() {
            let slots = [all.take("weight slot 0")?, all.take("weight slot 1")?];
            (UnitBuffers::slots(slots, &layout)?, Some(all.take("weight shard")?))
        } else {
            (UnitBuffers::whole(all.take("weights")?, &layout)?, None)
        };
        let grads = if slot_gradients(&input) {
            UnitBuffers::slots([all.take("gradient slot 0")?, all.take("gradient slot 1")?], &layout)?
        } else {
            UnitBuffers::whole(all.take("gradients")?, &layout)?
        };
        let summed = if shards.all_reduces() { None } else { Some(all.take("summed gradients")?) };
        let model = GpuModel {
            ops,
            master,
            m,
            v,
            weight_shard,
            weights,
            grads,
            summed,
            segments: shards.segments(&layout),
            exchange: Exchange::new(gpu, comm, shards.part.ranks)?,
            shards,
            acts,
            norm: all.take("norm accumulator")?,
            llama: Llama { config: c.clone(), layout, batch, seq, recompute },
            gpu,
        };
        all.finish()?;
        model.initialise(seed)?;
        Ok(model)
    }

    /// Seeded weights, unit by unit on the host: the master chunks this rank owns, and the
    /// bf16 working copy it keeps (whole, or its shard at stage 3), rounded as the kernel would.
    fn initialise(&self, seed: u64) -> Result<()> {
        let bf16 = |x: &[f32]| -> Vec<half::bf16> { x.par_iter().map(|&w| half::bf16::from_f32(w)).collect() };
        // One unit at a time (the owned chunks come one per unit): the whole unit where this
        // rank keeps whole weights, else just its chunk, each element computed once.
        for chunk in self.shards.owned() {
            let whole = self.weights.whole_buffer();
            let span = if whole.is_some() { self.layout().units[chunk.unit].clone() } else { chunk.global.clone() };
            let mut values = vec![0f32; span.len()];
            initialise_range(&mut values, self.layout(), seed, span.clone());
            let mine = &values[chunk.global.start - span.start..chunk.global.end - span.start];
            self.gpu.copy_to_device(bytemuck::cast_slice(mine), self.master.view::<f32>().slice(chunk.local..chunk.local + mine.len()).ptr())?;
            let (working, dst) = match whole {
                Some(w) => (&values[..], w.view::<half::bf16>().slice(span.clone())),
                None => (mine, self.working_copy(chunk.local, chunk.global.clone())?),
            };
            self.gpu.copy_to_device(bytemuck::cast_slice(&bf16(working)), dst.ptr())?;
        }
        self.gpu.memset(self.m.ptr, 0, self.m.bytes)?;
        self.gpu.memset(self.v.ptr, 0, self.v.bytes)?;
        self.gpu.synchronize()
    }

    /// Where this rank's bf16 copy of the owned elements at shard offset `local` (flat-buffer
    /// elements `global`) lives: in the shard (stage 3) or in the whole weights.
    fn working_copy(&self, local: usize, global: Range<usize>) -> Result<View<'_, half::bf16>> {
        match (&self.weight_shard, self.weights.whole_buffer()) {
            (Some(shard), _) => Ok(shard.view().slice(local..local + global.len())),
            (None, Some(whole)) => Ok(whole.view().slice(global)),
            (None, None) => bail!("no bf16 working weights"),
        }
    }

    fn layout(&self) -> &Layout {
        &self.llama.layout
    }

    /// The step's ops on this rank's weights and gradients.
    fn step_ops(&self) -> GpuOps<'_, 'g> {
        GpuOps { ops: &self.ops, weights: &self.weights, grads: &self.grads }
    }

    /// Before `unit`'s compute: its current weights in place (stages 1-3: gathered if the
    /// update made them stale, the compute stream waiting for the gather), and the gather of
    /// `next` queued so that it overlaps this compute.
    fn weights_for(&self, unit: usize, next: Option<usize>) -> Result<()> {
        self.gather_unit(unit)?;
        if let Some(ready) = self.weights.take_event(unit) {
            self.exchange.compute_waits(&ready)?;
        }
        match next {
            Some(next) => self.gather_unit(next),
            None => Ok(()),
        }
    }

    /// All-gathers `unit`'s bf16 weights from every rank's chunk after the compute queued so
    /// far (the update, and the last use of the place's previous unit): from the shard into a
    /// slot (stage 3), or in place in the whole buffer (stages 1-2).
    fn gather_unit(&self, unit: usize) -> Result<()> {
        if self.weights.holds(unit) {
            return Ok(());
        }
        self.exchange.after_compute()?;
        let c = self.shards.part.chunk(unit, self.shards.rank);
        self.weights.claim(unit);
        self.exchange.all_gather(self.working_copy(c.local, c.global.clone())?, self.weights.unit(unit))?;
        self.weights.set_event(unit, self.exchange.mark()?);
        Ok(())
    }

    /// Before `unit`'s backward: a zeroed slot for its gradients (stages 2-3), once the
    /// reduction of the unit that used the slot before has drained it.
    fn grads_for(&self, unit: usize) -> Result<()> {
        if !self.grads.is_slots() {
            return Ok(());
        }
        if let Some(drained) = self.grads.take_event(unit) {
            self.exchange.compute_waits(&drained)?;
        }
        self.grads.claim(unit);
        let slot = self.grads.unit(unit);
        self.gpu.memset(slot.ptr(), 0, 4 * slot.len())
    }

    /// After `unit`'s backward on the last micro-batch: its gradients summed over the ranks on
    /// the communication stream, in place (stage 0) or into this rank's chunk (stage 1 on).
    fn reduce_unit(&self, unit: usize) -> Result<()> {
        self.exchange.after_compute()?;
        let src = self.grads.unit(unit);
        match &self.summed {
            None => self.exchange.all_reduce(src)?,
            Some(summed) => {
                let c = self.shards.part.chunk(unit, self.shards.rank);
                self.exchange.reduce_scatter(src, summed.view().slice(c.local..c.local + c.global.len()))?;
            }
        }
        if self.grads.is_slots() {
            self.grads.set_event(unit, self.exchange.mark()?);
        }
        Ok(())
    }

    /// Zeroes the whole gradient buffer before a step's first micro-batch (slots are zeroed
    /// unit by unit as the backward claims them).
    pub fn zero_grads(&self) -> Result<()> {
        match self.grads.whole_buffer() {
            Some(g) => self.gpu.memset(g.ptr, 0, g.bytes),
            None => Ok(()),
        }
    }

    /// Forward of one micro-batch to the per-position losses; the logits become their gradient
    /// × `grad_scale` / counted positions. Returns the mean loss (waits for the GPU).
    pub fn forward(&self, tokens: &[u32], labels: &[i32], grad_scale: f64) -> Result<f64> {
        let ops = self.step_ops();
        let logits_scale = self.llama.load_batch(&ops, &self.acts, tokens, labels, grad_scale)?;
        schedule::forward(self.layout(), &mut Pass { model: self, logits_scale })?;
        self.llama.mean_loss(&ops, &self.acts, labels)
    }

    /// Adds the micro-batch's gradient into the fp32 gradients; with `reduce` (the step's
    /// last micro-batch) each unit's gradients are summed over the ranks as soon as they are
    /// complete, overlapping the rest of the backward, and the compute stream waits for the
    /// last of these sums at the end.
    pub fn backward(&self, reduce: bool) -> Result<()> {
        schedule::backward(self.layout(), &mut Pass { model: self, logits_scale: 0.0 }, reduce)
    }

    /// This rank's part of the gradients summed over the ranks (the whole sum at stage 0).
    fn summed_grads(&self) -> Result<View<'_, f32>> {
        let buffer = match (&self.summed, self.grads.whole_buffer()) {
            (Some(summed), _) => summed,
            (None, Some(whole)) => whole,
            (None, None) => bail!("stage 0 keeps whole gradients"),
        };
        Ok(buffer.view().slice(0..self.shards.owned_len()))
    }

    /// The sum of squares of this rank's part of the summed gradients (waits for the GPU).
    pub fn grad_sum_squares(&self) -> Result<f64> {
        self.gpu.memset(self.norm.ptr, 0, 8)?;
        self.ops.sum_squares(self.norm.view(), self.summed_grads()?)?;
        Ok(self.gpu.download::<f64>(&self.norm)?[0])
    }

    /// Whether each rank holds the whole sum of the gradients (stage 0).
    pub fn holds_whole_sum(&self) -> bool {
        self.shards.all_reduces()
    }

    /// One AdamW step (t from 1) on this rank's part of the summed gradients times `scale`,
    /// then the gathers the schedule puts right after the update.
    pub fn update(&self, opt: &AdamW, t: u64, scale: f64) -> Result<()> {
        let grads = self.summed_grads()?;
        // From stage 1 a rank's bf16 weights are current only in its own chunks once updated:
        // each unit is gathered again, right after its update (zero/schedule.rs) or before its
        // next use.
        if !self.shards.all_reduces() {
            self.weights.forget();
        }
        let eager = schedule::gathered_after_update(self.layout(), &self.shards);
        // Unit by unit, so that every rank queues the same gathers (a rank's chunk of a unit may
        // be all padding, with no segment).
        for unit in 0..self.layout().units.len() {
            for seg in self.segments.iter().filter(|s| s.unit == unit) {
                let mine = seg.local..seg.local + seg.global.len();
                // The bf16 copy of the update: into the whole weights, or the shard (stage 3).
                let working = self.working_copy(seg.local, seg.global.clone())?;
                let (master, m, v) = (self.master.view().slice(mine.clone()), self.m.view().slice(mine.clone()), self.v.view().slice(mine.clone()));
                let step = AdamStep { t, decay: seg.decay, grad_scale: scale };
                self.ops.adamw(opt, master, working, grads.slice(mine), [m, v], step)?;
            }
            if eager.contains(&unit) {
                self.gather_unit(unit)?;
            }
        }
        Ok(())
    }

    /// The step's communication: exposed, busy, bytes (waits for the GPU).
    pub fn take_comm_cost(&self) -> Result<CommCost> {
        self.exchange.take_cost()
    }

    pub fn grads(&self) -> Result<Vec<f32>> {
        match self.grads.whole_buffer() {
            Some(g) => self.gpu.download(g),
            None => bail!("the gradients are in slots: no whole copy"),
        }
    }

    /// The whole bf16 weights the GPU computes with, widened to f32 (stages 0-2).
    pub fn weights_f32(&self) -> Result<Vec<f32>> {
        match self.weights.whole_buffer() {
            Some(w) => Ok(self.gpu.download::<half::bf16>(w)?.iter().map(|w| w.to_f32()).collect()),
            None => bail!("the weights are sharded: no whole copy"),
        }
    }
}
