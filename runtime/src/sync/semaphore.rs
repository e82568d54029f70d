//! `Semaphore` and `BoundedSemaphore`: Python's counting semaphores, on a futex word.
//!
//! The value is the futex word itself; a sleeper counter beside it lets
//! `release` skip the wake syscall when nobody sleeps.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::handle::{FlavorRepr, FlavoredHandle, HandleRepr, ShareHandle};
use crate::manager::core::{ProxyCore, RemoteFlavor};
use crate::shm::{Kind, ShmObject, ShmSpec, fingerprint_str};
use crate::sync::park;
use crate::sync::remote::RemoteSemaphore;
use crate::sys::futex::WaitOutcome;

/// The shared state of a semaphore (`#[repr(C)]`, atomics only).
#[repr(C)]
#[derive(Debug)]
pub(crate) struct SemState {
    /// The value, and the futex word waiters sleep on while it is 0.
    value: AtomicU32,
    sleepers: AtomicU32,
    /// The largest value `release` may reach (fixed at creation).
    max: AtomicU32,
    _pad: u32,
}

impl SemState {
    #[inline]
    fn try_take(&self) -> bool {
        let mut value = self.value.load(Ordering::Relaxed);
        while value > 0 {
            match self.value.compare_exchange_weak(
                value,
                value - 1,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => value = now,
            }
        }
        false
    }

    /// Takes one unit, waiting until `deadline`; false if the deadline
    /// passed first. Between sleep slices `check` may end the wait with an
    /// error (a dead manager that owns the semaphore).
    fn acquire(&self, deadline: Deadline, check: impl Fn() -> Result<()>) -> Result<bool> {
        if self.try_take() {
            return Ok(true);
        }
        static ACQUIRE: park::SpinSite = park::SpinSite::new();
        if deadline != Deadline::Now
            && ACQUIRE.spin_until(|| self.value.load(Ordering::Relaxed) > 0 && self.try_take())
        {
            return Ok(true);
        }
        loop {
            // A woken sleeper always tries before it looks at the clock, so a
            // unit released to it is taken, not left behind.
            if self.try_take() {
                return Ok(true);
            }
            if deadline.expired() {
                return Ok(false);
            }
            let slice = Some(deadline.slice(park::LIVENESS_SLICE));
            if park::sleep(&self.value, 0, &self.sleepers, slice) == WaitOutcome::TimedOut {
                check()?;
            }
        }
    }

    fn release(&self) -> Result<()> {
        let max = self.max.load(Ordering::Relaxed);
        let mut value = self.value.load(Ordering::Relaxed);
        loop {
            if value >= max {
                return Err(Error::InvalidState(format!(
                    "semaphore released too many times (its value is at most {max})"
                )));
            }
            match self.value.compare_exchange_weak(
                value,
                value + 1,
                Ordering::SeqCst,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => value = now,
            }
        }
        park::wake(&self.value, &self.sleepers, 1);
        Ok(())
    }
}

fn create(value: u32, max: u32, name: &str) -> Result<ShmObject<SemState>> {
    if value > max {
        return Err(Error::InvalidArgument(format!(
            "semaphore value {value} exceeds its maximum {max}"
        )));
    }
    ShmObject::create(
        Kind::Semaphore,
        fingerprint_str(name),
        0,
        |state: *mut SemState, _| {
            // SAFETY: `create` hands us aligned, writable memory for one SemState.
            unsafe {
                state.write(SemState {
                    value: AtomicU32::new(value),
                    sleepers: AtomicU32::new(0),
                    max: AtomicU32::new(max),
                    _pad: 0,
                })
            }
        },
    )
}

/// The layout of a new semaphore (`value <= max`), for a manager server to create.
fn spec(value: u32, max: u32, name: &str) -> ShmSpec {
    // SAFETY: SemState is atomics and integers only.
    unsafe {
        ShmSpec::zeroed(Kind::Semaphore, fingerprint_str(name), 0, |s: &SemState| {
            s.value.store(value, Ordering::Relaxed);
            s.max.store(max, Ordering::Relaxed);
        })
    }
}

fn open(repr: &HandleRepr, name: &str) -> Result<ShmObject<SemState>> {
    ShmObject::open(repr, Kind::Semaphore, fingerprint_str(name), name)
}

