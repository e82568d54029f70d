//! `Barrier`: Python's `multiprocessing.Barrier`, with generations and
//! detection of dead parties.
//!
//! The counts live behind a small internal [`RawLock`]; waiters sleep on a
//! futex sequence counter bumped on every change they care about (a round
//! released, the barrier broken or reset), with a sleeper count so nobody
//! makes a wake syscall for no one.
//!
//! Rounds are numbered (generations). The last party to arrive starts the
//! next generation at once, so a fast party that re-enters `wait` joins the
//! next round and is never counted in the one its peers are still leaving.
//! A waiter that sees the generation move learns how its round ended from a
//! 64-bit history (bit k: the round k+1 generations back was reset).
//!
//! The segment's tail is a table of the processes that hold a handle (pid and
//! start time, and how many handles). Waiters sleep in slices of
//! [`LIVENESS_SLICE`] and between slices check that every process in the
//! table lives; a dead one breaks the barrier (see [`Barrier`] for what is promised).

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::fork_sync::Mutex;
use crate::handle::{FlavorRepr, FlavoredHandle, HandleRepr, ShareHandle};
use crate::liveness::{self, CannotTell, Doubt, Liveness};
use crate::manager::core::{ProxyCore, RemoteFlavor};
use crate::process::{ForkHook, launch, register_fork_hook};
use crate::shm::{Kind, ShmObject, ShmSpec, fingerprint_str};
use crate::sync::park::{self, LIVENESS_SLICE};
use crate::sync::raw_lock::{Acquired, RawLock};
use crate::sync::remote::RemoteBarrier;
use crate::sys;

const FILLING: u32 = 0;
const BROKEN: u32 = 1;

/// The shared state of a barrier (`#[repr(C)]`, atomics only).
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct BarrierState {
    /// Guards every field below except `seq` and `sleepers`.
    lock: RawLock,
    /// Bumped on every change waiters care about; the futex word.
    seq: AtomicU32,
    sleepers: AtomicU32,
    /// Fixed at creation.
    parties: AtomicU32,
    /// Parties inside `wait` for the current generation.
    count: AtomicU32,
    generation: AtomicU32,
    /// FILLING or BROKEN.
    state: AtomicU32,
    /// Bit k: the generation that ended k+1 generations ago was reset, not released.
    history: AtomicU64,
    /// Slots in the attached-process table (fixed at creation).
    capacity: AtomicU32,
    has_action: AtomicU32,
    /// The action as an offset from the binary's anchor, and the binary it is valid in.
    action_offset: AtomicI64,
    action_binary: AtomicU64,
    action_anchor: AtomicI64,
    /// The timeout of `wait` (Python's `Barrier(timeout=…)`), in
    /// nanoseconds plus one; 0: none. Fixed at creation.
    default_timeout: AtomicU64,
}

/// One row of the attached-process table in the segment's tail.
#[repr(C)]
#[derive(Debug)]
struct Attached {
    /// The process as a lock word (start ticks above pid); 0 for a free slot.
    process: AtomicU64,
    /// How many handles that process holds.
    handles: AtomicU64,
    /// How many of that process's threads wait at the barrier now (its
    /// normal end does not let go of a slot while one does).
    waiting: AtomicU64,
}

/// Why the last party could not run the action.
enum ActionFailure {
    Panicked(Box<dyn std::any::Any + Send>),
    ForeignBinary,
}

/// A barrier for a fixed number of parties across processes (Python's
/// `multiprocessing.Barrier`).
///
/// Each party calls [`Barrier::wait`]; all are released together once
/// `parties` have arrived, each with a distinct index in `0..parties`. An
/// optional action ([`Barrier::with_action`]) is run by exactly one party, the
/// last to arrive, before the others are released. The barrier is then ready
/// for the next round.
///
/// A timed-out wait or an [`abort`](Barrier::abort) breaks the barrier: every
/// party waiting now and every later `wait` gets [`Error::BrokenBarrier`] until
/// [`reset`](Barrier::reset), which also fails the parties waiting at that moment.
///
/// # Dead parties
///
/// Python hangs when a party dies (cpython#123899); this barrier does not.
/// The barrier's segment records which processes hold it. A process holds it
/// from when it creates, clones or decodes a handle (a spawn argument, a
/// handle received in a message) until it drops its last handle; a child
/// started with fork, which inherits handles without decoding them (a fork
/// target's argument, a captured handle), holds a handle from its first use
/// of it. What is promised:
///
/// - if a holding process dies without dropping its handles (it was
///   killed, crashed, or called `libc::_exit`), a party waiting in `wait`
///   notices within about 100 ms (plus scheduling delay) and breaks the
///   barrier: every current waiter gets `BrokenBarrier`, as with `abort`.
///   This holds whether the dead process was about to arrive or had arrived;
/// - a process that ends normally while still holding a handle (kept in a
///   `static`, as a pool initializer's global; or left by
///   `std::process::exit`, or a `Process` target's end, which run no
///   destructors) is not a dead party: its end lets go of its handles, unless
///   one of its threads was waiting at the barrier then;
/// - a dead process is forgotten once it has broken the barrier, so after a
///   `reset` the barrier is usable by the processes that remain;
/// - a process that dropped its handles is no longer watched, even if it was
///   a party that will never come back (a timeout still ends such a wait);
/// - up to `max(128, parties + 64)` processes may hold handles at once; one
///   more is refused with [`Error::InvalidState`] (dead ones are swept first).
///
/// Pids are checked together with their start time, so a reused pid is not
/// mistaken for a live party. Only a known death breaks the barrier: a
/// waiter that cannot check a party (its process is out of descriptors and
/// cannot read `/proc`) keeps waiting as for a live one; if it has not been
/// able to check for 10 s, a `wait` without a timeout leaves the round
/// (breaking nothing) and fails with [`Error::Io`].
///
/// ```
/// // Two parties (threads here; processes take the handle as an argument).
/// let b = multiproc::Barrier::new(2).unwrap();
/// let other = b.clone();
/// let t = std::thread::spawn(move || other.wait().unwrap());
/// let mine = b.wait().unwrap();
/// let theirs = t.join().unwrap();
/// assert_eq!(mine + theirs, 1); // arrival indexes 0 and 1
/// ```
pub struct Barrier {
    flavor: BarrierFlavor,
}

