//! RMSNorm: y = x / sqrt(mean(x²) + eps) · w, per row of width d; keeps 1/rms for backward.

use super::Real;
use rayon::prelude::*;

pub fn forward<T: Real>(y: &mut [T], inv_rms: &mut [T], x: &[T], w: &[T], d: usize, eps: f64) {
    y.par_chunks_mut(d).zip(x.par_chunks(d)).zip(inv_rms.par_iter_mut()).for_each(|((yr, xr), r)| {
        let ms = xr.iter().map(|v| v.f64() * v.f64()).sum::<f64>() / d as f64;
        let inv = 1.0 / (ms + eps).sqrt();
        *r = T::of(inv);
        for ((o, &a), &g) in yr.iter_mut().zip(xr).zip(w) {
            *o = T::of(a.f64() * inv * g.f64());
        }
    });
}

/// dx = inv·(dy·w) − inv³·x·mean(dy·w·x); dw += Σ_rows dy·x·inv.
pub fn backward<T: Real>(dx: &mut [T], dw: &mut [T], dy: &[T], x: &[T], w: &[T], inv_rms: &[T], d: usize) {
    dx.par_chunks_mut(d).zip(dy.par_chunks(d)).zip(x.par_chunks(d)).zip(inv_rms.par_iter()).for_each(|(((dxr, dyr), xr), &inv)| {
        let inv = inv.f64();
        let dot = (0..d).map(|i| dyr[i].f64() * w[i].f64() * xr[i].f64()).sum::<f64>() / d as f64;
        for i in 0..d {
            dxr[i] = T::of(inv * dyr[i].f64() * w[i].f64() - inv * inv * inv * xr[i].f64() * dot);
        }
    });
    let rows = x.len() / d;
    for (i, g) in dw.iter_mut().enumerate() {
        let s: f64 = (0..rows).map(|r| dy[r * d + i].f64() * x[r * d + i].f64() * inv_rms[r].f64()).sum();
        *g = T::of(g.f64() + s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::gradcheck::*;

    #[test]
    fn gradients_match_finite_differences() {
        let (rows, d, eps) = (3, 8, 1e-5);
        let (x, w, g) = (random(rows * d, 6), random(d, 7), random(rows * d, 8));
        let run = |x: &[f64], w: &[f64]| {
            let (mut y, mut inv) = (vec![0.0; rows * d], vec![0.0; rows]);
            forward(&mut y, &mut inv, x, w, d, eps);
            (y, inv)
        };
        let (_, inv) = run(&x, &w);
        let (mut dx, mut dw) = (vec![0.0; rows * d], vec![0.0; d]);
        backward(&mut dx, &mut dw, &g, &x, &w, &inv, d);
        let num_dx = numeric_grad(&x, &mut |p| dot(&run(p, &w).0, &g));
        let num_dw = numeric_grad(&w, &mut |p| dot(&run(&x, p).0, &g));
        assert!(max_rel_err(&dx, &num_dx) < 1e-6, "{:?}", max_rel_err(&dx, &num_dx));
        assert!(max_rel_err(&dw, &num_dw) < 1e-6);
    }
}