/// The three acquire forms and the queries, shared by both semaphore kinds.
macro_rules! semaphore_methods {
    () => {
        /// Blocks until it can take one unit (decrement the value).
        pub fn acquire(&self) -> Result<()> {
            self.acquire_deadline(Deadline::Never)
        }

        /// Takes one unit if the value is above zero; `Err(WouldBlock)`
        /// otherwise. A remote one that cannot ask its server says so
        /// (`ManagerGone`), not `WouldBlock`.
        pub fn try_acquire(&self) -> Result<()> {
            self.acquire_deadline(Deadline::Now).map_err(|e| match e {
                Error::Timeout(_) => Error::WouldBlock,
                e => e,
            })
        }

        /// Waits at most `timeout` for a unit; `Err(Timeout)` if none came.
        pub fn acquire_timeout(&self, timeout: Duration) -> Result<()> {
            crate::deadline::timed(self.acquire_deadline(Deadline::after(timeout)), timeout)
        }

        fn acquire_deadline(&self, deadline: Deadline) -> Result<()> {
            match &self.flavor {
                SemFlavor::Shm(obj) => {
                    if obj.state().acquire(deadline, || obj.check_owner())? {
                        Ok(())
                    } else {
                        Err(deadline.timeout_error())
                    }
                }
                SemFlavor::Remote(r) => r.acquire_deadline(deadline),
                #[cfg(feature = "redis")]
                SemFlavor::Redis(r) => r.acquire_deadline(deadline),
            }
        }

        /// The current value (Python's `get_value()`); it may change at
        /// once. A remote semaphore asks its server, so this can fail.
        pub fn get_value(&self) -> Result<u32> {
            match &self.flavor {
                SemFlavor::Shm(obj) => Ok(obj.state().value.load(Ordering::Relaxed)),
                SemFlavor::Remote(r) => r.get_value(),
                #[cfg(feature = "redis")]
                SemFlavor::Redis(r) => r.get_value(),
            }
        }

        fn release_one(&self) -> Result<()> {
            match &self.flavor {
                SemFlavor::Shm(obj) => obj.state().release(),
                SemFlavor::Remote(r) => r.release(),
                #[cfg(feature = "redis")]
                SemFlavor::Redis(r) => r.release(),
            }
        }

        /// The remote flavour.
        pub(crate) fn remote(r: RemoteSemaphore) -> Self {
            Self {
                flavor: SemFlavor::Remote(r),
            }
        }

        /// The Redis flavour.
        #[cfg(feature = "redis")]
        pub(crate) fn from_redis(r: crate::redis::RedisSemaphore) -> Self {
            Self {
                flavor: SemFlavor::Redis(r),
            }
        }
    };
}

/// Where a semaphore lives.
#[derive(Clone)]
enum SemFlavor {
    /// A futex word in a shared segment.
    Shm(ShmObject<SemState>),
    /// An object of a TCP manager's server.
    Remote(RemoteSemaphore),
    /// A counter and a wake-up list in Redis.
    #[cfg(feature = "redis")]
    Redis(crate::redis::RedisSemaphore),
}

impl SemFlavor {
    fn fmt_remote(&self, name: &str, f: &mut std::fmt::Formatter<'_>) -> Option<std::fmt::Result> {
        match self {
            SemFlavor::Shm(_) => None,
            SemFlavor::Remote(r) => Some(f.debug_tuple(name).field(r.core()).finish()),
            #[cfg(feature = "redis")]
            SemFlavor::Redis(r) => Some(f.debug_tuple(name).field(r.object()).finish()),
        }
    }

    fn to_flavor_repr(&self) -> Result<FlavorRepr> {
        match self {
            SemFlavor::Shm(obj) => obj.to_repr().map(FlavorRepr::Shm),
            SemFlavor::Remote(r) => r.core().to_repr().map(FlavorRepr::Remote),
            #[cfg(feature = "redis")]
            SemFlavor::Redis(r) => Ok(FlavorRepr::Redis(r.object().to_repr())),
        }
    }

    fn to_repr(&self) -> Result<HandleRepr> {
        match self {
            SemFlavor::Shm(obj) => obj.to_repr(),
            SemFlavor::Remote(_) => Err(Error::InvalidArgument(
                "a semaphore a remote manager keeps has no shared segment".into(),
            )),
            #[cfg(feature = "redis")]
            SemFlavor::Redis(_) => Err(Error::InvalidArgument(
                "a semaphore kept in Redis has no shared segment".into(),
            )),
        }
    }
}

