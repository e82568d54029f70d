//! `Event`: Python's `multiprocessing.Event`, on one futex word.
//!
//! The word holds the flag (bit 0), a "someone may sleep" bit (bit 1) and a
//! count of `set` calls above them. A waiter returns once the flag is set or
//! the count moved, so a `set` quickly followed by `clear` still releases
//! everyone who was waiting (as in Python's `threading.Event`). `set` makes
//! the wake syscall only when the sleeper bit says someone may sleep.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::handle::{FlavorRepr, FlavoredHandle, HandleRepr, ShareHandle};
use crate::manager::core::{ProxyCore, RemoteFlavor};
use crate::shm::{Kind, ShmObject, ShmSpec};
use crate::sync::park;
use crate::sync::remote::RemoteEvent;
use crate::sys::futex::{self, WaitOutcome};

const SET: u32 = 1;
const SLEEPERS: u32 = 2;
/// One `set` in the count above the two flag bits.
const ONE_SET: u32 = 4;
const COUNT_MASK: u32 = !(SET | SLEEPERS);

/// The shared state of an event (`#[repr(C)]`, all-zero is a clear event).
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct EventState {
    word: AtomicU32,
}

impl EventState {
    fn is_set(&self) -> bool {
        self.word.load(Ordering::Acquire) & SET != 0
    }

