//! `Lock`: Python's `multiprocessing.Lock`, on a futex word in shared memory.

use std::marker::PhantomData;
use std::time::Duration;

use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::handle::{FlavorRepr, FlavoredHandle};
use crate::handle::{HandleRepr, ShareHandle};
use crate::manager::core::{ProxyCore, RemoteFlavor};
use crate::shm::{Kind, ShmObject, ShmSpec};
use crate::sync::held::{self, Holder};
use crate::sync::raw_lock::{Acquired, RawLock};
use crate::sync::remote::RemoteLock;

/// A lock shared by any number of processes, on this host or (from a TCP
/// manager, [`BaseManager`](../multiproc/struct.BaseManager.html)) on many.
///
/// One type, two flavours: a lock from [`Lock::new`] or a local
/// `Manager` lives in shared memory and is taken with one atomic
/// instruction; one from a connected `BaseManager` is kept by its server
/// and every call asks it. Both flavours pass to children, travel inside
/// messages and clone alike, so code written against `Lock` runs with
/// either manager.
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
/// A lock a remote manager's server keeps releases when its holder's
/// connection ends (its process died, its host vanished), and the next
/// acquirer is told the same way.
///
/// ```
/// let lock = multiproc::Lock::new().unwrap();
/// {
///     let _guard = lock.lock().unwrap();
///     assert!(lock.is_locked().unwrap());
/// }
/// assert!(!lock.is_locked().unwrap());
/// ```
#[derive(Clone)]
pub struct Lock {
    flavor: LockFlavor,
}

/// Where a [`Lock`] lives.
#[derive(Clone)]
enum LockFlavor {
    /// A futex word in a shared segment.
    Shm(ShmObject<RawLock>),
    /// An object of a TCP manager's server.
    Remote(RemoteLock),
    /// A key with a lease in Redis.
    #[cfg(feature = "redis")]
    Redis(crate::redis::RedisLock),
}

impl std::fmt::Debug for Lock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.flavor {
            LockFlavor::Shm(obj) => f
                .debug_struct("Lock")
                .field("owner", &obj.state().owner_pid())
                .finish(),
            LockFlavor::Remote(r) => f.debug_tuple("Lock").field(r.core()).finish(),
            #[cfg(feature = "redis")]
            LockFlavor::Redis(r) => f.debug_tuple("Lock").field(r.object()).finish(),
        }
    }
}

impl Lock {
    /// A new, unlocked lock in its own segment.
    pub fn new() -> Result<Lock> {
        let obj = ShmObject::create(Kind::Lock, 0, 0, |state: *mut RawLock, _| {
            // SAFETY: `create` hands us aligned, writable memory for one RawLock.
            unsafe { state.write(RawLock::new()) }
        })?;
        Ok(Lock {
            flavor: LockFlavor::Shm(obj),
        })
    }

    /// The remote flavour.
    pub(crate) fn remote(r: RemoteLock) -> Lock {
        Lock {
            flavor: LockFlavor::Remote(r),
        }
    }

    /// The Redis flavour.
    #[cfg(feature = "redis")]
    pub(crate) fn from_redis(r: crate::redis::RedisLock) -> Lock {
        Lock {
            flavor: LockFlavor::Redis(r),
        }
    }

    /// The layout of a new, unlocked lock, for a manager server to create
    /// (see [`Value::spec`](crate::Value::spec)).
    #[doc(hidden)]
    pub fn spec() -> ShmSpec {
        ShmSpec {
            kind: Kind::Lock as u32,
            fingerprint: 0,
            state_size: std::mem::size_of::<RawLock>() as u64,
            tail_len: 0,
            state_init: Vec::new(),
        }
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
        crate::deadline::timed(self.acquire_deadline(Deadline::after(timeout)), timeout)
    }

    #[inline]
    pub(crate) fn acquire_deadline(&self, deadline: Deadline) -> Result<Acquired> {
        match &self.flavor {
            LockFlavor::Shm(obj) => shm_acquire(obj, deadline),
            LockFlavor::Remote(r) => r.acquire_deadline(deadline),
            #[cfg(feature = "redis")]
            LockFlavor::Redis(r) => r.acquire_deadline(deadline),
        }
    }