/// Where a [`Barrier`] lives.
#[derive(Clone)]
enum BarrierFlavor {
    /// Counts and a table of holders in a shared segment.
    Shm(ShmBarrier),
    /// An object of a TCP manager's server.
    Remote(RemoteBarrier),
    /// A hash and a wake-up list in Redis.
    #[cfg(feature = "redis")]
    Redis(crate::redis::RedisBarrier),
}

impl Clone for Barrier {
    fn clone(&self) -> Self {
        Barrier {
            flavor: self.flavor.clone(),
        }
    }
}

impl std::fmt::Debug for Barrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.flavor {
            BarrierFlavor::Shm(b) => b.fmt(f),
            BarrierFlavor::Remote(r) => f.debug_tuple("Barrier").field(r.core()).finish(),
            #[cfg(feature = "redis")]
            BarrierFlavor::Redis(r) => f.debug_tuple("Barrier").field(r.object()).finish(),
        }
    }
}

impl Barrier {
    /// A barrier for `parties` parties; `parties == 0` is [`Error::InvalidArgument`].
    pub fn new(parties: usize) -> Result<Barrier> {
        ShmBarrier::new(parties).map(Barrier::shm)
    }

    /// A barrier whose `action` is run by the last party to arrive in each
    /// round, before the others are released.
    ///
    /// The action is a plain `fn()`, found in each process by its offset in
    /// the binary (as process targets are); a party running another binary
    /// cannot run it, and breaks the barrier with [`Error::BinaryMismatch`].
    /// If the action panics, the barrier is broken and the panic continues
    /// in the last party. The action must not call `wait`, `abort` or `reset`
    /// on the same barrier.
    pub fn with_action(parties: usize, action: fn()) -> Result<Barrier> {
        ShmBarrier::with_action(parties, action).map(Barrier::shm)
    }

    /// A barrier whose [`Barrier::wait`] gives up after `timeout` (Python's
    /// `Barrier(parties, timeout=…)`): a round not complete by then breaks
    /// the barrier, as [`Barrier::wait_timeout`] does. `wait_timeout`
    /// still takes its own timeout. Every process holding the barrier
    /// shares the default.
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::{Barrier, Error};
    /// let b = Barrier::with_timeout(2, Duration::from_millis(10)).unwrap();
    /// assert_eq!(b.timeout(), Some(Duration::from_millis(10)));
    /// // The other party never comes.
    /// assert!(matches!(b.wait(), Err(Error::BrokenBarrier)));
    /// ```
    pub fn with_timeout(parties: usize, timeout: Duration) -> Result<Barrier> {
        ShmBarrier::with_timeout(parties, timeout).map(Barrier::shm)
    }

    /// A barrier with both an action ([`Barrier::with_action`]) and a
    /// default timeout ([`Barrier::with_timeout`]).
    pub fn with_action_and_timeout(
        parties: usize,
        action: fn(),
        timeout: Duration,
    ) -> Result<Barrier> {
        ShmBarrier::with_action_and_timeout(parties, action, timeout).map(Barrier::shm)
    }

    fn shm(b: ShmBarrier) -> Barrier {
        Barrier {
            flavor: BarrierFlavor::Shm(b),
        }
    }

    /// The remote flavour.
    pub(crate) fn remote(r: RemoteBarrier) -> Barrier {
        Barrier {
            flavor: BarrierFlavor::Remote(r),
        }
    }

    /// The Redis flavour.
    #[cfg(feature = "redis")]
    pub(crate) fn from_redis(r: crate::redis::RedisBarrier) -> Barrier {
        Barrier {
            flavor: BarrierFlavor::Redis(r),
        }
    }

    /// The layout of a new barrier for `parties` parties (no action), for a
    /// manager server to create (see [`Value::spec`](crate::Value::spec)).
    #[doc(hidden)]
    pub fn spec(parties: usize) -> Result<ShmSpec> {
        ShmBarrier::spec(parties)
    }

    /// The timeout [`Barrier::wait`] uses, if the barrier was made with one
    /// (a barrier a remote manager keeps has none).
    pub fn timeout(&self) -> Option<Duration> {
        match &self.flavor {
            BarrierFlavor::Shm(b) => b.timeout(),
            BarrierFlavor::Remote(_) => None,
            #[cfg(feature = "redis")]
            BarrierFlavor::Redis(_) => None,
        }
    }

    /// Waits until all parties have arrived; returns this party's arrival
    /// index in `0..parties` (the last to arrive gets `parties - 1`).
    ///
    /// A barrier made with [`Barrier::with_timeout`] waits at most that
    /// long, then breaks as [`Barrier::wait_timeout`] does.
    ///
    /// On a barrier a manager created, a waiter breaks the barrier and fails
    /// with `Error::ManagerGone` within about 100 ms of the manager's death
    /// (a remote manager: as soon as its connection is lost). A party
    /// whose process dies while waiting breaks the barrier for the others.
    pub fn wait(&self) -> Result<usize> {
        match &self.flavor {
            BarrierFlavor::Shm(b) => b.wait(),
            BarrierFlavor::Remote(r) => r.wait(),
            #[cfg(feature = "redis")]
            BarrierFlavor::Redis(r) => r.wait(),
        }
    }

