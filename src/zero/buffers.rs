//! Every buffer an SFT step allocates, listed once, by name, category, element type and count:
//! both steps allocate exactly this table (model/llama.rs takes the activations out of it by
//! name, model/gpu_model.rs and train/cpu_rank.rs the rest), zero/planner.rs sums it, so what is
//! planned is what is allocated, by construction; `Allocated::finish` fails on a buffer left
//! over, a test builds the CPU rank at every stage and selftest checks the GPU's allocation.

use crate::backend::cuda::gemm::WORKSPACE_BYTES;
use crate::model::config::LlamaConfig;
use crate::model::layout::Layout;
use anyhow::{bail, Result};

/// What a plan is for: the model, the ranks and the run's shape.
#[derive(Clone, Debug)]
pub struct PlanInput {
    pub model: LlamaConfig,
    pub ranks: usize,
    pub stage: u8,
    pub micro_batch: usize,
    pub grad_accum: usize,
    pub seq: usize,
    pub recompute: bool,
    pub bucket_layers: usize,
}

/// Where a buffer's bytes count in the plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Category {
    /// bf16 working weights (a shard plus two gathered units at stage 3).
    Parameters,
    /// fp32 gradients of the micro-batches (two unit slots at stages 2-3 without accumulation).
    Gradients,
    /// fp32 master weights and Adam moments (a shard from stage 1).
    Optimizer,
    /// What the backward reads: saved layer activations (or one set with recompute), every
    /// layer's input, the head's.
    Activations,
    /// This rank's chunks of the summed gradients, received by reduce-scatter (stages 1-3).
    Communication,
    /// Scratch of one layer's backward, the norm's accumulator, cuBLASLt's workspace.
    Workspace,
}

/// A buffer's element type on the GPU. The CPU step holds every buffer in its one float type
/// (token ids and labels too: exact, as the vocabulary is below 2^24).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Elem {
    Bf16,
    F32,
    F64,
    /// Token ids (u32) and labels (i32).
    Id,
    /// Untyped bytes (cuBLASLt's workspace).
    Byte,
}

impl Elem {
    pub fn bytes(self) -> u64 {
        match self {
            Elem::Byte => 1,
            Elem::Bf16 => 2,
            Elem::F32 | Elem::Id => 4,
            Elem::F64 => 8,
        }
    }
}

/// Which step a table is for: the GPU's keeps three buffers the CPU's has no use for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Gpu,
    Cpu,
}

#[derive(Clone, Debug, PartialEq)]
pub struct BufferSpec {
    pub name: String,
    pub category: Category,
    pub elem: Elem,
    pub count: u64,
}

impl BufferSpec {
    /// The buffer's bytes on the GPU.
    pub fn bytes(&self) -> u64 {
        self.elem.bytes() * self.count
    }
}

/// A layer's saved activations: model/llama.rs's LayerActs, field for field (their sizes:
/// `act` in step_buffers).
pub const LAYER_ACTS: [&str; 13] = ["xn", "inv1", "q", "k", "v", "lse", "o", "x2", "xn2", "inv2", "gate", "up", "h"];

/// The backward's scratch (model/llama.rs's Scratch, field for field).
pub const SCRATCH: [&str; 11] = ["delta", "dx", "dx2", "dxn", "dq", "dk", "dv", "d_o", "dgate", "dup", "dh"];

/// Every buffer of the step for `p`, in the order the step takes them. The GPU's alone: cuBLASLt's
/// workspace, the fp64 norm accumulator, and at stage 3 the bf16 copy of the master shard (the
/// CPU computes in fp32 and gathers from the master itself).
pub fn step_buffers(p: &PlanInput, step: Step) -> Vec<BufferSpec> {
    use Category::*;
    use Elem::*;
    let gpu = step == Step::Gpu;
    let c = &p.model;
    let layout = Layout::sharded(c, p.ranks, p.bucket_layers);
    let (total, shard, unit) = (layout.total as u64, (layout.total / p.ranks) as u64, layout.largest_unit() as u64);
    let (n, d, kv, f) = ((p.micro_batch * p.seq) as u64, c.dim as u64, c.kv_dim() as u64, c.ffn_dim as u64);
    let head_rows = (p.micro_batch * c.n_heads * p.seq) as u64;
    let mut out = Vec::new();
    let mut add = |name: String, category: Category, elem: Elem, count: u64| out.push(BufferSpec { name, category, elem, count });
    // A layer activation or scratch buffer: bf16 per token, or fp32 (the 1/rms rows, lse's and
    // delta's head rows)
    let act = |name: &str| match name {
        "inv1" | "inv2" => (F32, n),
        "lse" | "delta" => (F32, head_rows),
        "k" | "v" | "dk" | "dv" => (Bf16, n * kv),
        "gate" | "up" | "h" | "dgate" | "dup" | "dh" => (Bf16, n * f),
        _ => (Bf16, n * d),
    };
    let kept = if p.recompute { 1 } else { c.n_layers };
    for layer in 0..kept {
        for name in LAYER_ACTS {
            let (elem, count) = act(name);
            add(format!("layer {layer} {name}"), Activations, elem, count);
        }
    }
    for name in SCRATCH {
        let (elem, count) = act(name);
        add(format!("scratch {name}"), Workspace, elem, count);
    }
    if gpu {
        add("cuBLASLt workspace".into(), Workspace, Byte, WORKSPACE_BYTES as u64);
    }
    let owned = if p.stage >= 1 { shard } else { total };
    add("master weights".into(), Optimizer, F32, owned);
    add("adam m".into(), Optimizer, F32, owned);
    add("adam v".into(), Optimizer, F32, owned);
    if p.stage >= 3 {
        if gpu {
            add("weight shard".into(), Parameters, Bf16, shard);
        }
        add("weight slot 0".into(), Parameters, Bf16, unit);
        add("weight slot 1".into(), Parameters, Bf16, unit);
    } else {
        add("weights".into(), Parameters, Bf16, total);
    }
    if slot_gradients(p) {
        add("gradient slot 0".into(), Gradients, F32, unit);
        add("gradient slot 1".into(), Gradients, F32, unit);
    } else {
        add("gradients".into(), Gradients, F32, total);
    }
    if p.stage >= 1 {
        add("summed gradients".into(), Communication, F32, shard);
    }
    for i in 0..=c.n_layers {
        add(format!("layer input {i}"), Activations, Bf16, n * d);
    }
    add("final norm".into(), Activations, Bf16, n * d);
    add("final 1/rms".into(), Activations, F32, n);
    add("logits".into(), Activations, Bf16, n * c.vocab_size as u64);
    add("losses".into(), Activations, F32, n);
    add("tokens".into(), Activations, Id, n);
    add("labels".into(), Activations, Id, n);
    if gpu {
        add("norm accumulator".into(), Workspace, F64, 1);
    }
    out
}

