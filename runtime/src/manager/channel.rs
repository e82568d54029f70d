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
//! A message larger than its slot travels in an overflow segment: the slot
//! then holds the segment's handle (the reader opens it through
//! `/proc/<writer>/fd`, while the writer waits for the exchange to end).
//! Each side keeps its overflow segment for the next large message (growing
//! it to fit, in powers of two) and the reader keeps its mapping of the
//! peer's, so a stream of large values costs a copy in and a copy out, not
//! a segment's creation, mapping and first touch each time. A kept segment
//! is let go once no message has needed it for [`OVERFLOW_IDLE`] (checked
//! as messages pass; a sleeping server lets go of its mapping of the
//! client's), or after its exchange when it is over [`KEEP_LIMIT`].

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
use std::time::Duration;

use rkyv::util::AlignedVec;

use crate::codec::Shareable;
use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::handle::HandleRepr;
use crate::manager::response_buf::ResponseBuf;
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

/// Overflow segments up to this size are kept for the next large message.
pub const KEEP_LIMIT: usize = 16 << 20;
/// A kept overflow segment unused (or used at under a quarter) this long is let go.
pub const OVERFLOW_IDLE: Duration = Duration::from_secs(2);

/// Set in a length word when the slot holds an overflow segment's handle.
const OVERFLOW: u64 = 1 << 63;
/// `closed` bits.
const SERVER_CLOSED: u32 = 1;
const CLIENT_CLOSED: u32 = 2;

fn channel_fingerprint() -> u64 {
    fingerprint_str("multiproc::manager::channel/1")
}

/// One side's overflow segments: the one it writes large messages into,
/// and its mapping of the one its peer wrote the last large message into.
#[derive(Debug, Default)]
struct Overflow {
    /// Ours, kept for the next large message.
    written: Option<Segment>,
    /// When a message last needed more than a quarter of `written`.
    written_used: Duration,
    /// The peer's, kept mapped (attaching it again is then a lookup).
    read: Option<Segment>,
    /// When `read` last carried a message.
    read_used: Duration,
}

impl Overflow {
    /// Lets go of segments no message has needed for [`OVERFLOW_IDLE`]. Call
    /// only when the peer is done with the last message written.
    fn trim(&mut self, now: Duration) {
        if self.written.is_some() && now.saturating_sub(self.written_used) >= OVERFLOW_IDLE {
            self.written = None;
        }
        self.trim_read(now);
    }

    /// Lets go of the peer's segment if no message came in it for [`OVERFLOW_IDLE`].
    fn trim_read(&mut self, now: Duration) {
        if self.read.is_some() && now.saturating_sub(self.read_used) >= OVERFLOW_IDLE {
            self.read = None;
        }
    }

