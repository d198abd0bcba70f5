//! What every rank found, brought together on rank 0: the verdicts of every figure, each
//! rank's health, what was skipped and why, and the table and failure lines rank 0 prints.

use super::burn::Burn;
use super::figure::Measurement;
use super::inventory::Inventory;
use super::reference::Reference;
use super::verdict::{judge, number, Tolerances, Verdict};
use serde::{Deserialize, Serialize};

/// One rank's findings, as it sends them to rank 0.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RankReport {
    pub inventory: Inventory,
    pub measurements: Vec<Measurement>,
    /// Health failures found on this rank ("what: why").
    pub health: Vec<String>,
    pub burn: Option<Burn>,
    /// What this rank could not measure, and why.
    pub skipped: Vec<String>,
}

/// Everything judged.
pub struct Outcome {
    pub reports: Vec<RankReport>,
    pub verdicts: Vec<Verdict>,
    /// Per rank, the reference table its GPU was judged against (None: the median only).
    pub references: Vec<Option<Reference>>,
    /// Each distinct skip, with the ranks it applies to.
    pub skipped: Vec<(String, Vec<usize>)>,
}

impl Outcome {
    /// `given`: the --reference table, for every GPU; otherwise the embedded table matching each
    /// rank's GPU name.
    pub fn judge(reports: Vec<RankReport>, tolerances: Tolerances, given: Option<&Reference>) -> Outcome {
        let references: Vec<Option<Reference>> = reports
            .iter()
            .map(|r| {
                let gpu = r.inventory.get("gpu_name").and_then(|v| v.as_str())?;
                given.cloned().or_else(|| Reference::for_gpu(gpu))
            })
            .collect();
        let all: Vec<Measurement> = reports.iter().flat_map(|r| r.measurements.iter().cloned()).collect();
        let verdicts = judge(&all, tolerances, &|rank| references.get(rank).and_then(|r| r.as_ref()));
        let mut skipped: Vec<(String, Vec<usize>)> = Vec::new();
        for (rank, r) in reports.iter().enumerate() {
            for why in &r.skipped {
                match skipped.iter_mut().find(|(w, _)| w == why) {
                    Some((_, ranks)) => ranks.push(rank),
                    None => skipped.push((why.clone(), vec![rank])),
                }
            }
        }
        Outcome { reports, verdicts, references, skipped }
    }

    /// How many figures and how many ranks' health checks failed.
    pub fn failed(&self) -> (usize, usize) {
        (self.verdicts.iter().filter(|v| !v.passed).count(), self.reports.iter().filter(|r| !r.health.is_empty()).count())
    }

    /// "host a GPU 0 (GPU-…)" or "rank 2 on a": how a rank's failures are named.
    fn who(&self, rank: usize) -> String {
        let inv = &self.reports[rank].inventory;
        let text = |k: &str| inv.get(k).and_then(|v| v.as_str()).unwrap_or("?").to_string();
        match inv.get("gpu_uuid") {
            Some(_) => format!("rank {rank}: {} GPU {} ({})", text("host"), inv.get("gpu_ordinal").map_or("?".into(), |v| v.to_string()), text("gpu_uuid")),
            None => format!("rank {rank} on {}", text("host")),
        }
    }

    /// One line per failure, each naming where it is.
    pub fn failure_lines(&self) -> Vec<String> {
        let health = self
            .reports
            .iter()
            .enumerate()
            .flat_map(|(rank, r)| r.health.iter().map(move |h| (rank, h)))
            .map(|(rank, h)| format!("{}: health: {h}", self.who(rank)));
        self.verdicts.iter().filter(|v| !v.passed).map(|v| v.line()).chain(health).collect()
    }

