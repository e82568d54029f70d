//! `RLock`: Python's `multiprocessing.RLock`, a recursive lock owned by one thread.
//!
//! Built on [`RawLock`] (which records the holder's pid and start time and
//! hands the lock of a dead holder to the next acquirer) plus the holder
//! thread and a recursion count beside it. Only the holder writes the owner
//! and the count, so they need no lock of their own.

use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::handle::{FlavorRepr, FlavoredHandle, HandleRepr, ShareHandle};
use crate::manager::core::{ProxyCore, RemoteFlavor};
use crate::shm::{Kind, ShmObject, ShmSpec};
use crate::sync::raw_lock::{Acquired, RawLock};
use crate::sync::remote::RemoteRLock;
use crate::sys;

/// The shared state of an RLock (`#[repr(C)]`, atomics only, all-zero is unlocked).
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct RLockState {
    raw: RawLock,
    /// The holder thread (see [`my_thread`]); 0 while the lock is free.
    owner: AtomicU64,
    /// The recursion depth; 0 while the lock is free.
    count: AtomicU32,
    _pad: u32,
}

/// This thread, as recorded in `owner`: the low 32 bits of the process start
/// time above the thread id. Thread ids are unique among live threads, and the
/// start time tells a new process apart from a dead one that had the same ids.
#[inline]
fn my_thread() -> u64 {
    thread_local! {
        /// (pid, thread word) as computed in that process; a fork changes the pid.
        static ME: Cell<(i32, u64)> = const { Cell::new((0, 0)) };
    }
    let pid = sys::process::getpid();
    ME.with(|me| {
        let (cached_pid, word) = me.get();
        if cached_pid == pid {
            return word;
        }
        let ticks = sys::process::own_start_ticks() as u32 as u64;
        let word = (ticks << 32) | sys::process::gettid() as u32 as u64;
        me.set((pid, word));
        word
    })
}

impl RLockState {
    /// Whether the calling thread holds the lock.
    #[inline]
    pub(crate) fn is_owned(&self) -> bool {
        // The raw word pins the process (pid and start time); `owner` the
        // thread within it. A stale `owner` left by a dead holder never matches
        // because its process is no longer the one in the raw word.
        self.owner.load(Ordering::Relaxed) == my_thread() && self.raw.held_by_this_process()
    }

    /// Takes the lock (or enters it again), waiting until `deadline`;
    /// `between_slices` may end a long wait (see [`RawLock::lock_watched`]).
    fn acquire(
        &self,
        deadline: Deadline,
        between_slices: impl FnMut() -> Result<()>,
    ) -> Result<Acquired> {
        if self.is_owned() {
            let count = self.count.load(Ordering::Relaxed);
            if count == u32::MAX {
                return Err(Error::InvalidState("RLock recursion too deep".into()));
            }
            self.count.store(count + 1, Ordering::Relaxed);
            return Ok(Acquired::Clean);
        }
        let acquired = self
            .raw
            .lock_watched(deadline, between_slices)?
            .ok_or_else(|| deadline.timeout_error())?;
        Ok(self.took(1, acquired))
    }

    /// Takes the lock (not held by this thread) with the recursion count it
    /// had before a condition wait. It cannot fail: a wait must return holding the lock.
    pub(crate) fn acquire_restore(&self, count: u32) -> Acquired {
        let acquired = loop {
            // A wait without a deadline returns only once it holds the lock.
            if let Some(acquired) = self.raw.lock(Deadline::Never) {
                break acquired;
            }
        };
        self.took(count, acquired)
    }

    /// Records this thread as the holder, `count` deep.
    fn took(&self, count: u32, acquired: Acquired) -> Acquired {
        self.owner.store(my_thread(), Ordering::Relaxed);
        self.count.store(count, Ordering::Relaxed);
        if let Acquired::OwnerDied { pid } = acquired {
            tracing::warn!(pid, "rlock recovered from a dead holder");
        }
        acquired
    }

    fn release(&self) -> Result<()> {
        if !self.is_owned() {
            return Err(not_owned());
        }
        let count = self.count.load(Ordering::Relaxed);
        if count > 1 {
            self.count.store(count - 1, Ordering::Relaxed);
            return Ok(());
        }
        self.release_all();
        Ok(())
    }

    /// Releases the lock completely and returns the recursion count it had.
    pub(crate) fn release_save(&self) -> Result<u32> {
        if !self.is_owned() {
            return Err(not_owned());
        }
        let count = self.count.load(Ordering::Relaxed);
        self.release_all();
        Ok(count)
    }

