//! Scaling inside one job: which sub-world sizes are measured, the run each size gets (weak:
//! the same per-GPU batch; strong: the same global batch), and the figures of one size from
//! every participating rank's step records.

use super::metrics::{StepRecord, PEAK_FLOPS};
use super::run_config::RunConfig;
use crate::telemetry::figures::median;
use crate::zero::step_model::{compute_mfu, Rates, NIC_GBS};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The same micro-batch and accumulation per GPU at every size.
    Weak,
    /// The same global batch at every size: fewer GPUs accumulate more micro-batches.
    Strong,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Weak => "weak",
            Mode::Strong => "strong",
        }
    }
}

/// The sub-world sizes of a job of `world` ranks with `per_host` ranks on each host: 1, each
/// power of two below one host, one host, each power of two of hosts below the job, the job.
pub fn sizes(world: usize, per_host: usize) -> Vec<usize> {
    let per_host = per_host.clamp(1, world.max(1));
    let within = (0..).map(|k| 1usize << k).take_while(|&s| s < per_host);
    let hosts = (0..).map(|k| per_host << k).take_while(|&s| s < world);
    let mut sizes: Vec<usize> = within.chain(hosts).chain([world.max(1)]).collect();
    sizes.dedup();
    sizes
}

/// The run of `size` ranks in `mode`, from `run` (the sft run of the whole job of `world`
/// ranks) with `steps` steps of which `warmup` are left out, or why this size cannot have it.
pub fn run_at(run: &RunConfig, mode: Mode, size: usize, world: usize, (steps, warmup): (usize, usize)) -> Result<RunConfig, String> {
    let grad_accum = match mode {
        Mode::Weak => run.grad_accum,
        Mode::Strong => {
            let micro_batches = run.grad_accum * world;
            if micro_batches % size != 0 {
                return Err(format!("the global batch of {micro_batches} micro-batches does not divide over {size} ranks"));
            }
            micro_batches / size
        }
    };
    let sized = RunConfig { grad_accum, steps, warmup_steps: warmup, ..run.clone() };
    sized.validate()?;
    Ok(sized)
}

/// Every participating rank's figures of each step, [rank][step], as gathered on rank 0.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepsByRank {
    pub step_s: Vec<Vec<f64>>,
    pub forward_s: Vec<Vec<f64>>,
    pub backward_s: Vec<Vec<f64>>,
    pub optimizer_s: Vec<Vec<f64>>,
    pub comm_s: Vec<Vec<f64>>,
    pub comm_busy_s: Vec<Vec<f64>>,
    /// The loss of the rank's sub-world (the mean over its ranks).
    pub loss: Vec<Vec<f64>>,
    pub peak_memory_bytes: Vec<Vec<f64>>,
}

/// A step figure of one rank.
pub type StepField = fn(&StepRecord) -> f64;

/// What each field of StepsByRank holds, in the order they are gathered and written.
pub const STEP_FIELDS: [(&str, StepField); 8] = [
    ("rank_step_s", |r| r.step_s),
    ("rank_forward_s", |r| r.forward_s),
    ("rank_backward_s", |r| r.backward_s),
    ("rank_optimizer_s", |r| r.optimizer_s),
    ("rank_comm_s", |r| r.comm_s),
    ("rank_comm_busy_s", |r| r.comm_busy_s),
    ("rank_loss", |r| r.loss),
    ("rank_peak_memory_bytes", |r| r.peak_memory_bytes as f64),
];

impl StepsByRank {
    /// From STEP_FIELDS' columns, each every rank's values one rank after another.
    pub fn from_gathered(columns: Vec<Vec<f64>>, steps: usize) -> StepsByRank {
        let mut by_rank = columns.into_iter().map(|flat| flat.chunks(steps.max(1)).map(<[f64]>::to_vec).collect::<Vec<_>>());
        let mut next = || by_rank.next().unwrap_or_default();
        StepsByRank {
            step_s: next(),
            forward_s: next(),
            backward_s: next(),
            optimizer_s: next(),
            comm_s: next(),
            comm_busy_s: next(),
            loss: next(),
            peak_memory_bytes: next(),
        }
    }

