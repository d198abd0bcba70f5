//! y = x · Wᵀ (nn.Linear without bias): x [m, k], W [n, k], y [m, n], and its backward.

use super::{dot, Real};
use rayon::prelude::*;

/// x is [m, k], W is [n, k], y is [m, n].
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    pub m: usize,
    pub k: usize,
    pub n: usize,
}

/// y = x·Wᵀ, or y += x·Wᵀ with `accumulate`.
pub fn forward<T: Real>(y: &mut [T], x: &[T], w: &[T], Dims { m, k, n }: Dims, accumulate: bool) {
    assert_eq!((x.len(), w.len(), y.len()), (m * k, n * k, m * n));
    y.par_chunks_mut(n).zip(x.par_chunks(k)).for_each(|(yr, xr)| {
        for (j, out) in yr.iter_mut().enumerate() {
            let base = if accumulate { out.f64() } else { 0.0 };
            *out = T::of(base + dot(xr, &w[j * k..(j + 1) * k]));
        }
    });
}

/// dx = dy · W, or dx += dy · W with `accumulate`.
pub fn backward_input<T: Real>(dx: &mut [T], dy: &[T], w: &[T], Dims { m, k, n }: Dims, accumulate: bool) {
    assert_eq!((dx.len(), dy.len(), w.len()), (m * k, m * n, n * k));
    dx.par_chunks_mut(k).zip(dy.par_chunks(n)).for_each(|(dxr, dyr)| {
        for (c, out) in dxr.iter_mut().enumerate() {
            let base = if accumulate { out.f64() } else { 0.0 };
            *out = T::of(base + (0..n).map(|j| dyr[j].f64() * w[j * k + c].f64()).sum::<f64>());
        }
    });
}

/// dW += dyᵀ · x (accumulated, for gradient accumulation).
pub fn backward_weight<T: Real>(dw: &mut [T], dy: &[T], x: &[T], Dims { m, k, n }: Dims) {
    assert_eq!((dw.len(), dy.len(), x.len()), (n * k, m * n, m * k));
    dw.par_chunks_mut(k).enumerate().for_each(|(j, dwr)| {
        for (c, out) in dwr.iter_mut().enumerate() {
            let s: f64 = (0..m).map(|r| dy[r * n + j].f64() * x[r * k + c].f64()).sum();
            *out = T::of(out.f64() + s);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::gradcheck::*;

    #[test]
    fn gradients_match_finite_differences() {
        let (m, k, n) = (3, 5, 4);
        let dims = Dims { m, k, n };
        let (x, w, g) = (random(m * k, 1), random(n * k, 2), random(m * n, 3));
        let mut y = vec![0.0; m * n];
        let (mut dx, mut dw) = (vec![0.0; m * k], vec![0.0; n * k]);
        backward_input(&mut dx, &g, &w, dims, false);
        backward_weight(&mut dw, &g, &x, dims);
        let loss = |x: &[f64], w: &[f64], y: &mut Vec<f64>| {
            forward(y, x, w, dims, false);
            dot(y, &g)
        };
        let num_dx = numeric_grad(&x, &mut |p| loss(p, &w, &mut y.clone()));
        let num_dw = numeric_grad(&w, &mut |p| loss(&x, p, &mut y.clone()));
        assert!(max_rel_err(&dx, &num_dx) < 1e-7);
        assert!(max_rel_err(&dw, &num_dw) < 1e-7);
        // dW accumulates, dx and y when asked
        backward_weight(&mut dw, &g, &x, dims);
        assert!(max_rel_err(&dw, &num_dw.iter().map(|v| 2.0 * v).collect::<Vec<_>>()) < 1e-7);
        backward_input(&mut dx, &g, &w, dims, true);
        assert!(max_rel_err(&dx, &num_dx.iter().map(|v| 2.0 * v).collect::<Vec<_>>()) < 1e-7);
        forward(&mut y, &x, &w, dims, false);
        let direct: f64 = (0..k).map(|c| x[k + c] * w[2 * k + c]).sum();
        assert!((y[n + 2] - direct).abs() < 1e-12);
        forward(&mut y, &x, &w, dims, true);
        assert!((y[n + 2] - 2.0 * direct).abs() < 1e-12);
    }
}
