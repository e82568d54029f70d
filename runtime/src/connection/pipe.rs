//! The shared-memory transport of a [`Connection`](super::Connection): two
//! rings in one segment, one per direction, and a record of each end.
//!
//! Each end records whether it was closed and which process owns it (pid and
//! start time, as in a lock word): the process that last used it or received
//! it as an argument or in a message; until then, nobody (its creator stands
//! in for liveness). A reader whose ring is empty checks the writer's end:
//! closed, or owned by a dead process, means end of file once the ring is
//! drained. A writer checks the reader's end the same way: its closed flag on
//! every send, its owner's liveness (a system call) at most every 2 ms and
//! whenever the send has to wait for room. Only a known death counts: an
//! owner whose liveness cannot be checked (this process is out of
//! descriptors) is taken as alive. A pidfd, opened once per peer while
//! descriptors allow, makes later checks need no `/proc` read.

use std::os::fd::{AsFd, OwnedFd};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::fork_sync::Mutex;

use crate::connection::wait::WaitSource;
use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::handle::HandleRepr;
use crate::liveness::{CannotTell, Liveness};
use crate::liveness::{holder_liveness, my_word};
use crate::queue::ring::{self, Ends, Padded, Ring, RingState, Side, Sink};
use crate::shm::{Kind, ShmObject};
use crate::sys;

/// The ring size of each direction of a pipe made with `Pipe::new()`: 256 KiB.
pub const DEFAULT_PIPE_CAPACITY: usize = 256 << 10;

const PID_MASK: u64 = 0x7FFF_FFFF;
/// Set in `HandleRepr::extra` when the end's side channel was encoded with it.
const SIDE_SENT: u64 = 1 << 32;
/// The side channel's handle id: the segment's id with this bit flipped.
const SIDE_ID: u64 = 1 << 63;
/// A side-channel record: a message may have arrived (for `fileno` users).
const DOORBELL: u8 = b'D';
/// A side-channel record that carries a passed descriptor.
const HANDLE: u8 = b'H';
/// The message that tells the receiver a descriptor waits on the side channel.
const HANDLE_MESSAGE: &[u8] = b"\0multiproc:handle\0";
/// How often a send checks that the reader still lives.
const LIVENESS_PERIOD_MS: u64 = 2;

/// One end's record in the segment.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct EndState {
    closed: AtomicU32,
    /// The owner's lock-style word (pid | start ticks << 32); 0: not claimed yet.
    owner: AtomicU64,
    /// The creating process's word, standing in for an unclaimed end's owner.
    creator: AtomicU64,
    /// Processes that asked for this end's descriptor (`fileno`): a send
    /// to this end rings its doorbell while this is not 0.
    pollers: AtomicU32,
}

#[repr(C)]
#[derive(Debug, Default)]
struct PipeConfig {
    capacity: AtomicU64,
    duplex: AtomicU32,
}

/// The shared state of a pipe. End `e` writes ring `e` and reads ring `1 - e`;
/// a one-way pipe has only ring 1 (end 0 reads, end 1 writes).
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct PipeState {
    config: Padded<PipeConfig>,
    rings: [RingState; 2],
    ends: [Padded<EndState>; 2],
}

/// What a side knows of its peer's owner: the word it checked, a pidfd for
/// it, and whether that process is known to be dead.
#[derive(Debug, Default)]
struct PeerWatch {
    word: u64,
    pidfd: Option<OwnedFd>,
    dead: bool,
}

impl PeerWatch {
    /// Whether the process named by `word` runs (a pidfd makes repeat checks cheap).
    fn check(&mut self, word: u64) -> Liveness {
        let pid = (word & PID_MASK) as i32;
        if word == 0 {
            return Liveness::Alive;
        }
        if self.word != word {
            *self = PeerWatch {
                word,
                pidfd: None,
                dead: false,
            };
        }
        if self.dead {
            return Liveness::Dead;
        }
        let liveness = match &self.pidfd {
            Some(fd) => {
                match sys::fd::poll(&[fd.as_fd()], sys::fd::Interest::Read, Some(Duration::ZERO)) {
                    Ok(ready) if ready.is_empty() => Liveness::Alive,
                    Ok(_) => Liveness::Dead,
                    Err(e) => Liveness::Unknown {
                        errno: e.raw_os_error().unwrap_or(libc::EIO),
                    },
                }
            }
            None => {
                let liveness = holder_liveness(word);
                if liveness.is_alive() && pid != sys::process::getpid() {
                    // Once, while a descriptor is to be had (none is needed
                    // to go on without it). The pid may be reused between
                    // the two looks: only a check after the open vouches for the pidfd.
                    if let Ok(fd) = sys::process::pidfd_open(pid) {
                        let again = holder_liveness(word);
                        if again.is_alive() {
                            self.pidfd = Some(fd);
                        }
                        again
                    } else {
                        liveness
                    }
                } else {
                    liveness
                }
            }
        };
        if liveness.is_dead() {
            self.dead = true;
            self.pidfd = None;
        }
        liveness
    }
}

