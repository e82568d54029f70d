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
//! Everything read from the network is checked before use: a frame longer
//! than the configured maximum is refused from its length prefix alone
//! (nothing is allocated for it) and ends the connection; a frame that is
//! not a valid request gets an error response. One thread serves each
//! connection, so a slow or hostile client never holds up the others, and
//! the references a connection took go when it ends (closed, reset, the
//! server shutting down, or the peer's host silent for about 25 s: TCP
//! keepalive and a user timeout on both sides, so a call never hangs on a
//! vanished server either).

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::time::Duration;

use rkyv::util::AlignedVec;

use crate::connection::{Address, Listener, SocketConnection};
use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::manager::dispatch::After;
use crate::manager::protocol::{RemoteError, Response, encode_response};
use crate::manager::server::{ConnectionGuard, ServerState};
use crate::manager::waitable::Peer;
use crate::sys;
use crate::wire::auth::DEFAULT_HANDSHAKE_TIMEOUT;
use crate::wire::frame::DEFAULT_MAX_FRAME;

/// Silence after which a TCP connection starts probing its peer.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
/// Between two probes.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// Unanswered probes after which the peer is taken for gone (so a vanished
/// host is noticed within about 25 s).
const KEEPALIVE_COUNT: u32 = 3;

/// The first frame after the handshake, both ways: magic and the version
/// of the request/response messages, so a client and a server of different
/// builds refuse each other instead of misreading each other's messages.
const TCP_HELLO: &[u8; 4] = b"MPMT";
/// The version of the manager's TCP messages (bump on any change to
/// `protocol.rs`'s encoded types).
pub const TCP_PROTOCOL_VERSION: u32 = 2;

fn hello_frame() -> [u8; 8] {
    let mut f = [0u8; 8];
    f[..4].copy_from_slice(TCP_HELLO);
    f[4..].copy_from_slice(&TCP_PROTOCOL_VERSION.to_le_bytes());
    f
}

/// The version a hello frame names, if it is one.
fn hello_version(frame: &[u8]) -> Option<u32> {
    let (magic, version) = frame.split_first_chunk::<4>()?;
    let version: &[u8; 4] = version.try_into().ok()?;
    (magic == TCP_HELLO).then(|| u32::from_le_bytes(*version))
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
    /// The longest request accepted, in bytes; a longer one closes the connection.
    pub max_frame: u64,
    /// How long a new client has to complete the handshake, in milliseconds.
    pub handshake_ms: u64,
}

impl std::fmt::Debug for TcpOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpOptions")
            .field("address", &self.address)
            .field("max_frame", &self.max_frame)
            .finish_non_exhaustive()
    }
}

impl TcpOptions {
    /// Options for `address` and `authkey`, with the default limits
    /// (64 MiB frames, a 10 s handshake).
    pub fn new(address: SocketAddr, authkey: &[u8]) -> TcpOptions {
        TcpOptions {
            address,
            authkey: authkey.to_vec(),
            max_frame: DEFAULT_MAX_FRAME as u64,
            handshake_ms: DEFAULT_HANDSHAKE_TIMEOUT.as_millis() as u64,
        }
    }

    fn max_frame(&self) -> usize {
        usize::try_from(self.max_frame).unwrap_or(usize::MAX)
    }
}

/// A bound TCP listener of a manager server.
pub(crate) struct TcpServer {
    listener: Listener,
    bound: SocketAddr,
    options: TcpOptions,
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
            let state = state.clone();
            let options = self.options.clone();
            let spawned = std::thread::Builder::new()
                .name("multiproc-manager-tcp-conn".into())
                .spawn(move || serve_tcp_connection(&state, conn, &options));
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

fn serve_tcp_connection(state: &ServerState, mut conn: SocketConnection<()>, options: &TcpOptions) {
    let handshake = Deadline::after(Duration::from_millis(options.handshake_ms));
    if let Err(e) = conn.server_handshake(&options.authkey, handshake) {
        tracing::warn!(error = %e, "manager refused a TCP client that failed the authkey handshake");
        return;
    }
    // The peer's version, then ours: a mismatch ends the connection (the
    // client reports it).
    let hello = conn.recv_bytes_timeout(Duration::from_millis(options.handshake_ms));
    let version = hello.as_deref().ok().and_then(hello_version);
    if conn.send_bytes(&hello_frame()).is_err() || version != Some(TCP_PROTOCOL_VERSION) {
        tracing::warn!(
            ?version,
            "manager refused a TCP client of another protocol version"
        );
        return;
    }
    conn.set_max_message(options.max_frame());
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
    };
    let mut request: AlignedVec = AlignedVec::new();
    let mut response = AlignedVec::new();
    let ended = loop {
        // Checked after registering: a shutdown before that is seen here,
        // one after it cuts the socket.
        if state.stopping() {
            break Error::ManagerGone("the server is shutting down".into());
        }
        let frame = match conn.recv_bytes() {
            Ok(f) => f,
            Err(e) => break e,
        };
        let after = if state.stopping() {
            let refused = Response::Error(RemoteError::ShuttingDown);
            let mut buf = std::mem::take(&mut response);
            buf.clear();
            response = encode_response(&refused, buf).unwrap_or_default();
            After::Continue
        } else {
            request.clear();
            request.extend_from_slice(&frame);
            state.handle(&mut guard.refs, &peer, &request, &mut response)
        };
        drop(frame);
        if let Err(e) = conn.send_bytes(&response) {
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
}

impl std::fmt::Debug for TcpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpClient")
            .field("gone", &self.gone)
            .finish_non_exhaustive()
    }
}

/// How long connecting and authenticating to a TCP server may take.
pub const TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

impl TcpClient {
    /// Connects to the server at `address` and runs the authkey handshake.
    ///
    /// A server that refuses the key is [`Error::Authentication`]; one that
    /// cannot be reached is [`Error::ManagerGone`].
    pub fn connect(address: SocketAddr, authkey: &[u8]) -> Result<TcpClient> {
        let conn = SocketConnection::connect_timeout(
            &Address::Tcp(address),
            Some(authkey),
            TCP_CONNECT_TIMEOUT,
        )
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
        conn.send_bytes(&hello_frame()).map_err(gone)?;
        let reply = conn.recv_bytes_timeout(TCP_CONNECT_TIMEOUT).map_err(gone)?;
        match hello_version(&reply) {
            Some(TCP_PROTOCOL_VERSION) => Ok(TcpClient { conn, gone: false }),
            Some(v) => Err(Error::Protocol(format!(
                "the manager at {address} speaks protocol version {v}, this client {TCP_PROTOCOL_VERSION}"
            ))),
            None => Err(Error::Protocol(format!(
                "the manager at {address} did not answer as a multiproc manager"
            ))),
        }
    }

    /// Whether the connection broke.
    pub fn is_gone(&self) -> bool {
        self.gone
    }

    /// The socket (a forked child makes its copy inert, see the proxy crate).
    pub fn fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.conn.fd()
    }

    /// Sends a request and waits for its response.
    ///
    /// A connection that breaks (the server died or shut down, the network
    /// reset it) is [`Error::ManagerGone`], now and for every later call.
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
                "the connection to the manager broke".into(),
            ));
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
                    "the connection to the manager broke: {e}"
                )))
            }
        }
    }
}
