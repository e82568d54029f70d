//! The serve loop that runs in the manager's process, and the local
//! connection handshake both sides use.
//!
//! The server listens on a Linux abstract Unix socket (nothing on disk)
//! named after its pid and a random token. Abstract sockets have no file
//! permissions and their names are listed in `/proc/net/unix` for every
//! user, so the name is no secret; what keeps others out:
//!
//! 1. the peer's credentials (`SO_PEERCRED`, recorded by the kernel): a
//!    client that runs as another user is refused before anything is read
//!    (root too, unless the server's owner allowed it, see
//!    [`ServeOptions::allow_root`]);
//! 2. the authkey handshake of [`crate::wire::auth`] over the socket, with
//!    the server's authkey: by default the authkey of the process that
//!    started it, which that process's children inherit (see
//!    [`AuthKey`](crate::process::AuthKey));
//! 3. the gate: at most 64 connections in their handshake at once (16 per
//!    client process), each cut off after 5 s; a client process that keeps
//!    failing the handshake is refused for a while (see `gate.rs`).
//!
//! Then the client says who it is (pid and start time); the server creates
//! the connection's channel segment, passes its descriptor back with
//! `SCM_RIGHTS`, and one server thread serves that channel until the client
//! closes it, dies, or the server shuts down. The references a connection
//! held go with it.

use std::io::IoSlice;
use std::os::fd::AsFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::fork_sync::Mutex;
use rkyv::util::AlignedVec;

use crate::connection::SocketConnection;
use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::handle::{HandleRepr, ShareHandle};
use crate::manager::channel::{Channel, ClientEnd, Hangup, SLOT_SIZE, ServerEnd};
use crate::manager::deaths::{Deaths, WATCHED_SLICE};
use crate::manager::dispatch::{self, After};
use crate::manager::gate::{Admission, Gate, GateLimits, Source, Ticket};
use crate::manager::protocol::ObjectId;
use crate::manager::protocol::{LocalAddress as ServerAddress, Request};
use crate::manager::remote::{TcpOptions, TcpServer};
use crate::manager::response_buf::ResponseBuf;
use crate::manager::table::{ConnRefs, Table};
use crate::manager::user::{Factory, ServedObject, UserObjects};
use crate::manager::waitable::Peer;
use crate::process::AuthKey;
use crate::py::{PyListener, PythonOptions};
use crate::shm::{Kind, ShmObject, fingerprint_str};
use crate::sys;
use crate::wire::auth::{self, FrameTransport};

const HELLO_MAGIC: u32 = u32::from_le_bytes(*b"MPMH");
const WELCOME_MAGIC: u32 = u32::from_le_bytes(*b"MPMW");
const PROTOCOL_VERSION: u32 = 3;
/// How long a client waits for a live server to answer its handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a local client has, from its connection on, to pass the
/// authkey handshake and say hello; the server closes it after that.
const LOCAL_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest hello frame the server reads.
const HELLO_LEN: usize = 24;
/// How often the accept loop wakes to drop expired pins.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// How long the accept loop pauses after an accept failed for want of a
/// descriptor (or memory), before it tries again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

const STARTING: u32 = 0;
const READY: u32 = 1;
const FAILED: u32 = 2;

#[repr(C)]
struct BootState {
    status: AtomicU32,
    pid: AtomicU32,
    token: AtomicU64,
    start_ticks: AtomicU64,
    /// The TCP port the server bound, or 0.
    tcp_port: AtomicU32,
    /// The Python listener's port, or 0.
    python_port: AtomicU32,
    /// Why the server could not start (status FAILED): the position of
    /// the `io::ErrorKind` in [`FAILURE_KINDS`] plus one, or 0 for an error
    /// that was not `Io`, and the error's text (its first
    /// [`FAILURE_TEXT`] bytes).
    failure_kind: AtomicU32,
    failure_len: AtomicU32,
    failure_text: [AtomicU8; FAILURE_TEXT],
}

/// How much of a start failure's text the boot block keeps.
const FAILURE_TEXT: usize = 256;

/// The `io::ErrorKind`s a start failure carries to the parent as they are
/// (anything else arrives as `Other`, with the same text).
const FAILURE_KINDS: [std::io::ErrorKind; 12] = {
    use std::io::ErrorKind::*;
    [
        AddrInUse,
        AddrNotAvailable,
        PermissionDenied,
        NotFound,
        AlreadyExists,
        InvalidInput,
        OutOfMemory,
        ConnectionRefused,
        Unsupported,
        TimedOut,
        Interrupted,
        Other,
    ]
};

/// The rendezvous between a starting server and its parent: a small segment
/// the server marks ready once it listens, with the address it chose.
#[derive(Clone)]
pub struct ServerBoot {
    obj: ShmObject<BootState>,
}

impl std::fmt::Debug for ServerBoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBoot").finish_non_exhaustive()
    }
}

fn boot_fingerprint() -> u64 {
    fingerprint_str("multiproc::manager::boot/4")
}

/// A random token (a server's socket name holds one).
pub(crate) fn random_token() -> u64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        bytes = (t ^ ((sys::process::getpid() as u64) << 32)).to_ne_bytes();
    }
    u64::from_ne_bytes(bytes)
}