/// One end of a shared-memory pipe in this process.
pub(crate) struct ShmEnd {
    obj: ShmObject<PipeState>,
    end: usize,
    cap: u64,
    duplex: bool,
    /// This handle was encoded (sent to another process): dropping it does not close the end.
    sent: AtomicBool,
    /// When a send last checked the reader's liveness (coarse clock, milliseconds).
    last_check_ms: AtomicU64,
    /// The process this handle was made in; another pid here means this
    /// process is a forked child that inherited the handle.
    made_in: i32,
    watch: Mutex<PeerWatch>,
    /// This end's side of the side channel: a sequenced-packet socket pair
    /// made with the pipe, which carries passed descriptors and doorbells.
    /// `None` when the end travelled without it (inside a message) or no
    /// descriptor was to be had when the pipe was made.
    side: Option<OwnedFd>,
    /// The process that counted this handle in its end's `pollers` (0: none).
    polled_by: AtomicI32,
}

impl std::fmt::Debug for ShmEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmEnd")
            .field("end", &self.end)
            .field("duplex", &self.duplex)
            .field("capacity", &self.cap)
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// How a ring of this pipe sees its ends.
struct PipeEnds<'a> {
    me: &'a EndState,
    peer: &'a EndState,
    watch: &'a Mutex<PeerWatch>,
}

impl PipeEnds<'_> {
    /// Whether the peer is there: `Done` once either end closed or the
    /// peer's owner is known dead; `Unsure` when its liveness cannot be checked.
    fn peer(&self, thorough: bool) -> Side {
        if self.me.closed.load(Ordering::SeqCst) != 0
            || self.peer.closed.load(Ordering::SeqCst) != 0
        {
            return Side::Done;
        }
        if !thorough {
            return Side::Open;
        }
        let owner = self.peer.owner.load(Ordering::Acquire);
        let word = if owner != 0 {
            owner
        } else {
            self.peer.creator.load(Ordering::Acquire)
        };
        let pid = (word & PID_MASK) as i32;
        match self.watch.lock().check(word) {
            Liveness::Dead => Side::Done,
            Liveness::Alive => Side::Open,
            unknown => CannotTell::from(pid, unknown).map_or(Side::Open, Side::Unsure),
        }
    }
}

impl Ends for PipeEnds<'_> {
    fn writers(&self, thorough: bool) -> Side {
        self.peer(thorough)
    }
    fn readers(&self, thorough: bool) -> Side {
        self.peer(thorough)
    }
}

impl ShmEnd {
    /// A new pipe: `(end 0, end 1)`; one-way pipes read at end 0 and write at end 1.
    pub(crate) fn pair(
        fingerprint: u64,
        duplex: bool,
        capacity: usize,
    ) -> Result<(ShmEnd, ShmEnd)> {
        let cap = ring::capacity_for(capacity)?;
        let tail = if duplex { 2 * cap } else { cap };
        let me = my_word();
        let obj = ShmObject::create(
            Kind::Channel,
            fingerprint,
            tail as usize,
            |state: *mut PipeState, _| {
                // SAFETY: `create` hands us aligned, writable, zeroed memory for one PipeState.
                unsafe { state.write(PipeState::default()) };
                // SAFETY: just initialised.
                let state = unsafe { &*state };
                state.config.0.capacity.store(cap, Ordering::Relaxed);
                state
                    .config
                    .0
                    .duplex
                    .store(duplex as u32, Ordering::Relaxed);
                for r in &state.rings {
                    r.init(cap);
                }
                for e in &state.ends {
                    e.0.creator.store(me, Ordering::Relaxed);
                }
            },
        )?;
        let mut a = ShmEnd::attach(obj.clone(), 0)?;
        let mut b = ShmEnd::attach(obj, 1)?;
        // Without a descriptor to spare the pipe still works, without
        // fileno and handle passing.
        if let Ok((side_a, side_b)) = sys::socket::seqpacket_pair() {
            a.side = Some(side_a);
            b.side = Some(side_b);
        }
        Ok((a, b))
    }

