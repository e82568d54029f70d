//! How long waiters spin before they sleep.
//!
//! Spinning wins on machines with idle cores (a wake-up from sleep costs
//! ~50 µs here, a spin ~0.1–0.4 µs); on a busy 2-core machine it can waste
//! the holder's time slice. `MULTIPROC_SPIN=0` makes every waiter sleep at
//! once (the benchmark's `--sleep` mode); another number sets the spin count.

use std::sync::atomic::{AtomicU32, Ordering};

const DEFAULT_SPINS: u32 = 100;
const UNSET: u32 = u32::MAX;

static SPINS: AtomicU32 = AtomicU32::new(UNSET);

/// The number of spin iterations before a waiter sleeps.
#[inline]
pub fn spin_limit() -> u32 {
    let n = SPINS.load(Ordering::Relaxed);
    if n != UNSET {
        return n;
    }
    let n = std::env::var("MULTIPROC_SPIN")
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or(DEFAULT_SPINS)
        .min(UNSET - 1);
    SPINS.store(n, Ordering::Relaxed);
    n
}

/// Sets the spin count for this process (children read `MULTIPROC_SPIN`).
pub fn set_spin_limit(n: u32) {
    SPINS.store(n.min(UNSET - 1), Ordering::Relaxed);
}
