//! The shared-memory ring under every queue and pipe.
//!
//! One ring is a byte buffer of `capacity` bytes plus a [`RingState`], both in
//! a shared segment. Messages are variable-size byte strings, written as
//! records:
//!
//! ```text
//! | len: u32 | flags: u32 | serial: u64 | payload (len bytes, padded to 8) |
//! ```
//!
//! `head` and `tail` are byte positions that only grow (`position % capacity`
//! is the offset; the capacity is a power of two). Records start at multiples
//! of 8 and never wrap: where fewer than `HEADER + 8` bytes are left before
//! the end of the buffer, both sides skip to the start. A message that does
//! not fit in one record (it crosses the end of the buffer, or is streamed in
//! parts because it is larger than the ring) is split into several: the
//! first carries `FIRST` and, ahead of its data, the message's total length;
//! the last carries `LAST`; all carry the message's serial number.
//!
//! **Producers** take the producer lock (a [`RawLock`], so a dead holder is
//! detected) and write at `tail`; a record becomes visible when `tail` moves
//! past it. What a producer killed mid-write leaves beyond `tail` is invisible
//! and overwritten by the next one. A message that fits in the ring is written
//! only once it fits whole, so it never stops half-way; a larger one is
//! streamed chunk by chunk as consumers make room, and its producer may give up
//! (timeout, close) or die half-way: `writing` then no longer names it and
//! consumers drop what they took of it. Producers keep a small write-ahead log
//! so whoever takes over a dead producer's lock can repair the counters
//! (`puts`, `tasks`) whatever instant it died at. Producers go on from
//! their own copy of `tail` and read `head` only when their copy of it says
//! the ring is full: consumers read `tail`'s line and write `head`'s on
//! every message, and each read of those lines by a producer would pull one
//! across CPUs and back (a cross-process pipe round trip went from 2.0-2.4
//! to 1.0-1.5 µs when puts stopped reading them).
//!
//! **Consumers** take the consumer lock and read at `head`, copying each record
//! out before moving `head` past it. A consumer killed mid-read leaves `head`
//! where it was (the next consumer re-reads the record) or past a part of a
//! multi-record message (the next consumer skips the orphaned parts). Once a
//! consumer has begun taking a multi-record message it waits for the rest
//! (whatever its deadline) while the producer is alive and still writing it.
//!
//! **Waiting** spins briefly, then sleeps on a futex sequence word (`data` for
//! consumers, `space` for producers) in slices, re-checking for dead or closed
//! peers between slices: 100 ms where a peer's death is to be seen (a pipe, a
//! manager's queue), 1 s where only a close is, which wakes every sleeper
//! anyway ([`Ends::check_every`]). Wakers bump the word and call `futex_wake`
//! only when a waiter counter says someone sleeps.
//!
//! Everything read from the segment is bounds-checked: a corrupt record makes
//! the consumer drop all published bytes and report [`Error::Protocol`].

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::liveness::{CannotTell, Doubt};
use crate::sync::park::SpinSite;
use crate::sync::raw_lock::{Acquired, RawLock};
use crate::sys;
use crate::sys::futex::{self, WaitOutcome};

/// Bytes of a record header.
pub(crate) const HEADER: u64 = 16;
/// The smallest record that carries data; less room than this at the end of the buffer is skipped.
const MIN_RECORD: u64 = HEADER + 8;
/// Bytes of the total-length prefix in the first record of a multi-record message.
const PREFIX: u64 = 8;
/// The smallest ring capacity.
pub(crate) const MIN_CAPACITY: u64 = 256;
/// The largest ring capacity (a record's length must fit its `u32` field).
pub(crate) const MAX_CAPACITY: u64 = 1 << 31;
/// The largest message (a sanity bound on lengths read from shared memory).
pub(crate) const MAX_MESSAGE: u64 = 1 << 46;
/// The largest part of a streamed message: small enough that the consumer
/// copies one part out of the producer's cache while the next is written.
const MAX_CHUNK: u64 = 128 << 10;
/// A streamed message's producer waits for at least this much room per chunk.
const MIN_STREAM_CHUNK: u64 = 4096;

const FIRST: u32 = 1;
const LAST: u32 = 2;

/// How often a sleeping waiter wakes to look for dead or closed peers.
const SLICE: Duration = Duration::from_millis(100);
// The ring's wait sites, each learning its own spin budget under the
// runtime's one waiting policy (`sync::park`).
/// A producer waiting for room.
static PUT_SPIN: SpinSite = SpinSite::new();
/// A consumer waiting for a message.
static GET_SPIN: SpinSite = SpinSite::new();
/// A consumer waiting for the rest of a message being streamed.
static REST_SPIN: SpinSite = SpinSite::new();
/// A reader polling for data (`Connection::poll`, `wait`).
static POLL_SPIN: SpinSite = SpinSite::new();

/// One cache line (or more) for one side's fields, so producers and consumers
/// do not invalidate each other's lines.
#[repr(C, align(64))]
#[derive(Debug, Default)]
pub(crate) struct Padded<T>(pub(crate) T);

/// A futex sequence word and the number of processes sleeping on it.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct WaitWord {
    seq: AtomicU32,
    waiters: AtomicU32,
}

impl WaitWord {
    /// Wakes every sleeper, if any.
    pub(crate) fn notify(&self) {
        if self.waiters.load(Ordering::SeqCst) != 0 {
            self.seq.fetch_add(1, Ordering::SeqCst);
            futex::futex_wake(&self.seq, u32::MAX);
        }
    }

    /// Wakes every sleeper; for rare events (close) that must never be missed.
    pub(crate) fn notify_always(&self) {
        self.seq.fetch_add(1, Ordering::SeqCst);
        futex::futex_wake(&self.seq, u32::MAX);
    }

    /// Sleeps at most one slice (or until `deadline`) unless `ready()` holds
    /// once this waiter is registered.
    pub(crate) fn sleep(&self, deadline: Deadline, ready: impl FnOnce() -> bool) -> WaitOutcome {
        self.sleep_within(deadline, SLICE, ready)
    }

    /// As [`WaitWord::sleep`], for at most `slice`.
    fn sleep_within(
        &self,
        deadline: Deadline,
        slice: Duration,
        ready: impl FnOnce() -> bool,
    ) -> WaitOutcome {
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let seq = self.seq.load(Ordering::SeqCst);
        let outcome = if ready() {
            WaitOutcome::Woken
        } else {
            futex::futex_wait(&self.seq, seq, Some(deadline.slice(slice)))
        };
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        outcome
    }
}

impl WaitWord {
    /// Registers one more sleeper, for a waiter that sleeps on several
    /// words at once (`connection::wait`), and returns the word to sleep on
    /// with its value now. [`WaitWord::leave`] undoes it.
    pub(crate) fn enter(&self) -> (&AtomicU32, u32) {
        self.waiters.fetch_add(1, Ordering::SeqCst);
        (&self.seq, self.seq.load(Ordering::SeqCst))
    }

    /// Undoes one [`WaitWord::enter`].
    pub(crate) fn leave(&self) {
        self.waiters.fetch_sub(1, Ordering::SeqCst);
    }
}

#[repr(C)]
#[derive(Debug, Default)]
struct Config {
    capacity: AtomicU64,
    closed: AtomicU32,
    /// Times a consumer dropped what was published as corrupt (moving `head`
    /// to a `tail` that may be garbage): producers then take up `tail`
    /// itself again instead of their own copy. Rarely written, so reading it
    /// on every put costs no transfer between CPUs.
    resyncs: AtomicU32,
}

/// Fields only the producer-lock holder writes.
#[repr(C)]
#[derive(Debug, Default)]
struct ProducerSide {
    lock: RawLock,
    /// Serial of the last message begun (serials start at 1).
    puts: AtomicU64,
    /// Messages published completely (JoinableQueue's task count).
    tasks: AtomicU64,
    /// A copy of `head`, never ahead of it.
    cached_head: AtomicU64,
    /// `tail` as the producers left it: they read this, not `tail`, whose
    /// line the consumers keep reading (a read would have to fetch it back).
    /// Stored before `tail`; whoever takes over a dead producer's lock
    /// copies `tail` here again.
    own_tail: AtomicU64,
    /// The count of `resyncs` that `own_tail` takes into account.
    seen_resyncs: AtomicU32,
    /// A copy of the consumers' `taken`, never ahead of it (for `maxsize`).
    cached_taken: AtomicU64,
    /// Serial of a multi-record message whose last record is not published yet (0: none).
    writing: AtomicU64,
    /// The write-ahead log of the message being written (0: none); see `settle`.
    log_serial: AtomicU64,
    /// `tail` once the message's first record is published (0: not placed yet).
    log_first_end: AtomicU64,
    /// `tail` once its last record is published (0: not placed yet).
    log_last_end: AtomicU64,
    /// `tasks` once its last record is published.
    log_tasks: AtomicU64,
    /// `tail` before its first record (valid once `log_first_end` is set):
    /// where the ring is cut back to if the message is abandoned untaken.
    log_start: AtomicU64,
}

