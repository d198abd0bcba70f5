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
    spawn(mpirun_command(ranks, args), env, None).wait(limit)
}

/// As `mpirun`, started in `dir` (where a default results/ folder lands).
pub fn mpirun_in(dir: &Path, ranks: usize, args: &[&str], env: &[(&str, &str)], limit: Duration) -> Outcome {
    spawn(mpirun_command(ranks, args), env, Some(dir)).wait(limit)
}

/// The binary alone, as an MPI singleton.
pub fn singleton(args: &[&str], limit: Duration) -> Outcome {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    spawn(cmd, &[], None).wait(limit)
}

pub fn mpirun_command(ranks: usize, args: &[&str]) -> Command {
    let mut cmd = Command::new("mpirun");
    cmd.args(["-np", &ranks.to_string(), "--oversubscribe", BIN]).args(args);
    cmd
}

/// A job started in the background, its output going to files the test can read meanwhile.
pub struct Running {
    pub child: std::process::Child,
    pub stdout: PathBuf,
    stderr: PathBuf,
    start: Instant,
    what: String,
}

pub fn spawn(mut cmd: Command, env: &[(&str, &str)], dir: Option<&Path>) -> Running {
    cmd.env("OMPI_ALLOW_RUN_AS_ROOT", "1").env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    let out_dir = tempdir("out");
    let (stdout, stderr) = (out_dir.join("stdout"), out_dir.join("stderr"));
    cmd.stdout(Stdio::from(std::fs::File::create(&stdout).unwrap()));
    cmd.stderr(Stdio::from(std::fs::File::create(&stderr).unwrap()));
    let child = cmd.spawn().expect("cannot start mpirun: is Open MPI installed (scripts/setup.sh)?");
    Running { child, stdout, stderr, start: Instant::now(), what: format!("{cmd:?}") }
}

impl Running {
    /// What the job has printed to stdout so far.
    pub fn stdout_so_far(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// Waits until stdout holds `marker` (true) or `limit` passes or the job ends (false).
    pub fn wait_for_output(&mut self, marker: &str, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.stdout_so_far().contains(marker) {
                return true;
            }
            if self.child.try_wait().unwrap().is_some() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Waits for the end; kills the job and fails the test after `limit`.
    pub fn wait(mut self, limit: Duration) -> Outcome {
        let code = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status.code();
            }
            if self.start.elapsed() > limit {
                let _ = self.child.kill();
                panic!("{} still running after {limit:?}", self.what);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Outcome {
            code,
            stdout: std::fs::read_to_string(&self.stdout).unwrap(),
            stderr: std::fs::read_to_string(&self.stderr).unwrap(),
            elapsed: self.start.elapsed(),
        }
    }
}

/// The pid of the rank `rank` process whose command line mentions `marker`.
pub fn pid_of_rank(marker: &str, rank: usize) -> Option<u32> {
    let wanted = format!("OMPI_COMM_WORLD_RANK={rank}");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
        let environ = std::fs::read(entry.path().join("environ")).ok()?;
        let has = |hay: &[u8], needle: &str| hay.split(|&b| b == 0).any(|part| part.windows(needle.len()).any(|w| w == needle.as_bytes()));
        (has(&cmdline, BIN) && has(&cmdline, marker) && has(&environ, &wanted)).then_some(pid)
    })
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

/// The median of `v` (the tests' own, to recompute the program's figures independently).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Lines starting with the program's error prefix.
pub fn error_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.starts_with("h200-mpibench: error:")).collect()
}
