//! The remote flavour of the sync primitives: locks, semaphores, events and
//! barriers a manager server keeps for clients that reach it over TCP.
//!
//! [`Lock`](crate::Lock), [`RLock`](crate::RLock),
//! [`Condition`](crate::Condition), [`Event`](crate::Event), the semaphores
//! and [`Barrier`](crate::Barrier) hold a [`RemoteLock`], [`RemoteRLock`],
//! [`RemoteCondition`], [`RemoteEvent`], [`RemoteSemaphore`] or
//! [`RemoteBarrier`] as their remote flavour. Every call asks the server (a lost
//! server is [`Error::ManagerGone`]). A call that waits does so in the server, on a
//! connection of its own, so it never holds up the process's other proxies.
//! A lock whose holder's connection ends (its process died, or its host
//! vanished) is released by the server, and the next acquirer is told
//! ([`Acquired::OwnerDied`]).

use std::time::Duration;

use std::sync::Arc;

use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::manager::ServerAddress;
use crate::manager::client::{Connection, unexpected};
use crate::manager::core::ProxyRepr;
use crate::manager::core::{
    Args, ProxyCore, RemoteFlavor, TypeTag, read_bool, read_len, read_unit,
};
use crate::manager::protocol::{ArchivedResponse, Blob, Method, ObjectId, u64_arg};
use crate::sync::ConditionLock;
use crate::sync::raw_lock::Acquired;
use crate::sys;

/// The remote flavour of a [`Lock`](crate::Lock): one kept by a manager
/// server. Any process may release it, as with Python's `Lock`.
#[derive(Clone, Debug)]
pub(crate) struct RemoteLock {
    core: Arc<ProxyCore>,
}

impl RemoteFlavor for crate::Lock {
    fn remote_tag() -> TypeTag {
        // The name proxies of earlier releases used: servers and clients agree.
        TypeTag::new("multiproc::LockProxy".into())
    }
    fn from_remote(core: ProxyCore) -> Result<Self> {
        Ok(crate::Lock::remote(RemoteLock {
            core: Arc::new(core),
        }))
    }
}

impl RemoteLock {
    pub(crate) fn core(&self) -> &ProxyCore {
        &self.core
    }
}

/// The remote flavour of an [`Event`](crate::Event): one kept by a manager server.
#[derive(Clone, Debug)]
pub(crate) struct RemoteEvent {
    core: Arc<ProxyCore>,
}

impl RemoteFlavor for crate::Event {
    fn remote_tag() -> TypeTag {
        TypeTag::new("multiproc::EventProxy".into())
    }
    fn from_remote(core: ProxyCore) -> Result<Self> {
        Ok(crate::Event::remote(RemoteEvent {
            core: Arc::new(core),
        }))
    }
}

impl RemoteEvent {
    pub(crate) fn core(&self) -> &ProxyCore {
        &self.core
    }
}
/// The remote flavour of a [`Semaphore`](crate::Semaphore) or a
/// [`BoundedSemaphore`](crate::BoundedSemaphore): one a manager server keeps
/// (which enforces a bounded one's bound).
#[derive(Clone, Debug)]
pub(crate) struct RemoteSemaphore {
    core: Arc<ProxyCore>,
}

impl RemoteFlavor for crate::Semaphore {
    fn remote_tag() -> TypeTag {
        TypeTag::new("multiproc::SemaphoreProxy".into())
    }
    fn from_remote(core: ProxyCore) -> Result<Self> {
        Ok(crate::Semaphore::remote(RemoteSemaphore {
            core: Arc::new(core),
        }))
    }
}

impl RemoteFlavor for crate::BoundedSemaphore {
    fn remote_tag() -> TypeTag {
        TypeTag::new("multiproc::BoundedSemaphoreProxy".into())
    }
    fn from_remote(core: ProxyCore) -> Result<Self> {
        Ok(crate::BoundedSemaphore::remote(RemoteSemaphore {
            core: Arc::new(core),
        }))
    }
}

/// The remote flavour of a [`Barrier`](crate::Barrier): one a manager server keeps.
#[derive(Clone, Debug)]
pub(crate) struct RemoteBarrier {
    core: Arc<ProxyCore>,
}

impl RemoteFlavor for crate::Barrier {
    fn remote_tag() -> TypeTag {
        TypeTag::new("multiproc::BarrierProxy".into())
    }
    fn from_remote(core: ProxyCore) -> Result<Self> {
        Ok(crate::Barrier::remote(RemoteBarrier {
            core: Arc::new(core),
        }))
    }
}

impl RemoteBarrier {
    pub(crate) fn core(&self) -> &ProxyCore {
        &self.core
    }
}

