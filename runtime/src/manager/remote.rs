//! The TCP transport of a manager server (Python's `BaseManager` with an
//! address and an authkey).
//!
//! A TCP client first proves it knows the authkey and checks that the
//! server does too ([`crate::wire::auth`], mutual HMAC-SHA256); a wrong key
//! is [`Error::Authentication`] on the client and a logged, closed
//! connection on the server. After that the same request and response
//! messages as the local channel travel as length-prefixed frames
//! ([`crate::wire::frame`]), one request answered at a time.
//!
//! Everything read from the network is checked before use. The hellos
//! both sides exchange after the handshake carry the largest message each
//! accepts: a client refuses a request too large for the server before
//! sending it, the server answers a response too large for the client with
//! an error instead, and a frame over the maximum that arrives anyway is
//! read and thrown away (nothing is allocated for it) and answered with an
//! error. Each is [`Error::MessageTooLarge`] for that call only: the
//! connection, and the objects it holds, live on. A frame that is not a
//! valid request gets an error response. One thread serves each
//! connection, so a slow or hostile client never holds up the others, and
//! the references a connection took go when it ends (closed, reset, the
//! server shutting down, or the peer's host silent for about 25 s: TCP
//! keepalive and a user timeout on both sides, so a call never hangs on a
//! vanished server either).
//!
//! Before the handshake a connection is nobody's: at most 64 are in their
//! handshake at once (16 from one address, or one IPv6 /64), each cut off
//! after [`TcpOptions::handshake_ms`] (5 s by default); more are told to
//! come back (`#BUSY#`, which [`TcpClient::connect`] does, with pauses) and
//! closed. Failed handshakes are logged at warn with the client's address
//! (rate limited), and an address that fails 20 times within a minute is
//! refused for a minute. An authenticated client may stay quiet between
//! requests as long as it likes, but once a request has begun, each piece
//! of it must come within [`TcpOptions::frame_stall_ms`] (30 s by default)
//! or the connection is dropped.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use rkyv::util::AlignedVec;

use crate::connection::{Address, Listener, SocketConnection};
use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::manager::dispatch::After;
use crate::manager::gate::{Admission, Gate, GateLimits, Source, Ticket};
use crate::manager::protocol::{RemoteError, Response};
use crate::manager::response_buf::ResponseBuf;
use crate::manager::server::{ConnectionGuard, ServerState, refuse};
use crate::manager::waitable::Peer;
use crate::sys;
use crate::wire::auth::{self, FrameTransport};
use crate::wire::frame::DEFAULT_MAX_FRAME;

/// How long a new client has, by default, to pass the handshake and say hello.
pub const DEFAULT_UNAUTHENTICATED_TIMEOUT: Duration = Duration::from_secs(5);
/// How long, by default, an authenticated client may pause inside a request.
pub const DEFAULT_FRAME_STALL: Duration = Duration::from_secs(30);

/// Silence after which a TCP connection starts probing its peer.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
/// Between two probes.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// Unanswered probes after which the peer is taken for gone (so a vanished
/// host is noticed within about 25 s).
const KEEPALIVE_COUNT: u32 = 3;

/// The first frame after the handshake, both ways: magic, the version of
/// the request/response messages (so a client and a server of different
/// builds refuse each other instead of misreading each other's messages),
/// and the largest message the sender accepts.
const TCP_HELLO: &[u8; 4] = b"MPMT";
/// The version of the manager's TCP messages (bump on any change to
/// `protocol.rs`'s encoded types or to the hello).
pub const TCP_PROTOCOL_VERSION: u32 = 3;

fn hello_frame(max_message: usize) -> [u8; 16] {
    let mut f = [0u8; 16];
    f[..4].copy_from_slice(TCP_HELLO);
    f[4..8].copy_from_slice(&TCP_PROTOCOL_VERSION.to_le_bytes());
    f[8..].copy_from_slice(&(max_message as u64).to_le_bytes());
    f
}

/// The version a hello frame names, if it is one.
fn hello_version(frame: &[u8]) -> Option<u32> {
    let (magic, rest) = frame.split_first_chunk::<4>()?;
    let (version, _) = rest.split_first_chunk::<4>()?;
    (magic == TCP_HELLO).then(|| u32::from_le_bytes(*version))
}

/// The largest message the sender of a hello of this version accepts.
fn hello_max_message(frame: &[u8]) -> Option<usize> {
    let max = frame.get(8..16)?;
    let mut b = [0u8; 8];
    b.copy_from_slice(max);
    Some(usize::try_from(u64::from_le_bytes(b)).unwrap_or(usize::MAX))
}

