//! Softmax cross-entropy over the vocabulary, fused with its backward: each row's loss, and
//! d(loss)/d(logits) written in place of the logits (kernels/cross_entropy.cu's contract).

use super::Real;
use rayon::prelude::*;

/// Label of a position that does not count (prompt tokens in SFT, padding).
pub const IGNORE: i32 = -1;

/// The positions whose label counts in the loss (any negative label is left out, as the kernel
/// does).
pub fn counted(labels: &[i32]) -> usize {
    labels.iter().filter(|&&l| l >= 0).count()
}

/// `logits` [rows, vocab] become (softmax − onehot) · `scale`, and `losses[row]` their row's
/// loss; a row labelled IGNORE gets loss 0 and gradient 0. For the mean loss's gradient, scale
/// = 1 / counted rows.
pub fn forward_backward<T: Real>(logits: &mut [T], losses: &mut [T], labels: &[i32], vocab: usize, scale: f64) {
    assert_eq!((logits.len(), losses.len()), (labels.len() * vocab, labels.len()));
    logits.par_chunks_mut(vocab).zip(losses.par_iter_mut()).zip(labels.par_iter()).for_each(|((row, loss), &label)| {
        if label == IGNORE {
            row.iter_mut().for_each(|v| *v = T::zero());
            *loss = T::zero();
            return;
        }
        let max = row.iter().map(|v| v.f64()).fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = row.iter().map(|v| (v.f64() - max).exp()).sum();
        let log_z = max + sum.ln();
        *loss = T::of(log_z - row[label as usize].f64());
        for (j, v) in row.iter_mut().enumerate() {
            let p = (v.f64() - log_z).exp();
            *v = T::of((p - if j == label as usize { 1.0 } else { 0.0 }) * scale);
        }
    });
}

/// The mean loss over the counted rows (0 when none counts), and the logits become its gradient.
pub fn mean_loss<T: Real>(logits: &mut [T], labels: &[i32], vocab: usize) -> f64 {
    let counted = counted(labels).max(1);
    let mut losses = vec![T::zero(); labels.len()];
    forward_backward(logits, &mut losses, labels, vocab, 1.0 / counted as f64);
    losses.iter().map(|l| l.f64()).sum::<f64>() / counted as f64
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
        let loss = mean_loss(&mut grad, &labels, vocab);
        let num = numeric_grad(&logits, &mut |p| mean_loss(&mut p.to_vec(), &labels, vocab));
        assert!(max_rel_err(&grad, &num) < 1e-7);
        assert!(grad[vocab..2 * vocab].iter().all(|&g| g == 0.0));
        // uniform logits: loss = ln(vocab)
        let mut flat = vec![0.5; rows * vocab];
        assert!((mean_loss(&mut flat, &labels, vocab) - (vocab as f64).ln()).abs() < 1e-12);
        assert!(loss > 0.0);
        // per row: the ignored row's loss is 0, the others' sum to 3 × the mean
        let (mut grad, mut losses) = (logits.clone(), vec![1.0; rows]);
        forward_backward(&mut grad, &mut losses, &labels, vocab, 1.0 / 3.0);
        assert!(losses[1] == 0.0 && (losses.iter().sum::<f64>() - 3.0 * loss).abs() < 1e-12);
    }
}
