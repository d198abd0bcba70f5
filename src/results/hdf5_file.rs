//! Rank 0's HDF5 results file. It is written as `<out>.partial` and renamed to `<out>` when the
//! run completes; it is flushed after every series and every few steps or rows, so a run that
//! dies leaves a readable `.partial` file holding what it finished. Schema: README.md,
//! "Results file".

use super::append_table::{AppendTable, Kind};
use super::metadata::RunMetadata;
use crate::dist::interrupt::Hook;
use crate::sweep::runner::Series;
use anyhow::{bail, Context, Result};
use hdf5::types::VarLenUnicode;
use hdf5::{Group, H5Type, Location};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub struct ResultsFile {
    pub(super) file: hdf5::File,
    partial: PathBuf,
    target: PathBuf,
    overwrite: bool,
    /// The growing tables (sft steps, selftest rows): flushed on interrupt and at the end.
    tables: Arc<Mutex<Vec<AppendTable>>>,
}

impl ResultsFile {
    /// Creates `<target>.partial`, always as a new file: fails now, before any benchmark, if the
    /// path is unwritable or the partial file exists (a run writing it, or the only results of
    /// one that died: --overwrite does not touch it). On SIGINT/SIGTERM or a fatal error the
    /// tables' pending rows are written and the partial file stays.
    pub fn create(target: &Path, overwrite: bool) -> Result<ResultsFile> {
        let mut partial = target.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        hdf5::silence_errors(true);
        let file = hdf5::File::create_excl(&partial).with_context(|| match partial.symlink_metadata().is_ok() {
            true => format!("{} exists (a run writing it, or the results of one that died): move it away first", partial.display()),
            false => format!("cannot write the results file {}", partial.display()),
        })?;
        let tables: Arc<Mutex<Vec<AppendTable>>> = Arc::default();
        let (kept, handle, shown) = (tables.clone(), file.clone(), partial.display().to_string());
        let save = move || {
            if let Ok(tables) = kept.lock() {
                tables.iter().for_each(|t| drop(t.close()));
            }
            let _ = handle.flush();
        };
        crate::dist::interrupt::on_interrupt(Hook { note: format!("what finished goes to {shown}"), save: Box::new(save) });
        Ok(ResultsFile { file, partial, target: target.to_path_buf(), overwrite, tables })
    }

    /// A growing table in `group`, flushed with the file (append_table.rs).
    pub fn table(&self, group: &Group, columns: &[(&str, Kind)]) -> Result<AppendTable> {
        let table = AppendTable::create(&self.file, group, columns)?;
        self.tables.lock().map_err(|_| anyhow::anyhow!("results tables poisoned"))?.push(table.clone());
        Ok(table)
    }

    pub fn write_metadata(&self, meta: &RunMetadata) -> Result<()> {
        let root: &Location = &self.file;
        put_str(root, "program", "h200-mpibench")?;
        put_str(root, "version", &meta.version)?;
        put_str(root, "git_commit", &meta.git_commit)?;
        put_str(root, "command_line", &meta.command_line)?;
        put_str(root, "suite", &meta.suite)?;
        put_str(root, "engine", &meta.engine)?;
        put_str(root, "start_utc", &meta.start_utc)?;
        put_num(root, "world_size", meta.ranks.len() as u64)?;
        put_str(root, "driver_version", &meta.driver_version)?;
        put_str(root, "cuda_driver_version", &meta.cuda_version)?;
        put_str(root, "nccl_version", &meta.nccl_version)?;
        put_str(root, "mpi_version", &meta.mpi_version)?;
        put_str(root, "nccl_env", &meta.nccl_env_json)?;
        let ranks = self.file.create_group("ranks")?;
        let column = |f: &dyn Fn(&super::metadata::RankInfo) -> String| -> Result<Vec<VarLenUnicode>> {
            meta.ranks.iter().map(|r| Ok(f(r).parse::<VarLenUnicode>()?)).collect()
        };
        put_column(&ranks, "host", &column(&|r| r.host.clone())?)?;
        put_column(&ranks, "gpu_name", &column(&|r| r.gpu_name.clone())?)?;
        put_column(&ranks, "gpu_pci_bus_id", &column(&|r| r.gpu_pci_bus_id.clone())?)?;
        put_column(&ranks, "gpu_uuid", &column(&|r| r.gpu_uuid.clone())?)?;
        let local: Vec<u32> = meta.ranks.iter().map(|r| r.local_rank as u32).collect();
        put_column(&ranks, "local_rank", &local)?;
        let gpu: Vec<i32> = meta.ranks.iter().map(|r| r.gpu_index).collect();
        put_column(&ranks, "gpu_index", &gpu)?;
        self.file.flush()?;
        Ok(())
    }

