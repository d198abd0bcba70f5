//! The cluster job scripts as a user runs them: scripts/launch_hostfile.sh with Open MPI
//! hostfiles, and scripts/slurm.sbatch submitted to a real one-host Slurm (slurmctld, slurmd and
//! munged started by scripts/slurm_local.sh for the test and stopped after it; it installs
//! Debian's slurm-wlm, munge and the PMIx plugin where they are missing, so it runs as root).

mod common;

use common::{read_results, tempdir};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `program args` in `dir` with extra environment; its exit code, stdout and stderr.
fn run_in(dir: &Path, program: &str, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(program);
    cmd.args(args).current_dir(dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let Output { status, stdout, stderr } = cmd.output().unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    (status.code(), String::from_utf8_lossy(&stdout).into_owned(), String::from_utf8_lossy(&stderr).into_owned())
}

fn sweep_args(out: &Path) -> Vec<String> {
    ["--backend", "mpi", "-b", "1K", "-e", "64K", "-n", "2", "-w", "1", "--out", out.to_str().unwrap()].map(String::from).to_vec()
}

#[test]
fn launch_hostfile_takes_open_mpi_hostfiles_from_where_the_user_stands() {
    let dir = tempdir("hostfile");
    let script = repo().join("scripts/launch_hostfile.sh");
    let script = script.to_str().unwrap();
    std::fs::write(dir.join("slots"), "# one host, two slots\nlocalhost slots=2\n").unwrap();
    std::fs::write(dir.join("twice"), "localhost\nlocalhost\n").unwrap();
    std::fs::write(dir.join("empty"), "# nothing here\n\n").unwrap();
    std::fs::write(dir.join("malformed"), "localhost slots=two\n").unwrap();
    std::fs::write(dir.join("too-few"), "localhost slots=1\n").unwrap();
    // The hostfile path is relative to where the user stands, not to the repository.
    for (hostfile, out) in [("slots", "a.h5"), ("twice", "b.h5")] {
        let out = dir.join(out);
        let mut args = vec![hostfile.to_string(), "2".to_string()];
        args.extend(sweep_args(&out));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, stdout, stderr) = run_in(&dir, script, &args, &[]);
        assert_eq!(code, Some(0), "{hostfile}: {stdout}{stderr}");
        assert!(stdout.starts_with("+ mpirun --hostfile ") && stdout.contains(" -np 2 "), "{hostfile}: the command first: {stdout}");
        assert_eq!(read_results(&out)["run"]["world_size"], 2, "{hostfile}: one host, two ranks");
    }
    let cases: [(&[&str], &str); 6] = [
        (&["empty", "2"], "names no host"),
        (&["malformed", "2"], "line 1: 'slots=two' is not slots=N"),
        (&["too-few", "2"], "localhost has slots=1, fewer than GPUS_PER_HOST 2"),
        (&["slots"], "usage: "),
        (&["slots", "two"], "GPUS_PER_HOST 'two'"),
        (&["no-such-file", "2"], "hostfile 'no-such-file': no such file"),
    ];
    for (args, cause) in cases {
        let (code, stdout, stderr) = run_in(&dir, script, args, &[]);
        assert_eq!(code, Some(2), "{args:?}: {stdout}{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: one line: {stderr}");
        assert!(stderr.starts_with("launch_hostfile.sh: error: ") && stderr.contains(cause), "{args:?}: {stderr}");
    }
}

/// Stops the test's Slurm whatever happens to the test.
struct Slurm;

impl Slurm {
    fn start() -> Slurm {
        let (code, stdout, stderr) = run_in(&repo(), "bash", &["scripts/slurm_local.sh", "start"], &[]);
        assert_eq!(code, Some(0), "Slurm did not start: {stdout}{stderr}");
        Slurm
    }
}

impl Drop for Slurm {
    fn drop(&mut self) {
        let _ = run_in(&repo(), "bash", &["scripts/slurm_local.sh", "stop"], &[]);
    }
}

/// `sbatch --wait ARGS` in `dir`: the job's exit code, and what sbatch printed.
fn sbatch(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut all = vec!["--wait"];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = run_in(dir, "sbatch", &all, env);
    (code, format!("{stdout}{stderr}"))
}

/// The job id in sbatch's "Submitted batch job N".
fn job_id(printed: &str) -> String {
    printed.split_whitespace().skip_while(|w| *w != "job").nth(1).unwrap_or_else(|| panic!("no job id in {printed:?}")).to_string()
}