fn watch_liveness<T>(conn: &SocketConnection<T>) {
    if let Some(fd) = conn.fd()
        && let Err(e) = crate::sys::socket::set_tcp_liveness(
            fd,
            KEEPALIVE_IDLE,
            KEEPALIVE_INTERVAL,
            KEEPALIVE_COUNT,
        )
    {
        tracing::debug!("cannot enable TCP keepalive: {e}");
    }
}

/// How often the accept loop checks whether the server stops.
const STOP_CHECK: Duration = Duration::from_millis(100);

/// How a server listens on TCP.
#[derive(Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(crate = rkyv)]
pub struct TcpOptions {
    /// Where to listen (port 0 picks a free port).
    pub address: SocketAddr,
    /// The shared secret clients must prove they know.
    pub authkey: Vec<u8>,
    /// The longest request accepted, and response sent, in bytes (at least
    /// [`MIN_MAX_MESSAGE`]); a longer one fails that call with
    /// [`Error::MessageTooLarge`].
    pub max_frame: u64,
    /// How long a new client has to complete the handshake and its hello,
    /// in milliseconds (the server closes it after that).
    pub handshake_ms: u64,
    /// How long an authenticated client may pause inside a request frame,
    /// in milliseconds, before the server drops the connection (quiet
    /// between requests is fine).
    pub frame_stall_ms: u64,
}

impl std::fmt::Debug for TcpOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpOptions")
            .field("address", &self.address)
            .field("max_frame", &self.max_frame)
            .field("handshake_ms", &self.handshake_ms)
            .field("frame_stall_ms", &self.frame_stall_ms)
            .finish_non_exhaustive()
    }
}

impl TcpOptions {
    /// Options for `address` and `authkey`, with the default limits
    /// (64 MiB frames, a 5 s handshake, 30 s of stall inside a request).
    pub fn new(address: SocketAddr, authkey: &[u8]) -> TcpOptions {
        TcpOptions {
            address,
            authkey: authkey.to_vec(),
            max_frame: DEFAULT_MAX_FRAME as u64,
            handshake_ms: DEFAULT_UNAUTHENTICATED_TIMEOUT.as_millis() as u64,
            frame_stall_ms: DEFAULT_FRAME_STALL.as_millis() as u64,
        }
    }

    fn max_frame(&self) -> usize {
        usize::try_from(self.max_frame)
            .unwrap_or(usize::MAX)
            .max(MIN_MAX_MESSAGE)
    }
}

/// The least a side may set as its largest message: every error answer
/// and small request fits.
pub const MIN_MAX_MESSAGE: usize = 4096;

/// A bound TCP listener of a manager server.
pub(crate) struct TcpServer {
    listener: Listener,
    bound: SocketAddr,
    options: TcpOptions,
    /// Connections still in their handshake.
    gate: Arc<Gate>,
}

/// Where a TCP client comes from, for the gate: its address, or for IPv6
/// its /64 (one host commonly holds a whole /64).
fn source_of(peer: Option<SocketAddr>) -> Source {
    let ip = peer.map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip().to_canonical());
    match ip {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            Source::Ip(IpAddr::V6(prefix.into()))
        }
        v4 => Source::Ip(v4),
    }
}

