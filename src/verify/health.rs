//! The health verdicts of one rank's GPU from its inventory (read at idle, before the probes)
//! and the XID events its telemetry saw while verify ran: what DCGM's and the cloud providers'
//! health checks fail a GPU for.

use super::inventory::Inventory;

/// Throttle reasons that mean hardware trouble when a GPU is idle (a power cap or an idle clock
/// is normal).
const BAD_THROTTLE: [&str; 4] = ["hw_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown", "sw_thermal_slowdown"];

/// The reasons of `names` that mean hardware trouble.
pub fn bad_throttle<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    names.into_iter().filter(|r| BAD_THROTTLE.contains(r)).collect()
}

/// Each failed health check of `inv` and `xid_events`, as "what: why" (empty: healthy, or nothing to judge).
pub fn failures(inv: &Inventory, xid_events: usize) -> Vec<String> {
    let number = |key: &str| inv.get(key).and_then(|v| v.as_f64());
    let mut out = Vec::new();
    let mut above_zero = |key: &str, why: &str| {
        if let Some(n) = number(key).filter(|&n| n > 0.0) {
            out.push(format!("{key} {n}: {why}"));
        }
    };
    above_zero("ecc_uncorrected_volatile", "uncorrected ECC errors since the driver loaded");
    above_zero("remapped_rows_pending", "a row remapping waits for a GPU reset");
    above_zero("remapped_rows_failed", "a row remapping failed: the GPU needs service");
    if inv.get("retired_pages_pending").and_then(|v| v.as_bool()) == Some(true) {
        out.push("retired_pages_pending: pages wait for retirement at the next driver load".into());
    }
    if let (Some(width), Some(max)) = (number("pcie_width"), number("pcie_width_max")) {
        if width < max {
            out.push(format!("pcie_width x{width} of x{max}: the PCIe link trained narrower than it can"));
        }
    }
    if let Some(reasons) = inv.get("throttle_reasons").and_then(|v| v.as_str()) {
        let bad = bad_throttle(reasons.split(','));
        if !bad.is_empty() {
            out.push(format!("throttle_reasons {}: the GPU slows itself while idle", bad.join(",")));
        }
    }
    out.extend(xid_failure(xid_events));
    out
}

/// The failure of `xid_events` XID errors seen while verify ran (none: None).
pub fn xid_failure(xid_events: usize) -> Option<String> {
    (xid_events > 0).then(|| format!("xid_events {xid_events}: the driver reported XID errors while verify ran (the warning lines name them)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_healthy_gpu_passes_and_each_fault_is_named() {
        let healthy = json!({"ecc_uncorrected_volatile": 0.0, "remapped_rows_pending": 0.0, "remapped_rows_failed": 0.0,
            "retired_pages_pending": false, "pcie_width": 16, "pcie_width_max": 16, "pcie_gen": 1, "pcie_gen_max": 5,
            "throttle_reasons": "gpu_idle,sw_power_cap"});
        let healthy = healthy.as_object().unwrap().clone();
        assert!(failures(&healthy, 0).is_empty(), "a PCIe link that idles at gen 1 is normal");
        assert!(failures(&Inventory::new(), 0).is_empty(), "a host without a GPU has nothing to judge");
        for (key, value, words) in [
            ("ecc_uncorrected_volatile", json!(2.0), "uncorrected ECC"),
            ("remapped_rows_pending", json!(1.0), "waits for a GPU reset"),
            ("remapped_rows_failed", json!(1.0), "needs service"),
            ("retired_pages_pending", json!(true), "retirement"),
            ("pcie_width", json!(8), "x8 of x16"),
            ("throttle_reasons", json!("gpu_idle,hw_thermal_slowdown"), "hw_thermal_slowdown"),
        ] {
            let mut sick = healthy.clone();
            sick.insert(key.into(), value);
            let f = failures(&sick, 0);
            assert!(f.len() == 1 && f[0].starts_with(key) && f[0].contains(words), "{key}: {f:?}");
        }
        assert!(failures(&healthy, 1)[0].starts_with("xid_events 1"));
    }
}
