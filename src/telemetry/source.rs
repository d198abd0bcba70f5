//! What a sample reads: NVML for this rank's GPU, or, without one, the process's CPU time and
//! resident memory (and the file says that no GPU telemetry exists). A field the driver does
//! not give is missing (NaN), never 0.

use super::sample::{field, missing, Reading};
use anyhow::{Context, Result};
use nvml_wrapper::bitmasks::event::EventTypes;
use nvml_wrapper::enum_wrappers::device::{Clock, EccCounter, MemoryError, PcieUtilCounter, TemperatureSensor};
use nvml_wrapper::enums::device::SampleValue;
use nvml_wrapper::enums::event::XidError;
use nvml_wrapper::structs::device::FieldId;
use nvml_wrapper::{Device, EventSet, Nvml};
use nvml_wrapper_sys::bindings::{nvmlFieldValue_t, nvmlReturn_enum_NVML_SUCCESS, NvmlLib, NVML_NVLINK_MAX_LINKS};
use std::sync::OnceLock;

/// A source of samples, read from the sampler thread and, for the energy counter at step
/// boundaries, from the main thread (each has its own).
pub trait Source: Send {
    /// Every field it can read now.
    fn read(&mut self) -> Reading;
    /// XID events since the last call, each described in a few words.
    fn events(&mut self) -> Vec<String> {
        Vec::new()
    }
    /// The energy counter in joules (None: no such counter).
    fn energy_j(&mut self) -> Option<f64>;
    /// What it reads, for the file: "nvml" or why there is no GPU telemetry.
    fn describe(&self) -> String;
}

/// NVML, loaded once per process and kept for its life (its devices borrow it).
pub fn nvml() -> Result<&'static Nvml> {
    static NVML: OnceLock<Result<Nvml, String>> = OnceLock::new();
    NVML.get_or_init(|| Nvml::init().map_err(|e| e.to_string())).as_ref().map_err(|e| anyhow::anyhow!("NVML: {e}"))
}

/// NVML itself, for the one call nvml-wrapper cannot make: field values with a scope (the
/// NVLink counters are per link). The same library, so the same initialised NVML.
fn raw_nvml() -> Option<&'static NvmlLib> {
    static LIB: OnceLock<Option<NvmlLib>> = OnceLock::new();
    LIB.get_or_init(|| unsafe { NvmlLib::new("libnvidia-ml.so.1") }.ok()).as_ref()
}

/// NVML's NVLink data counters (KiB since the driver loaded), transmitted and received.
const NVLINK_DATA: [u32; 2] = [138, 139];

/// NVML's field ids of the HBM temperature and the row-remapping counters.
const MEMORY_TEMP: u32 = 82;
const REMAPPED: [(u32, &str); 4] =
    [(142, "remapped_rows_corrected"), (143, "remapped_rows_uncorrected"), (144, "remapped_rows_pending"), (145, "remapped_rows_failed")];

pub struct NvmlSource {
    device: Device<'static>,
    events: Option<EventSet<'static>>,
    xids: u64,
    /// NVML measures PCIe throughput over 20 ms per direction, a wait in every read: only at
    /// periods long enough for it.
    pcie: bool,
}

/// The shortest period at which a sample reads PCIe throughput (two 20 ms windows).
pub const PCIE_PERIOD_MS: u64 = 100;

impl NvmlSource {
    /// The GPU at `pci_bus_id` (as nvidia-smi prints it); with `xid`, an event set for its
    /// critical XID errors (one source per rank should have it); `pcie`: read PCIe throughput.
    pub fn open(pci_bus_id: &str, xid: bool, pcie: bool) -> Result<NvmlSource> {
        let nvml = nvml()?;
        let device = nvml.device_by_pci_bus_id(pci_bus_id).with_context(|| format!("NVML has no GPU at {pci_bus_id}"))?;
        let events = if xid { nvml.create_event_set().ok().and_then(|set| device.register_events(EventTypes::CRITICAL_XID_ERROR, set).ok()) } else { None };
        Ok(NvmlSource { device, events, xids: 0, pcie })
    }
}

fn value(v: &SampleValue) -> f64 {
    match *v {
        SampleValue::F64(x) => x,
        SampleValue::U32(x) => x as f64,
        SampleValue::U64(x) => x as f64,
        SampleValue::I64(x) => x as f64,
    }
}

