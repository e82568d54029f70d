//! Proxies to the locks, semaphores, events and barriers a server keeps for
//! clients that reach it over TCP (a [`RemoteManager`](crate::RemoteManager)).
//!
//! They mirror the local primitives (`multiproc::Lock`, `Event`, …), with
//! the same `x` / `try_x` / `x_timeout` forms, but every call asks the
//! server, so each returns a `Result` (a lost server is
//! [`Error::ManagerGone`]). A call that waits does so in the server, on a
//! connection of its own, so it never holds up the process's other proxies.
//! A lock whose holder's connection ends (its process died, or its host
//! vanished) is released by the server, and the next acquirer is told
//! ([`Acquired::OwnerDied`]).

use std::time::Duration;

use multiproc_runtime::__internal::sys;
use multiproc_runtime::deadline::Deadline;
use multiproc_runtime::manager::protocol::{ArchivedResponse, Method};
use multiproc_runtime::{Acquired, Error, Result};

use crate::client::{Connection, unexpected};
use crate::core::{Args, Proxy, ProxyCore, TypeTag, impl_proxy, read_bool, read_len, read_unit};

macro_rules! waitable_proxy {
    ($(#[$doc:meta])* $name:ident, $tag:literal) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name {
            core: std::sync::Arc<ProxyCore>,
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.core.fmt(f)
            }
        }

        impl Proxy for $name {
            fn core(&self) -> &ProxyCore {
                &self.core
            }
            fn from_core(core: ProxyCore) -> Self {
                $name {
                    core: std::sync::Arc::new(core),
                }
            }
            fn tag() -> TypeTag {
                TypeTag::new($tag.into())
            }
        }

        impl_proxy!(impl<> for $name);
    };
}

waitable_proxy!(
    /// A lock kept by a manager server (Python's `manager.Lock()` over TCP).
    ///
    /// Any process may release it, as with Python's `Lock`.
    LockProxy,
    "multiproc::LockProxy"
);
waitable_proxy!(
    /// A semaphore kept by a manager server.
    SemaphoreProxy,
    "multiproc::SemaphoreProxy"
);
waitable_proxy!(
    /// A semaphore kept by a manager server that may not be released above
    /// its initial value.
    BoundedSemaphoreProxy,
    "multiproc::BoundedSemaphoreProxy"
);
waitable_proxy!(
    /// An event kept by a manager server.
    EventProxy,
    "multiproc::EventProxy"
);
waitable_proxy!(
    /// A barrier kept by a manager server.
    BarrierProxy,
    "multiproc::BarrierProxy"
);

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

impl LockProxy {
    /// Blocks until the lock is held.
    pub fn acquire(&self) -> Result<Acquired> {
        self.acquire_deadline(Deadline::Never)
    }

    /// Takes the lock if it is free; `Err(WouldBlock)` otherwise.
    pub fn try_acquire(&self) -> Result<Acquired> {
        self.acquire_deadline(Deadline::Now)
    }

    /// Waits at most `timeout` for the lock; `Err(Timeout)` if it stays held.
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<Acquired> {
        self.acquire_deadline(Deadline::after(timeout))
    }

    fn acquire_deadline(&self, deadline: Deadline) -> Result<Acquired> {
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
    pub fn release(&self) -> Result<()> {
        self.core
            .call(Method::LockRelease, Args::default(), read_unit)
    }

    /// Blocks until the lock is held; the guard releases it.
    pub fn lock(&self) -> Result<LockProxyGuard<'_>> {
        self.acquire().map(|a| LockProxyGuard::new(self, a))
    }

    /// The guard form of [`LockProxy::try_acquire`].
    pub fn try_lock(&self) -> Result<LockProxyGuard<'_>> {
        self.try_acquire().map(|a| LockProxyGuard::new(self, a))
    }

    /// The guard form of [`LockProxy::acquire_timeout`].
    pub fn lock_timeout(&self, timeout: Duration) -> Result<LockProxyGuard<'_>> {
        self.acquire_timeout(timeout)
            .map(|a| LockProxyGuard::new(self, a))
    }

    /// Whether some process holds the lock now.
    pub fn is_locked(&self) -> Result<bool> {
        self.core
            .call(Method::LockIsLocked, Args::default(), read_bool)
    }
}

/// Holds a [`LockProxy`]; releases it when dropped (a failure to reach the
/// server then is logged: the server releases the lock itself once this
/// process's connection ends).
#[must_use = "the lock is released when the guard is dropped"]
pub struct LockProxyGuard<'a> {
    lock: &'a LockProxy,
    acquired: Acquired,
}

impl<'a> LockProxyGuard<'a> {
    fn new(lock: &'a LockProxy, acquired: Acquired) -> Self {
        LockProxyGuard { lock, acquired }
    }

