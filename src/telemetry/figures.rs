//! Figures from the telemetry: energy per token and mean power from the energy counter read at
//! step boundaries, and, from the samples of the measured phases, peak temperatures and the
//! share of samples each throttle reason was active in.

use super::sample::Sample;
use nvml_wrapper::bitmasks::device::ThrottleReasons;

/// The clock-event (throttle) reasons NVML reports, by name.
pub const THROTTLE_REASONS: [(&str, ThrottleReasons); 9] = [
    ("gpu_idle", ThrottleReasons::GPU_IDLE),
    ("applications_clocks_setting", ThrottleReasons::APPLICATIONS_CLOCKS_SETTING),
    ("sw_power_cap", ThrottleReasons::SW_POWER_CAP),
    ("hw_slowdown", ThrottleReasons::HW_SLOWDOWN),
    ("sync_boost", ThrottleReasons::SYNC_BOOST),
    ("sw_thermal_slowdown", ThrottleReasons::SW_THERMAL_SLOWDOWN),
    ("hw_thermal_slowdown", ThrottleReasons::HW_THERMAL_SLOWDOWN),
    ("hw_power_brake_slowdown", ThrottleReasons::HW_POWER_BRAKE_SLOWDOWN),
    ("display_clock_setting", ThrottleReasons::DISPLAY_CLOCK_SETTING),
];

/// One rank's samples of the measured phases, summed up as they arrive.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RankStats {
    pub samples: usize,
    /// NaN until a sample has the field.
    pub peak_temp_gpu_c: f64,
    pub peak_temp_hbm_c: f64,
    /// Samples with a throttle bitmask, and per reason those with its bit set.
    pub throttle_samples: usize,
    pub throttled: [usize; THROTTLE_REASONS.len()],
    /// XID events its GPU reported, in any phase.
    pub xid_events: usize,
}

impl RankStats {
    pub fn new() -> RankStats {
        RankStats { peak_temp_gpu_c: f64::NAN, peak_temp_hbm_c: f64::NAN, ..Default::default() }
    }

    pub fn add(&mut self, s: &Sample) {
        self.samples += 1;
        // f64::max keeps the number over a NaN: missing fields change nothing.
        self.peak_temp_gpu_c = self.peak_temp_gpu_c.max(s.get("temp_gpu_c"));
        self.peak_temp_hbm_c = self.peak_temp_hbm_c.max(s.get("temp_hbm_c"));
        let bits = s.get("throttle_reasons");
        if bits.is_finite() {
            self.throttle_samples += 1;
            for (count, (_, reason)) in self.throttled.iter_mut().zip(THROTTLE_REASONS) {
                *count += (bits as u64 & reason.bits() != 0) as usize;
            }
        }
    }

    /// Per reason, the share of the measured samples it was active in (NaN without any).
    pub fn throttle_shares(&self) -> [f64; THROTTLE_REASONS.len()] {
        self.throttled.map(|n| if self.throttle_samples == 0 { f64::NAN } else { n as f64 / self.throttle_samples as f64 })
    }
}

/// Energy of a training run from each rank's counter read at every step boundary.
#[derive(Clone, Debug, PartialEq)]
pub struct EnergyFigures {
    /// Joules over every rank and measured step, per token processed.
    pub joules_per_token: f64,
    pub tokens_per_kwh: f64,
    /// Per rank: its measured energy over its measured time.
    pub mean_power_w: Vec<f64>,
}

/// `energy_j[rank][step]`: the counter's rise from one step boundary to the next, and
/// `interval_s[rank][step]` the time between those readings, of every rank; `tokens` per rank
/// and step, the first `warmup` steps left out. NaN without an energy counter.
pub fn energy(energy_j: &[Vec<f64>], interval_s: &[Vec<f64>], tokens: usize, warmup: usize) -> EnergyFigures {
    let measured = |v: &Vec<f64>| v.iter().skip(warmup).sum::<f64>();
    let joules: f64 = energy_j.iter().map(measured).sum();
    let steps = energy_j.first().map_or(0, |v| v.len().saturating_sub(warmup));
    let all_tokens = (tokens * steps * energy_j.len()) as f64;
    let joules_per_token = joules / all_tokens;
    EnergyFigures {
        joules_per_token,
        tokens_per_kwh: 3.6e6 / joules_per_token,
        mean_power_w: energy_j.iter().zip(interval_s).map(|(e, s)| measured(e) / measured(s)).collect(),
    }
}