/// Fields only the consumer-lock holder writes.
#[repr(C)]
#[derive(Debug, Default)]
struct ConsumerSide {
    lock: RawLock,
    /// A copy of `tail`, never ahead of it.
    cached_tail: AtomicU64,
    /// Serial of the last message whose first record was taken.
    taken: AtomicU64,
}

/// The shared state of one ring (`#[repr(C)]`, atomics only, all-zero is valid but for `capacity`).
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct RingState {
    config: Padded<Config>,
    producer: Padded<ProducerSide>,
    tail: Padded<AtomicU64>,
    consumer: Padded<ConsumerSide>,
    head: Padded<AtomicU64>,
    data: Padded<WaitWord>,
    space: Padded<WaitWord>,
}

impl RingState {
    /// Records the capacity in freshly zeroed state.
    pub(crate) fn init(&self, capacity: u64) {
        self.config.0.capacity.store(capacity, Ordering::Relaxed);
    }

    /// The capacity recorded in the segment, checked.
    pub(crate) fn checked_capacity(&self) -> Result<u64> {
        let cap = self.config.0.capacity.load(Ordering::Relaxed);
        check_capacity(cap)
            .map(|_| cap)
            .map_err(|_| Error::Protocol(format!("ring capacity {cap} in segment is invalid")))
    }
}

/// The ring capacity for a request of `bytes`: the next power of two, at least the minimum.
pub(crate) fn capacity_for(bytes: usize) -> Result<u64> {
    let cap = (bytes as u64).max(MIN_CAPACITY).checked_next_power_of_two();
    cap.filter(|c| *c <= MAX_CAPACITY)
        .ok_or_else(|| Error::InvalidArgument(format!("a ring of {bytes} bytes is too large")))
}

/// Whether `cap` is a usable ring capacity.
pub(crate) fn check_capacity(cap: u64) -> Result<()> {
    if !cap.is_power_of_two() || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&cap) {
        return Err(Error::InvalidArgument(format!(
            "a ring capacity must be a power of two between {MIN_CAPACITY} and {MAX_CAPACITY} bytes, not {cap}"
        )));
    }
    Ok(())
}

/// What a look at one side of a ring found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// It may still write (or read).
    Open,
    /// It will not: it closed, or its process died.
    Done,
    /// Its process could not be checked (this one is out of descriptors,
    /// say): taken as open, but an untimed wait gives up in the end.
    Unsure(CannotTell),
}

impl Side {
    /// Whether the side is known to be done.
    pub(crate) fn done(self) -> bool {
        self == Side::Done
    }
}

/// What the two sides of a ring look like to each other: who closed, who died.
pub(crate) trait Ends {
    /// Whether more messages may come (`Done`: closed, or the writer is
    /// gone; getters drain what is left, then see `Closed`). `thorough`
    /// allows slower checks (a peer's liveness); without it only flags in
    /// memory are read, and the answer is never `Unsure`.
    fn writers(&self, thorough: bool) -> Side;
    /// Whether anyone may read (`Done`: puts fail with `Closed`).
    fn readers(&self, thorough: bool) -> Side;
    /// The longest a waiter on these ends sleeps before it looks at them
    /// again ([`Ends::writers`] or [`Ends::readers`] with `thorough`):
    /// what the ring's wake-ups do not announce (a peer's death) is seen
    /// only then. Every wake-up costs a sleeping process CPU time, so ends
    /// with nothing to watch but flags that wake-ups do announce (a
    /// close) sleep longer.
    fn check_every(&self) -> Duration {
        SLICE
    }
}

/// Whether `side` is done, noting in `doubt` a side that could not be
/// checked: `Err(Io)` once an untimed wait has had only such answers for long.
fn done_or_doubt(side: Side, doubt: &mut Doubt, deadline: &Deadline, what: &str) -> Result<bool> {
    let unsure = match side {
        Side::Done => return Ok(true),
        Side::Open => None,
        Side::Unsure(c) => Some(c),
    };
    doubt.note(unsure, deadline, what)?;
    Ok(false)
}

/// Whether a message of `total` bytes could exist here at all: its producer
/// held it whole, so it fits in the machine's memory and free swap.
fn could_exist(total: u64) -> bool {
    let memory = sys::memfd::physical_memory().unwrap_or(u64::MAX);
    total <= memory.saturating_add(sys::memfd::free_memory().unwrap_or(0))
}

/// Where bytes taken from the ring go.
pub(crate) trait Sink {
    /// Empties the sink.
    fn clear(&mut self);
    /// Bytes held.
    fn len(&self) -> usize;
    /// Makes room for `additional` more bytes.
    fn reserve(&mut self, additional: usize);
    /// Makes room for `additional` more bytes if memory allows (a process
    /// at its memory limit gets `false`, not an abort).
    fn try_reserve(&mut self, additional: usize) -> bool;
    /// Appends `len` bytes read from `src`.
    ///
    /// # Safety
    /// `src` must be valid for reads of `len` bytes.
    unsafe fn append_raw(&mut self, src: *const u8, len: usize);
}

impl Sink for Vec<u8> {
    fn clear(&mut self) {
        Vec::clear(self)
    }
    fn len(&self) -> usize {
        Vec::len(self)
    }
    fn reserve(&mut self, additional: usize) {
        Vec::reserve(self, additional)
    }
    fn try_reserve(&mut self, additional: usize) -> bool {
        Vec::try_reserve_exact(self, additional).is_ok()
    }
    unsafe fn append_raw(&mut self, src: *const u8, len: usize) {
        self.reserve(len);
        let old = self.len();
        // SAFETY: the caller vouches for `src`; `reserve` made room for `len`
        // bytes after `old`, which the copy initialises before `set_len`.
        unsafe {
            std::ptr::copy_nonoverlapping(src, self.as_mut_ptr().add(old), len);
            self.set_len(old + len);
        }
    }
}

impl Sink for rkyv::util::AlignedVec<16> {
    fn clear(&mut self) {
        rkyv::util::AlignedVec::clear(self)
    }
    fn len(&self) -> usize {
        rkyv::util::AlignedVec::len(self)
    }
    fn reserve(&mut self, additional: usize) {
        rkyv::util::AlignedVec::reserve(self, additional)
    }
    fn try_reserve(&mut self, additional: usize) -> bool {
        let Some(want) = self.len().checked_add(additional) else {
            return false;
        };
        if want <= self.capacity() {
            return true;
        }
        // Beyond its maximum, `reserve` panics.
        if want > Self::MAX_CAPACITY {
            return false;
        }
        // It grows to the next power of two (at most its maximum), and
        // aborts if that allocation fails: try that size first (freed at
        // once; the growth then takes it again).
        let grown = want
            .checked_next_power_of_two()
            .map_or(Self::MAX_CAPACITY, |p| p.min(Self::MAX_CAPACITY));
        let Ok(layout) = std::alloc::Layout::from_size_align(grown, 16) else {
            return false;
        };
        // SAFETY: `layout` has a non-zero size (`want` > capacity >= 0).
        let probe = unsafe { std::alloc::alloc(layout) };
        if probe.is_null() {
            return false;
        }
        // SAFETY: `probe` was allocated just above with `layout`.
        unsafe { std::alloc::dealloc(probe, layout) };
        rkyv::util::AlignedVec::reserve(self, additional);
        true
    }
    unsafe fn append_raw(&mut self, src: *const u8, len: usize) {
        self.reserve(len);
        let old = self.len();
        // SAFETY: as for Vec: room was reserved and the copy initialises it.
        unsafe {
            std::ptr::copy_nonoverlapping(src, self.as_mut_ptr().add(old), len);
            self.set_len(old + len);
        }
    }
}

/// The error for a wait that ran out: `now` for a non-blocking call, else `Timeout`.
pub(crate) fn gave_up(deadline: &Deadline, now: Error) -> Error {
    match deadline {
        Deadline::Now => now,
        _ => deadline.timeout_error(),
    }
}

fn round8(n: u64) -> u64 {
    n.next_multiple_of(8)
}

/// Holds one of the ring's locks; releases it on drop.
struct Held<'a>(&'a RawLock);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.unlock();
    }
}

/// How far a waiter has got: spin first, then check thoroughly, then sleep.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Spin,
    Check,
    Sleep,
}

/// What one record did for a getter.
enum Step {
    /// A whole message is in the sink.
    Done,
    /// Keep reading.
    More,
}

/// One record as found in the buffer.
#[derive(Clone, Copy)]
struct Header {
    len: u32,
    flags: u32,
    serial: u64,
}