impl ServerBoot {
    /// A new rendezvous with a fresh random token.
    pub fn new() -> Result<ServerBoot> {
        let token = random_token();
        let obj = ShmObject::create(
            Kind::Other,
            boot_fingerprint(),
            0,
            |state: *mut BootState, _| {
                // SAFETY: `create` hands us aligned, writable memory for the state.
                unsafe {
                    state.write(BootState {
                        status: AtomicU32::new(STARTING),
                        pid: AtomicU32::new(0),
                        token: AtomicU64::new(token),
                        start_ticks: AtomicU64::new(0),
                        tcp_port: AtomicU32::new(0),
                        python_port: AtomicU32::new(0),
                        failure_kind: AtomicU32::new(0),
                        failure_len: AtomicU32::new(0),
                        failure_text: [const { AtomicU8::new(0) }; FAILURE_TEXT],
                    })
                }
            },
        )?;
        Ok(ServerBoot { obj })
    }

    /// The random token the server's socket name holds.
    pub fn token(&self) -> u64 {
        self.obj.state().token.load(Ordering::Relaxed)
    }

    /// Tells the parent that `server` listens.
    pub fn publish_ready(&self, server: &Server) {
        let python = server.python_address().map_or(0, |a| a.port());
        self.obj
            .state()
            .python_port
            .store(u32::from(python), Ordering::Relaxed);
        self.publish(READY, Some(&server.state.address), server.tcp_port())
    }

    /// Tells the parent that the server could not start, and why: its
    /// [`ServerBoot::wait_ready`] returns `error` (an `Io` error keeps its
    /// kind, so a port in use is `AddrInUse` there too).
    pub fn publish_failed(&self, error: &Error) {
        let st = self.obj.state();
        let kind = match error {
            Error::Io(e) => {
                FAILURE_KINDS
                    .iter()
                    .position(|k| *k == e.kind())
                    .unwrap_or(FAILURE_KINDS.len() - 1)
                    + 1
            }
            _ => 0,
        };
        let text = match error {
            // The io::Error's own text: the variant's prefix is added again
            // when the parent displays it.
            Error::Io(e) => e.to_string(),
            other => other.to_string(),
        };
        let mut len = text.len().min(FAILURE_TEXT);
        while !text.is_char_boundary(len) {
            len -= 1;
        }
        for (cell, byte) in st.failure_text.iter().zip(&text.as_bytes()[..len]) {
            cell.store(*byte, Ordering::Relaxed);
        }
        st.failure_len.store(len as u32, Ordering::Relaxed);
        st.failure_kind.store(kind as u32, Ordering::Relaxed);
        self.publish(FAILED, None, 0)
    }

    /// The error a failed server published (after status FAILED was seen).
    fn failure(&self) -> Error {
        let st = self.obj.state();
        let len = (st.failure_len.load(Ordering::Relaxed) as usize).min(FAILURE_TEXT);
        let bytes: Vec<u8> = st.failure_text[..len]
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        match st.failure_kind.load(Ordering::Relaxed) as usize {
            0 if text.is_empty() => {
                Error::ManagerGone("the manager server could not start listening".into())
            }
            0 => Error::ManagerGone(format!("the manager server could not start: {text}")),
            k => {
                let kind = FAILURE_KINDS
                    .get(k - 1)
                    .copied()
                    .unwrap_or(std::io::ErrorKind::Other);
                Error::Io(std::io::Error::new(kind, text))
            }
        }
    }

    fn publish(&self, status: u32, address: Option<&ServerAddress>, tcp_port: u16) {
        let st = self.obj.state();
        if let Some(a) = address {
            st.pid.store(a.pid as u32, Ordering::Relaxed);
            st.start_ticks.store(a.start_ticks, Ordering::Relaxed);
            st.tcp_port.store(u32::from(tcp_port), Ordering::Relaxed);
        }
        st.status.store(status, Ordering::SeqCst);
        sys::futex::futex_wake(&st.status, u32::MAX);
    }

    /// The TCP port the server published (0 if it listens on none); valid
    /// once [`ServerBoot::wait_ready`] returned.
    pub fn tcp_port(&self) -> u16 {
        self.obj.state().tcp_port.load(Ordering::Relaxed) as u16
    }

    /// The Python listener's port the server published (0 if none); valid
    /// once [`ServerBoot::wait_ready`] returned.
    pub fn python_port(&self) -> u16 {
        self.obj.state().python_port.load(Ordering::Relaxed) as u16
    }

    /// Waits until the server listens and returns its address.
    ///
    /// `server_alive` is asked between sleep slices, so a server that died
    /// while starting is an error, not a hang.
    pub fn wait_ready(
        &self,
        mut server_alive: impl FnMut() -> bool,
        deadline: Deadline,
    ) -> Result<ServerAddress> {
        let st = self.obj.state();
        loop {
            match st.status.load(Ordering::SeqCst) {
                READY => {
                    return Ok(ServerAddress {
                        pid: st.pid.load(Ordering::Relaxed) as i32,
                        start_ticks: st.start_ticks.load(Ordering::Relaxed),
                        token: st.token.load(Ordering::Relaxed),
                    });
                }
                FAILED => return Err(self.failure()),
                _ => {}
            }
            if !server_alive() {
                return Err(Error::ManagerGone(
                    "the manager server died while starting".into(),
                ));
            }
            if deadline.expired() {
                return Err(deadline.timeout_error());
            }
            sys::futex::futex_wait(
                &st.status,
                STARTING,
                Some(deadline.slice(Duration::from_millis(100))),
            );
        }
    }
}

