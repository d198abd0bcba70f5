//! Telemetry on the CPU path under mpirun (no GPU here): every rank's samples reach rank 0's
//! /telemetry with their phases on one clock, what a host without a GPU can read and nothing
//! else, the per-rank step figures, each sweep series' energy and time, and nothing at all with
//! `--telemetry-ms 0` (the energy arithmetic and the sampler are unit-tested in src/telemetry/).

mod common;

use common::{mpirun, read_results, tempdir};
use serde_json::Value;
use std::time::Duration;

/// The results file's summary and what rank 0 printed.
fn run(ranks: usize, args: &[&str]) -> (Value, String) {
    let dir = tempdir("telemetry");
    let out = dir.join("t.h5");
    let mut all = args.to_vec();
    all.extend(["--out", out.to_str().unwrap()]);
    let r = mpirun(ranks, &all, &[], Duration::from_secs(120));
    assert_eq!(r.code, Some(0), "{all:?}: {}{}", r.stdout, r.stderr);
    (read_results(&out), r.stdout)
}

#[test]
fn sft_samples_of_every_rank_reach_rank_0_with_their_phases() {
    let (summary, _) = run(2, &["--suite", "sft", "--model", "tiny", "--steps", "12", "--warmup-steps", "2", "--telemetry-ms", "20"]);
    let t = &summary["telemetry"];
    let rows: Vec<u64> = t["rows_per_rank"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    assert!(rows.iter().all(|&n| n >= 10), "samples per rank: {rows:?}");
    assert_eq!(t["time_ordered_per_rank"], true);
    let phases: Vec<&str> = t["phases"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    assert!(phases.contains(&"sft step 1") && phases.contains(&"sft step 12"), "{phases:?}");
    // A host without a GPU reads its process and says so; no GPU field pretends.
    assert_eq!(t["fields_read"], serde_json::json!(["process_cpu_s", "process_rss_bytes"]));
    assert!(t["source_per_rank"].as_array().unwrap().iter().all(|s| s.as_str().unwrap().starts_with("no GPU telemetry")));
    let measured = t["figures"]["measured_samples_per_rank"].as_array().unwrap();
    assert!(measured.iter().zip(&rows).all(|(m, &n)| m.as_u64().unwrap() > 0 && m.as_u64().unwrap() < n), "{measured:?} of {rows:?}");
    // Every rank's own step times, [steps, ranks]; no energy counter, so no energy figure.
    let sft = &summary["sft"];
    let step_s = sft["rank_step_s"].as_array().unwrap();
    assert_eq!((step_s.len(), step_s[0].as_array().unwrap().len()), (12, 2));
    assert!(step_s.iter().flat_map(|s| s.as_array().unwrap()).all(|s| s.as_f64().unwrap() > 0.0));
    assert!(sft["summary_joules_per_token"].is_null() && sft["rank_energy_j"][0][0].is_null());
}

#[test]
fn each_sweep_series_records_its_time_per_rank_and_sampling_can_be_off() {
    let (summary, printed) = run(2, &["-b", "1K", "-e", "64K", "-f", "4", "-n", "100", "--collectives", "all_reduce,all_gather", "--telemetry-ms", "10"]);
    assert!(printed.contains("# slowest rank: ") && printed.contains("launch time against its row's median"), "{printed}");
    for s in summary["series"].as_array().unwrap() {
        let seconds = s["seconds_per_rank"].as_array().unwrap();
        assert!(seconds.len() == 2 && seconds.iter().all(|x| x.as_f64().unwrap() > 0.0), "{s}");
        assert!(s["energy_j_per_rank"].as_array().unwrap().iter().all(|e| e.is_null()), "no counter on the host path");
    }
    let phases = summary["telemetry"]["phases"].as_array().unwrap();
    // The sampler saw the sweep's rows (a series of small sizes may pass between two samples).
    assert!(phases.iter().any(|p| p.as_str().unwrap().starts_with("all_")), "{phases:?}");
    let (off, _) = run(2, &["-b", "1K", "-e", "4K", "--telemetry-ms", "0"]);
    assert!(off["telemetry"].is_null());
}

/// `slow:R:MS` makes rank R compute that much longer each step: the run names it, and only it,
/// at 2 and at 4 ranks (a second against the tiny model's tenths, and a threshold of 100 %, keep
/// the oversubscribed CI host's noise out).
#[test]
fn the_slow_rank_is_named_at_2_and_4_ranks() {
    for (ranks, slow) in [(2, 1), (4, 3)] {
        let dir = tempdir("straggler");
        let out = dir.join("s.h5");
        let fault = format!("slow:{slow}:1000");
        let args = ["--suite", "sft", "--model", "tiny", "--steps", "6", "--warmup-steps", "2", "--straggler-pct", "100", "--out", out.to_str().unwrap()];
        let r = mpirun(ranks, &args, &[("H200_MPIBENCH_FAULT", &fault)], Duration::from_secs(180));
        assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
        let named: Vec<&str> = r.stdout.lines().filter(|l| l.contains("straggler: rank")).collect();
        assert_eq!(named.len(), 1, "{ranks} ranks: {}", r.stdout);
        assert!(named[0].contains(&format!("straggler: rank {slow} on ")), "{}", named[0]);
        assert!(r.stdout.contains(&format!("# slowest rank: {slow} on ")), "{}", r.stdout);
        let sft = &read_results(&out)["sft"];
        assert_eq!(sft["straggler_ranks"], serde_json::json!([slow]));
        assert_eq!(sft["rank_comm_s"].as_array().unwrap()[0].as_array().unwrap().len(), ranks);
    }
}