    /// As [`Barrier::wait`], but breaks the barrier (`Err(BrokenBarrier)` for
    /// everyone) if the round is not complete within `timeout`, as Python does.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<usize> {
        match &self.flavor {
            BarrierFlavor::Shm(b) => b.wait_timeout(timeout),
            BarrierFlavor::Remote(r) => r.wait_timeout(timeout),
            #[cfg(feature = "redis")]
            BarrierFlavor::Redis(r) => r.wait_timeout(timeout),
        }
    }

    /// Arrives only if this completes the round (then returns like `wait`);
    /// otherwise `Err(WouldBlock)`, without arriving or breaking anything.
    pub fn try_wait(&self) -> Result<usize> {
        match &self.flavor {
            BarrierFlavor::Shm(b) => b.try_wait(),
            BarrierFlavor::Remote(r) => r.try_wait(),
            #[cfg(feature = "redis")]
            BarrierFlavor::Redis(r) => r.try_wait(),
        }
    }

    /// Breaks the barrier: every party waiting now, and every later `wait`,
    /// gets [`Error::BrokenBarrier`] until [`Barrier::reset`]. A remote
    /// barrier asks its server, so this can fail with `ManagerGone`.
    pub fn abort(&self) -> Result<()> {
        match &self.flavor {
            BarrierFlavor::Shm(b) => {
                b.abort();
                Ok(())
            }
            BarrierFlavor::Remote(r) => r.abort(),
            #[cfg(feature = "redis")]
            BarrierFlavor::Redis(r) => r.abort(),
        }
    }

    /// Returns the barrier to its initial state: parties waiting now get
    /// [`Error::BrokenBarrier`], and later rounds work again.
    pub fn reset(&self) -> Result<()> {
        match &self.flavor {
            BarrierFlavor::Shm(b) => {
                b.reset();
                Ok(())
            }
            BarrierFlavor::Remote(r) => r.reset(),
            #[cfg(feature = "redis")]
            BarrierFlavor::Redis(r) => r.reset(),
        }
    }

    /// The number of parties needed to release a round.
    pub fn parties(&self) -> Result<usize> {
        match &self.flavor {
            BarrierFlavor::Shm(b) => Ok(b.parties()),
            BarrierFlavor::Remote(r) => r.parties(),
            #[cfg(feature = "redis")]
            BarrierFlavor::Redis(r) => r.parties(),
        }
    }

    /// The number of parties waiting in the current round (0 while broken).
    pub fn n_waiting(&self) -> Result<usize> {
        match &self.flavor {
            BarrierFlavor::Shm(b) => Ok(b.n_waiting()),
            BarrierFlavor::Remote(r) => r.n_waiting(),
            #[cfg(feature = "redis")]
            BarrierFlavor::Redis(r) => r.n_waiting(),
        }
    }

    /// Whether the barrier is broken.
    pub fn broken(&self) -> Result<bool> {
        match &self.flavor {
            BarrierFlavor::Shm(b) => Ok(b.broken()),
            BarrierFlavor::Remote(r) => r.broken(),
            #[cfg(feature = "redis")]
            BarrierFlavor::Redis(r) => r.broken(),
        }
    }
}

/// The shared-memory form only: a local manager creates barriers as segments.
impl ShareHandle for Barrier {
    fn to_repr(&self) -> Result<HandleRepr> {
        match &self.flavor {
            BarrierFlavor::Shm(b) => b.to_repr(),
            BarrierFlavor::Remote(_) => Err(Error::InvalidArgument(
                "a barrier a remote manager keeps has no shared segment".into(),
            )),
            #[cfg(feature = "redis")]
            BarrierFlavor::Redis(_) => Err(Error::InvalidArgument(
                "a barrier kept in Redis has no shared segment".into(),
            )),
        }
    }

    fn from_repr(repr: &HandleRepr) -> Result<Self> {
        ShmBarrier::from_repr(repr).map(Barrier::shm)
    }
}

impl FlavoredHandle for Barrier {
    fn to_flavor_repr(&self) -> Result<FlavorRepr> {
        match &self.flavor {
            BarrierFlavor::Shm(b) => b.to_repr().map(FlavorRepr::Shm),
            BarrierFlavor::Remote(r) => r.core().to_repr().map(FlavorRepr::Remote),
            #[cfg(feature = "redis")]
            BarrierFlavor::Redis(r) => Ok(FlavorRepr::Redis(r.object().to_repr())),
        }
    }

    fn from_flavor_repr(repr: &FlavorRepr) -> Result<Self> {
        match repr {
            FlavorRepr::Shm(h) => <Barrier as ShareHandle>::from_repr(h),
            FlavorRepr::Remote(p) => {
                ProxyCore::from_repr(p, Barrier::remote_tag()).and_then(Barrier::from_remote)
            }
            #[cfg(feature = "redis")]
            FlavorRepr::Redis(r) => {
                crate::redis::RedisObject::from_repr(r, "barrier", "Barrier".into())
                    .map(|o| Barrier::from_redis(crate::redis::RedisBarrier::new(o)))
            }
            #[cfg(not(feature = "redis"))]
            FlavorRepr::Redis(_) => Err(crate::handle::without_redis()),
        }
    }
}

crate::impl_flavored_handle!(impl<> for Barrier);

/// The shared-memory flavour of a [`Barrier`].
struct ShmBarrier {
    obj: ShmObject<BarrierState>,
    /// Slots in the table, as checked when the handle was made.
    capacity: usize,
    /// The process this handle is counted for in the table (0: none).
    counted_for: AtomicI32,
    /// Where that process's slot is: pid above, index below (see `my_slot`).
    slot: AtomicU64,
}

impl std::fmt::Debug for ShmBarrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Barrier")
            .field("parties", &self.parties())
            .field("n_waiting", &self.n_waiting())
            .field("broken", &self.broken())
            .finish()
    }
}

/// The barriers this process holds a slot in (a mapping of each), so that
/// a normal end lets go of them: see [`let_go_at_normal_end`].
static HELD: Mutex<Vec<(ShmObject<BarrierState>, usize)>> = Mutex::new(Vec::new());

/// Holds [`HELD`] across multiproc's forks, so a forked child never
/// inherits it locked by a thread that does not exist there.
struct HeldForkHook;

impl ForkHook for HeldForkHook {
    fn prepare(&self) -> Box<dyn std::any::Any> {
        Box::new(HELD.lock())
    }
    fn parent(&self, held: Box<dyn std::any::Any>) {
        drop(held);
    }
    fn child(&self, held: Box<dyn std::any::Any>) {
        drop(held);
    }
}

/// How long an ending process waits for a barrier's internal lock (held
/// for a few instructions, unless its holder was stopped) before it leaves
/// its slot as it is, to be seen as a death.
const END_LOCK_WAIT: Duration = Duration::from_millis(100);