    /// Whether the lock is held by a process known to have died.
    pub(crate) fn holder_died(&self) -> bool {
        self.raw.holder_died()
    }

    fn release_all(&self) {
        // Clear the owner before the unlock publishes the lock to the next holder.
        self.owner.store(0, Ordering::Relaxed);
        self.count.store(0, Ordering::Relaxed);
        self.raw.unlock();
    }
}

fn not_owned() -> Error {
    Error::InvalidState("release of an RLock this thread does not hold".into())
}

/// A recursive lock shared by any number of processes (Python's `multiprocessing.RLock`).
///
/// The thread that acquired it may acquire it again; it is free once it has
/// been released as many times. Only the holder (this process and thread)
/// may release it: a release by anyone else is [`Error::InvalidState`]. If the
/// holding process dies, the next acquirer gets the lock with a count of one
/// and is told ([`Acquired::OwnerDied`], [`RLockGuard::owner_died`]). A
/// thread that ends while its process lives leaves the lock held, as in Python.
/// Waiters treat a holder they cannot check as alive and, on a manager's
/// RLock, fail with [`Error::ManagerGone`] once the manager died, as for
/// [`Lock`](crate::Lock).
///
/// One type, two flavours, as for [`Lock`](crate::Lock): an RLock from
/// [`RLock::new`] or a local `Manager` lives in shared memory; one from a
/// connected `BaseManager` is kept by its server, which knows its owner as
/// a thread of a client's connection, releases it when that connection
/// ends (the process died) and tells the next acquirer the pid the holder
/// declared. Its [`is_owned`](RLock::is_owned),
/// [`recursion_count`](RLock::recursion_count) and
/// [`is_locked`](RLock::is_locked) ask the server (so they can fail with
/// `ManagerGone`); [`owner_pid`](RLock::owner_pid) is `None`.
///
/// With the `redis` feature, `RedisManager::rlock(name)` gives a third
/// flavour: a key in Redis naming the owner thread, with a lease its
/// process renews; a holder that dies loses it when the lease ends and the
/// next acquirer is told ([`Acquired::OwnerDied`]).
///
/// ```
/// let lock = multiproc::RLock::new().unwrap();
/// let outer = lock.lock().unwrap();
/// let inner = lock.lock().unwrap(); // the same thread may re-enter
/// assert_eq!(lock.recursion_count().unwrap(), 2);
/// drop(inner);
/// drop(outer);
/// assert!(!lock.is_locked().unwrap());
/// ```
#[derive(Clone)]
pub struct RLock {
    flavor: RLockFlavor,
}

/// Where an [`RLock`] lives.
#[derive(Clone)]
enum RLockFlavor {
    /// A lock word, owner and count in a shared segment.
    Shm(ShmObject<RLockState>),
    /// An object of a TCP manager's server.
    Remote(RemoteRLock),
    /// A key with a lease in Redis, naming its owner thread.
    #[cfg(feature = "redis")]
    Redis(crate::redis::RedisRLock),
}

impl std::fmt::Debug for RLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.flavor {
            RLockFlavor::Shm(obj) => f
                .debug_struct("RLock")
                .field("owner", &obj.state().raw.owner_pid())
                .field("is_owned", &obj.state().is_owned())
                .finish(),
            RLockFlavor::Remote(r) => f.debug_tuple("RLock").field(r.core()).finish(),
            #[cfg(feature = "redis")]
            RLockFlavor::Redis(r) => f.debug_tuple("RLock").field(r.object()).finish(),
        }
    }
}

impl RLock {
    /// A new, unlocked recursive lock in its own segment.
    pub fn new() -> Result<RLock> {
        let obj = ShmObject::create(Kind::RLock, 0, 0, |state: *mut RLockState, _| {
            // SAFETY: `create` hands us aligned, writable memory for one RLockState.
            unsafe { state.write(RLockState::default()) }
        })?;
        Ok(RLock::shm(obj))
    }

    fn shm(obj: ShmObject<RLockState>) -> RLock {
        RLock {
            flavor: RLockFlavor::Shm(obj),
        }
    }

    /// The remote flavour.
    pub(crate) fn remote(r: RemoteRLock) -> RLock {
        RLock {
            flavor: RLockFlavor::Remote(r),
        }
    }

    /// The Redis flavour.
    #[cfg(feature = "redis")]
    pub(crate) fn from_redis(r: crate::redis::RedisRLock) -> RLock {
        RLock {
            flavor: RLockFlavor::Redis(r),
        }
    }

    /// The Redis flavour, if this is one.
    #[cfg(feature = "redis")]
    pub(crate) fn redis(&self) -> Option<&crate::redis::RedisRLock> {
        match &self.flavor {
            RLockFlavor::Redis(r) => Some(r),
            _ => None,
        }
    }

