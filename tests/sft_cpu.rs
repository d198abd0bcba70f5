//! `--suite sft` on the CPU path: a tiny-model run whose loss falls and whose steps land in
//! the results file, and the same loss curve at every ZeRO stage and rank count (bad inputs:
//! bad_inputs.rs).

mod common;

use common::{mpirun, read_results, singleton, tempdir};
use std::time::Duration;

#[test]
fn tiny_sft_trains_and_records_every_step() {
    let dir = tempdir("sft");
    let out = dir.join("sft.h5");
    let r = singleton(&["--suite", "sft", "--model", "tiny", "--steps", "40", "--out", out.to_str().unwrap()], Duration::from_secs(120));
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("step   40/40"), "{}", r.stdout);
    let summary = read_results(&out);
    let sft = &summary["sft"];
    let loss = sft["loss"].as_array().unwrap();
    assert_eq!(loss.len(), 40);
    // Synthetic SFT samples leave their prompt out of the loss: fewer loss tokens than tokens.
    let (tokens, loss_tokens) = (sft["tokens"][0].as_u64().unwrap(), sft["loss_tokens"][0].as_u64().unwrap());
    assert!(loss_tokens > 0 && loss_tokens < tokens, "{loss_tokens} of {tokens}");
    let (first, last) = (loss[0].as_f64().unwrap(), loss[39].as_f64().unwrap());
    assert!(last < 0.7 * first, "loss {first} -> {last}");
    assert_eq!(sft["engine"], "cpu");
    assert_eq!(summary["run"]["exit_code"], 0);
    assert!(summary["run"]["end_utc"].is_string());
    assert!(sft["summary_tokens_per_s"].as_f64().unwrap() > 0.0);
}

/// The loss curve of a tiny-model run on `ranks` ranks with `extra` flags.
fn losses(ranks: usize, extra: &[&str]) -> Vec<f64> {
    let dir = tempdir("losses");
    let out = dir.join("run.h5");
    let mut args = vec!["--suite", "sft", "--model", "tiny", "--backend", "cpu", "--steps", "8", "--out", out.to_str().unwrap()];
    args.extend(extra);
    let r = mpirun(ranks, &args, &[], Duration::from_secs(120));
    assert_eq!(r.code, Some(0), "{args:?}: {}{}", r.stdout, r.stderr);
    read_results(&out)["sft"]["loss"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()
}

/// Recompute redoes each layer's forward in its backward from the layer's input: the same
/// arithmetic in the same order, so the same losses to the bit, at every stage.
#[test]
fn recompute_on_the_cpu_path_changes_no_loss() {
    for zero in ["0", "3"] {
        let without = losses(2, &["--zero", zero]);
        assert_eq!(losses(2, &["--zero", zero, "--recompute"]), without, "ZeRO-{zero}");
    }
}

/// The loss curve of a data-parallel run over `ranks` ranks at ZeRO `stage` with a global
/// batch of 8 sequences in `accum` micro-batches per rank, `bucket` layers per bucket.
fn data_parallel_losses(ranks: usize, stage: u8, accum: usize, bucket: usize) -> Vec<f64> {
    let dir = tempdir("dp");
    let out = dir.join("dp.h5");
    let (micro, zero, accum, bucket) = ((8 / ranks / accum).to_string(), stage.to_string(), accum.to_string(), bucket.to_string());
    let args = [
        "--suite",
        "sft",
        "--model",
        "tiny",
        "--steps",
        "12",
        "--micro-batch",
        &micro,
        "--grad-accum",
        &accum,
        "--zero",
        &zero,
        "--bucket-layers",
        &bucket,
        "--out",
        out.to_str().unwrap(),
    ];
    let r = mpirun(ranks, &args, &[], Duration::from_secs(120));
    assert_eq!(r.code, Some(0), "{ranks} ranks: {}{}", r.stdout, r.stderr);
    read_results(&out)["sft"]["loss"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()
}

#[test]
fn every_zero_stage_at_1_2_and_4_ranks_matches_one_rank_with_the_same_global_batch() {
    let one = data_parallel_losses(1, 0, 1, 1);
    assert!(one[11] < one[0], "the loss falls: {one:?}");
    let one_layer_buckets = (0..=3).flat_map(|stage| [1, 2, 4].into_iter().flat_map(move |ranks| [1, 2].map(|accum| (stage, ranks, accum, 1))));
    // Both of the tiny model's layers in one bucket.
    let two_layer_buckets = (1..=3).flat_map(|stage| [1, 2].map(|accum| (stage, 2, accum, 2)));
    for (stage, ranks, accum, bucket) in one_layer_buckets.chain(two_layer_buckets) {
        if (stage, ranks, accum, bucket) == (0, 1, 1, 1) {
            continue;
        }
        let many = data_parallel_losses(ranks, stage, accum, bucket);
        assert_eq!(many.len(), one.len());
        for (step, (a, b)) in one.iter().zip(&many).enumerate() {
            let what = format!("stage {stage}, {ranks} ranks, accumulation {accum}, {bucket}-layer buckets, step {}", step + 1);
            assert!((a - b).abs() <= 1e-5 * a.abs(), "{what}: {b} vs one rank's {a}");
        }
    }
}