/// The .h5 files under dir/results.
fn results_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("results")).map_or(Vec::new(), |d| d.flatten().map(|e| e.path()).collect());
    files.sort();
    files
}

#[test]
fn slurm_sbatch_runs_sweeps_sft_and_arrays_from_any_directory() {
    let _slurm = Slurm::start();
    let script = repo().join("scripts/slurm.sbatch");
    let script = script.to_str().unwrap();
    let sweep = ["--suite", "nccl", "-b", "1K", "-e", "64K", "-n", "2", "-w", "1"];

    // A CPU sweep at 2 tasks, submitted from another directory: the log and the results land there.
    let elsewhere = tempdir("sbatch-sweep");
    let mut args = vec!["--ntasks=2", script];
    args.extend_from_slice(&sweep);
    let (code, printed) = sbatch(&elsewhere, &args, &[]);
    assert_eq!(code, Some(0), "{printed}");
    let id = job_id(&printed);
    let log = std::fs::read_to_string(elsewhere.join(format!("h200-mpibench-{id}.out"))).expect("the job log in the submit directory");
    assert!(log.contains("+ srun --mpi=pmix") && log.contains("--ntasks=2"), "the command is printed first: {log}");
    let files = results_in(&elsewhere);
    assert_eq!(files.len(), 1, "{files:?}\n{log}");
    assert!(files[0].file_name().unwrap().to_str().unwrap().contains(&format!("_nccl_job{id}_pid")), "{files:?}");
    let summary = read_results(&files[0]);
    assert_eq!((summary["run"]["world_size"].as_u64(), summary["run"]["exit_code"].as_i64()), (Some(2), Some(0)));

    // A tiny SFT at 2 tasks, submitted from the repository root as the README writes it.
    let sft_dir = tempdir("sbatch-sft");
    let (out, log) = (sft_dir.join("sft.h5"), sft_dir.join("%j.out"));
    let output = format!("--output={}", log.display());
    let args = ["--ntasks=2", &output, "scripts/slurm.sbatch", "--suite", "sft", "--model", "tiny", "--steps", "6", "--out", out.to_str().unwrap()];
    let (code, printed) = sbatch(&repo(), &args, &[]);
    assert_eq!(code, Some(0), "{printed}");
    let sft = read_results(&out);
    assert_eq!(sft["sft"]["step"].as_array().map(Vec::len), Some(6));
    assert_eq!(sft["run"]["world_size"], 2);

    // A 2-task job array: two files, each named by its array task.
    let array_dir = tempdir("sbatch-array");
    let mut args = vec!["--array=0-1", "--ntasks=2", script];
    args.extend_from_slice(&sweep);
    let (code, printed) = sbatch(&array_dir, &args, &[]);
    assert_eq!(code, Some(0), "{printed}");
    let id = job_id(&printed);
    let names: Vec<String> = results_in(&array_dir).iter().map(|f| f.file_name().unwrap().to_str().unwrap().to_string()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    for task in ["0", "1"] {
        assert!(names.iter().any(|n| n.contains(&format!("_job{id}_{task}_pid"))), "task {task}: {names:?}");
    }
    for f in results_in(&array_dir) {
        assert_eq!(read_results(&f)["run"]["exit_code"], 0);
    }

    // The fallback launcher: Open MPI's mpirun inside the allocation.
    let fallback = tempdir("sbatch-mpirun");
    let mut args = vec!["--ntasks=2", script];
    args.extend_from_slice(&sweep);
    let (code, printed) = sbatch(&fallback, &args, &[("LAUNCHER", "mpirun")]);
    assert_eq!(code, Some(0), "{printed}");
    let id = job_id(&printed);
    let log = std::fs::read_to_string(fallback.join(format!("h200-mpibench-{id}.out"))).unwrap();
    assert!(log.contains("+ mpirun -np 2 "), "{log}");
    assert_eq!(results_in(&fallback).len(), 1, "{log}");

    // A bad variable is one line and a failed job.
    let bad = tempdir("sbatch-bad");
    let (code, printed) = sbatch(&bad, &["--ntasks=1", script], &[("GPUS_PER_NODE", "eight")]);
    assert_eq!(code, Some(2), "{printed}");
    let log = std::fs::read_to_string(bad.join(format!("h200-mpibench-{}.out", job_id(&printed)))).unwrap();
    assert!(log.contains("slurm.sbatch: error: GPUS_PER_NODE 'eight'"), "{log}");
}
