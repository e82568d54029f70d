//! `Lock`: Python's `multiprocessing.Lock`, on a futex word in shared memory.

use std::time::Duration;

use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::handle::{HandleRepr, ShareHandle};
use crate::shm::{Kind, ShmObject, ShmSpec};
use crate::sync::raw_lock::{Acquired, RawLock};

/// A lock shared by any number of processes.
///
/// As in Python, any process (or thread) may release it, not only the one that
/// acquired it. If the holder dies, the next acquirer gets the lock and is told
/// ([`Acquired::OwnerDied`], [`LockGuard::owner_died`]). Only a death the
/// kernel confirms counts: a waiter that cannot check the holder (its
/// process is out of descriptors) waits as for a live one, and an untimed
/// wait that could not check for 10 s fails with [`Error::Io`]. On a lock
/// a manager created, a waiter fails with [`Error::ManagerGone`] once the
/// manager died (a free lock can still be taken).
///
/// ```
/// let lock = multiproc::Lock::new().unwrap();
/// {
///     let _guard = lock.lock().unwrap();
///     assert!(lock.is_locked());
/// }
/// assert!(!lock.is_locked());
/// ```
#[derive(Clone)]
pub struct Lock {
    obj: ShmObject<RawLock>,
}

impl std::fmt::Debug for Lock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lock")
            .field("owner", &self.raw().owner_pid())
            .finish()
    }
}

impl Lock {
    /// A new, unlocked lock in its own segment.
    pub fn new() -> Result<Lock> {
        let obj = ShmObject::create(Kind::Lock, 0, 0, |state: *mut RawLock, _| {
            // SAFETY: `create` hands us aligned, writable memory for one RawLock.
            unsafe { state.write(RawLock::new()) }
        })?;
        Ok(Lock { obj })
    }

    /// The layout of a new, unlocked lock, for a manager server to create
    /// (see [`Value::spec`](crate::Value::spec)).
    pub fn spec() -> ShmSpec {
        ShmSpec {
            kind: Kind::Lock as u32,
            fingerprint: 0,
            state_size: std::mem::size_of::<RawLock>() as u64,
            tail_len: 0,
            state_init: Vec::new(),
        }
    }

    /// A lock that lives inside another object's segment (a Value's lock).
    pub(crate) fn from_parts<T>(obj: ShmObject<T>, raw: fn(&T) -> &RawLock) -> Lock {
        Lock {
            obj: ShmObject::from_embedded(obj, raw),
        }
    }

    #[inline]
    pub(crate) fn raw(&self) -> &RawLock {
        self.obj.state()
    }

    /// Blocks until the lock is held.
    #[inline]
    pub fn acquire(&self) -> Result<Acquired> {
        self.acquire_deadline(Deadline::Never)
    }

    /// Takes the lock if it is free; `Err(WouldBlock)` otherwise.
    pub fn try_acquire(&self) -> Result<Acquired> {
        self.acquire_deadline(Deadline::Now).map_err(|e| match e {
            Error::Timeout(_) => Error::WouldBlock,
            e => e,
        })
    }

    /// Waits at most `timeout` for the lock; `Err(Timeout)` if it stays held.
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<Acquired> {
        self.acquire_deadline(Deadline::after(timeout))
    }

    #[inline]
    pub(crate) fn acquire_deadline(&self, deadline: Deadline) -> Result<Acquired> {
        let between_slices = || match deadline {
            // A try does not wait, so it is not failed for a dead manager.
            Deadline::Now => Ok(()),
            _ => self.obj.check_owner(),
        };
        let acquired = self
            .raw()
            .lock_watched(deadline, between_slices)?
            .ok_or_else(|| deadline.timeout_error())?;
        if let Acquired::OwnerDied { pid } = acquired {
            tracing::warn!(pid, "lock recovered from a dead holder");
        }
        Ok(acquired)
    }

    /// Takes the lock whatever it takes (a condition wait must return
    /// holding it): no deadline, and no giving up on a holder whose
    /// liveness cannot be checked.
    pub(crate) fn acquire_restore(&self) -> Acquired {
        loop {
            // A wait without a deadline returns only once it holds the lock.
            if let Some(acquired) = self.raw().lock(Deadline::Never) {
                if let Acquired::OwnerDied { pid } = acquired {
                    tracing::warn!(pid, "lock recovered from a dead holder");
                }
                return acquired;
            }
        }
    }

    /// Releases the lock (any process may). Releasing an unlocked lock is an error.
    #[inline]
    pub fn release(&self) -> Result<()> {
        if self.raw().unlock() {
            Ok(())
        } else {
            Err(Error::InvalidState("release of an unlocked lock".into()))
        }
    }

    /// Blocks until the lock is held and returns a guard that releases it.
    #[inline]
    pub fn lock(&self) -> Result<LockGuard<'_>> {
        self.acquire().map(|a| LockGuard::new(self, a))
    }

    /// The guard form of [`Lock::try_acquire`].
    pub fn try_lock(&self) -> Result<LockGuard<'_>> {
        self.try_acquire().map(|a| LockGuard::new(self, a))
    }

    /// The guard form of [`Lock::acquire_timeout`].
    pub fn lock_timeout(&self, timeout: Duration) -> Result<LockGuard<'_>> {
        self.acquire_timeout(timeout)
            .map(|a| LockGuard::new(self, a))
    }

    /// Whether some process holds the lock now.
    pub fn is_locked(&self) -> bool {
        self.raw().is_locked()
    }

    /// The pid of the process holding the lock, if any.
    pub fn owner_pid(&self) -> Option<i32> {
        self.raw().owner_pid()
    }
}

/// Holds a [`Lock`]; releases it when dropped.
#[must_use = "the lock is released when the guard is dropped"]
pub struct LockGuard<'a> {
    lock: &'a Lock,
    acquired: Acquired,
}

impl<'a> LockGuard<'a> {
    fn new(lock: &'a Lock, acquired: Acquired) -> Self {
        LockGuard { lock, acquired }
    }

    /// The pid of the previous holder if it died holding the lock.
    pub fn owner_died(&self) -> Option<i32> {
        self.acquired.owner_died()
    }
}

impl Drop for LockGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        self.lock.raw().unlock();
    }
}

impl ShareHandle for Lock {
    fn to_repr(&self) -> Result<HandleRepr> {
        self.obj.to_repr()
    }

    fn from_repr(repr: &HandleRepr) -> Result<Self> {
        ShmObject::open_embedded(repr, Kind::Lock).map(|obj| Lock { obj })
    }
}

crate::impl_share_handle!(impl<> for Lock);