/// Frees this process's slots in the barriers it holds, as it ends
/// normally (a `Process` target's end, `std::process::exit`, `main`'s
/// return): a process that kept a handle in a `static` is not a party that
/// died. A barrier one of its threads waits at keeps its slot (its arrival
/// counts, and only its death breaks the round); nothing is freed if another
/// thread holds the list.
pub(crate) fn let_go_at_normal_end() {
    let held: Vec<_> = match HELD.try_lock() {
        Some(held) => held.iter().cloned().collect(),
        None => return,
    };
    let me = liveness::my_word();
    for (obj, capacity) in &held {
        let state = obj.state();
        let Some(acquired) = state.lock.lock(Deadline::after(END_LOCK_WAIT)) else {
            continue;
        };
        let inner = Inner { state };
        if let Acquired::OwnerDied { .. } = acquired {
            inner.break_barrier();
        }
        if let Some(slot) = attached_table(obj, *capacity)
            .iter()
            .find(|s| s.process.load(Ordering::Relaxed) == me)
            && slot.waiting.load(Ordering::SeqCst) == 0
        {
            slot.free();
        }
    }
}

extern "C" fn let_go_at_exit() {
    let_go_at_normal_end();
}

/// Counts a thread of this process as waiting at a barrier, in the
/// process's slot, while it lives.
struct Waiting<'a>(Option<&'a Attached>);

impl<'a> Waiting<'a> {
    fn enter(slot: Option<&'a Attached>) -> Waiting<'a> {
        if let Some(slot) = slot {
            slot.waiting.fetch_add(1, Ordering::SeqCst);
        }
        Waiting(slot)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.0 {
            slot.waiting.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Attached {
    /// Frees the slot (under the barrier's internal lock).
    fn free(&self) {
        self.process.store(0, Ordering::Relaxed);
        self.handles.store(0, Ordering::Relaxed);
        self.waiting.store(0, Ordering::Relaxed);
    }
}

/// Holds the barrier's internal lock.
struct Inner<'a> {
    state: &'a BarrierState,
}

impl Drop for Inner<'_> {
    fn drop(&mut self) {
        self.state.lock.unlock();
    }
}

impl Inner<'_> {
    /// Wakes waiters to look at the state again.
    fn bump(&self) {
        self.state.seq.fetch_add(1, Ordering::SeqCst);
        park::wake_all(&self.state.seq, &self.state.sleepers);
    }

    fn break_barrier(&self) {
        if self.state.state.load(Ordering::Relaxed) != BROKEN {
            self.state.state.store(BROKEN, Ordering::Relaxed);
            self.bump();
        }
    }

    /// Ends the current generation, released (`reset == false`) or reset.
    fn next_generation(&self, reset: bool) {
        let s = self.state;
        let history = s.history.load(Ordering::Relaxed);
        s.history
            .store((history << 1) | reset as u64, Ordering::Relaxed);
        s.generation.fetch_add(1, Ordering::Relaxed);
        s.count.store(0, Ordering::Relaxed);
        s.state.store(FILLING, Ordering::Relaxed);
        self.bump();
    }

    /// A waiter of the current generation leaves without being released.
    fn leave(&self) {
        let count = self.state.count.load(Ordering::Relaxed);
        self.state
            .count
            .store(count.saturating_sub(1), Ordering::Relaxed);
    }
}

impl ShmBarrier {
    /// A barrier for `parties` parties; `parties == 0` is [`Error::InvalidArgument`].
    pub fn new(parties: usize) -> Result<ShmBarrier> {
        Self::create(parties, None, None)
    }

    /// A barrier whose `action` is run by the last party to arrive in each
    /// round, before the others are released.
    ///
    /// The action is a plain `fn()`, found in each process by its offset in
    /// the binary (as process targets are); a party running another binary
    /// cannot run it, and breaks the barrier with [`Error::BinaryMismatch`].
    /// If the action panics, the barrier is broken and the panic continues
    /// in the last party. The action must not call `wait`, `abort` or `reset`
    /// on the same barrier.
    pub fn with_action(parties: usize, action: fn()) -> Result<ShmBarrier> {
        Self::create(parties, Some(action), None)
    }

    /// A barrier whose [`Barrier::wait`] gives up after `timeout` (Python's
    /// `Barrier(parties, timeout=…)`): a round not complete by then breaks
    /// the barrier, as [`Barrier::wait_timeout`] does. `wait_timeout`
    /// still takes its own timeout. Every process holding the barrier
    /// shares the default.
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::{Barrier, Error};
    /// let b = Barrier::with_timeout(2, Duration::from_millis(10)).unwrap();
    /// assert_eq!(b.timeout(), Some(Duration::from_millis(10)));
    /// // The other party never comes.
    /// assert!(matches!(b.wait(), Err(Error::BrokenBarrier)));
    /// ```
    pub fn with_timeout(parties: usize, timeout: Duration) -> Result<ShmBarrier> {
        Self::create(parties, None, Some(timeout))
    }

    /// A barrier with both an action ([`Barrier::with_action`]) and a
    /// default timeout ([`Barrier::with_timeout`]).
    pub fn with_action_and_timeout(
        parties: usize,
        action: fn(),
        timeout: Duration,
    ) -> Result<ShmBarrier> {
        Self::create(parties, Some(action), Some(timeout))
    }

    /// The timeout [`Barrier::wait`] uses, if the barrier was made with one.
    pub fn timeout(&self) -> Option<Duration> {
        match self.state().default_timeout.load(Ordering::Relaxed) {
            0 => None,
            n => Some(Duration::from_nanos(n - 1)),
        }
    }

    /// The layout of a new barrier for `parties` parties (no action), for a
    /// manager server to create (see [`Value::spec`](crate::Value::spec)).
    #[doc(hidden)]
    pub fn spec(parties: usize) -> Result<ShmSpec> {
        let (parties, capacity) = Self::sizes(parties)?;
        let tail = capacity * std::mem::size_of::<Attached>();
        // SAFETY: BarrierState is atomics and integers only, and a
        // zero-filled tail is a table of free slots.
        Ok(unsafe {
            ShmSpec::zeroed(Kind::Barrier, 0, tail, |s: &BarrierState| {
                s.parties.store(parties, Ordering::Relaxed);
                s.capacity.store(capacity as u32, Ordering::Relaxed);
            })
        })
    }

    /// The checked party count and the attached-process table's size.
    fn sizes(parties: usize) -> Result<(u32, usize)> {
        if parties == 0 {
            return Err(Error::InvalidArgument(
                "a barrier needs at least one party".into(),
            ));
        }
        let parties = u32::try_from(parties).map_err(|_| {
            Error::InvalidArgument(format!("a barrier of {parties} parties is too large"))
        })?;
        Ok((parties, table_capacity(parties)))
    }