/// Which ranks were slower than the others: in SFT by their measured steps' compute, in the
/// sweeps by their launch times against each row's median.
#[derive(Clone, Debug, PartialEq)]
pub struct Stragglers {
    /// Per rank, the median of its measured values.
    pub median_per_rank: Vec<f64>,
    /// Per rank, the median of the other ranks' medians: what it is held against (in a small
    /// world a slow rank would drag a median that includes it).
    pub others: Vec<f64>,
    pub slowest: usize,
    /// The ranks more than the threshold above the others, slowest first.
    pub slow: Vec<usize>,
}

/// The median of the finite values (NaN without any).
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// `values[rank][step]`: SFT passes each step's time less the communication the rank waited
/// for (in data parallel every rank's step lasts as long as the slowest's; the others wait),
/// the sweeps each row's launch time over the row's median. The first `warmup` are left out;
/// `pct`: the threshold above the other ranks' median.
pub fn stragglers(values: &[Vec<f64>], warmup: usize, pct: f64) -> Stragglers {
    let median_per_rank: Vec<f64> = values.iter().map(|steps| median(&steps[warmup.min(steps.len())..])).collect();
    let n = median_per_rank.len();
    let others: Vec<f64> = (0..n).map(|r| median(&[&median_per_rank[..r], &median_per_rank[r + 1..]].concat())).collect();
    let slowest = (0..n).max_by(|&a, &b| median_per_rank[a].total_cmp(&median_per_rank[b])).unwrap_or(0);
    let mut slow: Vec<usize> = (0..n).filter(|&r| median_per_rank[r] > others[r] * (1.0 + pct / 100.0)).collect();
    slow.sort_by(|&a, &b| median_per_rank[b].total_cmp(&median_per_rank[a]));
    Stragglers { median_per_rank, others, slowest, slow }
}

impl Stragglers {
    /// The slowest rank's line, then one warning line per straggler with the throttle reasons
    /// its GPU showed (`stats`, empty without telemetry); `(measure, unit)` names the values.
    pub fn lines(&self, hosts: &[String], stats: &[RankStats], pct: f64, (measure, unit): (&str, &str)) -> String {
        if self.median_per_rank.len() < 2 {
            return String::new();
        }
        let above = |r: usize| 100.0 * (self.median_per_rank[r] / self.others[r] - 1.0);
        let s = self.slowest;
        let mut out = format!(
            "# slowest rank: {s} on {}: median {measure} {:.4}{unit}, {:+.1}% against the other ranks' median ({:.4}{unit})\n",
            hosts[s],
            self.median_per_rank[s],
            above(s),
            self.others[s]
        );
        for &r in &self.slow {
            let reasons: Vec<String> = stats.get(r).map_or(Vec::new(), |st| {
                THROTTLE_REASONS.iter().zip(st.throttle_shares()).filter(|(_, x)| *x > 0.0).map(|((n, _), x)| format!("{n} {:.0}%", 100.0 * x)).collect()
            });
            let showed = if stats.get(r).is_none_or(|st| st.throttle_samples == 0) {
                "no GPU telemetry".to_string()
            } else if reasons.is_empty() {
                "no clock-event reason".to_string()
            } else {
                reasons.join(", ")
            };
            out += &format!(
                "h200-mpibench: straggler: rank {r} on {}: median {measure} {:.4}{unit}, {:.1}% above the other ranks' median ({:.4}{unit}, threshold {pct}%); its GPU showed {showed}\n",
                hosts[r], self.median_per_rank[r], above(r), self.others[r]
            );
        }
        out
    }
}

