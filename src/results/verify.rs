//! /verify in the results file: every rank's inventory (one column per key), every probe's raw
//! repetitions, the GPU-to-GPU copy matrix, the burn-in windows, the verdicts and the health
//! failures.

use super::hdf5_file::{put_column, put_num, put_str, ResultsFile};
use crate::verify::figure::{self, P2P_COPY};
use crate::verify::outcome::Outcome;
use crate::verify::verdict::Tolerances;
use anyhow::Result;
use hdf5::types::VarLenUnicode;
use hdf5::Group;

/// How the run was judged, for the file's attributes.
pub struct VerifySettings<'a> {
    pub level: &'a str,
    pub tolerances: Tolerances,
    pub burn_s: u64,
    pub seed: u64,
}

fn texts(values: impl Iterator<Item = String>) -> Result<Vec<VarLenUnicode>> {
    values.map(|v| Ok(v.parse::<VarLenUnicode>()?)).collect()
}

impl ResultsFile {
    pub fn write_verify(&self, o: &Outcome, s: &VerifySettings) -> Result<()> {
        let g = self.file.create_group("verify")?;
        put_str(&g, "level", s.level)?;
        put_num(&g, "tolerance_pct", s.tolerances.compute_pct)?;
        put_num(&g, "link_tolerance_pct", s.tolerances.link_pct)?;
        put_num(&g, "burn_s", s.burn_s)?;
        put_num(&g, "seed", s.seed)?;
        let (figures, health) = o.failed();
        put_num(&g, "figures_failed", figures as u64)?;
        put_num(&g, "ranks_health_failed", health as u64)?;
        let reference = |r: &Option<crate::verify::reference::Reference>| r.as_ref().map_or("none".to_string(), |r| format!("{} ({})", r.gpu, r.origin));
        put_column(&g, "reference_per_rank", &texts(o.references.iter().map(reference))?)?;
        write_inventory(&g.create_group("inventory")?, o)?;
        write_probes(&g.create_group("probes")?, o)?;
        write_verdicts(&g.create_group("verdicts")?, o)?;
        let health = g.create_group("health")?;
        let failures: Vec<(usize, &String)> = o.reports.iter().enumerate().flat_map(|(rank, r)| r.health.iter().map(move |h| (rank, h))).collect();
        put_column(&health, "rank", &failures.iter().map(|f| f.0 as u64).collect::<Vec<_>>())?;
        put_column(&health, "failure", &texts(failures.iter().map(|f| f.1.clone()))?)?;
        let skipped = g.create_group("skipped")?;
        put_column(&skipped, "why", &texts(o.skipped.iter().map(|s| s.0.clone()))?)?;
        put_column(&skipped, "ranks", &texts(o.skipped.iter().map(|s| s.1.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(",")))?)?;
        write_matrix(&g, o)?;
        write_burn(&g, o)?;
        self.file.flush()?;
        Ok(())
    }
}

/// One column per key any rank has: numbers as f64 (NaN where a rank lacks the key), the rest as text.
fn write_inventory(g: &Group, o: &Outcome) -> Result<()> {
    let mut keys: Vec<&String> = o.reports.iter().flat_map(|r| r.inventory.keys()).collect();
    keys.sort();
    keys.dedup();
    for key in keys {
        let values: Vec<Option<&serde_json::Value>> = o.reports.iter().map(|r| r.inventory.get(key)).collect();
        if values.iter().flatten().all(|v| v.is_number()) {
            put_column(g, key, &values.iter().map(|v| v.and_then(|v| v.as_f64()).unwrap_or(f64::NAN)).collect::<Vec<_>>())?;
        } else {
            let text = |v: &Option<&serde_json::Value>| match v {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => String::new(),
            };
            put_column(g, key, &texts(values.iter().map(text))?)?;
        }
    }
    Ok(())
}

