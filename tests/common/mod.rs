//! Starting the binary under mpirun (MPI host path) with a time limit, for the integration tests.
// Each test crate uses its own subset of these helpers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_h200-mpibench");

pub struct Outcome {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// `mpirun -np N --oversubscribe h200-mpibench ARGS` with extra environment; killed (and the
/// test failed) after `limit`.
pub fn mpirun(ranks: usize, args: &[&str], env: &[(&str, &str)], limit: Duration) -> Outcome {
    let mut cmd = Command::new("mpirun");
    cmd.args(["-np", &ranks.to_string(), "--oversubscribe", BIN]).args(args);
    run(cmd, env, limit)
}

/// The binary alone, as an MPI singleton.
pub fn singleton(args: &[&str], limit: Duration) -> Outcome {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    run(cmd, &[], limit)
}

fn run(mut cmd: Command, env: &[(&str, &str)], limit: Duration) -> Outcome {
    cmd.env("OMPI_ALLOW_RUN_AS_ROOT", "1").env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let dir = tempdir("out");
    let (out, err) = (dir.join("stdout"), dir.join("stderr"));
    cmd.stdout(Stdio::from(std::fs::File::create(&out).unwrap()));
    cmd.stderr(Stdio::from(std::fs::File::create(&err).unwrap()));
    let start = Instant::now();
    let mut child = cmd.spawn().expect("cannot start mpirun: is Open MPI installed (scripts/setup.sh)?");
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("{cmd:?} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Outcome {
        code,
        stdout: std::fs::read_to_string(out).unwrap(),
        stderr: std::fs::read_to_string(err).unwrap(),
        elapsed: start.elapsed(),
    }
}

/// A fresh folder under target/ for one test's files.
pub fn tempdir(name: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// scripts/results_summary.py --json on `file`: h5py reads what rank 0 wrote.
pub fn read_results(file: &Path) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/results_summary.py");
    let out = Command::new("python3").arg(script).arg(file).arg("--json").output().expect("python3");
    assert!(out.status.success(), "h5py could not read {}: {}", file.display(), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("summary is JSON")
}

/// Lines starting with the program's error prefix.
pub fn error_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.starts_with("h200-mpibench: error:")).collect()
}
