//! The verdicts: each measurement against the median of the same figure over its peers (every
//! other GPU, host or pair: in a small world a slow one would drag a median that includes it,
//! as in the straggler rule of telemetry/figures.rs) and against its GPU model's reference
//! table. A figure fails beyond either limit; without peers only the reference judges it.

use super::figure::{Formula, Measurement};
use super::reference::Reference;
use crate::telemetry::figures::median;

/// A latency passes up to this far above its median whatever the tolerance: microsecond
/// latencies jitter by tenths of a microsecond with the scheduler, and a bad link costs more.
pub const LATENCY_SLACK_US: f64 = 0.5;

/// Percentages: figures of Class::Compute and of Class::Link.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerances {
    pub compute_pct: f64,
    pub link_pct: f64,
}

/// One figure's verdict.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub figure: String,
    pub unit: &'static str,
    pub subject: String,
    pub ranks: Vec<usize>,
    pub value: f64,
    /// The median of this figure over its peers (NaN without any), and how many there are.
    pub median: f64,
    pub peers: usize,
    /// The median's limit: value must be at least (rates) or at most (latencies) this (NaN
    /// without peers).
    pub median_limit: f64,
    /// The reference's limit and what it is, where the table has the figure.
    pub reference: Option<(f64, String)>,
    pub passed: bool,
}

impl Verdict {
    /// "host a GPU 3 (GPU-…): gemm_bf16_tflops 402.1 TFLOP/s, median 790.2 over 8, limit …"
    pub fn line(&self) -> String {
        let lower = super::figure::kind(&self.figure).is_some_and(|k| k.formula == Formula::Latency);
        let side = if lower { "at most" } else { "at least" };
        let reference = match &self.reference {
            Some((limit, what)) => format!("; reference {side} {} ({what})", number(*limit)),
            None => "; no reference".to_string(),
        };
        let median = match self.peers {
            0 => "no peers to compare with".to_string(),
            n => format!("median {} of {n} peer(s), median's limit {side} {}", number(self.median), number(self.median_limit)),
        };
        format!("{}: {} {} {}, {median}{reference}", self.subject, self.figure, number(self.value), self.unit)
    }
}

/// Three significant figures or more, no exponent for everyday magnitudes.
pub fn number(x: f64) -> String {
    match x.abs() {
        a if !a.is_finite() => format!("{x}"),
        a if a >= 100.0 => format!("{x:.0}"),
        a if a >= 10.0 => format!("{x:.1}"),
        a if a >= 0.01 || a == 0.0 => format!("{x:.2}"),
        _ => format!("{x:.2e}"),
    }
}

