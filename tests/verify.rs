//! `verify` on the CPU path under mpirun (no GPU here): a healthy run exits 0 and says what it
//! skipped; `slowprobe:R` makes rank R's probes do five times the work they count, and rank R,
//! only rank R, fails with the figure's line and exit code 5, at 2 and at 4 ranks; the file
//! holds every probe's raw repetitions, from which each figure is recomputed here. (The
//! oversubscribed CI host is noisy: the tolerances are wide, the fault a factor of 5.)

mod common;

use common::{median, mpirun, read_results, tempdir};
use serde_json::Value;
use std::time::Duration;

const WIDE: [&str; 4] = ["--tolerance-pct", "50", "--link-tolerance-pct", "90"];

/// One verify job at a time: two at once on the CI host's two cores would measure each other.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run(ranks: usize, fault: Option<&str>) -> (Option<i32>, String, String, Value) {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempdir("verify");
    let out = dir.join("v.h5");
    let mut args = vec!["verify", "--out", out.to_str().unwrap()];
    args.extend(WIDE);
    let env: Vec<(&str, &str)> = fault.map(|f| ("H200_MPIBENCH_FAULT", f)).into_iter().collect();
    let r = mpirun(ranks, &args, &env, Duration::from_secs(120));
    let summary = read_results(&out);
    (r.code, r.stdout, r.stderr, summary)
}

#[test]
fn a_healthy_run_passes_says_what_it_skipped_and_keeps_the_raw_data() {
    let (code, stdout, stderr, summary) = run(2, None);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("# skipped on every rank: GPU inventory, health and probes"), "{stdout}");
    assert!(stdout.contains("# reference: none applies"), "{stdout}");
    assert!(stdout.contains("# verify: 0 of 4 figures and the health of 0 of 2 rank(s) failed"), "{stdout}");
    let v = &summary["verify"];
    assert_eq!((v["figures_failed"].as_u64(), v["level"].as_str()), (Some(0), Some("quick")));
    assert_eq!(summary["run"]["exit_code"], 0);
    // Every figure recomputed from its raw repetitions: the median of work / seconds
    // (a latency: seconds × 1e6 / work).
    for (name, p) in v["probes"].as_object().unwrap() {
        for (i, value) in p["value"].as_array().unwrap().iter().enumerate() {
            let work = p["work"][i].as_f64().unwrap();
            let each: Vec<f64> = p["seconds"][i].as_array().unwrap().iter().map(|s| s.as_f64().unwrap()).collect();
            assert!(each.len() >= 10 && each.iter().all(|&s| s > 0.0), "{name}: {each:?}");
            let per = |s: f64| if name == "mpi_latency_us" { s * 1e6 / work } else { work / s };
            let want = median(each.into_iter().map(per).collect());
            assert!((value.as_f64().unwrap() - want).abs() <= 1e-9 * want, "{name}: {value} against {want}");
        }
    }
    let probes = v["probes"].as_object().unwrap();
    assert_eq!(probes["host_memcpy_gbs"]["subject"].as_array().unwrap().len(), 2, "one per rank");
    assert_eq!(probes["mpi_latency_us"]["ranks"], serde_json::json!(["0,1"]), "one pair");
    assert_eq!(v["inventory"]["host"].as_array().unwrap().len(), 2);
    assert!(v["inventory"]["logical_cpus"][0].as_f64().unwrap() >= 1.0);
    assert!(v["verdicts"]["passed"].as_array().unwrap().iter().all(|p| p == 1));
    assert!(summary["telemetry"]["phases"].as_array().unwrap().iter().any(|p| p == "verify host memory"), "{}", summary["telemetry"]);
}

#[test]
fn the_slowed_rank_and_only_it_fails_with_its_line_and_exit_code_5() {
    for (ranks, slow) in [(2, 1), (4, 2)] {
        let fault = format!("slowprobe:{slow}");
        let (code, stdout, stderr, summary) = run(ranks, Some(&fault));
        assert_eq!(code, Some(5), "{ranks} ranks: {stdout}{stderr}");
        let failed: Vec<&str> = stderr.lines().filter(|l| l.starts_with("h200-mpibench: verify FAILED: ") && l.contains("host_memcpy_gbs")).collect();
        assert_eq!(failed.len(), 1, "{ranks} ranks: {stderr}");
        assert!(failed[0].starts_with(&format!("h200-mpibench: verify FAILED: rank {slow} on ")), "{}", failed[0]);
        assert!(failed[0].contains("median") && failed[0].contains("median's limit at least"), "{}", failed[0]);
        let d = &summary["verify"]["verdicts"];
        let memcpy: Vec<(String, u64)> = (0..d["figure"].as_array().unwrap().len())
            .filter(|&i| d["figure"][i] == "host_memcpy_gbs")
            .map(|i| (d["subject"][i].as_str().unwrap().to_string(), d["passed"][i].as_u64().unwrap()))
            .collect();
        assert_eq!(memcpy.len(), ranks);
        for (subject, passed) in memcpy {
            assert_eq!(passed == 0, subject.starts_with(&format!("rank {slow} on ")), "{ranks} ranks: {subject} passed {passed}");
        }
        assert_eq!(summary["run"]["exit_code"], 5);
    }
}
