//! A probe's measurement: what was measured on which subject (a rank's GPU, a rank's view of
//! its host, a pair of ranks or hosts), the work of one repetition and the seconds each
//! repetition took. The figure is computed here, and only here, from those raw numbers.

use serde::{Deserialize, Serialize};

/// Which tolerance judges a figure against its peers' median: --tolerance-pct (GEMM, memory)
/// or --link-tolerance-pct (PCIe, NVLink, the network).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Class {
    Compute,
    Link,
}

/// How a repetition's seconds become the figure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Formula {
    /// value = work ÷ seconds (work in the unit's numerator: TFLOP, GB); higher is better.
    Rate,
    /// value = seconds × 1e6 ÷ work (work: one-way trips per repetition): µs, lower is better.
    Latency,
}

/// One kind of figure: its name in the file and the reference table, its unit, how it is
/// computed and which tolerance applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kind {
    pub name: &'static str,
    pub unit: &'static str,
    pub formula: Formula,
    pub class: Class,
    /// What is measured, for the file and the README.
    pub what: &'static str,
}

pub const GEMM_BF16: Kind = Kind {
    name: "gemm_bf16_tflops",
    unit: "TFLOP/s",
    formula: Formula::Rate,
    class: Class::Compute,
    what: "cuBLASLt bf16 GEMM 8192³ on uniform random operands, fp32 accumulation, after 100 untimed GEMMs (the rate the power limit holds): 2·8192³ FLOP per GEMM",
};
pub const HBM_COPY: Kind = Kind {
    name: "hbm_copy_gbs",
    unit: "GB/s",
    formula: Formula::Rate,
    class: Class::Compute,
    what: "device-to-device copy: bytes read + bytes written per repetition",
};
pub const HBM_READ: Kind = Kind {
    name: "hbm_read_gbs",
    unit: "GB/s",
    formula: Formula::Rate,
    class: Class::Compute,
    what: "read-only reduction kernel (sum of 32-bit words, checked against the CPU): bytes read per repetition",
};
pub const H2D: Kind =
    Kind { name: "h2d_gbs", unit: "GB/s", formula: Formula::Rate, class: Class::Link, what: "pinned host memory to the GPU: bytes per repetition" };
pub const D2H: Kind =
    Kind { name: "d2h_gbs", unit: "GB/s", formula: Formula::Rate, class: Class::Link, what: "the GPU to pinned host memory: bytes per repetition" };
pub const P2P_COPY: Kind = Kind {
    name: "p2p_copy_gbs",
    unit: "GB/s",
    formula: Formula::Rate,
    class: Class::Link,
    what: "copy engine write from this GPU to another of its host (cuMemcpyPeer): bytes per repetition",
};
pub const HOST_ALL_REDUCE: Kind = Kind {
    name: "host_all_reduce_busbw_gbs",
    unit: "GB/s",
    formula: Formula::Rate,
    class: Class::Link,
    what: "NCCL all_reduce over the GPUs of one host, fp32 sum: busbw = bytes × 2(n-1)/n per repetition",
};
pub const HOST_PAIR_ALL_REDUCE: Kind = Kind {
    name: "host_pair_all_reduce_busbw_gbs",
    unit: "GB/s",
    formula: Formula::Rate,
    class: Class::Link,
    what: "NCCL all_reduce over the GPUs of two hosts, fp32 sum, every pair of hosts (round-robin rounds, the pairs of a round at once), at several sizes: busbw = bytes × 2(n-1)/n per repetition",
};
pub const HOST_MEMCPY: Kind = Kind {
    name: "host_memcpy_gbs",
    unit: "GB/s",
    formula: Formula::Rate,
    class: Class::Compute,
    what: "host memory copy by one rank while the host's other ranks wait: bytes read + bytes written per repetition",
};
pub const MPI_BANDWIDTH: Kind = Kind {
    name: "mpi_pingpong_gbs",
    unit: "GB/s",
    formula: Formula::Rate,
    class: Class::Link,
    what: "MPI ping-pong of 4 MiB: bytes there and back per repetition",
};
pub const MPI_LATENCY: Kind =
    Kind { name: "mpi_latency_us", unit: "µs", formula: Formula::Latency, class: Class::Link, what: "MPI ping-pong of 8 bytes: half the round trip" };