impl NvmlSource {
    /// Bytes over all NVLink links since the driver loaded, transmitted and received (None: no
    /// link gave a value).
    fn nvlink_bytes(&self) -> [Option<f64>; 2] {
        let Some(lib) = raw_nvml() else { return [None, None] };
        let mut values: Vec<nvmlFieldValue_t> = (0..NVML_NVLINK_MAX_LINKS)
            .flat_map(|link| {
                NVLINK_DATA.map(|id| {
                    let mut v: nvmlFieldValue_t = unsafe { std::mem::zeroed() };
                    (v.fieldId, v.scopeId) = (id, link);
                    v
                })
            })
            .collect();
        let called = unsafe { lib.nvmlDeviceGetFieldValues(self.device.handle(), values.len() as i32, values.as_mut_ptr()) };
        if called != nvmlReturn_enum_NVML_SUCCESS {
            return [None, None];
        }
        NVLINK_DATA.map(|id| {
            let read: Vec<f64> = values
                .iter()
                .filter(|v| v.fieldId == id && v.nvmlReturn == nvmlReturn_enum_NVML_SUCCESS)
                .map(|v| 1024.0 * unsafe { v.value.ullVal } as f64)
                .collect();
            (!read.is_empty()).then(|| read.iter().sum())
        })
    }
}

impl Source for NvmlSource {
    fn read(&mut self) -> Reading {
        let d = &self.device;
        let mut r = missing();
        let mut set = |name: &str, v: Option<f64>| {
            if let Some(v) = v {
                r[field(name)] = v;
            }
        };
        if let Ok(u) = d.utilization_rates() {
            set("gpu_util_pct", Some(u.gpu as f64));
            set("mem_util_pct", Some(u.memory as f64));
        }
        set("mem_used_bytes", d.memory_info().ok().map(|m| m.used as f64));
        set("power_w", d.power_usage().ok().map(|mw| mw as f64 / 1e3));
        set("energy_j", d.total_energy_consumption().ok().map(|mj| mj as f64 / 1e3));
        set("temp_gpu_c", d.temperature(TemperatureSensor::Gpu).ok().map(|t| t as f64));
        set("sm_clock_mhz", d.clock_info(Clock::SM).ok().map(|c| c as f64));
        set("mem_clock_mhz", d.clock_info(Clock::Memory).ok().map(|c| c as f64));
        set("throttle_reasons", d.current_throttle_reasons().ok().map(|t| t.bits() as f64));
        if self.pcie {
            set("pcie_tx_bytes_per_s", d.pcie_throughput(PcieUtilCounter::Send).ok().map(|kb| kb as f64 * 1024.0));
            set("pcie_rx_bytes_per_s", d.pcie_throughput(PcieUtilCounter::Receive).ok().map(|kb| kb as f64 * 1024.0));
        }
        set("ecc_corrected", d.total_ecc_errors(MemoryError::Corrected, EccCounter::Volatile).ok().map(|n| n as f64));
        set("ecc_uncorrected", d.total_ecc_errors(MemoryError::Uncorrected, EccCounter::Volatile).ok().map(|n| n as f64));
        let ids: Vec<FieldId> = std::iter::once(MEMORY_TEMP).chain(REMAPPED.iter().map(|r| r.0)).map(FieldId).collect();
        if let Ok(values) = d.field_values_for(&ids) {
            let names = std::iter::once("temp_hbm_c").chain(REMAPPED.iter().map(|r| r.1));
            for (name, v) in names.zip(values) {
                set(name, v.ok().and_then(|s| s.value.ok()).map(|v| value(&v)));
            }
        }
        let [tx, rx] = self.nvlink_bytes();
        set("nvlink_tx_bytes", tx);
        set("nvlink_rx_bytes", rx);
        set("xid_events", self.events.is_some().then_some(self.xids as f64));
        r
    }

    fn events(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(set) = &self.events {
            while let Ok(e) = set.wait(0) {
                self.xids += 1;
                out.push(match e.event_data {
                    Some(XidError::Value(xid)) => format!("XID {xid}"),
                    _ => "an XID error of unknown number".to_string(),
                });
            }
        }
        out
    }

    fn energy_j(&mut self) -> Option<f64> {
        self.device.total_energy_consumption().ok().map(|mj| mj as f64 / 1e3)
    }

    fn describe(&self) -> String {
        "nvml".into()
    }
}

/// The process alone, for a rank without a GPU.
pub struct HostSource {
    pub why: String,
}

impl Source for HostSource {
    fn read(&mut self) -> Reading {
        let mut r = missing();
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } == 0 {
            let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
            r[field("process_cpu_s")] = seconds(usage.ru_utime) + seconds(usage.ru_stime);
        }
        if let Some(rss) = resident_bytes() {
            r[field("process_rss_bytes")] = rss;
        }
        r
    }

    fn energy_j(&mut self) -> Option<f64> {
        None
    }

    fn describe(&self) -> String {
        format!("no GPU telemetry: {}", self.why)
    }
}

/// The process's resident memory now (Linux: /proc/self/statm's second field, in pages).
fn resident_bytes() -> Option<f64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: f64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_source_reads_the_process_and_nothing_of_a_gpu() {
        let mut s = HostSource { why: "no GPU on this host".into() };
        let r = s.read();
        assert!(r[field("process_cpu_s")] >= 0.0 && r[field("process_rss_bytes")] > 0.0);
        assert!(r[field("power_w")].is_nan() && r[field("energy_j")].is_nan());
        assert!(s.energy_j().is_none() && s.describe().starts_with("no GPU telemetry"));
    }
}
