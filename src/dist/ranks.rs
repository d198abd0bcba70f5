//! What training needs from the ranks around it (dist/world.rs implements it over MPI), and
//! the one-rank case.

/// What training needs from the ranks around it: their count and sums over them.
pub trait Ranks {
    fn rank(&self) -> usize;
    fn count(&self) -> usize;
    /// This rank's place in the whole job (a sub-world's rank 0 may be the job's rank 5): the
    /// test hooks name ranks by it.
    fn job_rank(&self) -> usize;
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
    fn job_rank(&self) -> usize {
        0
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
