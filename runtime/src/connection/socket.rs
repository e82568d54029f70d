//! A connection over a Unix or TCP stream socket (Python's `Connection` as
//! returned by `Listener.accept()` and `Client()`).

use std::collections::VecDeque;
use std::fmt;
use std::io::{IoSlice, Read, Write};
use std::marker::PhantomData;
use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::codec::Shareable;
use crate::connection::listener::Address;
use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::handle::{HandleRepr, ShareHandle};
use crate::sys::fd::{Interest, poll};
use crate::wire::auth::{self, FrameTransport};
use crate::wire::frame::{DEFAULT_MAX_FRAME, FrameReader, write_frame};

/// The stream under a connection.
#[derive(Debug)]
pub(crate) enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Unix(s) => s.as_fd(),
            Stream::Tcp(s) => s.as_fd(),
        }
    }
}

/// Reads a stream, keeping the descriptors a Unix peer sends (with
/// [`SocketConnection::send_handle`]) for [`SocketConnection::recv_handle`]:
/// a plain `read` would close them.
struct StreamReader<'a> {
    stream: &'a Stream,
    handles: &'a mut VecDeque<OwnedFd>,
}

/// Most descriptors one read takes; a peer that attaches more to one
/// message breaks that read (the kernel drops the rest).
const FDS_PER_READ: usize = 8;
/// Most received descriptors kept waiting for `recv_handle`; more are closed.
const MAX_WAITING_HANDLES: usize = 64;

impl Read for StreamReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.stream {
            Stream::Unix(s) => {
                let (n, fds) = crate::sys::socket::recv_with_at_most(s.as_fd(), buf, FDS_PER_READ)?;
                for fd in fds {
                    if self.handles.len() < MAX_WAITING_HANDLES {
                        self.handles.push_back(fd);
                    }
                }
                Ok(n)
            }
            Stream::Tcp(s) => (&*s).read(buf),
        }
    }
}

/// The payload of the frame a passed descriptor comes with.
const HANDLE_FRAME: &[u8] = b"\0multiproc:handle\0";

/// Writes through `sendmsg(MSG_NOSIGNAL)`: a dead peer is `EPIPE`, never SIGPIPE.
struct NoSigPipe<'a>(BorrowedFd<'a>);

impl Write for NoSigPipe<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        crate::sys::socket::send_vectored(self.0, &[IoSlice::new(buf)])
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> std::io::Result<usize> {
        crate::sys::socket::send_vectored(self.0, bufs)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One end of a stream-socket connection that carries values of type `T`.
///
/// Made by [`Listener::accept`](crate::connection::Listener::accept),
/// [`client`](crate::connection::client) or [`SocketConnection::pair`].
/// Each message is one frame (see [`crate::wire::frame`]) holding `T`
/// encoded with [`Shareable::encode`]; received bytes are checked before
/// they are decoded. A peer that closed its end or died is [`Error::Closed`].
///
/// ```
/// use multiproc::connection::SocketConnection;
///
/// let (mut a, mut b) = SocketConnection::<String>::pair().unwrap();
/// a.send(&"ping".to_string()).unwrap();
/// assert!(b.poll(Some(std::time::Duration::ZERO)).unwrap());
/// assert_eq!(b.recv().unwrap(), "ping");
/// ```
pub struct SocketConnection<T> {
    /// `None` once closed.
    stream: Option<Stream>,
    reader: FrameReader,
    /// Descriptors received, oldest first, for `recv_handle`.
    handles: VecDeque<OwnedFd>,
    /// Set on a client that connected without an authkey until its first
    /// frame arrives: a challenge then means the listener wants a key.
    challenge_unexpected: bool,
    _message: PhantomData<fn(T) -> T>,
}

impl<T> fmt::Debug for SocketConnection<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SocketConnection")
            .field("stream", &self.stream)
            .field("buffered", &self.reader.buffered())
            .finish()
    }
}

impl<T> SocketConnection<T> {
    /// A connection over a connected Unix stream.
    pub fn from_unix(stream: UnixStream) -> Result<SocketConnection<T>> {
        stream.set_nonblocking(false)?;
        Ok(SocketConnection::new(Stream::Unix(stream)))
    }

    /// A connection over a connected TCP stream (Nagle's delay is turned off:
    /// every message goes out at once).
    pub fn from_tcp(stream: TcpStream) -> Result<SocketConnection<T>> {
        stream.set_nonblocking(false)?;
        stream.set_nodelay(true)?;
        Ok(SocketConnection::new(Stream::Tcp(stream)))
    }