/// The remote flavour of an [`RLock`](crate::RLock): one kept by a manager
/// server, owned by one thread of one client process (the server knows the
/// thread by its id, the process by its connection).
#[derive(Clone, Debug)]
pub(crate) struct RemoteRLock {
    core: Arc<ProxyCore>,
}

impl RemoteFlavor for crate::RLock {
    fn remote_tag() -> TypeTag {
        TypeTag::new(crate::manager::protocol::RLOCK_TAG.into())
    }
    fn from_remote(core: ProxyCore) -> Result<Self> {
        Ok(crate::RLock::remote(RemoteRLock {
            core: Arc::new(core),
        }))
    }
}

/// The remote flavour of a [`Condition`](crate::Condition): one kept by a
/// manager server over a lock of the same server, which `lock` is a
/// handle to.
#[derive(Clone, Debug)]
pub(crate) struct RemoteCondition {
    core: Arc<ProxyCore>,
    lock: ConditionLock,
}

impl RemoteFlavor for crate::Condition {
    fn remote_tag() -> TypeTag {
        TypeTag::new("multiproc::ConditionProxy".into())
    }
    /// Asks the server which lock the condition uses and attaches to it.
    fn from_remote(core: ProxyCore) -> Result<Self> {
        let (object, recursive) = core.call(Method::CondLock, Args::default(), read_lock_of)?;
        let server = *core.conn()?.server();
        let lock = if recursive {
            ConditionLock::RLock(attach(server, object)?)
        } else {
            ConditionLock::Lock(attach(server, object)?)
        };
        Ok(crate::Condition::remote(RemoteCondition {
            core: Arc::new(core),
            lock,
        }))
    }
}

/// A handle to `object` of `server`, which this process reaches already
/// (the condition it belongs to holds a reference to it meanwhile).
fn attach<H: RemoteFlavor>(server: ServerAddress, object: ObjectId) -> Result<H> {
    let tag = H::remote_tag();
    let repr = ProxyRepr {
        server,
        object,
        fingerprint: tag.fingerprint,
        type_name: tag.name.clone(),
        pin: 0,
        authkey: Vec::new(),
    };
    ProxyCore::from_repr(&repr, tag).and_then(H::from_remote)
}

fn read_lock_of(_: &Connection, r: &ArchivedResponse<'_>) -> Result<(ObjectId, bool)> {
    match r {
        ArchivedResponse::LockOf { object, recursive } => Ok((object.to_native(), *recursive)),
        _ => Err(unexpected()),
    }
}

fn read_waiting(_: &Connection, r: &ArchivedResponse<'_>) -> Result<(u64, u64)> {
    match r {
        ArchivedResponse::Waiting { ticket, saved } => Ok((ticket.to_native(), saved.to_native())),
        _ => Err(unexpected()),
    }
}

/// The calling thread, as the server records an RLock's owner: its id,
/// unique among the live threads of this process (whose connection the
/// server tells apart from other processes').
fn this_thread() -> [u8; 8] {
    u64_arg(u64::from(sys::process::gettid() as u32))
}

fn read_acquired(_: &Connection, r: &ArchivedResponse<'_>) -> Result<Option<Acquired>> {
    match r {
        ArchivedResponse::Acquired { taken, lost_holder } => {
            Ok(taken.then(|| match lost_holder.as_ref() {
                Some(pid) => Acquired::OwnerDied {
                    pid: i32::try_from(pid.to_native()).unwrap_or(0),
                },
                None => Acquired::Clean,
            }))
        }
        _ => Err(unexpected()),
    }
}

fn wait_args<'a>() -> Args<'a> {
    Args::default()
}

/// The error for a deadline that ran out: `WouldBlock` for a `try_` call.
fn expired(deadline: Deadline) -> Error {
    match deadline {
        Deadline::Now => Error::WouldBlock,
        d => d.timeout_error(),
    }
}

impl RemoteLock {
    /// Takes the lock by `deadline` (`WouldBlock` for a try, `Timeout` after a wait).
    pub(crate) fn acquire_deadline(&self, deadline: Deadline) -> Result<Acquired> {
        let pid = i64::from(sys::process::getpid());
        loop {
            // Taken on the shared connection: the server releases the lock
            // if that connection ends (this process died) while holding it.
            let args = Args {
                index: pid,
                ..Args::default()
            };
            if let Some(a) = self
                .core
                .call(Method::LockTryAcquire, args, read_acquired)?
            {
                if let Acquired::OwnerDied { pid } = a {
                    tracing::warn!(pid, "a manager lock recovered from a holder that left");
                }
                return Ok(a);
            }
            if deadline.expired() {
                return Err(expired(deadline));
            }
            self.core
                .call_waiting(Method::LockWaitFree, wait_args(), deadline, read_bool)?;
        }
    }

