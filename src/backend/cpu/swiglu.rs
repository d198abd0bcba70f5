//! SwiGLU gate: h = silu(g) · u, element-wise.

use super::Real;
use rayon::prelude::*;

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

pub fn forward<T: Real>(h: &mut [T], gate: &[T], up: &[T]) {
    h.par_iter_mut().zip(gate.par_iter().zip(up.par_iter())).for_each(|(o, (&g, &u))| {
        let g = g.f64();
        *o = T::of(g * sigmoid(g) * u.f64());
    });
}

/// dg = dh·u·silu'(g), du = dh·silu(g), with silu'(g) = σ(g)(1 + g(1 − σ(g))).
pub fn backward<T: Real>(dgate: &mut [T], dup: &mut [T], dh: &[T], gate: &[T], up: &[T]) {
    dgate.par_iter_mut().zip(dup.par_iter_mut()).enumerate().for_each(|(i, (dg, du))| {
        let (g, u, d) = (gate[i].f64(), up[i].f64(), dh[i].f64());
        let s = sigmoid(g);
        *dg = T::of(d * u * s * (1.0 + g * (1.0 - s)));
        *du = T::of(d * g * s);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::gradcheck::*;

    #[test]
    fn gradients_match_finite_differences() {
        let n = 20;
        let (g, u, dh) = (random(n, 11).iter().map(|v| v * 4.0).collect::<Vec<_>>(), random(n, 12), random(n, 13));
        let (mut dg, mut du) = (vec![0.0; n], vec![0.0; n]);
        backward(&mut dg, &mut du, &dh, &g, &u);
        let run = |g: &[f64], u: &[f64]| {
            let mut h = vec![0.0; n];
            forward(&mut h, g, u);
            dot(&h, &dh)
        };
        assert!(max_rel_err(&dg, &numeric_grad(&g, &mut |p| run(p, &u))) < 1e-7);
        assert!(max_rel_err(&du, &numeric_grad(&u, &mut |p| run(&g, p))) < 1e-7);
    }
}