/// Per figure: each subject, its variant (a probe's size), its ranks, the work of a repetition, the seconds of every
/// repetition [subjects, repetitions] and the figure.
fn write_probes(g: &Group, o: &Outcome) -> Result<()> {
    for kind in figure::ALL {
        let all: Vec<&figure::Measurement> = o.reports.iter().flat_map(|r| &r.measurements).filter(|m| m.kind == kind.name).collect();
        if all.is_empty() {
            continue;
        }
        let f = g.create_group(kind.name)?;
        put_str(&f, "unit", kind.unit)?;
        put_str(&f, "what", kind.what)?;
        put_str(
            &f,
            "formula",
            match kind.formula {
                figure::Formula::Rate => "value = median over repetitions of work / seconds",
                figure::Formula::Latency => "value = median over repetitions of seconds * 1e6 / work",
            },
        )?;
        put_column(&f, "subject", &texts(all.iter().map(|m| m.subject.label.clone()))?)?;
        put_column(&f, "variant", &texts(all.iter().map(|m| m.variant.clone()))?)?;
        put_column(&f, "ranks", &texts(all.iter().map(|m| m.subject.ranks.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(",")))?)?;
        put_column(&f, "work", &all.iter().map(|m| m.work).collect::<Vec<_>>())?;
        put_column(&f, "value", &all.iter().map(|m| m.value()).collect::<Vec<_>>())?;
        let reps = all.iter().map(|m| m.seconds.len()).max().unwrap_or(0);
        let seconds: Vec<f64> = all.iter().flat_map(|m| (0..reps).map(|i| m.seconds.get(i).copied().unwrap_or(f64::NAN))).collect();
        f.new_dataset_builder().with_data(&ndarray::Array2::from_shape_vec((all.len(), reps), seconds)?).create("seconds")?;
    }
    Ok(())
}

fn write_verdicts(g: &Group, o: &Outcome) -> Result<()> {
    let v = &o.verdicts;
    put_column(g, "figure", &texts(v.iter().map(|v| v.figure.clone()))?)?;
    put_column(g, "subject", &texts(v.iter().map(|v| v.subject.clone()))?)?;
    put_column(g, "value", &v.iter().map(|v| v.value).collect::<Vec<_>>())?;
    put_column(g, "median", &v.iter().map(|v| v.median).collect::<Vec<_>>())?;
    put_column(g, "peers", &v.iter().map(|v| v.peers as u64).collect::<Vec<_>>())?;
    put_column(g, "median_limit", &v.iter().map(|v| v.median_limit).collect::<Vec<_>>())?;
    put_column(g, "reference_limit", &v.iter().map(|v| v.reference.as_ref().map_or(f64::NAN, |r| r.0)).collect::<Vec<_>>())?;
    put_column(g, "reference", &texts(v.iter().map(|v| v.reference.as_ref().map_or(String::new(), |r| r.1.clone())))?)?;
    put_column(g, "passed", &v.iter().map(|v| v.passed as u8).collect::<Vec<_>>())?;
    Ok(())
}

/// p2p_copy_gbs [from rank, to rank], NaN where not measured (the diagonal, other hosts).
fn write_matrix(g: &Group, o: &Outcome) -> Result<()> {
    let n = o.reports.len();
    let copies: Vec<&figure::Measurement> = o.reports.iter().flat_map(|r| &r.measurements).filter(|m| m.kind == P2P_COPY.name).collect();
    if copies.is_empty() {
        return Ok(());
    }
    let mut matrix = ndarray::Array2::from_elem((n, n), f64::NAN);
    for m in copies {
        if let [from, to] = m.subject.ranks[..] {
            matrix[(from, to)] = m.value();
        }
    }
    g.new_dataset_builder().with_data(&matrix).create("p2p_copy_gbs")?;
    Ok(())
}

/// /verify/burn: per field [ranks, windows] (NaN where a rank had fewer windows).
fn write_burn(g: &Group, o: &Outcome) -> Result<()> {
    let burns: Vec<Option<&crate::verify::burn::Burn>> = o.reports.iter().map(|r| r.burn.as_ref()).collect();
    let windows = burns.iter().flatten().map(|b| b.windows.len()).max().unwrap_or(0);
    if windows == 0 {
        return Ok(());
    }
    let b = g.create_group("burn")?;
    put_column(&b, "gemms_per_window", &burns.iter().map(|x| x.map_or(0, |b| b.gemms_per_window as u64)).collect::<Vec<_>>())?;
    type Field = fn(&crate::verify::burn::Window) -> f64;
    let fields: [(&str, Field); 6] = [
        ("seconds", |w| w.seconds),
        ("sm_clock_mhz", |w| w.sm_clock_mhz),
        ("power_w", |w| w.power_w),
        ("temp_gpu_c", |w| w.temp_gpu_c),
        ("temp_hbm_c", |w| w.temp_hbm_c),
        ("throttle_reasons", |w| w.throttle_reasons),
    ];
    for (name, get) in fields {
        let values: Vec<f64> = burns.iter().flat_map(|x| (0..windows).map(move |i| x.and_then(|b| b.windows.get(i)).map_or(f64::NAN, get))).collect();
        b.new_dataset_builder().with_data(&ndarray::Array2::from_shape_vec((burns.len(), windows), values)?).create(name)?;
    }
    Ok(())
}
