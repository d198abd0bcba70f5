//! Command line. The sweep flags keep nccl-tests' letters and meanings (-b -e -f -i -n -w -c
//! -d -o -r -G -a), so an nccl-tests command line carries over unchanged.

pub mod op;
pub mod scaling;
pub mod scope;
pub mod verify;

use crate::dist::collective::Collective;
use crate::dist::fault::Fault;
use crate::model::config::LlamaConfig;
use crate::sweep::dtype::DType;
use crate::sweep::redop::RedOp;
use crate::sweep::runner::{Aggregate, SweepSettings};
use crate::sweep::schedule::{parse_size, sizes, Step};
use crate::train::data::{Source, PHRASE};
use crate::train::run_config::RunConfig;
use clap::{Parser, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "h200-mpibench",
    version,
    about = "What a GPU cluster really delivers for LLM fine-tuning: NCCL collective sweeps \
             with exact verification, one MPI rank per GPU, results in one HDF5 file.",
    // A flag given twice takes its last value, so wrapper scripts put their defaults first and
    // the user's own flags after them win.
    args_override_self = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// What to run: verify, nccl (collective sweeps), sft (Llama fine-tuning), a comma list of
    /// them (run in that order, in one process and one results file), or full
    /// (verify,nccl,sft and then scaling: see --scaling). Default: sft when --model is given
    /// (the user's `mpirun -np 64 h200-mpibench --model 70b`), otherwise nccl.
    #[arg(long, value_parser = parse_suite)]
    pub suite: Option<Phases>,

    /// With a suite that starts with verify: run the benchmarks after it even when a component
    /// failed verification (the exit code still says so).
    #[arg(long = "keep-going")]
    pub keep_going: bool,

    /// Results file (HDF5). Default: results/<UTC time, ms>_<suite>_<job id or pid>.h5.
    /// An existing file is never replaced unless --overwrite is given.
    #[arg(long, global = true)]
    pub out: Option<PathBuf>,

    /// Let --out replace an existing file (never one of the run's own inputs).
    #[arg(long, global = true)]
    pub overwrite: bool,

    /// nccl: NCCL on GPUs; mpi: MPI on host memory; auto: NCCL where every rank has a GPU and
    /// the NCCL library, MPI otherwise.
    #[arg(long, value_enum, default_value_t = Backend::Auto, global = true)]
    pub backend: Backend,

    /// Seconds any single phase (NCCL start-up, one sweep row) may take before every rank is
    /// stopped with the cause.
    #[arg(long, default_value_t = 300, global = true)]
    pub timeout: u64,

    /// Seed of the verification data, of the SFT run's initialisation and synthetic data, and of
    /// selftest's inputs (selftest draws a fresh one, which it prints, unless this is given).
    #[arg(long, default_value_t = 1, global = true)]
    pub seed: u64,

    /// Milliseconds between telemetry samples of every rank's GPU (NVML; without a GPU, the
    /// process's CPU time and memory), from before the first benchmark to the end, written to
    /// /telemetry; 0 turns it off.
    #[arg(long = "telemetry-ms", default_value_t = 100, global = true)]
    pub telemetry_ms: u64,

    /// Name every rank more than this many percent slower than the median over ranks: in SFT
    /// by its median step compute (step time less the communication it waited for), in the
    /// sweeps by its launch times against each row's median.
    #[arg(long = "straggler-pct", default_value_t = 5.0, global = true)]
    pub straggler_pct: f64,

    #[command(flatten)]
    pub sweep: SweepArgs,

    #[command(flatten)]
    pub sft: SftArgs,

    #[command(flatten)]
    pub verify: verify::VerifyArgs,

    #[command(flatten)]
    pub scaling: scaling::ScalingArgs,

    /// The clap ids of the flags given on the command line (scope.rs checks they apply).
    #[arg(skip)]
    pub given: Vec<String>,
}

impl Cli {
    /// Parses this process's arguments and records which flags were given.
    pub fn from_env() -> Result<Cli, clap::Error> {
        Cli::from_args(std::env::args_os())
    }

    /// Parses `args` (the program's name first) and records which flags were given.
    pub fn from_args<I: IntoIterator<Item = T>, T: Into<std::ffi::OsString> + Clone>(args: I) -> Result<Cli, clap::Error> {
        use clap::{CommandFactory, FromArgMatches};
        let matches = Cli::command().try_get_matches_from(args)?;
        let mut cli = Cli::from_arg_matches(&matches)?;
        cli.given = scope::given(&matches);
        Ok(cli)
    }
}

