//! What the three queue types share: a segment holding a ring, and typed put/get on it.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::fork_sync::Mutex;
use rkyv::util::AlignedVec;

use crate::codec::Shareable;
use crate::connection::WaitSource;
use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::handle::HandleRepr;
use crate::queue::ring::{self, Ends, Padded, Ring, RingState, Side, WaitWord};
use crate::shm::{Kind, ShmObject, ShmSpec, fingerprint_str};

/// The shared state of a queue: its ring, its limit and JoinableQueue's counters.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct QueueState {
    ring: RingState,
    maxsize: Padded<AtomicU64>,
    pub(crate) join: Padded<JoinState>,
}

/// `task_done` calls and the word `join` sleeps on.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct JoinState {
    pub(crate) done: AtomicU64,
    pub(crate) wait: WaitWord,
}

/// A queue's segment, with its limits read once and checked.
#[derive(Clone)]
pub(crate) struct QueueCore {
    obj: ShmObject<QueueState>,
    cap: u64,
    maxsize: u64,
    /// A message this process took and could not open yet (shared by the
    /// handle's clones here).
    held: Arc<HeldBack>,
}

/// Messages taken that could not be decoded for want of descriptors or
/// memory (opening the handles inside one needs some): kept for the next
/// receives on the same handle (or a clone of it in this process), which
/// take them first, oldest first, instead of lost. The receive that took
/// one is told `Err(Io)` with the errno, as any call at that limit.
///
/// They belong to the process that took them: a forked child, which
/// inherits a copy of this memory, does not see them (the parent still
/// delivers them).
#[derive(Default)]
pub(crate) struct HeldBack {
    /// Whether `held` may hold a message: looked at without the lock on
    /// every receive.
    any: AtomicBool,
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    /// The process that took `messages`.
    pid: i32,
    messages: VecDeque<AlignedVec<16>>,
}

impl Held {
    /// The messages, once those a parent held before a fork are dropped.
    fn mine(&mut self) -> &mut VecDeque<AlignedVec<16>> {
        let me = crate::sys::process::getpid();
        if self.pid != me {
            self.pid = me;
            self.messages.clear();
        }
        &mut self.messages
    }
}

/// Where a message that still cannot be opened goes back.
#[derive(Clone, Copy)]
enum Keep {
    /// Ahead of the rest: it was held already.
    First,
    /// Behind the rest: it was just taken.
    Last,
}

impl HeldBack {
    /// Decodes the oldest message held back, if any; else takes one into a
    /// buffer with `take` and decodes it. A decoding that fails for want
    /// of descriptors or memory keeps the bytes for a later call.
    pub(crate) fn receive<T: Shareable>(
        &self,
        take: impl FnOnce(&mut AlignedVec<16>) -> Result<()>,
    ) -> Result<T> {
        if let Some(mut bytes) = self.take_held() {
            return self.decode_or_keep(&mut bytes, Keep::First);
        }
        with_recv_buf(|buf| {
            take(buf)?;
            self.decode_or_keep(buf, Keep::Last)
        })
    }

    /// The oldest message held back, as bytes, if any (for a receive of
    /// raw bytes, which needs no descriptor).
    pub(crate) fn take_held(&self) -> Option<AlignedVec<16>> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        let mut held = self.held.lock();
        let messages = held.mine();
        let first = messages.pop_front();
        if messages.is_empty() {
            self.any.store(false, Ordering::Release);
        }
        first
    }

    /// Puts back a message [`HeldBack::take_held`] gave, ahead of the rest.
    pub(crate) fn put_back(&self, bytes: AlignedVec<16>) {
        self.keep(bytes, Keep::First);
    }

    /// Whether a message is held back (a receive would return it now).
    pub(crate) fn is_holding(&self) -> bool {
        self.any.load(Ordering::Acquire) && !self.held.lock().mine().is_empty()
    }

    fn keep(&self, bytes: AlignedVec<16>, at: Keep) {
        let mut held = self.held.lock();
        let messages = held.mine();
        match at {
            Keep::First => messages.push_front(bytes),
            Keep::Last => messages.push_back(bytes),
        }
        self.any.store(true, Ordering::Release);
    }

    fn decode_or_keep<T: Shareable>(&self, bytes: &mut AlignedVec<16>, at: Keep) -> Result<T> {
        match T::decode(bytes) {
            Err(Error::Io(e)) if crate::sys::fd::is_exhaustion(&e) => {
                self.keep(std::mem::take(bytes), at);
                Err(Error::Io(e))
            }
            decoded => decoded,
        }
    }
}

impl std::fmt::Debug for QueueCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("qsize", &self.qsize())
            .field("maxsize", &self.maxsize)
            .field("capacity_bytes", &self.cap)
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// A queue's ends are all one flag: closed or not; and for a queue a
/// manager created, whether the manager died.
struct Closable<'a> {
    ring: Ring<'a>,
    obj: &'a ShmObject<QueueState>,
    /// When the owner was last found alive; it is looked up (in `/proc`) at
    /// most once a slice, so a waiter going to sleep pays nothing extra.
    checked: Cell<Option<Instant>>,
}