/// A counting semaphore shared by any number of processes (Python's
/// `multiprocessing.Semaphore`).
///
/// `acquire` takes one unit, waiting while the value is zero; `release`
/// gives one back. A semaphore has no owner: any process may release, and a
/// process that dies while holding a unit does **not** give it back (as in
/// Python and POSIX). Where a holder may die, prefer a [`Lock`](crate::Lock),
/// which is handed over when its holder dies.
///
/// ```
/// let slots = multiproc::Semaphore::new(2).unwrap();
/// slots.acquire().unwrap();
/// slots.acquire().unwrap();
/// assert!(slots.try_acquire().is_err());
/// slots.release().unwrap();
/// assert_eq!(slots.get_value().unwrap(), 1);
/// ```
///
/// One type, two flavours, like [`Lock`](crate::Lock): shared memory, or a
/// semaphore a TCP manager's server keeps.
#[derive(Clone)]
pub struct Semaphore {
    flavor: SemFlavor,
}

impl Semaphore {
    const NAME: &'static str = "Semaphore";

    /// A semaphore whose value starts at `value`.
    pub fn new(value: u32) -> Result<Semaphore> {
        create(value, u32::MAX, Self::NAME).map(|obj| Semaphore {
            flavor: SemFlavor::Shm(obj),
        })
    }

    /// The layout of a new semaphore at `value`, for a manager server to
    /// create (see [`Value::spec`](crate::Value::spec)).
    #[doc(hidden)]
    pub fn spec(value: u32) -> ShmSpec {
        spec(value, u32::MAX, Self::NAME)
    }

    semaphore_methods!();

    /// Gives one unit back, waking one waiter. `Err(InvalidState)` only if the
    /// value would overflow `u32::MAX`.
    pub fn release(&self) -> Result<()> {
        self.release_one()
    }
}

impl std::fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(r) = self.flavor.fmt_remote("Semaphore", f) {
            return r;
        }
        f.debug_struct("Semaphore")
            .field("value", &self.get_value().unwrap_or(0))
            .finish()
    }
}

/// A semaphore whose value may never exceed its initial value (Python's
/// `multiprocessing.BoundedSemaphore`).
///
/// A `release` that would raise the value above the initial value is
/// [`Error::InvalidState`] (Python raises `ValueError`), which catches a unit
/// released twice. Like [`Semaphore`] it has no owner: a process that dies
/// while holding a unit does not give it back.
///
/// ```
/// let s = multiproc::BoundedSemaphore::new(1).unwrap();
/// s.acquire().unwrap();
/// s.release().unwrap();
/// assert!(matches!(s.release(), Err(multiproc::Error::InvalidState(_))));
/// ```
///
/// One type, two flavours, like [`Lock`](crate::Lock): shared memory, or a
/// bounded semaphore a TCP manager's server keeps (which enforces the bound).
#[derive(Clone)]
pub struct BoundedSemaphore {
    flavor: SemFlavor,
}

impl BoundedSemaphore {
    const NAME: &'static str = "BoundedSemaphore";

    /// A bounded semaphore whose value starts, and is capped, at `value`.
    pub fn new(value: u32) -> Result<BoundedSemaphore> {
        create(value, value, Self::NAME).map(|obj| BoundedSemaphore {
            flavor: SemFlavor::Shm(obj),
        })
    }

    /// The layout of a new bounded semaphore at `value`, for a manager server
    /// to create (see [`Value::spec`](crate::Value::spec)).
    #[doc(hidden)]
    pub fn spec(value: u32) -> ShmSpec {
        spec(value, value, Self::NAME)
    }

    semaphore_methods!();

    /// Gives one unit back, waking one waiter; `Err(InvalidState)` if the value
    /// is already at its initial value.
    pub fn release(&self) -> Result<()> {
        self.release_one()
    }

    /// The initial value, which the value never exceeds. `None` for a
    /// remote one: its server enforces the bound but does not report it.
    pub fn max_value(&self) -> Option<u32> {
        match &self.flavor {
            SemFlavor::Shm(obj) => Some(obj.state().max.load(Ordering::Relaxed)),
            SemFlavor::Remote(_) => None,
            #[cfg(feature = "redis")]
            SemFlavor::Redis(r) => r.max_value().ok().flatten(),
        }
    }
}

impl std::fmt::Debug for BoundedSemaphore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(r) = self.flavor.fmt_remote("BoundedSemaphore", f) {
            return r;
        }
        f.debug_struct("BoundedSemaphore")
            .field("value", &self.get_value().unwrap_or(0))
            .field("max", &self.max_value())
            .finish()
    }
}

