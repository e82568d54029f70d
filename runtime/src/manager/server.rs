//! The serve loop that runs in the manager's process, and the local
//! connection handshake both sides use.
//!
//! The server listens on a Linux abstract Unix socket (nothing on disk)
//! named after its pid and a random token. A client connects and says who
//! it is (pid and start time); the server creates the connection's channel
//! segment, passes its descriptor back with `SCM_RIGHTS`, and one server
//! thread serves that channel until the client closes it, dies, or the
//! server shuts down. The references a connection held go with it.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rkyv::util::AlignedVec;

use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::handle::{HandleRepr, ShareHandle};
use crate::manager::channel::{Channel, ClientEnd, Hangup, SLOT_SIZE, ServerEnd};
use crate::manager::dispatch::{self, After};
use crate::manager::protocol::ObjectId;
use crate::manager::protocol::{LocalAddress as ServerAddress, Request};
use crate::manager::remote::{TcpOptions, TcpServer};
use crate::manager::table::{ConnRefs, Table};
use crate::manager::user::{ServedObject, UserObjects};
use crate::manager::waitable::Peer;
use crate::shm::{Kind, ShmObject, fingerprint_str};
use crate::sys;

const HELLO_MAGIC: u32 = u32::from_le_bytes(*b"MPMH");
const WELCOME_MAGIC: u32 = u32::from_le_bytes(*b"MPMW");
const PROTOCOL_VERSION: u32 = 2;
/// How long a client waits for a live server to answer its handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the accept loop wakes to drop expired pins.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

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
}

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
    fingerprint_str("multiproc::manager::boot/2")
}

