//! `h200-mpibench op`: each rank times the ops asked for on its GPU; rank 0 prints every
//! rank's median and fastest repetition with the rate at the median.

use super::{check_gpu_memory, choose_path, open_gpu, Path, Stop};
use h200_mpibench::backend::cuda::check::{fresh_seed, Inputs};
use h200_mpibench::backend::cuda::gemm::WORKSPACE_BYTES;
use h200_mpibench::backend::cuda::model_ops::ModelOps;
use h200_mpibench::backend::cuda::op_bench::{self, OpTiming, Work};
use h200_mpibench::cli::op::OpPlan;
use h200_mpibench::cli::Backend;
use h200_mpibench::dist::world::World;

pub fn run(world: &World, plan: &OpPlan, seed: Option<u64>) -> Result<i32, Stop> {
    let ordinal = match choose_path(world, Backend::Auto)? {
        Path::Gpu { ordinal } => ordinal,
        Path::Host { reason } => return Err(Stop::Agreed(format!("op times GPU kernels, and {reason}"))),
    };
    let gpu = open_gpu(world, ordinal)?;
    let need = plan.ops.iter().map(|&op| op_bench::gpu_bytes(op, plan)).max().unwrap_or(0) + WORKSPACE_BYTES as u64;
    check_gpu_memory(world, &gpu, Some(need), "op", "give a smaller shape (--batch, --seq, --elements)")?;
    let seed = seed.unwrap_or_else(fresh_seed);
    h200_mpibench::dist::phase::set("op: compiling the model kernels");
    let ops = ModelOps::load(&gpu, gpu.alloc(WORKSPACE_BYTES)?)?;
    let mut inputs = Inputs::from(seed);
    let mut timings = Vec::new();
    h200_mpibench::dist::phase::set("op: timing");
    for &op in &plan.ops {
        timings.extend(op_bench::run(&ops, op, plan, &mut inputs)?);
    }
    // Every rank's median and fastest repetition, in seconds, op by op.
    let mine: Vec<f64> = timings.iter().flat_map(|t| [median(&t.seconds), t.seconds.iter().copied().fold(f64::INFINITY, f64::min)]).collect();
    let all = world.all_gather_f64(&mine);
    if world.is_root() {
        println!("# op on {} ({} rank(s)), inputs from seed {seed}: {} repetitions after {} untimed", gpu.name(), world.size, plan.repetitions, plan.warmup);
        println!(
            "# rate at the median; attention counts the causal half (forward 4·B·H·S²·D/2 FLOP, backward 2.5×), adamw 30 B an element, the copy read + write"
        );
        print!("{}", table(&timings, &all));
    }
    Ok(0)
}

fn median(seconds: &[f64]) -> f64 {
    let mut s = seconds.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

/// One line per rank and op; `all` holds each rank's [median, fastest] per op, rank by rank.
fn table(timings: &[OpTiming], all: &[f64]) -> String {
    let mut out = format!("# {:>4} {:<20} {:<36} {:>10} {:>10} {:>14}\n", "rank", "op", "shape", "median ms", "min ms", "rate");
    for (rank, per_rank) in all.chunks(2 * timings.len()).enumerate() {
        for (t, times) in timings.iter().zip(per_rank.chunks(2)) {
            let rate = match t.work {
                Work::Flop(flop) => format!("{:.1} TFLOP/s", flop / times[0] / 1e12),
                Work::Bytes(bytes) => format!("{:.0} GB/s", bytes / times[0] / 1e9),
            };
            out += &format!("  {rank:>4} {:<20} {:<36} {:>10.4} {:>10.4} {rate:>14}\n", t.name, t.shape, 1e3 * times[0], 1e3 * times[1]);
        }
    }
    out
}
