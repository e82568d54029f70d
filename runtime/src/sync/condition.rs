//! `Condition`: Python's `multiprocessing.Condition`, over a `Lock` or an `RLock`.
//!
//! Waiters sleep on a futex sequence counter that every notify bumps, so a
//! notify can never fall between a waiter's release of the lock and its
//! sleep. Beside it, one 64-bit word counts the registered waiters (high half)
//! and the wake-ups granted to them but not yet taken (low half):
//!
//! - `wait`, holding the lock, registers (waiting + 1) and reads the counter,
//!   releases the lock and sleeps until the counter moves and it can take a
//!   granted wake-up;
//! - `notify(n)`, holding the lock, moves up to `n` waiters from waiting to
//!   granted, bumps the counter and wakes that many sleepers (no syscall when
//!   none sleeps).
//!
//! A waiter may take a wake-up only once the counter moved past the value it
//! registered at, so `notify(n)` releases at most `n` of the waiters that were
//! waiting when it was called, never one that came later. A waiter that times
//! out leaves with the lock held again, when no notify can be half done.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::handle::{FlavorRepr, FlavoredHandle, HandleRepr, ShareHandle};
use crate::manager::core::{ProxyCore, RemoteFlavor};
use crate::shm::{Kind, ShmObject, ShmSpec};
use crate::sync::lock::Lock;
use crate::sync::park;
use crate::sync::raw_lock::Acquired;
use crate::sync::remote::RemoteCondition;
use crate::sync::rlock::{RLock, RLockState};
use crate::sys::futex::WaitOutcome;

/// The lock lives in the condition's own segment (`Condition::new`).
const OWN_RLOCK: u32 = 0;
/// An external `Lock`, named by `lock_id` / `lock_offset`.
const EXTERNAL_LOCK: u32 = 1;
/// An external `RLock`, named by `lock_id` / `lock_offset`.
const EXTERNAL_RLOCK: u32 = 2;

const ONE_WAITER: u64 = 1 << 32;
const GRANTED_MASK: u64 = 0xFFFF_FFFF;

/// How a shared-memory waiter's sleep ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slept {
    /// It took a wake-up a notify granted.
    Notified,
    /// Its deadline passed.
    TimedOut,
    /// The lock's holder died: the waiter goes to take the lock over.
    HolderDied,
}

/// The shared state of a condition (`#[repr(C)]`, atomics only).
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct CondState {
    /// Bumped by every notify that releases someone; the futex word.
    seq: AtomicU32,
    sleepers: AtomicU32,
    /// Registered waiters (high half) and granted wake-ups (low half).
    counts: AtomicU64,
    /// Which lock the condition uses (fixed at creation).
    lock_kind: AtomicU32,
    _pad: u32,
    /// Segment id and offset of an external lock (fixed at creation).
    lock_id: AtomicU64,
    lock_offset: AtomicU64,
    lock_extra: AtomicU64,
    /// The lock of a condition made by `Condition::new`.
    own_lock: RLockState,
}

impl CondState {
    /// Takes a granted wake-up, if there is one.
    fn try_take(&self) -> bool {
        let mut counts = self.counts.load(Ordering::SeqCst);
        while counts & GRANTED_MASK > 0 {
            match self.counts.compare_exchange_weak(
                counts,
                counts - 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return true,
                Err(now) => counts = now,
            }
        }
        false
    }

    /// Sleeps until this waiter takes a wake-up, `deadline` passes, or
    /// (checked between slices, with `check`) `holder_died` says that the
    /// lock is held by a dead process, which no notify would ever follow.
    fn sleep_until_notified(
        &self,
        registered_at: u32,
        deadline: Deadline,
        check: impl Fn() -> Result<()>,
        holder_died: impl Fn() -> bool,
    ) -> Result<Slept> {
        static NOTIFIED: park::SpinSite = park::SpinSite::new();
        let mut spin = deadline != Deadline::Now;
        loop {
            let seq = self.seq.load(Ordering::SeqCst);
            if seq != registered_at && self.try_take() {
                return Ok(Slept::Notified);
            }
            if deadline.expired() {
                return Ok(Slept::TimedOut);
            }
            if spin {
                spin = false;
                if NOTIFIED.spin_until(|| self.seq.load(Ordering::Relaxed) != seq) {
                    continue;
                }
            }
            let slice = Some(deadline.slice(park::LIVENESS_SLICE));
            if park::sleep(&self.seq, seq, &self.sleepers, slice) == WaitOutcome::TimedOut {
                check()?;
                if holder_died() {
                    return Ok(Slept::HolderDied);
                }
            }
        }
    }

