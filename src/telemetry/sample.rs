//! One sample of one rank: its time, the phase that was running and every field, NaN where the
//! source cannot read it (never 0). The field list is the /telemetry table's columns.

use serde::{Deserialize, Serialize};

/// The fields, in column order, with their units in the name.
pub const FIELDS: [&str; 23] = [
    "gpu_util_pct",
    "mem_util_pct",
    "mem_used_bytes",
    "power_w",
    "energy_j",
    "temp_gpu_c",
    "temp_hbm_c",
    "sm_clock_mhz",
    "mem_clock_mhz",
    "throttle_reasons",
    "pcie_tx_bytes_per_s",
    "pcie_rx_bytes_per_s",
    "nvlink_tx_bytes",
    "nvlink_rx_bytes",
    "ecc_corrected",
    "ecc_uncorrected",
    "remapped_rows_corrected",
    "remapped_rows_uncorrected",
    "remapped_rows_pending",
    "remapped_rows_failed",
    "xid_events",
    "process_cpu_s",
    "process_rss_bytes",
];

/// A field's index in `FIELDS` (a bug if it is not one).
pub fn field(name: &str) -> usize {
    FIELDS.iter().position(|f| *f == name).unwrap_or_else(|| panic!("no telemetry field {name}"))
}

/// Every field, NaN where missing.
pub type Reading = [f64; FIELDS.len()];

pub fn missing() -> Reading {
    [f64::NAN; FIELDS.len()]
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since rank 0's start of sampling, on rank 0's clock.
    pub t_s: f64,
    pub phase: String,
    /// FIELDS in order; JSON carries NaN as null.
    pub values: Vec<Option<f64>>,
}

impl Sample {
    pub fn new(t_s: f64, phase: String, r: &Reading) -> Sample {
        Sample { t_s, phase, values: r.iter().map(|&v| v.is_finite().then_some(v)).collect() }
    }

    /// The field's value, NaN if missing.
    pub fn get(&self, name: &str) -> f64 {
        self.values.get(field(name)).copied().flatten().unwrap_or(f64::NAN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_field_stays_missing_through_json() {
        let mut r = missing();
        r[field("power_w")] = 412.5;
        let s = Sample::new(1.5, "sft step 3".into(), &r);
        let back: Sample = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.get("power_w"), 412.5);
        assert!(back.get("temp_hbm_c").is_nan(), "missing is NaN, never 0");
    }
}
