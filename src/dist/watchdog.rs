//! Never hang: a thread that ends the whole job when the main thread overstays a deadline
//! (a stuck NCCL call or a dead peer) or when a registered health check reports an error
//! (NCCL's asynchronous errors). It prints one line naming the rank, host, phase and cause.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Check = Box<dyn Fn() -> Option<String> + Send>;
type OnFire = Box<dyn Fn() + Send>;

/// What a watch registered (`watch`), by the id that `unwatch` takes.
type Watches<T> = Mutex<Vec<(u64, T)>>;

struct Shared {
    /// Milliseconds since `start` after which the job is ended; 0 = disarmed.
    deadline_ms: AtomicU64,
    checks: Watches<Check>,
    /// Run before aborting (NCCL communicator abort), so peers see the failure quickly.
    on_fire: Watches<OnFire>,
    next_id: AtomicU64,
    start: Instant,
    who: String,
}

#[derive(Clone)]
pub struct Watchdog {
    shared: Arc<Shared>,
}

const POLL: Duration = Duration::from_millis(50);

impl Watchdog {
    pub fn start(who: String) -> Watchdog {
        let shared = Arc::new(Shared {
            deadline_ms: AtomicU64::new(0),
            checks: Mutex::new(Vec::new()),
            on_fire: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(0),
            start: Instant::now(),
            who,
        });
        let watched = shared.clone();
        std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || loop {
                std::thread::sleep(POLL);
                if let Some(cause) = watched.failure() {
                    watched.fire(&cause);
                }
            })
            .expect("cannot start the watchdog thread");
        Watchdog { shared }
    }

    /// From now on, `phase` must finish within `timeout` or the job is ended.
    pub fn arm(&self, phase: &str, timeout: Duration) {
        super::phase::set(phase);
        let deadline = self.shared.start.elapsed() + timeout;
        self.shared.deadline_ms.store(deadline.as_millis().max(1) as u64, Ordering::SeqCst);
    }

    pub fn disarm(&self) {
        self.shared.deadline_ms.store(0, Ordering::SeqCst);
    }

    /// From now on `check` is polled (an error it returns ends the job) and `on_fire` runs
    /// before the job is ended; returns the id that `unwatch` takes.
    pub fn watch(&self, check: Check, on_fire: OnFire) -> u64 {
        let id = self.shared.next_id.fetch_add(1, Ordering::SeqCst);
        self.shared.checks.lock().unwrap_or_else(|e| e.into_inner()).push((id, check));
        self.shared.on_fire.lock().unwrap_or_else(|e| e.into_inner()).push((id, on_fire));
        id
    }

    /// Stops watch `id`: once this returns, neither of its closures runs again.
    pub fn unwatch(&self, id: u64) {
        self.shared.checks.lock().unwrap_or_else(|e| e.into_inner()).retain(|(i, _)| *i != id);
        self.shared.on_fire.lock().unwrap_or_else(|e| e.into_inner()).retain(|(i, _)| *i != id);
    }
}

impl Shared {
    fn failure(&self) -> Option<String> {
        if let Some(cause) = self.checks.lock().unwrap_or_else(|e| e.into_inner()).iter().find_map(|(_, check)| check()) {
            return Some(cause);
        }
        let deadline = self.deadline_ms.load(Ordering::SeqCst);
        if deadline != 0 && self.start.elapsed().as_millis() as u64 > deadline {
            return Some(format!("timed out in {} (see --timeout)", super::phase::current()));
        }
        None
    }

    fn fire(&self, cause: &str) -> ! {
        super::world::print_line(&format!("h200-mpibench: error: {}: {cause}", self.who));
        super::interrupt::save_and_settle(1);
        for (_, action) in self.on_fire.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            action();
        }
        super::world::abort_world(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unwatched_check_is_never_polled_again() {
        let watchdog = Watchdog::start("test".into());
        let polls = Arc::new(AtomicU64::new(0));
        let counted = polls.clone();
        let id = watchdog.watch(
            Box::new(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                None
            }),
            Box::new(|| {}),
        );
        std::thread::sleep(POLL * 4);
        assert!(polls.load(Ordering::SeqCst) > 0);
        watchdog.unwatch(id);
        let after = polls.load(Ordering::SeqCst);
        std::thread::sleep(POLL * 4);
        assert_eq!(polls.load(Ordering::SeqCst), after);
    }
}
