//! Finite-difference gradient checks for the op tests (f64, central differences).

use crate::sweep::pattern::mix;
use std::sync::OnceLock;

/// The seed of this test run's inputs: H200_TEST_SEED when set (to replay a failure), else
/// fresh from the clock; printed once (cargo shows it with a failing test's output).
pub fn test_seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| {
        let seed = match std::env::var("H200_TEST_SEED") {
            Ok(s) => s.parse().expect("H200_TEST_SEED is a u64"),
            Err(_) => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64),
        };
        eprintln!("# test inputs from seed {seed} (the same inputs again: H200_TEST_SEED={seed})");
        seed
    })
}

/// Fresh pseudo-random values in [-1, 1) from this run's seed; `salt` tells the draws apart.
pub fn random(n: usize, salt: u64) -> Vec<f64> {
    let seed = test_seed();
    (0..n as u64).map(|i| (mix(seed, salt, i) >> 11) as f64 / (1u64 << 52) as f64 - 1.0).collect()
}

/// Numeric gradient of `f` at `x` (central differences, step h).
pub fn numeric_grad(x: &[f64], f: &mut dyn FnMut(&[f64]) -> f64) -> Vec<f64> {
    let h = 1e-6;
    let mut probe = x.to_vec();
    (0..x.len())
        .map(|i| {
            probe[i] = x[i] + h;
            let up = f(&probe);
            probe[i] = x[i] - h;
            let down = f(&probe);
            probe[i] = x[i];
            (up - down) / (2.0 * h)
        })
        .collect()
}

/// Largest |a-b| / max(1, |b|) over the elements.
pub fn max_rel_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs() / y.abs().max(1.0)).fold(0.0, f64::max)
}

/// The scalar loss Σ out·weights, whose gradient with respect to out is `weights`.
pub use super::dot;