    fn new(stream: Stream) -> SocketConnection<T> {
        SocketConnection {
            stream: Some(stream),
            reader: FrameReader::new(DEFAULT_MAX_FRAME),
            handles: VecDeque::new(),
            challenge_unexpected: false,
            _message: PhantomData,
        }
    }

    /// Two connected ends over a Unix socket pair (a duplex pipe within a
    /// process, or across a fork).
    pub fn pair() -> Result<(SocketConnection<T>, SocketConnection<T>)> {
        let (a, b) = crate::sys::socket::socketpair()?;
        Ok((
            SocketConnection::from_unix(a)?,
            SocketConnection::from_unix(b)?,
        ))
    }

    /// Connects to a [`Listener`](crate::connection::Listener) at `address`,
    /// authenticating with `authkey` if given (Python's `Client`).
    ///
    /// Same as [`client`](crate::connection::client).
    pub fn connect(address: &Address, authkey: Option<&[u8]>) -> Result<SocketConnection<T>> {
        crate::connection::listener::connect(address, authkey, Deadline::Never)
    }

    /// Like [`SocketConnection::connect`], giving up after `timeout` (for
    /// connecting and authenticating together).
    pub fn connect_timeout(
        address: &Address,
        authkey: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<SocketConnection<T>> {
        crate::connection::listener::connect(address, authkey, Deadline::after(timeout))
    }

    /// The same connection, carrying messages of another type.
    pub fn into_typed<U>(self) -> SocketConnection<U> {
        SocketConnection {
            stream: self.stream,
            reader: self.reader,
            handles: self.handles,
            challenge_unexpected: self.challenge_unexpected,
            _message: PhantomData,
        }
    }

    /// The largest message this end accepts (64 MiB unless changed).
    pub fn max_message(&self) -> usize {
        self.reader.max_frame()
    }

    /// Changes the largest message this end sends or accepts.
    ///
    /// A peer that sends a longer one breaks the connection: every later
    /// receive is [`Error::Protocol`].
    pub fn set_max_message(&mut self, max: usize) {
        self.reader.set_max_frame(max);
    }

    /// Makes a message over [`SocketConnection::max_message`] from the peer
    /// a failure of that receive alone ([`Error::MessageTooLarge`], after
    /// its bytes were read and thrown away) instead of the connection's end.
    pub(crate) fn set_skip_oversized(&mut self, skip: bool) {
        self.reader.set_skip_oversized(skip);
    }

    /// Sends `bytes` as one message (Python's `send_bytes`).
    ///
    /// Blocks until the kernel took all of it (the peer reading, or dying,
    /// ends the wait). A message over [`SocketConnection::max_message`] is
    /// [`Error::Protocol`] and nothing is sent.
    pub fn send_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        if bytes.len() > self.reader.max_frame() {
            return Err(Error::Protocol(format!(
                "message of {} bytes exceeds the maximum of {} bytes",
                bytes.len(),
                self.reader.max_frame()
            )));
        }
        let stream = self.stream.as_ref().ok_or(Error::Closed)?;
        write_frame(&mut NoSigPipe(stream.fd()), bytes)
    }

    /// Receives one message's bytes (Python's `recv_bytes`), blocking until
    /// one arrives.
    pub fn recv_bytes(&mut self) -> Result<Vec<u8>> {
        self.recv_frame(usize::MAX, Deadline::Never)
    }

    /// Receives one message's bytes if it is at most `max` long (Python's
    /// `recv_bytes(maxlength)`).
    ///
    /// A longer message is [`Error::Protocol`] and stays queued: a later call
    /// with a larger limit receives it.
    pub fn recv_bytes_max(&mut self, max: usize) -> Result<Vec<u8>> {
        self.recv_frame(max, Deadline::Never)
    }

    /// Receives one message's bytes, waiting at most `timeout`
    /// ([`Error::Timeout`] after that; a partly received message is kept and
    /// completed by the next call).
    pub fn recv_bytes_timeout(&mut self, timeout: Duration) -> Result<Vec<u8>> {
        self.recv_frame(usize::MAX, Deadline::after(timeout))
    }

    /// Receives one message's bytes if one has fully arrived, else [`Error::Empty`].
    pub fn try_recv_bytes(&mut self) -> Result<Vec<u8>> {
        self.recv_frame(usize::MAX, Deadline::Now)
    }

