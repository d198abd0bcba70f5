//! The step-time model's rates (zero/step_model.rs) measured in our results files: the
//! compute rate and AdamW's time per parameter from an SFT run (/sft, its measured steps),
//! the bus bandwidth from a sweep (/nccl all_reduce, out of place, at its largest size): within
//! a host when the sweep's ranks shared one (/ranks/host), between hosts otherwise.

use crate::model::config::LlamaConfig;
use crate::model::layout::Layout;
use crate::train::run_config::RunConfig;
use crate::zero::step_model::{compute_mfu, Rates, ADAMW_BYTES_PER_PARAM};
use anyhow::{bail, Context, Result};
use hdf5::types::VarLenUnicode;
use std::path::Path;

/// Replaces the rates `path` measured; returns what it took from the file.
pub fn calibrate(rates: &mut Rates, path: &Path) -> Result<String> {
    let file = hdf5::File::open(path).with_context(|| format!("--calibrate {}: not an HDF5 file", path.display()))?;
    if file.attr("program").and_then(|a| a.read_scalar::<VarLenUnicode>()).map(|p| p.as_str() == "h200-mpibench").ok() != Some(true) {
        bail!("--calibrate {}: not an h200-mpibench results file", path.display());
    }
    // What was taken, and what a group offered but could not give.
    let (mut took, mut notes) = (Vec::new(), Vec::new());
    if let Ok(sft) = file.group("sft") {
        took.push(from_sft(rates, &file, &sft).with_context(|| format!("--calibrate {}: /sft", path.display()))?);
    }
    if let Ok(nccl) = file.group("nccl") {
        match from_sweep(rates, &file, &nccl).with_context(|| format!("--calibrate {}: /nccl", path.display()))? {
            Ok(what) => took.push(what),
            Err(why) => notes.push(why),
        }
    }
    if took.is_empty() {
        let why = if notes.is_empty() { String::new() } else { format!(" ({})", notes.join("; ")) };
        bail!("--calibrate {}: holds neither a finished GPU SFT run nor an NCCL all_reduce sweep of several ranks{why}", path.display());
    }
    took.extend(notes.into_iter().map(|n| format!("not taken: {n}")));
    Ok(format!("{}: {}", path.display(), took.join("; ")))
}

fn text_attr(g: &hdf5::Location, name: &str) -> Result<String> {
    Ok(g.attr(name)?.read_scalar::<VarLenUnicode>()?.as_str().to_string())
}

/// Compute rate = tokens × FLOPs per token (× 4/3 with recompute) ÷ the steps' time less
/// optimizer and exposed communication, ÷ PEAK_FLOPS; AdamW per parameter = the optimizer's time ÷ the parameters
/// the rank owned (all of them alone or at stage 0, else a 1/n share). Measured steps only.
fn from_sft(rates: &mut Rates, file: &hdf5::File, g: &hdf5::Group) -> Result<String> {
    if g.attr("summary_step_s").is_err() {
        bail!("the run did not finish (no summary)");
    }
    if text_attr(g, "engine")? != "cuda" {
        bail!("a CPU run has no GPU rates");
    }
    let warmup = g.attr("warmup_steps")?.read_scalar::<u64>()? as usize;
    let column = |name: &str| -> Result<Vec<f64>> { Ok(g.dataset(name)?.read_raw::<f64>()?.into_iter().skip(warmup).collect()) };
    let (step_s, optimizer_s, comm_s) = (column("step_s")?, column("optimizer_s")?, column("comm_s")?);
    let tokens: Vec<u64> = g.dataset("tokens")?.read_raw::<u64>()?.into_iter().skip(warmup).collect();
    let flops_per_token = g.attr("flops_per_token")?.read_scalar::<f64>()?;
    let compute_s: f64 = (0..step_s.len()).map(|i| step_s[i] - optimizer_s[i] - comm_s[i]).sum();
    let run: RunConfig = serde_json::from_str(&text_attr(g, "run_json")?)?;
    let mfu = compute_mfu(tokens.iter().sum::<u64>() as f64, flops_per_token, run.recompute, compute_s);
    let mut model: serde_json::Value = serde_json::from_str(&text_attr(g, "model_json")?)?;
    model["name"] = text_attr(g, "model")?.into();
    let model: LlamaConfig = serde_json::from_value(model)?;
    let ranks = file.attr("world_size")?.read_scalar::<u64>()? as f64;
    let params = Layout::new(&model).parameters() as f64;
    let owned = if run.zero == 0 { params } else { params / ranks };
    let optimizer = optimizer_s.iter().sum::<f64>() / optimizer_s.len().max(1) as f64;
    if !(mfu.is_finite() && mfu > 0.0 && optimizer > 0.0) {
        bail!("its steps give no usable rate (MFU {mfu}, optimizer {optimizer} s)");
    }
    rates.mfu = mfu;
    rates.optimizer_s_per_param = optimizer / owned;
    Ok(format!(
        "compute at {:.1}% MFU and AdamW at {:.0} GB/s-equivalent from {} measured steps of {}",
        100.0 * mfu,
        owned * ADAMW_BYTES_PER_PARAM / optimizer / 1e9,
        step_s.len(),
        model.name
    ))
}

