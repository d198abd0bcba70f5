//! The collective sweeps over MPI on host memory at 1 to 4 ranks: verified results, the
//! HDF5 file read back with h5py, wrong results caught, and no hang when a rank fails (bad
//! inputs: bad_inputs.rs).

mod common;

use common::{mpirun, mpirun_command, pid_of_rank, read_results, singleton, spawn, tempdir};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(120);

#[test]
fn sweeps_verify_at_2_3_and_4_ranks_and_the_file_reads_back() {
    for ranks in [2usize, 3, 4] {
        let dir = tempdir("sweep");
        let out = dir.join("sweep.h5");
        let r = mpirun(
            ranks,
            &[
                "--backend",
                "mpi",
                "-b",
                "8",
                "-e",
                "256K",
                "-f",
                "8",
                "-d",
                "float,bfloat16,int8,f8e4m3",
                "-o",
                "all",
                "-n",
                "3",
                "-w",
                "1",
                "-c",
                "2",
                "--out",
                out.to_str().unwrap(),
            ],
            &[],
            LIMIT,
        );
        assert_eq!(r.code, Some(0), "{ranks} ranks: {}{}", r.stdout, r.stderr);
        assert!(r.stdout.contains("# Wrong elements     : 0 OK"), "{}", r.stdout);
        let summary = read_results(&out);
        assert_eq!(summary["run"]["world_size"], ranks as u64);
        assert_eq!(summary["run"]["exit_code"], 0);
        assert_eq!(summary["run"]["engine"], "mpi-host");
        // 2 reducing collectives × 4 dtypes × 5 ops + 4 others × 4 dtypes
        let series = summary["series"].as_array().unwrap();
        assert_eq!(series.len(), 2 * 4 * 5 + 4 * 4);
        for s in series {
            let rows = s["rows"].as_array().unwrap();
            assert_eq!(rows.len(), 2 * 6, "{s}"); // 6 sizes × (out-of-place, in-place)
            assert_eq!(s["raw_shape"], serde_json::json!([12, ranks, 3]));
            for row in rows {
                assert!(row["wrong"] == 0 || row["wrong"] == -1, "{s}");
                assert!(row["time_us"].as_f64().unwrap() > 0.0);
            }
        }
        assert!(!dir.join("sweep.h5.partial").exists());
    }
}

#[test]
fn a_singleton_without_mpirun_runs_the_sweep() {
    let dir = tempdir("single");
    let out = dir.join("one.h5");
    let r = singleton(&["-b", "1K", "-e", "4K", "-f", "4", "--out", out.to_str().unwrap()], LIMIT);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("no GPU path"), "{}", r.stdout);
    assert_eq!(read_results(&out)["run"]["world_size"], 1);
}

#[test]
fn a_wrong_element_on_one_rank_fails_the_run() {
    let dir = tempdir("corrupt");
    let out = dir.join("c.h5");
    let r = mpirun(
        3,
        &["-b", "1K", "-e", "16K", "-f", "4", "--collectives", "all_reduce,all_gather", "--out", out.to_str().unwrap()],
        &[("H200_MPIBENCH_FAULT", "corrupt:2")],
        LIMIT,
    );
    assert_eq!(r.code, Some(3), "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("FAILED"), "{}", r.stdout);
    // one flipped element per checked row, counted once over all ranks
    let summary = read_results(&out);
    for s in summary["series"].as_array().unwrap() {
        for row in s["rows"].as_array().unwrap() {
            assert_eq!(row["wrong"], 1, "{s}");
        }
    }
    assert_eq!(summary["run"]["exit_code"], 3);
}

#[test]
fn a_stalled_rank_ends_every_rank_within_the_timeout() {
    let dir = tempdir("stall");
    let out = dir.join("s.h5");
    let r =
        mpirun(2, &["-b", "1K", "-e", "4K", "--timeout", "2", "--out", out.to_str().unwrap()], &[("H200_MPIBENCH_FAULT", "stall:1")], Duration::from_secs(40));
    assert_ne!(r.code, Some(0));
    assert!(r.stderr.contains("timed out in all_reduce"), "{}", r.stderr);
    assert!(r.elapsed < Duration::from_secs(20), "took {:?}", r.elapsed);
}

#[test]
fn a_killed_rank_ends_the_job_and_leaves_a_readable_partial_file() {
    let dir = tempdir("kill");
    let out = dir.join("k.h5");
    let out_s = out.to_str().unwrap().to_string();
    let partial = dir.join("k.h5.partial");
    let args = ["-b", "8", "-e", "1M", "-d", "all", "-o", "all", "--out", &out_s];
    let mut run = spawn(mpirun_command(2, &args), &[], None);
    // Once the second series prints its rows (all_reduce int8 prod), the first is in the file:
    // kill rank 1 outright.
    assert!(run.wait_for_output(" prod ", Duration::from_secs(90)), "the second series never started: {}", run.stdout_so_far());
    let pid = pid_of_rank(&out_s, 1).expect("rank 1 runs");
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let r = run.wait(Duration::from_secs(100));
    assert_ne!(r.code, Some(0), "{}", r.stdout);
    assert!(!out.exists(), "an interrupted run must not look complete");
    let summary = read_results(&partial);
    // Telemetry reached rank 0 at the end of each finished series: the killed rank's too.
    let rows = &summary["telemetry"]["rows_per_rank"];
    assert!(rows[0].as_u64().unwrap() > 0 && rows[1].as_u64().unwrap() > 0, "{rows}");
    assert!(!summary["series"].as_array().unwrap().is_empty(), "the finished series are in the partial file");
    assert!(summary["run"].get("exit_code").is_none());
}