    /// Unregisters a waiter that timed out; called with the lock held, so no
    /// notify is half done. Takes a wake-up granted meanwhile (true) if it may.
    fn leave(&self, registered_at: u32) -> bool {
        let may_take = self.seq.load(Ordering::SeqCst) != registered_at;
        let mut counts = self.counts.load(Ordering::SeqCst);
        loop {
            let (new, notified) = if may_take && counts & GRANTED_MASK > 0 {
                (counts - 1, true)
            } else if counts >= ONE_WAITER {
                (counts - ONE_WAITER, false)
            } else {
                // Not registered any more: only a corrupted segment gets here.
                return false;
            };
            match self
                .counts
                .compare_exchange_weak(counts, new, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return notified,
                Err(now) => counts = now,
            }
        }
    }

    /// Grants up to `n` registered waiters a wake-up; called with the lock held.
    fn notify(&self, n: u64) {
        let mut counts = self.counts.load(Ordering::SeqCst);
        let granted = loop {
            let waiting = counts >> 32;
            let k = n.min(waiting);
            if k == 0 {
                return;
            }
            let new = counts - k * ONE_WAITER + k;
            match self
                .counts
                .compare_exchange_weak(counts, new, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => break k,
                Err(now) => counts = now,
            }
        };
        self.seq.fetch_add(1, Ordering::SeqCst);
        park::wake(
            &self.seq,
            &self.sleepers,
            granted.min(i32::MAX as u64) as u32,
        );
    }
}

/// The lock under a [`Condition`]: a [`Lock`] or an [`RLock`].
#[derive(Clone, Debug)]
pub enum ConditionLock {
    /// A plain lock: `wait` releases it and takes it again.
    Lock(Lock),
    /// A recursive lock: `wait` releases every level and restores them after.
    RLock(RLock),
}

impl From<Lock> for ConditionLock {
    fn from(lock: Lock) -> Self {
        ConditionLock::Lock(lock)
    }
}

impl From<RLock> for ConditionLock {
    fn from(lock: RLock) -> Self {
        ConditionLock::RLock(lock)
    }
}

impl ConditionLock {
    fn acquire(&self, deadline: Deadline) -> Result<Acquired> {
        match self {
            ConditionLock::Lock(l) => l.acquire_deadline(deadline),
            ConditionLock::RLock(l) => l.acquire_deadline(deadline),
        }
    }

    fn release(&self) -> Result<()> {
        match self {
            ConditionLock::Lock(l) => l.release(),
            ConditionLock::RLock(l) => l.release(),
        }
    }

    /// The server that keeps the lock, if a TCP manager does (`None` for a
    /// lock in shared memory): a manager checks that a condition it makes
    /// over a given lock can be its own.
    #[doc(hidden)]
    pub fn server(&self) -> Option<crate::manager::ServerAddress> {
        self.remote_core()
            .and_then(|core| core.conn().ok().map(|c| *c.server()))
    }

    /// Whether the lock is kept in Redis.
    fn is_redis(&self) -> bool {
        #[cfg(feature = "redis")]
        match self {
            ConditionLock::Lock(l) => l.redis().is_some(),
            ConditionLock::RLock(l) => l.redis().is_some(),
        }
        #[cfg(not(feature = "redis"))]
        false
    }

    /// The remote flavour's core, if the lock is one a TCP manager keeps.
    fn remote_core(&self) -> Option<&ProxyCore> {
        match self {
            ConditionLock::Lock(l) => l.remote_core(),
            ConditionLock::RLock(l) => l.remote_core(),
        }
    }

    // What follows serves the shared-memory flavour of a condition, whose
    // lock is a shared-memory one.

    /// Whether the caller holds the lock: this thread for an RLock, this
    /// process for a Lock (which any thread of its holder may release).
    fn is_held(&self) -> bool {
        match self {
            ConditionLock::Lock(l) => l.held_by_this_process(),
            ConditionLock::RLock(l) => l.shm_state().is_some_and(|s| s.is_owned()),
        }
    }

    /// Whether the lock is held by a process known to have died.
    fn holder_died(&self) -> bool {
        match self {
            ConditionLock::Lock(l) => l.holder_died(),
            ConditionLock::RLock(l) => l.shm_state().is_some_and(|s| s.holder_died()),
        }
    }

