//! Where the results file goes: the user's --out (never an existing file unless --overwrite,
//! never one of the run's inputs, never a directory) or a default name that no other run can
//! take (UTC milliseconds, the Slurm job and array task or rank 0's pid).

use std::path::{Path, PathBuf};

/// The checked target path of this run's results; rank 0 calls it before anything runs.
pub fn choose(out: Option<&Path>, suite: &str, overwrite: bool, inputs: &[&Path]) -> Result<PathBuf, String> {
    let target = match out {
        Some(path) => path.to_path_buf(),
        None => {
            std::fs::create_dir_all("results").map_err(|e| format!("cannot create results/: {e}"))?;
            PathBuf::from(format!("results/{}_{suite}_{}.h5", super::metadata::utc_now_ms(), run_tag()))
        }
    };
    let shown = target.display();
    if target.is_dir() {
        return Err(format!("--out {shown} is a directory: name a file in it"));
    }
    if let Some(input) = inputs.iter().find(|i| same_file(i, &target)) {
        return Err(format!("--out {shown} is this run's input {}: choose another results file", input.display()));
    }
    if target.exists() && !overwrite {
        return Err(format!("--out {shown} exists: choose another name, or add --overwrite to replace it"));
    }
    Ok(target)
}

/// What tells this run's default file apart from a run started in the same millisecond:
/// the Slurm job (and array task) when there is one, and rank 0's pid.
fn run_tag() -> String {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let pid = std::process::id();
    match (var("SLURM_ARRAY_JOB_ID"), var("SLURM_ARRAY_TASK_ID"), var("SLURM_JOB_ID")) {
        (Some(job), Some(task), _) => format!("job{job}_{task}_pid{pid}"),
        (_, _, Some(job)) => format!("job{job}_pid{pid}"),
        _ => format!("pid{pid}"),
    }
}

/// The same file, by device and inode where both exist (links and relative paths included).
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_existing_files_inputs_and_directories() {
        // Removed when the test ends, passed or failed.
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().to_path_buf();
        let existing = dir.join("old.h5");
        std::fs::write(&existing, b"keep me").unwrap();
        let fresh = dir.join("new.h5");
        assert_eq!(choose(Some(&fresh), "nccl", false, &[]).unwrap(), fresh);
        assert!(choose(Some(&existing), "nccl", false, &[]).unwrap_err().contains("--overwrite"));
        assert_eq!(choose(Some(&existing), "nccl", true, &[]).unwrap(), existing);
        // an input is refused even with --overwrite, whatever path names it
        let other_name = dir.join(".").join("old.h5");
        assert!(choose(Some(&other_name), "sft", true, &[&existing]).unwrap_err().contains("input"));
        assert!(choose(Some(&dir), "sft", true, &[]).unwrap_err().contains("directory"));
        assert_eq!(std::fs::read(&existing).unwrap(), b"keep me");
    }

    #[test]
    fn default_names_carry_the_job_or_pid() {
        let tag = run_tag();
        assert!(tag.ends_with(&format!("pid{}", std::process::id())), "{tag}");
    }
}
