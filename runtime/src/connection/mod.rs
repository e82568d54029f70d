//! Connections between processes: Python's `Pipe()`, `Connection`, and
//! `multiprocessing.connection`'s `Listener`, `Client` and `wait`.
//!
//! A [`Connection`] is one end of a two-way (or one-way) message channel.
//! [`Pipe::new`] makes both ends of a pipe in shared memory: one ring per
//! direction, with the same spin-then-sleep waits as the queues, so a round
//! trip between two processes takes about a microsecond instead of the tens of
//! microseconds of a socket.
//!
//! [`Listener`] and [`client`] connect processes over Unix or TCP sockets,
//! with an optional authkey (a mutual HMAC-SHA256 challenge), giving
//! [`SocketConnection`]s; [`wait`] waits on several at once.

mod listener;
mod pipe;
mod socket;
mod wait;

use std::borrow::Borrow;
use std::marker::PhantomData;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;

use crate::codec::Shareable;
use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::handle::{HandleRepr, ShareHandle};
use crate::queue::ring::Sink;
use crate::shm::fingerprint_str;

pub use listener::{Address, Listener, client};
pub use pipe::DEFAULT_PIPE_CAPACITY;
use pipe::ShmEnd;
pub use socket::SocketConnection;
pub use wait::{WaitSource, Waitable, wait};

/// Tag, in `HandleRepr::extra` above bit 8, of a shared-memory pipe end.
const TRANSPORT_SHM: u64 = 0;

/// How a connection's bytes travel.
#[derive(Debug)]
enum Transport {
    /// A pair of rings in a shared segment.
    Shm(ShmEnd),
}

impl Transport {
    fn send_bytes(&self, bytes: &[u8], deadline: Deadline) -> Result<()> {
        match self {
            Transport::Shm(end) => end.send_bytes(bytes, deadline),
        }
    }

    fn recv_into<S: Sink>(&self, out: &mut S, max: Option<u64>, deadline: Deadline) -> Result<()> {
        match self {
            Transport::Shm(end) => end.recv_into(out, max, deadline),
        }
    }

    fn poll(&self, deadline: Deadline) -> Result<bool> {
        match self {
            Transport::Shm(end) => end.poll(deadline),
        }
    }

    fn close(&self) {
        match self {
            Transport::Shm(end) => end.close(),
        }
    }

    fn is_closed(&self) -> bool {
        match self {
            Transport::Shm(end) => end.is_closed(),
        }
    }

    fn readable(&self) -> bool {
        match self {
            Transport::Shm(end) => end.readable(),
        }
    }

    fn writable(&self) -> bool {
        match self {
            Transport::Shm(end) => end.writable(),
        }
    }

    fn wait_source(&self) -> WaitSource<'_> {
        match self {
            Transport::Shm(end) => end.wait_source(),
        }
    }

    fn fileno(&self) -> Result<RawFd> {
        match self {
            Transport::Shm(end) => end.fileno(),
        }
    }

    fn send_handle(&self, fd: BorrowedFd<'_>, deadline: Deadline) -> Result<()> {
        match self {
            Transport::Shm(end) => end.send_handle(fd, deadline),
        }
    }

    fn recv_handle(&self, deadline: Deadline) -> Result<OwnedFd> {
        match self {
            Transport::Shm(end) => end.recv_handle(deadline),
        }
    }

    fn to_repr(&self) -> Result<HandleRepr> {
        match self {
            Transport::Shm(end) => {
                let mut repr = end.to_repr()?;
                repr.extra |= TRANSPORT_SHM << 8;
                Ok(repr)
            }
        }
    }
}

/// Receives into a caller's buffer, keeping a message that does not fit
/// whole (for `BufferTooShort`).
struct SliceSink<'a> {
    buf: &'a mut [u8],
    len: usize,
    /// The message, once it turned out longer than `buf`.
    overflow: Option<Vec<u8>>,
}

