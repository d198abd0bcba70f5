//! Rotary position embedding on rows of `heads` vectors of width `head_dim`: the pair
//! (2i, 2i+1) at position p turns by p·θ^(−2i/head_dim). Position = row index mod `seq`.

use super::Real;
use rayon::prelude::*;

fn rotate<T: Real>(x: &mut [T], seq: usize, heads: usize, head_dim: usize, theta: f64, sign: f64) {
    let width = heads * head_dim;
    x.par_chunks_mut(width).enumerate().for_each(|(row, r)| {
        let pos = (row % seq) as f64;
        for head in r.chunks_mut(head_dim) {
            for i in 0..head_dim / 2 {
                let angle = pos * theta.powf(-2.0 * i as f64 / head_dim as f64);
                let (sin, cos) = (sign * angle).sin_cos();
                let (a, b) = (head[2 * i].f64(), head[2 * i + 1].f64());
                head[2 * i] = T::of(a * cos - b * sin);
                head[2 * i + 1] = T::of(a * sin + b * cos);
            }
        }
    });
}

/// In place: x ← R(p)·x.
pub fn forward<T: Real>(x: &mut [T], seq: usize, heads: usize, head_dim: usize, theta: f64) {
    rotate(x, seq, heads, head_dim, theta, 1.0);
}

/// In place: dx ← R(p)ᵀ·dy (the rotation back).
pub fn backward<T: Real>(dx: &mut [T], seq: usize, heads: usize, head_dim: usize, theta: f64) {
    rotate(dx, seq, heads, head_dim, theta, -1.0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::gradcheck::*;

    #[test]
    fn gradient_and_position_zero() {
        let (seq, heads, hd, theta) = (3, 2, 4, 10000.0);
        let n = 2 * seq * heads * hd;
        let (x, g) = (random(n, 9), random(n, 10));
        let mut y = x.clone();
        forward(&mut y, seq, heads, hd, theta);
        assert_eq!(&y[..heads * hd], &x[..heads * hd]); // position 0 does not turn
        let mut dx = g.clone();
        backward(&mut dx, seq, heads, hd, theta);
        let num = numeric_grad(&x, &mut |p| {
            let mut y = p.to_vec();
            forward(&mut y, seq, heads, hd, theta);
            dot(&y, &g)
        });
        assert!(max_rel_err(&dx, &num) < 1e-7);
    }
}
