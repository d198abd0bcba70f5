//! The scaling phase on the CPU path under mpirun at 4 ranks: weak and strong tables of sizes
//! 1, 2 and 4 in one job, every figure recomputed here from the raw per-step, per-rank times
//! in /scaling; the strong-scaling global batch and loss curve the same at every size; a size
//! that does not fit skipped with its reason; a rank killed mid-scaling ends the job and leaves
//! the partial file.

mod common;

use common::{median, mpirun, mpirun_command, pid_of_rank, read_results, spawn, tempdir};
use h200_mpibench::model::config::LlamaConfig;
use h200_mpibench::train::cpu_trainer::host_bytes;
use h200_mpibench::train::run_config::RunConfig;
use serde_json::Value;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(240);

/// One job at a time: two at once on the CI host's two cores would measure each other.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

/// [step][rank] as JSON → [rank][step].
fn by_rank(v: &Value) -> Vec<Vec<f64>> {
    let steps: Vec<Vec<f64>> = v.as_array().unwrap().iter().map(floats).collect();
    (0..steps[0].len()).map(|r| steps.iter().map(|s| s[r]).collect()).collect()
}

/// `--suite sft --scaling MODE` on the tiny model (2 steps, 1 warm-up), then `extra`.
fn tiny_sft<'a>(mode: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--suite", "sft", "--scaling", mode, "--model", "tiny", "--steps", "2", "--warmup-steps", "1"];
    args.extend_from_slice(extra);
    args
}

fn run(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String, Value) {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let out = tempdir("scaling").join("s.h5");
    let mut all = args.to_vec();
    all.extend(["--out", out.to_str().unwrap()]);
    let r = mpirun(4, &all, env, LIMIT);
    (r.code, r.stdout, r.stderr, read_results(&out))
}