impl<'a> SliceSink<'a> {
    fn new(buf: &'a mut [u8]) -> SliceSink<'a> {
        SliceSink {
            buf,
            len: 0,
            overflow: None,
        }
    }

    fn finish(self) -> Result<usize> {
        match self.overflow {
            Some(message) => Err(Error::BufferTooShort(message)),
            None => Ok(self.len),
        }
    }
}

impl Sink for SliceSink<'_> {
    fn clear(&mut self) {
        self.len = 0;
        self.overflow = None;
    }

    fn len(&self) -> usize {
        self.overflow.as_ref().map_or(self.len, Vec::len)
    }

    fn reserve(&mut self, additional: usize) {
        if let Some(v) = &mut self.overflow {
            v.reserve(additional);
        } else if self.len.saturating_add(additional) > self.buf.len() {
            let mut v = Vec::with_capacity(self.len.saturating_add(additional));
            v.extend_from_slice(&self.buf[..self.len]);
            self.overflow = Some(v);
        }
    }

    fn try_reserve(&mut self, additional: usize) -> bool {
        if let Some(v) = &mut self.overflow {
            return Sink::try_reserve(v, additional);
        }
        let want = self.len.saturating_add(additional);
        if want <= self.buf.len() {
            return true;
        }
        let mut v = Vec::new();
        if v.try_reserve_exact(want).is_err() {
            return false;
        }
        v.extend_from_slice(&self.buf[..self.len]);
        self.overflow = Some(v);
        true
    }

    unsafe fn append_raw(&mut self, src: *const u8, len: usize) {
        self.reserve(len);
        match &mut self.overflow {
            // SAFETY: the caller vouches for `src` (valid for `len` reads).
            Some(v) => unsafe { v.append_raw(src, len) },
            None => {
                // SAFETY: `reserve` left room: `self.len + len <= buf.len()`;
                // `src` is valid for `len` reads (the caller's promise) and
                // cannot overlap the caller's exclusive buffer.
                unsafe {
                    std::ptr::copy_nonoverlapping(src, self.buf.as_mut_ptr().add(self.len), len)
                };
                self.len += len;
            }
        }
    }
}

fn connection_fingerprint<T>() -> (u64, String) {
    let name = format!("Connection<{}>", std::any::type_name::<T>());
    (fingerprint_str(&name), name)
}

/// Makes pipes: Python's `multiprocessing.Pipe`.
///
/// ```
/// use multiproc::{Connection, Pipe, Process};
///
/// fn echo(conn: Connection<String>) {
///     while let Ok(msg) = conn.recv() {
///         conn.send(msg.to_uppercase()).unwrap();
///     }
/// }
///
/// fn main() {
///     multiproc::init();
///     let (here, there) = Pipe::new().unwrap();
///     let mut p = Process::new(echo, there);
///     p.start().unwrap();
///     here.send("hello".to_string()).unwrap();
///     assert_eq!(here.recv().unwrap(), "HELLO");
///     here.close(); // the child's recv now fails with Closed, and it returns
///     p.join().unwrap();
/// }
/// ```
#[derive(Debug)]
pub struct Pipe;

impl Pipe {
    /// A two-way pipe: messages sent at either end arrive at the other.
    ///
    /// The message type goes on the call, `Pipe::new::<String>()` (or is
    /// inferred from how the ends are used); `Pipe` itself takes none.
    #[allow(clippy::new_ret_no_self, reason = "Python's Pipe() returns both ends")]
    pub fn new<T: Shareable>() -> Result<(Connection<T>, Connection<T>)> {
        Self::with_capacity(true, DEFAULT_PIPE_CAPACITY)
    }

    /// A one-way pipe, as Python's `Pipe(duplex=False)`: `(reader, writer)`.
    pub fn one_way<T: Shareable>() -> Result<(Connection<T>, Connection<T>)> {
        Self::with_capacity(false, DEFAULT_PIPE_CAPACITY)
    }

