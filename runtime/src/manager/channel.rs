//! The local transport: one shared segment per connection.
//!
//! The segment holds a small state block of atomics, a request slot and a
//! response slot. The client writes a request and bumps `req_seq`; the
//! server, spinning while that can pay (the runtime's one waiting policy)
//! and then sleeping on that futex word, answers
//! into the response slot and sets `resp_seq`. A side calls the wake
//! syscall only when the other announced that it sleeps. Sleepers wake in
//! slices to check that the peer still lives, so a dead server is a prompt
//! `ManagerGone` and a dead client a dropped connection, never a hang.
//!
//! A message larger than its slot travels in a temporary segment: the slot
//! then holds the segment's handle (the reader opens it through
//! `/proc/<writer>/fd`, while the writer waits for the exchange to end).

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
use std::time::Duration;

use rkyv::util::AlignedVec;

use crate::codec::Shareable;
use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::handle::HandleRepr;
use crate::shm::{Kind, Segment, ShmObject, fingerprint_str};
use crate::sync::park::SpinSite;
use crate::sys;
use crate::sys::futex::WaitOutcome;

/// Bytes in each slot of a new channel.
pub const SLOT_SIZE: usize = 64 * 1024;
/// How long a sleeping side waits before it checks that its peer lives.
pub const LIVENESS_SLICE: Duration = Duration::from_millis(100);
/// The largest message either side accepts.
pub const MAX_MESSAGE: usize = 1 << 32;

/// Set in a length word when the slot holds an overflow segment's handle.
const OVERFLOW: u64 = 1 << 63;
/// `closed` bits.
const SERVER_CLOSED: u32 = 1;
const CLIENT_CLOSED: u32 = 2;

fn channel_fingerprint() -> u64 {
    fingerprint_str("multiproc::manager::channel/1")
}

/// The atomics at the start of a channel segment.
#[repr(C)]
pub(crate) struct ChannelState {
    req_seq: AtomicU32,
    resp_seq: AtomicU32,
    server_sleeping: AtomicU32,
    client_sleeping: AtomicU32,
    closed: AtomicU32,
    _pad: u32,
    req_len: AtomicU64,
    resp_len: AtomicU64,
    slot_size: AtomicU64,
}

/// A channel segment, as either side maps it.
#[derive(Clone)]
pub struct Channel {
    obj: ShmObject<ChannelState>,
    slot_size: usize,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("segment", self.obj.segment())
            .finish()
    }
}

impl Channel {
    /// Creates a channel segment (server side).
    pub(crate) fn create(slot_size: usize) -> Result<Channel> {
        let slot_size = slot_size.max(4096).next_multiple_of(64);
        let obj = ShmObject::create(
            Kind::Other,
            channel_fingerprint(),
            2 * slot_size,
            |state: *mut ChannelState, _| {
                // SAFETY: `create` hands us aligned, writable memory for the state.
                unsafe {
                    state.write(ChannelState {
                        req_seq: AtomicU32::new(0),
                        resp_seq: AtomicU32::new(0),
                        server_sleeping: AtomicU32::new(0),
                        client_sleeping: AtomicU32::new(0),
                        closed: AtomicU32::new(0),
                        _pad: 0,
                        req_len: AtomicU64::new(0),
                        resp_len: AtomicU64::new(0),
                        slot_size: AtomicU64::new(slot_size as u64),
                    })
                }
            },
        )?;
        Ok(Channel { obj, slot_size })
    }

    /// Opens a channel segment received from the server (client side), checking it.
    pub(crate) fn open(seg: Segment) -> Result<Channel> {
        let obj: ShmObject<ChannelState> =
            ShmObject::open_segment(seg, Kind::Other, channel_fingerprint(), "manager channel")?;
        let slot_size = obj.state().slot_size.load(Ordering::Relaxed) as usize;
        if slot_size == 0 || !slot_size.is_multiple_of(64) || obj.tail_len() < 2 * slot_size {
            return Err(Error::Protocol(
                "manager channel has a bad slot size".into(),
            ));
        }
        Ok(Channel { obj, slot_size })
    }