    /// STEP_FIELDS' names beside their values.
    pub fn named(&self) -> Vec<(&'static str, &Vec<Vec<f64>>)> {
        let fields = [&self.step_s, &self.forward_s, &self.backward_s, &self.optimizer_s, &self.comm_s, &self.comm_busy_s, &self.loss, &self.peak_memory_bytes];
        STEP_FIELDS.iter().map(|(name, _)| *name).zip(fields).collect()
    }

    pub fn ranks(&self) -> usize {
        self.step_s.len()
    }
}

/// The figures of one measured size.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    /// Tokens per second per GPU: in each independent sub-world, its tokens per GPU over the
    /// measured steps ÷ the sum of each step's slowest rank's time; the median over the
    /// sub-worlds (several only at size 1, where every GPU is a replica of its own).
    pub tokens_per_s_per_gpu: f64,
    /// On GPUs: tokens/s/GPU × model FLOPs per token ÷ PEAK_FLOPS.
    pub mfu: Option<f64>,
    /// Means over the measured steps and the ranks.
    pub step_s: f64,
    pub forward_s: f64,
    pub backward_s: f64,
    pub optimizer_s: f64,
    pub comm_s: f64,
    pub comm_busy_s: f64,
    /// Busy communication ÷ compute (the step less its exposed communication).
    pub comm_compute_ratio: f64,
    /// The most memory any rank's buffers held.
    pub peak_memory_bytes: f64,
    /// Per independent sub-world, its tokens/s/GPU (one value unless the size is 1).
    pub per_sub_world: Vec<f64>,
}

/// The figures of `steps` ([rank][step]) from sub-worlds of `group` consecutive ranks each,
/// each rank doing `tokens_per_step` tokens a step; the first `warmup` steps left out.
pub fn point(steps: &StepsByRank, group: usize, warmup: usize, tokens_per_step: f64, flops_per_token: f64, on_gpu: bool) -> Point {
    let measured = |row: &Vec<f64>| row[warmup.min(row.len())..].to_vec();
    let per_sub_world: Vec<f64> = steps
        .step_s
        .chunks(group.max(1))
        .map(|ranks| {
            let rows: Vec<Vec<f64>> = ranks.iter().map(measured).collect();
            let slowest: f64 = (0..rows[0].len()).map(|s| rows.iter().map(|r| r[s]).fold(0.0, f64::max)).sum();
            tokens_per_step * rows[0].len() as f64 / slowest
        })
        .collect();
    let mean = |field: &Vec<Vec<f64>>| {
        let values: Vec<f64> = field.iter().flat_map(measured).collect();
        values.iter().sum::<f64>() / values.len().max(1) as f64
    };
    let tokens_per_s_per_gpu = median(&per_sub_world);
    let (step_s, comm_s, comm_busy_s) = (mean(&steps.step_s), mean(&steps.comm_s), mean(&steps.comm_busy_s));
    Point {
        tokens_per_s_per_gpu,
        mfu: on_gpu.then_some(tokens_per_s_per_gpu * flops_per_token / PEAK_FLOPS),
        step_s,
        forward_s: mean(&steps.forward_s),
        backward_s: mean(&steps.backward_s),
        optimizer_s: mean(&steps.optimizer_s),
        comm_s,
        comm_busy_s,
        comm_compute_ratio: comm_busy_s / (step_s - comm_s),
        peak_memory_bytes: steps.peak_memory_bytes.iter().flatten().copied().fold(0.0, f64::max),
        per_sub_world,
    }
}

/// Scaling efficiency at a size against the smallest size measured in the same mode: weak,
/// tokens/s/GPU ÷ the baseline's; strong, speed-up ÷ GPU ratio = (T_b / T_s) ÷ (s / b), which
/// at the same global batch is the same ratio of tokens/s/GPU.
pub fn efficiency(point: &Point, baseline: &Point) -> f64 {
    point.tokens_per_s_per_gpu / baseline.tokens_per_s_per_gpu
}