    /// Releases the lock completely; returns what [`Self::acquire_restore`] needs.
    fn release_save(&self) -> Result<u32> {
        match self {
            ConditionLock::Lock(l) => l.release().map(|()| 1),
            ConditionLock::RLock(l) => match l.shm_state() {
                Some(s) => s.release_save(),
                None => Err(Error::InvalidState(
                    "a shared-memory condition over a remote rlock".into(),
                )),
            },
        }
    }

    /// Takes the lock again, as deep as it was held before `release_save`.
    /// It cannot fail (a wait returns holding the lock), so it waits on a
    /// holder whose liveness cannot be checked for as long as it takes.
    fn acquire_restore(&self, saved: u32) -> Acquired {
        match self {
            ConditionLock::Lock(l) => l.acquire_restore(),
            ConditionLock::RLock(l) => l
                .acquire_restore(u64::from(saved))
                .unwrap_or(Acquired::Clean),
        }
    }

    fn to_repr(&self) -> Result<HandleRepr> {
        match self {
            ConditionLock::Lock(l) => l.to_repr(),
            ConditionLock::RLock(l) => l.to_repr(),
        }
    }
}

/// What a timed [`Condition`] wait ended with, like std's
/// `WaitTimeoutResult`: whether it timed out, and how the lock was taken
/// back (a wait always returns holding it), which says whether its
/// previous holder died holding it.
#[must_use = "a wait that timed out or whose lock's holder died may need handling"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitTimeoutResult {
    timed_out: bool,
    acquired: Acquired,
}

impl WaitTimeoutResult {
    /// Whether the wait ended because its time was up (for
    /// [`Condition::wait_for_timeout`]: the predicate was still false).
    pub fn timed_out(&self) -> bool {
        self.timed_out
    }

    /// How the lock was taken back: [`Acquired::OwnerDied`] if its
    /// previous holder died holding it.
    pub fn acquired(&self) -> Acquired {
        self.acquired
    }

    /// The pid of the lock's previous holder if it died holding the lock.
    pub fn owner_died(&self) -> Option<i32> {
        self.acquired.owner_died()
    }
}

/// A condition variable shared by any number of processes (Python's
/// `multiprocessing.Condition`).
///
/// It is used with its lock held: take the lock ([`Condition::lock`] or
/// [`Condition::acquire`]), check the shared state, and [`Condition::wait`]
/// (which releases the lock while it sleeps and takes it back before it
/// returns) until another process changes the state and calls
/// [`Condition::notify`]. Waiting or notifying without holding the lock is
/// [`Error::InvalidState`]. [`Condition::wait_for`] loops on a predicate.
///
/// A wait returns how it took the lock back, as a lock's acquire does:
/// [`Acquired::OwnerDied`] if the lock's holder died holding it (the timed
/// forms return a [`WaitTimeoutResult`] that says this and whether the
/// time ran out). A holder's death also wakes a waiter, which no notify
/// would otherwise ever reach.
///
/// One type, two flavours, as for [`Lock`](crate::Lock): a condition from
/// [`Condition::new`], a local `Manager` or [`Condition::with_lock`] over a
/// shared-memory lock lives in shared memory; one from a connected
/// `BaseManager` (or `with_lock` over a lock such a manager keeps) is kept
/// by its server, over a lock of that server. With the `redis` feature,
/// `RedisManager::condition(name)` (or `condition_with(name, lock)` over a
/// Redis lock) gives a third, whose waiters wait in Redis. All pass to
/// children, travel inside messages and clone alike.
///
/// A waiter that dies while it waits: in shared memory it stays counted,
/// so a later notify may release one live waiter more than asked (a
/// spurious wake-up, never a lost one); a server forgets it when its
/// connection ends, and hands a notify it had not taken yet to the next
/// waiter. [`Condition::wait_for`] re-checks the state and is unaffected
/// either way. A Redis condition's waiter holds a ticket with a lease:
/// a notify skips the tickets of dead waiters, and one that reached a
/// waiter that died before it woke passes on to a live one. A server-kept
/// or Redis condition wakes all its waiters when its
/// lock's holder dies; a shared-memory one, the waiters that notice it
/// first (each checks between its 100 ms sleep slices).
///
/// ```
/// use multiproc::{Condition, Value};
///
/// let cond = Condition::new().unwrap();
/// let items = Value::new(0u32).unwrap();
/// // A producer (here: the same thread) adds an item and notifies.
/// {
///     let _g = cond.lock().unwrap();
///     *items.lock().unwrap() += 1;
///     cond.notify(1).unwrap();
/// }
/// // A consumer waits until there is something to take.
/// let _g = cond.lock().unwrap();
/// let acquired = cond.wait_for(|| items.get() > 0).unwrap();
/// assert_eq!(acquired, multiproc::Acquired::Clean); // no holder died meanwhile
/// ```
#[derive(Clone)]
pub struct Condition {
    flavor: CondFlavor,
}

