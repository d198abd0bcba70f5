//! What the suite's phases share while they run one after another (suite.rs runs them): the
//! world, the flags, the results file, the NCCL communicator, this rank's GPU or why it has
//! none, the watchdog and the telemetry sampler.

use h200_mpibench::backend::cuda::Gpu;
use h200_mpibench::cli::Cli;
use h200_mpibench::dist::nccl::NcclComm;
use h200_mpibench::dist::watchdog::Watchdog;
use h200_mpibench::dist::world::World;
use h200_mpibench::results::hdf5_file::ResultsFile;
use h200_mpibench::telemetry::collect::Telemetry;

/// What the phases share. (Fields drop in this order: the communicator before the GPU's
/// context.)
pub struct Session<'a> {
    pub world: &'a World,
    pub cli: &'a Cli,
    pub file: Option<&'a ResultsFile>,
    /// NCCL over the world, on the GPU path where a phase uses it.
    pub comm: Option<NcclComm>,
    pub gpu: Option<Gpu>,
    /// Why this run has no GPU path (empty on the GPU path).
    pub why_no_gpu: String,
    pub watchdog: Watchdog,
    pub telemetry: Telemetry,
}