    /// The remote flavour's core, if this is one.
    pub(crate) fn remote_core(&self) -> Option<&ProxyCore> {
        match &self.flavor {
            RLockFlavor::Remote(r) => Some(r.core()),
            _ => None,
        }
    }

    /// The layout of a new, unlocked recursive lock, for a manager server to
    /// create (see [`Value::spec`](crate::Value::spec)).
    #[doc(hidden)]
    pub fn spec() -> ShmSpec {
        // SAFETY: RLockState is atomics and integers only.
        unsafe { ShmSpec::zeroed::<RLockState>(Kind::RLock, 0, 0, |_| {}) }
    }

    /// An RLock that lives inside another object's segment (a Condition's own lock).
    pub(crate) fn from_parts<T>(obj: ShmObject<T>, field: fn(&T) -> &RLockState) -> RLock {
        RLock::shm(ShmObject::from_embedded(obj, Kind::RLock, field))
    }

    /// The shared state of the shared-memory flavour.
    pub(crate) fn shm_state(&self) -> Option<&RLockState> {
        match &self.flavor {
            RLockFlavor::Shm(obj) => Some(obj.state()),
            _ => None,
        }
    }

    /// Blocks until this thread holds the lock (at once if it already does).
    pub fn acquire(&self) -> Result<Acquired> {
        self.acquire_deadline(Deadline::Never)
    }

    /// Takes the lock if it is free or already ours; `Err(WouldBlock)` otherwise.
    pub fn try_acquire(&self) -> Result<Acquired> {
        self.acquire_deadline(Deadline::Now)
    }

    /// Waits at most `timeout` for the lock; `Err(Timeout)` if it stays held.
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<Acquired> {
        crate::deadline::timed(self.acquire_deadline(Deadline::after(timeout)), timeout)
    }

    /// The core of the three acquire forms (`Deadline::Now` fails with `WouldBlock`).
    pub(crate) fn acquire_deadline(&self, deadline: Deadline) -> Result<Acquired> {
        let obj = match &self.flavor {
            RLockFlavor::Shm(obj) => obj,
            RLockFlavor::Remote(r) => return r.acquire_deadline(deadline),
            #[cfg(feature = "redis")]
            RLockFlavor::Redis(r) => return r.acquire_deadline(deadline),
        };
        let between_slices = || match deadline {
            // A try does not wait, so it is not failed for a dead manager.
            Deadline::Now => Ok(()),
            _ => obj.check_owner(),
        };
        obj.state()
            .acquire(deadline, between_slices)
            .map_err(|e| match e {
                Error::Timeout(_) if deadline == Deadline::Now => Error::WouldBlock,
                e => e,
            })
    }

    /// Takes the lock (not held by this thread) `count` deep, as a
    /// condition wait that released it held it; waits as long as it takes.
    pub(crate) fn acquire_restore(&self, count: u64) -> Result<Acquired> {
        match &self.flavor {
            RLockFlavor::Shm(obj) => Ok(obj
                .state()
                .acquire_restore(u32::try_from(count).unwrap_or(u32::MAX))),
            RLockFlavor::Remote(r) => r.acquire_restore(count),
            #[cfg(feature = "redis")]
            RLockFlavor::Redis(r) => r.acquire_restore(count),
        }
    }

    /// Releases one level of recursion; the lock is free after the last.
    ///
    /// `Err(InvalidState)` if the calling thread does not hold the lock.
    pub fn release(&self) -> Result<()> {
        match &self.flavor {
            RLockFlavor::Shm(obj) => obj.state().release(),
            RLockFlavor::Remote(r) => r.release(),
            #[cfg(feature = "redis")]
            RLockFlavor::Redis(r) => r.release(),
        }
    }

