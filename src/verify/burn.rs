//! `--level long`: sustained GEMM load on every GPU at once for --burn-s seconds, one timed
//! window a second, NVML read after each: what a GPU delivers once it is hot, and how its clock,
//! power and temperature drift on the way there.

use super::figure::{Measurement, Subject, BURN_GEMM};
use super::gpu_probes::{gemm_flop, GemmLoad};
use crate::backend::cuda::op_timer::timed;
use crate::backend::cuda::Gpu;
use crate::telemetry::figures::THROTTLE_REASONS;
use crate::telemetry::sample::field;
use crate::telemetry::source::{NvmlSource, Source};
use anyhow::Result;
use serde::{Deserialize, Serialize};

/// One second of load and what NVML read at its end (NaN where it could not).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub seconds: f64,
    pub sm_clock_mhz: f64,
    pub power_w: f64,
    pub temp_gpu_c: f64,
    pub temp_hbm_c: f64,
    /// NVML's throttle bitmask.
    pub throttle_reasons: f64,
}

/// One rank's burn: its windows and the GEMMs each ran.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Burn {
    pub gemms_per_window: usize,
    pub windows: Vec<Window>,
}

/// How a burn went, from its first window to its last.
#[derive(Clone, Debug, PartialEq)]
pub struct Drift {
    pub first_tflops: f64,
    pub last_tflops: f64,
    pub first_clock_mhz: f64,
    pub last_clock_mhz: f64,
    pub first_temp_c: f64,
    pub last_temp_c: f64,
    pub peak_temp_c: f64,
    pub mean_power_w: f64,
    /// Each throttle reason seen, with the share of windows it was set in.
    pub throttled: Vec<(&'static str, f64)>,
}

impl Burn {
    pub fn measurement(&self, subject: Subject) -> Measurement {
        Measurement::new(BURN_GEMM, subject, self.gemms_per_window as f64 * gemm_flop() / 1e12, self.windows.iter().map(|w| w.seconds).collect())
    }

    /// The drift: the mean of the first and of the last tenth of the windows (at least one each).
    pub fn drift(&self) -> Drift {
        let n = self.windows.len();
        let tenth = (n / 10).max(1).min(n.max(1));
        let mean = |ws: &[Window], f: &dyn Fn(&Window) -> f64| ws.iter().map(f).sum::<f64>() / ws.len().max(1) as f64;
        let tflops = |w: &Window| self.gemms_per_window as f64 * gemm_flop() / 1e12 / w.seconds;
        let (first, last) = (&self.windows[..tenth.min(n)], &self.windows[n.saturating_sub(tenth)..]);
        let throttled = THROTTLE_REASONS
            .iter()
            .filter_map(|(name, bits)| {
                let set = self.windows.iter().filter(|w| w.throttle_reasons.is_finite() && (w.throttle_reasons as u64 & bits.bits()) != 0).count();
                (set > 0).then(|| (*name, set as f64 / n as f64))
            })
            .collect();
        Drift {
            first_tflops: mean(first, &tflops),
            last_tflops: mean(last, &tflops),
            first_clock_mhz: mean(first, &|w| w.sm_clock_mhz),
            last_clock_mhz: mean(last, &|w| w.sm_clock_mhz),
            first_temp_c: mean(first, &|w| w.temp_gpu_c),
            last_temp_c: mean(last, &|w| w.temp_gpu_c),
            peak_temp_c: self.windows.iter().map(|w| w.temp_gpu_c).fold(f64::NAN, f64::max),
            mean_power_w: mean(&self.windows, &|w| w.power_w),
            throttled,
        }
    }
}

/// `seconds` windows of GEMMs on `load`, each about a second long from the quick probe's GEMM
/// time `gemm_s`; `repeat` as for the other probes (the extra GEMMs do not count);
/// `after_window` runs after each (the telemetry's batches: collective).
pub fn run(gpu: &Gpu, load: &GemmLoad, gemm_s: f64, seconds: u64, repeat: usize, after_window: &mut dyn FnMut() -> Result<()>) -> Result<Burn> {
    crate::dist::phase::set("verify burn");
    let gemms_per_window = ((1.0 / gemm_s.max(1e-6)).ceil() as usize).clamp(1, 100_000);
    let mut nvml = NvmlSource::open(&gpu.pci_bus_id(), false, false)?;
    let mut windows = Vec::with_capacity(seconds as usize);
    for _ in 0..seconds {
        let took = timed(gpu, 0, 1, gemms_per_window * repeat, &mut || load.run())?[0];
        let r = nvml.read();
        windows.push(Window {
            seconds: took,
            sm_clock_mhz: r[field("sm_clock_mhz")],
            power_w: r[field("power_w")],
            temp_gpu_c: r[field("temp_gpu_c")],
            temp_hbm_c: r[field("temp_hbm_c")],
            throttle_reasons: r[field("throttle_reasons")],
        });
        after_window()?;
    }
    Ok(Burn { gemms_per_window, windows })
}

impl Drift {
    /// "780 → 702 TFLOP/s, SM clock 1980 → 1755 MHz, 45 → 72 °C (peak 74), 690 W; throttled: sw_power_cap 100 %"
    pub fn line(&self) -> String {
        let throttled: Vec<String> = self.throttled.iter().map(|(n, share)| format!("{n} {:.0} %", 100.0 * share)).collect();
        format!(
            "{:.0} → {:.0} TFLOP/s, SM clock {:.0} → {:.0} MHz, {:.0} → {:.0} °C (peak {:.0}), {:.0} W mean; throttled: {}",
            self.first_tflops,
            self.last_tflops,
            self.first_clock_mhz,
            self.last_clock_mhz,
            self.first_temp_c,
            self.last_temp_c,
            self.peak_temp_c,
            self.mean_power_w,
            if throttled.is_empty() { "never".to_string() } else { throttled.join(", ") }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_compares_the_first_and_last_tenth() {
        let w = |s: f64, clock: f64, temp: f64, bits: f64| Window {
            seconds: s,
            sm_clock_mhz: clock,
            power_w: 700.0,
            temp_gpu_c: temp,
            temp_hbm_c: 50.0,
            throttle_reasons: bits,
        };
        let sw_power_cap = 4.0; // NVML's bit 2
        let mut windows: Vec<Window> = (0..18).map(|i| w(1.0, 1980.0 - i as f64, 40.0 + i as f64, 0.0)).collect();
        windows.extend([w(2.0, 1500.0, 80.0, sw_power_cap), w(2.0, 1500.0, 82.0, sw_power_cap)]);
        let burn = Burn { gemms_per_window: 1000, windows };
        let d = burn.drift();
        let per_window = 1000.0 * gemm_flop() / 1e12;
        assert!((d.first_tflops - per_window).abs() < 1e-9 && (d.last_tflops - per_window / 2.0).abs() < 1e-9, "{d:?}");
        assert_eq!((d.first_clock_mhz, d.last_clock_mhz, d.first_temp_c, d.last_temp_c, d.peak_temp_c), (1979.5, 1500.0, 40.5, 81.0, 82.0));
        assert!(d.line().ends_with("°C (peak 82), 700 W mean; throttled: sw_power_cap 10 %"), "{}", d.line());
        assert_eq!(d.throttled, vec![("sw_power_cap", 0.1)]);
        assert_eq!(burn.measurement(Subject { label: "g".into(), ranks: vec![0] }).value(), per_window, "the median window");
    }
}