    /// Takes the lock whatever it takes (a condition wait must return
    /// holding it): no deadline, and no giving up on a holder whose
    /// liveness cannot be checked.
    pub(crate) fn acquire_restore(&self) -> Acquired {
        let obj = match &self.flavor {
            LockFlavor::Shm(obj) => obj,
            // A shared-memory Condition never holds a remote lock
            // (`Condition::with_lock` makes a remote condition over one),
            // so this is not reached; it still returns rather than panic.
            LockFlavor::Remote(r) => {
                return r
                    .acquire_deadline(Deadline::Never)
                    .unwrap_or(Acquired::Clean);
            }
            #[cfg(feature = "redis")]
            LockFlavor::Redis(r) => {
                return r
                    .acquire_deadline(Deadline::Never)
                    .unwrap_or(Acquired::Clean);
            }
        };
        loop {
            // A wait without a deadline returns only once it holds the lock.
            if let Some(acquired) = obj.state().lock(Deadline::Never) {
                if let Acquired::OwnerDied { pid } = acquired {
                    tracing::warn!(pid, "lock recovered from a dead holder");
                }
                return acquired;
            }
        }
    }

    /// The Redis flavour, if this is one.
    #[cfg(feature = "redis")]
    pub(crate) fn redis(&self) -> Option<&crate::redis::RedisLock> {
        match &self.flavor {
            LockFlavor::Redis(r) => Some(r),
            _ => None,
        }
    }

    /// The remote flavour's core, if this is one.
    pub(crate) fn remote_core(&self) -> Option<&ProxyCore> {
        match &self.flavor {
            LockFlavor::Shm(_) => None,
            LockFlavor::Remote(r) => Some(r.core()),
            #[cfg(feature = "redis")]
            LockFlavor::Redis(_) => None,
        }
    }

    /// Whether the lock is held by a process known to have died (a remote
    /// lock: never asked, false).
    pub(crate) fn holder_died(&self) -> bool {
        match &self.flavor {
            LockFlavor::Shm(obj) => obj.state().holder_died(),
            LockFlavor::Remote(_) => false,
            #[cfg(feature = "redis")]
            LockFlavor::Redis(_) => false,
        }
    }

    /// Whether this process holds the lock (a remote lock: never asked, false).
    pub(crate) fn held_by_this_process(&self) -> bool {
        match &self.flavor {
            LockFlavor::Shm(obj) => obj.state().held_by_this_process(),
            LockFlavor::Remote(_) => false,
            #[cfg(feature = "redis")]
            LockFlavor::Redis(_) => false,
        }
    }

    /// Releases the lock (any process may). Releasing an unlocked lock is an error.
    ///
    /// A plain `Lock` guards no data of its own, so this is safe. The lock
    /// inside a [`Value`](crate::Value) or [`Array`](crate::Array) is a
    /// [`DataLock`], which only its guard (or the `unsafe`
    /// [`DataLock::force_unlock`]) releases.
    #[inline]
    pub fn release(&self) -> Result<()> {
        match &self.flavor {
            LockFlavor::Shm(obj) => {
                if obj.state().unlock() {
                    Ok(())
                } else {
                    Err(Error::InvalidState("release of an unlocked lock".into()))
                }
            }
            LockFlavor::Remote(r) => r.release(),
            #[cfg(feature = "redis")]
            LockFlavor::Redis(r) => r.release(),
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

    /// Whether some process holds the lock now (a remote lock asks its
    /// server, so this can fail with `ManagerGone`).
    pub fn is_locked(&self) -> Result<bool> {
        match &self.flavor {
            LockFlavor::Shm(obj) => Ok(obj.state().is_locked()),
            LockFlavor::Remote(r) => r.is_locked(),
            #[cfg(feature = "redis")]
            LockFlavor::Redis(r) => r.is_locked(),
        }
    }

    /// The pid of the process holding the lock, if any. `None` for a lock
    /// a remote manager keeps: its server knows the holder's connection,
    /// not a pid that means anything on this host.
    pub fn owner_pid(&self) -> Option<i32> {
        match &self.flavor {
            LockFlavor::Shm(obj) => obj.state().owner_pid(),
            LockFlavor::Remote(_) => None,
            #[cfg(feature = "redis")]
            LockFlavor::Redis(r) => r.owner_pid().ok().flatten(),
        }
    }
}

/// Takes a shared-memory lock by `deadline`; a waiter fails with
/// `ManagerGone` once the manager that created the lock died.
#[inline]
fn shm_acquire(obj: &ShmObject<RawLock>, deadline: Deadline) -> Result<Acquired> {
    let between_slices = || match deadline {
        // A try does not wait, so it is not failed for a dead manager.
        Deadline::Now => Ok(()),
        _ => obj.check_owner(),
    };
    let acquired = obj
        .state()
        .lock_watched(deadline, between_slices)?
        .ok_or_else(|| deadline.timeout_error())?;
    if let Acquired::OwnerDied { pid } = acquired {
        tracing::warn!(pid, "lock recovered from a dead holder");
    }
    Ok(acquired)
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

impl std::fmt::Debug for LockGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard")
            .field("owner_died", &self.owner_died())
            .finish()
    }
}

impl Drop for LockGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        match &self.lock.flavor {
            LockFlavor::Shm(obj) => {
                obj.state().unlock();
            }
            LockFlavor::Remote(r) => {
                // The server releases the lock itself once this process's
                // connection ends, so a lost server loses nothing here.
                if let Err(e) = r.release() {
                    tracing::warn!("cannot release a manager lock: {e}");
                }
            }
            #[cfg(feature = "redis")]
            LockFlavor::Redis(r) => match r.release_own() {
                Ok(true) => {}
                // Its lease ended while the guard lived: not ours to release.
                Ok(false) => tracing::warn!("a redis lock's lease ended while its guard was held"),
                // A lost server loses nothing: the lease ends there.
                Err(e) => tracing::warn!("cannot release a redis lock: {e}"),
            },
        }
    }
}