    /// Blocks until the lock is held and returns a guard that releases it.
    pub fn lock(&self) -> Result<RLockGuard<'_>> {
        self.acquire().map(|a| RLockGuard::new(self, a))
    }

    /// The guard form of [`RLock::try_acquire`].
    pub fn try_lock(&self) -> Result<RLockGuard<'_>> {
        self.try_acquire().map(|a| RLockGuard::new(self, a))
    }

    /// The guard form of [`RLock::acquire_timeout`].
    pub fn lock_timeout(&self, timeout: Duration) -> Result<RLockGuard<'_>> {
        self.acquire_timeout(timeout)
            .map(|a| RLockGuard::new(self, a))
    }

    /// Whether the calling thread holds the lock (a remote lock asks its server).
    pub fn is_owned(&self) -> Result<bool> {
        self.recursion_count().map(|n| n > 0)
    }

    /// How many times the calling thread holds the lock (0 if it does not;
    /// a remote lock asks its server).
    pub fn recursion_count(&self) -> Result<u32> {
        match &self.flavor {
            RLockFlavor::Shm(obj) => {
                let state = obj.state();
                Ok(if state.is_owned() {
                    state.count.load(Ordering::Relaxed)
                } else {
                    0
                })
            }
            RLockFlavor::Remote(r) => r.recursion_count(),
            #[cfg(feature = "redis")]
            RLockFlavor::Redis(r) => r.recursion_count(),
        }
    }

    /// Whether some thread of some process holds the lock now (a remote
    /// lock asks its server, so this can fail with `ManagerGone`).
    pub fn is_locked(&self) -> Result<bool> {
        match &self.flavor {
            RLockFlavor::Shm(obj) => Ok(obj.state().raw.is_locked()),
            RLockFlavor::Remote(r) => r.is_locked(),
            #[cfg(feature = "redis")]
            RLockFlavor::Redis(r) => r.is_locked(),
        }
    }

    /// The pid of the process holding the lock, if any. `None` for a lock
    /// a remote manager keeps: its server knows the holder's connection,
    /// not a pid that means anything on this host.
    pub fn owner_pid(&self) -> Option<i32> {
        match &self.flavor {
            RLockFlavor::Shm(obj) => obj.state().raw.owner_pid(),
            RLockFlavor::Remote(_) => None,
            #[cfg(feature = "redis")]
            RLockFlavor::Redis(r) => r.owner_pid().ok().flatten(),
        }
    }
}

/// Holds one level of an [`RLock`]; releases it when dropped.
///
/// Not `Send`: only the thread that acquired the lock may release it.
#[must_use = "the lock is released when the guard is dropped"]
pub struct RLockGuard<'a> {
    lock: &'a RLock,
    acquired: Acquired,
    _not_send: PhantomData<*const ()>,
}

impl<'a> RLockGuard<'a> {
    fn new(lock: &'a RLock, acquired: Acquired) -> Self {
        RLockGuard {
            lock,
            acquired,
            _not_send: PhantomData,
        }
    }

    /// The pid of the previous holder if it died holding the lock.
    pub fn owner_died(&self) -> Option<i32> {
        self.acquired.owner_died()
    }
}

impl std::fmt::Debug for RLockGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("RLockGuard");
        if let Some(state) = self.lock.shm_state() {
            d.field("recursion_count", &state.count.load(Ordering::Relaxed));
        }
        d.field("owner_died", &self.owner_died()).finish()
    }
}

impl Drop for RLockGuard<'_> {
    fn drop(&mut self) {
        // A remote lock whose server is lost needs nothing more: the server
        // releases it itself once this process's connection ends.
        if let Err(e) = self.lock.release() {
            tracing::warn!("rlock guard could not release: {e}");
        }
    }
}

/// The shared-memory form only: a `Condition` built on an RLock needs its segment.
impl ShareHandle for RLock {
    fn to_repr(&self) -> Result<HandleRepr> {
        match &self.flavor {
            RLockFlavor::Shm(obj) => obj.to_repr(),
            RLockFlavor::Remote(_) => Err(Error::InvalidArgument(
                "an rlock a remote manager keeps has no shared segment to build on".into(),
            )),
            #[cfg(feature = "redis")]
            RLockFlavor::Redis(_) => Err(Error::InvalidArgument(
                "an rlock kept in Redis has no shared segment to build on".into(),
            )),
        }
    }

    fn from_repr(repr: &HandleRepr) -> Result<Self> {
        ShmObject::open_embedded(repr, Kind::RLock).map(RLock::shm)
    }
}

impl FlavoredHandle for RLock {
    fn to_flavor_repr(&self) -> Result<FlavorRepr> {
        match &self.flavor {
            RLockFlavor::Shm(obj) => obj.to_repr().map(FlavorRepr::Shm),
            RLockFlavor::Remote(r) => r.core().to_repr().map(FlavorRepr::Remote),
            #[cfg(feature = "redis")]
            RLockFlavor::Redis(r) => Ok(FlavorRepr::Redis(r.object().to_repr())),
        }
    }