    fn create(
        parties: usize,
        action: Option<fn()>,
        timeout: Option<Duration>,
    ) -> Result<ShmBarrier> {
        let (parties, capacity) = Self::sizes(parties)?;
        // Nanoseconds plus one (0 is "none"); ~584 years at most.
        let timeout = timeout.map_or(0, |t| {
            u64::try_from(t.as_nanos())
                .unwrap_or(u64::MAX - 1)
                .min(u64::MAX - 1)
                + 1
        });
        let tail = capacity * std::mem::size_of::<Attached>();
        let obj = ShmObject::create(Kind::Barrier, 0, tail, |state: *mut BarrierState, _| {
            let s = BarrierState {
                parties: AtomicU32::new(parties),
                capacity: AtomicU32::new(capacity as u32),
                default_timeout: AtomicU64::new(timeout),
                ..BarrierState::default()
            };
            if let Some(action) = action {
                s.has_action.store(1, Ordering::Relaxed);
                s.action_offset
                    .store(launch::offset_of(action as *const ()), Ordering::Relaxed);
                s.action_binary
                    .store(fingerprint_str(launch::identity()), Ordering::Relaxed);
                s.action_anchor
                    .store(launch::anchor_check(), Ordering::Relaxed);
            }
            // SAFETY: `create` hands us aligned, writable memory for one
            // BarrierState; the zero-filled tail is a table of free slots.
            unsafe { state.write(s) }
        })?;
        Self::from_obj(obj, capacity)
    }

    /// Makes a handle for this process and records the process in the table.
    fn from_obj(obj: ShmObject<BarrierState>, capacity: usize) -> Result<ShmBarrier> {
        let barrier = ShmBarrier {
            obj,
            capacity,
            counted_for: AtomicI32::new(0),
            slot: AtomicU64::new(0),
        };
        barrier.attach()?;
        barrier
            .counted_for
            .store(sys::process::getpid(), Ordering::Relaxed);
        Ok(barrier)
    }

    fn state(&self) -> &BarrierState {
        self.obj.state()
    }

    fn table(&self) -> &[Attached] {
        attached_table(&self.obj, self.capacity)
    }

    /// Takes the internal lock. A process that died holding it may have left
    /// the counts half-changed: the barrier is broken then.
    fn inner(&self) -> Inner<'_> {
        let state = self.state();
        let acquired = loop {
            // A wait without a deadline returns only once it holds the lock.
            if let Some(acquired) = state.lock.lock(Deadline::Never) {
                break acquired;
            }
        };
        let inner = Inner { state };
        if let Acquired::OwnerDied { pid } = acquired {
            tracing::warn!(
                pid,
                "a process died inside a barrier's bookkeeping; breaking it"
            );
            inner.break_barrier();
        }
        inner
    }