impl ShareHandle for ServerBoot {
    fn to_repr(&self) -> Result<HandleRepr> {
        self.obj.to_repr()
    }
    fn from_repr(repr: &HandleRepr) -> Result<Self> {
        ShmObject::open(repr, Kind::Other, boot_fingerprint(), "manager boot block")
            .map(|obj| ServerBoot { obj })
    }
}

crate::impl_share_handle!(impl<> for ServerBoot);

fn socket_addr(address: &ServerAddress) -> std::io::Result<SocketAddr> {
    SocketAddr::from_abstract_name(address.socket_name().as_bytes())
}

/// What every connection thread shares.
pub(crate) struct ServerState {
    address: ServerAddress,
    pub(crate) table: Mutex<Table>,
    stopping: AtomicBool,
    channels: Mutex<Vec<Channel>>,
    user: UserObjects,
    /// Duplicates of the TCP connections' sockets, to cut them on shutdown.
    pub(crate) tcp_conns: Mutex<std::collections::HashMap<u64, std::net::TcpStream>>,
    /// The next connection's id (0 is the server itself).
    next_connection: AtomicU64,
    /// The key local clients prove they know.
    authkey: AuthKey,
    /// The server's effective user id: local clients must run as it.
    uid: u32,
    /// Whether root may connect although the server runs as another user.
    allow_root: bool,
    /// Local connections still in their handshake.
    local_gate: Arc<Gate>,
    /// Local clients' deaths, watched for their connections' threads.
    deaths: Deaths,
}

impl ServerState {
    /// Runs one request (user objects first, then the table), answering
    /// with at most `limit` bytes: a larger answer becomes an error (the
    /// table checks before it changes anything, so a value too large to
    /// send is neither lost nor half-taken).
    pub(crate) fn handle(
        &self,
        conn: &mut ConnRefs,
        peer: &Peer<'_>,
        request: &[u8],
        response: &mut ResponseBuf,
        limit: usize,
    ) -> After {
        let after = if !self.user.is_empty()
            && self
                .user
                .try_handle(&self.table, conn, peer, request, response)
        {
            After::Continue
        } else {
            dispatch::handle(&self.table, conn, peer, request, response, limit)
        };
        if response.len() > limit {
            dispatch::too_large(response, limit);
        }
        after
    }

    /// A new connection's id, unique for the server's lifetime.
    pub(crate) fn connection_id(&self) -> u64 {
        self.next_connection.fetch_add(1, Ordering::Relaxed)
    }

    /// A connection ended: its references go, and the locks it held.
    fn connection_ended(&self, conn: ConnRefs, id: u64) {
        self.table.lock().release_connection(conn, id);
        crate::manager::table::free_pending(&self.table);
    }

    pub(crate) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Whether a local client running as `uid` may connect at all.
    fn uid_allowed(&self, uid: u32) -> bool {
        uid == self.uid || (uid == 0 && self.allow_root)
    }

    /// Takes a new local connection: checks who is at the other end, then
    /// runs its handshake on a thread of its own if the gate lets it.
    fn admit_local(self: &Arc<Self>, stream: UnixStream) {
        let cred = match sys::socket::peer_credentials(stream.as_fd()) {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!("manager cannot read a local client's credentials: {e}");
                return;
            }
        };
        let source = Source::Process {
            pid: cred.pid,
            uid: cred.uid,
        };
        if !self.uid_allowed(cred.uid) {
            // Nothing is read from it: it is told no, and closed.
            self.local_gate
                .log_refused(source, "it runs as another user than the server");
            refuse(stream.as_fd(), auth::FAILURE);
            return;
        }
        let ticket = match self.local_gate.admit(source) {
            Admission::Go(t) => t,
            Admission::Busy => return refuse(stream.as_fd(), auth::BUSY),
            Admission::Blocked => return refuse(stream.as_fd(), auth::FAILURE),
        };
        let state = self.clone();
        let spawned = std::thread::Builder::new()
            .name("multiproc-manager-conn".into())
            .spawn(move || serve_connection(&state, stream, ticket));
        if let Err(e) = spawned {
            tracing::warn!("manager server cannot start a connection thread: {e}");
        }
    }

    /// Stops accepting, tells every client, and wakes the accept loop.
    pub(crate) fn begin_shutdown(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.deaths.stop();
        for chan in self.channels.lock().iter() {
            chan.close_by_server();
            chan.wake_server();
        }
        for stream in self.tcp_conns.lock().values() {
            // Wakes the connection's thread from its read.
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        if let Ok(addr) = socket_addr(&self.address) {
            // Wakes the accept loop; the connection is dropped at once.
            let _ = UnixStream::connect_addr(&addr);
        }
    }
}

