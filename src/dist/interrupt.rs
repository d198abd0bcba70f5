//! SIGINT and SIGTERM (Ctrl-C, `scancel`, mpirun or srun passing a signal on) end the run at
//! once on every rank that receives one: rank 0 prints one line naming the signal, the phase
//! and where the results are, then has its results file write what it holds in memory (the
//! `.partial` file stays), and every rank exits with INTERRUPTED. The line comes first: a
//! launcher may SIGKILL a rank that is slow to go.

use super::phase;
use super::world::print_line;
use signal_hook::consts::{SIGINT, SIGTERM};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;

/// The exit code of an interrupted run (README: exit codes).
pub const INTERRUPTED: i32 = 4;

/// What to save before the process ends, and a note for the line (where it goes).
pub struct Hook {
    pub note: String,
    pub save: Box<dyn Fn() + Send>,
}

/// The exit code the process has settled on, once it has (NO_CODE before): a signal that
/// arrives while it finishes (mpirun ending the job because another rank exited first) then
/// exits with that code and says nothing.
static SETTLED: AtomicI32 = AtomicI32::new(NO_CODE);
const NO_CODE: i32 = i32::MIN;

/// The run is over and will exit with `code`.
pub fn settle(code: i32) {
    SETTLED.store(code, Ordering::SeqCst);
}

/// Before MPI_Abort ends the job with `code` (a fatal error, the watchdog): the hooks write what
/// is pending, and a signal from here on exits quietly with `code`.
pub fn save_and_settle(code: i32) {
    if SETTLED.swap(code, Ordering::SeqCst) == NO_CODE {
        save_all();
    }
}

fn notes() -> String {
    HOOKS.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|hook| format!("; {}", hook.note)).collect()
}

fn save_all() {
    HOOKS.lock().unwrap_or_else(|e| e.into_inner()).iter().for_each(|hook| (hook.save)());
}

/// Run on interrupt (and before a fatal error's MPI_Abort) before exiting.
static HOOKS: Mutex<Vec<Hook>> = Mutex::new(Vec::new());

/// Registers `hook` to run when the process is interrupted.
pub fn on_interrupt(hook: Hook) {
    HOOKS.lock().unwrap_or_else(|e| e.into_inner()).push(hook);
}

/// Starts the thread that waits for SIGINT and SIGTERM; `who` names this rank in the line,
/// which only rank 0 (`speaks`) prints.
pub fn install(who: String, speaks: bool) -> std::io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    std::thread::Builder::new().name("interrupt".into()).spawn(move || {
        for (count, signal) in signals.forever().enumerate() {
            let settled = SETTLED.swap(INTERRUPTED, Ordering::SeqCst);
            // Settled already (the run is ending), or a second signal while the hooks write:
            // go now. No unwinding, no atexit handlers: the main thread may be inside MPI or HDF5.
            if settled != NO_CODE || count > 0 {
                unsafe { libc::_exit(if settled != NO_CODE { settled } else { INTERRUPTED }) }
            }
            let (who, name) = (who.clone(), if signal == SIGINT { "SIGINT" } else { "SIGTERM" });
            // The hooks save in their own thread, so that a second signal still ends a stuck write.
            let _ = std::thread::Builder::new().name("interrupt-save".into()).spawn(move || {
                if speaks {
                    print_line(&format!("h200-mpibench: interrupted by {name} during {} ({who}){}", phase::current(), notes()));
                }
                save_all();
                // mpirun forwards a rank's stderr asynchronously and may drop what a rank wrote
                // just before it exited: give the line a moment to leave.
                std::thread::sleep(std::time::Duration::from_millis(200));
                unsafe { libc::_exit(INTERRUPTED) }
            });
        }
    })?;
    Ok(())
}
