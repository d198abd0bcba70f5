//! The exact verification data. Every input element is a small integer drawn from a hash of
//! (seed, rank, index), bounded so that any reduction order gives the same exactly
//! representable result in the element type; expected outputs are recomputed from the same
//! hash, so no expected buffer is needed. kernels/fill_verify.cu implements the same
//! arithmetic on the GPU; `selftest`-style checks at sweep start compare the two.

use super::dtype::{DType, Encoding};
use super::redop::RedOp;
use crate::dist::collective::{Collective, Counts};
use rayon::prelude::*;

/// Values never exceed this magnitude, so that misplaced elements differ with high probability
/// while sums stay far from the exactness limit of wide types.
const MAX_MAGNITUDE: i64 = 1000;

#[derive(Clone, Copy, Debug)]
pub struct Pattern {
    pub dtype: DType,
    /// The reduction the data is shaped for (Sum for the collectives that only move data).
    pub op: RedOp,
    pub ranks: usize,
    pub seed: u64,
}

/// Where output element `j` of a rank comes from: kernel code and arguments shared with
/// fill_verify.cu (`MAP_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mapping {
    /// out[j] = reduce over every rank s of in_s[offset + j]
    Reduce { offset: usize },
    /// out[j] = in_{j / block}[j % block]
    Gather { block: usize },
    /// out[j] = in_{j / block}[offset + j % block]
    AllToAll { block: usize, offset: usize },
    /// out[j] = in_source[j]
    Copy { source: usize },
}

impl Mapping {
    /// The mapping of `collective`'s output on `rank`, for the given counts and root.
    pub fn of(collective: Collective, counts: &Counts, rank: usize, ranks: usize, root: usize) -> Self {
        match collective {
            Collective::AllReduce => Mapping::Reduce { offset: 0 },
            Collective::ReduceScatter => Mapping::Reduce { offset: rank * counts.param },
            Collective::AllGather => Mapping::Gather { block: counts.param.max(1) },
            Collective::AllToAll => Mapping::AllToAll { block: counts.param.max(1), offset: rank * counts.param },
            Collective::Broadcast => Mapping::Copy { source: root },
            Collective::SendRecv => Mapping::Copy { source: (rank + ranks - 1) % ranks },
        }
    }

    /// (code, a, b) as passed to the verify kernel.
    pub fn kernel_args(self) -> (i32, u64, u64) {
        match self {
            Mapping::Reduce { offset } => (0, 0, offset as u64),
            Mapping::Gather { block } => (1, block as u64, 0),
            Mapping::AllToAll { block, offset } => (2, block as u64, offset as u64),
            Mapping::Copy { source } => (3, 0, source as u64),
        }
    }
}