/// One connection's hold on the server, released however its thread ends.
///
/// A connection thread that stops for any reason, a panic included, must
/// not leave its client waiting or its objects held: dropping the guard
/// tells the client (a local channel is closed by the server; a TCP
/// connection's duplicate socket is let go, so the socket closes when the
/// thread's own end does) and releases the references and locks the
/// connection held.
pub(crate) struct ConnectionGuard<'a> {
    state: &'a ServerState,
    /// The connection's id (see [`Peer`]).
    pub(crate) id: u64,
    /// The references the connection holds.
    pub(crate) refs: ConnRefs,
    /// A local connection's channel (registered in `state.channels`).
    channel: Option<Channel>,
    /// A TCP connection's key in `state.tcp_conns`.
    tcp_key: Option<u64>,
}

impl<'a> ConnectionGuard<'a> {
    /// The guard of a new local connection over `channel`, which it registers.
    pub(crate) fn local(state: &'a ServerState, channel: Channel) -> Self {
        state.channels.lock().push(channel.clone());
        if state.stopping() {
            channel.close_by_server();
        }
        ConnectionGuard {
            state,
            id: state.connection_id(),
            refs: ConnRefs::new(),
            channel: Some(channel),
            tcp_key: None,
        }
    }

    /// The guard of a new TCP connection, whose socket `closer` (a
    /// duplicate) a shutdown cuts.
    pub(crate) fn tcp(state: &'a ServerState, key: u64, closer: std::net::TcpStream) -> Self {
        state.tcp_conns.lock().insert(key, closer);
        ConnectionGuard {
            state,
            id: state.connection_id(),
            refs: ConnRefs::new(),
            channel: None,
            tcp_key: Some(key),
        }
    }
}

impl Drop for ConnectionGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            tracing::error!(
                connection = self.id,
                "a manager connection thread panicked; its connection is closed"
            );
        }
        if let Some(chan) = self.channel.take() {
            // Tells a client waiting for an answer that none will come.
            chan.close_by_server();
            let seg_id = chan.segment().id();
            self.state
                .channels
                .lock()
                .retain(|c| c.segment().id() != seg_id);
        }
        if let Some(key) = self.tcp_key {
            self.state.tcp_conns.lock().remove(&key);
        }
        self.state
            .connection_ended(std::mem::take(&mut self.refs), self.id);
    }
}

/// How a server listens: who may connect locally, TCP besides, and its limits.
#[derive(Clone, Default, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(crate = rkyv)]
pub struct ServeOptions {
    /// Also serve over TCP (see [`crate::manager::remote`]).
    pub tcp: Option<TcpOptions>,
    /// The key local clients must prove they know; empty: the authkey of
    /// the process the server runs in (see [`AuthKey`]), which is the
    /// authkey of the process that started it.
    pub authkey: Vec<u8>,
    /// Whether local clients running as root may connect to a server that
    /// runs as another user (default: no; a server running as root always
    /// takes root's clients, since they run as its own user).
    pub allow_root: bool,
    /// What each connection may hold.
    pub limits: Limits,
    /// Also serve queues to CPython clients (see [`crate::py`]).
    pub python: Option<PythonOptions>,
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("tcp", &self.tcp)
            .field("allow_root", &self.allow_root)
            .field("limits", &self.limits)
            .field("python", &self.python)
            .finish_non_exhaustive()
    }
}

/// The default of [`Limits::max_objects`].
pub const DEFAULT_MAX_OBJECTS: u64 = 1 << 20;

/// What one connection of a manager server may hold, and the largest
/// segment the server creates; a request past a limit fails with
/// [`Error::QuotaExceeded`] and changes nothing (the connection stays usable).
///
/// What counts: objects the connection created that are still alive (a
/// dict, a list, a queue, a segment the server holds for it); bytes of the
/// keys and values it stored that are still stored anywhere (whoever
/// removes them later), plus the segments the server holds for it. When a
/// connection ends, nothing is charged to it any more (what it left behind
/// stays). The server's own named objects are never limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(crate = rkyv)]
pub struct Limits {
    /// Objects per connection (default [`DEFAULT_MAX_OBJECTS`], about a million).
    pub max_objects: u64,
    /// Bytes stored per connection, keys and values, with 8 for each
    /// reference to an object (a proxy) inside them (default: the
    /// machine's physical memory).
    pub max_bytes: u64,
    /// Bytes of one shared segment (default: the machine's physical memory).
    pub max_segment: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        // Without /proc's figure, 4 GiB: a limit must exist either way.
        let ram = sys::memfd::physical_memory().unwrap_or(4 << 30);
        Limits {
            max_objects: DEFAULT_MAX_OBJECTS,
            max_bytes: ram,
            max_segment: ram,
        }
    }
}

/// A bound manager server, not yet serving: objects can be made in it
/// first (a remote manager's named objects), then [`Server::serve_forever`]
/// serves until a client or a [`ShutdownHandle`] stops it.
pub struct Server {
    state: Arc<ServerState>,
    listener: UnixListener,
    tcp: Option<TcpServer>,
    /// The listener for CPython clients, if asked for.
    python: Option<PyListener>,
    /// References the server itself holds (its named objects): never released.
    own: ConnRefs,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local", &self.state.address)
            .field("tcp", &self.tcp_address())
            .finish_non_exhaustive()
    }
}

/// Stops a server from another thread (or a signal-watching one).
#[derive(Clone)]
pub struct ShutdownHandle {
    state: Arc<ServerState>,
}