    /// The segment behind the channel (the server passes its descriptor).
    pub fn segment(&self) -> &Segment {
        self.obj.segment()
    }

    fn state(&self) -> &ChannelState {
        self.obj.state()
    }

    fn slot(&self, response: bool) -> *mut u8 {
        let offset = if response { self.slot_size } else { 0 };
        // SAFETY: the tail holds two slots of `slot_size` bytes (checked in open).
        unsafe { self.obj.tail_ptr().add(offset) }
    }

    /// Marks the channel closed by the server and wakes a sleeping client.
    pub fn close_by_server(&self) {
        self.state()
            .closed
            .fetch_or(SERVER_CLOSED, Ordering::SeqCst);
        sys::futex::futex_wake(&self.state().resp_seq, u32::MAX);
    }

    /// Marks the channel closed by the client and wakes the server thread.
    pub fn close_by_client(&self) {
        self.state()
            .closed
            .fetch_or(CLIENT_CLOSED, Ordering::SeqCst);
        sys::futex::futex_wake(&self.state().req_seq, u32::MAX);
    }

    fn closed(&self) -> u32 {
        self.state().closed.load(Ordering::SeqCst)
    }

    /// Writes `msg` into a slot (or an overflow segment kept in `keep`) and
    /// returns the value for the length word.
    fn write(&self, response: bool, msg: &[u8], keep: &mut Option<Segment>) -> Result<u64> {
        *keep = None;
        if msg.len() > MAX_MESSAGE {
            return Err(Error::MessageTooLarge {
                size: msg.len(),
                limit: MAX_MESSAGE,
            });
        }
        let slot = self.slot(response);
        if msg.len() <= self.slot_size {
            // SAFETY: the slot is `slot_size` bytes, the peer does not touch it
            // until we publish the length and sequence below.
            unsafe { std::ptr::copy_nonoverlapping(msg.as_ptr(), slot, msg.len()) };
            return Ok(msg.len() as u64);
        }
        let seg = Segment::create(msg.len())?;
        // SAFETY: the new segment is exactly `msg.len()` bytes and ours alone.
        unsafe { std::ptr::copy_nonoverlapping(msg.as_ptr(), seg.as_ptr(), msg.len()) };
        // Never redirected: the overflow segment is ours alone.
        let repr = crate::handle::encode_fd(seg.id(), seg.fd(), 0, msg.len() as u64)?.encode()?;
        // SAFETY: an encoded handle is far smaller than a slot (at least 4 KiB).
        unsafe { std::ptr::copy_nonoverlapping(repr.as_ptr(), slot, repr.len()) };
        *keep = Some(seg);
        Ok(OVERFLOW | repr.len() as u64)
    }

    /// Copies a message out of a slot (or the overflow segment it names) into `out`.
    fn read(&self, response: bool, len_word: u64, out: &mut AlignedVec) -> Result<()> {
        out.clear();
        let len = (len_word & !OVERFLOW) as usize;
        if len > self.slot_size {
            return Err(Error::Protocol(
                "manager message length exceeds its slot".into(),
            ));
        }
        let slot = self.slot(response);
        // SAFETY: `len` is within the slot, which the peer does not write
        // while we read (it waits for our answer or next request).
        let bytes = unsafe { std::slice::from_raw_parts(slot, len) };
        if len_word & OVERFLOW == 0 {
            out.extend_from_slice(bytes);
            return Ok(());
        }
        let repr = HandleRepr::decode(bytes)?;
        let total = repr.extra as usize;
        if total > MAX_MESSAGE {
            return Err(Error::Protocol("manager message too large".into()));
        }
        let seg = Segment::from_repr_any(&repr)?;
        if seg.len() < total {
            return Err(Error::Protocol(
                "manager overflow segment is truncated".into(),
            ));
        }
        // SAFETY: the segment is at least `total` bytes; its writer keeps it
        // unchanged until this exchange ends.
        out.extend_from_slice(unsafe { std::slice::from_raw_parts(seg.as_ptr(), total) });
        Ok(())
    }
}

