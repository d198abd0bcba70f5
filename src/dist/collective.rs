//! The six collectives and nccl-tests' arithmetic for each: element counts per rank from a
//! requested size, buffer layout for in-place runs, and the algbw/busbw formulas.

use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Collective {
    AllReduce,
    ReduceScatter,
    AllGather,
    Broadcast,
    AllToAll,
    SendRecv,
}

/// Element counts of one sweep row on one rank, as nccl-tests' `getCollByteCount`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counts {
    /// Elements in the send buffer.
    pub send: usize,
    /// Elements in the receive buffer.
    pub recv: usize,
    /// The count argument passed to NCCL (and printed in the `count` column).
    pub param: usize,
    /// In-place: the send data starts at `send_inplace_offset * rank` elements into the
    /// receive buffer, the result at `recv_inplace_offset * rank`.
    pub send_inplace_offset: usize,
    pub recv_inplace_offset: usize,
}

impl Counts {
    /// nccl-tests' `size` column: the larger of the two buffers, in bytes.
    pub fn bytes(&self, elem_size: usize) -> usize {
        self.send.max(self.recv) * elem_size
    }
}

impl Collective {
    pub const ALL: [Collective; 6] =
        [Collective::AllReduce, Collective::ReduceScatter, Collective::AllGather, Collective::Broadcast, Collective::AllToAll, Collective::SendRecv];

    pub fn name(self) -> &'static str {
        match self {
            Collective::AllReduce => "all_reduce",
            Collective::ReduceScatter => "reduce_scatter",
            Collective::AllGather => "all_gather",
            Collective::Broadcast => "broadcast",
            Collective::AllToAll => "alltoall",
            Collective::SendRecv => "sendrecv",
        }
    }

    pub fn reduces(self) -> bool {
        matches!(self, Collective::AllReduce | Collective::ReduceScatter)
    }

    /// nccl-tests does not check in-place alltoall and sendrecv: the peer may read the buffer
    /// this rank is receiving into.
    pub fn in_place_is_checked(self) -> bool {
        !matches!(self, Collective::AllToAll | Collective::SendRecv)
    }

    pub fn has_root(self) -> bool {
        self == Collective::Broadcast
    }

    /// Counts for a requested `size_bytes` (the `-b .. -e` value) with `ranks` ranks.
    /// Per-rank blocks are rounded down to 16 bytes, as nccl-tests 2.19 does.
    pub fn counts(self, size_bytes: usize, elem_size: usize, ranks: usize) -> Counts {
        let count = size_bytes / elem_size;
        let block = (count / ranks) & !(16 / elem_size - 1);
        let same = |c| Counts { send: c, recv: c, param: c, send_inplace_offset: 0, recv_inplace_offset: 0 };
        match self {
            Collective::AllReduce | Collective::Broadcast | Collective::SendRecv => same(count),
            Collective::ReduceScatter => Counts { send: block * ranks, recv: block, param: block, send_inplace_offset: 0, recv_inplace_offset: block },
            Collective::AllGather => Counts { send: block, recv: block * ranks, param: block, send_inplace_offset: block, recv_inplace_offset: 0 },
            Collective::AllToAll => Counts { param: block, ..same(block * ranks) },
        }
    }

    /// algbw in GB/s (1e9 bytes) for `param` elements moved in `seconds`, as nccl-tests.
    pub fn algbw_gbs(self, param: usize, elem_size: usize, ranks: usize, seconds: f64) -> f64 {
        let bytes = match self {
            Collective::AllReduce | Collective::Broadcast | Collective::SendRecv => param * elem_size,
            Collective::ReduceScatter | Collective::AllGather | Collective::AllToAll => param * elem_size * ranks,
        };
        bytes as f64 / 1.0e9 / seconds
    }

    /// Bytes one rank sends when `bytes` is the size of the whole gathered or reduced buffer,
    /// with ring algorithms: the bus bytes, bytes × busbw_factor in integers.
    pub fn bus_bytes(self, ranks: usize, bytes: usize) -> u64 {
        let once = (bytes * (ranks - 1) / ranks) as u64;
        match self {
            Collective::AllReduce => 2 * once,
            Collective::ReduceScatter | Collective::AllGather | Collective::AllToAll => once,
            Collective::Broadcast | Collective::SendRecv => bytes as u64,
        }
    }

    /// busbw = algbw × this factor (nccl-tests' PERFORMANCE.md).
    pub fn busbw_factor(self, ranks: usize) -> f64 {
        let n = ranks as f64;
        match self {
            Collective::AllReduce => 2.0 * (n - 1.0) / n,
            Collective::ReduceScatter | Collective::AllGather | Collective::AllToAll => (n - 1.0) / n,
            Collective::Broadcast | Collective::SendRecv => 1.0,
        }
    }
}