impl std::fmt::Debug for ShutdownHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShutdownHandle").finish_non_exhaustive()
    }
}

impl ShutdownHandle {
    /// Asks the server to stop; [`Server::serve_forever`] returns soon after.
    pub fn shutdown(&self) {
        self.state.begin_shutdown();
    }

    /// Whether the server was asked to stop.
    pub fn is_stopping(&self) -> bool {
        self.state.stopping()
    }
}

impl Server {
    /// Binds the local socket (named with `token`) and, if asked, the TCP listener.
    pub fn bind(token: u64, options: &ServeOptions) -> Result<Server> {
        let address = ServerAddress {
            pid: sys::process::getpid(),
            start_ticks: sys::process::own_start_ticks(),
            token,
        };
        let authkey = if options.authkey.is_empty() {
            crate::process::current_process().authkey()
        } else {
            AuthKey::new(&options.authkey)?
        };
        let listener = UnixListener::bind_addr(&socket_addr(&address)?)?;
        let tcp = match &options.tcp {
            Some(t) => Some(TcpServer::bind(t)?),
            None => None,
        };
        let python = match &options.python {
            Some(p) => Some(PyListener::bind(p)?),
            None => None,
        };
        Ok(Server {
            state: Arc::new(ServerState {
                address,
                table: Mutex::new(Table::with_limits(options.limits)),
                stopping: AtomicBool::new(false),
                channels: Mutex::new(Vec::new()),
                user: UserObjects::default(),
                tcp_conns: Mutex::new(std::collections::HashMap::new()),
                next_connection: AtomicU64::new(1),
                authkey,
                uid: sys::socket::effective_uid(),
                allow_root: options.allow_root,
                local_gate: Gate::new("local", GateLimits::LOCAL),
                deaths: Deaths::default(),
            }),
            listener,
            tcp,
            python,
            own: ConnRefs::new(),
        })
    }

    /// Where local clients connect.
    pub fn local_address(&self) -> ServerAddress {
        self.state.address
    }

    /// The TCP address the server bound (the real port if asked for port 0).
    pub fn tcp_address(&self) -> Option<std::net::SocketAddr> {
        self.tcp.as_ref().map(TcpServer::local_addr)
    }

    /// The address the Python listener bound, if the server has one.
    pub fn python_address(&self) -> Option<std::net::SocketAddr> {
        self.python.as_ref().map(PyListener::local_addr)
    }

    /// Serves the queue `id` to CPython clients as typeid `typeid`
    /// ([`Error::InvalidArgument`] if the server has no Python listener or
    /// `id` is not a queue). Rust clients keep using it as before.
    pub fn serve_to_python(&mut self, typeid: &str, id: ObjectId) -> Result<()> {
        let state = self.state.clone();
        match &mut self.python {
            Some(p) => p.add_queue(&state, typeid, id),
            None => Err(Error::InvalidArgument(
                "the server was bound without Python options".into(),
            )),
        }
    }

    fn tcp_port(&self) -> u16 {
        self.tcp_address().map_or(0, |a| a.port())
    }

    /// A handle that stops the server from elsewhere.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            state: self.state.clone(),
        }
    }

    /// Runs `request` as the server itself (before serving, to make named
    /// objects); the references it takes last as long as the server.
    /// Returns the encoded response (read it with
    /// [`access_response`](crate::manager::protocol::access_response)).
    pub fn request(&mut self, request: &Request<'_>) -> Result<AlignedVec> {
        let encoded = crate::manager::protocol::encode_request(request, AlignedVec::new())?;
        let mut out = ResponseBuf::new();
        dispatch::handle(
            &self.state.table,
            &mut self.own,
            &Peer::server_itself(),
            &encoded,
            &mut out,
            usize::MAX,
        );
        Ok(out.into_bytes())
    }

    /// Adds a user object the server owns until it ends; returns its id.
    pub fn add_user_object(&mut self, object: Box<dyn ServedObject>) -> ObjectId {
        self.state.user.add(object)
    }

    /// Adds a factory that makes a new user object of `type_name` for each
    /// `Create` of kind `User` naming its number, which this returns.
    pub fn add_user_factory(&mut self, type_name: &'static str, make: Factory) -> u64 {
        self.state.user.add_factory(type_name, make)
    }

    /// How many objects the server holds.
    pub fn number_of_objects(&self) -> usize {
        self.state.table.lock().len()
    }

    /// Serves local (and TCP) clients until one asks for a shutdown or a
    /// [`ShutdownHandle`] is used.
    pub fn serve_forever(mut self) {
        let tcp_thread = self.tcp.take().and_then(|t| {
            let state = self.state.clone();
            std::thread::Builder::new()
                .name("multiproc-manager-tcp".into())
                .spawn(move || t.accept_loop(&state))
                .map_err(|e| tracing::error!("manager server cannot serve TCP: {e}"))
                .ok()
        });
        let python_thread = self.python.take().and_then(|p| {
            let state = self.state.clone();
            std::thread::Builder::new()
                .name("multiproc-py-listener".into())
                .spawn(move || p.accept_loop(state))
                .map_err(|e| tracing::error!("manager server cannot serve Python clients: {e}"))
                .ok()
        });
        let state = &self.state;
        let mut last_sweep = Instant::now();
        while !state.stopping() {
            let ready = sys::fd::poll(
                &[self.listener.as_fd()],
                sys::fd::Interest::Read,
                Some(SWEEP_EVERY),
            );
            if last_sweep.elapsed() >= SWEEP_EVERY {
                last_sweep = Instant::now();
                state.table.lock().sweep_pins(last_sweep);
                crate::manager::table::free_pending(&state.table);
            }
            if !matches!(ready, Ok(ref r) if !r.is_empty()) || state.stopping() {
                continue;
            }
            match self.listener.accept() {
                Ok((stream, _)) => state.admit_local(stream),
                Err(e) => {
                    tracing::debug!("manager accept failed: {e}");
                    if sys::fd::is_exhaustion(&e) {
                        // Out of descriptors or memory: the pending client
                        // stays readable, so polling again at once would spin.
                        // Existing clients are served meanwhile.
                        std::thread::sleep(ACCEPT_BACKOFF);
                    }
                }
            }
        }
        if let Some(t) = tcp_thread {
            let _ = t.join();
        }
        if let Some(t) = python_thread {
            let _ = t.join();
        }
    }
}

