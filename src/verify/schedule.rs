//! Which pairs meet in which round: the circle method of a round-robin tournament, so that every
//! pair of n members meets exactly once in n-1 rounds (n rounds when n is odd: each round one
//! member rests) and nobody is in two pairs of one round.

/// `rounds[r]` lists the pairs (a, b), a < b, that meet in round r.
pub fn round_robin(n: usize) -> Vec<Vec<(usize, usize)>> {
    if n < 2 {
        return Vec::new();
    }
    // An odd count gets a ghost member: whoever meets it rests that round.
    let m = n + n % 2;
    (0..m - 1)
        .map(|round| {
            (0..m / 2)
                .filter_map(|i| {
                    // Member m-1 stays put; the others turn one place per round.
                    let turn = |p: usize| if p == m - 1 { m - 1 } else { (p + round) % (m - 1) };
                    let (a, b) = (turn(i), turn(m - 1 - i));
                    (a < n && b < n).then_some((a.min(b), a.max(b)))
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_pair_meets_once_and_nobody_twice_in_a_round() {
        for n in 0..=17 {
            let rounds = round_robin(n);
            let mut met = HashSet::new();
            for round in &rounds {
                let mut busy = HashSet::new();
                for &(a, b) in round {
                    assert!(a < b && b < n);
                    assert!(busy.insert(a) && busy.insert(b), "n {n}: a member twice in one round");
                    assert!(met.insert((a, b)), "n {n}: ({a}, {b}) met twice");
                }
            }
            assert_eq!(met.len(), n * n.saturating_sub(1) / 2, "n {n}");
            assert_eq!(rounds.len(), if n < 2 { 0 } else { n - 1 + n % 2 }, "n {n}");
        }
    }
}
