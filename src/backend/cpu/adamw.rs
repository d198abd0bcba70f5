//! AdamW on fp32 master weights, with the global gradient norm and clipping that precede it.

use rayon::prelude::*;

#[derive(Clone, Copy, Debug)]
pub struct AdamW {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

/// sqrt(Σ g²) over all gradient elements (f64 accumulation). Fixed chunks summed in order:
/// the same bits on every run, whatever rayon's scheduling.
pub fn global_norm(grads: &[f32]) -> f64 {
    let partial: Vec<f64> = grads.par_chunks(1 << 16).map(|c| c.iter().map(|&g| g as f64 * g as f64).sum()).collect();
    partial.iter().sum::<f64>().sqrt()
}

/// The factor that brings the gradient norm down to `max_norm` (1 when it is below).
pub fn clip_factor(norm: f64, max_norm: f64) -> f64 {
    if max_norm > 0.0 && norm > max_norm {
        max_norm / (norm + 1e-6)
    } else {
        1.0
    }
}

impl AdamW {
    /// One update at step `t` (from 1) of `params` with `grads × grad_scale`; `decay` says
    /// per element whether weight decay applies (matrices yes, norm gains no).
    #[allow(clippy::too_many_arguments)]
    pub fn step(&self, params: &mut [f32], grads: &[f32], m: &mut [f32], v: &mut [f32], decay: &[bool], t: u64, grad_scale: f64) {
        let (b1, b2) = (self.beta1, self.beta2);
        let (c1, c2) = (1.0 - b1.powi(t as i32), 1.0 - b2.powi(t as i32));
        params.par_iter_mut().zip(m.par_iter_mut()).zip(v.par_iter_mut()).enumerate().for_each(|(i, ((p, m), v))| {
            let g = grads[i] as f64 * grad_scale;
            let mi = b1 * *m as f64 + (1.0 - b1) * g;
            let vi = b2 * *v as f64 + (1.0 - b2) * g * g;
            *m = mi as f32;
            *v = vi as f32;
            let wd = if decay[i] { self.weight_decay } else { 0.0 };
            let pi = *p as f64;
            *p = (pi - self.lr * ((mi / c1) / ((vi / c2).sqrt() + self.eps) + wd * pi)) as f32;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_step_moves_by_lr_times_sign() {
        // At t = 1 the bias-corrected update is g/|g| (for |g| >> eps): a step of lr.
        let opt = AdamW { lr: 0.1, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.0 };
        let mut p = vec![1.0f32, -2.0];
        let (mut m, mut v) = (vec![0.0f32; 2], vec![0.0f32; 2]);
        opt.step(&mut p, &[3.0, -0.5], &mut m, &mut v, &[true, true], 1, 1.0);
        assert!((p[0] - 0.9).abs() < 1e-6 && (p[1] + 1.9).abs() < 1e-6, "{p:?}");
        // decoupled weight decay shrinks by lr·wd·p, gradient or not
        let opt = AdamW { weight_decay: 0.5, ..opt };
        let mut p = vec![2.0f32];
        opt.step(&mut p, &[0.0], &mut [0.0], &mut [0.0], &[true], 1, 1.0);
        assert!((p[0] - 1.9).abs() < 1e-6);
    }

    #[test]
    fn clipping() {
        assert!((global_norm(&[3.0, 4.0]) - 5.0).abs() < 1e-12);
        assert!((clip_factor(5.0, 1.0) - 0.2).abs() < 1e-6);
        assert_eq!(clip_factor(0.5, 1.0), 1.0);
        assert_eq!(clip_factor(5.0, 0.0), 1.0);
    }
}