    /// Receives one message into `buf` and returns its length (Python's
    /// `recv_bytes_into`; for Python's `offset`, pass `&mut buf[offset..]`).
    ///
    /// A message longer than `buf` is taken all the same and returned
    /// whole in [`Error::BufferTooShort`]; `buf` is then left as it was.
    pub fn recv_bytes_into(&mut self, buf: &mut [u8]) -> Result<usize> {
        let message = self.recv_bytes()?;
        copy_into(message, buf)
    }

    /// Sends a descriptor to the peer (Python's `reduction.send_handle`):
    /// the peer's [`SocketConnection::recv_handle`] gets its own copy,
    /// open on the same file, socket or pipe. This end keeps its own.
    ///
    /// Only over a Unix socket ([`Error::InvalidState`] over TCP). Handles
    /// and messages arrive in the order they were sent; the peer must
    /// receive a handle with `recv_handle`, not `recv`.
    pub fn send_handle(&mut self, fd: impl AsFd) -> Result<()> {
        let stream = self.stream.as_ref().ok_or(Error::Closed)?;
        let Stream::Unix(sock) = stream else {
            return Err(Error::InvalidState(
                "descriptors can only be passed over a Unix socket".into(),
            ));
        };
        let mut frame = Vec::with_capacity(8 + HANDLE_FRAME.len());
        write_frame(&mut frame, HANDLE_FRAME)?;
        crate::sys::socket::send_with_fds(sock.as_fd(), &frame, &[fd.as_fd()])
            .map_err(crate::wire::frame::stream_error)
    }

    /// Receives a descriptor the peer sent with
    /// [`SocketConnection::send_handle`] (Python's `reduction.recv_handle`),
    /// waiting for it.
    ///
    /// The next message must be a handle: anything else (taken all the
    /// same) is [`Error::Protocol`], as is a handle message that came
    /// without a descriptor (Python raises `RuntimeError` for that).
    pub fn recv_handle(&mut self) -> Result<OwnedFd> {
        let frame = self.recv_bytes()?;
        if frame != HANDLE_FRAME {
            return Err(Error::Protocol(
                "expected a passed descriptor, got a message".into(),
            ));
        }
        self.handles
            .pop_front()
            .ok_or_else(|| Error::Protocol("a handle message came without a descriptor".into()))
    }

    /// The socket's descriptor number (Python's `fileno()`), for an event
    /// loop of your own; [`Error::Closed`] once closed.
    pub fn fileno(&self) -> Result<RawFd> {
        self.stream
            .as_ref()
            .map(|s| s.fd().as_raw_fd())
            .ok_or(Error::Closed)
    }

    /// Whether a message (or the end of the stream) is there to receive,
    /// waiting at most `timeout` (`None`: until there is).
    ///
    /// `Some(Duration::ZERO)` checks without waiting, as Python's `poll()`.
    pub fn poll(&self, timeout: Option<Duration>) -> Result<bool> {
        let stream = self.stream.as_ref().ok_or(Error::Closed)?;
        if self.reader.is_ready() {
            return Ok(true);
        }
        let deadline = Deadline::from_timeout(timeout);
        wait_readable(stream.fd(), deadline)
    }

    /// Closes this end; the peer then receives [`Error::Closed`]. Later calls
    /// on this end are [`Error::Closed`] too. Dropping closes as well.
    pub fn close(&mut self) {
        self.stream = None;
    }

