//! `--suite full` (and comma lists) on the CPU path under mpirun: verify, the sweeps, SFT and scaling in
//! one process and one results file, with one telemetry table across them; a failed verify
//! stops the benchmarks after it, and the file says why, unless --keep-going.

mod common;

use common::{mpirun, read_results, tempdir};
use serde_json::Value;
use std::time::Duration;

/// Wide tolerances: the oversubscribed CI host is noisy (tests/verify.rs says more).
const WIDE: [&str; 4] = ["--tolerance-pct", "50", "--link-tolerance-pct", "90"];
const SMALL_SFT: [&str; 6] = ["--model", "tiny", "--steps", "4", "--warmup-steps", "1"];

/// One job at a time: two at once on the CI host's two cores would measure each other.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run(ranks: usize, args: &[&str], fault: Option<&str>) -> (Option<i32>, String, String, Value) {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempdir("full");
    let out = dir.join("f.h5");
    let mut all = args.to_vec();
    all.extend(WIDE);
    all.extend(["--out", out.to_str().unwrap()]);
    let env: Vec<(&str, &str)> = fault.map(|f| ("H200_MPIBENCH_FAULT", f)).into_iter().collect();
    let r = mpirun(ranks, &all, &env, Duration::from_secs(180));
    (r.code, r.stdout, r.stderr, read_results(&out))
}

/// Four ranks on the CI host's two cores: an MPI pair whose two ranks share a core takes
/// microseconds a round trip where the others take tenths, and verify rightly names it. So the
/// run keeps going, and a failure is accepted only where it is such a pair's.
#[test]
fn full_runs_every_phase_in_one_file() {
    let mut args = vec![
        "--suite",
        "full",
        "--keep-going",
        "-b",
        "1K",
        "-e",
        "16K",
        "--collectives",
        "all_reduce,all_gather",
        "--scaling-steps",
        "3",
        "--scaling-warmup-steps",
        "1",
    ];
    args.extend(SMALL_SFT);
    let (code, stdout, stderr, summary) = run(4, &args, None);
    let failed: Vec<&str> = stderr.lines().filter(|l| l.starts_with("h200-mpibench: verify FAILED: ")).collect();
    assert!(failed.iter().all(|l| l.contains(" ↔ rank ") && l.contains(": mpi_")), "{failed:?}");
    assert_eq!(code, Some(if failed.is_empty() { 0 } else { 5 }), "{stdout}{stderr}");
    assert_eq!((summary["run"]["suite"].as_str(), summary["run"]["exit_code"].as_i64()), (Some("full"), code.map(i64::from)));
    assert!(summary["run"].get("stopped").is_none());
    for phase in ["verify", "nccl", "sft", "scaling"] {
        assert!(summary["run"][format!("phase_{phase}_s")].as_f64().unwrap() > 0.0, "{}", summary["run"]);
        assert!(stdout.contains(&format!("# phase {phase} took ")), "{stdout}");
    }
    assert_eq!(summary["run"]["phase_sft_exit_code"], 0);
    let memcpy = &summary["verify"]["verdicts"];
    assert!((0..memcpy["figure"].as_array().unwrap().len()).all(|i| memcpy["figure"][i] != "host_memcpy_gbs" || memcpy["passed"][i] == 1));
    assert_eq!(summary["verify"]["probes"]["host_memcpy_gbs"]["subject"].as_array().unwrap().len(), 4);
    let mut series: Vec<&str> = summary["series"].as_array().unwrap().iter().map(|s| s["collective"].as_str().unwrap()).collect();
    series.sort();
    assert_eq!(series, ["all_gather", "all_reduce"]);
    assert_eq!(summary["sft"]["step"].as_array().unwrap().len(), 4);
    assert_eq!(summary["scaling"]["points"]["ranks"], serde_json::json!([1, 2, 4, 1, 2, 4]));
    // One sampler across the phases: each phase's samples in the one table, in order.
    let t = &summary["telemetry"];
    assert!(t["rows_per_rank"].as_array().unwrap().len() == 4 && t["time_ordered_per_rank"] == true, "{t}");
    let phases: Vec<&str> = t["phases"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    assert!(phases.iter().any(|p| p.starts_with("verify")) && phases.iter().any(|p| p.starts_with("sft step")), "{phases:?}");
    // The banner names the phases once; each phase prints what it always prints.
    assert_eq!(stdout.matches("# h200-mpibench ").count(), 1, "{stdout}");
    assert!(
        stdout.contains(" figures and the health of 0 of 4 rank(s) failed")
            && stdout.contains("# Avg bus bandwidth")
            && stdout.contains("measured steps (rank 0)"),
        "{stdout}"
    );
}

#[test]
fn a_failed_verify_stops_the_benchmarks_unless_keep_going() {
    let mut args = vec!["--suite", "verify,sft"];
    args.extend(SMALL_SFT);
    let (code, stdout, stderr, summary) = run(2, &args, Some("slowprobe:1"));
    assert_eq!(code, Some(5), "{stdout}{stderr}");
    assert!(stderr.contains("h200-mpibench: verify failed: sft not run (--keep-going runs them anyway)"), "{stderr}");
    assert_eq!(summary["run"]["stopped"], "verify failed: sft not run (--keep-going runs them anyway)");
    assert!(summary["sft"].is_null() && summary["verify"]["figures_failed"].as_u64() >= Some(1));
    assert_eq!(summary["run"]["exit_code"], 5);

    args.push("--keep-going");
    let (code, stdout, stderr, summary) = run(2, &args, Some("slowprobe:1"));
    assert_eq!(code, Some(5), "the verdict stands: {stdout}{stderr}");
    assert_eq!(summary["sft"]["step"].as_array().unwrap().len(), 4, "{stdout}");
    assert!(summary["run"].get("stopped").is_none());
}
