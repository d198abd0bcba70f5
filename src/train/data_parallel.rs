//! Data parallelism (ZeRO stage 0): every rank holds the whole model and trains on its share of
//! each global batch; gradients are summed over ranks and divided by the rank count, so any
//! world size sees the same global batch and, up to summation order, the same training.

use super::run_config::RunConfig;

/// What training needs from the ranks around it: their count and sums over them.
pub trait Ranks {
    fn rank(&self) -> usize;
    fn count(&self) -> usize;
    fn sum_f64(&self, x: f64) -> f64;
    /// In place: every rank ends with the element-wise sum over ranks.
    fn sum_f32(&self, values: &mut [f32]);
    /// `mine` (len L) gets rank r's block [r·L, (r+1)·L) of the element-wise sum of `all`.
    fn reduce_scatter_sum_f32(&self, all: &[f32], mine: &mut [f32]);
    /// `all` gets every rank's `mine` in rank order.
    fn all_gather_f32(&self, mine: &[f32], all: &mut [f32]);
}

/// A run on one rank.
pub struct Alone;

impl Ranks for Alone {
    fn rank(&self) -> usize {
        0
    }
    fn count(&self) -> usize {
        1
    }
    fn sum_f64(&self, x: f64) -> f64 {
        x
    }
    fn sum_f32(&self, _values: &mut [f32]) {}
    fn reduce_scatter_sum_f32(&self, all: &[f32], mine: &mut [f32]) {
        mine.copy_from_slice(&all[..mine.len()]);
    }
    fn all_gather_f32(&self, mine: &[f32], all: &mut [f32]) {
        all.copy_from_slice(mine);
    }
}

/// Global index of the first sample of micro-batch `micro` of optimizer step `step` (from 1)
/// on `rank`: the global batch of a step is the ranks' shares laid end to end.
pub fn first_sample(run: &RunConfig, step: usize, micro: usize, rank: usize, ranks: usize) -> u64 {
    let share = run.micro_batch * run.grad_accum;
    ((step - 1) * share * ranks + rank * share + micro * run.micro_batch) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_tile_the_global_batch() {
        let run = |mb, acc| RunConfig { micro_batch: mb, grad_accum: acc, ..RunConfig::defaults_for("tiny") };
        // One rank with 4 × 2 and two ranks with 2 × 2 each cover samples 8..16 of step 2.
        let one: Vec<u64> = (0..2).flat_map(|m| (0..4).map(move |i| first_sample(&run(4, 2), 2, m, 0, 1) + i)).collect();
        let mut two: Vec<u64> = (0..2)
            .flat_map(|r| (0..2).flat_map(move |m| (0..2).map(move |i| first_sample(&run(2, 2), 2, m, r, 2) + i)))
            .collect();
        two.sort();
        assert_eq!(one, (8..16).collect::<Vec<_>>());
        assert_eq!(two, one);
    }
}