    /// A pipe whose ring in each direction holds `bytes` bytes (rounded up to a
    /// power of two, at least 256).
    /// One-way pipes return `(reader, writer)`.
    pub fn with_capacity<T: Shareable>(
        duplex: bool,
        bytes: usize,
    ) -> Result<(Connection<T>, Connection<T>)> {
        let (fp, _) = connection_fingerprint::<T>();
        let (a, b) = ShmEnd::pair(fp, duplex, bytes)?;
        Ok((
            Connection::new(Transport::Shm(a)),
            Connection::new(Transport::Shm(b)),
        ))
    }
}

/// One end of a connection (Python's `Connection`), carrying `T` messages.
///
/// `send` encodes a value and `recv` decodes one; `send_bytes` and
/// `recv_bytes` move raw byte strings. Messages of any size go through.
///
/// **End of file.** When the other end is closed (with [`Connection::close`],
/// or by dropping it) or its owner dies, `recv` returns the messages still
/// in the pipe and then [`Error::Closed`]; `send` fails with `Closed`, as
/// Python's raises `BrokenPipeError`. A dead peer is noticed within about
/// 100 ms by a waiting `recv` (at once by `try_recv` and `poll`), and within
/// a few milliseconds by `send`. An end is owned by the process that last
/// used it or received it (as a process argument or inside a message).
/// Dropping a `Connection` closes its end, in whatever process, unless the
/// end went elsewhere: it was sent (encoded as an argument or in a
/// message), it is the parent's copy of a forked child's argument or
/// capture (the child has it now), or another process used it last (a
/// forked child sharing it through an `Arc`). Closing an end closes it for
/// every process that holds it.
///
/// **Liveness.** Only a death the kernel confirms ends a pipe: a process out
/// of descriptors cannot read `/proc` to check its peer, and takes it for
/// alive. A `recv` or `send` without a timeout that has been unable to
/// check its peer for 10 s fails with [`Error::Io`] instead of waiting on
/// a peer that may have died unseen; with a timeout it ends at the
/// deadline as usual.
///
/// A `Connection` is `Send` and `Sync` but not `Clone`: keep one per end per
/// process (share it between threads by reference or `Arc`).
pub struct Connection<T> {
    transport: Transport,
    /// A message taken that could not be opened yet (see `HeldBack`).
    held: crate::queue::HeldBack,
    _t: PhantomData<fn(T) -> T>,
}

impl<T> std::fmt::Debug for Connection<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("transport", &self.transport)
            .finish()
    }
}

impl<T: Shareable> Connection<T> {
    fn new(transport: Transport) -> Self {
        Connection {
            transport,
            held: crate::queue::HeldBack::default(),
            _t: PhantomData,
        }
    }

    /// Sends `item`, waiting while the pipe is full.
    pub fn send(&self, item: impl Borrow<T>) -> Result<()> {
        self.send_deadline(item.borrow(), Deadline::Never)
    }

    /// Sends `item` if it fits now; `Err(Full)` otherwise.
    pub fn try_send(&self, item: impl Borrow<T>) -> Result<()> {
        self.send_deadline(item.borrow(), Deadline::Now)
    }

    /// Sends `item`, waiting at most `timeout` for room; `Err(Full)` otherwise.
    pub fn send_timeout(&self, item: impl Borrow<T>, timeout: Duration) -> Result<()> {
        self.send_deadline(item.borrow(), Deadline::after(timeout))
    }

    fn send_deadline(&self, item: &T, deadline: Deadline) -> Result<()> {
        crate::queue::with_encoded(item, |bytes| self.transport.send_bytes(bytes, deadline))
    }

    /// Sends a raw byte string (received whole by `recv_bytes`).
    pub fn send_bytes(&self, bytes: &[u8]) -> Result<()> {
        self.transport.send_bytes(bytes, Deadline::Never)
    }

