//! The sampler thread of one rank: a sample of its source every period, stamped on rank 0's
//! clock with the phase running then (dist/phase.rs), kept until collect.rs takes them. It never
//! touches MPI, so the main thread's collectives are unaffected.

use super::clock::{unix_now, RunClock};
use super::sample::Sample;
use super::source::Source;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// An XID or other event the source reported: when, and what.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Event {
    pub t_s: f64,
    pub what: String,
}

#[derive(Default)]
struct Taken {
    samples: Vec<Sample>,
    events: Vec<Event>,
}

pub struct Sampler {
    taken: Arc<Mutex<Taken>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sampler {
    pub fn start(mut source: Box<dyn Source>, period: Duration, clock: RunClock) -> Sampler {
        let (taken, stop) = (Arc::new(Mutex::new(Taken::default())), Arc::new(AtomicBool::new(false)));
        let (into, stopping) = (taken.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("telemetry".into())
            .spawn(move || {
                let mut next = Instant::now();
                while !stopping.load(Ordering::Relaxed) {
                    let t = clock.since_start(unix_now());
                    let reading = source.read();
                    let events = source.events();
                    let phase = crate::dist::phase::current();
                    if let Ok(mut into) = into.lock() {
                        into.samples.push(Sample::new(t, phase, &reading));
                        into.events.extend(events.into_iter().map(|what| Event { t_s: t, what }));
                    }
                    // A fixed rate: a slow read shortens the wait, never shifts the grid.
                    next += period;
                    let now = Instant::now();
                    if next > now {
                        std::thread::park_timeout(next - now);
                    } else {
                        next = now;
                    }
                }
            })
            .expect("the telemetry thread starts");
        Sampler { taken, stop, thread: Some(thread) }
    }

    /// The samples and events since the last call.
    pub fn take(&self) -> (Vec<Sample>, Vec<Event>) {
        let mut t = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        (std::mem::take(&mut t.samples), std::mem::take(&mut t.events))
    }

    /// Stops the thread (at once, mid-wait) and returns what it took last.
    pub fn stop(mut self) -> (Vec<Sample>, Vec<Event>) {
        self.halt();
        self.take()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// A sampler dropped on an error path is told to stop but not waited for: an NVML call stuck on
/// a failing GPU must not keep the process from ending.
impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::sample::{field, missing, Reading};

    /// A counter that rises 2 J per read.
    struct Counter(f64);

    impl Source for Counter {
        fn read(&mut self) -> Reading {
            self.0 += 2.0;
            let mut r = missing();
            r[field("energy_j")] = self.0;
            r
        }
        fn energy_j(&mut self) -> Option<f64> {
            Some(self.0)
        }
        fn describe(&self) -> String {
            "test".into()
        }
    }

    #[test]
    fn samples_come_at_the_period_with_the_phase() {
        crate::dist::phase::set("test phase");
        let started = Instant::now();
        let s = Sampler::start(Box::new(Counter(0.0)), Duration::from_millis(10), RunClock { offset_s: 0.0, start_s: unix_now() });
        std::thread::sleep(Duration::from_millis(105));
        let (samples, events) = s.stop();
        // A loaded machine may delay either thread: at most one sample per period, and a few.
        let most = started.elapsed().as_millis() as usize / 10 + 2;
        assert!((3..=most).contains(&samples.len()), "{} samples in {:?} at 10 ms", samples.len(), started.elapsed());
        assert!(samples.windows(2).all(|w| w[1].t_s > w[0].t_s && w[1].get("energy_j") == w[0].get("energy_j") + 2.0));
        assert!(samples.iter().all(|s| s.phase == "test phase") && events.is_empty());
        assert!(samples[0].t_s >= 0.0);
    }
}
