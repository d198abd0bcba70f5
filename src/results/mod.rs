//! Results: the HDF5 file rank 0 writes and the run metadata that goes in it.

pub mod hdf5_file;
pub mod metadata;
pub mod sft;