impl TcpServer {
    pub fn bind(options: &TcpOptions) -> Result<TcpServer> {
        if options.authkey.is_empty() {
            return Err(Error::InvalidArgument(
                "a manager served over TCP needs a non-empty authkey".into(),
            ));
        }
        // No authkey on the listener: each connection's own thread runs the
        // handshake, so a client that stalls in it holds up nobody else.
        let listener = Listener::bind(&Address::Tcp(options.address), None)?;
        let bound = match listener.address() {
            Address::Tcp(a) => *a,
            _ => options.address,
        };
        Ok(TcpServer {
            listener,
            bound,
            options: options.clone(),
            gate: Gate::new("TCP", GateLimits::TCP),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.bound
    }

    /// Accepts clients until the server stops, one thread each; returns
    /// once every connection thread ended (a shutdown cuts their sockets).
    pub fn accept_loop(self, state: &std::sync::Arc<ServerState>) {
        let mut threads: Vec<std::thread::JoinHandle<()>> = Vec::new();
        while !state.stopping() {
            threads.retain(|t| !t.is_finished());
            let conn = match self.listener.accept_timeout::<()>(STOP_CHECK) {
                Ok(c) => c,
                Err(Error::Timeout(_)) => continue,
                Err(e) => {
                    tracing::debug!("manager TCP accept failed: {e}");
                    // A persistent failure (out of descriptors) must not spin.
                    std::thread::sleep(STOP_CHECK);
                    continue;
                }
            };
            let ticket = match self.gate.admit(source_of(conn.peer_addr())) {
                Admission::Go(t) => t,
                refused => {
                    let answer = match refused {
                        Admission::Busy => auth::BUSY,
                        _ => auth::FAILURE,
                    };
                    if let Some(fd) = conn.fd() {
                        refuse(fd, answer);
                    }
                    continue;
                }
            };
            let state = state.clone();
            let options = self.options.clone();
            let spawned = std::thread::Builder::new()
                .name("multiproc-manager-tcp-conn".into())
                .spawn(move || serve_tcp_connection(&state, conn, &options, ticket));
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    tracing::warn!("manager server cannot start a TCP connection thread: {e}")
                }
            }
        }
        for t in threads {
            let _ = t.join();
        }
    }
}

fn serve_tcp_connection(
    state: &ServerState,
    mut conn: SocketConnection<()>,
    options: &TcpOptions,
    ticket: Ticket,
) {
    let handshake = Deadline::after(Duration::from_millis(options.handshake_ms));
    if let Err(e) = conn.server_handshake(&options.authkey, handshake) {
        // Closed before its place at the gate is given back.
        drop(conn);
        ticket.handshake_failed(&e);
        return;
    }
    // The peer's version, then ours: a mismatch ends the connection (the
    // client reports it).
    let hello = FrameTransport::recv_frame(&mut conn, 64, handshake);
    let version = hello.as_deref().ok().and_then(hello_version);
    let peer_max = hello.as_deref().ok().and_then(hello_max_message);
    let sent = conn.send_bytes(&hello_frame(options.max_frame()));
    let (Ok(()), Some(TCP_PROTOCOL_VERSION), Some(peer_max)) = (sent, version, peer_max) else {
        drop(conn);
        tracing::warn!(
            ?version,
            source = %ticket.source(),
            "manager refused a TCP client of another protocol version"
        );
        return;
    };
    // Authenticated: no longer counted at the gate.
    drop(ticket);
    let stall = Duration::from_millis(options.frame_stall_ms.max(1));
    conn.set_max_message(options.max_frame());
    // An oversized request fails alone; the connection stays in step.
    conn.set_skip_oversized(true);
    // What the client accepts, and what this server sends (an error
    // answer always goes: a client claiming less is misbehaving).
    let response_limit = peer_max.max(MIN_MAX_MESSAGE).min(options.max_frame());
    // A client whose host vanished (no FIN ever comes) still ends, and its
    // references go.
    watch_liveness(&conn);
    // A duplicate of the socket the server cuts on shutdown, so this thread
    // can block in a plain read (no poll per request).
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let key = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let Some(closer) = conn
        .fd()
        .and_then(|fd| fd.try_clone_to_owned().ok())
        .map(std::net::TcpStream::from)
    else {
        tracing::warn!("manager cannot duplicate a TCP connection's socket");
        return;
    };
    // A waiting request ends when its client leaves: the client sends
    // nothing while it waits, so a readable socket means it hung up.
    let Ok(watch) = closer.try_clone() else {
        tracing::warn!("manager cannot duplicate a TCP connection's socket");
        return;
    };
    let gone = || {
        state.stopping()
            || matches!(
                sys::fd::poll(&[watch.as_fd()], sys::fd::Interest::Read, Some(Duration::ZERO)),
                Ok(ready) if !ready.is_empty()
            )
    };
    // Releases what the connection holds however this thread ends.
    let mut guard = ConnectionGuard::tcp(state, key, closer);
    let peer = Peer {
        id: guard.id,
        gone: &gone,
        pid: None,
    };
    let mut request: AlignedVec = AlignedVec::new();
    let mut response = ResponseBuf::new();
    let ended = loop {
        // Checked after registering: a shutdown before that is seen here,
        // one after it cuts the socket.
        if state.stopping() {
            break Error::ManagerGone("the server is shutting down".into());
        }
        let frame = match conn.recv_bytes_stall_limited(stall) {
            Ok(f) => f,
            Err(e @ Error::Timeout(_)) => {
                tracing::warn!(
                    peer = ?conn.peer_addr(),
                    "manager dropped a TCP client that stalled inside a request"
                );
                break e;
            }
            Err(Error::MessageTooLarge { size, limit }) => {
                // Read and thrown away: the call fails, the connection lives.
                response.emit(&Response::Error(RemoteError::TooLarge {
                    size: size as u64,
                    limit: limit as u64,
                }));
                if let Err(e) = conn.send_bytes(response.bytes()) {
                    break e;
                }
                continue;
            }
            Err(e) => break e,
        };
        let after = if state.stopping() {
            response.emit(&Response::Error(RemoteError::ShuttingDown));
            After::Continue
        } else {
            request.clear();
            request.extend_from_slice(&frame);
            state.handle(
                &mut guard.refs,
                &peer,
                &request,
                &mut response,
                response_limit,
            )
        };
        drop(frame);
        if let Err(e) = conn.send_bytes(response.bytes()) {
            break e;
        }
        if after == After::Shutdown {
            state.begin_shutdown();
            break Error::ManagerGone("shut down by this client".into());
        }
    };
    tracing::debug!(reason = %ended, "manager TCP connection ended");
    // Dropping `guard` releases what the connection held.
}