impl<'a> Closable<'a> {
    fn new(ring: Ring<'a>, obj: &'a ShmObject<QueueState>) -> Self {
        Closable {
            ring,
            obj,
            checked: Cell::new(None),
        }
    }

    /// A queue's other side is everyone: only a close or its manager's
    /// death ends it, and a manager whose liveness cannot be checked (this
    /// process is out of descriptors) counts as alive.
    fn side(&self, thorough: bool) -> Side {
        if self.ring.is_closed() || (thorough && self.owner_gone()) {
            Side::Done
        } else {
            Side::Open
        }
    }

    fn owner_gone(&self) -> bool {
        if !self.obj.has_owner() {
            return false;
        }
        let now = Instant::now();
        match self.checked.get() {
            Some(t) if now.duration_since(t) < OWNER_CHECK => false,
            Some(_) => {
                self.checked.set(Some(now));
                self.obj.owner_gone()
            }
            None => {
                self.checked.set(Some(now));
                false
            }
        }
    }

    /// What a `Closed` from the ring means: the queue was closed, or its manager died.
    fn closed_error(&self, e: Error) -> Error {
        match e {
            Error::Closed if !self.ring.is_closed() => self.obj.check_owner().err().unwrap_or(e),
            e => e,
        }
    }
}

/// How often a waiter on a manager's queue checks that the manager lives.
const OWNER_CHECK: Duration = Duration::from_millis(100);
/// How often a waiter on a queue without an owner wakes to look again.
const UNOWNED_CHECK: Duration = Duration::from_secs(1);

impl Ends for Closable<'_> {
    fn writers(&self, thorough: bool) -> Side {
        self.side(thorough)
    }
    fn readers(&self, thorough: bool) -> Side {
        self.side(thorough)
    }
    /// A queue without an owner has only its close to watch, and a close
    /// wakes every sleeper: its waiters look again only as a safeguard
    /// (against a wake-up lost with a producer killed between publishing
    /// a message and waking the consumer, say).
    fn check_every(&self) -> Duration {
        if self.obj.has_owner() {
            OWNER_CHECK
        } else {
            UNOWNED_CHECK
        }
    }
}

thread_local! {
    /// Where messages are assembled before decoding; reused to spare allocations.
    static RECV_BUF: RefCell<AlignedVec<16>> = RefCell::new(AlignedVec::new());
    /// Where messages are encoded before they are put.
    static SEND_BUF: RefCell<AlignedVec<16>> = RefCell::new(AlignedVec::new());
}

/// A received buffer larger than this is not kept for the next message.
const KEEP_BUF: usize = 4 << 20;

/// Runs `f` with this thread's receive buffer (or a fresh one if it is in use).
pub(crate) fn with_recv_buf<R>(f: impl FnOnce(&mut AlignedVec<16>) -> R) -> R {
    with_buf(&RECV_BUF, f)
}

/// Encodes `item` into this thread's send buffer and runs `f` on the bytes.
pub(crate) fn with_encoded<T: Shareable, R>(
    item: &T,
    f: impl FnOnce(&[u8]) -> Result<R>,
) -> Result<R> {
    with_buf(&SEND_BUF, |buf| {
        item.encode_into(buf)?;
        f(buf)
    })
}

fn with_buf<R>(
    key: &'static std::thread::LocalKey<RefCell<AlignedVec<16>>>,
    f: impl FnOnce(&mut AlignedVec<16>) -> R,
) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            let out = f(&mut buf);
            if buf.capacity() > KEEP_BUF {
                *buf = AlignedVec::new();
            }
            out
        }
        Err(_) => f(&mut AlignedVec::new()),
    })
}

/// The fingerprint of a queue flavour carrying `T`.
pub(crate) fn queue_fingerprint<T>(flavour: &str) -> (u64, String) {
    let name = format!("{flavour}<{}>", std::any::type_name::<T>());
    (fingerprint_str(&name), name)
}

impl QueueCore {
    /// A new queue segment: `maxsize` messages at most (0: no limit), a ring of `capacity` bytes.
    pub(crate) fn create(fingerprint: u64, maxsize: usize, capacity: usize) -> Result<QueueCore> {
        let cap = ring::capacity_for(capacity)?;
        let maxsize = maxsize as u64;
        let obj = ShmObject::create(
            Kind::Queue,
            fingerprint,
            cap as usize,
            |state: *mut QueueState, _| {
                // SAFETY: `create` hands us aligned, writable, zeroed memory for one QueueState.
                unsafe { state.write(QueueState::default()) };
                // SAFETY: just initialised.
                let state = unsafe { &*state };
                state.ring.init(cap);
                state.maxsize.0.store(maxsize, Ordering::Relaxed);
            },
        )?;
        Ok(QueueCore {
            obj,
            cap,
            maxsize,
            held: Arc::default(),
        })
    }