    /// [`Connection::send_bytes`] if the bytes fit now; `Err(Full)` otherwise.
    pub fn try_send_bytes(&self, bytes: &[u8]) -> Result<()> {
        self.transport.send_bytes(bytes, Deadline::Now)
    }

    /// [`Connection::send_bytes`], waiting at most `timeout` for room; `Err(Full)` otherwise.
    pub fn send_bytes_timeout(&self, bytes: &[u8], timeout: Duration) -> Result<()> {
        self.transport.send_bytes(bytes, Deadline::after(timeout))
    }

    /// Receives the next message, waiting for one; `Err(Closed)` at end of file.
    pub fn recv(&self) -> Result<T> {
        self.recv_deadline(Deadline::Never)
    }

    /// Receives a message if one is there now; `Err(Empty)` otherwise.
    pub fn try_recv(&self) -> Result<T> {
        self.recv_deadline(Deadline::Now)
    }

    /// Receives a message, waiting at most `timeout`; `Err(Timeout)` otherwise.
    ///
    /// Once the first part of a message larger than the pipe's ring has been
    /// taken, the rest is awaited beyond the timeout while its sender is
    /// writing it (as Python's `recv` reads a message it has begun whole).
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T> {
        self.recv_deadline(Deadline::after(timeout))
    }

    fn recv_deadline(&self, deadline: Deadline) -> Result<T> {
        self.held
            .receive(|buf| self.transport.recv_into(buf, None, deadline))
    }

    /// Receives the next message as raw bytes, waiting for one.
    pub fn recv_bytes(&self) -> Result<Vec<u8>> {
        self.recv_bytes_deadline(None, Deadline::Never)
    }

    /// [`Connection::recv_bytes`] if a message is there now; `Err(Empty)` otherwise.
    pub fn try_recv_bytes(&self) -> Result<Vec<u8>> {
        self.recv_bytes_deadline(None, Deadline::Now)
    }

    /// [`Connection::recv_bytes`], waiting at most `timeout` (beyond it for
    /// the rest of a message begun, as [`Connection::recv_timeout`]).
    pub fn recv_bytes_timeout(&self, timeout: Duration) -> Result<Vec<u8>> {
        self.recv_bytes_deadline(None, Deadline::after(timeout))
    }

    /// Receives the next message as raw bytes if it is at most `max` bytes long.
    ///
    /// A longer message is refused with `Err(InvalidArgument)` and left in the
    /// pipe (unlike Python, which then makes the connection unusable): a later
    /// `recv_bytes` with a larger limit still gets it.
    pub fn recv_bytes_max(&self, max: usize) -> Result<Vec<u8>> {
        self.recv_bytes_deadline(Some(max), Deadline::Never)
    }

    /// [`Connection::recv_bytes_max`] if a message is there now; `Err(Empty)` otherwise.
    pub fn try_recv_bytes_max(&self, max: usize) -> Result<Vec<u8>> {
        self.recv_bytes_deadline(Some(max), Deadline::Now)
    }

    /// [`Connection::recv_bytes_max`], waiting at most `timeout`.
    pub fn recv_bytes_max_timeout(&self, max: usize, timeout: Duration) -> Result<Vec<u8>> {
        self.recv_bytes_deadline(Some(max), Deadline::after(timeout))
    }

