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

/// `FUTEX2_SIZE_U32`: a `futex_waitv` entry names a 32-bit word.
const FUTEX2_SIZE_U32: u32 = 0x02;
/// The most words one `futex_waitv` call takes (`FUTEX_WAITV_MAX`).
pub const WAITV_MAX: usize = 128;

/// One entry of the kernel's `struct futex_waitv`.
#[repr(C)]
struct FutexWaitv {
    val: u64,
    uaddr: u64,
    flags: u32,
    reserved: u32,
}

/// Why a [`futex_waitv`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitvOutcome {
    /// A word was woken, or one no longer held its expected value, or a
    /// signal came: re-check the words.
    Woken,
    /// The timeout elapsed.
    TimedOut,
    /// The kernel has no `futex_waitv` (before Linux 5.16), or more words
    /// than it takes at once were given: nothing was waited for.
    Unsupported,
}

/// Sleeps while every `word` holds its `expected` value, for at most
/// `timeout` (`None`: no limit): a wake on any of them (shared, as
/// [`futex_wake`] makes) ends the wait. At most [`WAITV_MAX`] words.
pub fn futex_waitv(words: &[(&AtomicU32, u32)], timeout: Option<Duration>) -> WaitvOutcome {
    if words.is_empty() || words.len() > WAITV_MAX {
        return WaitvOutcome::Unsupported;
    }
    let waiters: Vec<FutexWaitv> = words
        .iter()
        .map(|(word, expected)| FutexWaitv {
            val: u64::from(*expected),
            uaddr: word.as_ptr() as u64,
            flags: FUTEX2_SIZE_U32,
            reserved: 0,
        })
        .collect();
    // The timeout is absolute, on CLOCK_MONOTONIC.
    let abs = timeout.and_then(|d| {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `now` is a valid, writable timespec.
        if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) } != 0 {
            return None;
        }
        let nanos = now.tv_nsec as u64 + u64::from(d.subsec_nanos());
        let secs = (now.tv_sec as u64)
            .checked_add(d.as_secs())?
            .checked_add(nanos / 1_000_000_000)?;
        Some(libc::timespec {
            tv_sec: secs.min(i64::MAX as u64) as libc::time_t,
            tv_nsec: (nanos % 1_000_000_000) as libc::c_long,
        })
    });
    let ts_ptr = abs
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `waiters` is a live array of `waiters.len()` well-formed
    // entries, each naming a word of a live atomic reference (the kernel
    // only reads them); `ts_ptr` is null or points to a timespec that
    // outlives the call; the flags argument must be 0.
    let res = unsafe {
        libc::syscall(
            libc::SYS_futex_waitv,
            waiters.as_ptr(),
            waiters.len() as libc::c_uint,
            0 as libc::c_uint,
            ts_ptr,
            libc::CLOCK_MONOTONIC,
        )
    };
    if res >= 0 {
        return WaitvOutcome::Woken;
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::ETIMEDOUT) => WaitvOutcome::TimedOut,
        Some(libc::ENOSYS | libc::EINVAL) => WaitvOutcome::Unsupported,
        // EAGAIN (a word changed), EINTR: re-check.
        _ => WaitvOutcome::Woken,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn futex_waitv_wakes_on_any_word_and_times_out() {
        let a = AtomicU32::new(0);
        let b = AtomicU32::new(0);
        // A word that no longer holds its value returns at once.
        assert_eq!(
            futex_waitv(&[(&a, 0), (&b, 1)], Some(Duration::from_secs(5))),
            WaitvOutcome::Woken
        );
        assert_eq!(
            futex_waitv(&[(&a, 0), (&b, 0)], Some(Duration::from_millis(10))),
            WaitvOutcome::TimedOut
        );
        std::thread::scope(|s| {
            s.spawn(|| {
                // Until the waiter below sleeps (or the word changed), wake it.
                while futex_wake(&b, 1) == 0 && b.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                    std::thread::yield_now();
                }
            });
            assert_eq!(futex_waitv(&[(&a, 0), (&b, 0)], None), WaitvOutcome::Woken);
        });
        assert_eq!(futex_waitv(&[], None), WaitvOutcome::Unsupported);
    }
}
