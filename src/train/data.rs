//! Synthetic SFT data. Sample i of the run (a global index, so every world size sees the same
//! global batch) is a phrase of PHRASE consecutive token ids from a random start, repeated to
//! fill the sequence: the first phrase is the prompt (not in the loss), the rest the response,
//! learnable from the previous token and from copying. For throughput the content does not
//! matter; on the CPU path the falling loss shows that the model learns.

use crate::backend::cpu::cross_entropy::IGNORE;
use crate::sweep::pattern::mix;

pub const PHRASE: usize = 8;

/// Tokens and next-token labels of `count` sequences starting at global sample `first`.
pub fn synthetic_batch(first: u64, count: usize, seq: usize, vocab: usize, seed: u64) -> (Vec<u32>, Vec<i32>) {
    let mut tokens = Vec::with_capacity(count * seq);
    let mut labels = Vec::with_capacity(count * seq);
    for s in 0..count as u64 {
        let sample = first + s;
        let start = mix(seed, sample, 0) % vocab as u64;
        let phrase: Vec<u32> = (0..PHRASE as u64).map(|i| ((start + i) % vocab as u64) as u32).collect();
        let row: Vec<u32> = (0..seq).map(|t| phrase[t % PHRASE]).collect();
        for t in 0..seq {
            // The label of position t is token t+1; prompt positions and the last one do not count.
            let counted = t + 1 >= PHRASE && t + 1 < seq;
            labels.push(if counted { row[t + 1] as i32 } else { IGNORE });
        }
        tokens.extend(row);
    }
    (tokens, labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_phrases_with_a_masked_prompt() {
        let (tokens, labels) = synthetic_batch(10, 2, 20, 50, 3);
        assert_eq!(tokens.len(), 40);
        assert_eq!(tokens[3], tokens[3 + PHRASE]);
        assert_eq!(tokens[2], (tokens[1] + 1) % 50);
        assert!(labels[..PHRASE - 1].iter().all(|&l| l == IGNORE));
        assert_eq!(labels[PHRASE - 1], tokens[PHRASE] as i32);
        assert_eq!(labels[19], IGNORE);
        // global indexing: sample 11 is the same whichever batch it falls in
        let (again, _) = synthetic_batch(11, 1, 20, 50, 3);
        assert_eq!(&tokens[20..], &again[..]);
        assert!(tokens.iter().all(|&t| t < 50));
    }
}
