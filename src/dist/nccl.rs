//! NCCL bootstrap over MPI and the communicator's health: rank 0 makes the unique id, MPI
//! broadcasts its 128 bytes, every rank joins with ncclCommInitRank under the watchdog, which
//! from then on polls NCCL's asynchronous error and aborts the communicator when it fires.

use super::watchdog::Watchdog;
use super::world::World;
use anyhow::{bail, Result};
use cudarc::nccl::sys;
use std::ffi::CStr;
use std::time::Duration;

pub struct NcclComm {
    raw: RawComm,
    /// Its watch in the watchdog (`destroy` ends it).
    watch: u64,
}

/// The communicator handle, shared with the watchdog thread: NCCL allows
/// ncclCommGetAsyncError and ncclCommAbort from another thread.
#[derive(Clone, Copy)]
struct RawComm(sys::ncclComm_t);
unsafe impl Send for RawComm {}
unsafe impl Sync for RawComm {}

pub fn error_text(r: sys::ncclResult_t) -> String {
    let s = unsafe { sys::ncclGetErrorString(r) };
    if s.is_null() {
        format!("{r:?}")
    } else {
        unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned()
    }
}

/// Turns an NCCL return code into an error naming the call and NCCL's last message.
pub fn check(r: sys::ncclResult_t, call: &str, comm: Option<sys::ncclComm_t>) -> Result<()> {
    if r == sys::ncclResult_t::ncclSuccess {
        return Ok(());
    }
    let last = unsafe { sys::ncclGetLastError(comm.unwrap_or(std::ptr::null_mut())) };
    let detail = if last.is_null() { String::new() } else { unsafe { CStr::from_ptr(last) }.to_string_lossy().into_owned() };
    bail!("{call} failed: {} {detail}", error_text(r))
}

/// "2.28.3" from NCCL's version code.
pub fn version() -> String {
    let mut code = 0;
    if unsafe { sys::ncclGetVersion(&mut code) } != sys::ncclResult_t::ncclSuccess {
        return "unknown".into();
    }
    format!("{}.{}.{}", code / 10000, code / 100 % 100, code % 100)
}

impl NcclComm {
    /// Collective over the world; the caller has bound this rank's GPU to the thread.
    pub fn bootstrap(world: &World, watchdog: &Watchdog, timeout: Duration) -> Result<NcclComm> {
        let mut id = sys::ncclUniqueId { internal: [0; 128] };
        let made = if world.is_root() { check(unsafe { sys::ncclGetUniqueId(&mut id) }, "ncclGetUniqueId", None).map_err(|e| e.to_string()) } else { Ok(()) };
        world.agree(made).map_err(anyhow::Error::msg)?;
        let bytes: &mut [u8; 128] = unsafe { &mut *(id.internal.as_mut_ptr() as *mut [u8; 128]) };
        world.broadcast_from_root(bytes);
        world.barrier();

        tracing::debug!("NCCL unique id received; joining the communicator");
        watchdog.arm("ncclCommInitRank", timeout);
        let mut comm: sys::ncclComm_t = std::ptr::null_mut();
        let r = unsafe { sys::ncclCommInitRank(&mut comm, world.size as i32, id, world.rank as i32) };
        watchdog.disarm();
        check(r, "ncclCommInitRank", None)?;
        tracing::debug!(version = %version(), "NCCL communicator ready");
        Ok(NcclComm::watched(comm, watchdog))
    }

    /// Collective over this communicator: the ranks passing the same `color` form a new
    /// communicator, ranked by `key`; a rank passing None joins none.
    pub fn split(&self, color: Option<u32>, key: usize, watchdog: &Watchdog, timeout: Duration) -> Result<Option<NcclComm>> {
        let mut comm: sys::ncclComm_t = std::ptr::null_mut();
        // NCCL_SPLIT_NOCOLOR
        let color_code = color.map_or(-1, |c| c as i32);
        watchdog.arm("ncclCommSplit", timeout);
        let r = unsafe { sys::ncclCommSplit(self.raw(), color_code, key as i32, &mut comm, std::ptr::null_mut()) };
        watchdog.disarm();
        check(r, "ncclCommSplit", Some(self.raw()))?;
        Ok(color.map(|_| NcclComm::watched(comm, watchdog)))
    }

    /// `comm` under the watchdog: its asynchronous errors end the job, and a firing watchdog
    /// aborts it.
    fn watched(comm: sys::ncclComm_t, watchdog: &Watchdog) -> NcclComm {
        let raw = RawComm(comm);
        let check = Box::new(move || {
            let raw = raw;
            let mut state = sys::ncclResult_t::ncclSuccess;
            let r = unsafe { sys::ncclCommGetAsyncError(raw.0, &mut state) };
            match (r, state) {
                (sys::ncclResult_t::ncclSuccess, sys::ncclResult_t::ncclSuccess | sys::ncclResult_t::ncclInProgress) => None,
                (sys::ncclResult_t::ncclSuccess, err) => Some(format!("NCCL asynchronous error: {}", error_text(err))),
                (err, _) => Some(format!("ncclCommGetAsyncError failed: {}", error_text(err))),
            }
        });
        let abort = Box::new(move || {
            let raw = raw;
            unsafe { sys::ncclCommAbort(raw.0) };
        });
        NcclComm { raw, watch: watchdog.watch(check, abort) }
    }

    /// Frees the communicator once its work is done (the watchdog no longer looks at it):
    /// for communicators of one phase, such as verify's per-round splits.
    pub fn destroy(self, watchdog: &Watchdog) -> Result<()> {
        watchdog.unwatch(self.watch);
        check(unsafe { sys::ncclCommDestroy(self.raw()) }, "ncclCommDestroy", None)
    }

    pub fn raw(&self) -> sys::ncclComm_t {
        self.raw.0
    }
}