macro_rules! semaphore_handle {
    ($ty:ident) => {
        /// The shared-memory form only (a manager hands it out through this).
        impl ShareHandle for $ty {
            fn to_repr(&self) -> Result<HandleRepr> {
                self.flavor.to_repr()
            }

            fn from_repr(repr: &HandleRepr) -> Result<Self> {
                open(repr, Self::NAME).map(|obj| $ty {
                    flavor: SemFlavor::Shm(obj),
                })
            }
        }

        impl FlavoredHandle for $ty {
            fn to_flavor_repr(&self) -> Result<FlavorRepr> {
                self.flavor.to_flavor_repr()
            }

            fn from_flavor_repr(repr: &FlavorRepr) -> Result<Self> {
                match repr {
                    FlavorRepr::Shm(h) => <$ty as ShareHandle>::from_repr(h),
                    FlavorRepr::Remote(p) => {
                        ProxyCore::from_repr(p, $ty::remote_tag()).and_then($ty::from_remote)
                    }
                    #[cfg(feature = "redis")]
                    FlavorRepr::Redis(r) => {
                        crate::redis::RedisObject::from_repr(r, "semaphore", Self::NAME.into())
                            .map(|o| $ty::from_redis(crate::redis::RedisSemaphore::new(o)))
                    }
                    #[cfg(not(feature = "redis"))]
                    FlavorRepr::Redis(_) => Err(crate::handle::without_redis()),
                }
            }
        }

        crate::impl_flavored_handle!(impl<> for $ty);
    };
}

semaphore_handle!(Semaphore);
semaphore_handle!(BoundedSemaphore);

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn counts_down_and_up() {
        let s = Semaphore::new(2).unwrap();
        s.acquire().unwrap();
        s.try_acquire().unwrap();
        assert_eq!(s.get_value().unwrap(), 0);
        assert!(matches!(s.try_acquire(), Err(Error::WouldBlock)));
        assert!(matches!(
            s.acquire_timeout(Duration::from_millis(5)),
            Err(Error::Timeout(_))
        ));
        assert!(matches!(
            s.acquire_timeout(Duration::ZERO),
            Err(Error::Timeout(_))
        ));
        s.release().unwrap();
        s.acquire_timeout(Duration::ZERO).unwrap();
        // An unbounded semaphore may go above its initial value.
        for _ in 0..5 {
            s.release().unwrap();
        }
        assert_eq!(s.get_value().unwrap(), 5);
    }

    #[test]
    fn bounded_rejects_over_release() {
        let s = BoundedSemaphore::new(2).unwrap();
        assert!(matches!(s.release(), Err(Error::InvalidState(_))));
        s.acquire().unwrap();
        s.release().unwrap();
        assert!(matches!(s.release(), Err(Error::InvalidState(_))));
        assert_eq!(s.get_value().unwrap(), 2);
        assert_eq!(s.max_value(), Some(2));
    }

    #[test]
    fn a_release_wakes_a_sleeper() {
        let s = Arc::new(Semaphore::new(0).unwrap());
        let s2 = s.clone();
        let t = std::thread::spawn(move || s2.acquire_timeout(Duration::from_secs(20)));
        s.release().unwrap();
        t.join().unwrap().unwrap();
        assert_eq!(s.get_value().unwrap(), 0);
    }

    #[test]
    fn never_more_holders_than_units() {
        let s = Arc::new(Semaphore::new(2).unwrap());
        let inside = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (s, inside) = (s.clone(), inside.clone());
                std::thread::spawn(move || {
                    for _ in 0..2_000 {
                        s.acquire().unwrap();
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        assert!(now <= 2, "{now} holders of 2 units");
                        inside.fetch_sub(1, Ordering::SeqCst);
                        s.release().unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(s.get_value().unwrap(), 2);
    }

    #[test]
    fn kinds_do_not_mix() {
        let s = Semaphore::new(1).unwrap();
        let b = BoundedSemaphore::new(1).unwrap();
        assert!(matches!(
            BoundedSemaphore::from_repr(&s.to_repr().unwrap()),
            Err(Error::TypeMismatch { .. })
        ));
        assert!(matches!(
            Semaphore::from_repr(&b.to_repr().unwrap()),
            Err(Error::TypeMismatch { .. })
        ));
        let again = Semaphore::from_repr(&s.to_repr().unwrap()).unwrap();
        again.acquire().unwrap();
        assert_eq!(s.get_value().unwrap(), 0);
    }
}
