//! What the binary does with a validated request: the suite's phases (suite.rs runs them in
//! one process, sharing session.rs), selftest, op, and what they share (choosing the GPU or host path on every rank
//! alike, opening the GPU, announcing the run).

pub mod op;
pub mod scaling;
pub mod selftest;
pub mod session;
pub mod sft;
pub mod suite;
pub mod sweeps;
pub mod verify;

use h200_mpibench::backend::cuda::{self, Gpu};
use h200_mpibench::cli::Backend;
use h200_mpibench::dist::fault::Fault;
use h200_mpibench::dist::world::World;
use h200_mpibench::results::hdf5_file::ResultsFile;
use h200_mpibench::results::metadata::{self, GpuIdentity, RunMetadata};

/// Why the run stopped early.
pub enum Stop {
    /// Every rank knows the same cause: each prints it and exits 2 after MPI_Finalize.
    Agreed(String),
    /// This rank failed mid-run: it prints the cause and MPI_Abort ends every rank.
    Fatal(anyhow::Error),
    /// --help / --version: printed by rank 0, exit 0.
    Info(String),
}

impl From<anyhow::Error> for Stop {
    fn from(e: anyhow::Error) -> Self {
        Stop::Fatal(e)
    }
}

/// What carries the bytes on this run.
pub enum Path {
    Gpu { ordinal: usize },
    Host { reason: String },
}

/// Collective: the same backend on every rank, or an error every rank reports.
pub fn choose_path(world: &World, backend: Backend) -> Result<Path, Stop> {
    let probe = match backend {
        Backend::Mpi => Err("--backend mpi".to_string()),
        _ => cuda::probe(),
    };
    tracing::debug!(?probe, "GPU probe");
    if let (Backend::Nccl, Err(reason)) = (backend, &probe) {
        world.agree(Err::<(), _>(format!("--backend nccl: {reason}"))).map_err(Stop::Agreed)?;
    }
    let gpu_ranks = world.sum_u64(probe.is_ok() as u64) as usize;
    let mixed = gpu_ranks != 0 && gpu_ranks != world.size;
    let mine = match &probe {
        Err(reason) if mixed => Err(format!("{reason}, while {gpu_ranks} other rank(s) have GPUs and NCCL")),
        Err(reason) => Ok(Path::Host { reason: reason.clone() }),
        Ok(visible) => cuda::gpu_for_local_rank(world.local_rank, world.local_size, *visible).map(|ordinal| Path::Gpu { ordinal }),
    };
    world.agree(mine).map_err(Stop::Agreed)
}

/// Collective: this rank's GPU, or the first rank's failure on every rank.
pub fn open_gpu(world: &World, ordinal: usize) -> Result<Gpu, Stop> {
    world.agree(Gpu::open(ordinal).map_err(|e| format!("{e:#}"))).map_err(Stop::Agreed)
}

/// Records the GPU software versions the run depends on.
pub fn record_gpu_software(meta: &mut RunMetadata, with_nccl: bool) {
    meta.driver_version = nvml_wrapper::Nvml::init().and_then(|n| n.sys_driver_version()).unwrap_or_else(|_| "unknown".into());
    meta.cuda_version = cuda::driver_cuda_version();
    if with_nccl {
        meta.nccl_version = h200_mpibench::dist::nccl::version();
    }
}

/// Collective: gathers every rank's host and GPU, writes the metadata and prints the banner.
pub fn announce(world: &World, file: Option<&ResultsFile>, meta: &mut RunMetadata, gpu: &GpuIdentity, title: &str, note: Option<&str>) -> Result<(), Stop> {
    meta.ranks = metadata::gather_ranks(world, gpu);
    if let Some(file) = file {
        file.write_metadata(meta)?;
    }
    if world.is_root() {
        print_banner(meta, title, note);
    }
    Ok(())
}

fn print_banner(meta: &RunMetadata, title: &str, note: Option<&str>) {
    let mut hosts: Vec<&str> = meta.ranks.iter().map(|r| r.host.as_str()).collect();
    hosts.dedup();
    println!("# h200-mpibench {} ({}): {title}", meta.version, meta.git_commit);
    println!(
        "# {} ranks on {} host(s); NCCL {}; CUDA driver {} ({}); {}",
        meta.ranks.len(),
        hosts.len(),
        meta.nccl_version,
        meta.cuda_version,
        meta.driver_version,
        meta.mpi_version
    );
    if let Some(note) = note {
        println!("# {note}");
    }
    for (rank, r) in meta.ranks.iter().enumerate() {
        println!("#  rank {rank:3} on {} local {} GPU {} {} [{}]", r.host, r.local_rank, r.gpu_index, r.gpu_name, r.gpu_pci_bus_id);
    }
}