    /// Lets go of segments too large to keep once the exchange is over.
    fn after_exchange(&mut self) {
        if self.written.as_ref().is_some_and(|s| s.len() > KEEP_LIMIT) {
            self.written = None;
        }
        if self.read.as_ref().is_some_and(|s| s.len() > KEEP_LIMIT) {
            self.read = None;
        }
    }
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
        self.wake_server();
    }

    /// Wakes the server thread sleeping on this channel (its client died,
    /// or the server is shutting down), whatever its state.
    pub(crate) fn wake_server(&self) {
        sys::futex::futex_wake(&self.state().req_seq, u32::MAX);
    }

    fn closed(&self) -> u32 {
        self.state().closed.load(Ordering::SeqCst)
    }

    /// Writes `msg` into a slot (or the overflow segment kept in `keep`,
    /// made or grown to fit) and returns the value for the length word.
    fn write(&self, response: bool, msg: &[u8], keep: &mut Overflow) -> Result<u64> {
        if msg.len() > MAX_MESSAGE {
            return Err(Error::MessageTooLarge {
                size: msg.len(),
                limit: MAX_MESSAGE,
            });
        }
        let now = sys::time::coarse_monotonic();
        let slot = self.slot(response);
        if msg.len() <= self.slot_size {
            keep.trim(now);
            // SAFETY: the slot is `slot_size` bytes, the peer does not touch it
            // until we publish the length and sequence below.
            unsafe { std::ptr::copy_nonoverlapping(msg.as_ptr(), slot, msg.len()) };
            return Ok(msg.len() as u64);
        }
        let fits = keep.written.as_ref().is_some_and(|s| s.len() >= msg.len());
        if !fits {
            // Drop the old one first: its memory may be needed for the new one.
            keep.written = None;
            keep.written = Some(grown_segment(msg.len())?);
        }
        let seg = keep
            .written
            .as_ref()
            .expect("an overflow segment was just made");
        // SAFETY: the segment is at least `msg.len()` bytes and only this side
        // writes it; the peer reads it only between our publishing this
        // message and its answer (or next request), when we do not write.
        unsafe { std::ptr::copy_nonoverlapping(msg.as_ptr(), seg.as_ptr(), msg.len()) };
        self.point_to_overflow(response, msg.len(), keep)
    }

    /// Puts the handle of the kept overflow segment, whose first `len`
    /// bytes hold the message, into a slot; returns the length word.
    fn point_to_overflow(&self, response: bool, len: usize, keep: &mut Overflow) -> Result<u64> {
        let Some(seg) = keep.written.as_ref().filter(|s| s.len() >= len) else {
            return Err(Error::Protocol(
                "no overflow segment holds the message".into(),
            ));
        };
        if len > seg.len() / 4 {
            keep.written_used = sys::time::coarse_monotonic();
        }
        // Never redirected: the overflow segment is ours alone.
        let repr = crate::handle::encode_fd(seg.id(), seg.fd(), 0, len as u64)?.encode()?;
        // SAFETY: an encoded handle is far smaller than a slot (at least 4 KiB).
        unsafe { std::ptr::copy_nonoverlapping(repr.as_ptr(), self.slot(response), repr.len()) };
        Ok(OVERFLOW | repr.len() as u64)
    }

    /// Copies a message out of a slot (or the overflow segment it names) into `out`.
    fn read(
        &self,
        response: bool,
        len_word: u64,
        out: &mut AlignedVec,
        keep: &mut Overflow,
    ) -> Result<()> {
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
            keep.trim(sys::time::coarse_monotonic());
            return Ok(());
        }
        let repr = HandleRepr::decode(bytes)?;
        let total = repr.extra as usize;
        if total > MAX_MESSAGE {
            return Err(Error::Protocol("manager message too large".into()));
        }
        // The peer's kept segment is found mapped already (by its id) while
        // `keep.read` holds it; a new one is opened and kept instead.
        let seg = Segment::from_repr_any(&repr)?;
        if seg.len() < total {
            return Err(Error::Protocol(
                "manager overflow segment is truncated".into(),
            ));
        }
        // SAFETY: the segment is at least `total` bytes; its writer keeps it
        // unchanged until this exchange ends.
        out.extend_from_slice(unsafe { std::slice::from_raw_parts(seg.as_ptr(), total) });
        keep.read = Some(seg);
        keep.read_used = sys::time::coarse_monotonic();
        Ok(())
    }
}

/// A new overflow segment for a message of `len` bytes: the next power of
/// two, so a growing stream of values does not make one per message, or
/// exactly `len` when the machine cannot back that much.
pub(crate) fn grown_segment(len: usize) -> Result<Segment> {
    let roomy = len.checked_next_power_of_two().unwrap_or(len);
    if roomy > len
        && let Ok(seg) = Segment::create(roomy)
    {
        return Ok(seg);
    }
    Segment::create(len)
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
    overflow: Overflow,
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
            overflow: Overflow::default(),
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
        let result = self.chan.read(true, len, response, &mut self.overflow);
        self.overflow.after_exchange();
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
    overflow: Overflow,
}

impl ServerEnd {
    /// The server end of a freshly created channel (one per channel; see
    /// [`ClientEnd::new`]).
    pub(crate) fn new(chan: Channel) -> ServerEnd {
        ServerEnd {
            chan,
            seen: 0,
            overflow: Overflow::default(),
        }
    }

    /// The channel.
    pub fn channel(&self) -> &Channel {
        &self.chan
    }

