//! Token embedding lookup: x[t] = E[token[t]], and the scatter-add backward.

use super::Real;

pub fn forward<T: Real>(x: &mut [T], table: &[T], tokens: &[u32], d: usize) {
    for (row, &tok) in x.chunks_mut(d).zip(tokens) {
        row.copy_from_slice(&table[tok as usize * d..(tok as usize + 1) * d]);
    }
}

/// dE[token[t]] += dx[t]
pub fn backward<T: Real>(dtable: &mut [T], dx: &[T], tokens: &[u32], d: usize) {
    for (row, &tok) in dx.chunks(d).zip(tokens) {
        let dst = &mut dtable[tok as usize * d..(tok as usize + 1) * d];
        for (a, &b) in dst.iter_mut().zip(row) {
            *a = *a + b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::gradcheck::*;

    #[test]
    fn lookup_and_scatter_add() {
        let (v, d) = (5, 3);
        let table = random(v * d, 4);
        let tokens = [4u32, 1, 4];
        let mut x = vec![0.0; 3 * d];
        forward(&mut x, &table, &tokens, d);
        assert_eq!(&x[..d], &table[4 * d..5 * d]);
        let g = random(3 * d, 5);
        let mut dt = vec![0.0; v * d];
        backward(&mut dt, &g, &tokens, d);
        let num = numeric_grad(&table, &mut |t| {
            let mut x = vec![0.0; 3 * d];
            forward(&mut x, t, &tokens, d);
            dot(&x, &g)
        });
        assert!(max_rel_err(&dt, &num) < 1e-7);
    }
}