    /// Writes one series under /<under>/<collective>/<dtype>[_<op>][_root<r>] (`under`: nccl,
    /// or a scaling size's group) and flushes.
    pub fn write_series(&self, under: &str, s: &Series, settings: &SeriesSettings, energy: &SeriesEnergy) -> Result<()> {
        let parent = match self.file.group(under) {
            Ok(g) => g,
            Err(_) => self.file.create_group(under)?,
        };
        let collective = match parent.group(s.collective.name()) {
            Ok(g) => g,
            Err(_) => parent.create_group(s.collective.name())?,
        };
        let mut name = s.dtype.name().to_string();
        if let Some(op) = s.op {
            name += &format!("_{op}");
        }
        if let Some(root) = s.root {
            name += &format!("_root{root}");
        }
        let g = collective.create_group(&name)?;
        put_str(&g, "collective", s.collective.name())?;
        put_str(&g, "dtype", s.dtype.name())?;
        put_str(&g, "op", &s.op.map_or("none".into(), |o| o.to_string()))?;
        put_num(&g, "root", s.root.map_or(-1, |r| r as i64))?;
        put_num(&g, "ranks", s.ranks as u64)?;
        put_num(&g, "busbw_factor", s.collective.busbw_factor(s.ranks))?;
        put_num(&g, "iters", settings.iters as u64)?;
        put_num(&g, "warmup_iters", settings.warmup_iters as u64)?;
        put_num(&g, "check_iters", settings.check_iters as u64)?;
        put_num(&g, "graph_launches", settings.graph_launches as u64)?;
        put_str(&g, "aggregate", settings.aggregate)?;
        put_str(&g, "engine", settings.engine)?;

        let col = |f: &dyn Fn(&crate::sweep::runner::Measurement) -> f64| -> Vec<f64> { s.rows.iter().map(f).collect() };
        put_column(&g, "bytes", &s.rows.iter().map(|r| r.bytes as u64).collect::<Vec<_>>())?;
        put_column(&g, "count", &s.rows.iter().map(|r| r.count as u64).collect::<Vec<_>>())?;
        put_column(&g, "in_place", &s.rows.iter().map(|r| r.in_place as u8).collect::<Vec<_>>())?;
        put_column(&g, "time_us", &col(&|r| r.time_us))?;
        put_column(&g, "time_us_min", &col(&|r| r.time_us_min))?;
        put_column(&g, "time_us_avg", &col(&|r| r.time_us_avg))?;
        put_column(&g, "time_us_max", &col(&|r| r.time_us_max))?;
        put_column(&g, "algbw_gbs", &col(&|r| r.algbw_gbs))?;
        put_column(&g, "busbw_gbs", &col(&|r| r.busbw_gbs))?;
        // -1: not checked (-c 0, in-place alltoall and sendrecv)
        put_column(&g, "wrong", &s.rows.iter().map(|r| r.wrong.map_or(-1, |w| w as i64)).collect::<Vec<_>>())?;
        let per_rank: Vec<f64> = s.rows.iter().flat_map(|r| r.rank_time_us.iter().copied()).collect();
        let per_rank = ndarray::Array2::from_shape_vec((s.rows.len(), s.ranks), per_rank)?;
        g.new_dataset_builder().with_data(&per_rank).create("rank_time_us")?;
        let launches = s.launches_per_row();
        let raw: Vec<f64> = s.rows.iter().flat_map(|r| r.iteration_us.iter().copied()).collect();
        let raw = ndarray::Array3::from_shape_vec((s.rows.len(), s.ranks, launches), raw).context("per-iteration times have uneven lengths")?;
        g.new_dataset_builder().with_data(&raw).create("iteration_time_us")?;
        put_column(&g, "energy_j_per_rank", &energy.joules)?;
        put_column(&g, "seconds_per_rank", &energy.seconds)?;
        self.file.flush()?;
        Ok(())
    }