/// A view of one ring: its state and its buffer.
#[derive(Clone, Copy)]
pub(crate) struct Ring<'a> {
    state: &'a RingState,
    buf: *mut u8,
    cap: u64,
    mask: u64,
    max_chunk: u64,
}

impl<'a> Ring<'a> {
    /// A view of the ring whose state is `state` and whose buffer is `cap` bytes at `buf`.
    ///
    /// # Safety
    /// `buf` must be valid for reads and writes of `cap` bytes for `'a`, 8-byte
    /// aligned, touched by other processes only through this protocol, and
    /// `cap` must have passed [`check_capacity`].
    pub(crate) unsafe fn new(state: &'a RingState, buf: *mut u8, cap: u64) -> Ring<'a> {
        Ring {
            state,
            buf,
            cap,
            mask: cap - 1,
            max_chunk: (cap / 4).clamp(MIN_RECORD, MAX_CHUNK) & !7,
        }
    }

    /// Whether [`Ring::close`] was called.
    pub(crate) fn is_closed(&self) -> bool {
        self.state.config.0.closed.load(Ordering::SeqCst) != 0
    }

    /// Marks the ring closed and wakes every waiter.
    pub(crate) fn close(&self) {
        self.state.config.0.closed.store(1, Ordering::SeqCst);
        self.wake_all();
    }

    /// Wakes every waiter on either side (after a flag they watch changed).
    pub(crate) fn wake_all(&self) {
        self.state.data.0.notify_always();
        self.state.space.0.notify_always();
    }

    /// Messages begun and not yet taken (approximate while others work).
    pub(crate) fn len(&self) -> u64 {
        let taken = self.state.consumer.0.taken.load(Ordering::Acquire);
        let puts = self.state.producer.0.puts.load(Ordering::Acquire);
        puts.saturating_sub(taken)
    }

    /// As [`Ring::len`], after repairing what a dead producer left: one that
    /// died after counting its message and before publishing it would
    /// otherwise be counted until the next producer takes over its lock.
    pub(crate) fn settled_len(&self) -> u64 {
        let n = self.len();
        if n == 0 || self.state.producer.0.log_serial.load(Ordering::Acquire) == 0 {
            return n;
        }
        self.recover_dead_producer();
        self.len()
    }

    /// Messages ever published completely.
    pub(crate) fn tasks(&self) -> u64 {
        self.state.producer.0.tasks.load(Ordering::Acquire)
    }

    /// The word consumers sleep on: bumped when data is published or the
    /// ring closes.
    pub(crate) fn data_word(&self) -> &'a WaitWord {
        &self.state.data.0
    }

    /// Whether any published bytes wait at `head`.
    pub(crate) fn has_data(&self) -> bool {
        let head = self.state.head.0.load(Ordering::Acquire);
        self.state.tail.0.load(Ordering::Acquire) != head
    }

    // ----- producer side -----