    fn set(&self) {
        let mut cur = self.word.load(Ordering::Relaxed);
        loop {
            if cur & SET != 0 {
                return;
            }
            let new = (cur.wrapping_add(ONE_SET) | SET) & !SLEEPERS;
            match self
                .word
                .compare_exchange_weak(cur, new, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        if cur & SLEEPERS != 0 {
            futex::futex_wake(&self.word, i32::MAX as u32);
        }
    }

    /// Waits for a `set` until `deadline`; between sleep slices `check`
    /// may end the wait with an error (a dead manager that owns the event).
    fn wait(&self, deadline: Deadline, check: impl Fn() -> Result<()>) -> Result<bool> {
        let start = self.word.load(Ordering::Acquire);
        if start & SET != 0 {
            return Ok(true);
        }
        let count = start & COUNT_MASK;
        let happened = |w: u32| w & SET != 0 || w & COUNT_MASK != count;
        static WAIT: park::SpinSite = park::SpinSite::new();
        if deadline != Deadline::Now
            && WAIT.spin_until(|| happened(self.word.load(Ordering::Acquire)))
        {
            return Ok(true);
        }
        loop {
            let cur = self.word.load(Ordering::Acquire);
            if happened(cur) {
                return Ok(true);
            }
            if deadline.expired() {
                return Ok(false);
            }
            if cur & SLEEPERS == 0
                && self
                    .word
                    .compare_exchange(cur, cur | SLEEPERS, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            let slice = Some(deadline.slice(park::LIVENESS_SLICE));
            if futex::futex_wait(&self.word, cur | SLEEPERS, slice) == WaitOutcome::TimedOut
                && !happened(self.word.load(Ordering::Acquire))
            {
                check()?;
            }
        }
    }
}

/// An event flag shared by any number of processes (Python's `multiprocessing.Event`).
///
/// One type, two flavours, like [`Lock`](crate::Lock): a futex word in
/// shared memory (from [`Event::new`] or a local `Manager`), or an event a
/// TCP manager's server keeps (from a connected `BaseManager`).
///
/// `set` raises the flag and releases every waiter; `clear` lowers it; `wait`
/// blocks until it is raised. A waiter is released by any `set` that happens
/// while it waits, even if the flag is cleared again before it runs.
///
/// ```
/// let ready = multiproc::Event::new().unwrap();
/// assert!(!ready.wait_timeout(std::time::Duration::from_millis(1)).unwrap());
/// ready.set().unwrap();
/// ready.wait().unwrap();
/// assert!(ready.is_set().unwrap());
/// ```
#[derive(Clone)]
pub struct Event {
    flavor: EventFlavor,
}

/// Where an [`Event`] lives.
#[derive(Clone)]
enum EventFlavor {
    /// A futex word in a shared segment.
    Shm(ShmObject<EventState>),
    /// An object of a TCP manager's server.
    Remote(RemoteEvent),
    /// A flag key and a wake-up list in Redis.
    #[cfg(feature = "redis")]
    Redis(crate::redis::RedisEvent),
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.flavor {
            EventFlavor::Shm(obj) => f
                .debug_struct("Event")
                .field("is_set", &obj.state().is_set())
                .finish(),
            EventFlavor::Remote(r) => f.debug_tuple("Event").field(r.core()).finish(),
            #[cfg(feature = "redis")]
            EventFlavor::Redis(r) => f.debug_tuple("Event").field(r.object()).finish(),
        }
    }
}

impl Event {
    /// The layout of a new, clear event, for a manager server to create
    /// (see [`Value::spec`](crate::Value::spec)).
    #[doc(hidden)]
    pub fn spec() -> ShmSpec {
        // SAFETY: EventState is one atomic; all-zero is a clear event.
        unsafe { ShmSpec::zeroed::<EventState>(Kind::Event, 0, 0, |_| {}) }
    }

    /// A new, clear event in its own segment.
    pub fn new() -> Result<Event> {
        let obj = ShmObject::create(Kind::Event, 0, 0, |state: *mut EventState, _| {
            // SAFETY: `create` hands us aligned, writable memory for one EventState.
            unsafe { state.write(EventState::default()) }
        })?;
        Ok(Event {
            flavor: EventFlavor::Shm(obj),
        })
    }

    /// The remote flavour.
    pub(crate) fn remote(r: RemoteEvent) -> Event {
        Event {
            flavor: EventFlavor::Remote(r),
        }
    }

    /// The Redis flavour.
    #[cfg(feature = "redis")]
    pub(crate) fn from_redis(r: crate::redis::RedisEvent) -> Event {
        Event {
            flavor: EventFlavor::Redis(r),
        }
    }

    /// Raises the flag and wakes every waiter (no syscall if none sleeps).
    /// Only a remote event can fail (`ManagerGone`).
    pub fn set(&self) -> Result<()> {
        match &self.flavor {
            EventFlavor::Shm(obj) => {
                obj.state().set();
                Ok(())
            }
            EventFlavor::Remote(r) => r.set(),
            #[cfg(feature = "redis")]
            EventFlavor::Redis(r) => r.set(),
        }
    }

    /// Lowers the flag.
    pub fn clear(&self) -> Result<()> {
        match &self.flavor {
            EventFlavor::Shm(obj) => {
                obj.state().word.fetch_and(!SET, Ordering::Relaxed);
                Ok(())
            }
            EventFlavor::Remote(r) => r.clear(),
            #[cfg(feature = "redis")]
            EventFlavor::Redis(r) => r.clear(),
        }
    }

    /// Whether the flag is raised.
    pub fn is_set(&self) -> Result<bool> {
        match &self.flavor {
            EventFlavor::Shm(obj) => Ok(obj.state().is_set()),
            EventFlavor::Remote(r) => r.is_set(),
            #[cfg(feature = "redis")]
            EventFlavor::Redis(r) => r.is_set(),
        }
    }

    /// Blocks until the flag is raised.
    ///
    /// Fails only for an event a manager created, with `Error::ManagerGone`
    /// within about 100 ms of the manager's death (at once for a remote one).
    pub fn wait(&self) -> Result<()> {
        self.wait_deadline(Deadline::Never).map(|_| ())
    }

    /// Whether the flag is raised, without waiting (the same as [`Event::is_set`]).
    pub fn try_wait(&self) -> Result<bool> {
        self.is_set()
    }

    /// Waits at most `timeout` for the flag; returns whether it was raised
    /// (false on timeout, like Python's `wait(timeout)`). Fails as
    /// [`Event::wait`] does.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool> {
        self.wait_deadline(Deadline::after(timeout))
    }

    fn wait_deadline(&self, deadline: Deadline) -> Result<bool> {
        match &self.flavor {
            EventFlavor::Shm(obj) => obj.state().wait(deadline, || obj.check_owner()),
            EventFlavor::Remote(r) => r.wait_deadline(deadline),
            #[cfg(feature = "redis")]
            EventFlavor::Redis(r) => r.wait_deadline(deadline),
        }
    }
}

/// The shared-memory form only (a manager hands it out through this).
impl ShareHandle for Event {
    fn to_repr(&self) -> Result<HandleRepr> {
        match &self.flavor {
            EventFlavor::Shm(obj) => obj.to_repr(),
            EventFlavor::Remote(_) => Err(Error::InvalidArgument(
                "an event a remote manager keeps has no shared segment".into(),
            )),
            #[cfg(feature = "redis")]
            EventFlavor::Redis(_) => Err(Error::InvalidArgument(
                "an event kept in Redis has no shared segment".into(),
            )),
        }
    }

