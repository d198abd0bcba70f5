//! Rank 0's stdout table, in nccl-tests' shape so existing eyes and scripts can read it.

use super::runner::Measurement;

pub fn header() -> String {
    let h1 = format!("# {:>10}  {:>12}  {:>8}  {:>6}  {:>6}  {:^31}  {:^31}", "", "", "", "", "", "out-of-place", "in-place");
    let h2 = format!(
        "# {:>10}  {:>12}  {:>8}  {:>6}  {:>6}  {:>7}  {:>6}  {:>6}  {:>6}  {:>7}  {:>6}  {:>6}  {:>6}",
        "size", "count", "type", "redop", "root", "time", "algbw", "busbw", "#wrong", "time", "algbw", "busbw", "#wrong"
    );
    let h3 = format!(
        "# {:>10}  {:>12}  {:>8}  {:>6}  {:>6}  {:>7}  {:>6}  {:>6}  {:>6}  {:>7}  {:>6}  {:>6}  {:>6}",
        "(B)", "(elements)", "", "", "", "(us)", "(GB/s)", "(GB/s)", "", "(us)", "(GB/s)", "(GB/s)", ""
    );
    format!("{h1}\n{h2}\n{h3}")
}

/// The leading columns of a row: size, count, type, redop ("none" where it does not apply),
/// root (-1 where it does not apply), as nccl-tests prints them.
pub fn row_start(m: &Measurement, dtype: &str, op: Option<&str>, root: Option<usize>) -> String {
    let root = root.map_or("-1".to_string(), |r| r.to_string());
    format!("  {:>10}  {:>12}  {:>8}  {:>6}  {:>6}", m.bytes, m.count, dtype, op.unwrap_or("none"), root)
}

/// time, algbw, busbw, #wrong of one half of a row.
pub fn row_half(m: &Measurement) -> String {
    let t = m.time_us;
    let time = if t >= 10000.0 {
        format!("{t:7.0}")
    } else if t >= 100.0 {
        format!("{t:7.1}")
    } else {
        format!("{t:7.2}")
    };
    let wrong = m.wrong.map_or("N/A".to_string(), |w| w.to_string());
    format!("  {time}  {:6.2}  {:6.2}  {wrong:>6}", m.algbw_gbs, m.busbw_gbs)
}

/// nccl-tests' closing lines: wrong elements (None: nothing was checked) and the mean busbw
/// over every row half.
pub fn footer(wrong: Option<u64>, busbw_sum: f64, halves: usize) -> String {
    let verdict = match wrong {
        Some(0) => "0 OK".to_string(),
        Some(w) => format!("{w} FAILED"),
        None => "N/A (not checked: -c 0)".to_string(),
    };
    let avg = if halves == 0 { 0.0 } else { busbw_sum / halves as f64 };
    format!("# Wrong elements     : {verdict}\n# Avg bus bandwidth  : {avg:.4} GB/s")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(time_us: f64, wrong: Option<u64>) -> Measurement {
        Measurement {
            bytes: 1 << 20,
            count: 262144,
            in_place: false,
            time_us_min: time_us,
            time_us_avg: time_us,
            time_us_max: time_us,
            time_us,
            rank_time_us: vec![time_us],
            algbw_gbs: 1.5,
            busbw_gbs: 2.25,
            wrong,
            iteration_us: vec![],
        }
    }

    #[test]
    fn formats_like_nccl_tests() {
        assert_eq!(row_half(&m(12.345, Some(0))), "    12.35    1.50    2.25       0");
        assert_eq!(row_half(&m(123.45, None)), "    123.5    1.50    2.25     N/A");
        assert_eq!(row_half(&m(12345.6, Some(3))), "    12346    1.50    2.25       3");
        assert!(row_start(&m(1.0, None), "float", Some("sum"), None).ends_with("float     sum      -1"));
        assert!(footer(Some(0), 3.0, 2).contains(": 0 OK"));
        assert!(footer(Some(5), 3.0, 2).contains("5 FAILED") && footer(Some(5), 3.0, 2).contains("1.5000"));
        assert!(footer(None, 3.0, 2).contains("N/A"));
    }
}