/// A client's TCP connection to a manager server.
pub struct TcpClient {
    conn: SocketConnection<()>,
    gone: bool,
    /// The largest request the server accepts (and this client sends).
    max_request: usize,
}

impl std::fmt::Debug for TcpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpClient")
            .field("gone", &self.gone)
            .field("max_request", &self.max_request)
            .finish_non_exhaustive()
    }
}

/// How long connecting and authenticating to a TCP server may take.
pub const TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

impl TcpClient {
    /// Connects to the server at `address` and runs the authkey handshake.
    ///
    /// A server that refuses the key is [`Error::Authentication`]; one that
    /// cannot be reached is [`Error::ManagerGone`]. Responses up to
    /// [`DEFAULT_MAX_FRAME`] are accepted (see [`TcpClient::connect_with`]).
    pub fn connect(address: SocketAddr, authkey: &[u8]) -> Result<TcpClient> {
        Self::connect_with(address, authkey, DEFAULT_MAX_FRAME)
    }

    /// Like [`TcpClient::connect`], accepting responses up to
    /// `max_message` bytes (at least [`MIN_MAX_MESSAGE`]; the server sends
    /// an error instead of a longer one).
    pub fn connect_with(
        address: SocketAddr,
        authkey: &[u8],
        max_message: usize,
    ) -> Result<TcpClient> {
        Self::connect_within(
            address,
            authkey,
            max_message,
            Deadline::after(TCP_CONNECT_TIMEOUT),
        )
    }

