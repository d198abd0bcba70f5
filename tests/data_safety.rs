//! Nothing a user has is lost: an existing file is never replaced without --overwrite, runs
//! started together get files of their own, and a run cut short (a killed rank, SIGINT or
//! SIGTERM) keeps every step it finished in its `.partial` file; unchecked rows say so.

mod common;

use common::{mpirun, mpirun_command, pid_of_rank, read_results, singleton, spawn, tempdir, BIN};
use std::process::Command;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(120);

#[test]
fn an_existing_out_is_refused_unless_overwrite_is_given() {
    let dir = tempdir("existing");
    let out = dir.join("x.h5");
    std::fs::write(&out, b"a user's file").unwrap();
    let args = ["-b", "1K", "-e", "4K", "-n", "2", "-w", "1", "--out", out.to_str().unwrap()];
    let r = mpirun(2, &args, &[], LIMIT);
    assert_eq!(r.code, Some(2), "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("exists: choose another name, or add --overwrite"), "{}", r.stderr);
    assert_eq!(std::fs::read(&out).unwrap(), b"a user's file");
    assert!(!dir.join("x.h5.partial").exists());
    let mut replace = args.to_vec();
    replace.push("--overwrite");
    // --overwrite replaces the finished file, never a .partial (a run writing it, or the only
    // results of one that died).
    let partial = dir.join("x.h5.partial");
    std::fs::write(&partial, b"a dead run's results").unwrap();
    let r = mpirun(2, &replace, &[], LIMIT);
    assert_eq!(r.code, Some(2), "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("x.h5.partial exists"), "{}", r.stderr);
    assert_eq!(std::fs::read(&partial).unwrap(), b"a dead run's results");
    std::fs::remove_file(&partial).unwrap();
    let r = mpirun(2, &replace, &[], LIMIT);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert_eq!(read_results(&out)["run"]["exit_code"], 0);
}

#[test]
fn runs_started_in_the_same_second_keep_a_file_each() {
    let dir = tempdir("same-second");
    let runs: Vec<_> = (0..3)
        .map(|_| {
            let mut cmd = Command::new(BIN);
            cmd.args(["-b", "1K", "-e", "16K", "-n", "2", "-w", "1"]);
            spawn(cmd, &[], Some(&dir))
        })
        .collect();
    for run in runs {
        let r = run.wait(LIMIT);
        assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    }
    let files: Vec<_> = std::fs::read_dir(dir.join("results")).unwrap().flatten().map(|e| e.path()).collect();
    assert_eq!(files.len(), 3, "{files:?}");
    for f in &files {
        let name = f.file_name().unwrap().to_str().unwrap();
        assert!(name.ends_with(".h5") && name.contains("_nccl_pid"), "{name}");
        assert_eq!(read_results(f)["run"]["exit_code"], 0);
    }
}

/// The /sft/step column of a (partial) results file.
fn steps_in(file: &std::path::Path) -> Vec<u64> {
    read_results(file)["sft"]["step"].as_array().unwrap().iter().map(|s| s.as_u64().unwrap()).collect()
}

fn long_sft(out: &std::path::Path) -> Vec<String> {
    ["--suite", "sft", "--model", "tiny", "--steps", "100000", "--out", out.to_str().unwrap()].map(String::from).to_vec()
}

/// A 2-rank SFT run whose rank `victim` is killed outright after step 25 is printed: the
/// steps in its `.partial` file.
fn steps_after_killing_rank(victim: usize) -> Vec<u64> {
    let dir = tempdir("killed-sft");
    let out = dir.join("k.h5");
    let args = long_sft(&out);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut job = spawn(mpirun_command(2, &args), &[], None);
    assert!(job.wait_for_output("step   25/", LIMIT), "{}", job.stdout_so_far());
    let pid = pid_of_rank(out.to_str().unwrap(), victim).expect("the rank's pid");
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let r = job.wait(LIMIT);
    assert_ne!(r.code, Some(0), "{}", r.stdout);
    assert!(!out.exists(), "a killed run must not look complete");
    let partial = dir.join("k.h5.partial");
    assert!(read_results(&partial)["sft"].get("summary_tokens_per_s").is_none());
    let steps = steps_in(&partial);
    assert_eq!(steps, (1..=steps.len() as u64).collect::<Vec<_>>());
    steps
}

#[test]
fn a_killed_sft_run_keeps_its_finished_steps() {
    // Rank 0 itself killed: nothing runs after, so the 10-step flushes are what is kept.
    let steps = steps_after_killing_rank(0);
    assert!((20..=30).contains(&steps.len()), "{steps:?}");
    // Another rank killed: mpirun's SIGTERM lets rank 0 write every step it finished.
    assert!(steps_after_killing_rank(1).len() >= 25);
}

#[test]
fn sigint_and_sigterm_end_the_run_with_one_line_and_keep_every_printed_step() {
    for (signal, name) in [(libc::SIGINT, "SIGINT"), (libc::SIGTERM, "SIGTERM")] {
        let dir = tempdir("signal");
        let out = dir.join("s.h5");
        let args = long_sft(&out);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut job = spawn(mpirun_command(2, &args), &[], None);
        assert!(job.wait_for_output("step   15/", LIMIT), "{}", job.stdout_so_far());
        let sent = Instant::now();
        unsafe { libc::kill(job.child.id() as i32, signal) };
        let r = job.wait(LIMIT);
        assert!(sent.elapsed() < Duration::from_secs(5), "{name}: took {:?}", sent.elapsed());
        // Open MPI's mpirun reports 1 for a job it ends on a signal, whatever the ranks exit with.
        assert_ne!(r.code, Some(0), "{name}: {}", r.stdout);
        let lines: Vec<&str> = r.stderr.lines().filter(|l| l.starts_with("h200-mpibench: interrupted by")).collect();
        assert_eq!(lines.len(), 1, "{name}: one line from rank 0:\n{}", r.stderr);
        assert!(lines[0].contains("during sft step") && lines[0].contains("rank 0/2") && lines[0].contains("s.h5.partial"), "{}", lines[0]);
        let printed = r.stdout.lines().filter(|l| l.starts_with("step ")).count();
        let steps = steps_in(&dir.join("s.h5.partial"));
        assert!(steps.len() >= printed, "{name}: {printed} steps printed, {} kept", steps.len());
        assert_eq!(steps, (1..=steps.len() as u64).collect::<Vec<_>>());
        assert!(!out.exists());
    }
}

#[test]
fn an_interrupted_singleton_exits_with_its_own_code() {
    let dir = tempdir("singleton-signal");
    let out = dir.join("s.h5");
    let args = long_sft(&out);
    let mut cmd = Command::new(BIN);
    cmd.args(&args);
    let mut job = spawn(cmd, &[], None);
    assert!(job.wait_for_output("step   12/", LIMIT), "{}", job.stdout_so_far());
    unsafe { libc::kill(job.child.id() as i32, libc::SIGINT) };
    let r = job.wait(LIMIT);
    assert_eq!(r.code, Some(4), "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("interrupted by SIGINT during sft step"), "{}", r.stderr);
    assert!(steps_in(&dir.join("s.h5.partial")).len() >= 12);
}

#[test]
fn unchecked_rows_say_so_even_with_a_corrupting_fault() {
    let dir = tempdir("unchecked");
    let out = dir.join("c0.h5");
    let args = ["-b", "1K", "-e", "16K", "-f", "4", "-c", "0", "--collectives", "all_reduce,all_gather", "--out", out.to_str().unwrap()];
    let r = mpirun(2, &args, &[("H200_MPIBENCH_FAULT", "corrupt:1")], LIMIT);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("# Wrong elements     : N/A (not checked: -c 0)"), "{}", r.stdout);
    let rows: Vec<&str> = r.stdout.lines().filter(|l| l.trim_start().starts_with("1024 ")).collect();
    assert!(!rows.is_empty() && rows.iter().all(|l| l.matches("N/A").count() == 2), "{rows:?}");
    for s in read_results(&out)["series"].as_array().unwrap() {
        for row in s["rows"].as_array().unwrap() {
            assert_eq!(row["wrong"], -1, "{s}");
        }
    }
    let r = singleton(&["-b", "1K", "-e", "1K", "-c", "1", "--out", dir.join("c1.h5").to_str().unwrap()], LIMIT);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("# Wrong elements     : 0 OK"), "{}", r.stdout);
}