/// Where a [`Condition`] lives.
#[derive(Clone)]
enum CondFlavor {
    /// A futex sequence counter and waiter counts in a shared segment.
    Shm(ShmCondition),
    /// An object of a TCP manager's server.
    Remote(RemoteCondition),
    /// Waiter tickets in Redis, over a Redis lock.
    #[cfg(feature = "redis")]
    Redis(crate::redis::RedisCondition),
}

/// The shared-memory flavour: the segment and the lock.
#[derive(Clone)]
struct ShmCondition {
    obj: ShmObject<CondState>,
    lock: ConditionLock,
}

impl std::fmt::Debug for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.flavor {
            CondFlavor::Shm(c) => f.debug_struct("Condition").field("lock", &c.lock).finish(),
            CondFlavor::Remote(r) => f
                .debug_struct("Condition")
                .field("proxy", r.core())
                .field("lock", r.lock())
                .finish(),
            #[cfg(feature = "redis")]
            CondFlavor::Redis(r) => f
                .debug_struct("Condition")
                .field("redis", r.object())
                .field("lock", r.lock())
                .finish(),
        }
    }
}

impl Condition {
    /// A new condition with its own [`RLock`] (as Python's `Condition()`).
    pub fn new() -> Result<Condition> {
        let obj = Self::create(OWN_RLOCK, None)?;
        let lock = RLock::from_parts(obj.clone(), |s: &CondState| &s.own_lock);
        Ok(Condition::shm(obj, ConditionLock::RLock(lock)))
    }

    fn shm(obj: ShmObject<CondState>, lock: ConditionLock) -> Condition {
        Condition {
            flavor: CondFlavor::Shm(ShmCondition { obj, lock }),
        }
    }

    /// The remote flavour.
    pub(crate) fn remote(r: RemoteCondition) -> Condition {
        Condition {
            flavor: CondFlavor::Remote(r),
        }
    }

    /// The Redis flavour.
    #[cfg(feature = "redis")]
    pub(crate) fn from_redis(r: crate::redis::RedisCondition) -> Condition {
        Condition {
            flavor: CondFlavor::Redis(r),
        }
    }

    /// The layout of a new condition with its own [`RLock`], for a manager
    /// server to create (see [`Value::spec`](crate::Value::spec)).
    #[doc(hidden)]
    pub fn spec() -> ShmSpec {
        // SAFETY: CondState is atomics and integers only; all-zero is a
        // condition over its own (unlocked) RLock.
        unsafe { ShmSpec::zeroed::<CondState>(Kind::Condition, 0, 0, |_| {}) }
    }

    /// A new condition over an existing [`Lock`] or [`RLock`], which other
    /// code may also use directly (Python's `Condition(lock)`). Over a lock
    /// a TCP manager keeps, the condition is kept by that manager's server
    /// too (Python's `manager.Condition(lock)`); over a shared-memory lock,
    /// it lives in a segment of its own. A condition over a lock kept in
    /// Redis is named, as every Redis object: `RedisManager::condition_with`
    /// makes one (here: [`Error::InvalidArgument`]).
    pub fn with_lock(lock: impl Into<ConditionLock>) -> Result<Condition> {
        let lock = lock.into();
        if lock.is_redis() {
            return Err(Error::InvalidArgument(
                "a condition over a lock kept in Redis is named: use RedisManager::condition_with"
                    .into(),
            ));
        }
        if let Some(core) = lock.remote_core() {
            let object = core.object();
            let r = RemoteCondition::create(lock.clone(), object, core)?;
            return Ok(Condition::remote(r));
        }
        let kind = match lock {
            ConditionLock::Lock(_) => EXTERNAL_LOCK,
            ConditionLock::RLock(_) => EXTERNAL_RLOCK,
        };
        let repr = lock.to_repr()?;
        let obj = Self::create(kind, Some(&repr))?;
        Ok(Condition::shm(obj, lock))
    }

