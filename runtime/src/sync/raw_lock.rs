//! The process-shared mutex word that every lock in the crate builds on.
//!
//! One 64-bit atomic in shared memory: the low half is the futex word (the
//! holder's pid, with bit 31 set once someone may be asleep), the high half is
//! the low 32 bits of the holder's start time, so a pid reused by a new process
//! is not mistaken for the holder. Both halves change in one compare-exchange,
//! so the owner is never unknown while the lock is held.
//!
//! Uncontended acquire and release are one atomic each. A waiter spins
//! briefly, then sleeps on the futex in slices; between slices (and before the
//! first) it checks whether the holder still lives, and takes over the lock of
//! a dead holder, reporting [`Acquired::OwnerDied`]. A holder whose liveness
//! cannot be checked (this process is out of descriptors, say) is waited
//! for as a live one: the lock is never taken from it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::deadline::Deadline;
use crate::error::Result;
use crate::liveness::{CannotTell, Doubt, Liveness, PID_MASK, holder_liveness, my_word};
use crate::sync::park;
use crate::sys;
use crate::sys::futex::WaitOutcome;

const CONTENDED: u64 = 1 << 31;
/// How often a sleeping waiter wakes to check that the holder is alive.
const LIVENESS_SLICE: Duration = Duration::from_millis(100);

/// How a lock was acquired.
#[must_use = "a lock whose previous owner died may guard inconsistent data"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquired {
    /// The lock was free or released normally.
    Clean,
    /// The previous holder died holding it; the caller holds it now.
    OwnerDied {
        /// The dead holder's pid.
        pid: i32,
    },
}

impl Acquired {
    /// The dead previous holder's pid, if the lock came from one.
    pub fn owner_died(self) -> Option<i32> {
        match self {
            Acquired::OwnerDied { pid } => Some(pid),
            Acquired::Clean => None,
        }
    }
}

/// A mutex word that lives in shared memory (`#[repr(C)]`, 8 bytes, all-zero is unlocked).
#[repr(C)]
#[derive(Debug, Default)]
pub struct RawLock {
    word: AtomicU64,
}

impl RawLock {
    /// An unlocked lock.
    pub const fn new() -> RawLock {
        RawLock {
            word: AtomicU64::new(0),
        }
    }