/// The NCCL all_reduce series' out-of-place busbw at its largest size, as the bus bandwidth of
/// the link class its ranks spanned; or why the sweep gives none.
fn from_sweep(rates: &mut Rates, file: &hdf5::File, g: &hdf5::Group) -> Result<Result<String, String>> {
    let Ok(all_reduce) = g.group("all_reduce") else { return Ok(Err("the sweep has no all_reduce".into())) };
    let mut best: Option<(u64, f64)> = None;
    for series in all_reduce.groups()? {
        if text_attr(&series, "engine")? != "nccl" {
            continue;
        }
        let bytes = series.dataset("bytes")?.read_raw::<u64>()?;
        let in_place = series.dataset("in_place")?.read_raw::<u8>()?;
        let busbw = series.dataset("busbw_gbs")?.read_raw::<f64>()?;
        for i in (0..bytes.len()).filter(|&i| in_place[i] == 0) {
            if best.is_none_or(|(b, _)| bytes[i] > b) {
                best = Some((bytes[i], busbw[i]));
            }
        }
    }
    let Some((bytes, busbw)) = best else { return Ok(Err("its sweep ran over MPI on host memory, not NCCL".into())) };
    let hosts: Vec<VarLenUnicode> = file.dataset("ranks/host")?.read_raw()?;
    if hosts.len() < 2 {
        return Ok(Err("its sweep ran on one rank: no link".into()));
    }
    let mut distinct: Vec<&str> = hosts.iter().map(|h| h.as_str()).collect();
    distinct.sort();
    distinct.dedup();
    let class = if distinct.len() == 1 {
        rates.within_host_gbs = busbw;
        "within a host"
    } else {
        rates.between_hosts_gbs = busbw;
        "between hosts"
    };
    Ok(Ok(format!("{busbw:.1} GB/s busbw {class} (all_reduce at {bytes} bytes over {} ranks)", hosts.len())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::metrics::PEAK_FLOPS;
    use crate::zero::step_model::NIC_GBS;

    fn text(g: &hdf5::Location, name: &str, value: &str) {
        g.new_attr::<VarLenUnicode>().create(name).unwrap().write_scalar(&value.parse::<VarLenUnicode>().unwrap()).unwrap();
    }

    /// A results file as our runs write it, with what calibration reads: a 2-rank GPU SFT run
    /// at ZeRO 1 and an NCCL all_reduce sweep over two hosts.
    fn file_like_ours(path: &Path) {
        let f = hdf5::File::create(path).unwrap();
        text(&f, "program", "h200-mpibench");
        f.new_attr::<u64>().create("world_size").unwrap().write_scalar(&2).unwrap();
        let hosts: Vec<VarLenUnicode> = ["a", "b"].iter().map(|h| h.parse().unwrap()).collect();
        f.create_group("ranks").unwrap().new_dataset_builder().with_data(&hosts).create("host").unwrap();
        let sft = f.create_group("sft").unwrap();
        for (name, value) in [("engine", "cuda"), ("model", "tiny")] {
            text(&sft, name, value);
        }
        let model = r#"{"dim":64,"ffn_dim":176,"n_layers":2,"n_heads":4,"n_kv_heads":2,"vocab_size":128,"norm_eps":1e-5,"rope_theta":10000.0}"#;
        text(&sft, "model_json", model);
        text(&sft, "run_json", &serde_json::to_string(&RunConfig { zero: 1, ..RunConfig::defaults_for("tiny") }).unwrap());
        for (name, value) in [("summary_step_s", 1.0), ("flops_per_token", 1e9)] {
            sft.new_attr::<f64>().create(name).unwrap().write_scalar(&value).unwrap();
        }
        sft.new_attr::<u64>().create("warmup_steps").unwrap().write_scalar(&1).unwrap();
        for (name, values) in [("step_s", [9.0, 2.0, 3.0]), ("optimizer_s", [1.0, 0.5, 0.5]), ("comm_s", [0.0, 0.5, 0.5])] {
            sft.new_dataset_builder().with_data(&values).create(name).unwrap();
        }
        sft.new_dataset_builder().with_data(&[100u64, 1000, 1000]).create("tokens").unwrap();
        let series = f.create_group("nccl").unwrap().create_group("all_reduce").unwrap().create_group("float_sum").unwrap();
        text(&series, "engine", "nccl");
        series.new_dataset_builder().with_data(&[1u64 << 20, 1 << 30, 1 << 30]).create("bytes").unwrap();
        series.new_dataset_builder().with_data(&[0u8, 1, 0]).create("in_place").unwrap();
        series.new_dataset_builder().with_data(&[10.0, 300.0, 42.5]).create("busbw_gbs").unwrap();
    }

    #[test]
    fn rates_come_from_the_measured_steps_and_the_largest_size() {
        let path = std::env::temp_dir().join(format!("calibration-{}.h5", std::process::id()));
        file_like_ours(&path);
        let mut rates = Rates::reference(0.5, 8, NIC_GBS);
        let took = calibrate(&mut rates, &path).unwrap();
        // measured steps 2 and 3: 2000 tokens × 1e9 FLOPs over (2 − 1) + (3 − 1) s of compute
        assert!((rates.mfu - 2000.0 * 1e9 / 3.0 / PEAK_FLOPS).abs() < 1e-15, "{rates:?}");
        // AdamW 0.5 s over half the parameters (ZeRO 1 on 2 ranks)
        let model = LlamaConfig::load("tiny").unwrap();
        let owned = Layout::new(&model).parameters() as f64 / 2.0;
        assert!((rates.optimizer_s_per_param - 0.5 / owned).abs() < 1e-18);
        // out of place at the largest size, two hosts: between hosts; within a host untouched
        assert_eq!((rates.between_hosts_gbs, rates.within_host_gbs), (42.5, crate::zero::step_model::WITHIN_HOST_BUSBW_GBS));
        assert!(took.contains("42.5 GB/s busbw between hosts") && took.contains("2 measured steps of tiny"), "{took}");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn files_not_ours_are_refused() {
        let path = std::env::temp_dir().join(format!("calibration-bad-{}.h5", std::process::id()));
        std::fs::write(&path, "not hdf5").unwrap();
        let mut rates = Rates::reference(0.5, 8, NIC_GBS);
        assert!(format!("{:#}", calibrate(&mut rates, &path).unwrap_err()).contains("not an HDF5 file"));
        hdf5::File::create(&path).unwrap();
        assert!(format!("{:#}", calibrate(&mut rates, &path).unwrap_err()).contains("not an h200-mpibench results file"));
        assert_eq!(rates, Rates::reference(0.5, 8, NIC_GBS));
        std::fs::remove_file(&path).unwrap();
    }
}