impl Cli {
    /// The memory plan of `plan`: a table per requested stage, with the verdict for one GPU.
    pub fn memory_report(&self, ranks: usize, gpu_memory_gib: f64) -> Result<String, String> {
        let zero = self.sft.zero;
        use crate::zero::planner::{plan, suggestions, LIBRARY_RESERVE};
        if !(1..=MAX_PLAN_RANKS).contains(&ranks) {
            return Err(format!("plan --ranks {ranks}: must be 1 to {MAX_PLAN_RANKS}"));
        }
        if !(gpu_memory_gib.is_finite() && gpu_memory_gib > 0.0 && gpu_memory_gib <= 1e6) {
            return Err(format!("plan --gpu-memory {gpu_memory_gib}: must be a GiB count above 0 and at most 1e6"));
        }
        if zero.is_some_and(|z| z > 3) {
            return Err("plan --zero must be 0, 1, 2 or 3".into());
        }
        let sft = self.sft.plan("7b", self.seed)?;
        let (m, r) = (&sft.model, &sft.run);
        let budget = (gpu_memory_gib * (1u64 << 30) as f64) as u64;
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        let mut out = format!(
            "# memory plan: {} ({} layers), micro-batch {} × seq {}{}, {ranks} ranks, per GPU of {gpu_memory_gib:.0} GiB (1 GiB kept for cuBLASLt and the context)\n",
            m.name,
            m.n_layers,
            r.micro_batch,
            r.seq,
            if r.recompute { ", recompute" } else { "" }
        );
        for stage in zero.map_or(0..=3, |z| z..=z) {
            let input = RunConfig { zero: stage, ..r.clone() }.plan_input(m, ranks);
            let p = plan(&input);
            let verdict = if p.total() + LIBRARY_RESERVE <= budget {
                "fits".to_string()
            } else {
                let advice = suggestions(&input, budget);
                format!("does not fit{}", if advice.is_empty() { String::new() } else { format!("; would with {}", advice.join(", or ")) })
            };
            out += &format!("# ZeRO stage {stage}: {:.2} GiB, {verdict}\n{}", gib(p.total()), p.table());
        }
        Ok(out)
    }
}

impl Cli {
    /// The step-time model's prediction for each requested stage on `ranks` ranks, and the
    /// fastest layout that fits a GPU of `gpu_memory_gib` (after memory_report's checks).
    pub fn prediction_report(&self, ranks: usize, gpu_memory_gib: f64, predict: &PredictArgs) -> Result<String, String> {
        use crate::zero::step_model::{fastest, predict as step, Placement};
        let (rates, took) = predict.rates()?;
        let sft = self.sft.plan("7b", self.seed)?;
        let (m, r) = (&sft.model, &sft.run);
        let place = Placement { ranks, per_host: predict.gpus_per_host };
        let hosts = ranks.div_ceil(place.per_host);
        let mut out = format!("# predicted step ({ranks} GPUs on {hosts} host(s) of {}) from the reference rates ({})", place.per_host, rates.origin);
        out += if took.is_empty() { "\n" } else { ", each replaced where a file measured it:\n" };
        for line in &took {
            out += &format!("# calibrated from {line}\n");
        }
        out += "# ZeRO  micro×accum  recompute  step s   compute s  optimizer s  comm busy s  exposed s  GB/GPU  busbw GB/s  tokens/s/GPU  MFU%\n";
        let row = |run: &RunConfig| {
            let p = step(m, run, place, &rates);
            format!(
                "{:>6} {:>5}×{:<6} {:>9} {:>8.3} {:>10.3} {:>12.4} {:>12.3} {:>10.4} {:>7.1} {:>11.0} {:>13.0} {:>5.1}\n",
                run.zero,
                run.micro_batch,
                run.grad_accum,
                if run.recompute { "yes" } else { "no" },
                p.step_s,
                p.compute_s,
                p.optimizer_s,
                p.comm_busy_s,
                p.comm_exposed_s,
                p.bus_bytes / 1e9,
                p.busbw_gbs,
                p.tokens_per_s_per_gpu,
                100.0 * p.mfu
            )
        };
        for stage in self.sft.zero.map_or(0..=3, |z| z..=z) {
            out += &row(&RunConfig { zero: stage, ..r.clone() });
        }
        let budget = (gpu_memory_gib * (1u64 << 30) as f64) as u64;
        out += &match fastest(m, r, place, &rates, budget) {
            Some((best, p)) => format!(
                "# fastest layout that fits {gpu_memory_gib:.0} GiB: ZeRO {}, micro-batch {} × accumulation {}{}: {:.0} tokens/s/GPU, MFU {:.1}%\n",
                best.zero,
                best.micro_batch,
                best.grad_accum,
                if best.recompute { ", recompute" } else { "" },
                p.tokens_per_s_per_gpu,
                100.0 * p.mfu
            ),
            None => format!("# no ZeRO stage, micro-batch or recompute setting fits {gpu_memory_gib:.0} GiB on {ranks} GPUs\n"),
        };
        Ok(out)
    }
}

