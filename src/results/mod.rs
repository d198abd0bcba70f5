//! Results: the HDF5 file rank 0 writes and the run metadata that goes in it.

pub mod append_table;
pub mod calibration;
pub mod hdf5_file;
pub mod metadata;
pub mod out_path;
pub mod scaling;
pub mod sft;
pub mod telemetry;
pub mod verify;