    /// Whether [`SocketConnection::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.stream.is_none()
    }

    /// Whether a whole message is buffered here (a poll of the socket would
    /// miss it).
    pub(crate) fn has_buffered_message(&self) -> bool {
        self.reader.is_ready()
    }

    /// Runs the server side of the authkey handshake (see [`crate::wire::auth`]).
    pub(crate) fn server_handshake(&mut self, authkey: &[u8], deadline: Deadline) -> Result<()> {
        auth::server_handshake(self, authkey, deadline)
    }

    /// Runs the client side of the authkey handshake.
    pub(crate) fn client_handshake(&mut self, authkey: &[u8], deadline: Deadline) -> Result<()> {
        auth::client_handshake(self, authkey, deadline)
    }

    /// Marks a client that connected without an authkey: if the first frame
    /// it receives is a challenge, the listener wants a key, and that receive
    /// is [`Error::Authentication`] (not the challenge as data).
    pub(crate) fn expect_no_challenge(&mut self) {
        self.challenge_unexpected = true;
    }

    /// The TCP peer's address (`None` for a Unix socket or once closed).
    pub(crate) fn peer_addr(&self) -> Option<std::net::SocketAddr> {
        match self.stream.as_ref()? {
            Stream::Tcp(s) => s.peer_addr().ok(),
            Stream::Unix(_) => None,
        }
    }

    /// The Unix stream under the connection, if nothing read from it is
    /// still buffered here (else `None`, and the connection is dropped).
    pub(crate) fn into_unix_stream(self) -> Option<UnixStream> {
        match self.stream {
            Some(Stream::Unix(s)) if self.reader.buffered() == 0 => Some(s),
            _ => None,
        }
    }

    /// Receives one message's bytes, waiting without limit for it to begin
    /// but at most `stall` for each next piece once it has: a peer that
    /// sends half a message and stops is [`Error::Timeout`], a peer quiet
    /// between messages is not.
    pub(crate) fn recv_bytes_stall_limited(&mut self, stall: Duration) -> Result<Vec<u8>> {
        let stream = self.stream.as_ref().ok_or(Error::Closed)?;
        loop {
            if let Some(frame) = self.reader.next_buffered()? {
                return Ok(frame);
            }
            if self.reader.inside_frame() && !wait_readable(stream.fd(), Deadline::after(stall))? {
                return Err(Error::Timeout(stall));
            }
            // Blocking read: between messages it waits for the next one.
            self.reader.fill_from(&mut StreamReader {
                stream,
                handles: &mut self.handles,
            })?;
        }
    }

    /// The core of every receive: the next frame of at most `limit` bytes
    /// before `deadline`.
    fn recv_frame(&mut self, limit: usize, deadline: Deadline) -> Result<Vec<u8>> {
        let stream = self.stream.as_ref().ok_or(Error::Closed)?;
        loop {
            if let Some(frame) = self.reader.next_buffered_max(limit)? {
                if std::mem::take(&mut self.challenge_unexpected) && auth::is_challenge(&frame) {
                    self.stream = None;
                    return Err(Error::Authentication(
                        "the listener asked for an authkey and this client has none".into(),
                    ));
                }
                return Ok(frame);
            }
            if deadline != Deadline::Never && !wait_readable(stream.fd(), deadline)? {
                return Err(match deadline {
                    Deadline::Now => Error::Empty,
                    _ => deadline.timeout_error(),
                });
            }
            // Blocking read: after a successful poll it returns at once.
            self.reader.fill_from(&mut StreamReader {
                stream,
                handles: &mut self.handles,
            })?;
        }
    }
}

impl<T: Shareable> SocketConnection<T> {
    /// Sends `value` (Python's `send`).
    ///
    /// Blocks until the kernel took the whole message; see
    /// [`SocketConnection::send_bytes`].
    pub fn send(&mut self, value: &T) -> Result<()> {
        let bytes = value.encode()?;
        self.send_bytes(&bytes)
    }

    /// Receives a value, blocking until one arrives (Python's `recv`).
    ///
    /// [`Error::Closed`] when the peer closed its end or died; a message that
    /// does not decode as `T` is [`Error::Codec`] (the connection stays usable).
    pub fn recv(&mut self) -> Result<T> {
        T::decode(&self.recv_bytes()?)
    }

    /// Receives a value, waiting at most `timeout` ([`Error::Timeout`]).
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<T> {
        T::decode(&self.recv_bytes_timeout(timeout)?)
    }

    /// Receives a value if one has fully arrived, else [`Error::Empty`].
    pub fn try_recv(&mut self) -> Result<T> {
        T::decode(&self.try_recv_bytes()?)
    }
}

/// `HandleRepr::extra` of a socket connection over a Unix socket.
const KIND_UNIX: u64 = 1;
/// `HandleRepr::extra` of a socket connection over TCP.
const KIND_TCP: u64 = 2;

impl<T: Shareable> ShareHandle for SocketConnection<T> {
    /// A socket connection travels only as a process's argument (its
    /// descriptor goes with the launch message, as Python's children
    /// inherit it): the child gets its own descriptor for the same socket,
    /// and this handle keeps working too. Messages already read into this
    /// handle's buffer stay here.
    fn to_repr(&self) -> Result<HandleRepr> {
        let stream = self.stream.as_ref().ok_or(Error::Closed)?;
        let kind = match stream {
            Stream::Unix(_) => KIND_UNIX,
            Stream::Tcp(_) => KIND_TCP,
        };
        crate::handle::encode_fd(crate::handle::fresh_id(), stream.fd(), 0, kind)
    }