/// The most ranks `plan` and a run take (planner.rs's padding stays small beside u64).
pub const MAX_PLAN_RANKS: usize = 1 << 20;

#[derive(clap::Args, Debug)]
pub struct SftArgs {
    /// Model: 7b, 13b, 70b, tiny, or a JSON config path (default: 7b on GPUs, tiny on the CPU).
    #[arg(long, global = true)]
    pub model: Option<String>,

    /// Override the model's layer count (e.g. a 70B-shaped layer on one GPU).
    #[arg(long, global = true)]
    pub layers: Option<usize>,

    /// Optimizer steps (default from configs/runs).
    #[arg(long, global = true)]
    pub steps: Option<usize>,

    /// First steps left out of the summaries.
    #[arg(long = "warmup-steps", global = true)]
    pub warmup_steps: Option<usize>,

    /// Tokens per sequence.
    #[arg(long, global = true)]
    pub seq: Option<usize>,

    /// Sequences per micro-batch.
    #[arg(long = "micro-batch", global = true)]
    pub micro_batch: Option<usize>,

    /// Micro-batches per optimizer step.
    #[arg(long = "grad-accum", global = true)]
    pub grad_accum: Option<usize>,

    /// Peak learning rate.
    #[arg(long, global = true)]
    pub lr: Option<f64>,

    /// Activation recompute: keep each layer's input only and redo the layer's forward in
    /// its backward (less memory, about a third more compute).
    #[arg(long, global = true)]
    pub recompute: bool,

    /// Time every GPU op of the last step (CUDA events) and print where the time goes.
    #[arg(long, global = true)]
    pub profile: bool,

    /// Train on this file of token ids (little-endian u32) instead of synthetic data.
    #[arg(long, global = true)]
    pub data: Option<String>,

    /// ZeRO stage: 0 replicates model and optimizer state on every rank, 1 shards the optimizer
    /// state (fp32 master weights and Adam moments), 2 also the gradients, 3 also the weights.
    /// With `plan`: only this stage (default: all four).
    #[arg(long, global = true)]
    pub zero: Option<u8>,

    /// Layers per communication bucket: each all-gather and reduction covers this many layers
    /// (the embedding and the head are buckets of their own). Default 1.
    #[arg(long = "bucket-layers", global = true)]
    pub bucket_layers: Option<usize>,
}

/// The model, run settings and data of an sft run, validated.
pub struct SftPlan {
    pub model: LlamaConfig,
    pub run: RunConfig,
    pub data: Source,
}

impl SftArgs {
    /// `default_model` applies when --model is not given.
    /// `seed` seeds the synthetic data.
    pub fn plan(&self, default_model: &str, seed: u64) -> Result<SftPlan, String> {
        let mut model = LlamaConfig::load(self.model.as_deref().unwrap_or(default_model))?;
        if let Some(layers) = self.layers {
            model = model.with_layers(layers)?;
        }
        let mut run = RunConfig::defaults_for(&model.name);
        let set = |slot: &mut usize, v: Option<usize>| {
            if let Some(v) = v {
                *slot = v;
            }
        };
        set(&mut run.steps, self.steps);
        set(&mut run.warmup_steps, self.warmup_steps);
        set(&mut run.seq, self.seq);
        set(&mut run.micro_batch, self.micro_batch);
        set(&mut run.grad_accum, self.grad_accum);
        set(&mut run.bucket_layers, self.bucket_layers);
        if let Some(lr) = self.lr {
            run.lr = lr;
        }
        run.recompute |= self.recompute;
        run.zero = self.zero.unwrap_or(0);
        run.validate()?;
        if run.bucket_layers > model.n_layers {
            return Err(format!("--bucket-layers {}: the model has {} layers", run.bucket_layers, model.n_layers));
        }
        let data = match &self.data {
            Some(path) => Source::from_file(path, model.vocab_size, run.seq)?,
            None if run.seq <= PHRASE => {
                return Err(format!(
                    "--seq {}: a synthetic sample is a {PHRASE}-token prompt and then its labels, so it needs at least {} tokens",
                    run.seq,
                    PHRASE + 1
                ))
            }
            None => Source::Synthetic { seed },
        };
        Ok(SftPlan { model, run, data })
    }
}