    fn attach(obj: ShmObject<PipeState>, end: usize) -> Result<ShmEnd> {
        let state = obj.state();
        let cap = state.config.0.capacity.load(Ordering::Relaxed);
        let duplex = state.config.0.duplex.load(Ordering::Relaxed) != 0;
        ring::check_capacity(cap)?;
        for r in &state.rings {
            if r.checked_capacity()? != cap {
                return Err(Error::Protocol("pipe rings disagree on their size".into()));
            }
        }
        let need = if duplex { 2 * cap } else { cap };
        if (obj.tail_len() as u64) < need || end > 1 {
            return Err(Error::Protocol("pipe segment is truncated".into()));
        }
        Ok(ShmEnd {
            obj,
            end,
            cap,
            duplex,
            sent: AtomicBool::new(false),
            last_check_ms: AtomicU64::new(0),
            made_in: sys::process::getpid(),
            watch: Mutex::new(PeerWatch::default()),
            side: None,
            polled_by: AtomicI32::new(0),
        })
    }

    /// Opens an end from its encoded form; this process becomes its owner.
    pub(crate) fn open(repr: &HandleRepr, fingerprint: u64, name: &str) -> Result<ShmEnd> {
        let obj = ShmObject::open(repr, Kind::Channel, fingerprint, name)?;
        let mut end = ShmEnd::attach(obj, (repr.extra & 1) as usize)?;
        // Only a side channel that came beside the bytes (a process's
        // argument): a socket cannot be reopened through /proc.
        if repr.extra & SIDE_SENT != 0 {
            end.side = crate::handle::received_fd(repr.id ^ SIDE_ID);
        }
        end.claim();
        Ok(end)
    }

    /// The encoded form; the end now belongs to whoever decodes it. Sent
    /// to a child as its argument, it belongs to that child from its start
    /// (even one that dies before it decodes it).
    pub(crate) fn to_repr(&self) -> Result<HandleRepr> {
        let mut repr = self.obj.to_repr()?;
        repr.extra = self.end as u64;
        if let Some(side) = &self.side {
            // Goes beside the bytes when they are a child's argument.
            crate::handle::encode_fd(repr.id ^ SIDE_ID, side.as_fd(), 0, 0)?;
            repr.extra |= SIDE_SENT;
        }
        self.sent.store(true, Ordering::Relaxed);
        let obj = self.obj.clone();
        let end = self.end;
        crate::handle::on_handoff(move |pid| hand_to(&obj.state().ends[end].0, pid));
        Ok(repr)
    }

    fn my_state(&self) -> &EndState {
        &self.obj.state().ends[self.end].0
    }

    fn peer_state(&self) -> &EndState {
        &self.obj.state().ends[1 - self.end].0
    }

