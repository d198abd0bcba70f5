//! Deterministic initialisation from a seed: every element's value depends only on (seed,
//! element index in the unpadded buffer), so any rank can initialise any shard identically
//! and the rank count (the layout's padding) does not change the model.

use super::layout::{Kind, Layout};
use crate::sweep::pattern::mix;
use rayon::prelude::*;
use std::ops::Range;

/// Standard deviation of the weight matrices; the residual outputs (wo, w_down) are scaled
/// down by sqrt(2·layers) so the residual stream's variance does not grow with depth.
pub const INIT_STD: f64 = 0.02;

/// A standard normal sample from a hash (Box-Muller on two 53-bit uniforms).
pub fn normal(seed: u64, index: u64) -> f64 {
    let u1 = ((mix(seed, 1, index) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    let u2 = (mix(seed, 2, index) >> 11) as f64 / (1u64 << 53) as f64;
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Fills `params` (the whole flat buffer) for `layout`.
pub fn initialise(params: &mut [f32], layout: &Layout, seed: u64) {
    assert_eq!(params.len(), layout.total);
    initialise_range(params, layout, seed, 0..layout.total);
}

/// Fills `out` with elements `range` of the flat buffer (padding: zero), so a rank builds only
/// the pieces it keeps.
pub fn initialise_range(out: &mut [f32], layout: &Layout, seed: u64, range: Range<usize>) {
    assert_eq!(out.len(), range.len());
    out.fill(0.0);
    let residual_std = INIT_STD / (2.0 * layout.layers.len() as f64).sqrt();
    for t in layout.tensors() {
        let (start, end) = (t.offset.max(range.start), t.range().end.min(range.end));
        if start >= end {
            continue;
        }
        let std = if t.name.ends_with(".wo") || t.name.ends_with(".w_down") { residual_std } else { INIT_STD };
        let base = (t.index + start - t.offset) as u64;
        out[start - range.start..end - range.start].par_iter_mut().enumerate().for_each(|(i, p)| {
            *p = match t.kind {
                Kind::Gain => 1.0,
                _ => (std * normal(seed, base + i as u64)) as f32,
            };
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::LlamaConfig;

    #[test]
    fn deterministic_scaled_normal() {
        let c = LlamaConfig::load("tiny").unwrap();
        let layout = Layout::new(&c);
        let (mut a, mut b) = (vec![0f32; layout.total], vec![0f32; layout.total]);
        initialise(&mut a, &layout, 7);
        initialise(&mut b, &layout, 7);
        assert_eq!(a, b);
        initialise(&mut b, &layout, 8);
        assert_ne!(a, b);
        let w = &a[layout.lm_head.range()];
        let mean = w.iter().map(|&x| x as f64).sum::<f64>() / w.len() as f64;
        let std = (w.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / w.len() as f64).sqrt();
        assert!(mean.abs() < 2e-3 && (std - INIT_STD).abs() < 2e-3, "mean {mean} std {std}");
        assert!(a[layout.final_norm.range()].iter().all(|&g| g == 1.0));
        // Any piece alone, and the same tensors under another rank count's padding.
        let mut piece = vec![0f32; 100];
        initialise_range(&mut piece, &layout, 7, 1000..1100);
        assert_eq!(piece, a[1000..1100]);
        let padded = Layout::sharded(&c, 3, 1);
        let mut p = vec![0f32; padded.total];
        initialise(&mut p, &padded, 7);
        for (t, u) in layout.tensors().iter().zip(padded.tensors()) {
            assert_eq!(a[t.range()], p[u.range()], "{}", t.name);
        }
    }
}