    /// Takes the producer lock; `Ok(None)` if the deadline passed first. A
    /// holder whose liveness cannot be checked is waited for as a live one
    /// (an untimed wait gives up with `Err(Io)` in the end).
    fn lock_producer(&self, deadline: Deadline) -> Result<Option<Held<'a>>> {
        let lock = &self.state.producer.0.lock;
        let Some(acquired) = lock.lock_watched(deadline, || Ok(()))? else {
            return Ok(None);
        };
        let held = Held(lock);
        if let Acquired::OwnerDied { pid } = acquired {
            tracing::warn!(pid, "a queue producer died mid-put; repairing");
            self.settle();
        }
        Ok(Some(held))
    }

    /// Repairs the producer side after its lock holder died or gave up mid-message.
    ///
    /// Idempotent: a repairer that dies half-way leaves work the next one redoes.
    fn settle(&self) {
        let p = &self.state.producer.0;
        // A producer that died between its two stores left its copy ahead.
        p.own_tail
            .store(self.state.tail.0.load(Ordering::Acquire), Ordering::Relaxed);
        let serial = p.log_serial.load(Ordering::Acquire);
        if serial != 0 {
            self.cut_abandoned(serial);
            let tail = self.state.tail.0.load(Ordering::Acquire);
            let published = |end: u64| end != 0 && tail.wrapping_sub(end) < (1 << 63);
            let first_end = p.log_first_end.load(Ordering::Acquire);
            let puts = if published(first_end) {
                serial
            } else {
                serial - 1
            };
            p.puts.store(puts, Ordering::Release);
            let last_end = p.log_last_end.load(Ordering::Acquire);
            if last_end != 0 {
                let tasks = p.log_tasks.load(Ordering::Acquire);
                let tasks = if published(last_end) {
                    tasks
                } else {
                    tasks.saturating_sub(1)
                };
                p.tasks.store(tasks, Ordering::Release);
            }
            p.log_serial.store(0, Ordering::Release);
        }
        if p.writing.swap(0, Ordering::SeqCst) != 0 {
            // A consumer may be waiting for the rest of that message.
            self.state.data.0.notify_always();
        }
    }

    /// Takes back the records of message `serial` (logged, we hold the
    /// producer lock) if its first record was published, its last was not,
    /// and no consumer has begun taking it: a message nobody will finish
    /// must not count in `qsize` nor fill the ring until a consumer comes.
    /// Needs the consumer lock, taken only if free: a consumer at work
    /// drops the abandoned parts itself.
    fn cut_abandoned(&self, serial: u64) {
        let p = &self.state.producer.0;
        let tail = self.state.tail.0.load(Ordering::Acquire);
        let published = |end: u64| end != 0 && tail.wrapping_sub(end) < (1 << 63);
        if !published(p.log_first_end.load(Ordering::Acquire))
            || published(p.log_last_end.load(Ordering::Acquire))
        {
            return;
        }
        let Ok(Some(_consumer)) = self.lock_consumer(Deadline::Now) else {
            return;
        };
        let start = p.log_start.load(Ordering::Acquire);
        let head = self.state.head.0.load(Ordering::Acquire);
        // Untaken: the consumers' position is at or before the message's start.
        if start.wrapping_sub(head) > self.cap || tail.wrapping_sub(start) > self.cap {
            return;
        }
        tracing::debug!(serial, "taking back the records of an abandoned message");
        self.state
            .consumer
            .0
            .cached_tail
            .store(start, Ordering::Relaxed);
        // From here the message was never placed: `settle` counts it out.
        p.own_tail.store(start, Ordering::Relaxed);
        self.state.tail.0.store(start, Ordering::SeqCst);
        self.state.space.0.notify();
    }

    /// Unless a live producer holds the producer lock, takes it and repairs
    /// what a dead or misbehaving one left (a message marked as being written
    /// that nobody writes). For waiters that would otherwise wait for ever.
    pub(crate) fn recover_dead_producer(&self) {
        // Deadline::Now checks a holder's liveness and takes the lock only if
        // it died (repairing as it does) or the lock is free.
        if let Ok(Some(_held)) = self.lock_producer(Deadline::Now) {
            self.settle();
        }
    }

    /// Free bytes if `tail` is the producer's position, refreshing the copy of `head` if
    /// fewer than `need` bytes look free.
    fn free(&self, tail: u64, need: u64) -> u64 {
        let p = &self.state.producer.0;
        let free_from = |head: u64| {
            let used = tail.wrapping_sub(head);
            // A head ahead of tail or too far behind is corrupt: treat as full until a
            // consumer resynchronises.
            self.cap.saturating_sub(used)
        };
        let free = free_from(p.cached_head.load(Ordering::Relaxed));
        if free >= need {
            return free;
        }
        let head = self.state.head.0.load(Ordering::Acquire);
        p.cached_head.store(head, Ordering::Relaxed);
        free_from(head)
    }

    /// Bytes to skip at `pos` because no record fits before the end of the buffer.
    fn skip_at(&self, pos: u64) -> u64 {
        let rem = self.cap - (pos & self.mask);
        if rem < MIN_RECORD { rem } else { 0 }
    }

    /// Bytes a whole message of `total` bytes takes if written from `tail` without waiting.
    fn cost(&self, tail: u64, total: u64) -> u64 {
        let mut pos = tail;
        let mut left = total;
        let mut first = true;
        loop {
            pos += self.skip_at(pos);
            let room = self.cap - (pos & self.mask) - HEADER;
            if first && round8(total) <= room {
                return pos + HEADER + round8(total) - tail;
            }
            let prefix = if first { PREFIX } else { 0 };
            let data = left.min(room - prefix);
            pos += HEADER + round8(prefix + data);
            left -= data;
            first = false;
            if left == 0 {
                return pos - tail;
            }
        }
    }

    /// Spins, checks, then sleeps on `space` until `ready()` or the deadline.
    fn wait_producer(
        &self,
        deadline: Deadline,
        ends: &dyn Ends,
        mut ready: impl FnMut() -> bool,
    ) -> Result<()> {
        // Room is usually there already: say so without reading `head`, which
        // the consumer writes on every get. Reading it would take that line
        // from the consumer, who then waits to get it back: two transfers
        // between CPUs on every message.
        if ready() {
            return Ok(());
        }
        let head = &self.state.head.0;
        let mut phase = Phase::Spin;
        let mut doubt = Doubt::default();
        loop {
            // Read before `ready()`: a head that moves after this wakes the sleep below.
            let seen = head.load(Ordering::SeqCst);
            if ready() {
                return Ok(());
            }
            if ends.readers(false).done() {
                return Err(Error::Closed);
            }
            if deadline.expired() {
                if ends.readers(true).done() {
                    return Err(Error::Closed);
                }
                return Err(Error::Full);
            }
            match phase {
                Phase::Spin => {
                    PUT_SPIN.spin_until(|| head.load(Ordering::Acquire) != seen);
                    phase = Phase::Check;
                }
                Phase::Check => {
                    if done_or_doubt(ends.readers(true), &mut doubt, &deadline, "the reader")? {
                        return Err(Error::Closed);
                    }
                    phase = Phase::Sleep;
                }
                Phase::Sleep => {
                    let outcome =
                        self.state
                            .space
                            .0
                            .sleep_within(deadline, ends.check_every(), || {
                                head.load(Ordering::SeqCst) != seen || ends.readers(false).done()
                            });
                    if outcome == WaitOutcome::TimedOut {
                        phase = Phase::Check;
                    }
                }
            }
        }
    }

    /// Puts one message. `maxsize` (0: none) bounds the number of messages.
    ///
    /// With `Deadline::Now` the message must fit at once. A put that gives
    /// up, at once or at its deadline, says `Full` (as Python's `put` does).
    pub(crate) fn put(
        &self,
        msg: &[u8],
        maxsize: u64,
        deadline: Deadline,
        ends: &dyn Ends,
    ) -> Result<()> {
        let total = msg.len() as u64;
        if total > MAX_MESSAGE {
            return Err(Error::InvalidArgument(format!(
                "a message of {total} bytes is too large"
            )));
        }
        if ends.readers(false).done() {
            return Err(Error::Closed);
        }
        let _held = self.lock_producer(deadline)?.ok_or(Error::Full)?;
        if ends.readers(false).done() {
            return Err(Error::Closed);
        }
        let p = &self.state.producer.0;
        if maxsize > 0 {
            self.wait_producer(deadline, ends, || self.below(maxsize))?;
        }
        let serial = p.puts.load(Ordering::Relaxed).wrapping_add(1).max(1);
        p.log_first_end.store(0, Ordering::Relaxed);
        p.log_last_end.store(0, Ordering::Relaxed);
        p.log_serial.store(serial, Ordering::Release);
        p.puts.store(serial, Ordering::Release);
        let result = self.write_records(msg, serial, deadline, ends);
        if result.is_err() {
            self.settle();
        }
        p.log_serial.store(0, Ordering::Release);
        result
    }

    /// Whether fewer than `maxsize` messages are in the ring (we hold the
    /// producer lock). Reads the consumers' `taken`, whose line they write
    /// on every get, only when the copy of it says the ring is full: it only
    /// grows, so an old copy can only make the ring look fuller than it is.
    fn below(&self, maxsize: u64) -> bool {
        let p = &self.state.producer.0;
        let puts = p.puts.load(Ordering::Relaxed);
        if puts.saturating_sub(p.cached_taken.load(Ordering::Relaxed)) < maxsize {
            return true;
        }
        let taken = self.state.consumer.0.taken.load(Ordering::Acquire);
        p.cached_taken.store(taken, Ordering::Relaxed);
        puts.saturating_sub(taken) < maxsize
    }

    fn write_records(
        &self,
        msg: &[u8],
        serial: u64,
        deadline: Deadline,
        ends: &dyn Ends,
    ) -> Result<()> {
        let p = &self.state.producer.0;
        let total = msg.len() as u64;
        let resyncs = self.state.config.0.resyncs.load(Ordering::Acquire);
        let own = p.own_tail.load(Ordering::Relaxed);
        // Our copy of `head` trails `head`, and we never write more than the
        // ring holds past it: a copy of `tail` further ahead is garbage.
        let in_range = own.wrapping_sub(p.cached_head.load(Ordering::Relaxed)) <= self.cap;
        let mut tail = if resyncs == p.seen_resyncs.load(Ordering::Relaxed) && in_range {
            own
        } else {
            // A consumer gave up on what it found and went to `tail`, or our
            // copy is garbage: go on from `tail`.
            p.seen_resyncs.store(resyncs, Ordering::Relaxed);
            let tail = self.state.tail.0.load(Ordering::Acquire);
            p.own_tail.store(tail, Ordering::Relaxed);
            tail
        };
        if !tail.is_multiple_of(8) {
            // Only a bug or stray write can do this; records must stay aligned.
            // Consumers will find garbage at their head and resynchronise.
            tracing::warn!(tail, "misaligned tail in a shared ring");
            tail = tail.next_multiple_of(8);
            p.own_tail.store(tail, Ordering::Relaxed);
            self.state.tail.0.store(tail, Ordering::SeqCst);
        }
        p.log_start.store(tail, Ordering::Release);
        let whole = self.cost(tail, total);
        let streamed = whole > self.cap;
        if !streamed {
            self.wait_producer(deadline, ends, || self.free(tail, whole) >= whole)?;
        } else if deadline == Deadline::Now {
            return Err(Error::Full);
        }
        let mut sent = 0u64;
        let mut first = true;
        loop {
            let skip = self.skip_at(tail);
            let room = self.cap - ((tail + skip) & self.mask) - HEADER;
            let left = total - sent;
            // A message that fits is split only where it crosses the end of the
            // buffer; a streamed one goes in chunks, so the consumer copies one
            // while the producer writes the next.
            let single = first && round8(total) <= room && (!streamed || total <= self.max_chunk);
            let prefix = if first && !single { PREFIX } else { 0 };
            let chunk = if streamed { self.max_chunk } else { u64::MAX };
            let mut data = if single {
                total
            } else {
                left.min(chunk - prefix).min(room - prefix)
            };
            if streamed {
                // Write what fits now, but wait for room for a worthwhile chunk.
                let want = data.min(MIN_STREAM_CHUNK);
                let need = skip + HEADER + round8(prefix + want);
                let mut free = 0;
                self.wait_producer(deadline, ends, || {
                    free = self.free(tail, skip + HEADER + round8(prefix + data));
                    free >= need
                })?;
                let fits = ((free - skip - HEADER) & !7) - prefix;
                data = data.min(fits);
            }
            let is_last = sent + data == total;
            let payload = prefix + data;
            tail += skip;
            let off = (tail & self.mask) as usize;
            let flags = if first { FIRST } else { 0 } | if is_last { LAST } else { 0 };
            // SAFETY: `off + HEADER + round8(payload) <= cap` (the record fits in `room`),
            // the bytes from `tail` on are free (checked above) and only the
            // producer-lock holder, us, writes there until `tail` moves past them.
            unsafe {
                let at = self.buf.add(off);
                at.cast::<u32>().write_volatile(payload as u32);
                at.add(4).cast::<u32>().write_volatile(flags);
                at.add(8).cast::<u64>().write_volatile(serial);
                if prefix != 0 {
                    at.add(16).cast::<u64>().write_volatile(total);
                }
                std::ptr::copy_nonoverlapping(
                    msg.as_ptr().add(sent as usize),
                    at.add((HEADER + prefix) as usize),
                    data as usize,
                );
            }
            let end = tail + HEADER + round8(payload);
            if first {
                p.log_first_end.store(end, Ordering::Release);
            }
            if is_last {
                let tasks = p.tasks.load(Ordering::Relaxed) + 1;
                p.log_tasks.store(tasks, Ordering::Release);
                p.log_last_end.store(end, Ordering::Release);
                p.tasks.store(tasks, Ordering::Release);
            } else if first {
                p.writing.store(serial, Ordering::Release);
            }
            p.own_tail.store(end, Ordering::Relaxed);
            self.state.tail.0.store(end, Ordering::SeqCst);
            self.state.data.0.notify();
            if is_last && !first {
                p.writing.store(0, Ordering::Release);
            }
            tail = end;
            sent += data;
            first = false;
            if is_last {
                return Ok(());
            }
        }
    }

    // ----- consumer side -----

    /// Takes the consumer lock; `Ok(None)` if the deadline passed first (as
    /// for [`Ring::lock_producer`]).
    fn lock_consumer(&self, deadline: Deadline) -> Result<Option<Held<'a>>> {
        let lock = &self.state.consumer.0.lock;
        let Some(acquired) = lock.lock_watched(deadline, || Ok(()))? else {
            return Ok(None);
        };
        if let Acquired::OwnerDied { pid } = acquired {
            tracing::warn!(
                pid,
                "a queue consumer died mid-get; the message it was taking may be lost"
            );
        }
        Ok(Some(Held(lock)))
    }

    /// Moves `head` (we hold the consumer lock) and wakes waiting producers.
    fn advance_head(&self, to: u64) {
        self.state.head.0.store(to, Ordering::SeqCst);
        self.state.space.0.notify();
    }

    /// Drops everything published after a corrupt record.
    fn resync(&self, tail: u64, why: &str) -> Error {
        let head = self.state.head.0.load(Ordering::Relaxed);
        let lost = tail.wrapping_sub(head);
        tracing::warn!(lost, "corrupt record in a shared ring: {why}");
        let c = &self.state.consumer.0;
        c.cached_tail.store(tail, Ordering::Relaxed);
        c.taken.store(
            self.state.producer.0.puts.load(Ordering::Acquire),
            Ordering::Release,
        );
        self.advance_head(tail);
        self.state.config.0.resyncs.fetch_add(1, Ordering::SeqCst);
        Error::Protocol(format!(
            "corrupt record in a shared ring ({why}); {lost} bytes dropped"
        ))
    }

    /// The published end of the ring as far as the consumer at `head` needs to know.
    fn visible_tail(&self, head: u64) -> u64 {
        let c = &self.state.consumer.0;
        let cached = c.cached_tail.load(Ordering::Relaxed);
        let ahead = cached.wrapping_sub(head);
        if ahead != 0 && ahead <= self.cap {
            return cached;
        }
        let tail = self.state.tail.0.load(Ordering::Acquire);
        c.cached_tail.store(tail, Ordering::Relaxed);
        tail
    }

    /// Takes one message into `out`. `max`: refuse (and leave in place) a longer one.
    ///
    /// With `Deadline::Now` returns `Empty` when nothing is published.
    pub(crate) fn get<S: Sink>(
        &self,
        out: &mut S,
        max: Option<u64>,
        deadline: Deadline,
        ends: &dyn Ends,
    ) -> Result<()> {
        self.take(out, max, deadline, ends, Phase::Spin)
    }

    /// [`Ring::get`] for a consumer that expects nothing soon (an idle
    /// pool's result handler): it sleeps at once instead of spinning first,
    /// which would cost CPU at each wake-up and teach the spin policy that
    /// spinning fails here.
    pub(crate) fn get_without_spin<S: Sink>(
        &self,
        out: &mut S,
        deadline: Deadline,
        ends: &dyn Ends,
    ) -> Result<()> {
        self.take(out, None, deadline, ends, Phase::Check)
    }

    fn take<S: Sink>(
        &self,
        out: &mut S,
        max: Option<u64>,
        deadline: Deadline,
        ends: &dyn Ends,
        first: Phase,
    ) -> Result<()> {
        out.clear();
        if deadline == Deadline::Now && !self.has_data() {
            // Nothing to take: say so without the consumer lock, which a getter
            // blocked in another process may hold.
            if ends.writers(true).done() && !self.has_data() {
                return Err(Error::Closed);
            }
            return Err(Error::Empty);
        }
        let _held = self
            .lock_consumer(deadline)?
            .ok_or_else(|| gave_up(&deadline, Error::Empty))?;
        let p = &self.state.producer.0;
        let tail_word = &self.state.tail.0;
        let mut assembling: Option<(u64, u64)> = None;
        let mut phase = first;
        let mut doubt = Doubt::default();
        loop {
            let head = self.state.head.0.load(Ordering::Relaxed);
            let tail = self.visible_tail(head);
            if tail != head {
                match self.take_record(head, tail, &mut assembling, out, max) {
                    Ok(Step::Done) => return Ok(()),
                    Ok(Step::More) => {
                        phase = Phase::Spin;
                        continue;
                    }
                    Err(e) => {
                        out.clear();
                        return Err(e);
                    }
                }
            }
            let ready = || tail_word.load(Ordering::SeqCst) != head;
            if let Some((serial, _)) = assembling {
                if p.writing.load(Ordering::SeqCst) != serial {
                    if ready() {
                        continue;
                    }
                    tracing::debug!(serial, "dropping a message its producer abandoned");
                    assembling = None;
                    out.clear();
                    continue;
                }
                // The rest is on its way: wait for it whatever the deadline, as long
                // as its producer lives.
                match phase {
                    Phase::Spin => {
                        REST_SPIN.spin_until(ready);
                        phase = Phase::Sleep;
                    }
                    _ => {
                        let outcome = self.state.data.0.sleep(Deadline::Never, || {
                            ready() || p.writing.load(Ordering::SeqCst) != serial
                        });
                        if outcome == WaitOutcome::TimedOut {
                            self.recover_dead_producer();
                        }
                    }
                }
                continue;
            }
            if ends.writers(false).done() {
                if ready() {
                    continue;
                }
                return Err(Error::Closed);
            }
            if deadline.expired() {
                if ends.writers(true).done() && !ready() {
                    return Err(Error::Closed);
                }
                if ready() {
                    continue;
                }
                return Err(gave_up(&deadline, Error::Empty));
            }
            match phase {
                Phase::Spin => {
                    GET_SPIN.spin_until(ready);
                    phase = Phase::Check;
                }
                Phase::Check => {
                    if done_or_doubt(ends.writers(true), &mut doubt, &deadline, "the writer")? {
                        if ready() {
                            continue;
                        }
                        return Err(Error::Closed);
                    }
                    phase = Phase::Sleep;
                }
                Phase::Sleep => {
                    let outcome =
                        self.state
                            .data
                            .0
                            .sleep_within(deadline, ends.check_every(), || {
                                ready() || ends.writers(false).done()
                            });
                    if outcome == WaitOutcome::TimedOut {
                        phase = Phase::Check;
                    }
                }
            }
        }
    }

    fn read_header(&self, off: u64) -> Header {
        // SAFETY: callers check `off + HEADER <= cap` and `off % 8 == 0`; the
        // buffer is valid for `cap` bytes. Volatile reads: another process owns
        // these bytes' contents, and any bit pattern is a valid integer.
        unsafe {
            let at = self.buf.add(off as usize);
            Header {
                len: at.cast::<u32>().read_volatile(),
                flags: at.add(4).cast::<u32>().read_volatile(),
                serial: at.add(8).cast::<u64>().read_volatile(),
            }
        }
    }

    fn take_record<S: Sink>(
        &self,
        head: u64,
        tail: u64,
        assembling: &mut Option<(u64, u64)>,
        out: &mut S,
        max: Option<u64>,
    ) -> Result<Step> {
        let used = tail.wrapping_sub(head);
        if used > self.cap {
            *assembling = None;
            return Err(self.resync(tail, "positions out of range"));
        }
        if !head.is_multiple_of(8) {
            // Left by a resynchronisation to a corrupt tail, which the producer
            // realigns the same way before it writes again.
            let aligned = head.next_multiple_of(8);
            if aligned.wrapping_sub(head) > used {
                *assembling = None;
                return Err(self.resync(tail, "misaligned head"));
            }
            self.advance_head(aligned);
            return Ok(Step::More);
        }
        let off = head & self.mask;
        let rem = self.cap - off;
        if rem < MIN_RECORD {
            if used < rem {
                *assembling = None;
                return Err(self.resync(tail, "short skip at the end of the buffer"));
            }
            self.advance_head(head + rem);
            return Ok(Step::More);
        }
        let header = self.read_header(off);
        let len = header.len as u64;
        let size = HEADER + round8(len);
        if len > rem - HEADER || size > used || header.flags & !(FIRST | LAST) != 0 {
            *assembling = None;
            return Err(self.resync(tail, "bad record length or flags"));
        }
        // SAFETY: `off + HEADER + len <= cap`, checked just above.
        let payload = unsafe { self.buf.add((off + HEADER) as usize) };
        let first = header.flags & FIRST != 0;
        let last = header.flags & LAST != 0;
        if first {
            if assembling.take().is_some() {
                tracing::debug!("dropping a partial message its producer abandoned");
            }
            out.clear();
            let (total, prefix) = if last {
                (len, 0)
            } else {
                if len < PREFIX {
                    return Err(self.resync(tail, "first record too short"));
                }
                // SAFETY: the payload holds at least PREFIX bytes, 8-aligned.
                let total = unsafe { payload.cast::<u64>().read_volatile() };
                if total < len - PREFIX || total > MAX_MESSAGE {
                    return Err(self.resync(tail, "bad message length"));
                }
                (total, PREFIX)
            };
            if let Some(max) = max
                && total > max
            {
                return Err(Error::InvalidArgument(format!(
                    "the next message has {total} bytes, more than the maximum of {max}; it was left in place"
                )));
            }
            // Room for the whole message before it is taken: a consumer at
            // its memory limit is told, and the message stays for another.
            // (No part grows the buffer after this, so no abort.)
            if !usize::try_from(total).is_ok_and(|total| out.try_reserve(total)) {
                if !could_exist(total) {
                    // A length no producer on this machine could have held:
                    // a corrupt record, not a message to wait for room for.
                    return Err(self.resync(tail, "message longer than this machine's memory"));
                }
                return Err(Error::Io(std::io::Error::new(
                    std::io::ErrorKind::OutOfMemory,
                    format!("no memory for the next message ({total} bytes); it was left in place"),
                )));
            }
            self.state
                .consumer
                .0
                .taken
                .store(header.serial, Ordering::Release);
            // SAFETY: `payload + prefix .. payload + len` lies within the record.
            unsafe { out.append_raw(payload.add(prefix as usize), (len - prefix) as usize) };
            self.advance_head(head + size);
            if last {
                return Ok(Step::Done);
            }
            *assembling = Some((header.serial, total));
            return Ok(Step::More);
        }
        match *assembling {
            Some((serial, total)) if serial == header.serial => {
                if out.len() as u64 + len > total || (last && out.len() as u64 + len != total) {
                    *assembling = None;
                    return Err(self.resync(tail, "message parts do not add up"));
                }
                // SAFETY: `payload .. payload + len` lies within the record.
                unsafe { out.append_raw(payload, len as usize) };
                self.advance_head(head + size);
                if last {
                    *assembling = None;
                    return Ok(Step::Done);
                }
                Ok(Step::More)
            }
            _ => {
                // A part of a message whose first part a dead consumer took, or
                // whose producer gave up: nobody can use it.
                self.advance_head(head + size);
                Ok(Step::More)
            }
        }
    }

    /// Waits until data is published or `ends` says the writers are done;
    /// `Ok(true)` if so. An untimed wait that cannot check the writer for
    /// long fails with `Err(Io)`.
    pub(crate) fn wait_readable(&self, deadline: Deadline, ends: &dyn Ends) -> Result<bool> {
        let ready = || self.has_data() || ends.writers(false).done();
        let mut phase = Phase::Spin;
        let mut doubt = Doubt::default();
        loop {
            if ready() {
                return Ok(true);
            }
            if deadline.expired() {
                return Ok(ends.writers(true).done() || ready());
            }
            match phase {
                Phase::Spin => {
                    POLL_SPIN.spin_until(ready);
                    phase = Phase::Check;
                }
                Phase::Check => {
                    if done_or_doubt(ends.writers(true), &mut doubt, &deadline, "the writer")? {
                        return Ok(true);
                    }
                    phase = Phase::Sleep;
                }
                Phase::Sleep => {
                    let slice = ends.check_every();
                    if self.state.data.0.sleep_within(deadline, slice, ready)
                        == WaitOutcome::TimedOut
                    {
                        phase = Phase::Check;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;
    use std::sync::Arc;

    /// A ring in ordinary memory, for tests within one process.
    struct TestRing {
        state: Box<RingState>,
        buf: Box<[u64]>,
        cap: u64,
    }

    // SAFETY: the buffer is only reached through the ring protocol.
    unsafe impl Sync for TestRing {}
    // SAFETY: as above.
    unsafe impl Send for TestRing {}

    impl TestRing {
        fn new(cap: u64) -> Arc<TestRing> {
            check_capacity(cap).unwrap();
            let state = Box::<RingState>::default();
            state.init(cap);
            Arc::new(TestRing {
                state,
                buf: vec![0u64; (cap / 8) as usize].into_boxed_slice(),
                cap,
            })
        }

        fn ring(&self) -> Ring<'_> {
            // SAFETY: the buffer holds `cap` bytes, 8-aligned, for the life of `self`.
            unsafe { Ring::new(&self.state, self.buf.as_ptr() as *mut u8, self.cap) }
        }

        fn put(&self, msg: &[u8], deadline: Deadline) -> Result<()> {
            let r = self.ring();
            r.put(msg, 0, deadline, &Flag(r))
        }

        fn put_max(&self, msg: &[u8], maxsize: u64, deadline: Deadline) -> Result<()> {
            let r = self.ring();
            r.put(msg, maxsize, deadline, &Flag(r))
        }

        fn get(&self, deadline: Deadline) -> Result<Vec<u8>> {
            let r = self.ring();
            let mut out = Vec::new();
            r.get(&mut out, None, deadline, &Flag(r)).map(|_| out)
        }

        fn tail(&self) -> u64 {
            self.state.tail.0.load(Ordering::Acquire)
        }

        fn head(&self) -> u64 {
            self.state.head.0.load(Ordering::Acquire)
        }

        fn byte(&self, pos: u64) -> *mut u8 {
            (self.buf.as_ptr() as *mut u8).wrapping_add((pos % self.cap) as usize)
        }
    }

    struct Flag<'a>(Ring<'a>);

    impl Ends for Flag<'_> {
        fn writers(&self, _: bool) -> Side {
            if self.0.is_closed() {
                Side::Done
            } else {
                Side::Open
            }
        }
        fn readers(&self, _: bool) -> Side {
            self.writers(false)
        }
    }

    /// Message `id` of `len` bytes: recognisable content.
    fn message(id: u64, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (id.wrapping_mul(31).wrapping_add(i as u64 * 7) % 251) as u8)
            .collect()
    }

    const SOON: Deadline = Deadline::Never;

    #[test]
    fn small_messages_round_trip() {
        let t = TestRing::new(256);
        for round in 0..50u64 {
            let msgs: Vec<_> = (0..3)
                .map(|i| message(round * 3 + i, i as usize * 9))
                .collect();
            for m in &msgs {
                t.put(m, Deadline::Now).unwrap();
            }
            assert_eq!(t.ring().len(), 3);
            for m in &msgs {
                assert_eq!(&t.get(Deadline::Now).unwrap(), m);
            }
            assert!(matches!(t.get(Deadline::Now), Err(Error::Empty)));
        }
        assert_eq!(t.ring().len(), 0);
        assert_eq!(t.ring().tasks(), 150);
    }

    #[test]
    fn zero_length_messages() {
        let t = TestRing::new(256);
        for _ in 0..100 {
            t.put(&[], Deadline::Now).unwrap();
            assert_eq!(t.get(Deadline::Now).unwrap(), Vec::<u8>::new());
        }
    }

    #[test]
    fn full_ring_refuses_try_and_times_out() {
        let t = TestRing::new(256);
        let m = message(1, 100);
        t.put(&m, Deadline::Now).unwrap();
        t.put(&m, Deadline::Now).unwrap();
        assert!(matches!(t.put(&m, Deadline::Now), Err(Error::Full)));
        let d = Duration::from_millis(20);
        assert!(matches!(t.put(&m, Deadline::after(d)), Err(Error::Full)));
        // The failed puts left nothing behind.
        assert_eq!(t.ring().len(), 2);
        assert_eq!(t.get(Deadline::Now).unwrap(), m);
        assert_eq!(t.get(Deadline::Now).unwrap(), m);
        assert!(matches!(
            t.get(Deadline::after(d)),
            Err(Error::Timeout(x)) if x == d
        ));
    }

    #[test]
    fn maxsize_limits_messages() {
        let t = TestRing::new(4096);
        t.put_max(b"a", 2, Deadline::Now).unwrap();
        t.put_max(b"b", 2, Deadline::Now).unwrap();
        assert!(matches!(
            t.put_max(b"c", 2, Deadline::Now),
            Err(Error::Full)
        ));
        assert_eq!(t.get(Deadline::Now).unwrap(), b"a");
        t.put_max(b"c", 2, Deadline::Now).unwrap();
        assert_eq!(t.ring().len(), 2);
        // Many laps of the bound: the producer's copy of the consumers'
        // count never lets it past the bound, and never keeps it out of room.
        for i in 0..1000u32 {
            assert!(matches!(
                t.put_max(&i.to_le_bytes(), 2, Deadline::Now),
                Err(Error::Full)
            ));
            t.get(Deadline::Now).unwrap();
            t.put_max(&i.to_le_bytes(), 2, Deadline::Now).unwrap();
            assert_eq!(t.ring().len(), 2);
        }
    }

    #[test]
    fn larger_than_ring_streams_through() {
        let t = TestRing::new(512);
        let big = message(9, 10_000);
        assert!(matches!(t.put(&big, Deadline::Now), Err(Error::Full)));
        let t2 = t.clone();
        let big2 = big.clone();
        let producer = std::thread::spawn(move || t2.put(&big2, SOON));
        assert_eq!(t.get(SOON).unwrap(), big);
        producer.join().unwrap().unwrap();
        assert_eq!(t.ring().len(), 0);
    }

    #[test]
    fn streams_start_anywhere_in_the_ring() {
        for cap in [256u64, 512, 4096] {
            let t = TestRing::new(cap);
            for k in 0..(cap as usize / 4) {
                // Move the ring's position by a different amount each time.
                t.put(&message(0, k), Deadline::Now).unwrap();
                t.get(Deadline::Now).unwrap();
                let big = message(k as u64, cap as usize * 3 + k);
                let t2 = t.clone();
                let big2 = big.clone();
                let producer = std::thread::spawn(move || {
                    t2.put(&big2, Deadline::after(Duration::from_secs(20)))
                });
                assert_eq!(
                    t.get(Deadline::after(Duration::from_secs(20))).unwrap(),
                    big
                );
                producer.join().unwrap().unwrap();
            }
        }
    }

    #[test]
    fn abandoned_stream_is_dropped_by_the_consumer() {
        let t = TestRing::new(512);
        // The put gives up half-way through while a consumer holds its lock
        // (so the parts stay: see `an_abandoned_stream_nobody_took_is_taken_back`).
        abandon_a_stream_behind_a_busy_consumer(&t);
        assert_eq!(t.ring().len(), 1, "its first part is still counted");
        // A getter takes the abandoned parts, drops them, and gets the next message.
        let t2 = t.clone();
        let getter = std::thread::spawn(move || t2.get(SOON));
        t.put(b"after", SOON).unwrap();
        assert_eq!(getter.join().unwrap().unwrap(), b"after");
        assert_eq!(t.ring().len(), 0);
    }

    #[test]
    fn close_refuses_puts_and_drains_gets() {
        let t = TestRing::new(256);
        t.put(b"x", Deadline::Now).unwrap();
        t.ring().close();
        assert!(matches!(t.put(b"y", Deadline::Now), Err(Error::Closed)));
        assert_eq!(t.get(SOON).unwrap(), b"x");
        assert!(matches!(t.get(SOON), Err(Error::Closed)));
        assert!(matches!(t.get(Deadline::Now), Err(Error::Closed)));
    }

    #[test]
    fn try_get_says_empty_while_a_getter_blocks() {
        let t = TestRing::new(256);
        let t2 = t.clone();
        let blocked = std::thread::spawn(move || t2.get(Deadline::after(Duration::from_secs(20))));
        for _ in 0..100 {
            assert!(matches!(t.get(Deadline::Now), Err(Error::Empty)));
        }
        t.put(b"x", Deadline::Now).unwrap();
        assert_eq!(blocked.join().unwrap().unwrap(), b"x");
    }

    #[test]
    fn close_wakes_a_blocked_getter() {
        let t = TestRing::new(256);
        let t2 = t.clone();
        let h = std::thread::spawn(move || t2.get(SOON));
        std::thread::sleep(Duration::from_millis(20));
        t.ring().close();
        assert!(matches!(h.join().unwrap(), Err(Error::Closed)));
    }

    #[test]
    fn max_length_leaves_the_message() {
        let t = TestRing::new(1024);
        t.put(&message(1, 300), Deadline::Now).unwrap();
        let r = t.ring();
        let mut out = Vec::new();
        assert!(matches!(
            r.get(&mut out, Some(299), Deadline::Now, &Flag(r)),
            Err(Error::InvalidArgument(_))
        ));
        r.get(&mut out, Some(300), Deadline::Now, &Flag(r)).unwrap();
        assert_eq!(out, message(1, 300));
    }

    #[test]
    fn corrupt_records_are_an_error_then_skipped() {
        let t = TestRing::new(256);
        for bad in [u32::MAX, 250, 100] {
            t.put(b"one", Deadline::Now).unwrap();
            let at = t.head();
            t.put(b"two", Deadline::Now).unwrap();
            // SAFETY: the header of the first record lies within the buffer.
            unsafe { t.byte(at).cast::<u32>().write(bad) };
            assert!(
                matches!(t.get(Deadline::Now), Err(Error::Protocol(_))),
                "len {bad}"
            );
            assert!(matches!(t.get(Deadline::Now), Err(Error::Empty)));
            t.put(b"three", Deadline::Now).unwrap();
            assert_eq!(t.get(Deadline::Now).unwrap(), b"three");
        }
        // Bad flags, bad total length of a multi-record message, positions out of range.
        t.put(b"four", Deadline::Now).unwrap();
        // SAFETY: as above.
        unsafe { t.byte(t.head()).add(4).cast::<u32>().write(0xF0) };
        assert!(matches!(t.get(Deadline::Now), Err(Error::Protocol(_))));
        t.put(&message(2, 150), Deadline::Now).unwrap();
        t.put(&message(2, 150), Deadline::Now).unwrap_err();
        t.state.head.0.store(t.tail() + 8, Ordering::SeqCst);
        assert!(matches!(t.get(Deadline::Now), Err(Error::Protocol(_))));
        t.put(b"five", Deadline::Now).unwrap();
        assert_eq!(t.get(Deadline::Now).unwrap(), b"five");
    }

    #[test]
    fn a_stray_write_to_tail_loses_no_later_message() {
        let t = TestRing::new(256);
        t.put(b"one", Deadline::Now).unwrap();
        // Misaligned, and ahead of the last record.
        t.state.tail.0.store(t.tail() + 3, Ordering::SeqCst);
        // The producer goes on from where it left the ring, so the next
        // record sits right after the first and the stray value is overwritten.
        t.put(b"two", Deadline::Now).unwrap();
        assert_eq!(t.get(Deadline::Now).unwrap(), b"one");
        assert_eq!(t.get(Deadline::Now).unwrap(), b"two");
        assert!(matches!(t.get(Deadline::Now), Err(Error::Empty)));
    }

    #[test]
    fn after_a_consumer_resynchronises_to_a_misaligned_tail_the_producer_realigns() {
        let t = TestRing::new(256);
        t.put(b"one", Deadline::Now).unwrap();
        t.state.tail.0.store(t.tail() + 3, Ordering::SeqCst);
        // The consumer reads up to the stray tail: the bytes past the first
        // record are garbage to it, and it moves its head to that tail.
        let mut seen = Vec::new();
        loop {
            match t.get(Deadline::Now) {
                Ok(m) => seen.push(m),
                Err(Error::Protocol(_)) => {}
                Err(Error::Empty) => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(seen, vec![b"one".to_vec()]);
        // The producer takes up that tail, aligned, and the consumer meets it there.
        t.put(b"two", Deadline::Now).unwrap();
        assert_eq!(t.get(Deadline::Now).unwrap(), b"two");
        t.put(b"three", Deadline::Now).unwrap();
        assert_eq!(t.get(Deadline::Now).unwrap(), b"three");
    }

    /// A producer began message 2 (counted and logged it) and died before
    /// publishing it, holding the producer lock.
    fn forge_dead_producer_of_message_2(t: &TestRing) {
        let p = &t.state.producer.0;
        p.log_first_end.store(0, Ordering::SeqCst);
        p.log_last_end.store(0, Ordering::SeqCst);
        p.log_serial.store(2, Ordering::SeqCst);
        p.puts.store(2, Ordering::SeqCst);
        p.lock.forge_dead_holder();
    }

    #[test]
    fn dead_producer_before_publishing_is_repaired() {
        let t = TestRing::new(256);
        t.put(b"kept", Deadline::Now).unwrap();
        forge_dead_producer_of_message_2(&t);
        assert_eq!(t.ring().len(), 2);
        t.put(b"next", Deadline::after(Duration::from_secs(5)))
            .unwrap();
        assert_eq!(t.ring().len(), 2);
        assert_eq!(t.ring().tasks(), 2);
        assert_eq!(t.get(Deadline::Now).unwrap(), b"kept");
        assert_eq!(t.get(Deadline::Now).unwrap(), b"next");
        assert_eq!(t.ring().len(), 0);
    }

    #[test]
    fn a_dead_producers_unpublished_message_is_not_counted() {
        let t = TestRing::new(256);
        t.put(b"kept", Deadline::Now).unwrap();
        // Nobody puts after the dead producer: the count is repaired when read.
        forge_dead_producer_of_message_2(&t);
        assert_eq!(t.ring().settled_len(), 1);
        assert_eq!(t.get(Deadline::Now).unwrap(), b"kept");
        assert_eq!(t.ring().settled_len(), 0);
        assert!(matches!(t.get(Deadline::Now), Err(Error::Empty)));
        t.put(b"next", Deadline::Now).unwrap();
        assert_eq!(t.ring().settled_len(), 1);
    }

    /// Streams a message larger than the ring until its put times out,
    /// with the consumer lock held (as by a consumer at work), so the
    /// records it published stay in the ring.
    fn abandon_a_stream_behind_a_busy_consumer(t: &Arc<TestRing>) {
        let t2 = t.clone();
        let big = message(5, 4000);
        assert!(t.state.consumer.0.lock.try_lock());
        let h =
            std::thread::spawn(move || t2.put(&big, Deadline::after(Duration::from_millis(50))));
        assert!(h.join().unwrap().is_err());
        assert!(t.state.consumer.0.lock.unlock());
        assert!(t.ring().has_data(), "the parts stayed");
    }

    #[test]
    fn dead_producer_mid_stream_is_dropped_by_a_waiting_consumer() {
        let t = TestRing::new(512);
        // Stream a large message with nobody reading, then make its producer "die".
        abandon_a_stream_behind_a_busy_consumer(&t);
        let p = &t.state.producer.0;
        p.writing.store(1, Ordering::SeqCst);
        p.lock.forge_dead_holder();
        // The consumer takes the first parts, sees the producer is dead, drops them.
        let got = t.get(Deadline::after(Duration::from_millis(300)));
        assert!(matches!(got, Err(Error::Timeout(_))), "{got:?}");
        t.put(b"fine", Deadline::after(Duration::from_secs(5)))
            .unwrap();
        assert_eq!(t.get(Deadline::Now).unwrap(), b"fine");
    }

    #[test]
    fn an_abandoned_stream_nobody_took_is_taken_back() {
        let t = TestRing::new(512);
        t.put(b"kept", Deadline::Now).unwrap();
        let t2 = t.clone();
        let big = message(5, 4000);
        // Nobody reads: the put fills the ring, then gives up.
        let h =
            std::thread::spawn(move || t2.put(&big, Deadline::after(Duration::from_millis(50))));
        assert!(matches!(h.join().unwrap(), Err(Error::Full)));
        // It is not counted and leaves its room to the next put.
        assert_eq!(t.ring().settled_len(), 1);
        let fits = message(6, 300);
        t.put(&fits, Deadline::Now).unwrap();
        assert_eq!(t.get(Deadline::Now).unwrap(), b"kept");
        assert_eq!(t.get(Deadline::Now).unwrap(), fits);
        assert!(matches!(t.get(Deadline::Now), Err(Error::Empty)));
        assert_eq!(t.ring().len(), 0);
        assert_eq!(t.ring().tasks(), 2);
    }

    #[test]
    fn a_dead_producer_mid_stream_nobody_took_is_taken_back() {
        let t = TestRing::new(512);
        abandon_a_stream_behind_a_busy_consumer(&t);
        // As a producer killed mid-stream leaves the ring: message 1 logged,
        // its first records published, the lock held by the dead process.
        let p = &t.state.producer.0;
        let tail = t.tail();
        p.puts.store(1, Ordering::SeqCst);
        p.log_start.store(0, Ordering::SeqCst);
        p.log_first_end
            .store(HEADER + 8 + PREFIX.next_multiple_of(8), Ordering::SeqCst);
        p.log_last_end.store(0, Ordering::SeqCst);
        p.log_serial.store(1, Ordering::SeqCst);
        p.writing.store(1, Ordering::SeqCst);
        p.lock.forge_dead_holder();
        assert!(tail > 0);
        // No consumer: qsize repairs the count and frees the room.
        assert_eq!(t.ring().settled_len(), 0);
        assert_eq!(t.tail(), 0);
        t.put(&message(7, 400), Deadline::Now).unwrap();
        assert_eq!(t.get(Deadline::Now).unwrap(), message(7, 400));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// Garbage in the buffer or the positions gives errors, never a panic
        /// or a hang, and the ring works again afterwards.
        #[test]
        fn garbage_is_survived(
            lens in proptest::collection::vec(0usize..700, 1..8),
            hits in proptest::collection::vec((0u64..512, any::<u64>()), 1..6),
            position_hit in proptest::option::of((0usize..5, any::<u64>())),
        ) {
            let t = TestRing::new(512);
            for (i, len) in lens.iter().enumerate() {
                if *len < 400 {
                    let _ = t.put(&message(i as u64, *len), Deadline::Now);
                }
            }
            for (at, value) in hits {
                let at = at & !7;
                // SAFETY: `at + 8 <= 512`, 8-aligned, within the buffer.
                unsafe { t.byte(at).cast::<u64>().write(value) };
            }
            if let Some((which, value)) = position_hit {
                let word = match which {
                    0 => &t.state.head.0,
                    1 => &t.state.tail.0,
                    2 => &t.state.consumer.0.cached_tail,
                    3 => &t.state.producer.0.own_tail,
                    _ => &t.state.producer.0.writing,
                };
                word.store(value, Ordering::SeqCst);
            }
            for _ in 0..64 {
                match t.get(Deadline::Now) {
                    Ok(_) | Err(Error::Protocol(_)) => {}
                    Err(Error::Empty) => break,
                    Err(e) => prop_assert!(false, "get: {e}"),
                }
            }
            // Whatever was lost, the ring carries messages again.
            t.put(b"again", Deadline::Now).unwrap();
            let mut got = Vec::new();
            loop {
                match t.get(Deadline::Now) {
                    Ok(m) => got.push(m),
                    Err(Error::Protocol(_)) => {}
                    Err(Error::Empty) => break,
                    Err(e) => prop_assert!(false, "get after put: {e}"),
                }
            }
            prop_assert_eq!(got, vec![b"again".to_vec()]);
        }
    }

    #[test]
    fn a_stale_writing_mark_does_not_hang_a_getter() {
        let t = TestRing::new(512);
        abandon_a_stream_behind_a_busy_consumer(&t);
        // The mark says message 1 is still being written, but nobody holds the lock.
        t.state.producer.0.writing.store(1, Ordering::SeqCst);
        let got = t.get(Deadline::after(Duration::from_millis(300)));
        assert!(matches!(got, Err(Error::Timeout(_))), "{got:?}");
        assert_eq!(t.state.producer.0.writing.load(Ordering::SeqCst), 0);
    }

    #[derive(Debug, Clone)]
    enum Op {
        TryPut(usize),
        PutTimeout(usize),
        TryGet,
        GetTimeout,
        /// A put that may be larger than the ring, with a concurrent consumer.
        Stream(usize),
    }

    fn op(cap: usize) -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..cap).prop_map(Op::TryPut),
            2 => (0..cap / 2).prop_map(Op::PutTimeout),
            4 => Just(Op::TryGet),
            1 => Just(Op::GetTimeout),
            1 => (0..cap * 3).prop_map(Op::Stream),
        ]
    }

    fn ops() -> impl Strategy<Value = (u64, Vec<Op>)> {
        prop_oneof![Just(256u64), Just(512), Just(1024), Just(4096)].prop_flat_map(|cap| {
            (
                Just(cap),
                proptest::collection::vec(op(cap as usize), 1..60),
            )
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn ring_behaves_like_a_fifo((cap, ops) in ops()) {
            let t = TestRing::new(cap);
            let mut model: VecDeque<Vec<u8>> = VecDeque::new();
            let mut next_id = 0u64;
            let short = Deadline::after(Duration::from_millis(1));
            for op in ops {
                match op {
                    Op::TryPut(len) | Op::PutTimeout(len) => {
                        let m = message(next_id, len);
                        next_id += 1;
                        let deadline = if matches!(op, Op::TryPut(_)) { Deadline::Now } else { short };
                        match t.put(&m, deadline) {
                            Ok(()) => model.push_back(m),
                            Err(Error::Full) => {
                                // Refused only if it could not fit now.
                                let worst = round8(len as u64) + 2 * HEADER + PREFIX + MIN_RECORD;
                                prop_assert!(!model.is_empty() || worst > cap);
                            }
                            Err(e) => prop_assert!(false, "put: {e}"),
                        }
                    }
                    Op::TryGet | Op::GetTimeout => {
                        let deadline = if matches!(op, Op::TryGet) { Deadline::Now } else { short };
                        match (t.get(deadline), model.pop_front()) {
                            (Ok(got), Some(want)) => prop_assert_eq!(got, want),
                            (Err(Error::Empty), None) | (Err(Error::Timeout(_)), None) => {}
                            (got, want) => prop_assert!(false, "got {:?}, wanted {:?}", got.map(|g| g.len()), want.map(|w| w.len())),
                        }
                    }
                    Op::Stream(len) => {
                        let m = message(next_id, len);
                        next_id += 1;
                        let t2 = t.clone();
                        let m2 = m.clone();
                        let producer = std::thread::spawn(move || t2.put(&m2, SOON));
                        model.push_back(m);
                        while let Some(want) = model.pop_front() {
                            prop_assert_eq!(t.get(SOON).unwrap(), want);
                        }
                        producer.join().unwrap().unwrap();
                    }
                }
                prop_assert_eq!(t.ring().len(), model.len() as u64);
            }
            t.ring().close();
            prop_assert!(matches!(t.put(b"late", Deadline::Now), Err(Error::Closed)));
            while let Some(want) = model.pop_front() {
                prop_assert_eq!(t.get(Deadline::Now).unwrap(), want);
            }
            prop_assert!(matches!(t.get(Deadline::Now), Err(Error::Closed)));
        }
    }
}