/// The step-time model's rates from a 1-GPU point of `run` with `params` parameters: its
/// compute (the mean step over the replicas less optimizer and exposed communication) as a
/// rate, its AdamW time per parameter, the reference links (8 NICs of 47 GB/s a host, which
/// carry as much as NVLink: a size crossing hosts is predicted no slower per GPU).
pub fn rates_from(point: &Point, run: &RunConfig, flops_per_token: f64, params: f64) -> Rates {
    let compute_s = point.step_s - point.optimizer_s - point.comm_s;
    let tokens_per_step = (run.micro_batch * run.grad_accum * run.seq) as f64;
    let mfu = compute_mfu(tokens_per_step, flops_per_token, run.recompute, compute_s);
    let origin = format!("the 1-GPU point: compute at {:.1}% MFU, AdamW {:.4} s", 100.0 * mfu, point.optimizer_s);
    Rates { mfu, optimizer_s_per_param: point.optimizer_s / params, origin, ..Rates::reference(mfu, 8, NIC_GBS) }
}

/// One size of one mode, as the table and /scaling/points show it.
#[derive(Clone, Debug)]
pub struct Row {
    pub mode: Mode,
    pub ranks: usize,
    /// Hosts the sub-world spans (at size 1: of one replica).
    pub hosts: usize,
    pub micro_batch: usize,
    pub grad_accum: usize,
    pub planned_memory_bytes: u64,
    /// The step-time model's tokens/s/GPU at this size, calibrated on the 1-GPU point (GPUs).
    pub predicted_tokens_per_s_per_gpu: Option<f64>,
    /// With --scaling-sweep: the all_reduce busbw on this size's sub-world at the largest message.
    pub all_reduce_busbw_gbs: Option<f64>,
    /// The figures, or why the size was skipped.
    pub measured: Result<Measured, String>,
}

#[derive(Clone, Debug)]
pub struct Measured {
    pub point: Point,
    /// Against the point of `baseline_ranks` (efficiency()).
    pub efficiency: f64,
    pub baseline_ranks: usize,
}

impl Row {
    /// Sequences per optimizer step over the sub-world.
    pub fn global_batch(&self) -> usize {
        self.micro_batch * self.grad_accum * self.ranks
    }

    /// The table's line for this row.
    pub fn line(&self) -> String {
        let settings =
            format!("{:<6} {:>5} {:>5} {:>6}×{:<5} {:>6}", self.mode.name(), self.ranks, self.hosts, self.micro_batch, self.grad_accum, self.global_batch());
        let m = match &self.measured {
            Err(why) => return format!("{settings}  skipped: {why}\n"),
            Ok(m) => m,
        };
        let p = &m.point;
        let mfu = p.mfu.map_or("-".to_string(), |u| format!("{:.1}", 100.0 * u));
        let predicted = self.predicted_tokens_per_s_per_gpu.map_or("-".to_string(), |t| format!("{t:.0}"));
        let busbw = self.all_reduce_busbw_gbs.map_or("-".to_string(), |b| format!("{b:.1}"));
        format!(
            "{settings} {:>13.0} {:>10} {:>6} {:>8.4} {:>8.4} {:>8.4} {:>8.4} {:>9.2} {:>9.2} {:>7.3} {:>9.2} {:>7.1}% of {} {:>9}\n",
            p.tokens_per_s_per_gpu,
            predicted,
            mfu,
            p.step_s,
            p.forward_s,
            p.backward_s,
            p.optimizer_s,
            1e3 * p.comm_s,
            1e3 * p.comm_busy_s,
            p.comm_compute_ratio,
            p.peak_memory_bytes / (1u64 << 30) as f64,
            100.0 * m.efficiency,
            m.baseline_ranks,
            busbw
        )
    }
}