/// The manager server's main function: the target of the manager's process.
///
/// Listens until a client asks it to shut down; returns then (ending the process).
pub fn serve(boot: ServerBoot) {
    serve_with((boot, ServeOptions::default()));
}

/// Like [`serve`], with options (a TCP listener as well).
pub fn serve_with((boot, options): (ServerBoot, ServeOptions)) {
    let server = match Server::bind(boot.token(), &options) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("manager server cannot listen: {e}");
            boot.publish_failed(&e);
            return;
        }
    };
    boot.publish_ready(&server);
    drop(boot);
    server.serve_forever();
}

/// Who a client says it is.
struct Hello {
    pid: i32,
    start_ticks: u64,
}

fn read_hello(conn: &mut SocketConnection<()>, deadline: Deadline) -> Result<Hello> {
    let frame = FrameTransport::recv_frame(conn, HELLO_LEN, deadline)?;
    let Ok(buf) = <[u8; HELLO_LEN]>::try_from(frame.as_slice()) else {
        return Err(Error::Protocol("not a multiproc manager client".into()));
    };
    let word = |i: usize| u32::from_le_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
    if word(0) != HELLO_MAGIC || word(4) != PROTOCOL_VERSION {
        return Err(Error::Protocol("not a multiproc manager client".into()));
    }
    let mut ticks = [0u8; 8];
    ticks.copy_from_slice(&buf[16..24]);
    Ok(Hello {
        pid: word(8) as i32,
        start_ticks: u64::from_le_bytes(ticks),
    })
}

/// Tells a connection no (`payload` as one frame, if the socket takes it at
/// once) before it is closed.
pub(crate) fn refuse(sock: std::os::fd::BorrowedFd<'_>, payload: &[u8]) {
    let header = (payload.len() as u64).to_le_bytes();
    let _ = sys::socket::send_nowait(sock, &[IoSlice::new(&header), IoSlice::new(payload)], &[]);
}

/// Whether the client end of the setup socket hung up (its process died or closed it).
fn hung_up(stream: &UnixStream) -> bool {
    matches!(
        sys::fd::poll(&[stream.as_fd()], sys::fd::Interest::Read, Some(Duration::ZERO)),
        Ok(ready) if !ready.is_empty()
    )
}

/// Authenticates a local client and reads its hello, within the handshake
/// deadline; the ticket goes back to the gate either way.
fn local_handshake(
    state: &ServerState,
    stream: UnixStream,
    ticket: Ticket,
) -> Option<(UnixStream, Hello)> {
    let deadline = Deadline::after(LOCAL_HANDSHAKE_TIMEOUT);
    let mut conn = match SocketConnection::<()>::from_unix(stream) {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!("manager cannot use a local connection: {e}");
            return None;
        }
    };
    if let Err(e) = conn.server_handshake(state.authkey.as_bytes(), deadline) {
        // Closed before its place at the gate is given back: the gate
        // never counts fewer handshakes than are open.
        drop(conn);
        ticket.handshake_failed(&e);
        return None;
    }
    // It knows the key: whatever follows is no guess, and is not counted
    // against it.
    let hello = read_hello(&mut conn, deadline);
    drop(ticket);
    let hello = match hello {
        Ok(h) => h,
        Err(e) => {
            tracing::debug!("a manager client's hello was refused: {e}");
            return None;
        }
    };
    // A client sends nothing after its hello until the welcome.
    let Some(stream) = conn.into_unix_stream() else {
        tracing::debug!("a manager client sent more than its hello");
        return None;
    };
    Some((stream, hello))
}