#[test]
fn weak_and_strong_tables_of_every_size_in_one_job() {
    let args = tiny_sft("both", &["--scaling-steps", "4", "--scaling-warmup-steps", "1"]);
    let (code, stdout, stderr, summary) = run(&args, &[]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("# scaling table") && stdout.contains("# phase scaling took "), "{stdout}");
    let s = &summary["scaling"];
    let p = &s["points"];
    assert_eq!(p["mode"], serde_json::json!(["weak", "weak", "weak", "strong", "strong", "strong"]));
    assert_eq!(p["ranks"], serde_json::json!([1, 2, 4, 1, 2, 4]));
    // tiny's defaults: micro-batch 4 × accumulation 2 per rank; the job's global batch is 32.
    assert_eq!(p["global_batch"], serde_json::json!([8, 16, 32, 32, 32, 32]));
    assert_eq!(p["grad_accum"], serde_json::json!([2, 2, 2, 8, 4, 2]));
    assert_eq!(p["sub_worlds"], serde_json::json!([4, 1, 1, 4, 1, 1]));
    let (warmup, seq) = (s["warmup_steps"].as_u64().unwrap() as usize, 64.0);
    let mut baseline = f64::NAN;
    let mut strong_loss: Option<Vec<f64>> = None;
    for i in 0..6 {
        let (mode, size) = (p["mode"][i].as_str().unwrap(), p["ranks"][i].as_u64().unwrap() as usize);
        let raw = &s["measured"][format!("{mode}_{size}")];
        let step_s = by_rank(&raw["rank_step_s"]);
        let ranks = if size == 1 { 4 } else { size };
        assert_eq!(step_s.len(), ranks, "{mode} {size}");
        assert_eq!(floats(&raw["job_ranks"]), (0..ranks).map(|r| r as f64).collect::<Vec<_>>());
        // tokens/s/GPU: per sub-world, tokens per GPU over the measured steps ÷ the sum of each
        // step's slowest rank's time; the median over the sub-worlds.
        let tokens = 4.0 * p["grad_accum"][i].as_f64().unwrap() * seq * (4 - warmup) as f64;
        let per_sub_world: Vec<f64> =
            step_s.chunks(size).map(|group| tokens / (warmup..4).map(|step| group.iter().map(|r| r[step]).fold(0.0, f64::max)).sum::<f64>()).collect();
        let tps = median(per_sub_world);
        let recorded = p["tokens_per_s_per_gpu"][i].as_f64().unwrap();
        assert!((recorded - tps).abs() <= 1e-9 * tps, "{mode} {size}: {recorded} vs {tps}");
        if size == 1 {
            baseline = tps;
        }
        let efficiency = p["efficiency"][i].as_f64().unwrap();
        assert!((efficiency - tps / baseline).abs() < 1e-9, "{mode} {size}: {efficiency}");
        assert_eq!(p["baseline_ranks"][i], 1);
        assert!(p["mfu"][i].is_null(), "no MFU on the CPU");
        // Every rank of a sub-world reports its mean loss; strong scaling trains the same
        // global batches at every size, so its loss curve is the same to rounding.
        let loss = by_rank(&raw["rank_loss"]);
        assert!(loss.iter().all(|r| r.len() == 4 && r.iter().all(|x| x.is_finite())));
        if mode == "strong" {
            let mine = loss[0].clone();
            for rank in &loss[..size] {
                assert_eq!(rank, &mine, "{mode} {size}: one sub-world, one loss");
            }
            let first = strong_loss.get_or_insert_with(|| mine.clone());
            for (a, b) in first.iter().zip(&mine) {
                assert!((a - b).abs() <= 1e-5 * a.abs(), "strong {size}: loss {b} vs size 1's {a}");
            }
        }
    }
    assert!(summary["run"]["phase_scaling_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn a_size_that_does_not_fit_is_skipped_with_its_reason() {
    // ZeRO-3 shards the model state, so four 1-GPU replicas on this host need more memory than
    // two or four ranks sharing one model: a limit between the two skips size 1 only.
    let model = LlamaConfig::load("tiny").unwrap().with_layers(8).unwrap();
    let run_config = RunConfig { zero: 3, micro_batch: 1, ..RunConfig::defaults_for("tiny") };
    let need = |ranks: usize, on_host: u64| on_host * host_bytes(&model, &run_config, ranks);
    let (replicas, shared) = (need(1, 4), need(2, 2).max(need(4, 4)));
    assert!(replicas > shared + (shared >> 3), "{replicas} vs {shared}: the test needs a gap");
    let limit_mib = (((replicas + shared) / 2) >> 20).to_string();
    let hook = format!("memory:{limit_mib}");
    let args = tiny_sft("weak", &["--layers", "8", "--zero", "3", "--micro-batch", "1", "--scaling-steps", "2", "--scaling-warmup-steps", "1"]);
    let (code, stdout, stderr, summary) = run(&args, &[("H200_MPIBENCH_FAULT", &hook)]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let p = &summary["scaling"]["points"];
    assert_eq!(p["ranks"], serde_json::json!([1, 2, 4]));
    let skipped = p["skipped"][0].as_str().unwrap();
    assert!(skipped.contains("of host memory per rank") && skipped.contains("for the 4 rank(s) on this host"), "{skipped}");
    assert!(stdout.contains(&format!("skipped: {skipped}")), "{stdout}");
    assert!(p["tokens_per_s_per_gpu"][0].is_null() && summary["scaling"]["measured"].get("weak_1").is_none());
    assert_eq!((p["skipped"][1].as_str(), p["skipped"][2].as_str()), (Some(""), Some("")));
    // The smallest size measured is the baseline.
    assert_eq!((p["baseline_ranks"][1].as_u64(), p["efficiency"][1].as_f64()), (Some(2), Some(1.0)));
}

#[test]
fn a_rank_killed_mid_scaling_ends_the_job_and_leaves_the_partial_file() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempdir("scaling-killed");
    let out = dir.join("k.h5");
    let args = tiny_sft("weak", &["--scaling-steps", "40", "--out", out.to_str().unwrap()]);
    let mut job = spawn(mpirun_command(4, &args), &[], None);
    // tiny at 4 ranks: each size's 40 steps take seconds on the CI host; killed as size 4 starts.
    assert!(job.wait_for_output("# scaling weak, 4 GPUs", LIMIT), "{}", job.stdout_so_far());
    let pid = pid_of_rank(out.to_str().unwrap(), 3).expect("the rank's pid");
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let r = job.wait(LIMIT);
    assert_ne!(r.code, Some(0), "{}", r.stdout);
    assert!(!out.exists(), "a killed run must not look complete");
    let summary = read_results(&dir.join("k.h5.partial"));
    assert!(summary["sft"]["summary_tokens_per_s"].as_f64().is_some(), "the sft phase before it is whole");
    assert_eq!(summary["scaling"]["points"]["ranks"], serde_json::json!([1, 2]), "the sizes that ended are kept");
    assert!(summary["scaling"]["measured"]["weak_2"]["rank_step_s"].as_array().unwrap().len() == 40);
}

#[test]
fn plan_calibrates_only_on_gpu_rates() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempdir("calibrate");
    let (sweep, sft) = (dir.join("sweep.h5"), dir.join("sft.h5"));
    let made = mpirun(2, &["--suite", "nccl", "-b", "1K", "-e", "4K", "--collectives", "all_reduce", "--out", sweep.to_str().unwrap()], &[], LIMIT);
    assert_eq!(made.code, Some(0), "{}", made.stderr);
    let made = mpirun(2, &["--suite", "sft", "--model", "tiny", "--steps", "2", "--warmup-steps", "1", "--out", sft.to_str().unwrap()], &[], LIMIT);
    assert_eq!(made.code, Some(0), "{}", made.stderr);
    // A sweep over MPI on host memory says nothing of GPU links: refused, naming why.
    let r = common::singleton(&["plan", "--model", "7b", "--ranks", "16", "--calibrate", sweep.to_str().unwrap()], LIMIT);
    assert_eq!(r.code, Some(2), "{}", r.stdout);
    assert!(
        r.stderr
            .contains("holds neither a finished GPU SFT run nor an NCCL all_reduce sweep of several ranks (its sweep ran over MPI on host memory, not NCCL)"),
        "{}",
        r.stderr
    );
    let r = common::singleton(&["plan", "--model", "7b", "--calibrate", sft.to_str().unwrap()], LIMIT);
    assert_eq!(r.code, Some(2));
    assert!(r.stderr.contains("/sft: a CPU run has no GPU rates"), "{}", r.stderr);
}

#[test]
fn scaling_sweep_measures_all_reduce_on_each_sub_world() {
    let args = tiny_sft("weak", &["--scaling-sweep", "--scaling-steps", "2", "--scaling-warmup-steps", "1"]);
    let (code, stdout, stderr, summary) = run(&args, &[]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("# scaling sweep on 2 ranks") && stdout.contains("# scaling sweep on 4 ranks"), "{stdout}");
    let p = &summary["scaling"]["points"];
    assert!(p["all_reduce_busbw_gbs"][0].is_null(), "size 1 has no link");
    // Each size's series in its own group, every element checked and right; the table's
    // figure is its out-of-place busbw at the largest size.
    let file = read_results_raw(&summary);
    for (i, size) in [(1, 2), (2, 4)] {
        let series = &file[&format!("sweep_{size}")];
        assert_eq!(series["ranks"], size);
        let rows = series["rows"].as_array().unwrap();
        assert!(rows.iter().all(|r| r["wrong"] == 0), "{rows:?}");
        let largest = rows.iter().filter(|r| r["in_place"] == false).max_by_key(|r| r["bytes"].as_u64()).unwrap();
        assert_eq!(largest["bytes"], 16 << 20);
        assert_eq!(p["all_reduce_busbw_gbs"][i].as_f64(), largest["busbw_gbs"].as_f64());
    }
}

/// The scaling sweeps' series by group name (`sweep_<size>`).
fn read_results_raw(summary: &Value) -> serde_json::Map<String, Value> {
    summary["scaling"]["sweeps"].as_object().cloned().unwrap_or_default()
}