/// splitmix64 over (seed, rank, index): identical in fill_verify.cu.
pub fn mix(seed: u64, rank: u64, index: u64) -> u64 {
    let x = seed ^ rank.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Pattern {
    /// The input value of element `index` on `rank`.
    pub fn value(&self, rank: usize, index: u64) -> i64 {
        let n = self.ranks as i64;
        let spread = (rank as u64 + index) % self.ranks as u64;
        if self.op == RedOp::Prod {
            // Each element gets k(index) factors of two, k bounded so 2^k stays exact.
            let k_max = n.min(self.dtype.max_power_of_two() as i64) as u64;
            let k = mix(self.seed, self.ranks as u64, index) % (k_max + 1);
            return if spread < k { 2 } else { 1 };
        }
        let capacity = self.dtype.exact_capacity();
        let (active, w_max) = if n <= capacity {
            (true, (capacity / n).min(MAX_MAGNITUDE))
        } else {
            // More ranks than exact integers: only `capacity` ranks contribute to each element.
            (spread < capacity as u64, 1)
        };
        if !active {
            return 0;
        }
        let h = mix(self.seed, rank as u64, index);
        let w = match self.dtype.encoding() {
            Encoding::Unsigned => (h % (w_max as u64 + 1)) as i64,
            _ => (h % (2 * w_max as u64 + 1)) as i64 - w_max,
        };
        // Float avg scales each input by 1/n before summing (NCCL's PreMulSum): n*w scales to w.
        if self.op == RedOp::Avg && self.dtype.is_float() {
            w * n
        } else {
            w
        }
    }

    /// The expected value of output element `j` under `mapping`.
    pub fn expected(&self, mapping: Mapping, j: u64) -> i64 {
        match mapping {
            Mapping::Reduce { offset } => {
                let index = offset as u64 + j;
                let total = (1..self.ranks).fold(self.value(0, index), |acc, s| self.op.combine(acc, self.value(s, index)));
                if self.op == RedOp::Avg {
                    total / self.ranks as i64 // exact for floats by construction, truncating for integers
                } else {
                    total
                }
            }
            Mapping::Gather { block } => {
                let b = block as u64;
                self.value((j / b) as usize, j % b)
            }
            Mapping::AllToAll { block, offset } => {
                let b = block as u64;
                self.value((j / b) as usize, offset as u64 + j % b)
            }
            Mapping::Copy { source } => self.value(source, j),
        }
    }
}

/// Host versions of the fill and verify kernels, over little-endian element bytes.
impl Pattern {
    pub fn write_values(&self, rank: usize, bytes: &mut [u8]) {
        let size = self.dtype.size();
        bytes.par_chunks_mut(size).enumerate().for_each(|(i, element)| {
            let bits = self.dtype.encode(self.value(rank, i as u64));
            element.copy_from_slice(&bits.to_le_bytes()[..size]);
        });
    }

    pub fn count_mismatches(&self, mapping: Mapping, bytes: &[u8]) -> u64 {
        let size = self.dtype.size();
        bytes
            .par_chunks(size)
            .enumerate()
            .filter(|(j, element)| {
                let mut padded = [0u8; 8];
                padded[..size].copy_from_slice(element);
                u64::from_le_bytes(padded) != self.dtype.encode(self.expected(mapping, *j as u64))
            })
            .count() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::{bf16, f16};

    /// Reduces in a shuffled order in the element type itself and checks the bits match.
    fn reduce_in_dtype_any_order(p: &Pattern, index: u64, order: &[usize]) -> u64 {
        let to_f64 = |v: i64| v as f64;
        let round = |x: f64| -> f64 {
            match p.dtype {
                DType::Float16 => f16::from_f64(x).to_f64(),
                DType::Bfloat16 => bf16::from_f64(x).to_f64(),
                DType::Float32 => x as f32 as f64,
                _ => x,
            }
        };
        let scale = if p.op == RedOp::Avg { 1.0 / p.ranks as f64 } else { 1.0 };
        let mut acc: Option<f64> = None;
        for &s in order {
            let x = round(round(to_f64(p.value(s, index))) * scale);
            acc = Some(match acc {
                None => x,
                Some(a) => round(match p.op {
                    RedOp::Sum | RedOp::Avg => a + x,
                    RedOp::Prod => a * x,
                    RedOp::Min => a.min(x),
                    RedOp::Max => a.max(x),
                }),
            });
        }
        let v = acc.unwrap();
        assert_eq!(v.fract(), 0.0);
        p.dtype.encode(v as i64)
    }

    #[test]
    fn reductions_are_exact_in_any_order() {
        for dtype in [DType::Float16, DType::Bfloat16, DType::Float32] {
            for op in RedOp::ALL {
                for ranks in [1usize, 2, 3, 7, 64, 300] {
                    let p = Pattern { dtype, op, ranks, seed: 42 };
                    let forward: Vec<usize> = (0..ranks).collect();
                    let backward: Vec<usize> = (0..ranks).rev().collect();
                    let interleaved: Vec<usize> = (0..ranks).step_by(2).chain((1..ranks).step_by(2)).collect();
                    for index in 0..200u64 {
                        let want = p.dtype.encode(p.expected(Mapping::Reduce { offset: 0 }, index));
                        for order in [&forward, &backward, &interleaved] {
                            if op == RedOp::Avg && ranks > p.dtype.exact_capacity() as usize {
                                continue; // documented limit: avg over more ranks than exact integers
                            }
                            assert_eq!(reduce_in_dtype_any_order(&p, index, order), want, "{dtype} {op} ranks {ranks} index {index}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn values_fit_their_type_and_vary() {
        for dtype in DType::ALL {
            let p = Pattern { dtype, op: RedOp::Sum, ranks: 4, seed: 7 };
            let values: Vec<i64> = (0..1000).map(|i| p.value(1, i)).collect();
            let distinct: std::collections::HashSet<_> = values.iter().collect();
            assert!(distinct.len() >= 5, "{dtype}: too few distinct values");
            assert!(values.iter().all(|v| v.abs() <= dtype.exact_capacity()));
        }
    }

    #[test]
    fn mappings_pick_the_right_source() {
        let p = Pattern { dtype: DType::Int32, op: RedOp::Sum, ranks: 4, seed: 3 };
        let counts = Collective::AllGather.counts(4 * 4 * 8, 4, 4);
        let m = Mapping::of(Collective::AllGather, &counts, 2, 4, 0);
        assert_eq!(p.expected(m, 8 + 3), p.value(1, 3));
        let counts = Collective::AllToAll.counts(4 * 4 * 8, 4, 4);
        let m = Mapping::of(Collective::AllToAll, &counts, 2, 4, 0);
        // rank 2's block from rank 3 is rank 3's block number 2
        assert_eq!(p.expected(m, 3 * 8 + 5), p.value(3, 2 * 8 + 5));
        let m = Mapping::of(Collective::SendRecv, &counts, 0, 4, 0);
        assert_eq!(p.expected(m, 9), p.value(3, 9));
        let counts = Collective::ReduceScatter.counts(4 * 4 * 8, 4, 4);
        let m = Mapping::of(Collective::ReduceScatter, &counts, 1, 4, 0);
        let sum: i64 = (0..4).map(|s| p.value(s, 8 + 2)).sum();
        assert_eq!(p.expected(m, 2), sum);
    }

    #[test]
    fn host_fill_and_verify_agree_and_catch_one_flipped_element() {
        let p = Pattern { dtype: DType::Bfloat16, op: RedOp::Sum, ranks: 3, seed: 5 };
        let mut bytes = vec![0u8; 2 * 1000];
        p.write_values(2, &mut bytes);
        let m = Mapping::Copy { source: 2 };
        assert_eq!(p.count_mismatches(m, &bytes), 0);
        bytes[2 * 417] ^= 1;
        assert_eq!(p.count_mismatches(m, &bytes), 1);
    }

    #[test]
    fn integer_avg_truncates_like_c() {
        let p = Pattern { dtype: DType::Int32, op: RedOp::Avg, ranks: 3, seed: 11 };
        for index in 0..100 {
            let sum: i64 = (0..3).map(|s| p.value(s, index)).sum();
            assert_eq!(p.expected(Mapping::Reduce { offset: 0 }, index), sum / 3);
        }
    }
}