    /// Like [`TcpClient::connect_with`], giving up at `deadline` (or after
    /// [`TCP_CONNECT_TIMEOUT`], whichever comes first) with
    /// [`Error::ManagerGone`].
    pub fn connect_within(
        address: SocketAddr,
        authkey: &[u8],
        max_message: usize,
        deadline: Deadline,
    ) -> Result<TcpClient> {
        let max_message = max_message.max(MIN_MAX_MESSAGE);
        let deadline = deadline.min(Deadline::after(TCP_CONNECT_TIMEOUT));
        let mut pause = Duration::from_millis(2);
        let conn = loop {
            let left = deadline.remaining().unwrap_or(Duration::ZERO);
            match SocketConnection::connect_timeout(&Address::Tcp(address), Some(authkey), left) {
                // Too many handshakes in flight there: ask again shortly.
                Err(e) if auth::is_busy(&e) && !deadline.expired() => {
                    std::thread::sleep(deadline.slice(pause));
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                other => break other,
            }
        }
        .map_err(|e| match e {
            Error::Authentication(_) => e,
            Error::Io(e) => {
                Error::ManagerGone(format!("cannot reach the manager at {address}: {e}"))
            }
            // A refused key is an explicit failure message (Authentication
            // above); a bare close means the server went away meanwhile.
            Error::Closed => Error::ManagerGone(format!(
                "the manager at {address} closed the connection during the handshake"
            )),
            other => other,
        })?;
        // A call never waits forever on a server whose host vanished.
        watch_liveness(&conn);
        let mut conn = conn;
        let gone = |e: Error| {
            Error::ManagerGone(format!(
                "the manager at {address} left during the hello: {e}"
            ))
        };
        conn.send_bytes(&hello_frame(max_message)).map_err(gone)?;
        let reply = conn.recv_bytes_timeout(TCP_CONNECT_TIMEOUT).map_err(gone)?;
        match (hello_version(&reply), hello_max_message(&reply)) {
            (Some(TCP_PROTOCOL_VERSION), Some(server_max)) => {
                conn.set_max_message(max_message);
                // A response over our maximum fails alone (the server
                // should never send one).
                conn.set_skip_oversized(true);
                Ok(TcpClient {
                    conn,
                    gone: false,
                    max_request: server_max.min(max_message),
                })
            }
            (Some(v), _) if v != TCP_PROTOCOL_VERSION => Err(Error::Protocol(format!(
                "the manager at {address} speaks protocol version {v}, this client {TCP_PROTOCOL_VERSION}"
            ))),
            _ => Err(Error::Protocol(format!(
                "the manager at {address} did not answer as a multiproc manager"
            ))),
        }
    }

    /// Whether the connection broke.
    pub fn is_gone(&self) -> bool {
        self.gone
    }

    /// Whether the connection is known, or seen now, to be broken: broken
    /// before, or its socket is readable while no request is out (the
    /// server closed it, or its host reset it).
    pub fn is_broken(&mut self) -> bool {
        if !self.gone
            && let Some(fd) = self.conn.fd()
            && matches!(
                sys::fd::poll(&[fd], sys::fd::Interest::Read, Some(Duration::ZERO)),
                Ok(ready) if !ready.is_empty()
            )
        {
            self.gone = true;
        }
        self.gone
    }

    /// The largest request this connection sends.
    pub fn max_request(&self) -> usize {
        self.max_request
    }

    /// The socket (a forked child makes its copy inert, see the proxy crate).
    pub fn fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.conn.fd()
    }

    /// Sends a request and waits for its response.
    ///
    /// A request larger than the server accepts is [`Error::MessageTooLarge`]
    /// and is not sent (the connection stays usable), as is a response
    /// larger than this client accepts. A connection that breaks (the
    /// server died or shut down, the network reset it) is
    /// [`Error::ManagerGone`], now and for every later call.
    pub fn round_trip(&mut self, request: &[u8], response: &mut AlignedVec) -> Result<()> {
        self.round_trip_deadline(request, response, Deadline::Never)
    }

    /// As [`TcpClient::round_trip`], waiting for the response until
    /// `deadline` at most: then [`Error::Timeout`], and the connection is
    /// unusable from then on (the answer may still come), as if broken.
    pub fn round_trip_deadline(
        &mut self,
        request: &[u8],
        response: &mut AlignedVec,
        deadline: Deadline,
    ) -> Result<()> {
        if self.gone {
            return Err(Error::ManagerGone(
                "the connection to the manager broke earlier; objects reached through it are \
                 gone with it (connect again)"
                    .into(),
            ));
        }
        if request.len() > self.max_request {
            return Err(Error::MessageTooLarge {
                size: request.len(),
                limit: self.max_request,
            });
        }
        let result = self
            .conn
            .send_bytes(request)
            .and_then(|()| match deadline.remaining() {
                None => self.conn.recv_bytes(),
                Some(left) => self.conn.recv_bytes_timeout(left),
            });
        match result {
            Ok(bytes) => {
                response.clear();
                response.extend_from_slice(&bytes);
                Ok(())
            }
            // Thrown away as it arrived: the connection is still in step.
            Err(e @ Error::MessageTooLarge { .. }) => Err(e),
            Err(Error::Timeout(waited)) => {
                self.gone = true;
                Err(Error::Timeout(waited))
            }
            Err(e) => {
                // The socket stays open until this client is dropped: its
                // descriptor number must not be reused meanwhile, because a
                // forked child makes the sockets it inherited inert by number
                // (see the proxy crate's client), and would hit the reuser.
                self.gone = true;
                Err(Error::ManagerGone(format!(
                    "the connection to the manager broke: {e}; objects reached through it \
                     are gone with it (connect again)"
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hello_carries_the_version_and_the_largest_message() {
        let h = hello_frame(1234);
        assert_eq!(hello_version(&h), Some(TCP_PROTOCOL_VERSION));
        assert_eq!(hello_max_message(&h), Some(1234));
        assert_eq!(hello_version(b"MPMT"), None);
        assert_eq!(hello_max_message(&h[..12]), None);
        assert_eq!(hello_version(b"XXXX\x03\0\0\0"), None);
    }
}