fn serve_connection(state: &ServerState, stream: UnixStream, ticket: Ticket) {
    let Some((stream, hello)) = local_handshake(state, stream, ticket) else {
        return;
    };
    let chan = match Channel::create(SLOT_SIZE) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("manager cannot create a channel: {e}");
            return;
        }
    };
    let mut welcome = [0u8; 8];
    welcome[..4].copy_from_slice(&WELCOME_MAGIC.to_le_bytes());
    welcome[4..].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    if let Err(e) = sys::socket::send_with_fds(stream.as_fd(), &welcome, &[chan.segment().fd()]) {
        tracing::debug!("manager cannot answer a client: {e}");
        return;
    }
    let mut end = ServerEnd::new(chan.clone());
    let watch = state.deaths.watch(hello.pid, hello.start_ticks, &chan);
    let slice = if watch.is_some() {
        WATCHED_SLICE
    } else {
        crate::manager::channel::LIVENESS_SLICE
    };
    let died = || {
        watch
            .as_ref()
            .is_some_and(|w| w.died().load(Ordering::SeqCst))
    };
    let mut guard = ConnectionGuard::local(state, chan);
    // Only a death the kernel confirms, or the setup socket closing, ends
    // a client: a server out of descriptors cannot read `/proc`, and must
    // not drop live clients (nor free their objects) for that.
    let client_gone =
        || hung_up(&stream) || sys::process::liveness(hello.pid, Some(hello.start_ticks)).is_dead();
    let gone = || state.stopping() || client_gone();
    let peer = Peer {
        id: guard.id,
        gone: &gone,
        pid: Some(hello.pid),
    };
    let mut request = AlignedVec::new();
    let mut response = ResponseBuf::new();
    let hangup = loop {
        let waited = end.next_request(
            &mut request,
            slice,
            || !client_gone(),
            || state.stopping(),
            died,
        );
        if let Err(h) = waited {
            break h;
        }
        end.lend_overflow(&mut response);
        let after = state.handle(
            &mut guard.refs,
            &peer,
            &request,
            &mut response,
            crate::manager::channel::MAX_MESSAGE,
        );
        if let Err(e) = end.respond_from(&mut response) {
            // Too large for a slot and no overflow segment: say so instead.
            let failed = crate::manager::protocol::Response::Error(
                crate::manager::protocol::RemoteError::Failed(format!(
                    "cannot send the response: {e}"
                )),
            );
            let bytes = crate::manager::protocol::encode_response(&failed, AlignedVec::new())
                .unwrap_or_default();
            let _ = end.respond(&bytes);
        }
        if after == After::Shutdown {
            state.begin_shutdown();
            break Hangup::Shutdown;
        }
    };
    tracing::debug!(pid = hello.pid, ?hangup, "manager connection ended");
    // Dropping `guard` closes the channel and releases what the connection held.
}

/// A client's connection to a local server: the setup socket (kept open so
/// the server sees this process go) and the channel's client end.
///
/// Its `Debug` form leaves the socket out: a socket's `Debug` shows its
/// peer's name, which holds the server's token.
pub struct LocalConnection {
    /// The setup socket.
    pub socket: UnixStream,
    /// The channel's client end.
    pub end: ClientEnd,
}

impl std::fmt::Debug for LocalConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalConnection")
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

/// Connects to the local server at `address` (client side of the handshake).
///
/// A TCP address is [`Error::InvalidArgument`]: see [`crate::manager::remote`].
pub fn connect(address: &crate::manager::ServerAddress) -> Result<LocalConnection> {
    match address {
        crate::manager::ServerAddress::Local(a) => connect_local(a),
        crate::manager::ServerAddress::Tcp(a) => Err(Error::InvalidArgument(format!(
            "{a} is a TCP address, not a local server"
        ))),
    }
}

/// Connects to the local server at `address`, proving this process's
/// authkey (see [`AuthKey`]).
///
/// A server that refuses the key, or this process's user, is
/// [`Error::Authentication`]; one that is not running is
/// [`Error::ManagerGone`].
pub fn connect_local(address: &ServerAddress) -> Result<LocalConnection> {
    connect_local_with_authkey(
        address,
        crate::process::current_process().authkey().as_bytes(),
    )
}

/// Connects to the local server at `address`, proving `authkey`.
///
/// A server with too many handshakes in flight is asked again, with short
/// pauses, for up to 30 s.
pub fn connect_local_with_authkey(
    address: &ServerAddress,
    authkey: &[u8],
) -> Result<LocalConnection> {
    connect_local_within(address, authkey, Deadline::after(CONNECT_TIMEOUT))
}

