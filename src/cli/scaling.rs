//! The scaling phase's flags and their checks.

use crate::train::scaling::Mode;
use clap::ValueEnum;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ScalingChoice {
    Weak,
    Strong,
    Both,
    Off,
}

#[derive(clap::Args, Clone, Debug, PartialEq)]
pub struct ScalingArgs {
    /// After sft, in the same job: train on sub-worlds of 1 GPU (every GPU at once, as
    /// replicas), each power of two of GPUs up to one host, then of hosts up to the whole job;
    /// weak (the same per-GPU batch at every size), strong (the same global batch), both, or
    /// off. Default: both with --suite full, off otherwise.
    #[arg(long, value_enum, global = true)]
    pub scaling: Option<ScalingChoice>,

    /// Optimizer steps at each scaling size.
    #[arg(long = "scaling-steps", default_value_t = 10, global = true)]
    pub scaling_steps: usize,

    /// First steps at each scaling size left out of its figures.
    #[arg(long = "scaling-warmup-steps", default_value_t = 3, global = true)]
    pub scaling_warmup_steps: usize,

    /// Before the training sizes: an all_reduce sweep at a few sizes on each sub-world of
    /// more than one GPU, so the step from NVLink to the network shows in the scaling table.
    #[arg(long = "scaling-sweep", global = true)]
    pub scaling_sweep: bool,
}

/// The most steps one scaling size takes.
pub const MAX_SCALING_STEPS: usize = 100_000;

/// A scaling run, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct ScalingPlan {
    pub modes: Vec<Mode>,
    pub steps: usize,
    pub warmup_steps: usize,
    /// --scaling-sweep.
    pub sweep: bool,
}

impl ScalingArgs {
    /// Whether the phase runs after sft: --scaling, else `by_default` (--suite full).
    pub fn wanted(&self, by_default: bool) -> bool {
        self.scaling.map_or(by_default, |c| c != ScalingChoice::Off)
    }

    /// The phase's plan (only where it runs: `wanted`).
    pub fn plan(&self) -> Result<ScalingPlan, String> {
        let modes = match self.scaling.unwrap_or(ScalingChoice::Both) {
            ScalingChoice::Weak => vec![Mode::Weak],
            ScalingChoice::Strong => vec![Mode::Strong],
            ScalingChoice::Both => vec![Mode::Weak, Mode::Strong],
            ScalingChoice::Off => unreachable!("--scaling off runs no scaling phase (Cli::phases)"),
        };
        if !(1..=MAX_SCALING_STEPS).contains(&self.scaling_steps) {
            return Err(format!("--scaling-steps {}: 1 to {MAX_SCALING_STEPS}", self.scaling_steps));
        }
        if self.scaling_warmup_steps >= self.scaling_steps {
            return Err(format!("--scaling-warmup-steps {} leaves no measured step of --scaling-steps {}", self.scaling_warmup_steps, self.scaling_steps));
        }
        Ok(ScalingPlan { modes, steps: self.scaling_steps, warmup_steps: self.scaling_warmup_steps, sweep: self.scaling_sweep })
    }
}

/// The sizes --scaling-sweep measures: on GPUs from latency-bound to bandwidth-bound; on the
/// CPU path (MPI on host memory) smaller ones.
pub const SWEEP_SIZES_GPU: [usize; 3] = [1 << 20, 32 << 20, 1 << 30];
pub const SWEEP_SIZES_HOST: [usize; 3] = [64 << 10, 1 << 20, 16 << 20];

/// The sweep of --scaling-sweep: all_reduce, float, sum at `sizes` bytes, out of place and in
/// place, with nccl-tests' defaults (-n 20 -w 5 -c 1, the time averaged over ranks).
pub fn sweep_plan(sizes: &[usize], seed: u64, timeout: std::time::Duration) -> crate::cli::SweepPlan {
    use crate::sweep::runner::{Aggregate, SweepSettings};
    crate::cli::SweepPlan {
        collectives: vec![crate::dist::collective::Collective::AllReduce],
        dtypes: vec![crate::sweep::dtype::DType::Float32],
        ops: vec![crate::sweep::redop::RedOp::Sum],
        settings: SweepSettings {
            sizes: sizes.to_vec(),
            iters: 20,
            warmup_iters: 5,
            check_iters: 1,
            graph_launches: 0,
            aggregate: Aggregate::Avg,
            root: 0,
            seed,
            timeout,
        },
        fault: crate::dist::fault::Fault::None,
    }
}
