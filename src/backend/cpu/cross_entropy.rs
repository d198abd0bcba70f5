//! Softmax cross-entropy over the vocabulary, fused with its backward: mean loss over the
//! positions whose label is not IGNORE, and d(loss)/d(logits) written in place of the logits.

use super::Real;
use rayon::prelude::*;

/// Label of a position that does not count (prompt tokens in SFT, padding).
pub const IGNORE: i32 = -1;

/// Returns the mean loss over counted positions; `logits` [rows, vocab] become their gradient,
/// scaled by `grad_scale` / counted positions (grad_scale = 1/accumulation steps, say).
pub fn forward_backward<T: Real>(logits: &mut [T], labels: &[i32], vocab: usize, grad_scale: f64) -> f64 {
    let counted = labels.iter().filter(|&&l| l != IGNORE).count();
    if counted == 0 {
        logits.iter_mut().for_each(|v| *v = T::zero());
        return 0.0;
    }
    let scale = grad_scale / counted as f64;
    // Per-row losses collected in order and summed sequentially: deterministic.
    let losses: Vec<f64> = logits
        .par_chunks_mut(vocab)
        .zip(labels.par_iter())
        .map(|(row, &label)| {
            if label == IGNORE {
                row.iter_mut().for_each(|v| *v = T::zero());
                return 0.0;
            }
            let max = row.iter().map(|v| v.f64()).fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = row.iter().map(|v| (v.f64() - max).exp()).sum();
            let log_z = max + sum.ln();
            let loss = log_z - row[label as usize].f64();
            for (j, v) in row.iter_mut().enumerate() {
                let p = (v.f64() - log_z).exp();
                *v = T::of((p - if j == label as usize { 1.0 } else { 0.0 }) * scale);
            }
            loss
        })
        .collect();
    losses.iter().sum::<f64>() / counted as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::gradcheck::*;

    #[test]
    fn loss_and_gradient_with_ignored_positions() {
        let (rows, vocab) = (4, 7);
        let logits = random(rows * vocab, 14).iter().map(|v| v * 3.0).collect::<Vec<_>>();
        let labels = [3, IGNORE, 0, 6];
        let mut grad = logits.clone();
        let loss = forward_backward(&mut grad, &labels, vocab, 1.0);
        let num = numeric_grad(&logits, &mut |p| forward_backward(&mut p.to_vec(), &labels, vocab, 1.0));
        assert!(max_rel_err(&grad, &num) < 1e-7);
        assert!(grad[vocab..2 * vocab].iter().all(|&g| g == 0.0));
        // uniform logits: loss = ln(vocab)
        let mut flat = vec![0.5; rows * vocab];
        assert!((forward_backward(&mut flat, &labels, vocab, 1.0) - (vocab as f64).ln()).abs() < 1e-12);
        assert!(loss > 0.0);
    }
}