/// A client waiting for its response (the runtime's one waiting policy,
/// `sync::park`, learns how long spinning pays here).
static CLIENT_SPIN: SpinSite = SpinSite::new();
/// A server thread waiting for its client's next request.
static SERVER_SPIN: SpinSite = SpinSite::new();

/// Spins on `word` while the waiting policy allows; the new value if it
/// moved from `old`.
fn spin_while(site: &SpinSite, word: &AtomicU32, old: u32) -> Option<u32> {
    let mut now = old;
    site.spin_until(|| {
        now = word.load(Ordering::Acquire);
        now != old
    })
    .then_some(now)
}

/// The client's end of a channel: one request at a time.
#[derive(Debug)]
pub struct ClientEnd {
    chan: Channel,
    server: crate::manager::protocol::LocalAddress,
    seq: u32,
    overflow: Option<Segment>,
    gone: bool,
    /// The connection's setup socket, if kept here: the server's end of it
    /// closes when the server dies, which tells its death without `/proc`.
    setup: Option<std::os::unix::net::UnixStream>,
}

impl ClientEnd {
    /// The client end of `chan`, talking to the server at `server`.
    ///
    /// Crate-private: each channel has exactly one client end and one server
    /// end, whose turn-taking keeps them off each other's slot bytes.
    pub(crate) fn new(chan: Channel, server: crate::manager::protocol::LocalAddress) -> ClientEnd {
        let seq = chan.state().req_seq.load(Ordering::Acquire);
        ClientEnd {
            chan,
            server,
            seq,
            overflow: None,
            gone: false,
            setup: None,
        }
    }

    /// Keeps the connection's setup socket open with this end (so the
    /// server sees this process go) and watches it: a server whose end of
    /// it closed is gone, even when this process cannot read `/proc` to
    /// check the server's liveness (it is out of descriptors).
    pub fn keep_setup_socket(&mut self, socket: std::os::unix::net::UnixStream) {
        self.setup = Some(socket);
    }

    /// The channel.
    pub fn channel(&self) -> &Channel {
        &self.chan
    }

    /// Whether the server is known to be gone.
    pub fn is_gone(&self) -> bool {
        self.gone
    }

    fn gone(&mut self, why: &str) -> Error {
        self.gone = true;
        Error::ManagerGone(format!("manager server {} {why}", self.server.pid))
    }

    /// Sends `request` and waits for the response, which is copied into `response`.
    ///
    /// Fails with `ManagerGone` if the server is dead or shut down (checked
    /// between sleep slices, so within about [`LIVENESS_SLICE`]).
    pub fn round_trip(&mut self, request: &[u8], response: &mut AlignedVec) -> Result<()> {
        self.round_trip_deadline(request, response, Deadline::Never)
    }