    /// Takes the lock if it is free.
    #[inline]
    pub fn try_lock(&self) -> bool {
        self.word
            .compare_exchange(0, my_word(), Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Takes the lock, waiting until `deadline`; `None` if the deadline passed first.
    ///
    /// A holder whose liveness cannot be checked is waited for as a live one.
    #[inline]
    pub fn lock(&self, deadline: Deadline) -> Option<Acquired> {
        if self.try_lock() {
            return Some(Acquired::Clean);
        }
        self.lock_slow(deadline, &mut |_| Ok(())).ok().flatten()
    }

    /// [`RawLock::lock`] for the crate's locks: an untimed wait whose holder's
    /// liveness has not been checkable for [`GIVE_UP_AFTER`](crate::liveness::GIVE_UP_AFTER)
    /// fails with `Err(Io)`, and `between_slices` is asked after every sleep
    /// slice (not before the first: a short wait costs nothing more); a
    /// manager-owned lock fails its waiters with `ManagerGone` there.
    /// `Ok(None)`: the deadline passed.
    #[inline]
    pub(crate) fn lock_watched(
        &self,
        deadline: Deadline,
        mut between_slices: impl FnMut() -> Result<()>,
    ) -> Result<Option<Acquired>> {
        if self.try_lock() {
            return Ok(Some(Acquired::Clean));
        }
        let mut doubt = Doubt::default();
        let mut slept = false;
        self.lock_slow(deadline, &mut |answer| {
            doubt.note(answer, &deadline, "the lock's holder")?;
            if std::mem::replace(&mut slept, true) {
                between_slices()?;
            }
            Ok(())
        })
    }

    /// The contended path. `checked` hears each check of the holder (`Some`
    /// when it could not tell) and may end the wait with an error.
    #[cold]
    fn lock_slow(
        &self,
        deadline: Deadline,
        checked: &mut dyn FnMut(Option<CannotTell>) -> Result<()>,
    ) -> Result<Option<Acquired>> {
        let me = my_word();
        static CONTEND: park::SpinSite = park::SpinSite::new();
        if CONTEND.spin_until(|| {
            self.word.load(Ordering::Relaxed) == 0
                && self
                    .word
                    .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
        }) {
            return Ok(Some(Acquired::Clean));
        }
        let mut check_owner = true;
        loop {
            let cur = self.word.load(Ordering::Relaxed);
            if cur == 0 {
                // Others may sleep: keep the contended bit so our release wakes them.
                if self
                    .word
                    .compare_exchange(0, me | CONTENDED, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return Ok(Some(Acquired::Clean));
                }
                continue;
            }
            if check_owner {
                check_owner = false;
                let pid = (cur & PID_MASK) as i32;
                match holder_liveness(cur) {
                    Liveness::Dead => {
                        if self
                            .word
                            .compare_exchange(
                                cur,
                                me | CONTENDED,
                                Ordering::Acquire,
                                Ordering::Relaxed,
                            )
                            .is_ok()
                        {
                            return Ok(Some(Acquired::OwnerDied { pid }));
                        }
                        continue;
                    }
                    // Alive, or cannot tell: wait on, as for a live holder.
                    liveness => checked(CannotTell::from(pid, liveness))?,
                }
            }
            if deadline.expired() {
                return Ok(None);
            }
            let waiting = cur | CONTENDED;
            if cur & CONTENDED == 0
                && self
                    .word
                    .compare_exchange(cur, waiting, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            let slice = deadline.slice(LIVENESS_SLICE);
            let outcome = sys::futex::futex_wait_low(&self.word, waiting as u32, Some(slice));
            if outcome == WaitOutcome::TimedOut {
                check_owner = true;
            }
        }
    }

    /// Releases the lock, whoever holds it. Returns false if it was not locked.
    #[inline]
    pub fn unlock(&self) -> bool {
        let old = self.word.swap(0, Ordering::Release);
        if old & CONTENDED != 0 {
            sys::futex::futex_wake_low(&self.word, 1);
        }
        old != 0
    }

    /// Whether some process holds the lock now.
    pub fn is_locked(&self) -> bool {
        self.word.load(Ordering::Relaxed) != 0
    }

    /// The pid of the holder, if the lock is held.
    pub fn owner_pid(&self) -> Option<i32> {
        match self.word.load(Ordering::Relaxed) & PID_MASK {
            0 => None,
            pid => Some(pid as i32),
        }
    }

    /// Whether this process holds the lock.
    #[cfg(test)]
    pub fn held_by_me(&self) -> bool {
        self.owner_pid() == Some(sys::process::getpid())
    }

    /// A pid above pid_max: stands for a dead holder in tests.
    #[cfg(test)]
    pub(crate) const DEAD_PID: i32 = 0x7FFF_FFF0;

    /// Makes the lock look held by a process that died.
    #[cfg(test)]
    pub(crate) fn forge_dead_holder(&self) {
        self.word
            .store((1u64 << 32) | Self::DEAD_PID as u64, Ordering::Relaxed);
    }

    /// Whether the lock is held by a process known to have died (one whose
    /// liveness cannot be checked counts as alive).
    pub(crate) fn holder_died(&self) -> bool {
        let word = self.word.load(Ordering::Relaxed) & !CONTENDED;
        word != 0 && holder_liveness(word).is_dead()
    }

    /// Whether this very process (pid and start time) holds the lock.
    #[inline]
    pub(crate) fn held_by_this_process(&self) -> bool {
        self.word.load(Ordering::Relaxed) & !CONTENDED == my_word()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn lock_unlock() {
        let l = RawLock::new();
        assert_eq!(l.lock(Deadline::Never), Some(Acquired::Clean));
        assert!(l.is_locked());
        assert!(l.held_by_me());
        assert!(!l.try_lock());
        assert_eq!(l.lock(Deadline::after(Duration::from_millis(10))), None);
        assert!(l.unlock());
        assert!(!l.unlock());
    }

    #[test]
    fn threads_count_exactly() {
        struct Shared(RawLock, std::cell::UnsafeCell<u64>);
        // SAFETY: the counter is only touched under the lock.
        unsafe impl Sync for Shared {}
        let s = Arc::new(Shared(RawLock::new(), std::cell::UnsafeCell::new(0)));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        let _ = s.0.lock(Deadline::Never);
                        // SAFETY: we hold the lock.
                        unsafe { *s.1.get() += 1 };
                        s.0.unlock();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        // SAFETY: all threads joined.
        assert_eq!(unsafe { *s.1.get() }, 40_000);
    }

    #[test]
    fn dead_owner_is_detected() {
        let l = RawLock::new();
        // A pid that cannot exist (above pid_max) stands for a dead holder.
        l.word.store((1u64 << 32) | 0x7FFF_FFF0, Ordering::Relaxed);
        assert_eq!(
            l.lock(Deadline::after(Duration::from_secs(5))),
            Some(Acquired::OwnerDied { pid: 0x7FFF_FFF0 })
        );
        assert!(l.held_by_me());
    }
}