    /// Releases the lock; releasing an unlocked lock is `Err(InvalidState)`.
    pub(crate) fn release(&self) -> Result<()> {
        self.core
            .call(Method::LockRelease, Args::default(), read_unit)
    }

    /// Whether some process holds the lock now.
    pub(crate) fn is_locked(&self) -> Result<bool> {
        self.core
            .call(Method::LockIsLocked, Args::default(), read_bool)
    }
}

impl RemoteSemaphore {
    pub(crate) fn core(&self) -> &ProxyCore {
        &self.core
    }

    /// Takes a unit by `deadline` (`WouldBlock` for a try, `Timeout` after a wait).
    pub(crate) fn acquire_deadline(&self, deadline: Deadline) -> Result<()> {
        loop {
            if self
                .core
                .call(Method::SemTryAcquire, Args::default(), read_bool)?
            {
                return Ok(());
            }
            if deadline.expired() {
                return Err(expired(deadline));
            }
            self.core
                .call_waiting(Method::SemWaitAvailable, wait_args(), deadline, read_bool)?;
        }
    }

    /// Gives a unit back.
    pub(crate) fn release(&self) -> Result<()> {
        self.core
            .call(Method::SemRelease, Args::default(), read_unit)
    }

    /// The number of free units now.
    pub(crate) fn get_value(&self) -> Result<u32> {
        self.core
            .call(Method::SemValue, Args::default(), read_len)
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
    }
}

impl RemoteEvent {
    /// Raises the flag, waking every waiter.
    pub(crate) fn set(&self) -> Result<()> {
        self.core.call(Method::EventSet, Args::default(), read_unit)
    }

    /// Lowers the flag.
    pub(crate) fn clear(&self) -> Result<()> {
        self.core
            .call(Method::EventClear, Args::default(), read_unit)
    }

    /// Whether the flag is raised.
    pub(crate) fn is_set(&self) -> Result<bool> {
        self.core
            .call(Method::EventIsSet, Args::default(), read_bool)
    }

    /// Waits for the flag until `deadline`; whether it was raised.
    pub(crate) fn wait_deadline(&self, deadline: Deadline) -> Result<bool> {
        self.core
            .call_waiting(Method::EventWait, wait_args(), deadline, read_bool)
    }
}

impl RemoteBarrier {
    /// Waits until all parties have arrived; returns this party's arrival
    /// index in `0..parties`. A party whose process leaves while waiting
    /// breaks the barrier for the others.
    pub(crate) fn wait(&self) -> Result<usize> {
        self.wait_deadline(Deadline::Never, false)
    }

    /// As [`RemoteBarrier::wait`], but breaks the barrier (`Err(BrokenBarrier)`
    /// for everyone) if the round is not complete within `timeout`, as Python does.
    pub(crate) fn wait_timeout(&self, timeout: Duration) -> Result<usize> {
        self.wait_deadline(Deadline::after(timeout), false)
    }

    /// Arrives only if this completes the round; otherwise `Err(WouldBlock)`
    /// without arriving or breaking anything.
    pub(crate) fn try_wait(&self) -> Result<usize> {
        self.wait_deadline(Deadline::Now, true)
    }

    fn wait_deadline(&self, deadline: Deadline, only_if_last: bool) -> Result<usize> {
        let args = Args {
            // Only `try_wait` arrives only if it completes the round; a
            // timed wait whose time is up (even a zero timeout) breaks the
            // barrier, as in Python.
            index: i64::from(only_if_last),
            ..Args::default()
        };
        self.core
            .call_waiting(Method::BarrierWait, args, deadline, read_len)
    }

    /// Breaks the barrier: waiting and future parties get `BrokenBarrier`.
    pub(crate) fn abort(&self) -> Result<()> {
        self.core
            .call(Method::BarrierAbort, Args::default(), read_unit)
    }

    /// Returns the barrier to its empty, unbroken state; parties waiting
    /// now get `BrokenBarrier`.
    pub(crate) fn reset(&self) -> Result<()> {
        self.core
            .call(Method::BarrierReset, Args::default(), read_unit)
    }

    /// The number of parties a round needs.
    pub(crate) fn parties(&self) -> Result<usize> {
        self.core
            .call(Method::BarrierParties, Args::default(), read_len)
    }

    /// The number of parties waiting now.
    pub(crate) fn n_waiting(&self) -> Result<usize> {
        self.core
            .call(Method::BarrierWaiting, Args::default(), read_len)
    }

    /// Whether the barrier is broken.
    pub(crate) fn broken(&self) -> Result<bool> {
        self.core
            .call(Method::BarrierBroken, Args::default(), read_bool)
    }
}

