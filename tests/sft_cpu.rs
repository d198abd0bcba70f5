//! `--suite sft` on the CPU path: a tiny-model run whose loss falls and whose steps land in
//! the results file, and its bad inputs.

mod common;

use common::{error_lines, mpirun, read_results, singleton, tempdir};
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
    let (first, last) = (loss[0].as_f64().unwrap(), loss[39].as_f64().unwrap());
    assert!(last < 0.7 * first, "loss {first} -> {last}");
    assert_eq!(sft["engine"], "cpu");
    assert!(sft["summary_tokens_per_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn sft_bad_inputs_are_one_line_errors() {
    let dir = tempdir("sft-bad");
    let broken = dir.join("broken.json");
    std::fs::write(&broken, "{\"dim\": 64,").unwrap();
    let heads = dir.join("heads.json");
    std::fs::write(&heads, r#"{"name":"x","dim":64,"ffn_dim":128,"n_layers":1,"n_heads":6,"n_kv_heads":2,"vocab_size":32,"norm_eps":1e-5,"rope_theta":10000.0}"#).unwrap();
    for args in [
        vec!["--suite", "sft", "--model", broken.to_str().unwrap()],
        vec!["--suite", "sft", "--model", heads.to_str().unwrap()],
        vec!["--suite", "sft", "--seq", "0"],
        vec!["--suite", "sft", "--backend", "nccl"],
        vec!["--suite", "sft", "--zero", "4"],
        vec!["--model", "70b"], // --model means sft; 70B's state does not fit a CPU host
    ] {
        let r = singleton(&args, Duration::from_secs(30));
        assert_eq!(r.code, Some(2), "{args:?}: {}{}", r.stdout, r.stderr);
        assert_eq!(error_lines(&r.stderr).len(), 1, "{args:?}: {}", r.stderr);
    }
    let r = mpirun(2, &["--suite", "sft", "--recompute"], &[], Duration::from_secs(30));
    assert_eq!(r.code, Some(2));
    assert_eq!(error_lines(&r.stderr).len(), 2, "{}", r.stderr);
}

/// The loss curve of a data-parallel run over `ranks` ranks at ZeRO `stage` with a global
/// batch of 8 sequences in `accum` micro-batches per rank.
fn data_parallel_losses(ranks: usize, stage: u8, accum: usize) -> Vec<f64> {
    let dir = tempdir("dp");
    let out = dir.join("dp.h5");
    let (micro, zero, accum) = ((8 / ranks / accum).to_string(), stage.to_string(), accum.to_string());
    let args = ["--suite", "sft", "--model", "tiny", "--steps", "12", "--micro-batch", &micro, "--grad-accum", &accum, "--zero", &zero, "--out", out.to_str().unwrap()];
    let r = mpirun(ranks, &args, &[], Duration::from_secs(120));
    assert_eq!(r.code, Some(0), "{ranks} ranks: {}{}", r.stdout, r.stderr);
    read_results(&out)["sft"]["loss"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()
}

#[test]
fn every_zero_stage_at_1_2_and_4_ranks_matches_one_rank_with_the_same_global_batch() {
    let one = data_parallel_losses(1, 0, 1);
    assert!(one[11] < one[0], "the loss falls: {one:?}");
    for stage in 0..=3 {
        for ranks in [1, 2, 4] {
            for accum in [1, 2] {
                if (stage, ranks, accum) == (0, 1, 1) {
                    continue;
                }
                let many = data_parallel_losses(ranks, stage, accum);
                assert_eq!(many.len(), one.len());
                for (step, (a, b)) in one.iter().zip(&many).enumerate() {
                    let what = format!("stage {stage}, {ranks} ranks, accumulation {accum}, step {}", step + 1);
                    assert!((a - b).abs() <= 1e-5 * a.abs(), "{what}: {b} vs one rank's {a}");
                }
            }
        }
    }
}