    /// The layout of a new queue segment (as [`QueueCore::create`] makes),
    /// for a manager server to create.
    pub(crate) fn spec(fingerprint: u64, maxsize: usize, capacity: usize) -> Result<ShmSpec> {
        let cap = ring::capacity_for(capacity)?;
        let maxsize = maxsize as u64;
        // SAFETY: QueueState is atomics and integers only; all-zero is an
        // empty ring that `init` then sizes.
        Ok(unsafe {
            ShmSpec::zeroed(Kind::Queue, fingerprint, cap as usize, |s: &QueueState| {
                s.ring.init(cap);
                s.maxsize.0.store(maxsize, Ordering::Relaxed);
            })
        })
    }

    /// Opens a decoded handle, checking kind, type and limits.
    pub(crate) fn open(repr: &HandleRepr, fingerprint: u64, name: &str) -> Result<QueueCore> {
        let obj: ShmObject<QueueState> = ShmObject::open(repr, Kind::Queue, fingerprint, name)?;
        let cap = obj.state().ring.checked_capacity()?;
        if (obj.tail_len() as u64) < cap {
            return Err(Error::Protocol("queue ring is truncated".into()));
        }
        let maxsize = obj.state().maxsize.0.load(Ordering::Relaxed);
        Ok(QueueCore {
            obj,
            cap,
            maxsize,
            held: Arc::default(),
        })
    }

    /// The encoded form of this queue.
    pub(crate) fn to_repr(&self) -> Result<HandleRepr> {
        self.obj.to_repr()
    }

    pub(crate) fn state(&self) -> &QueueState {
        self.obj.state()
    }

    pub(crate) fn ring(&self) -> Ring<'_> {
        // SAFETY: the tail holds `cap` bytes (checked in create/open), starts
        // 64-byte aligned, and lives as long as `self.obj`.
        unsafe { Ring::new(&self.obj.state().ring, self.obj.tail_ptr(), self.cap) }
    }

    pub(crate) fn put<T: Shareable>(&self, item: &T, deadline: Deadline) -> Result<()> {
        let ring = self.ring();
        with_encoded(item, |bytes| {
            let ends = Closable::new(ring, &self.obj);
            ring.put(bytes, self.maxsize, deadline, &ends)
                .map_err(|e| ends.closed_error(e))
        })
    }

    /// Takes a message; a wait that ran out is `Err(Empty)` for every
    /// queue, as a put's is `Err(Full)` (Python's `queue.Empty` and
    /// `queue.Full`, for the non-blocking and the timed call alike).
    pub(crate) fn get<T: Shareable>(&self, deadline: Deadline) -> Result<T> {
        self.get_spinning(deadline, true)
    }

    /// [`QueueCore::get`] without the spin before sleeping (see
    /// `Ring::get_without_spin`).
    pub(crate) fn get_without_spin<T: Shareable>(&self, deadline: Deadline) -> Result<T> {
        self.get_spinning(deadline, false)
    }

    fn get_spinning<T: Shareable>(&self, deadline: Deadline, spin: bool) -> Result<T> {
        let ring = self.ring();
        self.held.receive(|buf| {
            let ends = Closable::new(ring, &self.obj);
            let taken = if spin {
                ring.get(buf, None, deadline, &ends)
            } else {
                ring.get_without_spin(buf, deadline, &ends)
            };
            taken.map_err(|e| match ends.closed_error(e) {
                Error::Timeout(_) => Error::Empty,
                e => e,
            })
        })
    }

    pub(crate) fn qsize(&self) -> usize {
        self.ring().settled_len() as usize
    }

    pub(crate) fn empty(&self) -> bool {
        self.ring().settled_len() == 0
    }

    pub(crate) fn full(&self) -> bool {
        self.maxsize > 0 && self.ring().settled_len() >= self.maxsize
    }

    pub(crate) fn maxsize(&self) -> usize {
        self.maxsize as usize
    }

    pub(crate) fn capacity_bytes(&self) -> usize {
        self.cap as usize
    }

    /// `Err(ManagerGone)` if a manager created this queue and has died.
    pub(crate) fn check_owner(&self) -> Result<()> {
        self.obj.check_owner()
    }

    /// How `connection::wait` watches the queue: ready when a message is
    /// there to get or the queue is closed (or its manager died).
    pub(crate) fn wait_source(&self) -> WaitSource<'_> {
        let ring = self.ring();
        let ends = Closable::new(ring, &self.obj);
        let held = &self.held;
        WaitSource::ring(ring.data_word(), move |thorough| {
            ring.has_data() || held.is_holding() || ends.side(thorough).done()
        })
    }

    pub(crate) fn close(&self) {
        self.ring().close();
        self.state().join.0.wait.notify_always();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.ring().is_closed()
    }
}
