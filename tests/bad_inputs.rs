//! Bad input, on every run kind: each case ends with exit code 2 in under 5 s, every rank
//! prints the same one line naming the cause, nothing panics or aborts, and no results file
//! (nor a `.partial` one) is left behind.

mod common;

use common::{error_lines, mpirun_in, spawn, tempdir, BIN};
use std::path::Path;
use std::time::Duration;

struct Case {
    ranks: usize,
    args: Vec<String>,
    env: Vec<(&'static str, &'static str)>,
    /// A fragment of the one line every rank prints.
    cause: &'static str,
}

fn case(ranks: usize, args: &[&str], cause: &'static str) -> Case {
    Case { ranks, args: args.iter().map(|a| a.to_string()).collect(), env: Vec::new(), cause }
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path.display().to_string());
        }
    }
    out
}

#[test]
fn every_bad_input_is_one_line_on_every_rank_exit_2_and_no_file() {
    let inputs = tempdir("bad-inputs");
    let path = |name: &str| inputs.join(name).display().to_string();
    std::fs::write(inputs.join("broken.json"), "{\"dim\": 64,").unwrap();
    let heads = path("heads.json");
    std::fs::write(
        &heads,
        r#"{"name":"x","dim":64,"ffn_dim":128,"n_layers":1,"n_heads":6,"n_kv_heads":2,"vocab_size":32,"norm_eps":1e-5,"rope_theta":10000.0}"#,
    )
    .unwrap();
    let huge_vocab = path("huge-vocab.json");
    std::fs::write(
        &huge_vocab,
        r#"{"name":"v","dim":64,"ffn_dim":128,"n_layers":1,"n_heads":4,"n_kv_heads":2,"vocab_size":1152921504606846976,"norm_eps":1e-5,"rope_theta":10000.0}"#,
    )
    .unwrap();
    let tokens = path("tokens.bin");
    std::fs::write(&tokens, (0..1000u32).flat_map(|t| (t % 100).to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    let existing_dir = path("a-directory");
    std::fs::create_dir_all(&existing_dir).unwrap();
    let missing_dir = path("missing-dir/x.h5");

    let mut cases = vec![
        // --suite nccl: sizes, counts, lists, ranks, memory
        case(2, &["-b", "1M", "-e", "1K"], "is larger than maximum size"),
        case(2, &["-e", "-5"], "unexpected argument '-5'"),
        case(2, &["-b", "0"], "must be at least 1 byte"),
        case(2, &["-b", "lots"], "invalid size 'lots'"),
        case(2, &["-e", "99999G"], "of host memory per rank"),
        case(2, &["-b", "64G", "-e", "64G"], "of host memory per rank"),
        case(1, &["-e", "1024G", "-d", "double"], "of host memory per rank"),
        case(2, &["-n", "0"], "-n 0: must be 1 to"),
        case(2, &["-n", "1000000000000"], "-n 1000000000000: must be 1 to 1000000"),
        case(2, &["-w", "2000000"], "-w 2000000"),
        case(2, &["-c", "9999999"], "-c 9999999"),
        case(3, &["-n", "1000000", "-e", "1G"], "per-launch times"),
        case(2, &["-G", "5", "-e", "1K"], "-G (CUDA graphs) needs the NCCL engine"),
        case(2, &["-G", "2000000"], "-G 2000000"),
        case(2, &["-b", "1", "-e", "1G", "-i", "1"], "are more than 10000"),
        case(2, &["-f", "1"], "step factor -f 1"),
        case(2, &["-i", "0"], "invalid size '0'"),
        case(2, &["-d", "float128"], "float128"),
        case(2, &["-o", "xor"], "xor"),
        case(2, &["--collectives", "gather"], "gather"),
        case(2, &["-a", "7"], "-a 7"),
        case(3, &["-r", "7"], "-r 7 is not a rank"),
        case(2, &["--timeout", "0"], "--timeout 0"),
        case(2, &["--backend", "nccl"], "--backend nccl"),
        case(2, &["--suite", "nccl", "--zero", "9", "--lr=-1"], "is a flag of --suite sft"),
        case(2, &["--suite", "nccl", "--micro-batch", "4"], "--micro-batch is a flag of --suite sft"),
        case(2, &["--frobnicate"], "unexpected argument '--frobnicate'"),
        case(2, &["--out", &existing_dir], "is a directory"),
        case(2, &["--out", &missing_dir], "cannot write the results file"),
        case(2, &["--out", &tokens], "exists: choose another name, or add --overwrite"),
        Case { env: vec![("H200_MPIBENCH_FAULT", "corrupt:5")], ..case(2, &["-e", "1K"], "rank 5 does not exist") },
        Case { env: vec![("H200_MPIBENCH_FAULT", "explode:1")], ..case(2, &["-e", "1K"], "expected corrupt:RANK") },
        // --suite sft on the CPU path
        case(2, &["--suite", "sft", "-d", "float128"], "-d/--datatype is a flag of --suite nccl, not of --suite sft"),
        case(2, &["--suite", "sft", "--seq", "4"], "needs at least 9 tokens"),
        case(2, &["--suite", "sft", "--seq", "0"], "--seq must be at least 1"),
        case(2, &["--suite", "sft", "--timeout", "0"], "--timeout 0"),
        case(2, &["--suite", "sft", "--telemetry-ms", "5"], "--telemetry-ms 5: 0 (off) or 10 to 60000"),
        case(2, &["--telemetry-ms", "100000"], "--telemetry-ms 100000"),
        case(2, &["--suite", "sft", "--straggler-pct", "0"], "--straggler-pct 0: more than 0"),
        case(2, &["plan", "--straggler-pct", "10"], "--straggler-pct does not apply to plan"),
        case(2, &["--suite", "sft", "--micro-batch", "100000"], "of host memory per rank"),
        case(2, &["--suite", "sft", "--micro-batch", "100000", "--seq", "1000"], "tokens per micro-batch"),
        case(2, &["--suite", "sft", "--layers", "1000000000"], "--layers 1000000000: must be 1 to 1024"),
        case(2, &["--suite", "sft", "--layers", "0"], "--layers 0"),
        case(2, &["--suite", "sft", "--zero", "4"], "the ZeRO stages are 0, 1, 2 and 3"),
        case(2, &["--suite", "sft", "--lr=-1"], "must be positive"),
        case(2, &["--suite", "sft", "--steps", "3", "--warmup-steps", "3"], "leaves no measured step"),
        case(2, &["--suite", "sft", "--grad-accum", "1000000"], "--grad-accum 1000000"),
        case(2, &["--suite", "sft", "--bucket-layers", "5"], "--bucket-layers 5: the model has 2 layers"),
        case(2, &["--suite", "sft", "--backend", "nccl"], "--backend nccl"),
        case(2, &["--model", "70b"], "of host memory per rank"),
        case(1, &["--suite", "sft", "--model", &path("broken.json")], "invalid model JSON"),
        case(1, &["--suite", "sft", "--model", &heads], "does not divide"),
        case(2, &["--suite", "sft", "--model", &huge_vocab], "vocab_size 1152921504606846976 is larger than"),
        case(2, &["--suite", "sft", "--model", "/no/such.json"], "not a readable file"),
        case(2, &["--suite", "sft", "--data", "/no/such/tokens.bin"], "cannot read"),
        case(2, &["--suite", "sft", "--data", &tokens, "--out", &tokens, "--overwrite"], "is this run's input"),
        // plan
        case(2, &["plan", "--ranks", "0"], "plan --ranks 0"),
        case(2, &["plan", "--ranks", "2305843009213693952"], "must be 1 to 1048576"),
        case(2, &["plan", "--ranks", "18446744073709551615"], "must be 1 to 1048576"),
        case(2, &["plan", "--gpu-memory", "nan"], "plan --gpu-memory NaN"),
        case(2, &["plan", "--gpu-memory=-1"], "plan --gpu-memory -1"),
        case(2, &["plan", "--gpu-memory", "inf"], "plan --gpu-memory inf"),
        case(2, &["plan", "--zero", "4"], "plan --zero must be"),
        case(2, &["plan", "--model", "7b", "--layers", "1000000000"], "--layers 1000000000"),
        case(2, &["plan", "--lr", "1"], "plan does not use it"),
        case(2, &["plan", "--out", "x.h5"], "writes no results file"),
        case(2, &["-n", "5", "plan"], "-n/--iters is a flag of --suite nccl, not of plan"),
        case(2, &["plan", "-n", "5"], "unexpected argument '-n'"),
        // the binary alone
        case(0, &["-n", "0"], "-n 0: must be 1 to"),
        case(0, &["--suite", "sft", "--seq", "4"], "needs at least 9 tokens"),
        case(0, &["--out", &tokens], "exists: choose another name"),
        case(0, &["--suite", "sft", "--data", "/dev/zero"], "not a regular file"),
        case(0, &["--timeout", "5", "plan"], "--timeout does not apply to plan"),
        // selftest (no GPU here)
        case(2, &["selftest"], "selftest checks GPU kernels"),
        case(2, &["-d", "half", "selftest"], "-d/--datatype is a flag of --suite nccl, not of selftest"),
        case(2, &["selftest", "--zero", "1"], "flag of --suite sft (and plan), not of selftest"),
        case(2, &["selftest", "--telemetry-ms", "50"], "--telemetry-ms does not apply to selftest"),
        // op (no GPU here, so a shape that passes its checks ends at the GPU's absence)
        case(2, &["op", "attention"], "op times GPU kernels"),
        case(2, &["op"], "required arguments were not provided: <OPS>"),
        case(2, &["op", "fft"], "invalid value 'fft'"),
        case(2, &["op", "attention", "--head-dim", "96"], "--head-dim 96: the attention kernels take [16, 32, 64, 128]"),
        case(2, &["op", "attention", "--kv-heads", "0"], "--kv-heads 0: must divide --heads 32"),
        case(2, &["op", "attention", "--seq", "99999999"], "--seq 99999999: must be 1 to 1048576"),
        case(2, &["op", "adamw", "--elements", "99999999999999"], "--elements 99999999999999: must be 1 to"),
        case(2, &["op", "copy", "--seq", "64"], "--seq is a flag of op attention"),
        case(2, &["op", "copy", "--out", "x.h5"], "--out: op prints its table and writes no results file"),
        case(2, &["op", "adamw", "--timeout", "5"], "--timeout does not apply to op"),
        // verify
        case(2, &["verify", "--burn-s", "5"], "--burn-s: the burn-in runs with --level long"),
        case(2, &["verify", "--level", "long", "--burn-s", "0"], "--burn-s 0: 1 to 86400"),
        case(2, &["verify", "--level", "forever"], "invalid value 'forever'"),
        case(2, &["verify", "--tolerance-pct", "0"], "--tolerance-pct 0: more than 0"),
        case(2, &["verify", "--link-tolerance-pct", "nan"], "--link-tolerance-pct NaN"),
        case(2, &["verify", "--reference", "/no/such.json"], "--reference /no/such.json"),
        case(2, &["verify", "--reference", &path("broken.json")], "reference table"),
        case(2, &["verify", "--model", "7b"], "is a flag of --suite sft (and plan), not of verify"),
        case(2, &["-n", "5", "verify"], "-n/--iters is a flag of --suite nccl, not of verify"),
        case(2, &["verify", "--straggler-pct", "9"], "--straggler-pct does not apply to verify"),
        case(2, &["verify", "--backend", "nccl"], "--backend nccl"),
        Case { env: vec![("H200_MPIBENCH_FAULT", "slowprobe:2")], ..case(2, &["verify"], "rank 2 does not exist") },
        // suites
        case(2, &["--suite", "nccl,scaling"], "scaling runs after sft: --suite sft --scaling weak|strong|both"),
        case(2, &["--suite", "sft", "--keep-going"], "--keep-going lets the benchmarks after a failed verify run"),
        case(
            2,
            &["--suite", "nccl", "--scaling", "weak"],
            "--scaling is a flag of the scaling phase (--suite sft --scaling weak|strong|both, or --suite full), not of --suite nccl",
        ),
        case(2, &["--suite", "sft", "--scaling-steps", "5"], "--scaling-steps is a flag of the scaling phase"),
        case(2, &["--suite", "sft", "--scaling", "both", "--scaling-steps", "0"], "--scaling-steps 0: 1 to 100000"),
        case(
            2,
            &["--suite", "full", "--scaling-steps", "3", "--scaling-warmup-steps", "3"],
            "--scaling-warmup-steps 3 leaves no measured step of --scaling-steps 3",
        ),
        case(2, &["plan", "--scaling", "weak"], "--scaling is a flag of the scaling phase"),
        case(2, &["--suite", "full", "verify"], "give either `verify` or --suite"),
        case(2, &["--suite", "nccl,sft", "--burn-s", "5"], "--burn-s is a flag of verify, not of --suite nccl,sft"),
        case(2, &["--suite", "full", "-e", "99999G"], "of host memory per rank"),
    ];
    assert!(cases.len() >= 40);
    let tokens_before = std::fs::read(&tokens).unwrap();
    let (mut table, mut failures) = (String::new(), Vec::new());
    for c in cases.drain(..) {
        let dir = tempdir("bad-case");
        let args: Vec<&str> = c.args.iter().map(String::as_str).collect();
        // 0 ranks: the binary started alone, without mpirun (an MPI singleton of one rank).
        let r = match c.ranks {
            0 => {
                let mut alone = std::process::Command::new(BIN);
                alone.args(&args);
                spawn(alone, &c.env, Some(&dir)).wait(Duration::from_secs(30))
            }
            n => mpirun_in(&dir, n, &args, &c.env, Duration::from_secs(30)),
        };
        let ranks = c.ranks.max(1);
        let what = format!("{args:?} {:?} on {}", c.env, if c.ranks == 0 { "one rank without mpirun".to_string() } else { format!("{ranks} rank(s)") });
        let lines = error_lines(&r.stderr);
        table += &format!("{:>5} {:>6.2} s  {what}: {}\n", format!("{:?}", r.code), r.elapsed.as_secs_f64(), lines.first().unwrap_or(&""));
        let left = files_under(&dir);
        let checks = [
            (r.code == Some(2), "exit code 2"),
            (r.elapsed < Duration::from_secs(5), "under 5 s"),
            (lines.len() == ranks, "one line per rank"),
            (lines.iter().all(|l| *l == lines[0]), "the same line on every rank"),
            (lines.first().is_some_and(|l| l.contains(c.cause)), "the cause named"),
            (!r.stderr.contains("panicked") && !r.stderr.contains("MPI_ABORT"), "no panic or abort"),
            (left.is_empty(), "no file left"),
        ];
        for (ok, rule) in checks {
            if !ok {
                failures.push(format!("{what}: not {rule} (want {:?}; left {left:?})\n{}{}", c.cause, r.stdout, r.stderr));
            }
        }
    }
    println!("exit  time  case: the line every rank printed\n{table}");
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
    assert_eq!(std::fs::read(&tokens).unwrap(), tokens_before, "an input was touched");
    assert!(!Path::new(&missing_dir).exists() && files_under(Path::new(&existing_dir)).is_empty());
}