/// The step-time model's flags (`plan`).
#[derive(Clone, Debug, PartialEq, clap::Args)]
pub struct PredictArgs {
    /// GPUs (ranks) per host: a run of more spans hosts and its collectives go through the NICs.
    #[arg(long = "gpus-per-host", default_value_t = 8)]
    pub gpus_per_host: usize,
    /// Model-FLOP utilisation of forward and backward, 0 to 1 (a --calibrate file with an SFT
    /// run replaces it with the measured one).
    #[arg(long, default_value_t = 0.5)]
    pub mfu: f64,
    /// NICs per host, each carrying --nic-gbs.
    #[arg(long = "nics-per-host", default_value_t = 8)]
    pub nics_per_host: usize,
    /// GB/s one NIC carries (a 400G NIC: 47).
    #[arg(long = "nic-gbs", default_value_t = crate::zero::step_model::NIC_GBS)]
    pub nic_gbs: f64,
    /// A results file whose measured rates the model takes: an SFT run on GPUs (compute and
    /// AdamW), an all_reduce sweep (bus bandwidth within a host or between hosts). Repeatable.
    #[arg(long)]
    pub calibrate: Vec<PathBuf>,
}

impl PredictArgs {
    /// The rates: the reference ones at --mfu and the NICs given, then each file's.
    pub fn rates(&self) -> Result<(crate::zero::step_model::Rates, Vec<String>), String> {
        if !(self.mfu > 0.0 && self.mfu <= 1.0) {
            return Err(format!("plan --mfu {}: more than 0 and at most 1", self.mfu));
        }
        if !(1..=1024).contains(&self.gpus_per_host) || !(1..=1024).contains(&self.nics_per_host) {
            return Err(format!("plan --gpus-per-host {} / --nics-per-host {}: 1 to 1024", self.gpus_per_host, self.nics_per_host));
        }
        if !(self.nic_gbs > 0.0 && self.nic_gbs <= 1e5) {
            return Err(format!("plan --nic-gbs {}: more than 0 and at most 100000", self.nic_gbs));
        }
        let mut rates = crate::zero::step_model::Rates::reference(self.mfu, self.nics_per_host, self.nic_gbs);
        let took = self
            .calibrate
            .iter()
            .map(|path| crate::results::calibration::calibrate(&mut rates, path).map_err(|e| format!("{e:#}")))
            .collect::<Result<_, _>>()?;
        Ok((rates, took))
    }
}

#[derive(Clone, Debug, PartialEq, clap::Subcommand)]
pub enum Command {
    /// Every GPU op of the model against the CPU reference on fresh random inputs (one rank
    /// per GPU); exit code 3 if any check fails.
    Selftest,
    /// Per-GPU memory of an SFT run by category, for each ZeRO stage (no GPU needed); model and
    /// batch flags as for --suite sft.
    Plan {
        /// Ranks (GPUs) the run would use.
        #[arg(long, default_value_t = 8)]
        ranks: usize,
        /// Memory of one GPU, GiB (an H200 has 140).
        #[arg(long = "gpu-memory", default_value_t = 140.0)]
        gpu_memory_gib: f64,
        #[command(flatten)]
        predict: PredictArgs,
    },
    /// Times one GPU op alone at the shape given (every rank on its GPU), printing ms and
    /// TFLOP/s or GB/s: attention (causal; forward 4·B·H·S²·D/2 FLOP, backward 2.5×),
    /// AdamW (30 B an element) and the device copy (read + write). Writes no results file.
    Op(op::OpArgs),
    /// Inventory, health and probes of every GPU, host and link (one rank per GPU), each figure
    /// judged against the median of its peers and the GPU model's reference table; exit code
    /// 5 if any component fails (the same as --suite verify).
    Verify,
}