    /// Creates the segment; `lock` names an external lock.
    fn create(kind: u32, lock: Option<&HandleRepr>) -> Result<ShmObject<CondState>> {
        let (id, offset, extra) = lock.map_or((0, 0, 0), |l| (l.id, l.offset, l.extra));
        ShmObject::create(Kind::Condition, 0, 0, |state: *mut CondState, _| {
            // SAFETY: `create` hands us aligned, writable memory for one CondState.
            unsafe {
                state.write(CondState {
                    lock_kind: AtomicU32::new(kind),
                    lock_id: AtomicU64::new(id),
                    lock_offset: AtomicU64::new(offset),
                    lock_extra: AtomicU64::new(extra),
                    ..CondState::default()
                })
            }
        })
    }

    #[cfg(test)]
    fn state(&self) -> &CondState {
        match &self.flavor {
            CondFlavor::Shm(c) => c.obj.state(),
            _ => unreachable!("a test asked a remote condition for its segment"),
        }
    }

    /// The lock under this condition (of the same flavour).
    pub fn get_lock(&self) -> &ConditionLock {
        match &self.flavor {
            CondFlavor::Shm(c) => &c.lock,
            CondFlavor::Remote(r) => r.lock(),
            #[cfg(feature = "redis")]
            CondFlavor::Redis(r) => r.lock(),
        }
    }

    /// Blocks until the lock is held.
    pub fn acquire(&self) -> Result<Acquired> {
        self.get_lock().acquire(Deadline::Never)
    }

    /// Takes the lock if it is free; `Err(WouldBlock)` otherwise.
    pub fn try_acquire(&self) -> Result<Acquired> {
        self.get_lock().acquire(Deadline::Now).map_err(|e| match e {
            Error::Timeout(_) => Error::WouldBlock,
            e => e,
        })
    }

    /// Waits at most `timeout` for the lock.
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<Acquired> {
        crate::deadline::timed(self.get_lock().acquire(Deadline::after(timeout)), timeout)
    }

    /// Releases the lock (one level of an RLock).
    pub fn release(&self) -> Result<()> {
        self.get_lock().release()
    }

    /// Blocks until the lock is held and returns a guard that releases it.
    pub fn lock(&self) -> Result<ConditionGuard<'_>> {
        self.acquire().map(|a| ConditionGuard::new(self, a))
    }

    /// The guard form of [`Condition::try_acquire`].
    pub fn try_lock(&self) -> Result<ConditionGuard<'_>> {
        self.try_acquire().map(|a| ConditionGuard::new(self, a))
    }

    /// The guard form of [`Condition::acquire_timeout`].
    pub fn lock_timeout(&self, timeout: Duration) -> Result<ConditionGuard<'_>> {
        self.acquire_timeout(timeout)
            .map(|a| ConditionGuard::new(self, a))
    }

    /// Releases the lock, sleeps until notified (or the lock's holder
    /// died), and takes the lock back, as deep as it was held; returns how
    /// it was taken back ([`Acquired::OwnerDied`] if its holder died).
    ///
    /// On a condition a manager created, fails with `Error::ManagerGone`
    /// (holding the lock again, for a local manager) within about 100 ms of
    /// the manager's death.
    pub fn wait(&self) -> Result<Acquired> {
        self.wait_deadline(Deadline::Never).map(|w| w.acquired)
    }

    /// As [`Condition::wait`], for at most `timeout`. The lock is held
    /// again either way, as Python's `wait(timeout)` does; the result says
    /// whether the time ran out (Python's `False`) and how the lock was
    /// taken back.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<WaitTimeoutResult> {
        self.wait_deadline(Deadline::after(timeout))
    }

    fn wait_deadline(&self, deadline: Deadline) -> Result<WaitTimeoutResult> {
        match &self.flavor {
            CondFlavor::Shm(c) => c.wait_deadline(deadline),
            CondFlavor::Remote(r) => {
                let (woken, acquired) = r.wait_deadline(deadline)?;
                Ok(WaitTimeoutResult {
                    timed_out: !woken,
                    acquired,
                })
            }
            #[cfg(feature = "redis")]
            CondFlavor::Redis(r) => {
                let (woken, acquired) = r.wait_deadline(deadline)?;
                Ok(WaitTimeoutResult {
                    timed_out: !woken,
                    acquired,
                })
            }
        }
    }

    /// Waits until `predicate` (checked with the lock held) returns true;
    /// returns how the lock was last taken back
    /// ([`Acquired::OwnerDied`] if any wait took it from a dead holder).
    /// A caller that does not hold the lock gets `InvalidState` (from a
    /// remote condition, whose server checks, only once it would wait: a
    /// predicate already true returns at once).
    pub fn wait_for(&self, mut predicate: impl FnMut() -> bool) -> Result<Acquired> {
        self.wait_for_deadline(&mut predicate, Deadline::Never)
            .map(|w| w.acquired)
    }

    /// As [`Condition::wait_for`], for at most `timeout`; the result has
    /// timed out if the predicate was still false (Python's `wait_for`
    /// returning `False`).
    pub fn wait_for_timeout(
        &self,
        mut predicate: impl FnMut() -> bool,
        timeout: Duration,
    ) -> Result<WaitTimeoutResult> {
        self.wait_for_deadline(&mut predicate, Deadline::after(timeout))
    }

    fn wait_for_deadline(
        &self,
        predicate: &mut dyn FnMut() -> bool,
        deadline: Deadline,
    ) -> Result<WaitTimeoutResult> {
        // A remote or Redis condition checks the holder on the first wait.
        if let CondFlavor::Shm(c) = &self.flavor
            && !c.lock.is_held()
        {
            return Err(Error::InvalidState(
                "wait_for on a condition whose lock the caller does not hold".into(),
            ));
        }
        let mut acquired = Acquired::Clean;
        loop {
            if predicate() {
                return Ok(WaitTimeoutResult {
                    timed_out: false,
                    acquired,
                });
            }
            if deadline.expired() {
                return Ok(WaitTimeoutResult {
                    timed_out: true,
                    acquired,
                });
            }
            let w = self.wait_deadline(deadline)?;
            if w.acquired != Acquired::Clean {
                acquired = w.acquired;
            }
        }
    }

    /// Wakes up to `n` of the processes (or threads) waiting now.
    pub fn notify(&self, n: usize) -> Result<()> {
        self.notify_up_to(n as u64)
    }

    /// Wakes every process (or thread) waiting now.
    pub fn notify_all(&self) -> Result<()> {
        self.notify_up_to(u64::MAX)
    }

    fn notify_up_to(&self, n: u64) -> Result<()> {
        match &self.flavor {
            CondFlavor::Shm(c) => {
                if !c.lock.is_held() {
                    return Err(Error::InvalidState(
                        "notify on a condition whose lock the caller does not hold".into(),
                    ));
                }
                c.obj.state().notify(n);
                Ok(())
            }
            CondFlavor::Remote(r) => r.notify(n),
            #[cfg(feature = "redis")]
            CondFlavor::Redis(r) => r.notify(n),
        }
    }
}

