//! Training run settings: defaults per model from configs/runs (embedded), overridden by flags.

use crate::backend::cpu::adamw::AdamW;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Tokens per sequence.
    pub seq: usize,
    /// Sequences per micro-batch on each rank.
    pub micro_batch: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Optimizer steps to run.
    pub steps: usize,
    /// First steps left out of the summaries (start-up effects).
    pub warmup_steps: usize,
    pub lr: f64,
    /// Steps of linear learning-rate warm-up before the cosine decay.
    pub lr_warmup_steps: usize,
    /// The cosine decays to lr × this at the last step.
    pub min_lr_ratio: f64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub adam_eps: f64,
    /// Gradients are scaled down to this global norm (0: no clipping).
    pub max_grad_norm: f64,
    /// Keep only each layer's input and recompute the layer's forward in its backward.
    #[serde(default)]
    pub recompute: bool,
    /// ZeRO stage: 0 replicates everything; 1 shards the optimizer state over the ranks,
    /// 2 also the gradients, 3 also the weights (zero/stage.rs).
    #[serde(default)]
    pub zero: u8,
    /// Layers per unit: the grain of each gather and reduction (model/layout.rs).
    #[serde(default = "one")]
    pub bucket_layers: usize,
}

/// Tokens in one micro-batch (micro-batch × seq) at most: 16 Mi, far beyond one GPU, and the
/// bound that keeps activation sizes (tokens × dim × layers × bytes) inside u64.
pub const MAX_MICRO_BATCH_TOKENS: usize = 1 << 24;

fn one() -> usize {
    1
}

const DEFAULTS: [(&str, &str); 4] = [
    ("llama2-7b", include_str!("../../configs/runs/llama2-7b.json")),
    ("llama2-13b", include_str!("../../configs/runs/llama2-13b.json")),
    ("llama2-70b", include_str!("../../configs/runs/llama2-70b.json")),
    ("tiny", include_str!("../../configs/runs/tiny.json")),
];

impl RunConfig {
    /// The defaults of the model called `model_name` (7B's for models without their own).
    pub fn defaults_for(model_name: &str) -> RunConfig {
        let json = DEFAULTS.iter().find(|(n, _)| *n == model_name).unwrap_or(&DEFAULTS[0]).1;
        serde_json::from_str(json).expect("configs/runs files are valid")
    }

    pub fn validate(&self) -> Result<(), String> {
        let sizes = [
            ("--seq", self.seq),
            ("--micro-batch", self.micro_batch),
            ("--grad-accum", self.grad_accum),
            ("--steps", self.steps),
            ("--bucket-layers", self.bucket_layers),
        ];
        for (name, v) in sizes {
            if v == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        let tokens = self.micro_batch.saturating_mul(self.seq);
        if tokens > MAX_MICRO_BATCH_TOKENS {
            return Err(format!(
                "--micro-batch {} × --seq {} = {tokens} tokens per micro-batch; at most {MAX_MICRO_BATCH_TOKENS} are taken",
                self.micro_batch, self.seq
            ));
        }
        for (name, v, limit) in [("--grad-accum", self.grad_accum, 1 << 16), ("--steps", self.steps, 10_000_000)] {
            if v > limit {
                return Err(format!("{name} {v}: at most {limit}"));
            }
        }
        if self.warmup_steps >= self.steps {
            return Err(format!("--warmup-steps {} leaves no measured step of --steps {}", self.warmup_steps, self.steps));
        }
        if self.zero > 3 {
            return Err(format!("--zero {}: the ZeRO stages are 0, 1, 2 and 3", self.zero));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(format!("--lr {} must be positive", self.lr));
        }
        Ok(())
    }

    /// What the memory plan (zero/buffers.rs) needs of this run of `model` over `ranks`.
    pub fn plan_input(&self, model: &crate::model::config::LlamaConfig, ranks: usize) -> crate::zero::buffers::PlanInput {
        crate::zero::buffers::PlanInput {
            model: model.clone(),
            ranks,
            stage: self.zero,
            micro_batch: self.micro_batch,
            grad_accum: self.grad_accum,
            seq: self.seq,
            recompute: self.recompute,
            bucket_layers: self.bucket_layers,
        }
    }

    /// The AdamW settings of optimizer step `t` (from 1).
    pub fn optimizer_at(&self, t: usize) -> AdamW {
        AdamW { lr: self.lr_at(t), beta1: self.beta1, beta2: self.beta2, eps: self.adam_eps, weight_decay: self.weight_decay }
    }

    /// Learning rate at optimizer step `t` (from 1): linear warm-up, then cosine down to
    /// lr × min_lr_ratio at the last step.
    pub fn lr_at(&self, t: usize) -> f64 {
        let w = self.lr_warmup_steps;
        if t <= w {
            return self.lr * t as f64 / w as f64;
        }
        let span = self.steps.saturating_sub(w).max(1) as f64;
        let progress = ((t - w) as f64 / span).min(1.0);
        let floor = self.lr * self.min_lr_ratio;
        floor + 0.5 * (self.lr - floor) * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_schedule() {
        let r = RunConfig::defaults_for("llama2-7b");
        assert_eq!((r.seq, r.micro_batch), (2048, 1));
        assert!((r.lr_at(5) - r.lr * 0.5).abs() < 1e-15);
        assert!((r.lr_at(10) - r.lr).abs() < 1e-15);
        assert!((r.lr_at(r.steps) - r.lr * r.min_lr_ratio).abs() < 1e-12);
        assert!(r.lr_at(15) < r.lr && r.lr_at(15) > r.lr * r.min_lr_ratio);
        assert_eq!(RunConfig::defaults_for("custom").seq, 2048);
        assert!(RunConfig { warmup_steps: 20, ..r.clone() }.validate().is_err());
        assert!(RunConfig { micro_batch: 0, ..r.clone() }.validate().is_err());
        assert!(RunConfig { lr: -1.0, ..r.clone() }.validate().is_err());
        assert!(RunConfig { micro_batch: 100_000, ..r.clone() }.validate().unwrap_err().contains("tokens per micro-batch"));
        assert!(RunConfig { seq: usize::MAX, ..r.clone() }.validate().is_err());
        assert!(RunConfig { grad_accum: 1 << 20, ..r }.validate().is_err());
    }
}