    fn from_repr(repr: &HandleRepr) -> Result<Self> {
        let Some(fd) = crate::handle::received_fd(repr.id) else {
            return Err(Error::InvalidState(
                "a SocketConnection travels only as a process's argument (not inside a \
                 message): its descriptor did not come with it"
                    .into(),
            ));
        };
        match repr.extra {
            KIND_UNIX => SocketConnection::from_unix(UnixStream::from(fd)),
            KIND_TCP => SocketConnection::from_tcp(TcpStream::from(fd)),
            other => Err(Error::Protocol(format!(
                "unknown socket connection kind {other}"
            ))),
        }
    }
}

crate::impl_share_handle!(impl<T: Shareable> for SocketConnection<T>);

impl<T> FrameTransport for SocketConnection<T> {
    fn send_frame(&mut self, payload: &[u8]) -> Result<()> {
        self.send_bytes(payload)
    }

    fn recv_frame(&mut self, limit: usize, deadline: Deadline) -> Result<Vec<u8>> {
        SocketConnection::recv_frame(self, limit, deadline)
    }
}

impl<T> AsRawFd for SocketConnection<T> {
    /// The socket's descriptor number, or -1 once closed.
    fn as_raw_fd(&self) -> RawFd {
        self.stream.as_ref().map_or(-1, |s| s.fd().as_raw_fd())
    }
}

impl<T> SocketConnection<T> {
    /// The socket's descriptor, or `None` once closed.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.stream.as_ref().map(Stream::fd)
    }
}

/// Copies a received `message` into `buf`: its length, or the message
/// back in [`Error::BufferTooShort`] when it does not fit.
pub(crate) fn copy_into(message: Vec<u8>, buf: &mut [u8]) -> Result<usize> {
    match buf.get_mut(..message.len()) {
        Some(room) => {
            room.copy_from_slice(&message);
            Ok(message.len())
        }
        None => Err(Error::BufferTooShort(message)),
    }
}

/// Waits until `fd` is readable (or hung up) or `deadline` passes.
pub(crate) fn wait_readable(fd: BorrowedFd<'_>, deadline: Deadline) -> Result<bool> {
    loop {
        let ready = poll(&[fd], Interest::Read, deadline.remaining())?;
        if !ready.is_empty() {
            return Ok(true);
        }
        // An empty answer is a timeout or an interrupted poll: retry the latter.
        if deadline.expired() {
            return Ok(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_bytes_cross_a_pair() {
        let (mut a, mut b) = SocketConnection::<(u32, String)>::pair().unwrap();
        a.send(&(1, "one".into())).unwrap();
        a.send_bytes(b"raw").unwrap();
        assert_eq!(b.recv().unwrap(), (1, "one".to_string()));
        assert_eq!(b.recv_bytes().unwrap(), b"raw");
        assert!(matches!(b.try_recv(), Err(Error::Empty)));
        a.close();
        assert!(matches!(a.send(&(2, "x".into())), Err(Error::Closed)));
        assert!(matches!(b.recv(), Err(Error::Closed)));
    }

    #[test]
    fn a_message_that_does_not_decode_is_a_codec_error() {
        let (mut a, mut b) = SocketConnection::<u64>::pair().unwrap();
        a.send_bytes(b"x").unwrap();
        a.send(&5).unwrap();
        assert!(matches!(b.recv(), Err(Error::Codec(_))));
        assert_eq!(b.recv().unwrap(), 5);
    }

    #[test]
    fn messages_over_the_maximum_are_refused_on_both_sides() {
        let (mut a, mut b) = SocketConnection::<Vec<u8>>::pair().unwrap();
        a.set_max_message(10);
        assert!(matches!(a.send_bytes(&[0; 11]), Err(Error::Protocol(_))));
        a.send_bytes(&[0; 10]).unwrap();
        assert_eq!(b.recv_bytes().unwrap().len(), 10);
        b.set_max_message(4);
        a.send_bytes(&[0; 5]).unwrap();
        assert!(matches!(b.recv_bytes(), Err(Error::Protocol(_))));
        assert!(matches!(b.recv_bytes(), Err(Error::Protocol(_))));
    }
}