    fn from_flavor_repr(repr: &FlavorRepr) -> Result<Self> {
        match repr {
            FlavorRepr::Shm(h) => <RLock as ShareHandle>::from_repr(h),
            FlavorRepr::Remote(p) => {
                ProxyCore::from_repr(p, RLock::remote_tag()).and_then(RLock::from_remote)
            }
            #[cfg(feature = "redis")]
            FlavorRepr::Redis(r) => crate::redis::RedisRLock::from_repr(r).map(RLock::from_redis),
            #[cfg(not(feature = "redis"))]
            FlavorRepr::Redis(_) => Err(crate::handle::without_redis()),
        }
    }
}

crate::impl_flavored_handle!(impl<> for RLock);

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    #[test]
    fn guards_say_what_they_hold() {
        let l = crate::sync::Lock::new().unwrap();
        let g = l.lock().unwrap();
        assert_eq!(format!("{g:?}"), "LockGuard { owner_died: None }");
        let r = RLock::new().unwrap();
        let _outer = r.lock().unwrap();
        let inner = r.lock().unwrap();
        assert_eq!(
            format!("{inner:?}"),
            "RLockGuard { recursion_count: 2, owner_died: None }"
        );
    }

    #[test]
    fn recursion_counts_up_and_down() {
        let l = RLock::new().unwrap();
        assert_eq!(l.acquire().unwrap(), Acquired::Clean);
        assert_eq!(l.try_acquire().unwrap(), Acquired::Clean);
        assert_eq!(l.acquire_timeout(Duration::ZERO).unwrap(), Acquired::Clean);
        assert_eq!(l.recursion_count().unwrap(), 3);
        assert!(l.is_owned().unwrap());
        l.release().unwrap();
        l.release().unwrap();
        assert!(l.is_locked().unwrap());
        l.release().unwrap();
        assert!(!l.is_locked().unwrap());
        assert_eq!(l.recursion_count().unwrap(), 0);
        assert!(matches!(l.release(), Err(Error::InvalidState(_))));
    }

    #[test]
    fn another_thread_can_neither_enter_nor_release() {
        let l = Arc::new(RLock::new().unwrap());
        let g = l.lock().unwrap();
        let l2 = l.clone();
        std::thread::spawn(move || {
            assert!(!l2.is_owned().unwrap());
            assert!(matches!(l2.try_acquire(), Err(Error::WouldBlock)));
            assert!(matches!(
                l2.acquire_timeout(Duration::from_millis(5)),
                Err(Error::Timeout(_))
            ));
            assert!(matches!(l2.release(), Err(Error::InvalidState(_))));
        })
        .join()
        .unwrap();
        drop(g);
        let l2 = l.clone();
        std::thread::spawn(move || {
            let _g = l2.lock().unwrap();
            assert_eq!(l2.recursion_count().unwrap(), 1);
        })
        .join()
        .unwrap();
        assert!(!l.is_locked().unwrap());
    }

    #[test]
    fn threads_count_exactly() {
        let l = Arc::new(RLock::new().unwrap());
        let counter = Arc::new(AtomicU64::new(0));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (l, counter) = (l.clone(), counter.clone());
                std::thread::spawn(move || {
                    for _ in 0..5_000 {
                        let _outer = l.lock().unwrap();
                        let _inner = l.lock().unwrap();
                        // A non-atomic read-modify-write, safe only under the lock.
                        let v = counter.load(Ordering::Relaxed);
                        counter.store(v + 1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(counter.load(Ordering::Relaxed), 20_000);
    }

    #[test]
    fn dead_holder_hands_over_with_a_count_of_one() {
        let l = RLock::new().unwrap();
        let state = l.shm_state().unwrap();
        // A holder three levels deep in a process that cannot exist.
        state.raw.forge_dead_holder();
        state.owner.store(12345, Ordering::Relaxed);
        state.count.store(3, Ordering::Relaxed);
        assert!(!l.is_owned().unwrap());
        assert!(matches!(l.release(), Err(Error::InvalidState(_))));
        assert_eq!(
            l.acquire_timeout(Duration::from_secs(5)).unwrap(),
            Acquired::OwnerDied {
                pid: RawLock::DEAD_PID
            }
        );
        assert_eq!(l.recursion_count().unwrap(), 1);
        l.release().unwrap();
        assert!(!l.is_locked().unwrap());
    }

    #[test]
    fn handle_roundtrip_shares_the_lock() {
        let l = RLock::new().unwrap();
        let repr = l.to_repr().unwrap();
        let again = RLock::from_repr(&repr).unwrap();
        let g = l.lock().unwrap();
        assert!(again.is_owned().unwrap());
        assert_eq!(again.recursion_count().unwrap(), 1);
        drop(g);
        assert!(!again.is_locked().unwrap());
        assert!(matches!(
            crate::Lock::from_repr(&repr),
            Err(Error::TypeMismatch { .. })
        ));
    }
}
