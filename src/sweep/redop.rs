//! Reduction operators, with NCCL's semantics on the integers the data pattern produces.

use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RedOp {
    Sum,
    Prod,
    Min,
    Max,
    Avg,
}

impl RedOp {
    pub const ALL: [RedOp; 5] = [RedOp::Sum, RedOp::Prod, RedOp::Min, RedOp::Max, RedOp::Avg];

    pub fn name(self) -> &'static str {
        match self {
            RedOp::Sum => "sum",
            RedOp::Prod => "prod",
            RedOp::Min => "min",
            RedOp::Max => "max",
            RedOp::Avg => "avg",
        }
    }

    /// Code shared with kernels/fill_verify.cu (`OP_*`).
    pub fn code(self) -> i32 {
        self as i32
    }

    /// Combines two partial results. Avg reduces like Sum: its per-rank scaling is part of the
    /// data pattern (floats) or a final division (integers), see `pattern.rs`.
    pub fn combine(self, a: i64, b: i64) -> i64 {
        match self {
            RedOp::Sum | RedOp::Avg => a + b,
            RedOp::Prod => a * b,
            RedOp::Min => a.min(b),
            RedOp::Max => a.max(b),
        }
    }
}

impl fmt::Display for RedOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for RedOp {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        RedOp::ALL
            .into_iter()
            .find(|op| op.name() == s.to_ascii_lowercase())
            .ok_or_else(|| format!("unknown op '{s}' (one of: sum, prod, min, max, avg, or all)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_combine() {
        assert_eq!("MAX".parse::<RedOp>().unwrap(), RedOp::Max);
        assert!("xor".parse::<RedOp>().is_err());
        assert_eq!(RedOp::Prod.combine(4, -2), -8);
        assert_eq!(RedOp::Min.combine(4, -2), -2);
        assert_eq!(RedOp::Avg.combine(4, -2), 2);
    }
}