    /// Records a phase's wall time and exit code (attributes `phase_<name>_s`, `phase_<name>_exit_code`).
    pub fn note_phase(&self, name: &str, seconds: f64, exit_code: i32) -> Result<()> {
        put_num(&self.file, &format!("phase_{name}_s"), seconds)?;
        put_num(&self.file, &format!("phase_{name}_exit_code"), exit_code as i64)?;
        self.file.flush()?;
        Ok(())
    }

    /// Records why the suite stopped before its last phase (attribute `stopped`).
    pub fn note_stopped(&self, why: &str) -> Result<()> {
        put_str(&self.file, "stopped", why)?;
        self.file.flush()?;
        Ok(())
    }

    /// Removes the unfinished file (a run refused before it measured anything).
    pub fn discard(&self) {
        let _ = std::fs::remove_file(&self.partial);
    }

    /// Records the end time and moves the file to its final name, which it never replaces
    /// unless the run was given --overwrite (a file that appeared there meanwhile stays, and
    /// so does the `.partial` one).
    pub fn finish(self, end_utc: &str, exit_code: i32) -> Result<PathBuf> {
        {
            let mut tables = self.tables.lock().map_err(|_| anyhow::anyhow!("results tables poisoned"))?;
            for table in tables.iter() {
                table.flush()?;
            }
            // Their handles would keep the file open past close() (HDF5 closes a file when its
            // last object goes), so the attributes below would never reach the disk.
            tables.clear();
        }
        put_str(&self.file, "end_utc", end_utc)?;
        put_num(&self.file, "exit_code", exit_code as i64)?;
        self.file.flush()?;
        self.file.close()?;
        let (from, to) = (self.partial.display(), self.target.display());
        if self.overwrite {
            std::fs::rename(&self.partial, &self.target).with_context(|| format!("cannot rename {from} to {to}"))?;
        } else {
            // A hard link fails where the target exists: the rename that cannot replace. Where
            // the file system has no hard links, a rename after checking (a small race).
            match std::fs::hard_link(&self.partial, &self.target) {
                Ok(()) => std::fs::remove_file(&self.partial).with_context(|| format!("cannot remove {from} after linking it to {to}"))?,
                Err(_) if self.target.symlink_metadata().is_ok() => bail!("{to} appeared during the run and is kept; these results are in {from}"),
                Err(_) => std::fs::rename(&self.partial, &self.target).with_context(|| format!("cannot move {from} to {to}"))?,
            }
        }
        Ok(self.target)
    }
}

/// The run-wide settings recorded with each series.
/// A series' energy per rank from its energy counter (NaN without one) over its wall time.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesEnergy {
    pub joules: Vec<f64>,
    pub seconds: Vec<f64>,
}

impl SeriesEnergy {
    /// From every rank's [joules, seconds], in rank order.
    pub fn from_ranks(pairs: &[f64]) -> SeriesEnergy {
        SeriesEnergy { joules: pairs.iter().step_by(2).copied().collect(), seconds: pairs.iter().skip(1).step_by(2).copied().collect() }
    }

    pub fn total_j(&self) -> f64 {
        self.joules.iter().sum()
    }

    /// Mean over the ranks of each one's joules / seconds.
    pub fn mean_power_w(&self) -> f64 {
        self.joules.iter().zip(&self.seconds).map(|(j, s)| j / s).sum::<f64>() / self.joules.len().max(1) as f64
    }
}

pub struct SeriesSettings {
    pub iters: usize,
    pub warmup_iters: usize,
    pub check_iters: usize,
    pub graph_launches: usize,
    pub aggregate: &'static str,
    pub engine: &'static str,
}

pub(super) fn put_str(loc: &Location, name: &str, value: &str) -> Result<()> {
    let v: VarLenUnicode = value.parse().with_context(|| format!("attribute {name} is not valid text"))?;
    loc.new_attr::<VarLenUnicode>().create(name)?.write_scalar(&v)?;
    Ok(())
}

pub(super) fn put_num<T: H5Type>(loc: &Location, name: &str, value: T) -> Result<()> {
    loc.new_attr::<T>().create(name)?.write_scalar(&value)?;
    Ok(())
}

pub(super) fn put_column<T: H5Type>(g: &Group, name: &str, values: &[T]) -> Result<()> {
    g.new_dataset_builder().with_data(values).create(name)?;
    Ok(())
}
