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
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::handle::HandleRepr;
use crate::liveness::{CannotTell, Liveness};
use crate::queue::ring::{self, Ends, Padded, Ring, RingState, Side, Sink};
use crate::shm::{Kind, ShmObject};
use crate::sync::raw_lock::{holder_liveness, my_word};
use crate::sys;

/// The ring size of each direction of a pipe made with `Pipe::new()`: 256 KiB.
pub const DEFAULT_PIPE_CAPACITY: usize = 256 << 10;

const PID_MASK: u64 = 0x7FFF_FFFF;
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
        let a = ShmEnd::attach(obj.clone(), 0)?;
        let b = ShmEnd::attach(obj, 1)?;
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
        })
    }

    /// Opens an end from its encoded form; this process becomes its owner.
    pub(crate) fn open(repr: &HandleRepr, fingerprint: u64, name: &str) -> Result<ShmEnd> {
        let obj = ShmObject::open(repr, Kind::Channel, fingerprint, name)?;
        let end = ShmEnd::attach(obj, (repr.extra & 1) as usize)?;
        end.claim();
        Ok(end)
    }

    /// The encoded form; the end now belongs to whoever decodes it.
    pub(crate) fn to_repr(&self) -> Result<HandleRepr> {
        let mut repr = self.obj.to_repr()?;
        repr.extra = self.end as u64;
        self.sent.store(true, Ordering::Relaxed);
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
        self.ring(self.end).put(bytes, 0, deadline, &ends)
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
        self.ring(1 - self.end)
            .get(out, max, deadline, &self.ends())
    }

    pub(crate) fn poll(&self, deadline: Deadline) -> Result<bool> {
        if !self.readable() {
            return Err(Error::InvalidState(
                "this end of a one-way pipe only sends".into(),
            ));
        }
        self.check_open()?;
        let ready = self
            .ring(1 - self.end)
            .wait_readable(deadline, &self.ends())?;
        if self.is_closed() {
            return Err(Error::Closed);
        }
        Ok(ready)
    }

    pub(crate) fn close(&self) {
        self.my_state().closed.store(1, Ordering::SeqCst);
        for index in 0..2 {
            self.ring(index).wake_all();
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.my_state().closed.load(Ordering::SeqCst) != 0
    }
}

impl Drop for ShmEnd {
    fn drop(&mut self) {
        // Dropping a handle closes the end, as closing the last descriptor
        // of a pipe does, unless someone else has the end now: it was sent
        // away (encoded), this is the parent's copy of a forked child's
        // target, or another process used it last (a fork child sharing it
        // through an `Arc`). A handle a forked child inherited is that
        // child's to close.
        if self.sent.load(Ordering::Relaxed) || crate::process::handing_to_fork_child() {
            return;
        }
        let owner = self.my_state().owner.load(Ordering::Acquire);
        if owner == 0 || owner == my_word() || self.made_in != sys::process::getpid() {
            self.close();
        }
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