impl RemoteRLock {
    pub(crate) fn core(&self) -> &ProxyCore {
        &self.core
    }

    /// Takes the lock (or enters it again) by `deadline`.
    pub(crate) fn acquire_deadline(&self, deadline: Deadline) -> Result<Acquired> {
        self.take(deadline, None)
    }

    /// Takes the lock `count` deep, as a condition wait that released it
    /// held it; waits as long as it takes.
    pub(crate) fn acquire_restore(&self, count: u64) -> Result<Acquired> {
        self.take(Deadline::Never, Some(count))
    }

    fn take(&self, deadline: Deadline, restore: Option<u64>) -> Result<Acquired> {
        let pid = i64::from(sys::process::getpid());
        let thread = this_thread();
        let count = restore.map(u64_arg);
        loop {
            // Taken on the shared connection: the server releases the lock
            // if that connection ends (this process died) while holding it.
            let args = Args {
                index: pid,
                key: Some(Blob::plain(&thread)),
                value: count.as_ref().map(|c| Blob::plain(c)),
                ..Args::default()
            };
            if let Some(a) = self
                .core
                .call(Method::RLockTryAcquire, args, read_acquired)?
            {
                if let Acquired::OwnerDied { pid } = a {
                    tracing::warn!(pid, "a manager rlock recovered from a holder that left");
                }
                return Ok(a);
            }
            if deadline.expired() {
                return Err(expired(deadline));
            }
            self.core
                .call_waiting(Method::RLockWaitFree, wait_args(), deadline, read_bool)?;
        }
    }

    /// Releases one level; `Err(InvalidState)` if this thread does not hold it.
    pub(crate) fn release(&self) -> Result<()> {
        let thread = this_thread();
        let args = Args {
            key: Some(Blob::plain(&thread)),
            ..Args::default()
        };
        self.core.call(Method::RLockRelease, args, read_unit)
    }

    /// How deep this thread holds the lock (0: not at all).
    pub(crate) fn recursion_count(&self) -> Result<u32> {
        let thread = this_thread();
        let args = Args {
            key: Some(Blob::plain(&thread)),
            ..Args::default()
        };
        self.core
            .call(Method::RLockCount, args, read_len)
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// Whether some thread of some client holds the lock now.
    pub(crate) fn is_locked(&self) -> Result<bool> {
        self.core
            .call(Method::RLockIsLocked, Args::default(), read_bool)
    }
}

impl RemoteCondition {
    pub(crate) fn core(&self) -> &ProxyCore {
        &self.core
    }

    /// The condition's lock (a remote Lock or RLock of the same server).
    pub(crate) fn lock(&self) -> &ConditionLock {
        &self.lock
    }

    /// A new condition kept by the server of `lock` (a remote Lock or
    /// RLock), over that lock.
    pub(crate) fn create(lock: ConditionLock, object: ObjectId, core: &ProxyCore) -> Result<Self> {
        let conn = core.conn()?.into_owned();
        let core = ProxyCore::create_with(
            conn,
            crate::manager::ObjectKind::Condition,
            object,
            <crate::Condition as RemoteFlavor>::remote_tag(),
        )?;
        Ok(RemoteCondition {
            core: Arc::new(core),
            lock,
        })
    }

    /// Releases the lock, waits until notified or `deadline`, and takes the
    /// lock back (as deep as it was held), whatever ended the wait:
    /// (notified, how the lock was taken back).
    pub(crate) fn wait_deadline(&self, deadline: Deadline) -> Result<(bool, Acquired)> {
        let thread = this_thread();
        let args = Args {
            key: Some(Blob::plain(&thread)),
            ..Args::default()
        };
        // Registered and released in one step on the server, so a notify
        // after this returns finds this waiter.
        let (ticket, saved) = self
            .core
            .call(Method::CondPrepareWait, args, read_waiting)?;
        let args = Args {
            index: i64::try_from(ticket).unwrap_or(i64::MAX),
            ..Args::default()
        };
        let woken = self
            .core
            .call_waiting(Method::CondWait, args, deadline, read_bool);
        let acquired = match &self.lock {
            ConditionLock::Lock(l) => l.acquire_deadline(Deadline::Never),
            ConditionLock::RLock(l) => l.acquire_restore(saved),
        };
        let woken = woken?;
        Ok((woken, acquired?))
    }

    /// Wakes up to `n` waiters; the caller must hold the lock.
    pub(crate) fn notify(&self, n: u64) -> Result<()> {
        let thread = this_thread();
        let args = Args {
            index: i64::try_from(n).unwrap_or(i64::MAX),
            key: Some(Blob::plain(&thread)),
            ..Args::default()
        };
        self.core.call(Method::CondNotify, args, read_unit)
    }
}
