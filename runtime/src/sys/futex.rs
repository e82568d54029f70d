//! Process-shared futex wait and wake on 32-bit words in shared memory.
//!
//! The words live in `MAP_SHARED` mappings, so the shared (never the private)
//! futex operations are used: the kernel keys them by the backing page.

use std::sync::atomic::{AtomicU32, AtomicU64};
use std::time::Duration;

/// Why a [`futex_wait`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitOutcome {
    /// Woken, or the word no longer held `expected`, or a signal: re-check the word.
    Woken,
    /// The timeout elapsed.
    TimedOut,
}

/// Sleeps while `*word == expected`, for at most `timeout` (`None`: no limit).
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> WaitOutcome {
    futex_wait_at(word.as_ptr(), expected, timeout)
}

/// [`futex_wait`] on the low 32 bits of a 64-bit atomic (the futex word of
/// locks that keep more state beside it).
pub fn futex_wait_low(word: &AtomicU64, expected: u32, timeout: Option<Duration>) -> WaitOutcome {
    futex_wait_at(low_half(word), expected, timeout)
}

fn low_half(word: &AtomicU64) -> *const u32 {
    let base = word.as_ptr().cast::<u32>();
    if cfg!(target_endian = "little") {
        base
    } else {
        base.wrapping_add(1)
    }
}

/// The kernel only reads the word at `addr`, which comes from a live atomic reference.
fn futex_wait_at(addr: *const u32, expected: u32, timeout: Option<Duration>) -> WaitOutcome {
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: the kernel reads the word at `addr` (failing with EFAULT if it
    // is not mapped); `ts_ptr` is null or points to a timespec that outlives the call.
    let res = unsafe { libc::syscall(libc::SYS_futex, addr, libc::FUTEX_WAIT, expected, ts_ptr) };
    if res == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ETIMEDOUT) {
        WaitOutcome::TimedOut
    } else {
        WaitOutcome::Woken
    }
}

/// Wakes at most `n` waiters sleeping on `word`; returns how many woke.
pub fn futex_wake(word: &AtomicU32, n: u32) -> usize {
    futex_wake_at(word.as_ptr(), n)
}

/// [`futex_wake`] for the low 32 bits of a 64-bit atomic.
pub fn futex_wake_low(word: &AtomicU64, n: u32) -> usize {
    futex_wake_at(low_half(word), n)
}

fn futex_wake_at(addr: *const u32, n: u32) -> usize {
    let n = n.min(i32::MAX as u32) as libc::c_int;
    // SAFETY: FUTEX_WAKE only uses the address to find the wait queue; it
    // never dereferences it in a way that affects this process's memory.
    let res = unsafe { libc::syscall(libc::SYS_futex, addr, libc::FUTEX_WAKE, n) };
    res.max(0) as usize
}