    /// Counts one more handle for this process in the table.
    fn attach(&self) -> Result<()> {
        let me = liveness::my_word();
        let inner = self.inner();
        let table = self.table();
        if let Some(slot) = table
            .iter()
            .find(|s| s.process.load(Ordering::Relaxed) == me)
        {
            slot.handles.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let free = || {
            table
                .iter()
                .find(|s| s.process.load(Ordering::Relaxed) == 0)
        };
        let slot = match free() {
            Some(slot) => Some(slot),
            None => {
                self.forget_dead(&inner);
                free()
            }
        };
        let Some(slot) = slot else {
            return Err(Error::InvalidState(format!(
                "more than {} live processes hold handles to this barrier",
                table.len()
            )));
        };
        slot.handles.store(1, Ordering::Relaxed);
        slot.waiting.store(0, Ordering::Relaxed);
        slot.process.store(me, Ordering::Relaxed);
        drop(inner);
        self.remember_held();
        Ok(())
    }

    /// Records this barrier among those this process holds (see
    /// [`let_go_at_normal_end`]), and makes the process's ends let go.
    fn remember_held(&self) {
        static AT_EXIT: AtomicBool = AtomicBool::new(false);
        register_fork_hook(&HeldForkHook);
        if !AT_EXIT.swap(true, Ordering::SeqCst) {
            crate::process::at_normal_end(let_go_at_normal_end);
            if let Err(e) = sys::process::at_exit(let_go_at_exit) {
                tracing::debug!("an exit will leave this process's barrier slots: {e}");
            }
        }
        let mut held = HELD.lock();
        let mine = self.table().as_ptr();
        if !held.iter().any(|(o, _)| same_table(o, mine)) {
            held.push((self.obj.clone(), self.capacity));
        }
    }

    /// Forgets this barrier among those this process holds.
    fn forget_held(&self) {
        let mine = self.table().as_ptr();
        HELD.lock().retain(|(o, _)| !same_table(o, mine));
    }

    /// Counts one handle less for this process; frees its slot at zero.
    fn detach(&self) {
        let me = liveness::my_word();
        let _inner = self.inner();
        if let Some(slot) = self
            .table()
            .iter()
            .find(|s| s.process.load(Ordering::Relaxed) == me)
            && slot.handles.fetch_sub(1, Ordering::Relaxed) <= 1
        {
            slot.free();
            drop(_inner);
            self.forget_held();
        }
    }

    /// Counts this handle for the calling process if it is not yet (a handle
    /// inherited through fork is counted for the parent).
    fn ensure_attached(&self) -> Result<()> {
        let pid = sys::process::getpid();
        let counted = self.counted_for.load(Ordering::Relaxed);
        if counted != pid
            && self
                .counted_for
                .compare_exchange(counted, pid, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            && let Err(e) = self.attach()
        {
            self.counted_for.store(0, Ordering::Relaxed);
            return Err(e);
        }
        Ok(())
    }

    /// This process's slot in the table, if it has one (found once per
    /// handle and process, then checked at each use).
    fn my_slot(&self) -> Option<&Attached> {
        let table = self.table();
        let pid = sys::process::getpid();
        let me = liveness::my_word();
        let cached = self.slot.load(Ordering::Relaxed);
        if (cached >> 32) as i32 == pid
            && let Some(slot) = table.get((cached & 0xFFFF_FFFF) as usize)
            && slot.process.load(Ordering::Relaxed) == me
        {
            return Some(slot);
        }
        let at = table
            .iter()
            .position(|s| s.process.load(Ordering::Relaxed) == me)?;
        self.slot
            .store((u64::from(pid as u32) << 32) | at as u64, Ordering::Relaxed);
        table.get(at)
    }

    /// Whether some process in the table has died (checked without the
    /// lock), and if none has, one whose liveness could not be checked.
    fn someone_died(&self) -> (bool, Option<CannotTell>) {
        let mut unsure = None;
        for s in self.table() {
            let p = s.process.load(Ordering::Relaxed);
            if p == 0 {
                continue;
            }
            match liveness::holder_liveness(p) {
                Liveness::Dead => return (true, None),
                liveness => {
                    unsure = unsure.or(CannotTell::from((p & 0x7FFF_FFFF) as i32, liveness));
                }
            }
        }
        (false, unsure)
    }

    /// Frees the slots of dead processes and breaks the barrier if there were any.
    fn forget_dead(&self, inner: &Inner<'_>) -> bool {
        let mut any = false;
        for slot in self.table() {
            let p = slot.process.load(Ordering::Relaxed);
            // Only a known death breaks the barrier; a process this one
            // cannot check (out of descriptors) is kept as a live party.
            if p != 0 && liveness::holder_liveness(p).is_dead() {
                tracing::warn!(
                    pid = (p & 0x7FFF_FFFF) as i32,
                    "a process holding a barrier died; breaking it"
                );
                slot.free();
                any = true;
            }
        }
        if any {
            inner.break_barrier();
        }
        any
    }

    /// Waits until all parties have arrived; returns this party's arrival
    /// index in `0..parties` (the last to arrive gets `parties - 1`).
    ///
    /// A barrier made with [`Barrier::with_timeout`] waits at most that
    /// long, then breaks as [`Barrier::wait_timeout`] does.
    ///
    /// On a barrier a manager created, a waiter breaks the barrier and fails
    /// with `Error::ManagerGone` within about 100 ms of the manager's death.
    pub fn wait(&self) -> Result<usize> {
        let deadline = self.timeout().map_or(Deadline::Never, Deadline::after);
        self.wait_deadline(deadline, false)
    }

    /// As [`Barrier::wait`], but breaks the barrier (`Err(BrokenBarrier)` for
    /// everyone) if the round is not complete within `timeout`, as Python does.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<usize> {
        self.wait_deadline(Deadline::after(timeout), false)
    }

    /// Arrives only if this completes the round (then returns like `wait`);
    /// otherwise `Err(WouldBlock)`, without arriving or breaking anything.
    pub fn try_wait(&self) -> Result<usize> {
        self.wait_deadline(Deadline::Now, true)
    }

    fn wait_deadline(&self, deadline: Deadline, only_if_last: bool) -> Result<usize> {
        self.ensure_attached()?;
        let _waiting = Waiting::enter(self.my_slot());
        let s = self.state();
        let inner = self.inner();
        if s.state.load(Ordering::Relaxed) == BROKEN {
            return Err(Error::BrokenBarrier);
        }
        let index = s.count.load(Ordering::Relaxed);
        if index.saturating_add(1) >= s.parties.load(Ordering::Relaxed) {
            return self.release_round(inner, index);
        }
        if only_if_last {
            return Err(Error::WouldBlock);
        }
        s.count.store(index + 1, Ordering::Relaxed);
        let generation = s.generation.load(Ordering::Relaxed);
        let mut seen = s.seq.load(Ordering::SeqCst);
        drop(inner);

        static ROUND: park::SpinSite = park::SpinSite::new();
        let mut spin = deadline != Deadline::Now;
        let mut last_check = Instant::now();
        let mut doubt = Doubt::default();
        loop {
            let mut check_liveness = false;
            if !(spin && ROUND.spin_until(|| s.seq.load(Ordering::Acquire) != seen)) {
                if !deadline.expired() {
                    let slice = deadline.slice(LIVENESS_SLICE);
                    park::sleep(&s.seq, seen, &s.sleepers, Some(slice));
                }
                if last_check.elapsed() >= LIVENESS_SLICE {
                    last_check = Instant::now();
                    check_liveness = true;
                }
            }
            spin = false;
            let changed = s.seq.load(Ordering::SeqCst) != seen;
            let (died, unsure) = if check_liveness {
                self.someone_died()
            } else {
                (false, None)
            };
            let owner_gone = check_liveness && self.obj.owner_gone();
            // An untimed wait that cannot check its parties for long gives up
            // (leaving the round, breaking nothing).
            let gave_up = match check_liveness {
                true => doubt
                    .note(unsure, &deadline, "a process holding the barrier")
                    .err(),
                false => None,
            };
            if !changed && !died && !owner_gone && gave_up.is_none() && !deadline.expired() {
                continue;
            }
            let inner = self.inner();
            let now = s.generation.load(Ordering::Relaxed);
            if now != generation {
                return self.outcome(generation, now, index);
            }
            if s.state.load(Ordering::Relaxed) == BROKEN {
                inner.leave();
                return Err(Error::BrokenBarrier);
            }
            if owner_gone {
                // The manager that owns the barrier died: nobody is released.
                inner.break_barrier();
                inner.leave();
                return Err(self.obj.check_owner().err().unwrap_or(Error::BrokenBarrier));
            }
            if deadline.expired() || (died && self.forget_dead(&inner)) {
                inner.break_barrier();
                inner.leave();
                return Err(Error::BrokenBarrier);
            }
            if let Some(e) = gave_up {
                inner.leave();
                return Err(e);
            }
            seen = s.seq.load(Ordering::SeqCst);
            spin = true;
        }
    }

    /// How generation `mine` ended, seen from generation `now`.
    fn outcome(&self, mine: u32, now: u32, index: u32) -> Result<usize> {
        let ago = now.wrapping_sub(mine);
        let history = self.state().history.load(Ordering::Relaxed);
        // The history reaches 64 rounds back; a party that slept through more
        // (starved while others raced round after round) is told the barrier
        // broke rather than given a guess.
        if ago > 64 || (history >> (ago - 1)) & 1 == 1 {
            Err(Error::BrokenBarrier)
        } else {
            Ok(index as usize)
        }
    }

    /// The last party: runs the action and starts the next generation.
    fn release_round(&self, inner: Inner<'_>, index: u32) -> Result<usize> {
        if let Err(failure) = self.run_action() {
            inner.break_barrier();
            drop(inner);
            return match failure {
                ActionFailure::Panicked(payload) => std::panic::resume_unwind(payload),
                ActionFailure::ForeignBinary => Err(Error::BinaryMismatch(
                    "the barrier's action belongs to another binary".into(),
                )),
            };
        }
        inner.next_generation(false);
        Ok(index as usize)
    }

    fn run_action(&self) -> std::result::Result<(), ActionFailure> {
        let s = self.state();
        if s.has_action.load(Ordering::Relaxed) == 0 {
            return Ok(());
        }
        if s.action_binary.load(Ordering::Relaxed) != fingerprint_str(launch::identity())
            || s.action_anchor.load(Ordering::Relaxed) != launch::anchor_check()
        {
            return Err(ActionFailure::ForeignBinary);
        }
        let addr = launch::addr_at(s.action_offset.load(Ordering::Relaxed));
        // SAFETY: the offset was taken from a `fn()` by a process running this
        // same binary (identity and anchor distance match, checked above), so
        // `addr` is that function here, as for process targets. Only processes
        // that share the segment can write the offset, and they are trusted
        // like every other field of the segment.
        let action = unsafe { std::mem::transmute::<*const (), fn()>(addr) };
        std::panic::catch_unwind(action).map_err(ActionFailure::Panicked)
    }

    /// Records this process as a holder on its first use of an inherited handle.
    fn touch(&self) {
        if let Err(e) = self.ensure_attached() {
            tracing::warn!("barrier handle not recorded: {e}");
        }
    }

    /// Breaks the barrier: every party waiting now, and every later `wait`,
    /// gets [`Error::BrokenBarrier`] until [`Barrier::reset`].
    pub fn abort(&self) {
        self.touch();
        self.inner().break_barrier();
    }

    /// Returns the barrier to its initial state: parties waiting now get
    /// [`Error::BrokenBarrier`], and later rounds work again.
    pub fn reset(&self) {
        self.touch();
        self.inner().next_generation(true);
    }

    /// The number of parties needed to release a round.
    pub fn parties(&self) -> usize {
        self.touch();
        self.state().parties.load(Ordering::Relaxed) as usize
    }

    /// The number of parties waiting in the current round (0 while broken).
    pub fn n_waiting(&self) -> usize {
        self.touch();
        let s = self.state();
        if s.state.load(Ordering::Relaxed) == FILLING {
            s.count.load(Ordering::Relaxed) as usize
        } else {
            0
        }
    }

    /// Whether the barrier is broken.
    pub fn broken(&self) -> bool {
        self.touch();
        self.state().state.load(Ordering::Relaxed) == BROKEN
    }
}

/// The table of processes in `obj`'s tail, of `capacity` slots (as a
/// handle checked it at create or open).
fn attached_table(obj: &ShmObject<BarrierState>, capacity: usize) -> &[Attached] {
    // SAFETY: the tail holds `capacity` slots (checked at create and open by
    // the handle `capacity` comes from), is 64-byte aligned, and `Attached`
    // is three atomics, valid for any bytes; the mapping lives as long as
    // `obj`.
    unsafe { std::slice::from_raw_parts(obj.tail_ptr().cast::<Attached>(), capacity) }
}

/// Whether `obj`'s table starts at `table` (the same mapping of a barrier).
fn same_table(obj: &ShmObject<BarrierState>, table: *const Attached) -> bool {
    std::ptr::eq(obj.tail_ptr().cast::<Attached>(), table)
}

fn table_capacity(parties: u32) -> usize {
    (parties as usize).saturating_add(64).clamp(128, 1 << 16)
}

impl Clone for ShmBarrier {
    fn clone(&self) -> Self {
        let barrier = ShmBarrier {
            obj: self.obj.clone(),
            capacity: self.capacity,
            counted_for: AtomicI32::new(0),
            slot: AtomicU64::new(0),
        };
        // A clone that cannot be counted now is counted at its first wait.
        match barrier.attach() {
            Ok(()) => barrier
                .counted_for
                .store(sys::process::getpid(), Ordering::Relaxed),
            Err(e) => tracing::warn!("barrier handle not recorded: {e}"),
        }
        barrier
    }
}

impl Drop for ShmBarrier {
    fn drop(&mut self) {
        // A handle inherited through fork is counted for the parent, not us.
        if self.counted_for.load(Ordering::Relaxed) == sys::process::getpid() {
            self.detach();
        }
    }
}

impl ShareHandle for ShmBarrier {
    fn to_repr(&self) -> Result<HandleRepr> {
        self.obj.to_repr()
    }

