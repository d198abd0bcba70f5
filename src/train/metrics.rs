//! Per-step figures of a training run and their summary over the measured (post-warm-up) steps.

/// Dense bf16 peak of one H100/H200 SXM (datasheet): the MFU denominator.
pub const PEAK_FLOPS: f64 = 989e12;

#[derive(Clone, Debug, Default)]
pub struct StepRecord {
    pub step: usize,
    pub loss: f64,
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    pub step_s: f64,
    pub forward_s: f64,
    pub backward_s: f64,
    /// Communication not hidden behind compute: the time the compute stream waited for it
    /// (GPU; on the CPU, the time in collectives). Forward and backward times include it.
    pub comm_s: f64,
    /// GPU: the time the communication stream spent in collectives (overlapped or not).
    pub comm_busy_s: f64,
    /// Bytes this rank sent in collectives (backend/cuda/exchange.rs: bus bytes).
    pub comm_bytes: u64,
    pub optimizer_s: f64,
    /// Tokens this rank processed in the step (micro-batch × seq × accumulation).
    pub tokens: usize,
    /// Of those, the ones whose label counts in the loss (SFT leaves the prompts out).
    pub loss_tokens: usize,
    pub samples: usize,
    /// GPU: the most bytes our buffers held at once (cuBLASLt and the CUDA context aside);
    /// CPU: the process's peak resident memory.
    pub peak_memory_bytes: u64,
}

impl StepRecord {
    pub fn tokens_per_s(&self) -> f64 {
        self.tokens as f64 / self.step_s
    }

    pub fn samples_per_s(&self) -> f64 {
        self.samples as f64 / self.step_s
    }

    /// Communication busy time over compute time (the step minus the exposed communication).
    pub fn comm_compute_ratio(&self) -> f64 {
        self.comm_busy_s / (self.step_s - self.comm_s)
    }

    /// Model FLOP/s of this rank: tokens/s × (6·N + 12·L·d·T).
    pub fn model_flops(&self, flops_per_token: f64) -> f64 {
        self.tokens_per_s() * flops_per_token
    }
}

/// Means over the steps after `warmup_steps`.
#[derive(Clone, Debug)]
pub struct Summary {
    pub measured_steps: usize,
    pub step_s: f64,
    pub tokens_per_s: f64,
    pub model_tflops: f64,
    /// On GPUs only: model FLOP/s over PEAK_FLOPS.
    pub mfu: Option<f64>,
    /// Per step: exposed and busy communication seconds, bytes sent by this rank.
    pub comm_s: f64,
    pub comm_busy_s: f64,
    pub comm_bytes: f64,
}

pub fn summarize(records: &[StepRecord], warmup_steps: usize, flops_per_token: f64, on_gpu: bool) -> Summary {
    let measured = &records[warmup_steps.min(records.len())..];
    let n = measured.len().max(1) as f64;
    let step_s = measured.iter().map(|r| r.step_s).sum::<f64>() / n;
    // Throughput over the measured span: total tokens / total time, not a mean of ratios.
    let tokens: usize = measured.iter().map(|r| r.tokens).sum();
    let tokens_per_s = tokens as f64 / (step_s * n);
    let flops = tokens_per_s * flops_per_token;
    let mean = |f: &dyn Fn(&StepRecord) -> f64| measured.iter().map(f).sum::<f64>() / n;
    Summary {
        comm_s: mean(&|r| r.comm_s),
        comm_busy_s: mean(&|r| r.comm_busy_s),
        comm_bytes: mean(&|r| r.comm_bytes as f64),
        measured_steps: measured.len(),
        step_s,
        tokens_per_s,
        model_tflops: flops / 1e12,
        mfu: on_gpu.then_some(flops / PEAK_FLOPS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_leaves_out_warmup_and_weights_by_time() {
        let rec = |step_s| StepRecord { step_s, tokens: 1000, samples: 1, ..Default::default() };
        let records = [rec(10.0), rec(1.0), rec(3.0)];
        let s = summarize(&records, 1, 1e9, true);
        assert_eq!(s.measured_steps, 2);
        assert!((s.step_s - 2.0).abs() < 1e-12);
        assert!((s.tokens_per_s - 500.0).abs() < 1e-9);
        assert!((s.model_tflops - 0.5).abs() < 1e-12);
        assert!((s.mfu.unwrap() - 500.0 * 1e9 / PEAK_FLOPS).abs() < 1e-15);
        assert!(summarize(&records, 1, 1e9, false).mfu.is_none());
    }
}