pub const BURN_GEMM: Kind = Kind {
    name: "burn_gemm_tflops",
    unit: "TFLOP/s",
    formula: Formula::Rate,
    class: Class::Compute,
    what: "sustained bf16 GEMM 8192³ over --burn-s seconds, one repetition per second of load",
};

pub const ALL: [Kind; 12] =
    [GEMM_BF16, HBM_COPY, HBM_READ, H2D, D2H, P2P_COPY, HOST_ALL_REDUCE, HOST_PAIR_ALL_REDUCE, HOST_MEMCPY, MPI_BANDWIDTH, MPI_LATENCY, BURN_GEMM];

/// The kind named `name`.
pub fn kind(name: &str) -> Option<Kind> {
    ALL.into_iter().find(|k| k.name == name)
}

/// What a figure is about.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Subject {
    /// "host node-a GPU 3 (GPU-1234…)", "rank 2 on node-a", "node-a ↔ node-b".
    pub label: String,
    /// The ranks it is made of (one for a GPU, two for a pair).
    pub ranks: Vec<usize>,
}

/// One probe's raw data on one subject.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    pub kind: String,
    /// The probe's setting where it runs at several ("64 MiB"; empty where it has one): a
    /// figure's peers are the measurements of the same kind and variant.
    pub variant: String,
    pub subject: Subject,
    /// The work of one repetition in the formula's terms (TFLOP, GB, one-way trips).
    pub work: f64,
    /// Each timed repetition, seconds.
    pub seconds: Vec<f64>,
}

impl Measurement {
    pub fn new(kind: Kind, subject: Subject, work: f64, seconds: Vec<f64>) -> Measurement {
        Measurement { kind: kind.name.to_string(), variant: String::new(), subject, work, seconds }
    }

    /// The same, at one of the probe's settings.
    pub fn with_variant(self, variant: String) -> Measurement {
        Measurement { variant, ..self }
    }

    /// Whether `other` measures the same figure (kind and variant).
    pub fn same_figure(&self, other: &Measurement) -> bool {
        self.kind == other.kind && self.variant == other.variant
    }

    pub fn kind(&self) -> Kind {
        kind(&self.kind).expect("a measurement names one of figure::ALL")
    }

    /// The figure of each repetition.
    pub fn values(&self) -> Vec<f64> {
        let formula = self.kind().formula;
        self.seconds
            .iter()
            .map(|&s| match formula {
                Formula::Rate => self.work / s,
                Formula::Latency => s * 1e6 / self.work,
            })
            .collect()
    }

    /// The figure: the median over the repetitions (one late repetition moves it not at all).
    pub fn value(&self) -> f64 {
        crate::telemetry::figures::median(&self.values())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_come_from_work_and_seconds() {
        let s = Subject { label: "rank 0".into(), ranks: vec![0] };
        let gemm = Measurement::new(GEMM_BF16, s.clone(), 2.0 * 8192f64.powi(3) / 1e12, vec![1.4e-3, 1.375e-3, 9.0]);
        assert!((gemm.value() - 2.0 * 8192f64.powi(3) / 1e12 / 1.4e-3).abs() < 1e-9, "the median, not the late repetition");
        let latency = Measurement::new(MPI_LATENCY, s, 2000.0, vec![4e-3, 5e-3, 6e-3]);
        assert!((latency.value() - 2.5).abs() < 1e-12, "{}", latency.value());
        assert!(ALL.iter().all(|k| kind(k.name) == Some(*k)));
    }
}