impl Cli {
    /// The flags every run shares, and that each given flag belongs to this kind of run.
    pub fn check_common(&self, kind: &scope::RunKind) -> Result<(), String> {
        scope::check(&self.given, kind)?;
        if !(1..=MAX_TIMEOUT_S).contains(&self.timeout) {
            return Err(format!("--timeout {}: must be 1 to {MAX_TIMEOUT_S} seconds", self.timeout));
        }
        if self.telemetry_ms != 0 && !(10..=60_000).contains(&self.telemetry_ms) {
            return Err(format!("--telemetry-ms {}: 0 (off) or 10 to 60000", self.telemetry_ms));
        }
        if !(self.straggler_pct > 0.0 && self.straggler_pct <= 1000.0) {
            return Err(format!("--straggler-pct {}: more than 0 and at most 1000", self.straggler_pct));
        }
        Ok(())
    }

    /// The phases asked for, or the one `--model` implies; scaling follows sft where
    /// --scaling (or --suite full) asks for it.
    pub fn phases(&self) -> Vec<Phase> {
        let (mut phases, full) = match &self.suite {
            Some(Phases(phases)) => (phases.clone(), phases.as_slice() == Phase::ALL),
            None if self.sft.model.is_some() => (vec![Phase::Sft], false),
            None => (vec![Phase::Nccl], false),
        };
        phases.retain(|p| *p != Phase::Scaling);
        if phases.contains(&Phase::Sft) && self.scaling.wanted(full) {
            phases.push(Phase::Scaling);
        }
        phases
    }
}

/// One benchmark of a suite; a list runs in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Inventory, health and probes of every GPU, host and link.
    Verify,
    /// Collective bandwidth sweeps (nccl-tests semantics).
    Nccl,
    /// Llama-2 supervised fine-tuning steps: on GPUs (data parallel over ranks), or the CPU.
    Sft,
    /// SFT on sub-worlds of growing size in the same job: weak and strong scaling.
    Scaling,
}

impl Phase {
    /// --suite full.
    pub const ALL: [Phase; 4] = [Phase::Verify, Phase::Nccl, Phase::Sft, Phase::Scaling];
    /// What a --suite list may name (scaling comes with sft: --scaling).
    const LISTED: [Phase; 3] = [Phase::Verify, Phase::Nccl, Phase::Sft];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Verify => "verify",
            Phase::Nccl => "nccl",
            Phase::Sft => "sft",
            Phase::Scaling => "scaling",
        }
    }
}

/// The phases of `--suite`, in their running order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Phases(pub Vec<Phase>);

fn parse_suite(text: &str) -> Result<Phases, String> {
    if text.trim() == "full" {
        return Ok(Phases(Phase::ALL.to_vec()));
    }
    let mut phases = Vec::new();
    for item in text.split(',').map(str::trim) {
        let phase = Phase::LISTED.into_iter().find(|p| p.name() == item).ok_or_else(|| match item {
            "scaling" => "scaling runs after sft: --suite sft --scaling weak|strong|both (--suite full includes it)".to_string(),
            _ => format!("'{item}' is not a suite (verify, nccl, sft, or full)"),
        })?;
        if !phases.contains(&phase) {
            phases.push(phase);
        }
    }
    phases.sort();
    Ok(Phases(phases))
}

/// "nccl", "verify,nccl,sft": how a list of phases is named (the default file name, messages).
pub fn phases_name(phases: &[Phase]) -> String {
    phases.iter().map(|p| p.name()).collect::<Vec<_>>().join(",")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    Auto,
    Nccl,
    /// Host memory and CPUs: MPI for the sweeps, the CPU model for sft.
    #[value(alias = "cpu")]
    Mpi,
}

#[derive(clap::Args, Debug)]
pub struct SweepArgs {
    /// Collectives to sweep, comma-separated: all_reduce, reduce_scatter, all_gather,
    /// broadcast, alltoall, sendrecv, or all.
    #[arg(long, default_value = "all")]
    pub collectives: String,

    /// Minimum size in bytes (K, M, G suffixes: 1024-based).
    #[arg(short = 'b', long = "minbytes", default_value = "8")]
    pub min_bytes: String,

    /// Maximum size in bytes.
    #[arg(short = 'e', long = "maxbytes", default_value = "128M")]
    pub max_bytes: String,

    /// Multiplication factor between sizes (default 2 unless -i is given; of -f and -i the
    /// last one given counts).
    #[arg(short = 'f', long = "stepfactor", overrides_with = "step_bytes")]
    pub step_factor: Option<usize>,

    /// Fixed increment between sizes, in bytes.
    #[arg(short = 'i', long = "stepbytes", overrides_with = "step_factor")]
    pub step_bytes: Option<String>,

