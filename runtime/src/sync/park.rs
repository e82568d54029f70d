//! How every waiter in the runtime waits: spin while spinning can pay, then
//! sleep on a futex.
//!
//! Locks, semaphores, conditions, events, barriers, the queue's ring and the
//! manager's channel all wait here, so they share one policy:
//!
//! - **Spin only when the peer can run meanwhile.** A spinner holds a CPU; if
//!   the process it waits for needs that CPU, every microsecond spun delays
//!   the very thing awaited. So nobody spins while the machine has more
//!   runnable threads than CPUs, nor in a process allowed only one CPU (its
//!   peer, pinned beside it, could only run once it stops). Such a waiter
//!   yields its CPU once (the peer often runs and answers meanwhile, which
//!   saves a futex sleep and wake), then sleeps. Both facts come from the
//!   kernel, read at most every [`REFRESH`] and cached.
//! - **Spin only as long as recently paid.** Each wait site (a `static`
//!   [`SpinSite`]: "a queue's getter", "a lock's contender") learns its budget,
//!   in time, from what happened: a spin that saw the wait end after `t` sets
//!   the budget to at least `4t`; a spin that ran out halves it, and below
//!   [`FLOOR`] the site stops spinning, probing one wait in [`PROBE_EVERY`]
//!   with a short spin to notice when spinning starts to pay again (the way
//!   glibc's adaptive mutexes and parking_lot's `SpinWait` adapt).
//! - **`MULTIPROC_SPIN`** caps every budget, in microseconds (default
//!   [`DEFAULT_MAX_SPIN_US`]); `MULTIPROC_SPIN=0` makes every waiter sleep at
//!   once, the manager channel's included.
//!
//! A sleeper announces itself in a counter beside the futex word, so a waker
//! skips the wake syscall when nobody sleeps. The counter and the word are
//! both changed with sequentially consistent operations: either the waker sees
//! the sleeper's increment, or the kernel sees the waker's change of the word
//! and does not put the sleeper to sleep. No wake-up is lost.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::sys::futex::{self, WaitOutcome};

/// How often a sleeper wakes to check that the processes it waits for live.
pub(crate) const LIVENESS_SLICE: Duration = Duration::from_millis(100);

/// The default cap on a spin, in microseconds (a futex wake-up of an idle
/// CPU costs tens of microseconds on a VM).
pub const DEFAULT_MAX_SPIN_US: u32 = 40;
/// A budget below this is not worth keeping: the site stops spinning.
const FLOOR: Duration = Duration::from_micros(2);
/// A site's budget before it has learned anything.
const INITIAL: Duration = Duration::from_micros(10);
/// While a site does not spin, one wait in this many spins for [`PROBE`].
const PROBE_EVERY: u32 = 16;
/// How long a probe spins.
const PROBE: Duration = Duration::from_micros(4);
/// How long the machine's load and this process's CPU set stay cached.
const REFRESH: Duration = Duration::from_millis(10);
/// Checks of `ready` between two readings of the clock.
const BATCH: u32 = 32;

const UNSET: u32 = u32::MAX;

/// The cap on every spin in nanoseconds (`UNSET` until first read).
static MAX_SPIN_NS: AtomicU32 = AtomicU32::new(UNSET);

/// The cap on a spin, from `MULTIPROC_SPIN` (microseconds) unless set.
fn max_spin() -> Duration {
    let ns = MAX_SPIN_NS.load(Ordering::Relaxed);
    if ns != UNSET {
        return Duration::from_nanos(ns.into());
    }
    let us = parse_spin(std::env::var("MULTIPROC_SPIN").ok().as_deref());
    set_spin_limit(us);
    Duration::from_micros(us.into())
}

/// `MULTIPROC_SPIN`'s value in microseconds; the default when absent or unreadable.
fn parse_spin(var: Option<&str>) -> u32 {
    var.and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or(DEFAULT_MAX_SPIN_US)
}

/// Caps every spin of this process at `us` microseconds; 0 makes every
/// waiter sleep at once. Children read `MULTIPROC_SPIN` instead.
pub fn set_spin_limit(us: u32) {
    let ns = u64::from(us).saturating_mul(1000).min(u64::from(UNSET - 1));
    MAX_SPIN_NS.store(ns as u32, Ordering::Relaxed);
}

