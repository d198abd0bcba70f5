//! What this rank is doing now ("sft step 12", "all_reduce float 1048576 B"): one record for
//! the watchdog's timeout line and the interrupt line.

use std::sync::Mutex;

static PHASE: Mutex<String> = Mutex::new(String::new());

pub fn set(phase: &str) {
    let mut p = PHASE.lock().unwrap_or_else(|e| e.into_inner());
    p.clear();
    p.push_str(phase);
}

/// The phase last set ("start-up" before any).
pub fn current() -> String {
    let p = PHASE.lock().unwrap_or_else(|e| e.into_inner());
    if p.is_empty() {
        "start-up".to_string()
    } else {
        p.clone()
    }
}
