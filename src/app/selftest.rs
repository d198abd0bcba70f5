//! `h200-mpibench selftest`: on every GPU, the model's ops and steps against the CPU reference.

use super::{announce, choose_path, open_gpu, record_gpu_software, Path, Stop};
use h200_mpibench::cli::Backend;
use h200_mpibench::dist::world::{print_line, World};
use h200_mpibench::results::hdf5_file::ResultsFile;
use h200_mpibench::results::metadata::RunMetadata;
use h200_mpibench::selftest::{self, Check};

/// `seed`: the inputs' seed (--seed), or None for a fresh one; rank 0's goes to every rank and
/// into the file, so that the same checks can be run again.
pub fn run(world: &World, seed: Option<u64>, file: Option<&ResultsFile>, meta: &mut RunMetadata) -> Result<i32, Stop> {
    let ordinal = match choose_path(world, Backend::Auto)? {
        Path::Gpu { ordinal } => ordinal,
        Path::Host { reason } => return Err(Stop::Agreed(format!("selftest checks GPU kernels, and {reason}"))),
    };
    let gpu = open_gpu(world, ordinal)?;
    meta.engine = "cuda".into();
    record_gpu_software(meta, false);
    announce(world, file, meta, &gpu.identity(), "selftest: GPU ops against the CPU reference", None)?;
    h200_mpibench::dist::phase::set("selftest");
    let mut seed = seed.unwrap_or_else(selftest::fresh_seed).to_le_bytes();
    world.broadcast_from_root(&mut seed);
    let seed = u64::from_le_bytes(seed);
    if world.is_root() {
        println!("# inputs drawn from seed {seed} (the same checks again: selftest --seed {seed})");
    }
    let log = file.map(|f| f.begin_selftest(seed)).transpose()?;
    let mut log_error = None;
    let checks = selftest::run(&gpu, seed, &mut |check| {
        if let (Some(log), None) = (&log, &log_error) {
            log_error = log.check(check).err();
        }
    })?;
    if let Some(e) = log_error {
        return Err(Stop::Fatal(e.context("cannot write the checks to the results file")));
    }
    let failed: Vec<&Check> = checks.iter().filter(|c| !c.passed()).collect();
    let failed_per_rank: Vec<u64> = world.all_gather_f64(&[failed.len() as f64]).iter().map(|&f| f as u64).collect();
    if world.is_root() {
        print!("{}", selftest::table(&checks));
    } else if !failed.is_empty() {
        let what: Vec<String> = failed.iter().map(|c| format!("{} (rel err {:.2e}, limit {:.0e})", c.op, c.rel_err, c.tolerance)).collect();
        print_line(&format!("h200-mpibench: {}: selftest FAILED: {}", world.who(), what.join(", ")));
    }
    if let Some(log) = &log {
        log.finish(&failed_per_rank)?;
    }
    let total: u64 = failed_per_rank.iter().sum();
    if world.is_root() {
        println!("# selftest: {} checks on each of {} GPU(s), {total} failed", checks.len(), world.size);
    }
    Ok(if total == 0 { 0 } else { 3 })
}
