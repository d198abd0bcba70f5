//! A table that grows row by row in the results file: one resizable, chunked, compressed column per field,
//! rows kept in memory and written in batches (every FLUSH_ROWS rows or FLUSH_AFTER, and at
//! the end), so a run cut short keeps every row up to its last flush. Clones share the table,
//! so the interrupt handler can write what is pending.

use anyhow::{Context, Result};
use hdf5::types::VarLenUnicode;
use hdf5::{Dataset, Group, H5Type};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Rows written together at most; and a shorter batch is written by the first append that
/// comes FLUSH_AFTER or more after the last write.
pub const FLUSH_ROWS: usize = 10;
pub const FLUSH_AFTER: Duration = Duration::from_secs(30);
const CHUNK_ROWS: usize = 256;

/// The element type of a column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    U8,
    U64,
    I64,
    F64,
    Text,
}

/// One field of one row.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    U8(u8),
    U64(u64),
    I64(i64),
    F64(f64),
    Text(String),
}

impl Cell {
    fn kind(&self) -> Kind {
        match self {
            Cell::U8(_) => Kind::U8,
            Cell::U64(_) => Kind::U64,
            Cell::I64(_) => Kind::I64,
            Cell::F64(_) => Kind::F64,
            Cell::Text(_) => Kind::Text,
        }
    }
}

#[derive(Clone)]
pub struct AppendTable {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    file: hdf5::File,
    columns: Vec<(String, Kind, Dataset)>,
    written: usize,
    pending: Vec<Vec<Cell>>,
    last_write: Instant,
    /// Closed by the interrupt's save: later rows are dropped, so that nothing is shown as
    /// done that the file does not hold.
    closed: bool,
}

impl AppendTable {
    /// Empty columns `names` in `group` of `file`.
    pub fn create(file: &hdf5::File, group: &Group, names: &[(&str, Kind)]) -> Result<AppendTable> {
        let columns = names
            .iter()
            .map(|&(name, kind)| {
                let ds = match kind {
                    Kind::U8 => empty::<u8>(group, name),
                    Kind::U64 => empty::<u64>(group, name),
                    Kind::I64 => empty::<i64>(group, name),
                    Kind::F64 => empty::<f64>(group, name),
                    Kind::Text => empty::<VarLenUnicode>(group, name),
                }?;
                Ok((name.to_string(), kind, ds))
            })
            .collect::<Result<Vec<_>>>()?;
        let inner = Inner { file: file.clone(), columns, written: 0, pending: Vec::new(), last_write: Instant::now(), closed: false };
        Ok(AppendTable { inner: Arc::new(Mutex::new(inner)) })
    }

    /// Adds a row (one cell per column, in order); writes and flushes the file when due.
    /// Returns false, keeping nothing, once the table is closed.
    pub fn append(&self, row: Vec<Cell>) -> Result<bool> {
        let mut t = self.lock();
        if t.closed {
            return Ok(false);
        }
        anyhow::ensure!(row.len() == t.columns.len(), "a row of {} cells for {} columns", row.len(), t.columns.len());
        if let Some(((name, kind, _), cell)) = t.columns.iter().zip(&row).find(|((_, kind, _), cell)| cell.kind() != *kind) {
            anyhow::bail!("column {name} holds {kind:?}, not {cell:?}");
        }
        t.pending.push(row);
        if t.pending.len() >= FLUSH_ROWS || t.last_write.elapsed() >= FLUSH_AFTER {
            t.write_pending()?;
        }
        Ok(true)
    }

    /// Writes every pending row, flushes, and takes no row after.
    pub fn close(&self) -> Result<()> {
        let mut t = self.lock();
        t.closed = true;
        t.write_pending()
    }

    /// Writes every pending row and flushes the file.
    pub fn flush(&self) -> Result<()> {
        self.lock().write_pending()
    }