    /// Receives the next message into `buf` and returns its length
    /// (Python's `recv_bytes_into`; for Python's `offset`, pass
    /// `&mut buf[offset..]`), waiting for one.
    ///
    /// A message longer than `buf` is taken all the same and returned
    /// whole in [`Error::BufferTooShort`] (what `buf` holds then is
    /// unspecified), as Python raises `BufferTooShort(message)`.
    ///
    /// ```
    /// use multiproc::{Error, Pipe};
    /// let (a, b) = Pipe::new::<()>().unwrap();
    /// a.send_bytes(b"hello").unwrap();
    /// let mut buf = [0u8; 8];
    /// assert_eq!(b.recv_bytes_into(&mut buf).unwrap(), 5);
    /// assert_eq!(&buf[..5], b"hello");
    /// a.send_bytes(b"far too long").unwrap();
    /// match b.recv_bytes_into(&mut buf) {
    ///     Err(Error::BufferTooShort(message)) => assert_eq!(message, b"far too long"),
    ///     other => panic!("{other:?}"),
    /// }
    /// ```
    pub fn recv_bytes_into(&self, buf: &mut [u8]) -> Result<usize> {
        self.recv_bytes_into_deadline(buf, Deadline::Never)
    }

    /// [`Connection::recv_bytes_into`] if a message is there now; `Err(Empty)` otherwise.
    pub fn try_recv_bytes_into(&self, buf: &mut [u8]) -> Result<usize> {
        self.recv_bytes_into_deadline(buf, Deadline::Now)
    }

    /// [`Connection::recv_bytes_into`], waiting at most `timeout`.
    pub fn recv_bytes_into_timeout(&self, buf: &mut [u8], timeout: Duration) -> Result<usize> {
        self.recv_bytes_into_deadline(buf, Deadline::after(timeout))
    }

    fn recv_bytes_into_deadline(&self, buf: &mut [u8], deadline: Deadline) -> Result<usize> {
        if let Some(held) = self.held.take_held() {
            // A message held back for want of descriptors comes first.
            return match buf.get_mut(..held.len()) {
                Some(to) => {
                    to.copy_from_slice(&held);
                    Ok(held.len())
                }
                None => Err(Error::BufferTooShort(held.to_vec())),
            };
        }
        let mut sink = SliceSink::new(buf);
        self.transport.recv_into(&mut sink, None, deadline)?;
        sink.finish()
    }

    /// Sends a descriptor to the process at the other end (Python's
    /// `reduction.send_handle`): its [`Connection::recv_handle`] gets its
    /// own copy, open on the same file, socket or pipe. This process keeps
    /// its own. Handles and messages arrive in the order they were sent.
    ///
    /// The descriptor travels on the pipe's side channel, a socket pair
    /// made with the pipe that goes with each end when it is a process's
    /// argument (or is inherited by a fork). An end that travelled inside a
    /// message (a queue, another pipe) has none: [`Error::InvalidState`].
    ///
    /// ```
    /// use std::io::{Read, Write};
    /// use std::os::unix::net::UnixStream;
    /// use multiproc::Pipe;
    ///
    /// let (a, b) = Pipe::new::<()>().unwrap();
    /// let (mut mine, theirs) = UnixStream::pair().unwrap();
    /// a.send_handle(&theirs).unwrap();
    /// drop(theirs);
    /// let mut got = UnixStream::from(b.recv_handle().unwrap());
    /// got.write_all(b"hi").unwrap();
    /// let mut buf = [0u8; 2];
    /// mine.read_exact(&mut buf).unwrap();
    /// assert_eq!(&buf, b"hi");
    /// ```
    pub fn send_handle(&self, fd: impl AsFd) -> Result<()> {
        self.transport.send_handle(fd.as_fd(), Deadline::Never)
    }

    /// Receives a descriptor the other end sent with
    /// [`Connection::send_handle`] (Python's `reduction.recv_handle`),
    /// waiting for it.
    ///
    /// The next message must be a handle: a message too long to be one is
    /// [`Error::Protocol`] and stays in the pipe; a handle message without
    /// a descriptor is `Protocol` too (Python raises `RuntimeError`).
    pub fn recv_handle(&self) -> Result<OwnedFd> {
        self.transport.recv_handle(Deadline::Never)
    }

    /// [`Connection::recv_handle`], waiting at most `timeout`.
    pub fn recv_handle_timeout(&self, timeout: Duration) -> Result<OwnedFd> {
        self.transport.recv_handle(Deadline::after(timeout))
    }