    fn from_repr(repr: &HandleRepr) -> Result<Self> {
        let obj: ShmObject<BarrierState> = ShmObject::open(repr, Kind::Barrier, 0, "Barrier")?;
        let capacity = obj.state().capacity.load(Ordering::Relaxed) as usize;
        let parties = obj.state().parties.load(Ordering::Relaxed);
        let fits = capacity
            .checked_mul(std::mem::size_of::<Attached>())
            .is_some_and(|n| n <= obj.tail_len());
        if parties == 0 || capacity == 0 || !fits {
            return Err(Error::Protocol("barrier segment is malformed".into()));
        }
        Self::from_obj(obj, capacity)
    }
}

crate::impl_share_handle!(impl<> for ShmBarrier);

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    fn run_threads<T: Send + 'static>(
        n: usize,
        f: impl Fn(usize) -> T + Send + Sync + 'static,
    ) -> Vec<T> {
        let f = Arc::new(f);
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let f = f.clone();
                std::thread::spawn(move || f(i))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    }

    #[test]
    fn zero_parties_is_invalid() {
        assert!(matches!(ShmBarrier::new(0), Err(Error::InvalidArgument(_))));
        assert!(matches!(
            ShmBarrier::with_action(0, || ()),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn rounds_release_everyone_with_distinct_indexes() {
        let b = Arc::new(ShmBarrier::new(3).unwrap());
        let b2 = b.clone();
        let rounds = run_threads(3, move |_| {
            (0..200)
                .map(|_| b2.wait_timeout(Duration::from_secs(20)).unwrap())
                .collect::<Vec<_>>()
        });
        for round in 0..200 {
            let mut idx: Vec<_> = rounds.iter().map(|r| r[round]).collect();
            idx.sort();
            assert_eq!(idx, vec![0, 1, 2], "round {round}");
        }
        assert_eq!(b.n_waiting(), 0);
        assert!(!b.broken());
    }

    static ACTIONS: AtomicUsize = AtomicUsize::new(0);

    fn count_action() {
        ACTIONS.fetch_add(1, Ordering::SeqCst);
    }

    #[test]
    fn the_action_runs_once_per_round_before_the_release() {
        let b = Arc::new(ShmBarrier::with_action(2, count_action).unwrap());
        let seen = run_threads(2, move |_| {
            (0..50).all(|round| {
                b.wait_timeout(Duration::from_secs(20)).unwrap();
                // Every party sees this round's action done.
                ACTIONS.load(Ordering::SeqCst) > round
            })
        });
        assert!(seen.into_iter().all(|ok| ok));
        assert_eq!(ACTIONS.load(Ordering::SeqCst), 50);
    }

    #[test]
    fn a_timeout_breaks_it_until_reset() {
        let b = ShmBarrier::new(2).unwrap();
        assert!(matches!(
            b.wait_timeout(Duration::from_millis(5)),
            Err(Error::BrokenBarrier)
        ));
        assert!(b.broken());
        assert_eq!(b.n_waiting(), 0);
        assert!(matches!(b.wait(), Err(Error::BrokenBarrier)));
        b.reset();
        assert!(!b.broken());
        assert!(matches!(
            b.wait_timeout(Duration::ZERO),
            Err(Error::BrokenBarrier)
        ));
        b.reset();
        assert_eq!(
            ShmBarrier::new(1)
                .unwrap()
                .wait_timeout(Duration::ZERO)
                .unwrap(),
            0
        );
    }

    #[test]
    fn try_wait_only_completes_a_round() {
        let b = Arc::new(ShmBarrier::new(2).unwrap());
        assert!(matches!(b.try_wait(), Err(Error::WouldBlock)));
        assert!(!b.broken());
        let b2 = b.clone();
        let t = std::thread::spawn(move || b2.wait_timeout(Duration::from_secs(20)));
        while b.n_waiting() != 1 {
            std::thread::yield_now();
        }
        assert_eq!(b.try_wait().unwrap(), 1);
        assert_eq!(t.join().unwrap().unwrap(), 0);
    }

    #[test]
    fn abort_and_reset_fail_the_waiters() {
        for abort in [true, false] {
            let b = Arc::new(ShmBarrier::new(3).unwrap());
            let b2 = b.clone();
            let waiters = std::thread::spawn(move || {
                run_threads(2, move |_| b2.wait_timeout(Duration::from_secs(20)))
            });
            while b.n_waiting() != 2 {
                std::thread::yield_now();
            }
            if abort {
                b.abort();
            } else {
                b.reset();
            }
            for r in waiters.join().unwrap() {
                assert!(matches!(r, Err(Error::BrokenBarrier)), "{r:?}");
            }
            assert_eq!(b.broken(), abort);
            b.reset();
            assert_eq!(b.n_waiting(), 0);
            // Usable again.
            let b2 = b.clone();
            let mut idx = run_threads(3, move |_| {
                b2.wait_timeout(Duration::from_secs(20)).unwrap()
            });
            idx.sort();
            assert_eq!(idx, vec![0, 1, 2]);
        }
    }

    #[test]
    fn outcome_reads_the_history() {
        let b = ShmBarrier::new(2).unwrap();
        {
            let inner = b.inner();
            inner.next_generation(true); // generation 0 reset
            inner.next_generation(false); // generation 1 released
            inner.next_generation(false); // generation 2 released
        }
        assert!(matches!(b.outcome(0, 3, 0), Err(Error::BrokenBarrier)));
        assert_eq!(b.outcome(1, 3, 1).unwrap(), 1);
        assert_eq!(b.outcome(2, 3, 0).unwrap(), 0);
        assert!(matches!(b.outcome(0, 70, 0), Err(Error::BrokenBarrier)));
    }

    #[test]
    fn a_dead_process_in_the_table_breaks_a_waiter() {
        let b = ShmBarrier::new(2).unwrap();
        let forged = (1u64 << 32) | RawLock::DEAD_PID as u64;
        b.table()[5].process.store(forged, Ordering::Relaxed);
        b.table()[5].handles.store(1, Ordering::Relaxed);
        let start = Instant::now();
        assert!(matches!(
            b.wait_timeout(Duration::from_secs(20)),
            Err(Error::BrokenBarrier)
        ));
        assert!(start.elapsed() < Duration::from_secs(10));
        assert_eq!(b.table()[5].process.load(Ordering::Relaxed), 0);
        // Reported once: after a reset the barrier works again.
        b.reset();
        assert!(!b.broken());
    }

    #[test]
    fn handles_are_counted_per_process() {
        use crate::Shareable;
        let me = liveness::my_word();
        let b = ShmBarrier::new(2).unwrap();
        let slot = || {
            b.table()
                .iter()
                .find(|s| s.process.load(Ordering::Relaxed) == me)
                .map(|s| s.handles.load(Ordering::Relaxed))
        };
        assert_eq!(slot(), Some(1));
        let c = b.clone();
        let d = ShmBarrier::decode(&b.encode().unwrap()).unwrap();
        assert_eq!(slot(), Some(3));
        drop((c, d));
        assert_eq!(slot(), Some(1));
    }

    fn panicking_action() {
        panic!("action failed");
    }

    #[test]
    fn a_panicking_action_breaks_the_barrier() {
        let b = Arc::new(ShmBarrier::with_action(2, panicking_action).unwrap());
        let b2 = b.clone();
        let waiter = std::thread::spawn(move || b2.wait_timeout(Duration::from_secs(20)));
        while b.n_waiting() != 1 {
            std::thread::yield_now();
        }
        let last = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| b.wait()));
        assert!(last.is_err());
        assert!(matches!(waiter.join().unwrap(), Err(Error::BrokenBarrier)));
        assert!(b.broken());
    }
}