    /// Timed iterations per size.
    #[arg(short = 'n', long = "iters", default_value_t = 20)]
    pub iters: usize,

    /// Untimed warm-up iterations per size.
    #[arg(short = 'w', long = "warmup_iters", default_value_t = 5)]
    pub warmup_iters: usize,

    /// Check iterations per size (fresh data, exact comparison); 0 skips checking.
    #[arg(short = 'c', long = "check", default_value_t = 1)]
    pub check: usize,

    /// Data types, comma-separated (NCCL's: int8 uint8 int32 uint32 int64 uint64 half float
    /// double bfloat16 f8e4m3 f8e5m2), or all.
    #[arg(short = 'd', long = "datatype", default_value = "float")]
    pub datatype: String,

    /// Reduction ops, comma-separated (sum prod min max avg), or all.
    #[arg(short = 'o', long = "op", default_value = "sum")]
    pub op: String,

    /// Root rank of broadcast.
    #[arg(short = 'r', long = "root", default_value_t = 0)]
    pub root: usize,

    /// Capture the -n iterations as a CUDA graph and replay it this many times (0: no graphs).
    #[arg(short = 'G', long = "cudagraph", default_value_t = 0)]
    pub graph_launches: usize,

    /// Reported time over ranks: 0 rank 0, 1 average, 2 minimum, 3 maximum.
    #[arg(short = 'a', long = "average", default_value_t = 1)]
    pub average: u8,
}

/// The most launches -n, -w, -c and -G take (each builds a per-launch table).
pub const MAX_LAUNCHES: usize = 1_000_000;
/// The most sizes one sweep takes.
pub const MAX_SIZES: usize = 10_000;
/// The most bytes of per-launch times rank 0 holds for one series.
const MAX_TIMES_TABLE: usize = 1 << 30;
/// Seconds --timeout takes at most (a week).
const MAX_TIMEOUT_S: u64 = 7 * 24 * 3600;

/// Everything a sweep run needs, validated.
pub struct SweepPlan {
    pub collectives: Vec<Collective>,
    pub dtypes: Vec<DType>,
    pub ops: Vec<RedOp>,
    pub settings: SweepSettings,
    pub fault: Fault,
}

fn parse_list<T: std::str::FromStr<Err = String> + Copy + PartialEq>(text: &str, all: &[T]) -> Result<Vec<T>, String> {
    if text.trim().eq_ignore_ascii_case("all") {
        return Ok(all.to_vec());
    }
    let mut items: Vec<T> = Vec::new();
    for item in text.split(',') {
        let parsed: T = item.trim().parse()?;
        if !items.contains(&parsed) {
            items.push(parsed); // a repeated name runs once: each series has one place in the file
        }
    }
    if items.is_empty() {
        return Err(format!("empty list '{text}'"));
    }
    Ok(items)
}