impl ShmCondition {
    fn wait_deadline(&self, deadline: Deadline) -> Result<WaitTimeoutResult> {
        if !self.lock.is_held() {
            return Err(Error::InvalidState(
                "wait on a condition whose lock the caller does not hold".into(),
            ));
        }
        let state = self.obj.state();
        // Register while the lock is held, so a notify after our release sees us.
        state.counts.fetch_add(ONE_WAITER, Ordering::SeqCst);
        let registered_at = state.seq.load(Ordering::SeqCst);
        let saved = match self.lock.release_save() {
            Ok(saved) => saved,
            Err(e) => {
                state.leave(registered_at);
                return Err(e);
            }
        };
        let slept = state.sleep_until_notified(
            registered_at,
            deadline,
            || self.obj.check_owner(),
            || self.lock.holder_died(),
        );
        let acquired = self.lock.acquire_restore(saved);
        let mut notified = matches!(slept, Ok(Slept::Notified));
        if !notified {
            notified = state.leave(registered_at);
        }
        // The manager that owns the condition died: the lock is held again,
        // as after any wait, and the caller learns why the wait ended.
        let slept = slept?;
        Ok(WaitTimeoutResult {
            timed_out: slept == Slept::TimedOut && !notified,
            acquired,
        })
    }
}

/// Holds a [`Condition`]'s lock; releases it when dropped.
///
/// Not `Send`: an RLock may only be released by the thread that took it.
#[must_use = "the lock is released when the guard is dropped"]
pub struct ConditionGuard<'a> {
    cond: &'a Condition,
    acquired: Acquired,
    _not_send: PhantomData<*const ()>,
}

impl<'a> ConditionGuard<'a> {
    fn new(cond: &'a Condition, acquired: Acquired) -> Self {
        ConditionGuard {
            cond,
            acquired,
            _not_send: PhantomData,
        }
    }

    /// The pid of the previous holder if it died holding the lock.
    pub fn owner_died(&self) -> Option<i32> {
        self.acquired.owner_died()
    }
}

impl std::fmt::Debug for ConditionGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConditionGuard")
            .field("owner_died", &self.owner_died())
            .finish()
    }
}