/// When the cached machine state is next read, in coarse-clock nanoseconds.
static NEXT_LOOK: AtomicU64 = AtomicU64::new(0);
/// The cached [`Crowd`], as a number.
static CROWDED: AtomicU32 = AtomicU32::new(0);

/// Whether a spinner would keep its peer off a CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Crowd {
    /// There is a CPU for everyone who wants to run: spinning may pay.
    Free,
    /// More threads want to run than there are CPUs: yield once, then sleep.
    Busy,
    /// This thread may run on one CPU only: a peer beside it runs only once
    /// it stops; yield once, then sleep.
    OneCpu,
}

/// The machine's state for a waiter, read at most every [`REFRESH`] (one
/// thread refreshes; the others use the cached answer). A read that fails
/// (no descriptor left for `/proc`) counts as free: the learned budget
/// still bounds the spin.
fn crowded() -> Crowd {
    let now = crate::sys::time::coarse_monotonic().as_nanos() as u64;
    let next = NEXT_LOOK.load(Ordering::Relaxed);
    if now >= next
        && NEXT_LOOK
            .compare_exchange(
                next,
                now + REFRESH.as_nanos() as u64,
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok()
    {
        let cpus = crate::sys::sched::online_cpus();
        let crowd = if crate::sys::sched::allowed_cpus().is_ok_and(|n| n <= 1) {
            Crowd::OneCpu
        } else if crate::sys::sched::runnable_threads().is_ok_and(|r| r > cpus) {
            Crowd::Busy
        } else {
            Crowd::Free
        };
        CROWDED.store(crowd as u32, Ordering::Relaxed);
    }
    match CROWDED.load(Ordering::Relaxed) {
        x if x == Crowd::Busy as u32 => Crowd::Busy,
        x if x == Crowd::OneCpu as u32 => Crowd::OneCpu,
        _ => Crowd::Free,
    }
}

/// One place in the code that waits, with the spin budget it learned.
///
/// Declare one per wait site as a `static` (process-local: each process
/// learns for itself); [`SpinSite::spin_until`] spins under the policy above.
#[derive(Debug)]
pub(crate) struct SpinSite {
    /// The learned budget in nanoseconds; 0: do not spin but to probe.
    budget_ns: AtomicU32,
    /// Waits at this site while its budget was 0 (to pace the probes).
    skipped: AtomicU32,
}

/// What a spin found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spun {
    /// It did not spin (policy), or spun and saw nothing.
    Nothing,
    /// `ready` held after this long.
    Ready(Duration),
}

impl SpinSite {
    /// A site that has learned nothing yet.
    pub(crate) const fn new() -> SpinSite {
        SpinSite {
            budget_ns: AtomicU32::new(INITIAL.as_nanos() as u32),
            skipped: AtomicU32::new(0),
        }
    }

    /// Spins while the policy allows for `ready`; returns whether it held.
    /// False means: sleep now (after re-checking under the sleep protocol).
    #[inline]
    pub(crate) fn spin_until(&self, mut ready: impl FnMut() -> bool) -> bool {
        if ready() {
            return true;
        }
        let max = max_spin();
        if max.is_zero() {
            return false;
        }
        match crowded() {
            Crowd::Free => {}
            Crowd::Busy | Crowd::OneCpu => {
                // The peer may wait for this very CPU: hand it over once (no
                // spinning) before paying for a futex sleep and wake. Measured
                // on a loaded 2-core VM, this took a Queue of 8-byte messages
                // from 1.0-1.4 us to 0.15-0.2 us a message, Barrier from 30 us to 2 us.
                std::thread::yield_now();
                return ready();
            }
        }
        matches!(self.spin(max, &mut ready), Spun::Ready(_)) || ready()
    }

    /// The current budget (what the next spin would run for, before the cap).
    fn budget(&self) -> Duration {
        Duration::from_nanos(self.budget_ns.load(Ordering::Relaxed).into())
    }