/// The shared-memory form only: a `Condition`, `Value` or `Array` built on
/// a lock needs its segment.
impl ShareHandle for Lock {
    fn to_repr(&self) -> Result<HandleRepr> {
        match &self.flavor {
            LockFlavor::Shm(obj) => obj.to_repr(),
            LockFlavor::Remote(_) => Err(Error::InvalidArgument(
                "a lock a remote manager keeps has no shared segment to build on".into(),
            )),
            #[cfg(feature = "redis")]
            LockFlavor::Redis(_) => Err(Error::InvalidArgument(
                "a lock kept in Redis has no shared segment to build on".into(),
            )),
        }
    }

    /// Opens a whole `Lock` segment only: the lock inside a `Value` or an
    /// `Array` (a [`DataLock`]) never decodes as a `Lock`, whose `release` is safe.
    fn from_repr(repr: &HandleRepr) -> Result<Self> {
        if ShmObject::<RawLock>::is_embedded_repr(repr) {
            return Err(Error::TypeMismatch {
                expected: "Lock".into(),
                found: "the lock of a Value or Array (a DataLock)".into(),
            });
        }
        ShmObject::open(repr, Kind::Lock, 0, "Lock").map(|obj| Lock {
            flavor: LockFlavor::Shm(obj),
        })
    }
}

impl FlavoredHandle for Lock {
    fn to_flavor_repr(&self) -> Result<FlavorRepr> {
        match &self.flavor {
            LockFlavor::Shm(obj) => obj.to_repr().map(FlavorRepr::Shm),
            LockFlavor::Remote(r) => r.core().to_repr().map(FlavorRepr::Remote),
            #[cfg(feature = "redis")]
            LockFlavor::Redis(r) => Ok(FlavorRepr::Redis(r.object().to_repr())),
        }
    }

    fn from_flavor_repr(repr: &FlavorRepr) -> Result<Self> {
        match repr {
            FlavorRepr::Shm(h) => <Lock as ShareHandle>::from_repr(h),
            FlavorRepr::Remote(p) => {
                ProxyCore::from_repr(p, Lock::remote_tag()).and_then(Lock::from_remote)
            }
            #[cfg(feature = "redis")]
            FlavorRepr::Redis(r) => crate::redis::RedisObject::from_repr(
                r,
                "lock",
                crate::redis::RedisLock::TYPE.into(),
            )
            .map(|o| Lock::from_redis(crate::redis::RedisLock::new(o))),
            #[cfg(not(feature = "redis"))]
            FlavorRepr::Redis(_) => Err(crate::handle::without_redis()),
        }
    }
}

crate::impl_flavored_handle!(impl<> for Lock);

/// The lock inside a [`Value`](crate::Value) or an [`Array`](crate::Array),
/// which guards its data (Python's `get_lock()`).
///
/// Holding its guard keeps every other process and thread away from the
/// data, exactly as the value's own guard does. Unlike a plain [`Lock`] it
/// has no safe `release`: a release while someone holds the value's guard
/// would let a second guard reach the same data. Drop the guard to release
/// it; [`DataLock::force_unlock`] is the `unsafe` way out (parking_lot's
/// model). Python's `with v.get_lock(): ...` reads:
///
/// ```
/// let v = multiproc::Value::new(0u32).unwrap();
/// {
///     let _held = v.get_lock().lock().unwrap();
///     assert!(matches!(v.try_lock(), Err(multiproc::Error::WouldBlock)));
/// }
/// *v.lock().unwrap() += 1;
/// assert_eq!(v.get(), 1);
/// ```
///
/// It can be passed to other processes like any handle.
#[derive(Clone)]
pub struct DataLock {
    obj: ShmObject<RawLock>,
}

