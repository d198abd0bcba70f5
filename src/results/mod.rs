//! Results: the HDF5 file rank 0 writes and the run metadata that goes in it.

pub mod append_table;
pub mod hdf5_file;
pub mod metadata;
pub mod out_path;
pub mod sft;
pub mod telemetry;
pub mod verify;
