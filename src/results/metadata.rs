//! Everything about a run that a reader of its numbers needs: who ran what, where, on which
//! software. Gathered from every rank to rank 0.

use crate::dist::world::World;
use std::time::{SystemTime, UNIX_EPOCH};

pub struct RankInfo {
    pub host: String,
    pub local_rank: usize,
    /// CUDA ordinal used by this rank, -1 on the host path.
    pub gpu_index: i32,
    pub gpu_name: String,
    pub gpu_pci_bus_id: String,
    pub gpu_uuid: String,
}

/// This rank's GPU as the run uses it.
#[derive(Clone)]
pub struct GpuIdentity {
    pub index: Option<usize>,
    pub name: String,
    pub pci_bus_id: String,
    pub uuid: String,
}

impl GpuIdentity {
    /// A rank on the host path.
    pub fn none() -> GpuIdentity {
        GpuIdentity { index: None, name: "none".into(), pci_bus_id: "none".into(), uuid: "none".into() }
    }
}

pub struct RunMetadata {
    pub version: String,
    pub git_commit: String,
    pub command_line: String,
    pub suite: String,
    pub engine: String,
    pub start_utc: String,
    pub driver_version: String,
    pub cuda_version: String,
    pub nccl_version: String,
    pub mpi_version: String,
    /// Every NCCL_* variable of rank 0's environment, as a JSON object.
    pub nccl_env_json: String,
    pub ranks: Vec<RankInfo>,
}

/// Collective: every rank contributes its host and GPU; the result is meaningful on rank 0.
pub fn gather_ranks(world: &World, gpu: &GpuIdentity) -> Vec<RankInfo> {
    let field = |s: &str| world.all_gather_string(s);
    let hosts = field(&world.host);
    let locals = field(&world.local_rank.to_string());
    let indices = field(&gpu.index.map_or("-1".into(), |i| i.to_string()));
    let names = field(&gpu.name);
    let pcis = field(&gpu.pci_bus_id);
    let uuids = field(&gpu.uuid);
    (0..world.size)
        .map(|r| RankInfo {
            host: hosts[r].clone(),
            local_rank: locals[r].parse().unwrap_or(0),
            gpu_index: indices[r].parse().unwrap_or(-1),
            gpu_name: names[r].clone(),
            gpu_pci_bus_id: pcis[r].clone(),
            gpu_uuid: uuids[r].clone(),
        })
        .collect()
}

pub fn nccl_env_json() -> String {
    // vars_os: a variable that is not UTF-8 (anyone's, not only NCCL's) must not panic.
    let vars: serde_json::Map<String, serde_json::Value> = std::env::vars_os()
        .map(|(k, v)| (k.to_string_lossy().into_owned(), v.to_string_lossy().into_owned()))
        .filter(|(k, _)| k.starts_with("NCCL_"))
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect();
    serde_json::Value::Object(vars).to_string()
}

/// The git commit the binary was built from (build.rs), "unknown" outside a checkout.
pub fn git_commit() -> &'static str {
    env!("H200_MPIBENCH_GIT_COMMIT")
}

/// The time now, ISO 8601 UTC: `2026-11-21T04:35:00Z`.
pub fn utc_now() -> String {
    let ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    format_utc(ms, false)
}

/// The time now to the millisecond, for file names: `20261121T043500.123Z`.
pub fn utc_now_ms() -> String {
    let ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    format_utc(ms, true)
}

/// `ms` since the epoch as ISO 8601 UTC; `file_name`: compact, with milliseconds.
fn format_utc(ms: u64, file_name: bool) -> String {
    let secs = ms / 1000;
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    if file_name {
        format!("{y:04}{mo:02}{d:02}T{h:02}{m:02}{s:02}.{:03}Z", ms % 1000)
    } else {
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_dates() {
        assert_eq!(format_utc(0, false), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(951_782_400_000, false), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(1_795_235_700_042, true), "20261121T043500.042Z");
    }
}