impl Cli {
    /// Checks every flag against the world size; the same answer on every rank.
    pub fn sweep_plan(&self, ranks: usize) -> Result<SweepPlan, String> {
        let a = &self.sweep;
        let min = parse_size(&a.min_bytes).map_err(|e| format!("-b: {e}"))?;
        let max = parse_size(&a.max_bytes).map_err(|e| format!("-e: {e}"))?;
        let step = match (&a.step_bytes, a.step_factor) {
            (Some(b), _) => Step::Bytes(parse_size(b).map_err(|e| format!("-i: {e}"))?),
            (None, f) => Step::Factor(f.unwrap_or(2)),
        };
        let counts = [("-n", a.iters, 1), ("-w", a.warmup_iters, 0), ("-c", a.check, 0), ("-G", a.graph_launches, 0)];
        for (flag, value, least) in counts {
            if !(least..=MAX_LAUNCHES).contains(&value) {
                return Err(format!("{flag} {value}: must be {least} to {MAX_LAUNCHES}"));
            }
        }
        if a.root >= ranks {
            return Err(format!("-r {} is not a rank (the job has {ranks} ranks)", a.root));
        }
        let aggregate = match a.average {
            0 => Aggregate::Rank0,
            1 => Aggregate::Avg,
            2 => Aggregate::Min,
            3 => Aggregate::Max,
            x => return Err(format!("-a {x}: must be 0 (rank 0), 1 (avg), 2 (min) or 3 (max)")),
        };
        let sizes = sizes(min, max, step, MAX_SIZES)?;
        // Rank 0 keeps every rank's time of every launch of a series (iteration_time_us).
        let launches = if a.graph_launches > 0 { a.graph_launches } else { a.iters };
        let table = (2 * sizes.len() * ranks).saturating_mul(launches).saturating_mul(8);
        if table > MAX_TIMES_TABLE {
            return Err(format!(
                "{} sizes × 2 × {ranks} ranks × {launches} launches of per-launch times is {:.1} GiB per series on rank 0; at most {} GiB (fewer -n/-G or sizes)",
                sizes.len(),
                table as f64 / (1u64 << 30) as f64,
                MAX_TIMES_TABLE >> 30
            ));
        }
        let fault = Fault::from_env_for(ranks)?;
        Ok(SweepPlan {
            fault,
            collectives: parse_list(&a.collectives, &Collective::ALL)?,
            dtypes: parse_list(&a.datatype, &DType::ALL)?,
            ops: parse_list(&a.op, &RedOp::ALL)?,
            settings: SweepSettings {
                sizes,
                iters: a.iters,
                warmup_iters: a.warmup_iters,
                check_iters: a.check,
                graph_launches: a.graph_launches,
                aggregate,
                root: a.root,
                seed: self.seed,
                timeout: Duration::from_secs(self.timeout),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(args: &[&str], ranks: usize) -> Result<SweepPlan, String> {
        let mut argv = vec!["h200-mpibench"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).map_err(|e| e.to_string())?.sweep_plan(ranks)
    }

    #[test]
    fn defaults_and_nccl_tests_flags() {
        let p = plan(&[], 2).unwrap();
        assert_eq!(p.collectives.len(), 6);
        assert_eq!(p.dtypes, vec![DType::Float32]);
        assert_eq!(p.settings.sizes.first(), Some(&8));
        assert_eq!(p.settings.sizes.last(), Some(&(128 << 20)));
        let p = plan(&["-b", "8", "-e", "8G", "-f", "4", "-w", "5", "-n", "20", "-c", "1", "-d", "bf16,half", "-o", "all"], 2).unwrap();
        assert_eq!(p.settings.sizes.len(), 16);
        assert_eq!(p.dtypes, vec![DType::Bfloat16, DType::Float16]);
        assert_eq!(p.ops.len(), 5);
        let p = plan(&["-b", "1K", "-e", "4K", "-i", "1K", "--collectives", "alltoall,sendrecv"], 2).unwrap();
        assert_eq!(p.settings.sizes, vec![1024, 2048, 3072, 4096]);
        assert_eq!(p.collectives, vec![Collective::AllToAll, Collective::SendRecv]);
        // a wrapper's -f default gives way to the user's -i after it, and the other way round
        assert_eq!(plan(&["-b", "1K", "-e", "3K", "-f", "4", "-i", "1K"], 2).unwrap().settings.sizes, vec![1024, 2048, 3072]);
        assert_eq!(plan(&["-b", "1K", "-e", "3K", "-i", "1K", "-f", "2"], 2).unwrap().settings.sizes, vec![1024, 2048]);
        let p = plan(&["-d", "float,bf16,float"], 2).unwrap();
        assert_eq!(p.dtypes, vec![DType::Float32, DType::Bfloat16]);
    }

    #[test]
    fn sft_flags_override_the_run_defaults() {
        let cli = Cli::try_parse_from(["h200-mpibench", "--suite", "sft", "--model", "70b", "--layers", "2", "--micro-batch", "2", "--seq", "4096"]).unwrap();
        let p = cli.sft.plan("tiny", 1).unwrap();
        assert_eq!((p.model.n_layers, p.model.n_kv_heads, p.run.micro_batch, p.run.seq), (2, 8, 2, 4096));
        assert_eq!(Cli::try_parse_from(["h200-mpibench", "--model", "70b"]).unwrap().phases(), [Phase::Sft]);
        assert_eq!(Cli::try_parse_from(["h200-mpibench", "-b", "8"]).unwrap().phases(), [Phase::Nccl]);
        assert_eq!(Cli::try_parse_from(["h200-mpibench", "--suite", "sft,verify,sft"]).unwrap().phases(), [Phase::Verify, Phase::Sft]);
        assert_eq!(Cli::try_parse_from(["h200-mpibench", "--suite", "full", "--model", "7b"]).unwrap().phases(), Phase::ALL);
        assert!(Cli::try_parse_from(["h200-mpibench", "--suite", "nccl,scaling"]).unwrap_err().to_string().contains("scaling runs after sft"));
        let phases = |args: &[&str]| Cli::try_parse_from([&["h200-mpibench"], args].concat()).unwrap().phases();
        assert_eq!(phases(&["--suite", "full", "--scaling", "off"]), [Phase::Verify, Phase::Nccl, Phase::Sft]);
        assert_eq!(phases(&["--suite", "full", "--scaling", "weak"]), Phase::ALL);
        assert_eq!(phases(&["--suite", "sft"]), [Phase::Sft]);
        assert_eq!(phases(&["--model", "70b", "--scaling", "strong"]), [Phase::Sft, Phase::Scaling]);
        assert_eq!(phases(&["--suite", "nccl", "--scaling", "both"]), [Phase::Nccl], "refused by scope.rs, not run");
        let cli = Cli::try_parse_from(["h200-mpibench", "--suite", "sft"]).unwrap();
        assert_eq!(cli.sft.plan("tiny", 1).unwrap().model.name, "tiny");
        for bad in [
            vec!["--layers", "0"],
            vec!["--seq", "0"],
            vec!["--model", "/no/such.json"],
            vec!["--steps", "3", "--warmup-steps", "3"],
            vec!["--data", "/no/such/tokens.bin"],
        ] {
            let mut argv = vec!["h200-mpibench", "--suite", "sft"];
            argv.extend(bad.iter().copied());
            assert!(Cli::try_parse_from(argv).unwrap().sft.plan("tiny", 1).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn plan_reports_every_stage_and_the_verdict() {
        let cli = Cli::try_parse_from(["h200-mpibench", "plan", "--model", "70b", "--ranks", "8"]).unwrap();
        let Some(Command::Plan { ranks, gpu_memory_gib, predict }) = cli.command.clone() else { panic!("not plan") };
        let predicted = cli.prediction_report(ranks, gpu_memory_gib, &predict).unwrap();
        assert_eq!(predicted.lines().filter(|l| !l.starts_with('#')).count(), 4, "{predicted}");
        assert!(predicted.contains("# no ZeRO stage, micro-batch or recompute setting fits 140 GiB on 8 GPUs"), "{predicted}");
        assert!(cli.prediction_report(64, gpu_memory_gib, &predict).unwrap().contains("# fastest layout that fits 140 GiB: ZeRO "));
        let bad = Cli::try_parse_from(["h200-mpibench", "plan", "--mfu", "1.5"]).unwrap();
        let Some(Command::Plan { predict, .. }) = bad.command.clone() else { panic!("not plan") };
        assert!(bad.prediction_report(8, 140.0, &predict).unwrap_err().contains("--mfu 1.5"));
        let text = cli.memory_report(ranks, gpu_memory_gib).unwrap();
        assert_eq!(text.matches("# ZeRO stage").count(), 4);
        assert!(text.contains("# ZeRO stage 0:") && text.contains("does not fit"), "{text}");
        assert!(cli.memory_report(0, 140.0).is_err());
        for ranks in [2305843009213693952, usize::MAX] {
            assert!(cli.memory_report(ranks, 140.0).unwrap_err().contains("must be 1 to"));
        }
        for gib in [f64::NAN, -1.0, f64::INFINITY, 0.0] {
            assert!(cli.memory_report(8, gib).is_err(), "{gib}");
        }
        let one = Cli::try_parse_from(["h200-mpibench", "plan", "--model", "7b", "--zero", "3"]).unwrap();
        assert_eq!(one.memory_report(8, 140.0).unwrap().matches("# ZeRO stage").count(), 1);
        let bad = Cli::try_parse_from(["h200-mpibench", "plan", "--zero", "4"]).unwrap();
        assert!(bad.memory_report(8, 140.0).is_err());
    }

    #[test]
    fn bad_inputs_are_errors() {
        for args in [
            vec!["-b", "1M", "-e", "1K"],
            vec!["-b", "0"],
            vec!["-e", "-5"],
            vec!["-b", "lots"],
            vec!["--collectives", "gather"],
            vec!["-d", "float128"],
            vec!["-o", "xor"],
            vec!["-a", "7"],
            vec!["-r", "2"],
            vec!["-n", "0"],
            vec!["-f", "1"],
            vec!["-n", "1000000000000"],
            vec!["-w", "2000000"],
            vec!["-c", "9999999"],
            vec!["-b", "1", "-e", "1G", "-i", "1"],
            vec!["-n", "1000000", "-b", "1", "-e", "8G"],
        ] {
            assert!(plan(&args, 2).is_err(), "{args:?} accepted");
        }
    }
}