/// "12.3 GiB"; None (beyond u64) as such.
fn gib_text(bytes: Option<u64>) -> String {
    bytes.map_or("more than 16 EiB".to_string(), |b| format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64))
}

/// Collective: refuses on every rank, before anything is allocated, a run whose ranks on one
/// host would together need more host memory than the host has available (host_available_bytes).
/// `need` is one rank's estimate in bytes (None: beyond u64), `what` names it, `advice` says
/// what to change.
pub fn check_host_memory(world: &World, need: Option<u64>, what: &str, advice: &str) -> Result<(), Stop> {
    world.agree(host_memory_fit(need, world.local_size, what, advice)).map_err(Stop::Agreed)
}

/// Whether `on_host` ranks of this host needing `need` bytes each fit its available memory.
pub fn host_memory_fit(need: Option<u64>, on_host: usize, what: &str, advice: &str) -> Result<(), String> {
    let all = need.and_then(|n| n.checked_mul(on_host as u64));
    match (all, host_available_bytes()) {
        (Some(all), Some(free)) if all <= free => Ok(()),
        (Some(_), None) => Ok(()), // no /proc/meminfo: nothing to check against
        (all, free) => Err(format!(
            "{what}: {} of host memory per rank, {} for the {on_host} rank(s) on this host, {} available: {advice}",
            gib_text(need),
            gib_text(all),
            free.map_or("unknown".to_string(), |f| gib_text(Some(f))),
        )),
    }
}

/// Collective: refuses on every rank a run that needs more than its GPU has free (`need`
/// None: beyond u64).
pub fn check_gpu_memory(world: &World, gpu: &Gpu, need: Option<u64>, what: &str, advice: &str) -> Result<(), Stop> {
    let free = gpu_free_bytes(gpu).map_err(Stop::Fatal)?;
    let fit = match need {
        Some(need) if need <= free => Ok(()),
        need => Err(format!("{what}: {} of GPU memory, {} free: {advice}", gib_text(need), gib_text(Some(free)))),
    };
    world.agree(fit).map_err(Stop::Agreed)
}

/// The GPU memory free now (less where the test hook `memory:MIB` says so).
pub fn gpu_free_bytes(gpu: &Gpu) -> anyhow::Result<u64> {
    let free = gpu.ctx.mem_get_info()?.0 as u64;
    Ok(memory_hook().map_or(free, |limit| limit.min(free)))
}

/// The test hook `memory:MIB` (dist/fault.rs) as bytes.
fn memory_hook() -> Option<u64> {
    Fault::from_env().ok().and_then(Fault::memory_limit_bytes)
}

/// What this process may still take: MemAvailable from /proc/meminfo, or less where its cgroup
/// (a Slurm job's --mem, a container) sets a lower limit.
fn host_available_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    let free = cgroup_headroom().map_or(kib * 1024, |room| room.min(kib * 1024));
    Some(memory_hook().map_or(free, |limit| limit.min(free)))
}

/// The cgroup's memory limit less its usage (cgroup v2 memory.max, or v1 memory.limit_in_bytes).
fn cgroup_headroom() -> Option<u64> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    headroom(&cgroups, |path| std::fs::read_to_string(path).ok().and_then(|t| t.trim().parse::<u64>().ok()))
}

/// `cgroups` as /proc/self/cgroup lists them; `read` a number from a cgroup file (None: absent,
/// or "max").
fn headroom(cgroups: &str, read: impl Fn(String) -> Option<u64>) -> Option<u64> {
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let (limit, usage) = match controllers {
            "" => (format!("/sys/fs/cgroup{path}/memory.max"), format!("/sys/fs/cgroup{path}/memory.current")),
            c if c.split(',').any(|c| c == "memory") => {
                (format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes"), format!("/sys/fs/cgroup/memory{path}/memory.usage_in_bytes"))
            }
            _ => continue,
        };
        // "max" (no limit) does not parse: nothing lower than MemAvailable.
        if let (Some(limit), Some(usage)) = (read(limit), read(usage)) {
            return Some(limit.saturating_sub(usage));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::headroom;

    #[test]
    fn cgroup_limits_lower_what_the_host_offers() {
        let files = |path: String| match path.as_str() {
            "/sys/fs/cgroup/job/memory.max" => Some(8 << 30),
            "/sys/fs/cgroup/job/memory.current" => Some(3 << 30),
            "/sys/fs/cgroup/memory/old/memory.limit_in_bytes" => Some(4 << 30),
            "/sys/fs/cgroup/memory/old/memory.usage_in_bytes" => Some(1 << 30),
            _ => None, // "max": no limit
        };
        assert_eq!(headroom("0::/job\n", files), Some(5 << 30));
        assert_eq!(headroom("4:cpu,cpuacct:/x\n3:memory:/old\n", files), Some(3 << 30));
        assert_eq!(headroom("0::/unlimited\n", files), None);
    }
}
