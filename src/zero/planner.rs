//! Per-GPU memory of an SFT run, by category, for a ZeRO stage and rank count: the sum of the
//! buffer table (zero/buffers.rs) that the GPU step (model/gpu_model.rs) allocates, so a run can
//! be refused before it allocates anything.
//!
//! Stage 0 keeps everything on every rank; 1 shards the optimizer state (fp32 master, m, v);
//! 2 also the fp32 gradients (two unit slots, or whole under accumulation); 3 also the bf16
//! weights (a shard, plus two unit slots for the gathered ones). See zero/stage.rs.

pub use super::buffers::PlanInput;
use super::buffers::{step_buffers, Category, Step};
/// Bytes per GPU.
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryPlan {
    /// bf16 working weights (a shard plus two gathered units at stage 3).
    pub parameters: u64,
    /// fp32 gradients of the micro-batches (two unit slots at stages 2-3 without accumulation).
    pub gradients: u64,
    /// fp32 master weights and Adam moments (a shard from stage 1).
    pub optimizer: u64,
    /// What the backward reads: saved layer activations (or one set with recompute), every
    /// layer's input, the head's logits.
    pub activations: u64,
    /// This rank's chunks of the summed gradients, received by reduce-scatter (stages 1-3).
    pub communication: u64,
    /// Scratch of one layer's backward.
    pub workspace: u64,
}

/// cuBLASLt and the CUDA context take memory outside our buffers: a margin the fit check keeps.
pub const LIBRARY_RESERVE: u64 = 1 << 30;

impl MemoryPlan {
    pub fn total(&self) -> u64 {
        self.parameters + self.gradients + self.optimizer + self.activations + self.communication + self.workspace
    }

    pub fn table(&self) -> String {
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        let rows = [
            ("parameters (bf16)", self.parameters),
            ("gradients (fp32)", self.gradients),
            ("optimizer state (fp32 master, m, v)", self.optimizer),
            ("activations", self.activations),
            ("communication buffers", self.communication),
            ("workspace", self.workspace),
            ("total", self.total()),
        ];
        rows.iter().map(|(name, b)| format!("  {name:<38} {:>10.2} GiB\n", gib(*b))).collect()
    }
}

/// The buffer table's bytes by category (zero/buffers.rs: what the GPU step allocates).
pub fn plan(p: &PlanInput) -> MemoryPlan {
    let table = step_buffers(p, Step::Gpu);
    let sum = |category: Category| table.iter().filter(|b| b.category == category).map(|b| b.bytes()).sum();
    MemoryPlan {
        parameters: sum(Category::Parameters),
        gradients: sum(Category::Gradients),
        optimizer: sum(Category::Optimizer),
        activations: sum(Category::Activations),
        communication: sum(Category::Communication),
        workspace: sum(Category::Workspace),
    }
}

/// What to change when `plan` does not fit in `budget` bytes per GPU, tried in order of cost:
/// recompute, a smaller micro-batch, a higher stage on these ranks (then with recompute), and
/// only when none of those fits, more ranks at stage 3.
pub fn suggestions(p: &PlanInput, budget: u64) -> Vec<String> {
    let fits = |q: &PlanInput| plan(q).total() + LIBRARY_RESERVE <= budget;
    let mut out = Vec::new();
    if !p.recompute && fits(&PlanInput { recompute: true, ..p.clone() }) {
        out.push("--recompute".to_string());
    }
    // Memory grows with the micro-batch: the largest that fits, by bisection (a linear search
    // over a user's absurd micro-batch would take minutes).
    let (mut fitting, mut failing) = (0, p.micro_batch);
    while failing - fitting > 1 {
        let mid = fitting + (failing - fitting) / 2;
        if fits(&PlanInput { micro_batch: mid, ..p.clone() }) {
            fitting = mid;
        } else {
            failing = mid;
        }
    }
    if fitting >= 1 {
        out.push(format!("--micro-batch {fitting}"));
    }
    let higher = |recompute: bool| (p.stage + 1..=3).find(|&s| fits(&PlanInput { stage: s, recompute, ..p.clone() }));
    match (higher(p.recompute), higher(true)) {
        (Some(stage), _) => out.push(format!("ZeRO stage {stage} on {} ranks", p.ranks)),
        (None, Some(stage)) if !p.recompute => out.push(format!("ZeRO stage {stage} and --recompute on {} ranks", p.ranks)),
        _ => {}
    }
    if !out.is_empty() {
        return out;
    }
    let more =
        |recompute: bool| (1..=16).map(|e| 1usize << e).filter(|&n| n > p.ranks).find(|&n| fits(&PlanInput { ranks: n, stage: 3, recompute, ..p.clone() }));
    let plain = more(p.recompute);
    if let Some(ranks) = plain {
        out.push(format!("ZeRO stage 3 on {ranks} ranks"));
    }
    if !p.recompute {
        if let Some(ranks) = more(true).filter(|&n| plain.is_none_or(|m| n < m)) {
            out.push(format!("ZeRO stage 3 and --recompute on {ranks} ranks"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::LlamaConfig;

    fn input(model: &str, ranks: usize, stage: u8) -> PlanInput {
        PlanInput { model: LlamaConfig::load(model).unwrap(), ranks, stage, micro_batch: 1, grad_accum: 1, seq: 2048, recompute: false, bucket_layers: 1 }
    }

    #[test]
    fn stages_shard_what_they_say() {
        let p = 6_738_415_616u64; // Llama-2-7B
        let s0 = plan(&input("7b", 8, 0));
        assert_eq!((s0.parameters, s0.gradients, s0.optimizer), (2 * p, 4 * p, 12 * p));
        let s1 = plan(&input("7b", 8, 1));
        assert_eq!((s1.gradients, s1.optimizer), (4 * p, 12 * p.div_ceil(8)));
        let s2 = plan(&input("7b", 8, 2));
        let layer = 202_383_360u64; // the largest unit
        assert_eq!((s2.gradients, s2.communication), (2 * 4 * layer, 4 * p / 8));
        let accumulating = plan(&PlanInput { grad_accum: 2, ..input("7b", 8, 2) });
        assert_eq!(accumulating.gradients, 4 * p);
        let s3 = plan(&input("7b", 8, 3));
        assert_eq!(s3.parameters, 2 * p / 8 + 2 * 2 * layer);
        assert!(s3.total() < s2.total());
        assert_eq!(s0.activations, s3.activations);
    }

    #[test]
    fn seventy_b_needs_sharding_and_the_suggestions_say_so() {
        let h200 = 141_000_000_000;
        let full = input("70b", 8, 0);
        assert!(plan(&full).total() > 16 * 68_000_000_000, "70B at 16 bytes/parameter and more");
        let advice = suggestions(&full, h200);
        assert!(advice.iter().any(|s| s.starts_with("ZeRO stage 3")), "{advice:?}");
        assert!(plan(&input("70b", 64, 3)).total() < h200);
    }

    #[test]
    fn recompute_keeps_one_layer() {
        let with = plan(&PlanInput { recompute: true, ..input("7b", 1, 0) });
        let without = plan(&input("7b", 1, 0));
        // 31 of the 32 layers' saved sets go; every layer's input and the head's stay.
        let one_layer = (without.activations - with.activations) / 31;
        assert_eq!(without.activations - with.activations, 31 * one_layer);
        let inputs_and_head = with.activations - one_layer;
        assert!(inputs_and_head < one_layer * 4, "{inputs_and_head} {one_layer}");
    }
}
