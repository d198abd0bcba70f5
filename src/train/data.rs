//! Training data: a file of token ids, or synthetic SFT data.
//!
//! Synthetic: Sample i of the run (a global index, so every world size sees the same
//! global batch) is a phrase of PHRASE consecutive token ids from a random start, repeated to
//! fill the sequence: the first phrase is the prompt (not in the loss), the rest the response,
//! learnable from the previous token and from copying. For throughput the content does not
//! matter; on the CPU path the falling loss shows that the model learns.

use crate::backend::cpu::cross_entropy::IGNORE;
use crate::sweep::pattern::mix;

pub const PHRASE: usize = 8;

/// The largest token file taken: 4 GiB (a billion tokens), read whole by every rank.
const MAX_DATA_BYTES: u64 = 4 << 30;

/// Where micro-batches come from.
pub enum Source {
    Synthetic {
        seed: u64,
    },
    /// Token ids (little-endian u32, as written by any tokenizer script): sample i is the
    /// `seq` + 1 tokens from position i·seq (wrapping), every next-token label counted.
    Tokens(Vec<u32>),
}

impl Source {
    /// Reads a token file and checks it against the model's vocabulary and the sequence length.
    pub fn from_file(path: &str, vocab: usize, seq: usize) -> Result<Source, String> {
        // A FIFO or a device (/dev/zero) would be read forever.
        match std::fs::metadata(path) {
            Ok(m) if !m.is_file() => return Err(format!("--data {path}: not a regular file")),
            Ok(m) if m.len() > MAX_DATA_BYTES => {
                return Err(format!("--data {path}: {} bytes; at most {MAX_DATA_BYTES} (every rank reads the whole file)", m.len()))
            }
            _ => {}
        }
        let bytes = std::fs::read(path).map_err(|e| format!("--data {path}: cannot read: {e}"))?;
        if bytes.len() % 4 != 0 {
            return Err(format!("--data {path}: {} bytes is not a whole number of u32 token ids", bytes.len()));
        }
        let tokens: Vec<u32> = bytes.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        if tokens.len() <= seq {
            return Err(format!("--data {path}: {} tokens, fewer than one sequence of {seq} + 1", tokens.len()));
        }
        if let Some((i, t)) = tokens.iter().enumerate().find(|(_, &t)| t as usize >= vocab) {
            return Err(format!("--data {path}: token {t} at position {i} is outside the vocabulary of {vocab}"));
        }
        Ok(Source::Tokens(tokens))
    }

    /// Tokens and next-token labels of `count` sequences starting at global sample `first`.
    pub fn batch(&self, first: u64, count: usize, seq: usize, vocab: usize) -> (Vec<u32>, Vec<i32>) {
        match self {
            Source::Synthetic { seed } => synthetic_batch(first, count, seq, vocab, *seed),
            Source::Tokens(all) => {
                let span = (all.len() - seq) as u64; // starting positions with seq + 1 tokens ahead
                let mut tokens = Vec::with_capacity(count * seq);
                let mut labels = Vec::with_capacity(count * seq);
                for s in 0..count as u64 {
                    let start = (((first + s) * seq as u64) % span) as usize;
                    tokens.extend_from_slice(&all[start..start + seq]);
                    labels.extend(all[start + 1..start + seq + 1].iter().map(|&t| t as i32));
                }
                (tokens, labels)
            }
        }
    }
}

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
    fn token_files_are_checked_and_sampled() {
        // Removed when the test ends, passed or failed.
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().to_path_buf();
        let path = dir.join("tokens.bin");
        let ids: Vec<u32> = (0..100).map(|i| i % 50).collect();
        std::fs::write(&path, ids.iter().flat_map(|t| t.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
        let p = path.to_str().unwrap();
        let src = Source::from_file(p, 50, 10).ok().unwrap();
        let (tokens, labels) = src.batch(3, 2, 10, 50);
        assert_eq!(&tokens[..3], &[30, 31, 32]);
        assert_eq!(labels[0], 31);
        assert_eq!(tokens.len(), 20);
        assert!(Source::from_file(p, 40, 10).err().unwrap().contains("outside the vocabulary"));
        assert!(Source::from_file(p, 50, 100).err().unwrap().contains("fewer than one sequence"));
        assert!(Source::from_file("/no/such/file", 50, 10).err().unwrap().contains("cannot read"));
        assert!(Source::from_file("/dev/zero", 50, 10).err().unwrap().contains("not a regular file"));
        std::fs::write(&path, [1u8, 2, 3]).unwrap();
        assert!(Source::from_file(p, 50, 10).err().unwrap().contains("whole number"));
    }

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
