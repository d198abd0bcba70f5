//! What each rank runs on, as key → value (numbers stay numbers): its host (OS, kernel, CPU,
//! memory, MPI) and, where it has one, its GPU as NVML reports it (identity, firmware and
//! software versions, limits and clocks, modes, PCIe link, NVLink links, error counters,
//! throttle reasons and temperatures at idle). A value NVML cannot give is left out, and the
//! key `unreadable` lists those.

use crate::telemetry::figures::THROTTLE_REASONS;
use crate::telemetry::sample::field;
use crate::telemetry::source::{nvml, NvmlSource, Source};
use nvml_wrapper::enum_wrappers::device::{Clock, EccCounter, MemoryError, RetirementCause};
use serde_json::{json, Map, Value};

pub type Inventory = Map<String, Value>;

/// The host's: its name, OS and kernel, CPU model and logical CPUs, memory, the MPI library.
pub fn host(host_name: &str, mpi_version: &str) -> Inventory {
    let mut inv = Map::new();
    inv.insert("host".into(), json!(host_name));
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=")).map(|v| v.trim_matches('"').to_string()));
    inv.insert("os".into(), json!(os.unwrap_or_else(|| "unknown".into())));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|t| t.trim().to_string());
    inv.insert("kernel".into(), json!(kernel.unwrap_or_else(|_| "unknown".into())));
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo.lines().find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_string()));
    inv.insert("cpu_model".into(), json!(model.unwrap_or_else(|| "unknown".into())));
    inv.insert("logical_cpus".into(), json!(std::thread::available_parallelism().map_or(0, |n| n.get())));
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let total_kib = meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:")).and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok());
    if let Some(kib) = total_kib {
        inv.insert("host_memory_bytes".into(), json!(kib * 1024));
    }
    inv.insert("mpi_version".into(), json!(mpi_version));
    inv
}

/// The GPU at `pci_bus_id` (CUDA's device `ordinal` in this process), added to `inv`, with the
/// NCCL and CUDA versions this rank loads.
pub fn add_gpu(inv: &mut Inventory, pci_bus_id: &str, ordinal: usize, cuda_version: &str, nccl_version: &str) -> anyhow::Result<()> {
    let nvml = nvml()?;
    let d = nvml.device_by_pci_bus_id(pci_bus_id)?;
    let mut unreadable: Vec<&str> = Vec::new();
    let mut put = |key: &'static str, v: Result<Value, nvml_wrapper::error::NvmlError>| match v {
        Ok(v) => {
            inv.insert(key.into(), v);
        }
        Err(_) => unreadable.push(key),
    };
    put("gpu_name", d.name().map(|v| json!(v)));
    put("gpu_uuid", d.uuid().map(|v| json!(v)));
    put("gpu_serial", d.serial().map(|v| json!(v)));
    put("gpu_pci_bus_id", Ok(json!(pci_bus_id)));
    // CUDA's number for it (what the probes' subjects say) and NVML's (nvidia-smi's), which
    // differ under CUDA_VISIBLE_DEVICES.
    put("gpu_ordinal", Ok(json!(ordinal)));
    put("gpu_nvml_index", d.index().map(|v| json!(v)));
    put("vbios", d.vbios_version().map(|v| json!(v)));
    put("driver_version", nvml.sys_driver_version().map(|v| json!(v)));
    put("cuda_driver_version", Ok(json!(cuda_version)));
    put("nccl_version", Ok(json!(nccl_version)));
    put("gpu_memory_bytes", d.memory_info().map(|m| json!(m.total)));
    put("power_limit_w", d.power_management_limit().map(|mw| json!(mw as f64 / 1e3)));
    put("enforced_power_limit_w", d.enforced_power_limit().map(|mw| json!(mw as f64 / 1e3)));
    put("max_sm_clock_mhz", d.max_clock_info(Clock::SM).map(|v| json!(v)));
    put("max_mem_clock_mhz", d.max_clock_info(Clock::Memory).map(|v| json!(v)));
    put("persistence_mode", d.is_in_persistent_mode().map(|v| json!(v)));
    put("ecc_enabled", d.is_ecc_enabled().map(|e| json!(e.currently_enabled)));
    put("ecc_pending_enabled", d.is_ecc_enabled().map(|e| json!(e.pending_enabled)));
    put("mig_enabled", d.mig_mode().map(|m| json!(m.current != 0)));
    put("pcie_gen", d.current_pcie_link_gen().map(|v| json!(v)));
    put("pcie_gen_max", d.max_pcie_link_gen().map(|v| json!(v)));
    put("pcie_width", d.current_pcie_link_width().map(|v| json!(v)));
    put("pcie_width_max", d.max_pcie_link_width().map(|v| json!(v)));
    let links: Vec<bool> = (0..nvml_wrapper_sys::bindings::NVML_NVLINK_MAX_LINKS).filter_map(|l| d.link_wrapper_for(l).is_active().ok()).collect();
    put("nvlink_links", Ok(json!(links.len())));
    put("nvlink_links_up", Ok(json!(links.iter().filter(|&&up| up).count())));
    put("ecc_uncorrected_aggregate", d.total_ecc_errors(MemoryError::Uncorrected, EccCounter::Aggregate).map(|v| json!(v)));
    put("ecc_corrected_aggregate", d.total_ecc_errors(MemoryError::Corrected, EccCounter::Aggregate).map(|v| json!(v)));
    let retired = [RetirementCause::MultipleSingleBitEccErrors, RetirementCause::DoubleBitEccError].map(|c| d.retired_pages(c).map(|p| p.len()));
    put(
        "retired_pages",
        match retired {
            [Ok(a), Ok(b)] => Ok(json!(a + b)),
            [Err(e), _] | [_, Err(e)] => Err(e),
        },
    );
    put("retired_pages_pending", d.are_pages_pending_retired().map(|v| json!(v)));
    put(
        "throttle_reasons",
        d.current_throttle_reasons().map(|t| json!(THROTTLE_REASONS.iter().filter(|(_, r)| t.contains(*r)).map(|(n, _)| *n).collect::<Vec<_>>().join(","))),
    );
    // What the telemetry samples read: clocks, temperatures, the volatile error counters.
    let reading = NvmlSource::open(pci_bus_id, false, false)?.read();
    for (key, name) in [
        ("sm_clock_mhz", "sm_clock_mhz"),
        ("mem_clock_mhz", "mem_clock_mhz"),
        ("temp_gpu_c", "temp_gpu_c"),
        ("temp_hbm_c", "temp_hbm_c"),
        ("power_w", "power_w"),
        ("ecc_corrected_volatile", "ecc_corrected"),
        ("ecc_uncorrected_volatile", "ecc_uncorrected"),
        ("remapped_rows_corrected", "remapped_rows_corrected"),
        ("remapped_rows_uncorrected", "remapped_rows_uncorrected"),
        ("remapped_rows_pending", "remapped_rows_pending"),
        ("remapped_rows_failed", "remapped_rows_failed"),
    ] {
        let v = reading[field(name)];
        match v.is_finite() {
            true => {
                inv.insert(key.into(), json!(v));
            }
            false => unreadable.push(key),
        }
    }
    inv.insert("unreadable".into(), json!(unreadable.join(",")));
    Ok(())
}
