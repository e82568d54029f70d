//! How the primitives of this module wait: spin briefly, then sleep on a futex.
//!
//! A sleeper announces itself in a counter beside the futex word, so a waker
//! skips the wake syscall when nobody sleeps. The counter and the word are
//! both changed with sequentially consistent operations: either the waker sees
//! the sleeper's increment, or the kernel sees the waker's change of the word
//! and does not put the sleeper to sleep. No wake-up is lost.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::sys::futex::{self, WaitOutcome};

/// How often a sleeper wakes to check that the processes it waits for live.
pub(crate) const LIVENESS_SLICE: Duration = Duration::from_millis(100);

/// Busy-waits up to [`spin_limit`](crate::sync::spin::spin_limit) rounds for
/// `ready`; returns whether it became true.
#[inline]
pub(crate) fn spin_until(mut ready: impl FnMut() -> bool) -> bool {
    for _ in 0..crate::sync::spin::spin_limit() {
        if ready() {
            return true;
        }
        std::hint::spin_loop();
    }
    ready()
}

/// Sleeps while `*word == expected`, counted in `sleepers`, for at most `timeout`.
pub(crate) fn sleep(
    word: &AtomicU32,
    expected: u32,
    sleepers: &AtomicU32,
    timeout: Option<Duration>,
) -> WaitOutcome {
    sleepers.fetch_add(1, Ordering::SeqCst);
    let outcome = futex::futex_wait(word, expected, timeout);
    sleepers.fetch_sub(1, Ordering::SeqCst);
    outcome
}

/// Wakes up to `n` sleepers on `word`, if any sleep. Call after changing
/// `word` (or the state it guards) with a sequentially consistent operation.
#[inline]
pub(crate) fn wake(word: &AtomicU32, sleepers: &AtomicU32, n: u32) {
    if sleepers.load(Ordering::SeqCst) > 0 {
        futex::futex_wake(word, n);
    }
}

/// Wakes every sleeper on `word`, if any sleep.
#[inline]
pub(crate) fn wake_all(word: &AtomicU32, sleepers: &AtomicU32) {
    wake(word, sleepers, i32::MAX as u32);
}