/// What rank 0 prints of a training run's telemetry: energy, then peak temperatures and the
/// throttle reasons seen in the measured steps (nothing where nothing was read).
pub fn sft_lines(e: &EnergyFigures, stats: &[RankStats]) -> String {
    let mut out = String::new();
    if e.joules_per_token.is_finite() {
        let (lo, hi) = e.mean_power_w.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &p| (lo.min(p), hi.max(p)));
        out += &format!("# energy: {:.4} J per token, {:.3e} tokens per kWh, mean power {lo:.0}-{hi:.0} W per GPU\n", e.joules_per_token, e.tokens_per_kwh);
    }
    let peak = |f: fn(&RankStats) -> f64| stats.iter().map(f).fold(f64::NAN, f64::max);
    let (gpu, hbm) = (peak(|s| s.peak_temp_gpu_c), peak(|s| s.peak_temp_hbm_c));
    if gpu.is_finite() {
        out += &format!("# peak temperature: GPU {gpu:.0} C, HBM {hbm:.0} C\n");
    }
    let throttled: Vec<String> = THROTTLE_REASONS
        .iter()
        .enumerate()
        .filter_map(|(i, (name, _))| {
            let shares: Vec<f64> = stats.iter().map(|s| s.throttle_shares()[i]).filter(|x| x.is_finite()).collect();
            let worst = shares.iter().fold(0.0f64, |a, &b| a.max(b));
            (worst > 0.0).then(|| format!("{name} {:.0}%", 100.0 * worst))
        })
        .collect();
    if stats.iter().any(|s| s.throttle_samples > 0) {
        let seen = if throttled.is_empty() { "none".to_string() } else { throttled.join(", ") };
        out += &format!("# clock-event reasons in the measured steps (share of samples, worst GPU): {seen}\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::sample::{field, missing};

    #[test]
    fn energy_per_token_from_a_synthetic_counter() {
        // Two ranks, 3 steps of 0.5 s, the first warm-up: 300 J then 200 J a step on rank 0,
        // 250 J on rank 1; 1000 tokens per rank and step.
        let e = [vec![300.0, 200.0, 200.0], vec![300.0, 250.0, 250.0]];
        let s = [vec![0.5; 3], vec![0.5; 3]];
        let f = energy(&e, &s, 1000, 1);
        assert!((f.joules_per_token - 900.0 / 4000.0).abs() < 1e-12);
        assert!((f.tokens_per_kwh - 3.6e6 / 0.225).abs() < 1e-6);
        assert_eq!(f.mean_power_w, vec![400.0, 500.0]);
        assert!(energy(&[vec![f64::NAN; 3]], &[vec![0.5; 3]], 1000, 1).joules_per_token.is_nan(), "no counter, no figure");
    }

    #[test]
    fn the_slow_rank_is_named_and_only_it() {
        let fast = vec![9.0, 0.20, 0.21, 0.19, 0.20];
        let slow = vec![9.0, 0.41, 0.40, 0.42, 0.40];
        let s = stragglers(&[fast.clone(), fast.clone(), slow, fast], 1, 5.0);
        assert_eq!((s.slowest, s.slow.clone(), s.others[2]), (2, vec![2], 0.2));
        let hosts: Vec<String> = (0..4).map(|r| format!("h{r}")).collect();
        let lines = s.lines(&hosts, &[], 5.0, ("step compute", " s"));
        assert!(lines.contains("# slowest rank: 2 on h2") && lines.contains("straggler: rank 2 on h2") && lines.contains("no GPU telemetry"), "{lines}");
        assert_eq!(lines.matches("straggler:").count(), 1);
        let even = stragglers(&[vec![0.2; 3], vec![0.203; 3]], 0, 5.0);
        assert!(even.slow.is_empty() && even.slowest == 1);
        // Two ranks: the slow one is held against the other, not against a median it drags.
        let two = stragglers(&[vec![0.16; 3], vec![0.47; 3]], 0, 50.0);
        assert_eq!(two.slow, vec![1]);
    }

    #[test]
    fn throttle_shares_and_peaks_count_only_what_was_read() {
        let mut stats = RankStats::new();
        for (temp, bits) in [(60.0, ThrottleReasons::SW_POWER_CAP.bits()), (71.0, 0), (f64::NAN, ThrottleReasons::SW_POWER_CAP.bits())] {
            let mut r = missing();
            r[field("temp_gpu_c")] = temp;
            r[field("throttle_reasons")] = bits as f64;
            stats.add(&Sample::new(0.0, "p".into(), &r));
        }
        stats.add(&Sample::new(0.0, "p".into(), &missing()));
        assert_eq!((stats.samples, stats.throttle_samples, stats.peak_temp_gpu_c), (4, 3, 71.0));
        let shares = stats.throttle_shares();
        assert!((shares[2] - 2.0 / 3.0).abs() < 1e-12 && shares[0] == 0.0);
        assert!(stats.peak_temp_hbm_c.is_nan());
    }
}