impl Drop for ConditionGuard<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.cond.release() {
            tracing::warn!("condition guard could not release its lock: {e}");
        }
    }
}

/// The shared-memory form: a condition encodes as its own segment; an
/// external lock travels beside it: the segment names the lock's segment
/// id, offset and tag, and `extra` carries the sender's descriptor number
/// for it (whose descriptor is also collected for spawn, like any handle's).
impl ShareHandle for Condition {
    fn to_repr(&self) -> Result<HandleRepr> {
        let CondFlavor::Shm(c) = &self.flavor else {
            return Err(Error::InvalidArgument(
                "a condition a remote manager or Redis keeps has no shared segment".into(),
            ));
        };
        let mut repr = c.obj.to_repr()?;
        if c.obj.state().lock_kind.load(Ordering::Relaxed) != OWN_RLOCK {
            repr.extra = c.lock.to_repr()?.fd as u32 as u64;
        }
        Ok(repr)
    }

    fn from_repr(repr: &HandleRepr) -> Result<Self> {
        let obj: ShmObject<CondState> = ShmObject::open(repr, Kind::Condition, 0, "Condition")?;
        let state = obj.state();
        let lock_repr = HandleRepr {
            id: state.lock_id.load(Ordering::Relaxed),
            pid: repr.pid,
            fd: repr.extra as u32 as i32,
            offset: state.lock_offset.load(Ordering::Relaxed),
            extra: state.lock_extra.load(Ordering::Relaxed),
        };
        let lock = match state.lock_kind.load(Ordering::Relaxed) {
            OWN_RLOCK => {
                ConditionLock::RLock(RLock::from_parts(obj.clone(), |s: &CondState| &s.own_lock))
            }
            EXTERNAL_LOCK => ConditionLock::Lock(Lock::from_repr(&lock_repr)?),
            EXTERNAL_RLOCK => ConditionLock::RLock(RLock::from_repr(&lock_repr)?),
            other => {
                return Err(Error::Protocol(format!(
                    "condition names an unknown lock kind {other}"
                )));
            }
        };
        Ok(Condition::shm(obj, lock))
    }
}

/// A remote condition encodes as its server object; the decoder asks the
/// server for its lock.
impl FlavoredHandle for Condition {
    fn to_flavor_repr(&self) -> Result<FlavorRepr> {
        match &self.flavor {
            CondFlavor::Shm(_) => self.to_repr().map(FlavorRepr::Shm),
            CondFlavor::Remote(r) => r.core().to_repr().map(FlavorRepr::Remote),
            #[cfg(feature = "redis")]
            CondFlavor::Redis(r) => Ok(FlavorRepr::Redis(r.object().to_repr())),
        }
    }

    fn from_flavor_repr(repr: &FlavorRepr) -> Result<Self> {
        match repr {
            FlavorRepr::Shm(h) => <Condition as ShareHandle>::from_repr(h),
            FlavorRepr::Remote(p) => {
                ProxyCore::from_repr(p, Condition::remote_tag()).and_then(Condition::from_remote)
            }
            #[cfg(feature = "redis")]
            FlavorRepr::Redis(r) => {
                crate::redis::RedisCondition::from_repr(r).map(Condition::from_redis)
            }
            #[cfg(not(feature = "redis"))]
            FlavorRepr::Redis(_) => Err(crate::handle::without_redis()),
        }
    }
}

