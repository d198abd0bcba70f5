//! The reference table of a GPU model (configs/reference/<model>.json, embedded; or a file given
//! with --reference): for each figure either a measured ceiling (`expected`: the figure fails
//! below expected × (1 − tolerance)) or an acceptance threshold (`min`, or `max` for a latency:
//! the figure fails beyond it), each naming its source.

use super::figure;
use serde::Deserialize;
use std::collections::BTreeMap;

const EMBEDDED: [(&str, &str); 1] = [("configs/reference/h200.json", include_str!("../../configs/reference/h200.json"))];

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reference {
    /// The GPU model, as the output names it.
    pub gpu: String,
    /// A GPU whose name contains one of these uses this table.
    pub matches: Vec<String>,
    /// Source key → what it is.
    pub sources: BTreeMap<String, String>,
    pub figures: BTreeMap<String, Entry>,
    /// Where the table came from (set on loading).
    #[serde(skip)]
    pub origin: String,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub expected: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub source: String,
}

impl Reference {
    fn parse(text: &str, origin: &str) -> Result<Reference, String> {
        let mut r: Reference = serde_json::from_str(text).map_err(|e| format!("reference table {origin}: {e}"))?;
        r.origin = origin.to_string();
        for (name, e) in &r.figures {
            let bad = |why: &str| Err(format!("reference table {origin}: figure {name}: {why}"));
            if figure::kind(name).is_none() {
                let known: Vec<&str> = figure::ALL.iter().map(|k| k.name).collect();
                return bad(&format!("no such figure (known: {})", known.join(", ")));
            }
            let given = [e.expected, e.min, e.max];
            if given.iter().flatten().count() != 1 {
                return bad("give exactly one of expected, min and max");
            }
            if given.iter().flatten().any(|v| !(v.is_finite() && *v > 0.0)) {
                return bad("the threshold must be a positive number");
            }
            let latency = figure::kind(name).is_some_and(|k| k.formula == figure::Formula::Latency);
            if (latency && e.min.is_some()) || (!latency && e.max.is_some()) {
                return bad(if latency { "a latency takes expected or max, not min" } else { "a rate takes expected or min, not max" });
            }
            if !r.sources.contains_key(&e.source) {
                return bad(&format!("source '{}' is not in the table's sources", e.source));
            }
        }
        Ok(r)
    }

    /// The table given with --reference, read and checked (before anything runs).
    pub fn from_file(path: &str) -> Result<Reference, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("--reference {path}: {e}"))?;
        Reference::parse(&text, path)
    }

    /// The embedded table whose `matches` the GPU name contains.
    pub fn for_gpu(gpu_name: &str) -> Option<Reference> {
        EMBEDDED
            .iter()
            .map(|(origin, text)| Reference::parse(text, origin).expect("the embedded reference tables parse (tested)"))
            .find(|r| r.applies_to(gpu_name))
    }

    pub fn applies_to(&self, gpu_name: &str) -> bool {
        self.matches.iter().any(|m| gpu_name.contains(m.as_str()))
    }

    /// The entry for figure `name`, with its source's description.
    pub fn entry(&self, name: &str) -> Option<(&Entry, &str)> {
        self.figures.get(name).map(|e| (e, self.sources.get(&e.source).map_or("", |s| s.as_str())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_tables_parse_and_pick_their_gpu() {
        let r = Reference::for_gpu("NVIDIA H200").unwrap();
        assert_eq!(r.entry("h2d_gbs").unwrap().0.min, Some(48.0));
        assert!(r.entry("gemm_bf16_tflops").unwrap().1.contains("held under the power limit"));
        assert!(Reference::for_gpu("NVIDIA A100-SXM4-80GB").is_none());
        assert!(Reference::for_gpu("no GPU").is_none());
    }

    #[test]
    fn a_bad_table_is_refused_with_its_reason() {
        let table = |figures: &str| format!(r#"{{"gpu": "X", "matches": ["X"], "sources": {{"s": "a source"}}, "figures": {{{figures}}}}}"#);
        assert!(Reference::parse(&table(r#""gemm_bf16_tflops": {"min": 5, "source": "s"}"#), "t").is_ok());
        let e = Reference::parse(&table(r#""gemm_flops": {"min": 5, "source": "s"}"#), "t").unwrap_err();
        assert!(e.contains("no such figure"), "{e}");
        let e = Reference::parse(&table(r#""h2d_gbs": {"min": 5, "expected": 6, "source": "s"}"#), "t").unwrap_err();
        assert!(e.contains("exactly one"), "{e}");
        let e = Reference::parse(&table(r#""h2d_gbs": {"min": -1, "source": "s"}"#), "t").unwrap_err();
        assert!(e.contains("positive"), "{e}");
        let e = Reference::parse(&table(r#""h2d_gbs": {"max": 5, "source": "s"}"#), "t").unwrap_err();
        assert!(e.contains("a rate takes expected or min"), "{e}");
        let e = Reference::parse(&table(r#""mpi_latency_us": {"min": 5, "source": "s"}"#), "t").unwrap_err();
        assert!(e.contains("a latency takes expected or max"), "{e}");
        let e = Reference::parse(&table(r#""h2d_gbs": {"min": 1, "source": "elsewhere"}"#), "t").unwrap_err();
        assert!(e.contains("not in the table's sources"), "{e}");
        assert!(Reference::parse("{", "t").unwrap_err().starts_with("reference table t: "));
    }
}