/// Every measurement's verdict, in their order. `reference_of(rank)`: the table that applies to
/// that rank's GPU (None: judged against the median only).
pub fn judge<'r>(measurements: &[Measurement], tolerances: Tolerances, reference_of: &dyn Fn(usize) -> Option<&'r Reference>) -> Vec<Verdict> {
    let values: Vec<f64> = measurements.iter().map(Measurement::value).collect();
    measurements
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let kind = m.kind();
            // A peer without a figure (NaN) is no peer.
            let peers: Vec<f64> =
                (0..measurements.len()).filter(|&j| j != i && measurements[j].same_figure(m) && values[j].is_finite()).map(|j| values[j]).collect();
            let mid = median(&peers);
            let pct = match kind.class {
                super::figure::Class::Compute => tolerances.compute_pct,
                super::figure::Class::Link => tolerances.link_pct,
            } / 100.0;
            let lower = kind.formula == Formula::Latency;
            let median_limit = if lower { (mid * (1.0 + pct)).max(mid + LATENCY_SLACK_US) } else { mid * (1.0 - pct) };
            let reference = m.subject.ranks.first().and_then(|&r| reference_of(r)).and_then(|table| {
                let (entry, source) = table.entry(kind.name)?;
                let (limit, how) = match (entry.expected, entry.min, entry.max) {
                    (Some(e), _, _) if lower => (e * (1.0 + pct), format!("{} {} + {}%", number(e), kind.unit, pct * 100.0)),
                    (Some(e), _, _) => (e * (1.0 - pct), format!("{} {} − {}%", number(e), kind.unit, pct * 100.0)),
                    (_, Some(min), _) => (min, "minimum".to_string()),
                    (_, _, Some(max)) => (max, "maximum".to_string()),
                    _ => return None,
                };
                Some((limit, format!("{}, {how}: {source}", table.gpu)))
            });
            let value = values[i];
            let within = |limit: f64| if lower { value <= limit } else { value >= limit };
            let passed = value.is_finite() && (peers.is_empty() || within(median_limit)) && reference.as_ref().is_none_or(|(limit, _)| within(*limit));
            Verdict {
                figure: kind.name.to_string(),
                unit: kind.unit,
                subject: if m.variant.is_empty() { m.subject.label.clone() } else { format!("{}, {}", m.subject.label, m.variant) },
                ranks: m.subject.ranks.clone(),
                value,
                median: mid,
                peers: peers.len(),
                median_limit,
                reference,
                passed,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::figure::{Subject, GEMM_BF16, H2D, MPI_LATENCY};

    fn on(rank: usize, kind: crate::verify::figure::Kind, value: f64) -> Measurement {
        // One repetition of one second: the figure is the work (a latency: 1e6 / work).
        let work = if kind.formula == Formula::Latency { 1e6 / value } else { value };
        Measurement::new(kind, Subject { label: format!("rank {rank}"), ranks: vec![rank] }, work, vec![1.0, 1.0, 1.0])
    }

    const TOL: Tolerances = Tolerances { compute_pct: 5.0, link_pct: 10.0 };

    #[test]
    fn the_outlier_fails_against_the_median_and_only_it() {
        let mut all: Vec<Measurement> = (0..7).map(|r| on(r, GEMM_BF16, 790.0 + r as f64)).collect();
        all.push(on(7, GEMM_BF16, 700.0));
        let v = judge(&all, TOL, &|_| None);
        assert_eq!(v.iter().filter(|v| !v.passed).map(|v| v.ranks[0]).collect::<Vec<_>>(), vec![7]);
        assert!((v[7].median - 793.0).abs() < 1e-9 && v[7].peers == 7, "the median of the others");
        assert!(
            v[7].line().starts_with("rank 7: gemm_bf16_tflops 700 TFLOP/s, median 793 of 7 peer(s), median's limit at least 753; no reference"),
            "{}",
            v[7].line()
        );
        // 4.9 % below the median passes at 5 %; a faster one never fails.
        let v = judge(&[on(0, GEMM_BF16, 100.0), on(1, GEMM_BF16, 95.2), on(2, GEMM_BF16, 100.0), on(3, GEMM_BF16, 300.0)], TOL, &|_| None);
        assert!(v.iter().all(|v| v.passed), "{v:?}");
        // Two ranks: each against the other; one alone has no peers.
        let v = judge(&[on(0, GEMM_BF16, 100.0), on(1, GEMM_BF16, 50.0)], TOL, &|_| None);
        assert_eq!(v.iter().map(|v| v.passed).collect::<Vec<_>>(), [true, false]);
        let v = judge(&[on(0, GEMM_BF16, 1.0)], TOL, &|_| None);
        assert!(v[0].passed && v[0].median.is_nan() && v[0].line().ends_with("no peers to compare with; no reference"), "{}", v[0].line());
    }

    #[test]
    fn a_figure_at_several_sizes_has_peers_of_its_size_only() {
        let pair = |r: usize, v: f64, size: &str| on(r, crate::verify::figure::HOST_PAIR_ALL_REDUCE, v).with_variant(size.into());
        let all = [
            pair(0, 40.0, "64 MiB"),
            pair(2, 41.0, "64 MiB"),
            pair(4, 40.5, "64 MiB"),
            pair(0, 180.0, "1 GiB"),
            pair(2, 182.0, "1 GiB"),
            pair(4, 120.0, "1 GiB"),
        ];
        let v = judge(&all, TOL, &|_| None);
        assert_eq!(v.iter().map(|v| v.passed).collect::<Vec<_>>(), [true, true, true, true, true, false]);
        assert!(v.iter().all(|v| v.peers == 2) && v[5].subject == "rank 4, 1 GiB", "{v:?}");
    }

    #[test]
    fn latencies_fail_above_and_links_take_their_own_tolerance() {
        let v = judge(&[on(0, MPI_LATENCY, 20.0), on(1, MPI_LATENCY, 21.0), on(2, MPI_LATENCY, 20.0), on(3, MPI_LATENCY, 23.0)], TOL, &|_| None);
        // 23 against the others' median 20 fails at 10 %, 21 against 20 passes.
        assert_eq!(v.iter().map(|v| v.passed).collect::<Vec<_>>(), [true, true, true, false]);
        assert!(v[3].line().contains("median 20.0 of 3 peer(s), median's limit at most 22.0"), "{}", v[3].line());
        // Microseconds: the slack, not the 10 %, sets the limit.
        let v = judge(&[2.0, 2.0, 2.0, 2.4, 2.6].iter().enumerate().map(|(r, &us)| on(r, MPI_LATENCY, us)).collect::<Vec<_>>(), TOL, &|_| None);
        assert_eq!(v.iter().map(|v| v.passed).collect::<Vec<_>>(), [true, true, true, true, false]);
        let v = judge(&[on(0, H2D, 50.0), on(1, H2D, 46.0)], TOL, &|_| None);
        assert!(v.iter().all(|v| v.passed), "46 is within 10 % of 48");
    }

    #[test]
    fn the_reference_fails_a_whole_slow_cluster_and_says_why() {
        let table = Reference::for_gpu("NVIDIA H200").unwrap();
        let all: Vec<Measurement> = (0..4).map(|r| on(r, GEMM_BF16, 600.0)).chain([on(4, H2D, 40.0), on(5, H2D, 55.0)]).collect();
        let v = judge(&all, TOL, &|_| Some(&table));
        assert!(v[..4].iter().all(|v| !v.passed && v.median == 600.0), "equal to their peers, below 698 − 5 %");
        let (limit, what) = v[0].reference.clone().unwrap();
        assert!((limit - 698.0 * 0.95).abs() < 1e-9 && what.starts_with("NVIDIA H200, 698 TFLOP/s − 5%"), "{what}");
        assert_eq!((v[4].passed, v[5].passed), (false, true), "below Azure's 48 GB/s fails, whatever the median");
        assert!(v[4].line().contains("reference at least 48.0 (NVIDIA H200, minimum: Azure"), "{}", v[4].line());
        let v = judge(&[on(0, GEMM_BF16, f64::NAN), on(1, GEMM_BF16, 700.0)], TOL, &|_| None);
        assert!(!v[0].passed, "a figure that is not a number fails");
        assert!(v[1].passed && v[1].peers == 0, "and is nobody's peer");
    }
}