/// Like [`connect_local_with_authkey`], giving up at `deadline` (or after
/// the usual connect timeout, whichever comes first) with
/// [`Error::ManagerGone`]: for callers that must not wait long for a server
/// that cannot take a connection now (one out of descriptors, say).
pub fn connect_local_within(
    address: &ServerAddress,
    authkey: &[u8],
    deadline: Deadline,
) -> Result<LocalConnection> {
    let deadline = deadline.min(Deadline::after(CONNECT_TIMEOUT));
    let mut pause = Duration::from_millis(2);
    loop {
        match try_connect_local(address, authkey, deadline) {
            Err(e) if auth::is_busy(&e) => {
                if deadline.expired() {
                    return Err(Error::ManagerGone(format!(
                        "manager server {} stayed too busy to take a connection",
                        address.pid
                    )));
                }
                // Backing off: the server has handshakes to finish first.
                std::thread::sleep(deadline.slice(pause));
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

fn try_connect_local(
    address: &ServerAddress,
    authkey: &[u8],
    deadline: Deadline,
) -> Result<LocalConnection> {
    let gone = |e: &dyn std::fmt::Display| {
        Error::ManagerGone(format!("cannot reach manager server {}: {e}", address.pid))
    };
    // Out of descriptors (or memory) here is this process's condition, not
    // the server's: the caller may try again once some are free.
    let gone_io = |e: std::io::Error| {
        if sys::fd::is_exhaustion(&e) {
            Error::Io(e)
        } else {
            gone(&e)
        }
    };
    let stream = UnixStream::connect_addr(&socket_addr(address)?).map_err(gone_io)?;
    let mut conn = SocketConnection::<()>::from_unix(stream)?;
    if let Err(e) = conn.client_handshake(authkey, deadline) {
        return Err(match e {
            Error::Authentication(m) => Error::Authentication(format!(
                "manager server {} refused this process (another user, or another \
                 authkey?): {m}",
                address.pid
            )),
            e if auth::is_busy(&e) => e,
            Error::Io(e) => gone_io(e),
            e => gone(&e),
        });
    }
    let mut hello = [0u8; HELLO_LEN];
    hello[..4].copy_from_slice(&HELLO_MAGIC.to_le_bytes());
    hello[4..8].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    hello[8..12].copy_from_slice(&(sys::process::getpid() as u32).to_le_bytes());
    hello[16..24].copy_from_slice(&sys::process::own_start_ticks().to_le_bytes());
    conn.send_bytes(&hello).map_err(|e| match e {
        Error::Io(e) => gone_io(e),
        e => gone(&e),
    })?;
    // The server sends nothing between its last handshake frame and the
    // welcome, so nothing of the welcome is buffered in `conn`.
    let socket = conn
        .into_unix_stream()
        .ok_or_else(|| Error::Protocol("the manager server sent more than asked".into()))?;
    let _ = socket.set_read_timeout(Some(Duration::from_millis(100)));
    let mut welcome = [0u8; 8];
    let mut got = 0;
    let mut fds = Vec::new();
    while got < welcome.len() {
        if deadline.expired() {
            return Err(gone(&std::io::Error::from(std::io::ErrorKind::TimedOut)));
        }
        match sys::socket::recv_with_fds(socket.as_fd(), &mut welcome[got..]) {
            Ok((0, _)) => {
                return Err(gone(&std::io::Error::from(
                    std::io::ErrorKind::UnexpectedEof,
                )));
            }
            Ok((n, more)) => {
                got += n;
                fds.extend(more);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if !address.is_alive() {
                    return Err(gone(&e));
                }
            }
            // The welcome's descriptor did not fit this process's table.
            Err(_) if sys::fd::no_descriptor_left(socket.as_fd()) => {
                return Err(Error::Io(std::io::Error::from_raw_os_error(libc::EMFILE)));
            }
            Err(e) => return Err(gone_io(e)),
        }
    }
    if welcome[..4] != WELCOME_MAGIC.to_le_bytes() || fds.len() != 1 {
        return Err(Error::Protocol("bad answer from the manager server".into()));
    }
    let seg = crate::shm::Segment::from_fd(fds.remove(0))?;
    let chan = Channel::open(seg)?;
    let _ = socket.set_read_timeout(None);
    Ok(LocalConnection {
        socket,
        end: ClientEnd::new(chan, *address),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::ObjectKind;
    use crate::manager::channel::Channel;
    use crate::manager::protocol::encode_request;

    /// Regression: a connection thread that panicked left its client
    /// waiting forever for an answer and kept the objects it referenced.
    #[test]
    fn a_connection_thread_that_panics_still_ends_its_connection() {
        let server = Server::bind(random_token(), &ServeOptions::default()).unwrap();
        let state = server.state.clone();
        let chan = Channel::create(SLOT_SIZE).unwrap();
        let client_chan = Channel::open(chan.segment().clone()).unwrap();
        let st = state.clone();
        // Reads one request, runs it (it creates an object this connection
        // holds), then fails before answering, as a bug would.
        let crashed = std::thread::spawn(move || {
            let mut end = ServerEnd::new(chan.clone());
            let mut guard = ConnectionGuard::local(&st, chan);
            let mut request = AlignedVec::new();
            end.next_request(
                &mut request,
                crate::manager::channel::LIVENESS_SLICE,
                || true,
                || false,
                || false,
            )
            .unwrap();
            let peer = Peer {
                id: guard.id,
                gone: &|| false,
                pid: None,
            };
            let mut response = ResponseBuf::new();
            st.handle(
                &mut guard.refs,
                &peer,
                &request,
                &mut response,
                crate::manager::channel::MAX_MESSAGE,
            );
            assert_eq!(st.table.lock().len(), 1);
            panic!("a bug in a connection thread");
        });
        let address = server.local_address();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut client = ClientEnd::new(client_chan, address);
            let create = encode_request(
                &Request::Create {
                    kind: ObjectKind::Dict,
                    fingerprint: 1,
                    type_name: "dict",
                    arg: 0,
                },
                AlignedVec::new(),
            )
            .unwrap();
            let _ = tx.send(client.round_trip(&create, &mut AlignedVec::new()));
        });
        let answer = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the client still waits for an answer");
        assert!(matches!(answer, Err(Error::ManagerGone(_))), "{answer:?}");
        assert!(crashed.join().is_err());
        assert_eq!(state.table.lock().len(), 0, "its references were released");
        assert!(
            state.channels.lock().is_empty(),
            "its channel was forgotten"
        );
    }
}