    /// Spins for at most this site's budget (or a probe), capped at `max`,
    /// and learns from the outcome.
    #[cold]
    fn spin(&self, max: Duration, ready: &mut dyn FnMut() -> bool) -> Spun {
        let budget = self.budget();
        let limit = if budget.is_zero() {
            let n = self.skipped.fetch_add(1, Ordering::Relaxed);
            if n % PROBE_EVERY != PROBE_EVERY - 1 {
                return Spun::Nothing;
            }
            PROBE
        } else {
            budget
        }
        .min(max);
        let start = Instant::now();
        loop {
            for _ in 0..BATCH {
                if ready() {
                    let took = start.elapsed();
                    self.learn(Spun::Ready(took), max);
                    return Spun::Ready(took);
                }
                std::hint::spin_loop();
            }
            if start.elapsed() >= limit {
                self.learn(Spun::Nothing, max);
                return Spun::Nothing;
            }
        }
    }

    /// Adjusts the budget: a success raises it to cover `4t` (at least the
    /// floor); a spin that ran out halves it, and below the floor it is 0.
    fn learn(&self, outcome: Spun, max: Duration) {
        let now = self.budget();
        let next = match outcome {
            Spun::Ready(t) => now.max(t * 4).max(FLOOR).min(max.max(FLOOR)),
            Spun::Nothing if now / 2 < FLOOR => Duration::ZERO,
            Spun::Nothing => now / 2,
        };
        let ns = next.as_nanos().min(u128::from(UNSET - 1)) as u32;
        self.budget_ns.store(ns, Ordering::Relaxed);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_micros(40);

    #[test]
    fn multiproc_spin_is_a_cap_in_microseconds() {
        assert_eq!(parse_spin(None), DEFAULT_MAX_SPIN_US);
        assert_eq!(parse_spin(Some("0")), 0);
        assert_eq!(parse_spin(Some(" 25\n")), 25);
        assert_eq!(parse_spin(Some("lots")), DEFAULT_MAX_SPIN_US);
    }

    #[test]
    fn a_zero_cap_never_spins() {
        let site = SpinSite::new();
        let mut calls = 0;
        // What spin_until does when MULTIPROC_SPIN=0: one look, no spin.
        let max = Duration::ZERO;
        let spun = site.spin(max, &mut || {
            calls += 1;
            false
        });
        assert_eq!(spun, Spun::Nothing);
        // A zero limit still checks one batch, then stops at the clock.
        assert!(calls <= BATCH as usize);
    }

    #[test]
    fn spins_that_run_out_halve_the_budget_down_to_nothing() {
        let site = SpinSite::new();
        assert_eq!(site.budget(), INITIAL);
        let mut spins = 0;
        while !site.budget().is_zero() {
            let start = Instant::now();
            assert_eq!(site.spin(MAX, &mut || false), Spun::Nothing);
            // It spun in time, roughly its budget.
            assert!(start.elapsed() >= Duration::from_micros(1));
            spins += 1;
            assert!(spins < 10, "the budget should reach zero quickly");
        }
        // With no budget, only one wait in PROBE_EVERY spins (for PROBE).
        let mut probes = 0;
        for _ in 0..PROBE_EVERY * 4 {
            let mut looked = 0;
            site.spin(MAX, &mut || {
                looked += 1;
                false
            });
            if looked > 0 {
                probes += 1;
            }
        }
        assert_eq!(probes, 4);
    }

    #[test]
    fn a_spin_that_pays_raises_the_budget_within_the_cap() {
        let site = SpinSite::new();
        site.learn(Spun::Nothing, MAX);
        site.learn(Spun::Nothing, MAX);
        site.learn(Spun::Nothing, MAX);
        assert!(site.budget().is_zero());
        // A probe that succeeded after 3 µs: spinning pays again.
        site.learn(Spun::Ready(Duration::from_micros(3)), MAX);
        assert_eq!(site.budget(), Duration::from_micros(12));
        // Never beyond the cap.
        site.learn(Spun::Ready(Duration::from_micros(30)), MAX);
        assert_eq!(site.budget(), MAX);
        // A quick success keeps what was learned.
        site.learn(Spun::Ready(Duration::from_nanos(100)), MAX);
        assert_eq!(site.budget(), MAX);
    }

    #[test]
    fn a_spin_sees_a_change_made_by_another_thread() {
        let site = SpinSite::new();
        let flag = AtomicU32::new(0);
        std::thread::scope(|s| {
            s.spawn(|| flag.store(1, Ordering::Release));
            // However the policy decides, the wait either sees it or says to sleep.
            while !site.spin_until(|| flag.load(Ordering::Acquire) == 1) {
                std::thread::yield_now();
            }
        });
    }
}
