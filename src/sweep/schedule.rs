//! Message sizes of a sweep: nccl-tests' `-b/-e` with a `-f` factor or an `-i` step, and its
//! size syntax (plain bytes or K/M/G binary suffixes).

/// Parses `8`, `128K`, `2m`, `8G` into bytes. Zero, negative and garbage sizes are errors.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let (digits, multiplier) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1usize << 10),
        Some('m' | 'M') => (&t[..t.len() - 1], 1 << 20),
        Some('g' | 'G') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    let value: usize = digits.parse().map_err(|_| format!("invalid size '{text}' (expected bytes, optionally with K, M or G)"))?;
    if value == 0 {
        return Err(format!("invalid size '{text}': must be at least 1 byte"));
    }
    value.checked_mul(multiplier).ok_or_else(|| format!("invalid size '{text}': too large"))
}

/// How sizes grow from one row to the next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Factor(usize),
    Bytes(usize),
}

/// The requested sizes, `min` to `max` inclusive: at most `limit` of them.
pub fn sizes(min: usize, max: usize, step: Step, limit: usize) -> Result<Vec<usize>, String> {
    if min > max {
        return Err(format!("minimum size {min} B (-b) is larger than maximum size {max} B (-e)"));
    }
    match step {
        Step::Factor(f) if f < 2 => return Err(format!("step factor -f {f} must be at least 2")),
        Step::Bytes(0) => return Err("step bytes -i must be at least 1".into()),
        _ => {}
    }
    let mut out = Vec::new();
    let mut size = min;
    while size <= max {
        if out.len() == limit {
            return Err(format!("sizes from {min} to {max} B are more than {limit}; take a larger -f or -i"));
        }
        out.push(size);
        size = match step {
            Step::Factor(f) => size.checked_mul(f),
            Step::Bytes(b) => size.checked_add(b),
        }
        .unwrap_or(usize::MAX);
        if size == usize::MAX {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_suffixes_and_rejects_bad_sizes() {
        assert_eq!(parse_size("8").unwrap(), 8);
        assert_eq!(parse_size("128K").unwrap(), 128 << 10);
        assert_eq!(parse_size("2m").unwrap(), 2 << 20);
        assert_eq!(parse_size("8G").unwrap(), 8 << 30);
        for bad in ["0", "-1", "abc", "", "1.5M", "12Q", "0K"] {
            assert!(parse_size(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn schedules_like_nccl_tests() {
        assert_eq!(sizes(8, 128, Step::Factor(4), 100).unwrap(), vec![8, 32, 128]);
        assert_eq!(sizes(8, 100, Step::Factor(4), 100).unwrap(), vec![8, 32]);
        assert_eq!(sizes(1, 4, Step::Bytes(1), 100).unwrap(), vec![1, 2, 3, 4]);
        assert_eq!(sizes(8 << 30, 8 << 30, Step::Factor(2), 100).unwrap(), vec![8 << 30]);
        assert!(sizes(16, 8, Step::Factor(2), 100).is_err());
        assert!(sizes(8, 16, Step::Factor(1), 100).is_err());
        assert!(sizes(8, 16, Step::Bytes(0), 100).is_err());
        assert!(sizes(1, 1 << 30, Step::Bytes(1), 10_000).unwrap_err().contains("more than 10000"));
    }
}
