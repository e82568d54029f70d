//! The remote flavour of the sync primitives: locks, semaphores, events and
//! barriers a manager server keeps for clients that reach it over TCP.
//!
//! [`Lock`](crate::Lock), [`Event`](crate::Event), the semaphores and
//! [`Barrier`](crate::Barrier) hold a [`RemoteLock`], [`RemoteEvent`],
//! [`RemoteSemaphore`] or [`RemoteBarrier`] as their remote flavour. Every call asks the server (a lost
//! server is [`Error::ManagerGone`]). A call that waits does so in the server, on a
//! connection of its own, so it never holds up the process's other proxies.
//! A lock whose holder's connection ends (its process died, or its host
//! vanished) is released by the server, and the next acquirer is told
//! ([`Acquired::OwnerDied`]).

use std::time::Duration;

use std::sync::Arc;

use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::manager::client::{Connection, unexpected};
use crate::manager::core::{
    Args, ProxyCore, RemoteFlavor, TypeTag, read_bool, read_len, read_unit,
};
use crate::manager::protocol::{ArchivedResponse, Method};
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
    fn from_remote(core: ProxyCore) -> Self {
        crate::Lock::remote(RemoteLock {
            core: Arc::new(core),
        })
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
    fn from_remote(core: ProxyCore) -> Self {
        crate::Event::remote(RemoteEvent {
            core: Arc::new(core),
        })
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
    fn from_remote(core: ProxyCore) -> Self {
        crate::Semaphore::remote(RemoteSemaphore {
            core: Arc::new(core),
        })
    }
}

impl RemoteFlavor for crate::BoundedSemaphore {
    fn remote_tag() -> TypeTag {
        TypeTag::new("multiproc::BoundedSemaphoreProxy".into())
    }
    fn from_remote(core: ProxyCore) -> Self {
        crate::BoundedSemaphore::remote(RemoteSemaphore {
            core: Arc::new(core),
        })
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
    fn from_remote(core: ProxyCore) -> Self {
        crate::Barrier::remote(RemoteBarrier {
            core: Arc::new(core),
        })
    }
}

impl RemoteBarrier {
    pub(crate) fn core(&self) -> &ProxyCore {
        &self.core
    }
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