    fn from_repr(repr: &HandleRepr) -> Result<Self> {
        ShmObject::open(repr, Kind::Event, 0, "Event").map(|obj| Event {
            flavor: EventFlavor::Shm(obj),
        })
    }
}

impl FlavoredHandle for Event {
    fn to_flavor_repr(&self) -> Result<FlavorRepr> {
        match &self.flavor {
            EventFlavor::Shm(obj) => obj.to_repr().map(FlavorRepr::Shm),
            EventFlavor::Remote(r) => r.core().to_repr().map(FlavorRepr::Remote),
            #[cfg(feature = "redis")]
            EventFlavor::Redis(r) => Ok(FlavorRepr::Redis(r.object().to_repr())),
        }
    }

    fn from_flavor_repr(repr: &FlavorRepr) -> Result<Self> {
        match repr {
            FlavorRepr::Shm(h) => <Event as ShareHandle>::from_repr(h),
            FlavorRepr::Remote(p) => {
                ProxyCore::from_repr(p, Event::remote_tag()).and_then(Event::from_remote)
            }
            #[cfg(feature = "redis")]
            FlavorRepr::Redis(r) => {
                crate::redis::RedisObject::from_repr(r, "event", "Event".into())
                    .map(|o| Event::from_redis(crate::redis::RedisEvent::new(o)))
            }
            #[cfg(not(feature = "redis"))]
            FlavorRepr::Redis(_) => Err(crate::handle::without_redis()),
        }
    }
}

crate::impl_flavored_handle!(impl<> for Event);

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn set_clear_wait() {
        let e = Event::new().unwrap();
        assert!(!e.is_set().unwrap());
        assert!(!e.try_wait().unwrap());
        assert!(!e.wait_timeout(Duration::ZERO).unwrap());
        assert!(!e.wait_timeout(Duration::from_millis(5)).unwrap());
        e.set().unwrap();
        e.set().unwrap();
        assert!(e.is_set().unwrap());
        assert!(e.try_wait().unwrap());
        assert!(e.wait_timeout(Duration::ZERO).unwrap());
        e.wait().unwrap();
        e.clear().unwrap();
        assert!(!e.is_set().unwrap());
    }

    #[test]
    fn set_wakes_every_sleeping_thread() {
        let e = Arc::new(Event::new().unwrap());
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let e = e.clone();
                std::thread::spawn(move || e.wait_timeout(Duration::from_secs(20)).unwrap())
            })
            .collect();
        e.set().unwrap();
        for w in waiters {
            assert!(w.join().unwrap());
        }
    }

    #[test]
    fn a_set_then_clear_still_releases_a_sleeping_waiter() {
        let e = Arc::new(Event::new().unwrap());
        let e2 = e.clone();
        let waiter = std::thread::spawn(move || e2.wait_timeout(Duration::from_secs(20)).unwrap());
        // Once the sleeper bit is up, the waiter is past its first look at the flag.
        let EventFlavor::Shm(obj) = &e.flavor else {
            unreachable!("Event::new is shared memory")
        };
        while obj.state().word.load(Ordering::Relaxed) & SLEEPERS == 0 {
            std::thread::yield_now();
        }
        e.set().unwrap();
        e.clear().unwrap();
        assert!(waiter.join().unwrap());
        assert!(!e.is_set().unwrap());
    }

    #[test]
    fn wrong_kind_is_rejected() {
        let e = Event::new().unwrap();
        let repr = e.to_repr().unwrap();
        assert!(
            Event::from_repr(&repr)
                .unwrap()
                .wait_timeout(Duration::ZERO)
                .unwrap()
                == e.is_set().unwrap()
        );
        assert!(crate::Lock::from_repr(&repr).is_err());
    }
}