    /// As [`ClientEnd::round_trip`], waiting for the response until
    /// `deadline` at most: then [`Error::Timeout`], and the channel is
    /// unusable from then on (the answer may still come), as if gone.
    pub fn round_trip_deadline(
        &mut self,
        request: &[u8],
        response: &mut AlignedVec,
        deadline: Deadline,
    ) -> Result<()> {
        if self.gone {
            return Err(self.gone("is gone"));
        }
        if self.chan.closed() & SERVER_CLOSED != 0 {
            return Err(self.gone("has shut down"));
        }
        let st = self.chan.state();
        let len = self.chan.write(false, request, &mut self.overflow)?;
        st.req_len.store(len, Ordering::Relaxed);
        let seq = self.seq.wrapping_add(1);
        self.seq = seq;
        st.req_seq.store(seq, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if st.server_sleeping.load(Ordering::SeqCst) != 0 {
            sys::futex::futex_wake(&st.req_seq, 1);
        }
        let old = seq.wrapping_sub(1);
        let got = spin_while(&CLIENT_SPIN, &st.resp_seq, old);
        if got != Some(seq) {
            let chan = self.chan.clone();
            let setup = self.setup.as_ref().map(|s| s.as_fd());
            if let Err(why) = sleep_until(&chan, &self.server, setup, seq, deadline) {
                let gone = self.gone(why);
                return Err(match why {
                    NO_ANSWER => deadline.timeout_error(),
                    _ => gone,
                });
            }
        }
        let len = self.chan.state().resp_len.load(Ordering::Acquire);
        let result = self.chan.read(true, len, response);
        self.overflow = None;
        result
    }
}

/// Why [`sleep_until`] gave up at its deadline.
const NO_ANSWER: &str = "did not answer in time";

/// Sleeps until the response `seq` is published; `Err` says why the server
/// is gone (or [`NO_ANSWER`] at the deadline).
///
/// Between slices it checks the server: a death the kernel confirms, or the
/// server's end of the setup socket closing, is the end; a server whose
/// liveness cannot be checked (this process is out of descriptors) is
/// waited for: the request may still be answered, and a half-finished
/// exchange cannot be abandoned without losing the channel.
fn sleep_until(
    chan: &Channel,
    server: &crate::manager::protocol::LocalAddress,
    setup: Option<std::os::fd::BorrowedFd<'_>>,
    seq: u32,
    deadline: Deadline,
) -> std::result::Result<(), &'static str> {
    let st = chan.state();
    loop {
        st.client_sleeping.store(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let cur = st.resp_seq.load(Ordering::SeqCst);
        if cur == seq {
            st.client_sleeping.store(0, Ordering::Relaxed);
            return Ok(());
        }
        if chan.closed() & SERVER_CLOSED != 0 {
            st.client_sleeping.store(0, Ordering::Relaxed);
            return Err("has shut down");
        }
        if deadline.expired() {
            st.client_sleeping.store(0, Ordering::Relaxed);
            return Err(NO_ANSWER);
        }
        let outcome =
            sys::futex::futex_wait(&st.resp_seq, cur, Some(deadline.slice(LIVENESS_SLICE)));
        st.client_sleeping.store(0, Ordering::Relaxed);
        if outcome == WaitOutcome::TimedOut && st.resp_seq.load(Ordering::SeqCst) != seq {
            let gone = if setup.is_some_and(|fd| sys::fd::peer_hung_up(fd).unwrap_or(false)) {
                Some("closed the connection (it died or dropped this client)")
            } else if server.liveness().is_dead() {
                Some("died")
            } else {
                None
            };
            if let Some(why) = gone {
                // It may have answered just before it went.
                if st.resp_seq.load(Ordering::SeqCst) == seq {
                    return Ok(());
                }
                return Err(why);
            }
        }
    }
}

/// Why a server thread stopped waiting for requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hangup {
    /// The client closed the connection.
    Closed,
    /// The client process died.
    ClientDied,
    /// The server is shutting down.
    Shutdown,
}

/// The server's end of a channel.
#[derive(Debug)]
pub struct ServerEnd {
    chan: Channel,
    seen: u32,
    overflow: Option<Segment>,
}

impl ServerEnd {
    /// The server end of a freshly created channel (one per channel; see
    /// [`ClientEnd::new`]).
    pub(crate) fn new(chan: Channel) -> ServerEnd {
        ServerEnd {
            chan,
            seen: 0,
            overflow: None,
        }
    }

    /// The channel.
    pub fn channel(&self) -> &Channel {
        &self.chan
    }

    /// Waits for the next request and copies it into `request`.
    ///
    /// Between sleep slices it asks `peer_alive` whether the client still
    /// lives and `stopping` whether the server is shutting down.
    pub fn next_request(
        &mut self,
        request: &mut AlignedVec,
        mut peer_alive: impl FnMut() -> bool,
        stopping: impl Fn() -> bool,
    ) -> std::result::Result<(), Hangup> {
        let st = self.chan.state();
        if spin_while(&SERVER_SPIN, &st.req_seq, self.seen).is_none() {
            loop {
                st.server_sleeping.store(1, Ordering::SeqCst);
                fence(Ordering::SeqCst);
                let cur = st.req_seq.load(Ordering::SeqCst);
                if cur != self.seen {
                    st.server_sleeping.store(0, Ordering::Relaxed);
                    break;
                }
                if self.chan.closed() & CLIENT_CLOSED != 0 {
                    return Err(Hangup::Closed);
                }
                if stopping() {
                    return Err(Hangup::Shutdown);
                }
                let outcome = sys::futex::futex_wait(&st.req_seq, cur, Some(LIVENESS_SLICE));
                st.server_sleeping.store(0, Ordering::Relaxed);
                if outcome == WaitOutcome::TimedOut
                    && st.req_seq.load(Ordering::SeqCst) == self.seen
                    && !peer_alive()
                {
                    return Err(Hangup::ClientDied);
                }
            }
        }
        self.overflow = None;
        self.seen = st.req_seq.load(Ordering::Acquire);
        let len = st.req_len.load(Ordering::Acquire);
        if let Err(e) = self.chan.read(false, len, request) {
            // Answered as a malformed request by the caller.
            tracing::debug!("unreadable manager request: {e}");
            request.clear();
        }
        Ok(())
    }