    fn ends(&self) -> PipeEnds<'_> {
        PipeEnds {
            me: self.my_state(),
            peer: self.peer_state(),
            watch: &self.watch,
        }
    }

    /// Records this process as the end's owner.
    fn claim(&self) {
        let me = my_word();
        let owner = &self.my_state().owner;
        if owner.load(Ordering::Relaxed) != me {
            owner.store(me, Ordering::Release);
        }
    }

    /// Whether a send should check the reader's liveness now (at most every 2 ms).
    fn check_due(&self) -> bool {
        let now = sys::time::coarse_monotonic().as_millis() as u64;
        let last = self.last_check_ms.load(Ordering::Relaxed);
        if now.wrapping_sub(last) < LIVENESS_PERIOD_MS {
            return false;
        }
        self.last_check_ms.store(now, Ordering::Relaxed);
        true
    }

    fn ring(&self, index: usize) -> Ring<'_> {
        let offset = if self.duplex {
            index as u64 * self.cap
        } else {
            0
        };
        // SAFETY: the tail holds the ring buffers (checked in attach); each is
        // `cap` bytes, 8-aligned, and lives as long as `self.obj`.
        unsafe {
            Ring::new(
                &self.obj.state().rings[index],
                self.obj.tail_ptr().add(offset as usize),
                self.cap,
            )
        }
    }

    pub(crate) fn readable(&self) -> bool {
        self.duplex || self.end == 0
    }

    pub(crate) fn writable(&self) -> bool {
        self.duplex || self.end == 1
    }

    fn check_open(&self) -> Result<()> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        self.claim();
        Ok(())
    }

    pub(crate) fn send_bytes(&self, bytes: &[u8], deadline: Deadline) -> Result<()> {
        if !self.writable() {
            return Err(Error::InvalidState(
                "this end of a one-way pipe only receives".into(),
            ));
        }
        self.check_open()?;
        let ends = self.ends();
        // Whether the reader died is checked every few milliseconds (a check
        // costs a system call; this keeps it off the fast path).
        if ends.peer(self.check_due()).done() {
            return Err(Error::Closed);
        }
        self.ring(self.end).put(bytes, 0, deadline, &ends)?;
        self.ring_doorbell();
        Ok(())
    }

    /// Tells a peer that polls its descriptor that a message (or the end)
    /// may have come: one record on the side channel, only while it polls.
    fn ring_doorbell(&self) {
        let Some(side) = &self.side else { return };
        // Pairs with the fence in `drain_doorbells`: either the peer sees
        // the message, or this sees its poller count.
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.peer_state().pollers.load(Ordering::Relaxed) != 0 {
            // A full side channel is readable already: nothing is lost.
            let _ =
                sys::socket::send_nowait(side.as_fd(), &[std::io::IoSlice::new(&[DOORBELL])], &[]);
        }
    }

    /// Takes the doorbells waiting at the head of this end's side channel
    /// (not a passed descriptor behind which they wait), so that its
    /// descriptor is readable again only when a later message comes.
    fn drain_doorbells(&self) {
        let Some(side) = &self.side else { return };
        if self.polled_by.load(Ordering::Relaxed) == 0 {
            return;
        }
        while let Ok(Some(DOORBELL)) = sys::socket::peek_record(side.as_fd()) {
            if sys::socket::discard_record(side.as_fd()).is_err() {
                break;
            }
        }
        std::sync::atomic::fence(Ordering::SeqCst);
    }

    fn side(&self) -> Result<BorrowedFd<'_>> {
        self.side.as_ref().map(|s| s.as_fd()).ok_or_else(|| {
            Error::InvalidState(
                "this pipe end has no side channel (it travelled inside a message rather than \
                 as a process's argument, or no descriptor was left when the pipe was made): \
                 fileno, send_handle and recv_handle need one"
                    .into(),
            )
        })
    }

    /// The descriptor `fileno` gives: readable when a message may have
    /// come for this end since it was last found empty (see `Connection::fileno`).
    pub(crate) fn fileno(&self) -> Result<RawFd> {
        let side = self.side()?.as_raw_fd();
        let me = sys::process::getpid();
        if self.polled_by.swap(me, Ordering::AcqRel) != me {
            self.my_state().pollers.fetch_add(1, Ordering::SeqCst);
        }
        Ok(side)
    }

    /// Sends a descriptor: it goes on the side channel, then a message in
    /// the ring says it is there (so handles and messages keep their order).
    pub(crate) fn send_handle(&self, fd: BorrowedFd<'_>, deadline: Deadline) -> Result<()> {
        if !self.writable() {
            return Err(Error::InvalidState(
                "this end of a one-way pipe only receives".into(),
            ));
        }
        self.check_open()?;
        let side = self.side()?;
        sys::socket::send_with_fds(side, &[HANDLE], &[fd]).map_err(|e| match e.raw_os_error() {
            Some(libc::EPIPE | libc::ECONNRESET) => Error::Closed,
            _ => Error::Io(e),
        })?;
        self.send_bytes(HANDLE_MESSAGE, deadline)
    }

    /// Receives a descriptor sent with `send_handle`.
    pub(crate) fn recv_handle(&self, deadline: Deadline) -> Result<OwnedFd> {
        let side = self.side()?;
        let mut message = Vec::new();
        self.recv_into(&mut message, Some(HANDLE_MESSAGE.len() as u64), deadline)
            .map_err(|e| match e {
                Error::InvalidArgument(_) => {
                    Error::Protocol("expected a passed descriptor, got a message".into())
                }
                e => e,
            })?;
        if message != HANDLE_MESSAGE {
            return Err(Error::Protocol(
                "expected a passed descriptor, got a message".into(),
            ));
        }
        // The descriptor went before the message: it waits already, maybe
        // behind doorbells.
        loop {
            let mut tag = [0u8; 1];
            match sys::socket::peek_record(side)? {
                Some(DOORBELL) => sys::socket::discard_record(side)?,
                Some(HANDLE) => {
                    let (_, fds) = sys::socket::recv_with_at_most(side, &mut tag, 1)?;
                    return fds.into_iter().next().ok_or_else(|| {
                        Error::Protocol("a handle message came without a descriptor".into())
                    });
                }
                _ => {
                    return Err(Error::Protocol(
                        "a handle message came without a descriptor".into(),
                    ));
                }
            }
        }
    }

    pub(crate) fn recv_into<S: Sink>(
        &self,
        out: &mut S,
        max: Option<u64>,
        deadline: Deadline,
    ) -> Result<()> {
        if !self.readable() {
            return Err(Error::InvalidState(
                "this end of a one-way pipe only sends".into(),
            ));
        }
        self.check_open()?;
        let ring = self.ring(1 - self.end);
        let ends = self.ends();
        match ring.get(out, max, deadline, &ends) {
            Err(e @ (Error::Empty | Error::Timeout(_))) if self.side.is_some() => {
                // Found empty: the doorbell rings again for the next message.
                self.drain_doorbells();
                if ring.has_data() {
                    ring.get(out, max, Deadline::Now, &ends)
                } else {
                    Err(e)
                }
            }
            other => other,
        }
    }

    pub(crate) fn poll(&self, deadline: Deadline) -> Result<bool> {
        if !self.readable() {
            return Err(Error::InvalidState(
                "this end of a one-way pipe only sends".into(),
            ));
        }
        self.check_open()?;
        let ring = self.ring(1 - self.end);
        let mut ready = ring.wait_readable(deadline, &self.ends())?;
        if self.is_closed() {
            return Err(Error::Closed);
        }
        if !ready {
            self.drain_doorbells();
            ready = ring.has_data();
        }
        Ok(ready)
    }

    /// How `connection::wait` watches this end: ready when a message is
    /// there or the peer is gone; at once when it cannot receive or is closed.
    pub(crate) fn wait_source(&self) -> WaitSource<'_> {
        if !self.readable() || self.is_closed() {
            return WaitSource::ready();
        }
        let ring = self.ring(1 - self.end);
        let ends = self.ends();
        WaitSource::ring(ring.data_word(), move |thorough| {
            ring.has_data() || ends.writers(thorough).done()
        })
    }

    pub(crate) fn close(&self) {
        self.my_state().closed.store(1, Ordering::SeqCst);
        for index in 0..2 {
            self.ring(index).wake_all();
        }
        self.ring_doorbell();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.my_state().closed.load(Ordering::SeqCst) != 0
    }
}