/// Stages 2-3 keep a unit's full fp32 gradients only while it is in flight, unless
/// accumulation needs them whole.
pub fn slot_gradients(p: &PlanInput) -> bool {
    p.stage >= 2 && p.grad_accum == 1
}

/// The table's buffers, allocated; taken out one by one by name.
pub struct Allocated<B> {
    buffers: Vec<(String, Option<B>)>,
}

impl<B> Allocated<B> {
    /// Every buffer of `table`, each from `alloc`.
    pub fn new(table: &[BufferSpec], mut alloc: impl FnMut(&BufferSpec) -> Result<B>) -> Result<Allocated<B>> {
        let buffers = table.iter().map(|b| Ok((b.name.clone(), Some(alloc(b)?)))).collect::<Result<_>>()?;
        Ok(Allocated { buffers })
    }

    /// The buffer called `name`, once.
    pub fn take(&mut self, name: &str) -> Result<B> {
        match self.buffers.iter_mut().find(|(n, _)| n == name).and_then(|(_, b)| b.take()) {
            Some(b) => Ok(b),
            None => bail!("the buffer table has no (further) buffer {name:?}"),
        }
    }

    /// Every buffer was taken: the step holds exactly the table.
    pub fn finish(self) -> Result<()> {
        match self.buffers.iter().find(|(_, b)| b.is_some()) {
            Some((name, _)) => bail!("the buffer table's {name:?} was allocated but never used"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The planner's closed formulas from before the table (an oracle that shares no code
    /// with it): parameters, gradients, optimizer, activations, communication, workspace.
    fn formulas(p: &PlanInput) -> [u64; 6] {
        let c = &p.model;
        let layout = Layout::sharded(c, p.ranks, p.bucket_layers);
        let (total, shard, unit) = (layout.total as u64, (layout.total / p.ranks) as u64, layout.largest_unit() as u64);
        let (n, d, kv, f) = ((p.micro_batch * p.seq) as u64, c.dim as u64, c.kv_dim() as u64, c.ffn_dim as u64);
        let head_rows = (p.micro_batch * c.n_heads * p.seq) as u64;
        let layers = c.n_layers as u64;
        let parameters = if p.stage >= 3 { 2 * shard + 2 * 2 * unit } else { 2 * total };
        let gradients = if p.stage >= 2 && p.grad_accum == 1 { 2 * 4 * unit } else { 4 * total };
        let optimizer = if p.stage >= 1 { 12 * shard } else { 12 * total };
        let communication = if p.stage >= 1 { 4 * shard } else { 0 };
        let saved_layer = 2 * (5 * n * d + 2 * n * kv + 3 * n * f) + 4 * 2 * n + 4 * head_rows;
        let kept = if p.recompute { 1 } else { layers };
        let head = 2 * n * d + 2 * n * c.vocab_size as u64 + 4 * n + 4 * n + 4 * n + 4 * n;
        let activations = kept * saved_layer + (layers + 1) * 2 * n * d + head;
        let workspace = 4 * head_rows + 2 * (5 * n * d + 2 * n * kv + 3 * n * f) + 8 + WORKSPACE_BYTES as u64;
        [parameters, gradients, optimizer, activations, communication, workspace]
    }

    #[test]
    fn the_table_holds_what_the_formulas_plan_with_unique_names() {
        use Category::*;
        for model in ["tiny", "7b", "70b"] {
            for (ranks, stage, recompute, accum, bucket) in [
                (1, 0, false, 1, 1),
                (1, 0, true, 1, 1),
                (8, 1, false, 2, 1),
                (8, 2, false, 1, 2),
                (8, 2, false, 2, 1),
                (64, 3, true, 1, 2),
                (16, 3, false, 1, 1),
            ] {
                let p = PlanInput {
                    model: LlamaConfig::load(model).unwrap(),
                    ranks,
                    stage,
                    micro_batch: 2,
                    grad_accum: accum,
                    seq: 256,
                    recompute,
                    bucket_layers: bucket,
                };
                let table = step_buffers(&p, Step::Gpu);
                let sum = |cat: Category| table.iter().filter(|b| b.category == cat).map(|b| b.bytes()).sum::<u64>();
                let got = [Parameters, Gradients, Optimizer, Activations, Communication, Workspace].map(sum);
                assert_eq!(got, formulas(&p), "{model} {ranks} ranks stage {stage} recompute {recompute} accum {accum} bucket {bucket}");
                let mut names: Vec<&str> = table.iter().map(|b| b.name.as_str()).collect();
                names.sort();
                names.dedup();
                assert_eq!(names.len(), table.len(), "names are unique");
            }
        }
    }
}
