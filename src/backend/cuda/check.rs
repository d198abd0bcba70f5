//! How a GPU op is checked against its CPU reference (selftest, and each op file's `checks`
//! beside its launchers): inputs drawn from one recorded seed, rounded to bf16 so both sides
//! see the same values, and the relative error ‖gpu − ref‖₂ / ‖ref‖₂ against a tolerance: 1e-2
//! for bf16 outputs, 1e-5 for fp32 ones; NaN never passes.

use super::{DeviceBuffer, Gpu};
use crate::sweep::pattern::mix;
use anyhow::Result;
use half::bf16;

pub const BF16_TOLERANCE: f64 = 1e-2;
pub const F32_TOLERANCE: f64 = 1e-5;

/// For what must agree exactly: copies, byte counts (any difference of values up to 2^40 is
/// above this).
pub const EXACT: f64 = 1e-13;

/// One compared output.
#[derive(Clone, Debug)]
pub struct Check {
    pub op: String,
    pub shape: String,
    pub rel_err: f64,
    pub max_abs_err: f64,
    /// Where the largest error is, with both values there: a lead when a check fails.
    pub worst: (usize, f64, f64),
    pub tolerance: f64,
}

impl Check {
    pub fn passed(&self) -> bool {
        self.rel_err.is_finite() && self.rel_err < self.tolerance
    }
}

pub fn compare(op: &str, shape: &str, got: &[f64], want: &[f64], tolerance: f64) -> Check {
    assert_eq!(got.len(), want.len(), "{op}");
    let diff: f64 = got.iter().zip(want).map(|(g, w)| (g - w) * (g - w)).sum::<f64>().sqrt();
    let norm: f64 = want.iter().map(|w| w * w).sum::<f64>().sqrt();
    let worst = (0..got.len()).max_by(|&a, &b| {
        let (ea, eb) = ((got[a] - want[a]).abs(), (got[b] - want[b]).abs());
        ea.partial_cmp(&eb).unwrap_or(if ea.is_nan() { std::cmp::Ordering::Greater } else { std::cmp::Ordering::Less })
    });
    let worst = worst.map_or((0, 0.0, 0.0), |i| (i, got[i], want[i]));
    let max_abs = (worst.1 - worst.2).abs();
    let rel_err = if got.iter().any(|g| !g.is_finite()) { f64::NAN } else { diff / norm.max(f64::MIN_POSITIVE) };
    Check { op: op.into(), shape: shape.into(), rel_err, max_abs_err: max_abs, worst, tolerance }
}

/// Random values in [-scale, scale), rounded to bf16; returned as the bf16 bits and as f64.
pub struct Input {
    pub bits: Vec<bf16>,
    pub values: Vec<f64>,
}

/// The inputs of every check, drawn in turn from one seed.
pub struct Inputs {
    pub seed: u64,
    next: u64,
}

/// A seed for fresh inputs: the clock's nanoseconds (recorded, so any run can be repeated).
pub fn fresh_seed() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
}

impl Inputs {
    pub fn from(seed: u64) -> Inputs {
        Inputs { seed, next: 0 }
    }

    pub fn take(&mut self, n: usize, scale: f64) -> Input {
        self.next += 1;
        let bits: Vec<bf16> =
            (0..n as u64).map(|i| bf16::from_f64(((mix(self.seed, self.next, i) >> 11) as f64 / (1u64 << 52) as f64 - 1.0) * scale)).collect();
        let values = bits.iter().map(|b| b.to_f64()).collect();
        Input { bits, values }
    }
}

/// A bf16 buffer read back, widened.
pub fn bf16s(gpu: &Gpu, b: &DeviceBuffer) -> Result<Vec<f64>> {
    Ok(gpu.download::<bf16>(b)?.iter().map(|v| v.to_f64()).collect())
}

/// An fp32 buffer read back, widened.
pub fn f32s(gpu: &Gpu, b: &DeviceBuffer) -> Result<Vec<f64>> {
    Ok(gpu.download::<f32>(b)?.iter().map(|&v| v as f64).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparison_rules() {
        assert!(compare("x", "", &[1.0, 2.0], &[1.0, 2.0], 1e-5).passed());
        assert!(!compare("x", "", &[1.1, 2.0], &[1.0, 2.0], 1e-2).passed());
        assert!(!compare("x", "", &[f64::NAN, 2.0], &[1.0, 2.0], 1.0).passed());
        let c = compare("x", "", &[3.0, 4.0], &[0.0, 4.0], 1.0);
        assert!((c.rel_err - 0.75).abs() < 1e-12);
        assert_eq!(c.worst, (0, 3.0, 0.0));
    }

    #[test]
    fn the_same_seed_draws_the_same_inputs() {
        let (mut a, mut b) = (Inputs::from(7), Inputs::from(7));
        assert_eq!(a.take(16, 1.0).values, b.take(16, 1.0).values);
        assert_ne!(a.take(16, 1.0).values, Inputs::from(8).take(16, 1.0).values);
        assert!(b.take(1000, 0.5).values.iter().all(|v| v.abs() <= 0.5));
    }
}
