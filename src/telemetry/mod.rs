//! What every GPU (or, without one, every host process) did during the run: a sampler thread
//! per rank (sampler.rs) reads a source (source.rs: NVML, or the process's CPU time and memory)
//! every `--telemetry-ms`, each sample stamped on rank 0's clock (clock.rs) with the phase that
//! was running; the samples reach rank 0 in batches (collect.rs) and go to /telemetry, and the
//! figures derived from them (figures.rs) to the suites' groups.

pub mod clock;
pub mod collect;
pub mod figures;
pub mod sample;
pub mod sampler;
pub mod source;