    /// Waits for the next request and copies it into `request`.
    ///
    /// It sleeps in slices of `slice`; at each wake-up it asks `stopping`
    /// whether the server is shutting down and `died` whether the client
    /// was seen to end, and after a slice that passed without a request,
    /// `peer_alive` whether the client still lives.
    pub fn next_request(
        &mut self,
        request: &mut AlignedVec,
        slice: Duration,
        mut peer_alive: impl FnMut() -> bool,
        stopping: impl Fn() -> bool,
        died: impl Fn() -> bool,
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
                if died() {
                    return Err(Hangup::ClientDied);
                }
                let outcome = sys::futex::futex_wait(&st.req_seq, cur, Some(slice));
                st.server_sleeping.store(0, Ordering::Relaxed);
                if outcome == WaitOutcome::TimedOut {
                    // An idle connection lets go of the client's last large
                    // request (our last large response stays until the next
                    // request shows the client read it: it may be stopped).
                    self.overflow.trim_read(sys::time::coarse_monotonic());
                }
                if outcome == WaitOutcome::TimedOut
                    && st.req_seq.load(Ordering::SeqCst) == self.seen
                    && !peer_alive()
                {
                    return Err(Hangup::ClientDied);
                }
            }
        }
        self.overflow.after_exchange();
        self.seen = st.req_seq.load(Ordering::Acquire);
        let len = st.req_len.load(Ordering::Acquire);
        if let Err(e) = self.chan.read(false, len, request, &mut self.overflow) {
            // Answered as a malformed request by the caller.
            tracing::debug!("unreadable manager request: {e}");
            request.clear();
        }
        Ok(())
    }

    /// Publishes the response to the request just read.
    pub fn respond(&mut self, response: &[u8]) -> Result<()> {
        let len = self.chan.write(true, response, &mut self.overflow)?;
        self.publish(len);
        Ok(())
    }

    /// Lends the kept overflow segment to `out` for the response to the
    /// request just read, so that a large one is encoded straight into it.
    pub(crate) fn lend_overflow(&mut self, out: &mut ResponseBuf) {
        out.lend(self.chan.slot_size, self.overflow.written.take());
    }

    /// Publishes the response in `out`, taking back the segment lent to it
    /// (see [`ServerEnd::lend_overflow`]).
    pub(crate) fn respond_from(&mut self, out: &mut ResponseBuf) -> Result<()> {
        let (seg, in_segment) = out.take_back();
        self.overflow.written = seg;
        match in_segment {
            Some(len) => {
                let word = self.chan.point_to_overflow(true, len, &mut self.overflow)?;
                self.publish(word);
                Ok(())
            }
            None => self.respond(out.bytes()),
        }
    }

    /// Makes the response whose length word is `len` the client's to read.
    fn publish(&self, len: u64) {
        let st = self.chan.state();
        st.resp_len.store(len, Ordering::Relaxed);
        st.resp_seq.store(self.seen, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if st.client_sleeping.load(Ordering::SeqCst) != 0 {
            sys::futex::futex_wake(&st.resp_seq, 1);
        }
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
                if let Err(h) =
                    end.next_request(&mut req, LIVENESS_SLICE, || true, || false, || false)
                {
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
    fn large_messages_reuse_one_overflow_segment_that_grows_and_is_let_go() {
        let chan = Channel::create(4096).unwrap();
        let server = echo_server(chan.clone());
        let mut client = ClientEnd::new(Channel::open(chan.segment().clone()).unwrap(), me());
        let mut resp = AlignedVec::new();
        let mut trip = |client: &mut ClientEnd, n: usize| {
            let msg: Vec<u8> = (0..n).map(|i| (i * 7) as u8).collect();
            client.round_trip(&msg, &mut resp).unwrap();
            let expected: Vec<u8> = msg.iter().rev().copied().collect();
            assert!(resp[..] == expected[..], "{n} bytes echoed");
        };
        trip(&mut client, 10_000);
        let written = |c: &ClientEnd| c.overflow.written.as_ref().map(|s| (s.id(), s.len()));
        let (id, len) = written(&client).expect("the request's segment is kept");
        assert!(len >= 10_000);
        // The next large messages reuse it, and the response's mapping is kept.
        for n in [12_000, 9_000, 10_000] {
            trip(&mut client, n);
            assert_eq!(written(&client), Some((id, len)));
        }
        let read_id = client.overflow.read.as_ref().map(Segment::id);
        assert!(read_id.is_some());
        trip(&mut client, 11_000);
        assert_eq!(client.overflow.read.as_ref().map(Segment::id), read_id);
        // A larger message grows it.
        trip(&mut client, 100_000);
        let (grown, grown_len) = written(&client).unwrap();
        assert_ne!(grown, id);
        assert!(grown_len >= 100_000);
        // Small messages pass through the slot; once the segments have not
        // been needed for a while they are let go, and large ones still pass.
        trip(&mut client, 100);
        assert!(written(&client).is_some());
        client
            .overflow
            .trim(sys::time::coarse_monotonic() + OVERFLOW_IDLE);
        assert!(written(&client).is_none() && client.overflow.read.is_none());
        trip(&mut client, 50_000);
        // One over the keep limit is dropped once its exchange is over.
        trip(&mut client, KEEP_LIMIT + 1);
        assert!(written(&client).is_none() && client.overflow.read.is_none());
        trip(&mut client, 3);
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