    /// The table rank 0 prints: every verdict, the health of every rank, what was skipped.
    pub fn table(&self, tolerances: Tolerances) -> String {
        let mut out = format!(
            "# verify: each figure against the median of its peers (GEMM and memory within {}%, links within {}%) and its GPU's reference table\n",
            tolerances.compute_pct, tolerances.link_pct
        );
        let mut tables: Vec<String> = self.references.iter().flatten().map(|r| format!("{} ({})", r.gpu, r.origin)).collect();
        tables.dedup();
        match tables.is_empty() {
            true => out += "# reference: none applies (no GPU, or no table for this GPU model): judged against the median only\n",
            false => out += &format!("# reference: {}\n", tables.join(", ")),
        }
        if self.references.iter().any(|r| r.is_none()) && !tables.is_empty() {
            out += "# some ranks' GPUs have no reference table: those are judged against the median only\n";
        }
        out += &format!("{:<26} {:<52} {:>10} {:<8} {:>10} {:>10} {:>10}  verdict\n", "# figure", "subject", "value", "unit", "median", "limit", "reference");
        for v in &self.verdicts {
            let lower = super::figure::kind(&v.figure).is_some_and(|k| k.formula == super::figure::Formula::Latency);
            let side = if lower { "≤" } else { "≥" };
            let reference = v.reference.as_ref().map_or("-".to_string(), |(limit, _)| format!("{side} {}", number(*limit)));
            out += &format!(
                "{:<26} {:<52} {:>10} {:<8} {:>10} {:>10} {:>10}  {}\n",
                v.figure,
                v.subject,
                number(v.value),
                v.unit,
                if v.peers == 0 { "-".to_string() } else { number(v.median) },
                if v.peers == 0 { "-".to_string() } else { format!("{side} {}", number(v.median_limit)) },
                reference,
                if v.passed { "ok" } else { "FAILED" }
            );
        }
        for (rank, r) in self.reports.iter().enumerate() {
            let health = if r.health.is_empty() { "ok".to_string() } else { format!("FAILED: {}", r.health.join("; ")) };
            out += &format!("# health of {}: {health}\n", self.who(rank));
        }
        for (why, ranks) in &self.skipped {
            out += &format!("# skipped on {}: {why}\n", ranks_text(ranks, self.reports.len()));
        }
        let (figures, health) = self.failed();
        out += &format!("# verify: {figures} of {} figures and the health of {health} of {} rank(s) failed\n", self.verdicts.len(), self.reports.len());
        out
    }
}

/// "every rank" or "ranks 1, 3".
fn ranks_text(ranks: &[usize], world: usize) -> String {
    match ranks.len() {
        n if n == world => "every rank".to_string(),
        1 => format!("rank {}", ranks[0]),
        _ => format!("ranks {}", ranks.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::figure::{Subject, HOST_MEMCPY};
    use serde_json::json;

    fn report(rank: usize, gbs: f64, health: &[&str]) -> RankReport {
        let subject = Subject { label: format!("rank {rank} on h"), ranks: vec![rank] };
        RankReport {
            inventory: json!({"host": "h"}).as_object().unwrap().clone(),
            measurements: vec![Measurement::new(HOST_MEMCPY, subject, gbs, vec![1.0])],
            health: health.iter().map(|h| h.to_string()).collect(),
            burn: None,
            skipped: vec!["no GPU on this host".into()],
        }
    }

    #[test]
    fn the_slow_and_the_sick_are_named_once_each() {
        let tol = Tolerances { compute_pct: 5.0, link_pct: 10.0 };
        let o = Outcome::judge(vec![report(0, 10.0, &[]), report(1, 10.1, &[]), report(2, 3.0, &[]), report(3, 10.0, &["ecc: bad"])], tol, None);
        assert_eq!(o.failed(), (1, 1));
        let lines = o.failure_lines();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].starts_with("rank 2 on h: host_memcpy_gbs 3.00 GB/s"), "{}", lines[0]);
        assert_eq!(lines[1], "rank 3 on h: health: ecc: bad");
        let table = o.table(tol);
        assert!(table.contains("# skipped on every rank: no GPU on this host"), "{table}");
        assert!(table.contains("# reference: none applies"), "{table}");
        assert!(table.ends_with("# verify: 1 of 4 figures and the health of 1 of 4 rank(s) failed\n"), "{table}");
        assert_eq!(table.matches("FAILED").count(), 2, "{table}");
    }
}