fn random_token() -> u64 {
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

    /// Tells the parent that `server` listens (or, with `None`, that it
    /// could not start).
    pub fn publish_ready(&self, server: Option<&Server>) {
        match server {
            Some(s) => self.publish(READY, Some(&s.state.address), s.tcp_port()),
            None => self.publish(FAILED, None, 0),
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
                FAILED => {
                    return Err(Error::ManagerGone(
                        "the manager server could not start listening".into(),
                    ));
                }
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
}

impl ServerState {
    /// Runs one request (user objects first, then the table).
    pub(crate) fn handle(
        &self,
        conn: &mut ConnRefs,
        peer: &Peer<'_>,
        request: &[u8],
        response: &mut AlignedVec,
    ) -> After {
        if !self.user.is_empty() && self.user.try_handle(request, response) {
            return After::Continue;
        }
        dispatch::handle(&self.table, conn, peer, request, response)
    }

    /// A new connection's id, unique for the server's lifetime.
    pub(crate) fn connection_id(&self) -> u64 {
        self.next_connection.fetch_add(1, Ordering::Relaxed)
    }

    /// A connection ended: its references go, and the locks it held.
    fn connection_ended(&self, conn: ConnRefs, id: u64) {
        self.table.lock().release_connection(conn, id);
    }

    pub(crate) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Stops accepting, tells every client, and wakes the accept loop.
    pub(crate) fn begin_shutdown(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        for chan in self.channels.lock().iter() {
            chan.close_by_server();
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

/// What a server listens on besides its local socket.
#[derive(Debug, Clone, Default, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(crate = rkyv)]
pub struct ServeOptions {
    /// Also serve over TCP (see [`crate::manager::remote`]).
    pub tcp: Option<TcpOptions>,
}

/// A bound manager server, not yet serving: objects can be made in it
/// first (a remote manager's named objects), then [`Server::serve_forever`]
/// serves until a client or a [`ShutdownHandle`] stops it.
pub struct Server {
    state: Arc<ServerState>,
    listener: UnixListener,
    tcp: Option<TcpServer>,
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
        let listener = UnixListener::bind_addr(&socket_addr(&address)?)?;
        let tcp = match &options.tcp {
            Some(t) => Some(TcpServer::bind(t)?),
            None => None,
        };
        Ok(Server {
            state: Arc::new(ServerState {
                address,
                table: Mutex::new(Table::new()),
                stopping: AtomicBool::new(false),
                channels: Mutex::new(Vec::new()),
                user: UserObjects::default(),
                tcp_conns: Mutex::new(std::collections::HashMap::new()),
                next_connection: AtomicU64::new(1),
            }),
            listener,
            tcp,
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
        let mut out = AlignedVec::new();
        dispatch::handle(
            &self.state.table,
            &mut self.own,
            &Peer::server_itself(),
            &encoded,
            &mut out,
        );
        Ok(out)
    }

    /// Adds a user object the server owns until it ends; returns its id.
    pub fn add_user_object(&mut self, object: Box<dyn ServedObject>) -> ObjectId {
        self.state.user.add(object)
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
            }
            if !matches!(ready, Ok(ref r) if !r.is_empty()) || state.stopping() {
                continue;
            }
            match self.listener.accept() {
                Ok((stream, _)) => {
                    let state = state.clone();
                    let spawned = std::thread::Builder::new()
                        .name("multiproc-manager-conn".into())
                        .spawn(move || serve_connection(&state, stream));
                    if let Err(e) = spawned {
                        tracing::warn!("manager server cannot start a connection thread: {e}");
                    }
                }
                Err(e) => tracing::debug!("manager accept failed: {e}"),
            }
        }
        if let Some(t) = tcp_thread {
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
            boot.publish_ready(None);
            return;
        }
    };
    boot.publish_ready(Some(&server));
    drop(boot);
    server.serve_forever();
}

/// Who a client says it is.
struct Hello {
    pid: i32,
    start_ticks: u64,
}

fn read_hello(stream: &mut UnixStream) -> Result<Hello> {
    let mut buf = [0u8; 24];
    stream.read_exact(&mut buf)?;
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

/// Whether the client end of the setup socket hung up (its process died or closed it).
fn hung_up(stream: &UnixStream) -> bool {
    matches!(
        sys::fd::poll(&[stream.as_fd()], sys::fd::Interest::Read, Some(Duration::ZERO)),
        Ok(ready) if !ready.is_empty()
    )
}

fn serve_connection(state: &ServerState, mut stream: UnixStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let hello = match read_hello(&mut stream) {
        Ok(h) => h,
        Err(e) => {
            tracing::debug!("manager handshake failed: {e}");
            return;
        }
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
    let mut guard = ConnectionGuard::local(state, chan);
    let gone = || {
        state.stopping()
            || !sys::process::is_alive(hello.pid, Some(hello.start_ticks))
            || hung_up(&stream)
    };
    let peer = Peer {
        id: guard.id,
        gone: &gone,
    };
    let mut request = AlignedVec::new();
    let mut response = AlignedVec::new();
    let hangup = loop {
        let waited = end.next_request(
            &mut request,
            || sys::process::is_alive(hello.pid, Some(hello.start_ticks)) && !hung_up(&stream),
            || state.stopping(),
        );
        if let Err(h) = waited {
            break h;
        }
        let after = state.handle(&mut guard.refs, &peer, &request, &mut response);
        if let Err(e) = end.respond(&response) {
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
#[derive(Debug)]
pub struct LocalConnection {
    /// The setup socket.
    pub socket: UnixStream,
    /// The channel's client end.
    pub end: ClientEnd,
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

/// Connects to the local server at `address`.
pub fn connect_local(address: &ServerAddress) -> Result<LocalConnection> {
    let gone = |e: std::io::Error| {
        Error::ManagerGone(format!("cannot reach manager server {}: {e}", address.pid))
    };
    let mut socket = UnixStream::connect_addr(&socket_addr(address)?).map_err(gone)?;
    let _ = socket.set_read_timeout(Some(Duration::from_millis(100)));
    let mut hello = [0u8; 24];
    hello[..4].copy_from_slice(&HELLO_MAGIC.to_le_bytes());
    hello[4..8].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    hello[8..12].copy_from_slice(&(sys::process::getpid() as u32).to_le_bytes());
    hello[16..24].copy_from_slice(&sys::process::own_start_ticks().to_le_bytes());
    socket.write_all(&hello).map_err(gone)?;
    let mut welcome = [0u8; 8];
    let mut got = 0;
    let mut fds = Vec::new();
    let deadline = Deadline::after(CONNECT_TIMEOUT);
    while got < welcome.len() {
        if deadline.expired() {
            return Err(gone(std::io::ErrorKind::TimedOut.into()));
        }
        match sys::socket::recv_with_fds(socket.as_fd(), &mut welcome[got..]) {
            Ok((0, _)) => return Err(gone(std::io::ErrorKind::UnexpectedEof.into())),
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
                    return Err(gone(e));
                }
            }
            Err(e) => return Err(gone(e)),
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
            end.next_request(&mut request, || true, || false).unwrap();
            let peer = Peer {
                id: guard.id,
                gone: &|| false,
            };
            let mut response = AlignedVec::new();
            st.handle(&mut guard.refs, &peer, &request, &mut response);
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