impl std::fmt::Debug for DataLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataLock")
            .field("owner", &self.owner_pid())
            .finish()
    }
}

impl DataLock {
    /// The lock at `raw` inside another object's segment (a Value's lock).
    pub(crate) fn from_parts<T>(obj: ShmObject<T>, raw: fn(&T) -> &RawLock) -> DataLock {
        DataLock {
            obj: ShmObject::from_embedded(obj, Kind::Lock, raw),
        }
    }

    /// Blocks until the lock is held and returns a guard that releases it.
    pub fn lock(&self) -> Result<DataLockGuard> {
        self.guard(Deadline::Never)
    }

    /// Takes the lock if it is free; `Err(WouldBlock)` otherwise.
    pub fn try_lock(&self) -> Result<DataLockGuard> {
        self.guard(Deadline::Now).map_err(|_| Error::WouldBlock)
    }

    /// Waits at most `timeout` for the lock; `Err(Timeout)` if it stays held.
    pub fn lock_timeout(&self, timeout: Duration) -> Result<DataLockGuard> {
        self.guard(Deadline::after(timeout))
    }

    fn guard(&self, deadline: Deadline) -> Result<DataLockGuard> {
        let acquired = if self.obj.state().try_lock() {
            Acquired::Clean
        } else if held::held_here(self.obj.state()).is_some() {
            return Err(held::would_wait_for_itself());
        } else {
            shm_acquire(&self.obj, deadline)?
        };
        held::note(self.obj.state(), Holder::Lock);
        Ok(DataLockGuard {
            lock: self.clone(),
            acquired,
            _not_send: PhantomData,
        })
    }

    /// Whether some process holds the lock now.
    pub fn is_locked(&self) -> bool {
        self.obj.state().is_locked()
    }

    /// The pid of the process holding the lock, if any.
    pub fn owner_pid(&self) -> Option<i32> {
        self.obj.state().owner_pid()
    }

    /// Releases the lock without its guard (any process may); an unlocked
    /// lock is `Err(InvalidState)`.
    ///
    /// # Safety
    ///
    /// No guard of this lock may be alive, in this process or any other that
    /// maps the data (a `ValueGuard`, an `ArrayGuard`, or a guard from
    /// [`DataLock::lock`] whose holder still relies on it), or two guards
    /// could reach the same data at once. It is meant for a lock whose guard
    /// was leaked with `std::mem::forget`.
    pub unsafe fn force_unlock(&self) -> Result<()> {
        if self.obj.state().unlock() {
            Ok(())
        } else {
            Err(Error::InvalidState("release of an unlocked lock".into()))
        }
    }
}

/// Holds a [`DataLock`] (a handle of its own, so `v.get_lock().lock()` is
/// one expression); releases it when dropped.
#[must_use = "the lock is released when the guard is dropped"]
pub struct DataLockGuard {
    lock: DataLock,
    acquired: Acquired,
    /// Released on the thread that took it (see `sync::held`).
    _not_send: PhantomData<*const ()>,
}

impl DataLockGuard {
    /// The pid of the previous holder if it died holding the lock.
    pub fn owner_died(&self) -> Option<i32> {
        self.acquired.owner_died()
    }
}

impl std::fmt::Debug for DataLockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataLockGuard")
            .field("owner_died", &self.owner_died())
            .finish()
    }
}

impl Drop for DataLockGuard {
    fn drop(&mut self) {
        held::forget(self.lock.obj.state());
        self.lock.obj.state().unlock();
    }
}

impl ShareHandle for DataLock {
    fn to_repr(&self) -> Result<HandleRepr> {
        self.obj.to_repr()
    }

    /// Opens the lock embedded in a `Value` or `Array` segment (or a whole
    /// `Lock` segment: without a safe release, either is sound).
    fn from_repr(repr: &HandleRepr) -> Result<Self> {
        ShmObject::open_embedded(repr, Kind::Lock).map(|obj| DataLock { obj })
    }
}

crate::impl_share_handle!(impl<> for DataLock);