    /// The pid of the previous holder if it left holding the lock.
    pub fn owner_died(&self) -> Option<i32> {
        self.acquired.owner_died()
    }
}

impl Drop for LockProxyGuard<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.lock.release() {
            tracing::warn!("cannot release a manager lock: {e}");
        }
    }
}

impl std::fmt::Debug for LockProxyGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockProxyGuard")
            .field("acquired", &self.acquired)
            .finish()
    }
}

/// The shared body of both semaphore proxies.
fn sem_acquire(core: &ProxyCore, deadline: Deadline) -> Result<()> {
    loop {
        if core.call(Method::SemTryAcquire, Args::default(), read_bool)? {
            return Ok(());
        }
        if deadline.expired() {
            return Err(expired(deadline));
        }
        core.call_waiting(Method::SemWaitAvailable, wait_args(), deadline, read_bool)?;
    }
}

macro_rules! semaphore_methods {
    ($name:ident) => {
        impl $name {
            /// Blocks until a unit is free and takes it.
            pub fn acquire(&self) -> Result<()> {
                sem_acquire(&self.core, Deadline::Never)
            }

            /// Takes a unit if one is free; `Err(WouldBlock)` otherwise.
            pub fn try_acquire(&self) -> Result<()> {
                sem_acquire(&self.core, Deadline::Now)
            }

            /// Waits at most `timeout` for a unit; `Err(Timeout)` otherwise.
            pub fn acquire_timeout(&self, timeout: Duration) -> Result<()> {
                sem_acquire(&self.core, Deadline::after(timeout))
            }

            /// Gives a unit back.
            pub fn release(&self) -> Result<()> {
                self.core
                    .call(Method::SemRelease, Args::default(), read_unit)
            }

            /// The number of free units now.
            pub fn get_value(&self) -> Result<u32> {
                self.core
                    .call(Method::SemValue, Args::default(), read_len)
                    .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
            }
        }
    };
}

semaphore_methods!(SemaphoreProxy);
semaphore_methods!(BoundedSemaphoreProxy);

impl EventProxy {
    /// Raises the flag, waking every waiter.
    pub fn set(&self) -> Result<()> {
        self.core.call(Method::EventSet, Args::default(), read_unit)
    }

    /// Lowers the flag.
    pub fn clear(&self) -> Result<()> {
        self.core
            .call(Method::EventClear, Args::default(), read_unit)
    }

    /// Whether the flag is raised.
    pub fn is_set(&self) -> Result<bool> {
        self.core
            .call(Method::EventIsSet, Args::default(), read_bool)
    }

    /// Blocks until the flag is raised.
    pub fn wait(&self) -> Result<()> {
        self.wait_deadline(Deadline::Never).map(|_| ())
    }

    /// Whether the flag is raised, without waiting.
    pub fn try_wait(&self) -> Result<bool> {
        self.is_set()
    }

    /// Waits at most `timeout` for the flag; returns whether it was raised
    /// (false on timeout, like Python's `wait(timeout)`).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool> {
        self.wait_deadline(Deadline::after(timeout))
    }

    fn wait_deadline(&self, deadline: Deadline) -> Result<bool> {
        self.core
            .call_waiting(Method::EventWait, wait_args(), deadline, read_bool)
    }
}

impl BarrierProxy {
    /// Waits until all parties have arrived; returns this party's arrival
    /// index in `0..parties`. A party whose process leaves while waiting
    /// breaks the barrier for the others.
    pub fn wait(&self) -> Result<usize> {
        self.wait_deadline(Deadline::Never, false)
    }

    /// As [`BarrierProxy::wait`], but breaks the barrier (`Err(BrokenBarrier)`
    /// for everyone) if the round is not complete within `timeout`, as Python does.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<usize> {
        self.wait_deadline(Deadline::after(timeout), false)
    }

    /// Arrives only if this completes the round; otherwise `Err(WouldBlock)`
    /// without arriving or breaking anything.
    pub fn try_wait(&self) -> Result<usize> {
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
    pub fn abort(&self) -> Result<()> {
        self.core
            .call(Method::BarrierAbort, Args::default(), read_unit)
    }

    /// Returns the barrier to its empty, unbroken state; parties waiting
    /// now get `BrokenBarrier`.
    pub fn reset(&self) -> Result<()> {
        self.core
            .call(Method::BarrierReset, Args::default(), read_unit)
    }

    /// The number of parties a round needs.
    pub fn parties(&self) -> Result<usize> {
        self.core
            .call(Method::BarrierParties, Args::default(), read_len)
    }

    /// The number of parties waiting now.
    pub fn n_waiting(&self) -> Result<usize> {
        self.core
            .call(Method::BarrierWaiting, Args::default(), read_len)
    }

    /// Whether the barrier is broken.
    pub fn broken(&self) -> Result<bool> {
        self.core
            .call(Method::BarrierBroken, Args::default(), read_bool)
    }
}
