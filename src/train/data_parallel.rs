//! Data parallelism: every rank trains on its share of each global batch; gradients are summed
//! over ranks and divided by the rank count, so any world size sees the same global batch and,
//! up to summation order, the same training.

use super::run_config::RunConfig;

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
        let mut two: Vec<u64> = (0..2).flat_map(|r| (0..2).flat_map(move |m| (0..2).map(move |i| first_sample(&run(2, 2), 2, m, r, 2) + i))).collect();
        two.sort();
        assert_eq!(one, (8..16).collect::<Vec<_>>());
        assert_eq!(two, one);
    }
}