impl fmt::Display for Collective {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Collective {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let wanted = s.to_ascii_lowercase().replace('-', "_");
        Collective::ALL.into_iter().find(|c| c.name() == wanted || c.name().replace('_', "") == wanted).ok_or_else(|| {
            let names: Vec<_> = Collective::ALL.iter().map(|c| c.name()).collect();
            format!("unknown collective '{s}' (one of: {})", names.join(", "))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_follow_nccl_tests() {
        // 8 B of float on 2 ranks: all_gather's per-rank block rounds down to 0 elements
        assert_eq!(Collective::AllGather.counts(8, 4, 2).param, 0);
        // 1 MiB float all_gather on 3 ranks: 87381 elements per rank, rounded to 87380 (16 B)
        let c = Collective::AllGather.counts(1 << 20, 4, 3);
        assert_eq!((c.send, c.recv, c.param), (87380, 262140, 87380));
        assert_eq!(c.bytes(4), 1048560);
        let c = Collective::ReduceScatter.counts(1 << 20, 2, 4);
        assert_eq!((c.send, c.recv, c.recv_inplace_offset), (524288, 131072, 131072));
        let c = Collective::AllToAll.counts(1000, 1, 3);
        assert_eq!((c.send, c.recv, c.param), (960, 960, 320));
        let c = Collective::AllReduce.counts(1001, 8, 4);
        assert_eq!((c.send, c.recv, c.param), (125, 125, 125));
    }

    #[test]
    fn bandwidth_formulas() {
        // 1 GB all_reduce in 1 s on 4 ranks: algbw 1, busbw 1.5
        let alg = Collective::AllReduce.algbw_gbs(250_000_000, 4, 4, 1.0);
        assert!((alg - 1.0).abs() < 1e-12);
        assert!((Collective::AllReduce.busbw_factor(4) - 1.5).abs() < 1e-12);
        // all_gather counts the whole gathered buffer
        let alg = Collective::AllGather.algbw_gbs(1_000_000, 1, 8, 1e-3);
        assert!((alg - 8.0).abs() < 1e-9);
        assert!((Collective::AllToAll.busbw_factor(8) - 0.875).abs() < 1e-12);
        assert_eq!(Collective::SendRecv.busbw_factor(8), 1.0);
        assert_eq!(Collective::Broadcast.busbw_factor(2), 1.0);
        // the bytes a rank sends: the same factors, in integers
        assert_eq!(Collective::AllReduce.bus_bytes(4, 1000), 1500);
        assert_eq!(Collective::AllGather.bus_bytes(8, 800), 700);
        assert_eq!(Collective::ReduceScatter.bus_bytes(1, 800), 0);
    }

    #[test]
    fn parse_names() {
        assert_eq!("alltoall".parse::<Collective>().unwrap(), Collective::AllToAll);
        assert_eq!("allreduce".parse::<Collective>().unwrap(), Collective::AllReduce);
        assert_eq!("reduce-scatter".parse::<Collective>().unwrap(), Collective::ReduceScatter);
        assert!("gather".parse::<Collective>().is_err());
    }
}