impl Drop for ShmEnd {
    fn drop(&mut self) {
        if self.polled_by.load(Ordering::Relaxed) == sys::process::getpid() {
            self.my_state().pollers.fetch_sub(1, Ordering::SeqCst);
        }
        // Dropping a handle closes the end, as closing the last descriptor
        // of a pipe does, unless someone else has the end now: it was sent
        // away (encoded), this is the parent's copy of a forked child's
        // target, or another process used it last (a fork child sharing it
        // through an `Arc`). A handle a forked child inherited is that
        // child's to close.
        if self.sent.load(Ordering::Relaxed) {
            return;
        }
        if let Some(child) = crate::process::handing_to_fork_child() {
            self.hand_to(child);
            return;
        }
        let owner = self.my_state().owner.load(Ordering::Acquire);
        if owner == 0 || owner == my_word() || self.made_in != sys::process::getpid() {
            self.close();
        }
    }
}

impl ShmEnd {
    /// Records the forked child `pid` as the owner of this end, which the
    /// child received in its memory (it claims it only when it uses it).
    fn hand_to(&self, pid: i32) {
        hand_to(self.my_state(), pid);
    }
}

/// Records child `pid` as the owner of an end it received (in its memory
/// when forked, or as its argument), which it claims only when it uses or
/// decodes it: if the child ends first, even by a signal, the peer sees the
/// end of file, as for a descriptor a child inherited. An end someone else
/// claimed meanwhile (the child itself, or a process it passed the end to)
/// is left alone.
fn hand_to(end: &EndState, pid: i32) {
    // The child's start time, as it names itself in its own words; 0
    // ("unknown": compared by pid alone) if /proc cannot be read now.
    let ticks = sys::process::start_ticks(pid).unwrap_or(0) as u32 as u64;
    let child = (ticks << 32) | (pid as u64 & PID_MASK);
    let current = end.owner.load(Ordering::Acquire);
    if current == 0 || current == my_word() {
        let _ = end
            .owner
            .compare_exchange(current, child, Ordering::AcqRel, Ordering::Acquire);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(duplex: bool) -> (ShmEnd, ShmEnd) {
        ShmEnd::pair(1, duplex, 4096).unwrap()
    }

    #[test]
    fn duplex_pipes_carry_both_ways() {
        let (a, b) = pair(true);
        a.send_bytes(b"to b", Deadline::Now).unwrap();
        b.send_bytes(b"to a", Deadline::Now).unwrap();
        let mut out = Vec::new();
        b.recv_into(&mut out, None, Deadline::Now).unwrap();
        assert_eq!(out, b"to b");
        a.recv_into(&mut out, None, Deadline::Now).unwrap();
        assert_eq!(out, b"to a");
    }

    #[test]
    fn one_way_pipes_use_one_ring() {
        let (reader, writer) = pair(false);
        assert_eq!(reader.obj.tail_len(), 4096);
        writer.send_bytes(b"x", Deadline::Now).unwrap();
        let mut out = Vec::new();
        reader.recv_into(&mut out, None, Deadline::Now).unwrap();
        assert_eq!(out, b"x");
        assert!(matches!(
            reader.send_bytes(b"y", Deadline::Now),
            Err(Error::InvalidState(_))
        ));
    }

    #[test]
    fn using_an_end_claims_it_and_dropping_a_held_end_closes_it() {
        let (a, b) = pair(true);
        assert_eq!(a.my_state().owner.load(Ordering::SeqCst), 0);
        assert_eq!(a.my_state().creator.load(Ordering::SeqCst), my_word());
        // Never used anywhere, but dropped by the only process holding it: closed.
        drop(b);
        assert!(a.peer_state().closed.load(Ordering::SeqCst) != 0);
        assert!(matches!(
            a.send_bytes(b"x", Deadline::Now),
            Err(Error::Closed)
        ));
        let (c, d) = pair(true);
        d.send_bytes(b"", Deadline::Now).unwrap();
        assert_eq!(d.my_state().owner.load(Ordering::SeqCst), my_word());
        drop(d);
        assert!(c.peer_state().closed.load(Ordering::SeqCst) != 0);
        // A sent end is the receiver's to close.
        let (e, f) = pair(true);
        f.send_bytes(b"", Deadline::Now).unwrap();
        f.to_repr().unwrap();
        drop(f);
        assert_eq!(e.peer_state().closed.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn an_end_another_process_used_last_is_not_closed_by_a_drop_here() {
        let (a, b) = pair(true);
        // As a forked child sharing `b` through an Arc would leave it.
        b.my_state()
            .owner
            .store((1u64 << 32) | 0x7FFF_FFF0, Ordering::SeqCst);
        drop(b);
        assert_eq!(a.peer_state().closed.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_dead_owner_is_noticed() {
        let mut watch = PeerWatch::default();
        assert!(watch.check(0).is_alive(), "an unknown owner is not dead");
        assert!(watch.check(my_word()).is_alive());
        // A pid above pid_max cannot be alive.
        assert!(watch.check((1u64 << 32) | 0x7FFF_FFF0).is_dead());
        assert!(watch.check((1u64 << 32) | 0x7FFF_FFF0).is_dead());
        // Our parent (the test runner's) lives, but not with other start ticks.
        let ppid = sys::process::getppid() as u64;
        let ticks = sys::process::start_ticks(ppid as i32).unwrap() as u32 as u64;
        assert!(watch.check((ticks << 32) | ppid).is_alive());
        assert!(watch.pidfd.is_some());
        assert!(
            watch.check((ticks << 32) | ppid).is_alive(),
            "cached pidfd check"
        );
        assert!(watch.check(((ticks + 1) << 32) | ppid).is_dead());
    }
}