/// The scaling table, one line per row.
pub fn table(rows: &[Row]) -> String {
    let mut out = "# mode    GPUs hosts  micro×accum  global  tokens/s/GPU  predicted   MFU%   step s  fwd s    bwd s    opt s    exposed ms busy ms comm/comp peak GiB efficiency  AR GB/s\n".to_string();
    for row in rows {
        out += &row.line();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_powers_of_two_within_a_host_then_hosts() {
        assert_eq!(sizes(1, 1), [1]);
        assert_eq!(sizes(4, 4), [1, 2, 4]);
        assert_eq!(sizes(8, 8), [1, 2, 4, 8]);
        assert_eq!(sizes(64, 8), [1, 2, 4, 8, 16, 32, 64]);
        assert_eq!(sizes(6, 6), [1, 2, 4, 6]);
        assert_eq!(sizes(24, 8), [1, 2, 4, 8, 16, 24]);
        assert_eq!(sizes(4, 1), [1, 2, 4]);
        assert_eq!(sizes(3, 1), [1, 2, 3]);
    }

    #[test]
    fn strong_scaling_keeps_the_global_batch() {
        let run = RunConfig { grad_accum: 2, ..RunConfig::defaults_for("tiny") };
        for size in [1, 2, 4] {
            let r = run_at(&run, Mode::Strong, size, 4, (5, 1)).unwrap();
            assert_eq!(r.grad_accum * r.micro_batch * size, 2 * run.micro_batch * 4);
            assert_eq!((r.steps, r.warmup_steps), (5, 1));
        }
        assert_eq!(run_at(&run, Mode::Weak, 1, 4, (5, 1)).unwrap().grad_accum, 2);
        let e = run_at(&RunConfig { grad_accum: 1, ..run.clone() }, Mode::Strong, 4, 6, (5, 1)).unwrap_err();
        assert_eq!(e, "the global batch of 6 micro-batches does not divide over 4 ranks");
        assert_eq!(run_at(&run, Mode::Strong, 4, 6, (5, 1)).unwrap().grad_accum, 3);
        assert!(run_at(&run, Mode::Weak, 2, 4, (5, 5)).unwrap_err().contains("--warmup-steps"));
    }

    #[test]
    fn figures_by_hand() {
        // two replicas of one rank (size 1), three steps, the first left out
        let steps = StepsByRank {
            step_s: vec![vec![9.0, 1.0, 1.0], vec![9.0, 2.0, 2.0]],
            comm_s: vec![vec![0.0, 0.25, 0.25], vec![0.0, 0.5, 0.5]],
            comm_busy_s: vec![vec![0.0, 0.5, 0.5], vec![0.0, 0.5, 0.5]],
            forward_s: vec![vec![1.0; 3]; 2],
            backward_s: vec![vec![2.0; 3]; 2],
            optimizer_s: vec![vec![3.0; 3]; 2],
            loss: vec![vec![1.0; 3]; 2],
            peak_memory_bytes: vec![vec![5.0; 3], vec![7.0; 3]],
        };
        let p = point(&steps, 1, 1, 100.0, 1e12, true);
        assert_eq!(p.per_sub_world, [100.0, 50.0]);
        assert_eq!(p.tokens_per_s_per_gpu, 75.0);
        assert!((p.mfu.unwrap() - 75.0 * 1e12 / PEAK_FLOPS).abs() < 1e-12);
        assert_eq!((p.step_s, p.comm_s, p.comm_busy_s), (1.5, 0.375, 0.5));
        assert!((p.comm_compute_ratio - 0.5 / 1.125).abs() < 1e-12);
        assert_eq!((p.forward_s, p.peak_memory_bytes), (1.0, 7.0));
        // the same two ranks as one sub-world of 2: each step lasts as long as its slowest rank
        let pair = point(&steps, 2, 1, 100.0, 1e12, false);
        assert_eq!((pair.per_sub_world.as_slice(), pair.mfu), ([50.0].as_slice(), None));
        assert_eq!(efficiency(&pair, &p), 50.0 / 75.0);
    }

    #[test]
    fn gathered_columns_come_back_by_rank() {
        let columns: Vec<Vec<f64>> = (0..STEP_FIELDS.len()).map(|c| (0..6).map(|i| (10 * c + i) as f64).collect()).collect();
        let s = StepsByRank::from_gathered(columns, 3);
        assert_eq!(s.ranks(), 2);
        assert_eq!(s.step_s, [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]);
        assert_eq!(s.peak_memory_bytes[1], [73.0, 74.0, 75.0]);
        assert_eq!(s.named()[6], ("rank_loss", &s.loss));
    }
}