crate::impl_flavored_handle!(impl<> for Condition);

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn both_kinds() -> Vec<Condition> {
        vec![
            Condition::new().unwrap(),
            Condition::with_lock(Lock::new().unwrap()).unwrap(),
            Condition::with_lock(RLock::new().unwrap()).unwrap(),
        ]
    }

    #[test]
    fn a_guard_has_debug() {
        for c in both_kinds() {
            let g = c.lock().unwrap();
            assert_eq!(format!("{g:?}"), "ConditionGuard { owner_died: None }");
        }
    }

    #[test]
    fn wait_and_notify_need_the_lock() {
        for c in both_kinds() {
            assert!(matches!(c.wait(), Err(Error::InvalidState(_))));
            assert!(matches!(
                c.wait_timeout(Duration::ZERO),
                Err(Error::InvalidState(_))
            ));
            assert!(matches!(c.wait_for(|| true), Err(Error::InvalidState(_))));
            assert!(matches!(c.notify(1), Err(Error::InvalidState(_))));
            assert!(matches!(c.notify_all(), Err(Error::InvalidState(_))));
            assert_eq!(c.state().counts.load(Ordering::Relaxed), 0);
        }
    }

    #[test]
    fn a_timed_out_wait_holds_the_lock_again() {
        for c in both_kinds() {
            let _g = c.lock().unwrap();
            assert!(c.wait_timeout(Duration::ZERO).unwrap().timed_out());
            let w = c.wait_timeout(Duration::from_millis(5)).unwrap();
            assert!(w.timed_out());
            assert_eq!(w.acquired(), Acquired::Clean);
            assert!(
                c.wait_for_timeout(|| false, Duration::from_millis(5))
                    .unwrap()
                    .timed_out()
            );
            assert!(
                !c.wait_for_timeout(|| true, Duration::ZERO)
                    .unwrap()
                    .timed_out()
            );
            // Still held: notify is allowed, and nobody is registered.
            c.notify_all().unwrap();
            assert_eq!(c.state().counts.load(Ordering::Relaxed), 0);
        }
    }

    #[test]
    fn wait_restores_the_recursion_count() {
        for c in [
            Condition::new().unwrap(),
            Condition::with_lock(RLock::new().unwrap()).unwrap(),
        ] {
            let c = Arc::new(c);
            let ConditionLock::RLock(lock) = c.get_lock().clone() else {
                unreachable!()
            };
            let c2 = c.clone();
            let notifier = std::thread::spawn(move || {
                // The waiter registers while it holds the lock, before it sleeps.
                while c2.state().counts.load(Ordering::SeqCst) >> 32 == 0 {
                    std::thread::yield_now();
                }
                let _g = c2.lock().unwrap();
                c2.notify_all().unwrap();
            });
            let a = c.lock().unwrap();
            let b = c.lock().unwrap();
            let d = c.lock().unwrap();
            assert!(!c.wait_timeout(Duration::from_secs(20)).unwrap().timed_out());
            assert_eq!(lock.recursion_count().unwrap(), 3);
            drop((a, b, d));
            assert!(!lock.is_locked().unwrap());
            notifier.join().unwrap();
        }
    }

    #[test]
    fn notify_releases_at_most_n() {
        let c = Arc::new(Condition::new().unwrap());
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || {
                    let _g = c.lock().unwrap();
                    !c.wait_timeout(Duration::from_secs(20)).unwrap().timed_out()
                })
            })
            .collect();
        // Wait until all three are registered (the count is only changed under the lock).
        while c.state().counts.load(Ordering::SeqCst) >> 32 != 3 {
            std::thread::yield_now();
        }
        {
            let _g = c.lock().unwrap();
            c.notify(2).unwrap();
        }
        // Two leave; the third is still registered until a second notify.
        while c.state().counts.load(Ordering::SeqCst) != ONE_WAITER {
            std::thread::yield_now();
        }
        {
            let _g = c.lock().unwrap();
            c.notify(5).unwrap();
        }
        for w in waiters {
            assert!(w.join().unwrap());
        }
        assert_eq!(c.state().counts.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_later_waiter_cannot_take_an_earlier_notify() {
        let s = CondState::default();
        s.counts.store(ONE_WAITER, Ordering::SeqCst);
        let early = s.seq.load(Ordering::SeqCst);
        s.notify(1);
        // A waiter registered after the notify sees the bumped counter.
        s.counts.fetch_add(ONE_WAITER, Ordering::SeqCst);
        let late = s.seq.load(Ordering::SeqCst);
        assert_eq!(
            s.sleep_until_notified(late, Deadline::Now, || Ok(()), || false)
                .unwrap(),
            Slept::TimedOut
        );
        assert!(!s.leave(late));
        assert_eq!(
            s.sleep_until_notified(early, Deadline::Now, || Ok(()), || false)
                .unwrap(),
            Slept::Notified
        );
        assert_eq!(s.counts.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn handle_roundtrip_keeps_the_lock() {
        use crate::Shareable;
        let lock = Lock::new().unwrap();
        let c = Condition::with_lock(lock.clone()).unwrap();
        let back = Condition::decode(&c.encode().unwrap()).unwrap();
        let _g = back.lock().unwrap();
        assert!(lock.is_locked().unwrap());
        back.notify(1).unwrap();
        let own = Condition::new().unwrap();
        let back = Condition::decode(&own.encode().unwrap()).unwrap();
        let _g = own.lock().unwrap();
        assert!(matches!(back.get_lock(), ConditionLock::RLock(l) if l.is_owned().unwrap()));
    }
}