    /// A descriptor for an event loop of your own (Python's `fileno()`):
    /// it turns readable when a message may have come for this end.
    ///
    /// Messages travel in shared memory and waits sleep on futex words,
    /// which no `poll` sees; so the pipe rings a doorbell on its side
    /// channel (see [`Connection::send_handle`]) for every message sent
    /// to an end whose `fileno` was asked for. The descriptor behaves as an
    /// edge-triggered one: when it is readable, receive with
    /// [`Connection::try_recv`] (or `try_recv_bytes`, `poll(Some(ZERO))`)
    /// until `Empty`, which re-arms it; messages that were already waiting
    /// when `fileno` was first called do not ring. It is also readable once
    /// every process holding the other end's side channel is gone. The
    /// descriptor belongs to the connection: do not close it. An end
    /// without a side channel is [`Error::InvalidState`]; to wait on pipe
    /// ends with others, [`wait`] needs no descriptor.
    pub fn fileno(&self) -> Result<RawFd> {
        self.transport.fileno()
    }

    fn recv_bytes_deadline(&self, max: Option<usize>, deadline: Deadline) -> Result<Vec<u8>> {
        if let Some(held) = self.held.take_held() {
            // A message held back for want of descriptors comes first.
            if let Some(max) = max
                && held.len() > max
            {
                let total = held.len();
                self.held.put_back(held);
                return Err(Error::InvalidArgument(format!(
                    "the next message has {total} bytes, more than the maximum of {max}; it was left in place"
                )));
            }
            return Ok(held.to_vec());
        }
        let mut out = Vec::new();
        self.transport
            .recv_into(&mut out, max.map(|m| m as u64), deadline)?;
        Ok(out)
    }

    /// Whether a `recv` would return at once: a message is waiting, or the
    /// peer is gone (so `recv` would say `Closed`). Waits at most `timeout`
    /// (`None`: no limit) for that. `Err(Closed)` if this end is closed.
    pub fn poll(&self, timeout: Option<Duration>) -> Result<bool> {
        if self.held.is_holding() {
            return Ok(true);
        }
        self.transport.poll(Deadline::from_timeout(timeout))
    }

    /// Closes this end for every process: the peer's `recv` drains and then
    /// fails with `Closed`, and its `send` fails. Closing twice does nothing.
    pub fn close(&self) {
        self.transport.close()
    }

    /// Whether this end was closed (Python's `closed`).
    pub fn closed(&self) -> bool {
        self.transport.is_closed()
    }

    /// Whether this end can receive (false for the writer of a one-way pipe).
    pub fn readable(&self) -> bool {
        self.transport.readable()
    }

    /// Whether this end can send (false for the reader of a one-way pipe).
    pub fn writable(&self) -> bool {
        self.transport.writable()
    }
}

impl<T> Waitable for Connection<T> {
    /// Ready when a message is there to receive or the peer is gone (see
    /// [`wait`]); at once for a closed end or one that only sends.
    fn wait_source(&self) -> WaitSource<'_> {
        if self.held.is_holding() {
            return WaitSource::ready();
        }
        self.transport.wait_source()
    }
}

impl<T: Shareable> ShareHandle for Connection<T> {
    fn to_repr(&self) -> Result<HandleRepr> {
        self.transport.to_repr()
    }

    fn from_repr(repr: &HandleRepr) -> Result<Self> {
        match (repr.extra >> 8) & 0xFF {
            TRANSPORT_SHM => {
                let (fp, name) = connection_fingerprint::<T>();
                Ok(Connection::new(Transport::Shm(ShmEnd::open(
                    repr, fp, &name,
                )?)))
            }
            other => Err(Error::Protocol(format!(
                "unknown connection transport {other}"
            ))),
        }
    }
}

crate::impl_share_handle!(impl<T: Shareable> for Connection<T>);