    /// Rows in the file so far (pending ones not counted).
    #[cfg(test)]
    fn written(&self) -> usize {
        self.lock().written
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding it leaves the rows as they were: still worth writing.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Inner {
    /// Cells match their column's kind (append checks), so the fallbacks below never apply.
    fn write_pending(&mut self) -> Result<()> {
        let (start, end) = (self.written, self.written + self.pending.len());
        for (i, (name, kind, ds)) in self.columns.iter().enumerate() {
            let cells = self.pending.iter().map(|row| &row[i]);
            ds.resize(end).with_context(|| format!("cannot grow column {name}"))?;
            let at = start..end;
            match kind {
                Kind::U8 => ds.write_slice(&cells.map(|c| if let Cell::U8(v) = c { *v } else { 0 }).collect::<Vec<_>>(), at),
                Kind::U64 => ds.write_slice(&cells.map(|c| if let Cell::U64(v) = c { *v } else { 0 }).collect::<Vec<_>>(), at),
                Kind::I64 => ds.write_slice(&cells.map(|c| if let Cell::I64(v) = c { *v } else { -1 }).collect::<Vec<_>>(), at),
                Kind::F64 => ds.write_slice(&cells.map(|c| if let Cell::F64(v) = c { *v } else { f64::NAN }).collect::<Vec<_>>(), at),
                Kind::Text => {
                    let text = cells.map(|c| match c {
                        Cell::Text(s) => s.parse::<VarLenUnicode>().map_err(anyhow::Error::from),
                        _ => Ok(VarLenUnicode::new()),
                    });
                    ds.write_slice(&text.collect::<Result<Vec<_>>>()?, at)
                }
            }
            .with_context(|| format!("cannot write column {name}"))?;
        }
        self.written = end;
        self.pending.clear();
        self.file.flush()?;
        self.last_write = Instant::now();
        Ok(())
    }
}

/// An empty column that grows: chunked, and deflate-compressed (the telemetry's columns repeat
/// themselves a lot).
fn empty<T: H5Type>(group: &Group, name: &str) -> Result<Dataset> {
    Ok(group.new_dataset::<T>().chunk(CHUNK_ROWS).deflate(4).shape(0..).create(name)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_reach_the_file_in_batches_and_read_back() {
        // Removed when the test ends, passed or failed.
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().to_path_buf();
        let file = hdf5::File::create(dir.join("t.h5")).unwrap();
        let g = file.create_group("g").unwrap();
        let t = AppendTable::create(&file, &g, &[("step", Kind::U64), ("loss", Kind::F64), ("op", Kind::Text), ("ok", Kind::U8)]).unwrap();
        for step in 0..(FLUSH_ROWS + 3) as u64 {
            t.append(vec![Cell::U64(step), Cell::F64(step as f64 / 2.0), Cell::Text(format!("op{step}")), Cell::U8(1)]).unwrap();
            // the first batch lands when FLUSH_ROWS rows are pending, not before
            assert_eq!(t.written(), if step + 1 >= FLUSH_ROWS as u64 { FLUSH_ROWS } else { 0 });
        }
        t.flush().unwrap();
        assert_eq!(t.written(), FLUSH_ROWS + 3);
        let steps: Vec<u64> = g.dataset("step").unwrap().read_raw().unwrap();
        assert_eq!(steps, (0..(FLUSH_ROWS + 3) as u64).collect::<Vec<_>>());
        let loss: Vec<f64> = g.dataset("loss").unwrap().read_raw().unwrap();
        assert_eq!(loss[12], 6.0);
        let ops: Vec<VarLenUnicode> = g.dataset("op").unwrap().read_raw().unwrap();
        assert_eq!(ops[11].as_str(), "op11");
        assert!(t.append(vec![Cell::U64(1)]).is_err());
        assert!(t.append(vec![Cell::F64(1.0), Cell::F64(1.0), Cell::Text(String::new()), Cell::U8(0)]).is_err());
        // closed (the interrupt's save): a later row is refused and not kept
        t.close().unwrap();
        assert!(!t.append(vec![Cell::U64(99), Cell::F64(0.0), Cell::Text(String::new()), Cell::U8(0)]).unwrap());
        t.flush().unwrap();
        assert_eq!(g.dataset("step").unwrap().read_raw::<u64>().unwrap().len(), FLUSH_ROWS + 3);
    }
}