    /// Publishes the response to the request just read.
    pub fn respond(&mut self, response: &[u8]) -> Result<()> {
        let st = self.chan.state();
        let len = self.chan.write(true, response, &mut self.overflow)?;
        st.resp_len.store(len, Ordering::Relaxed);
        st.resp_seq.store(self.seen, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if st.client_sleeping.load(Ordering::SeqCst) != 0 {
            sys::futex::futex_wake(&st.resp_seq, 1);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::protocol::LocalAddress as ServerAddress;
    use std::time::Instant;

    fn me() -> ServerAddress {
        ServerAddress {
            pid: sys::process::getpid(),
            start_ticks: sys::process::own_start_ticks(),
            token: 1,
        }
    }

    /// A server thread that answers each request with its bytes reversed.
    fn echo_server(chan: Channel) -> std::thread::JoinHandle<Hangup> {
        std::thread::spawn(move || {
            let mut end = ServerEnd::new(chan);
            let mut req = AlignedVec::new();
            loop {
                if let Err(h) = end.next_request(&mut req, || true, || false) {
                    return h;
                }
                let answer: Vec<u8> = req.iter().rev().copied().collect();
                end.respond(&answer).unwrap();
            }
        })
    }

    #[test]
    fn round_trips_small_and_overflowing_messages() {
        let chan = Channel::create(4096).unwrap();
        let server = echo_server(chan.clone());
        let mut client = ClientEnd::new(Channel::open(chan.segment().clone()).unwrap(), me());
        let mut resp = AlignedVec::new();
        for msg in [
            vec![1u8, 2, 3],
            vec![],
            (0..100_000u32).map(|i| i as u8).collect(),
        ] {
            client.round_trip(&msg, &mut resp).unwrap();
            let expected: Vec<u8> = msg.iter().rev().copied().collect();
            assert_eq!(&resp[..], &expected[..]);
        }
        // After a pause long enough for the server to sleep, it is woken.
        std::thread::sleep(Duration::from_millis(20));
        client.round_trip(b"ab", &mut resp).unwrap();
        assert_eq!(&resp[..], b"ba");
        client.channel().close_by_client();
        assert_eq!(server.join().unwrap(), Hangup::Closed);
    }

    #[test]
    fn a_closed_server_is_manager_gone() {
        let chan = Channel::create(4096).unwrap();
        let mut client = ClientEnd::new(chan.clone(), me());
        chan.close_by_server();
        let mut resp = AlignedVec::new();
        assert!(matches!(
            client.round_trip(b"x", &mut resp),
            Err(Error::ManagerGone(_))
        ));
        assert!(client.is_gone());
    }

    #[test]
    fn a_dead_server_is_noticed_between_sleep_slices() {
        let chan = Channel::create(4096).unwrap();
        // A pid above pid_max: no such process.
        let dead = ServerAddress {
            pid: 0x7FFF_FFF0,
            start_ticks: 1,
            token: 1,
        };
        let mut client = ClientEnd::new(chan, dead);
        let start = Instant::now();
        let mut resp = AlignedVec::new();
        assert!(matches!(
            client.round_trip(b"x", &mut resp),
            Err(Error::ManagerGone(_))
        ));
        assert!(start.elapsed() < Duration::from_secs(10));
    }
}
