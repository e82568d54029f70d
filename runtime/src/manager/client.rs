//! This process's connections to manager servers, and the references its
//! proxies hold through them.
//!
//! There is one connection per process per server, shared by every proxy
//! and thread of the process (a round trip holds its lock). It is made on
//! first need: when a manager creates an object, or when a proxy decoded
//! from a message or a child's arguments attaches. Only requests the server
//! answers at once go over it: a call that may take long (one that waits in
//! the server, a user object's method, which is user code) goes over a
//! connection of its own ([`on_own_connection`]), and so does a shutdown
//! ([`request_shutdown`]). A call waits for the shared connection at most
//! [`SHARED_WAIT`], so a server that stopped answering holds up no thread
//! forever.
//!
//! References: the server counts, per connection, the references this
//! process registered; here we count the live proxy instances per object.
//! The first instance registers, the last one releases, so cloning a proxy
//! costs nothing and dropping one is a round trip only when it was the last.
//!
//! Fork: a fork hook pins, before the fork, every object this process
//! references; the child opens its own connection and takes the pins over,
//! so proxies a forked child inherits (arguments or captured by a closure)
//! stay valid even if the parent drops its own at once.

use std::any::Any;
use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use crate::__internal::sys;
use crate::__internal::{ForkHook, register_fork_hook};
use crate::deadline::Deadline;
use crate::manager::TcpClient;
use crate::manager::channel::ClientEnd;
use crate::manager::protocol::{
    ArchivedResponse, ObjectId, Request, access_response, encode_request, remote_error,
};
use crate::manager::{ServerAddress, server};
use crate::rkyv::util::AlignedVec;
use crate::{Error, Result};

use crate::fork_sync::{Mutex, MutexGuard, TimedMutex};

/// How requests reach the server.
#[derive(Debug)]
enum Transport {
    /// A local server's shared-memory channel.
    Local(ClientEnd),
    /// A server over TCP.
    Tcp(TcpClient),
}

impl Transport {
    fn round_trip(
        &mut self,
        request: &[u8],
        response: &mut AlignedVec,
        deadline: Deadline,
    ) -> Result<()> {
        match self {
            Transport::Local(end) => end.round_trip_deadline(request, response, deadline),
            Transport::Tcp(c) => c.round_trip_deadline(request, response, deadline),
        }
    }

    fn is_gone(&self) -> bool {
        match self {
            Transport::Local(end) => end.is_gone(),
            Transport::Tcp(c) => c.is_gone(),
        }
    }

    /// Whether it is gone, or seen now to be (a TCP socket the server closed).
    fn is_broken(&mut self) -> bool {
        match self {
            Transport::Local(end) => end.is_gone(),
            Transport::Tcp(c) => c.is_broken(),
        }
    }
}

/// The state of one round trip: the transport and reusable buffers.
struct Wire {
    end: Transport,
    request: AlignedVec,
}

/// A connection of this process to one server.
pub struct Connection {
    /// The process that opened it: a forked child must open its own.
    pid: i32,
    /// A TCP connection's socket, which a forked child makes inert.
    tcp_fd: Option<RawFd>,
    server: ServerAddress,
    wire: TimedMutex<Wire>,
    /// Whether the transport broke, readable without waiting for `wire`.
    gone: AtomicBool,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// A response copied out of the channel.
pub struct Reply {
    buf: AlignedVec,
}

thread_local! {
    /// A response buffer to reuse, so a round trip allocates nothing for it.
    static SPARE: std::cell::RefCell<Option<AlignedVec>> = const { std::cell::RefCell::new(None) };
}

impl Drop for Reply {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        if buf.capacity() <= 64 * 1024 {
            let _ = SPARE.try_with(|s| *s.borrow_mut() = Some(buf));
        }
    }
}

impl Reply {
    /// The checked response; an error response becomes `Err`.
    pub fn get(&self) -> Result<&ArchivedResponse<'_>> {
        match access_response(&self.buf)? {
            ArchivedResponse::Error(e) => Err(remote_error(e)),
            r => Ok(r),
        }
    }
}

/// The error for a response of the wrong shape.
pub fn unexpected() -> Error {
    Error::Protocol("unexpected response from the manager server".into())
}

impl Connection {
    fn open(server: &ServerAddress) -> Result<Connection> {
        Connection::open_within(server, Deadline::Never)
    }

    /// Opens a connection, giving up at `deadline` (each transport has its
    /// own connect timeout besides).
    fn open_within(server: &ServerAddress, deadline: Deadline) -> Result<Connection> {
        let end = match server {
            ServerAddress::Local(local) => {
                let key = local_authkey(server);
                let c = server::connect_local_within(local, key.as_bytes(), deadline)?;
                let mut end = c.end;
                // Kept open so the server sees this process go, and watched
                // so this process sees the server go without reading `/proc`.
                end.keep_setup_socket(c.socket);
                Transport::Local(end)
            }
            ServerAddress::Tcp(addr) => {
                let key = authkey_for(server).ok_or_else(|| {
                    Error::Authentication(format!(
                        "no authkey known for the manager at {addr}: connect a BaseManager \
                         to it (or call multiproc::set_manager_authkey) first"
                    ))
                })?;
                let max = max_message_for(addr);
                Transport::Tcp(TcpClient::connect_within(*addr, &key, max, deadline)?)
            }
        };
        let tcp_fd = match &end {
            Transport::Tcp(c) => c.fd().map(|fd| fd.as_raw_fd()),
            Transport::Local(_) => None,
        };
        Ok(Connection {
            pid: sys::process::getpid(),
            tcp_fd,
            server: *server,
            wire: TimedMutex::new(Wire {
                end,
                request: AlignedVec::new(),
            }),
            gone: AtomicBool::new(false),
        })
    }

    /// The server this connection reaches.
    pub fn server(&self) -> &ServerAddress {
        &self.server
    }

    /// Whether this process opened the connection (a forked child did not).
    pub fn is_ours(&self) -> bool {
        self.pid == sys::process::getpid()
    }

    /// Sends `request`, waits for the answer.
    ///
    /// Waits for another thread's call on this connection at most
    /// [`SHARED_WAIT`] ([`Error::Timeout`] then); the answer itself is
    /// waited for as long as the server lives.
    pub fn call(&self, request: &Request<'_>) -> Result<Reply> {
        self.exchange(request, SHARED_WAIT, Deadline::Never)
    }

    /// Sends `request` and waits for the answer until `deadline` at most
    /// ([`Error::Timeout`] then; the connection is unusable afterwards).
    pub fn call_within(&self, request: &Request<'_>, deadline: Deadline) -> Result<Reply> {
        let wait = deadline.remaining().unwrap_or(SHARED_WAIT);
        self.exchange(request, wait, deadline)
    }

    fn exchange(
        &self,
        request: &Request<'_>,
        lock_wait: Duration,
        deadline: Deadline,
    ) -> Result<Reply> {
        let Some(mut wire) = self.wire.try_lock_for(lock_wait) else {
            tracing::warn!(
                server = %self.server,
                "a manager call on this process's shared connection has not returned for {lock_wait:?}"
            );
            return Err(Error::Timeout(lock_wait));
        };
        let mut buf = std::mem::take(&mut wire.request);
        buf.clear();
        let encoded = encode_request(request, buf)?;
        let mut response = SPARE
            .try_with(|s| s.borrow_mut().take())
            .ok()
            .flatten()
            .unwrap_or_default();
        let result = wire.end.round_trip(&encoded, &mut response, deadline);
        wire.request = encoded;
        if wire.end.is_gone() {
            self.gone.store(true, Ordering::SeqCst);
        }
        result.map(|()| Reply { buf: response })
    }

    /// Whether the server is known to be gone (never waits for a call in progress).
    pub fn is_gone(&self) -> bool {
        self.gone.load(Ordering::SeqCst)
    }

    /// Whether the connection is gone, or seen now to be broken (a TCP
    /// server that closed it: restarted, or shut down). A connection in use
    /// by another thread right now is taken to be fine.
    fn is_broken(&self) -> bool {
        self.wire
            .try_lock()
            .is_some_and(|mut wire| wire.end.is_broken())
    }
}

/// The longest a call waits for another thread's call on the connection
/// the process shares (requests the server answers at once: only a server
/// that stopped answering makes anyone wait this long).
pub const SHARED_WAIT: Duration = Duration::from_secs(60);

/// How long a shutdown request waits for the server's answer (after
/// connecting, which has its own bound).
pub const SHUTDOWN_ANSWER_WAIT: Duration = Duration::from_secs(10);

/// Asks the server at `server` to shut down, on a connection of its own: the
/// connection this process shares may be held by a call that does not
/// return (a server that stopped answering), and a shutdown (or a manager's
/// `Drop`) must not wait for it.
pub fn request_shutdown(server: &ServerAddress) -> Result<()> {
    let conn = Connection::open(server)?;
    conn.call_within(&Request::Shutdown, Deadline::after(SHUTDOWN_ANSWER_WAIT))?
        .get()
        .map(|_| ())
}

impl Drop for Connection {
    fn drop(&mut self) {
        // A forked child's copy of its parent's connection must stay silent.
        if self.is_ours()
            && let Transport::Local(end) = &self.wire.get_mut().end
        {
            end.channel().close_by_client();
        }
    }
}

/// The references of this process to one object through one connection.
#[derive(Debug, Default, Clone, Copy)]
struct Held {
    /// Live proxy instances (cores) in this process.
    local: u64,
    /// References the server counts for this connection.
    server: u64,
}

struct Entry {
    conn: Arc<Connection>,
    refs: HashMap<ObjectId, Held>,
    /// Idle connections of this process for calls that wait (see [`on_own_connection`]).
    spare: Vec<Connection>,
    /// The sockets of those in use now (a forked child makes them inert).
    waiting: Vec<RawFd>,
    /// Until when forks skip pinning for this server, which did not answer
    /// a pin in time (so one stall does not hold up every fork).
    pins_stalled: Option<Instant>,
}

/// Makes a forked child's copy of an inherited TCP socket inert (it now
/// reads /dev/null), so the child keeps no connection of its parent open:
/// the server must see the parent's connections end when the parent dies
/// (a lock it held is released, a wait it was in ends), whatever children
/// live on. The descriptor number stays valid for whatever owns it.
fn detach_inherited(fd: Option<RawFd>) {
    let Some(fd) = fd else { return };
    let detached = std::fs::File::open("/dev/null").and_then(|null| {
        // SAFETY: `fd` is this process's copy of a socket that a connection
        // of the client table owns; replacing what it refers to is the
        // point (the owner keeps a valid descriptor, now /dev/null).
        unsafe { sys::fd::dup_onto(null.as_fd(), fd) }
    });
    if let Err(e) = detached {
        tracing::debug!("a forked child cannot detach an inherited manager socket: {e}");
    }
}

/// How many idle connections for waiting calls a process keeps per server.
const SPARE_KEPT: usize = 4;

struct ClientState {
    pid: i32,
    conns: HashMap<ServerAddress, Entry>,
}

/// A fork-safe mutex: the fork hook holds it across the fork (see [`Mutex`]).
static CLIENT: LazyLock<Mutex<ClientState>> = LazyLock::new(|| {
    Mutex::new(ClientState {
        pid: 0,
        conns: HashMap::new(),
    })
});

fn lock_client() -> MutexGuard<'static, ClientState> {
    let mut state = CLIENT.lock();
    let me = sys::process::getpid();
    if state.pid != me {
        // Forked without our hook: nothing inherited is ours.
        state.pid = me;
        state.conns.clear();
    }
    state
}

/// The authkeys this process knows for servers (a proxy decoded from a
/// message reconnects with the key its process knows for that server).
/// A local server not in here is reached with this process's authkey.
/// Held across a fork (see [`ForkPins`]): a forked child that reconnects
/// must not find it locked by a thread that does not exist there.
static AUTHKEYS: LazyLock<Mutex<HashMap<ServerAddress, Vec<u8>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// The environment variable a process may read its default authkey from.
pub const AUTHKEY_ENV: &str = "MULTIPROC_AUTHKEY";

/// Remembers `authkey` for the server at `address`.
pub fn set_authkey(address: ServerAddress, authkey: &[u8]) {
    register_fork_hook(&ForkPins);
    AUTHKEYS.lock().insert(address, authkey.to_vec());
}

/// Remembers `authkey` for `address` unless a key is known already.
pub fn learn_authkey(address: ServerAddress, authkey: &[u8]) {
    register_fork_hook(&ForkPins);
    AUTHKEYS
        .lock()
        .entry(address)
        .or_insert_with(|| authkey.to_vec());
}

/// The authkey to put in an encoded proxy to `server` for one of this
/// process's own children (empty if none is known: for a local server, the
/// child's inherited authkey is then the one to use).
pub fn authkey_of(server: &ServerAddress) -> Vec<u8> {
    match server {
        ServerAddress::Tcp(_) => authkey_for(server).unwrap_or_default(),
        ServerAddress::Local(_) => AUTHKEYS.lock().get(server).cloned().unwrap_or_default(),
    }
}

/// The largest response this process accepts from TCP servers, by address
/// (the default unless a `BaseManager` said otherwise). Held across a
/// fork, as [`AUTHKEYS`] is.
static MAX_MESSAGES: LazyLock<Mutex<HashMap<std::net::SocketAddr, usize>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Accepts responses up to `max` bytes from the TCP server at `address`
/// (on connections opened from now on).
pub fn set_max_message(address: std::net::SocketAddr, max: usize) {
    register_fork_hook(&ForkPins);
    MAX_MESSAGES.lock().insert(address, max);
}

fn max_message_for(address: &std::net::SocketAddr) -> usize {
    MAX_MESSAGES
        .lock()
        .get(address)
        .copied()
        .unwrap_or(crate::wire::frame::DEFAULT_MAX_FRAME)
}

/// The key a TCP server is reached with: the one remembered for it, or
/// the environment's.
fn authkey_for(server: &ServerAddress) -> Option<Vec<u8>> {
    if let Some(k) = AUTHKEYS.lock().get(server) {
        return Some(k.clone());
    }
    std::env::var(AUTHKEY_ENV)
        .ok()
        .filter(|k| !k.is_empty())
        .map(String::into_bytes)
}

/// The key a local server is reached with: the one remembered for it, or
/// this process's authkey.
fn local_authkey(server: &ServerAddress) -> crate::AuthKey {
    let known = AUTHKEYS.lock().get(server).cloned();
    known
        .and_then(|k| crate::AuthKey::new(k).ok())
        .unwrap_or_else(|| crate::current_process().authkey())
}

/// This process's connection to `server`, opened on first need.
///
/// A connection that broke (the server shut down, or was restarted on the
/// same address) is replaced by a new one: proxies made on the old one keep
/// it and report `ManagerGone`, with the references it held (the server
/// dropped them when it ended); proxies made from now on use the new one.
pub fn connection(server: &ServerAddress) -> Result<Arc<Connection>> {
    register_fork_hook(&ForkPins);
    let mut state = lock_client();
    if let Some(e) = state.conns.get(server) {
        if !e.conn.is_broken() {
            return Ok(e.conn.clone());
        }
        tracing::debug!(%server, "the connection to a manager broke: reconnecting");
        state.conns.remove(server);
    }
    if !server.is_alive() {
        return Err(Error::ManagerGone(format!("{server} is not running")));
    }
    let conn = Arc::new(Connection::open(server)?);
    state.conns.insert(
        *server,
        Entry {
            conn: conn.clone(),
            refs: HashMap::new(),
            spare: Vec::new(),
            waiting: Vec::new(),
            pins_stalled: None,
        },
    );
    Ok(conn)
}

/// This process's connection to `server`, checked with a round trip: one
/// that broke unnoticed (a server restarted on the same address whose
/// host dropped the old connection silently) is replaced by a new one.
pub fn checked_connection(server: &ServerAddress) -> Result<Arc<Connection>> {
    let conn = connection(server)?;
    match conn.call(&Request::NumberOfObjects) {
        Err(Error::ManagerGone(why)) => {
            tracing::debug!(%server, "the connection to a manager broke ({why}): reconnecting");
            {
                let mut state = lock_client();
                if state
                    .conns
                    .get(server)
                    .is_some_and(|e| Arc::ptr_eq(&e.conn, &conn))
                {
                    state.conns.remove(server);
                }
            }
            connection(server)
        }
        _ => Ok(conn),
    }
}

/// Runs `call` on a connection of its own to `server` instead of the one
/// the process shares: a call that waits in the server (a lock, an event,
/// a queue's `get`) must not hold up the process's other proxies, one of
/// which may be what ends the wait. Idle ones are kept for the next wait.
/// Such a connection never holds references or locks.
pub fn on_own_connection<R>(
    server: &ServerAddress,
    call: impl FnOnce(&Connection) -> Result<R>,
) -> Result<R> {
    connection(server)?;
    let spare = {
        let mut state = lock_client();
        let spares = state.conns.get_mut(server).map(|e| &mut e.spare);
        // An idle connection the server closed meanwhile is of no use.
        spares.and_then(|s| std::iter::from_fn(|| s.pop()).find(|c| !c.is_broken()))
    };
    let conn = match spare {
        Some(c) => c,
        None => Connection::open(server)?,
    };
    let mark = |waiting: bool| {
        let mut state = lock_client();
        let Some(e) = state.conns.get_mut(server) else {
            return;
        };
        match (waiting, conn.tcp_fd) {
            (true, Some(fd)) => e.waiting.push(fd),
            (false, Some(fd)) => e.waiting.retain(|w| *w != fd),
            _ => {}
        }
    };
    mark(true);
    let out = call(&conn);
    mark(false);
    if !conn.is_gone() {
        let mut state = lock_client();
        if let Some(e) = state.conns.get_mut(server)
            && e.spare.len() < SPARE_KEPT
        {
            e.spare.push(conn);
        }
    }
    out
}

/// Forgets the connection to a server that was shut down.
pub fn forget(server: &ServerAddress) {
    lock_client().conns.remove(server);
}

fn held<'a>(state: &'a mut ClientState, conn: &Connection, id: ObjectId) -> Option<&'a mut Held> {
    let entry = state.conns.get_mut(&conn.server)?;
    if !std::ptr::eq(Arc::as_ptr(&entry.conn), conn) {
        return None;
    }
    Some(entry.refs.entry(id).or_default())
}

/// Records a new proxy instance of `id` whose server reference was just
/// registered (a create or an attach).
pub fn registered(conn: &Connection, id: ObjectId) {
    let mut state = lock_client();
    if let Some(h) = held(&mut state, conn, id) {
        h.local += 1;
        h.server += 1;
    }
}

/// Records a new proxy instance of `id` if this process already holds a
/// server reference to it; false if it must attach first.
pub fn add_instance(conn: &Connection, id: ObjectId) -> bool {
    let mut state = lock_client();
    match held(&mut state, conn, id) {
        Some(h) if h.server > 0 && h.local > 0 => {
            h.local += 1;
            true
        }
        _ => false,
    }
}

/// Records a new proxy instance that takes over a reference the server
/// added with a response (see [`with_prerefs`]).
fn adopt_instance(conn: &Connection, id: ObjectId) {
    let mut state = lock_client();
    if let Some(h) = held(&mut state, conn, id) {
        h.local += 1;
    }
}

/// Records references the server added for this connection with a response.
fn add_server_refs(conn: &Connection, ids: &[ObjectId]) {
    let mut state = lock_client();
    for id in ids {
        if let Some(h) = held(&mut state, conn, *id) {
            h.server += 1;
        }
    }
}

/// Releases the server references of objects no live proxy of this process uses.
fn settle(conn: &Connection, ids: &[ObjectId]) {
    let mut to_release = Vec::new();
    {
        let mut state = lock_client();
        let Some(entry) = state.conns.get_mut(&conn.server) else {
            return;
        };
        for id in ids {
            if let Some(h) = entry.refs.get(id)
                && h.local == 0
            {
                to_release.push((*id, h.server));
                entry.refs.remove(id);
            }
        }
    }
    for (id, count) in to_release {
        release_on(conn, id, count);
    }
}

/// Drops `count` references of this connection to `object` in the server.
pub fn release_on(conn: &Connection, object: ObjectId, count: u64) {
    if count == 0 || conn.is_gone() {
        return;
    }
    if let Err(e) = conn.call(&Request::Release { object, count }) {
        tracing::debug!(object, "cannot release a managed object: {e}");
    }
}

/// Drops one proxy instance of `id` made on `conn`; the last one releases
/// the server's references.
pub fn drop_instance(conn: &Connection, id: ObjectId) {
    let (conn, count) = {
        let mut state = lock_client();
        let Some(entry) = state.conns.get_mut(&conn.server) else {
            return;
        };
        // A proxy of a connection that broke and was replaced: the server
        // dropped its references with it. (A forked child's inherited
        // proxies name their parent's connection and count on the child's.)
        if conn.is_ours() && !std::ptr::eq(Arc::as_ptr(&entry.conn), conn) {
            return;
        }
        let Some(h) = entry.refs.get_mut(&id) else {
            return;
        };
        h.local = h.local.saturating_sub(1);
        if h.local > 0 {
            return;
        }
        let count = h.server;
        entry.refs.remove(&id);
        (entry.conn.clone(), count)
    };
    release_on(&conn, id, count);
}

/// References the server added with one response, for the proxies decoded from it.
struct Prerefs {
    server: ServerAddress,
    available: Vec<ObjectId>,
}

thread_local! {
    static PREREFS: std::cell::RefCell<Option<Prerefs>> = const { std::cell::RefCell::new(None) };
}

/// Runs `decode` (which decodes values a response carried) with the
/// references the server added for `refs` available to the proxies inside;
/// whatever no proxy took is released.
pub fn with_prerefs<R>(conn: &Connection, refs: &[ObjectId], decode: impl FnOnce() -> R) -> R {
    if refs.is_empty() {
        return decode();
    }
    add_server_refs(conn, refs);
    let previous = PREREFS.with(|p| {
        p.borrow_mut().replace(Prerefs {
            server: conn.server,
            available: refs.to_vec(),
        })
    });
    let out = decode();
    PREREFS.with(|p| *p.borrow_mut() = previous);
    settle(conn, refs);
    out
}

/// Takes one reference the current response added for `id`, if any.
pub fn take_preref(server: &ServerAddress, id: ObjectId) -> bool {
    PREREFS.with(|p| {
        let mut p = p.borrow_mut();
        let Some(pre) = p.as_mut().filter(|pre| pre.server == *server) else {
            return false;
        };
        match pre.available.iter().position(|x| *x == id) {
            Some(i) => {
                pre.available.swap_remove(i);
                true
            }
            None => false,
        }
    })
}

/// Records an adopted preref on `conn` (see [`take_preref`]).
pub fn adopt(conn: &Connection, id: ObjectId) {
    adopt_instance(conn, id);
}

/// Objects of one server that values being encoded refer to.
struct Collector {
    /// The server that will store the value (`None`: no manager server, a
    /// Redis container).
    server: Option<ServerAddress>,
    /// Whether the value is stored for as long as anyone likes (a container
    /// entry: a proxy of another server is refused) or until one reader
    /// takes it (a queue item: such a proxy travels pinned, as in a message).
    stored: bool,
    refs: Vec<ObjectId>,
}

thread_local! {
    static COLLECT: std::cell::RefCell<Option<Collector>> = const { std::cell::RefCell::new(None) };
}

/// Runs `encode` (which encodes a value about to be stored by `server`:
/// `stored`, a container entry; else a queue item, kept until one reader
/// takes it) and returns the objects of `server` that the value holds
/// proxies to.
pub fn collecting<R>(
    server: &ServerAddress,
    stored: bool,
    encode: impl FnOnce() -> R,
) -> (R, Vec<ObjectId>) {
    let collector = Collector {
        server: Some(*server),
        stored,
        refs: Vec::new(),
    };
    let (out, collected) = crate::handle::scoped(&COLLECT, Some(collector), encode);
    (out, collected.flatten().map(|c| c.refs).unwrap_or_default())
}

/// Runs `encode` (which encodes a value about to be stored where no
/// manager server keeps objects: a Redis container); a manager proxy
/// inside it is refused (see [`collect`]).
pub fn storing_outside<R>(encode: impl FnOnce() -> R) -> R {
    let collector = Collector {
        server: None,
        stored: true,
        refs: Vec::new(),
    };
    crate::handle::scoped(&COLLECT, Some(collector), encode).0
}

/// If a value for `server` is being encoded, records that it refers to `id`
/// (`Ok(true)`: the server will keep the object while it stores the value;
/// `Ok(false)`: the proxy travels as in a message, pinned until its first
/// reader takes it over).
///
/// A container entry of another server (or outside any, in Redis) cannot
/// hold a proxy of `server`: nothing would keep its object while it is
/// stored (the pin ends with its first reader, or after `PIN_TIMEOUT`),
/// so the object would be freed under the container. That is an error.
pub fn collect(server: &ServerAddress, id: ObjectId) -> Result<bool> {
    COLLECT.with(|c| match c.borrow_mut().as_mut() {
        None => Ok(false),
        Some(col) if col.server == Some(*server) => {
            col.refs.push(id);
            Ok(true)
        }
        Some(col) if !col.stored => Ok(false),
        Some(col) => Err(Error::InvalidArgument(format!(
            "a proxy of the manager at {server} cannot be stored in {}: a container keeps \
             the objects of its own manager only (store the proxy in a container of that \
             manager, or store the value itself)",
            match &col.server {
                Some(other) => format!("a container of the manager at {other}"),
                None => "a Redis container".into(),
            }
        ))),
    })
}

thread_local! {
    /// Set while this thread forks a process that will not use proxies (a
    /// manager server): nothing is pinned for it.
    static FORKING_SERVER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `start` (which forks a manager server) without pinning this
/// process's objects for the child, which never uses them.
pub fn forking_server<R>(start: impl FnOnce() -> R) -> R {
    FORKING_SERVER.with(|f| f.set(true));
    let out = start();
    FORKING_SERVER.with(|f| f.set(false));
    out
}

/// How long pinning a server's objects for a fork may take, connecting
/// included (the fork, and the process's other manager calls, wait for it).
const FORK_PIN_WAIT: Duration = Duration::from_secs(5);
/// A failed pin that took this long stalled its fork.
const FORK_PIN_STALL: Duration = Duration::from_secs(1);
/// How long forks skip pinning for a server whose pin stalled a fork.
const FORK_PIN_BACKOFF: Duration = Duration::from_secs(60);

/// Pins `ids` for a fork, on an idle connection of `entry` (opened if there
/// is none) and with a deadline: the fork hook holds the process's client
/// lock, so it must neither wait behind a call on the shared connection nor
/// wait forever on a server that stopped answering. Returns the token and
/// the connection that took it (which names the child after the fork).
fn pin_for_fork(
    server: &ServerAddress,
    entry: &mut Entry,
    ids: Vec<ObjectId>,
) -> Result<(u64, Connection)> {
    let started = Instant::now();
    // A failure that took long held the fork up: do not let the next forks
    // wait for it too (a quick one, a server found gone, costs them nothing).
    let stalled = |entry: &mut Entry, e: Error| {
        if started.elapsed() >= FORK_PIN_STALL {
            entry.pins_stalled = Some(Instant::now() + FORK_PIN_BACKOFF);
        }
        e
    };
    // The fork waits for this with the process's client lock held: a server
    // that cannot take a new connection now (out of descriptors, say) must
    // not hold every other manager call of the process up for long.
    let deadline = Deadline::after(FORK_PIN_WAIT);
    let conn = match entry.spare.pop() {
        Some(c) => c,
        None => Connection::open_within(server, deadline).map_err(|e| stalled(entry, e))?,
    };
    let token = conn
        .call_within(&Request::PinMany { objects: ids }, deadline)
        .and_then(|r| match r.get()? {
            ArchivedResponse::Token(t) => Ok(t.to_native()),
            _ => Err(unexpected()),
        });
    let token = match token {
        Ok(t) => {
            entry.pins_stalled = None;
            t
        }
        Err(e) => return Err(stalled(entry, e)),
    };
    Ok((token, conn))
}

/// Tells a local server that child process `pid` is to claim pin `token`,
/// which `conn` took: the server then drops the pin as soon as that process
/// ends without claiming it. A TCP server is not told (its clients' pids
/// are not its host's); a failure only leaves the pin to its timeout.
pub fn name_claimant(conn: &Connection, token: u64, pid: i32) {
    if !matches!(conn.server, ServerAddress::Local(_)) || conn.is_gone() {
        return;
    }
    let named = conn.call_within(
        &Request::NameClaimant { token, pid },
        Deadline::after(FORK_PIN_WAIT),
    );
    if let Err(e) = named.and_then(|r| r.get().map(drop)) {
        tracing::debug!(server = %conn.server, "cannot name a child to its manager: {e}");
    }
}

/// Keeps `conn` for the next wait or fork, if it is usable and there is room.
fn keep_spare(entry: &mut Entry, conn: Connection) {
    if !conn.is_gone() && entry.spare.len() < SPARE_KEPT {
        entry.spare.push(conn);
    }
}

/// The fork hook: pins in the parent, takes over in the child.
struct ForkPins;

struct Pinned {
    guard: MutexGuard<'static, ClientState>,
    /// Each server's pin token, with the connection that took it.
    pins: Vec<(ServerAddress, u64, Connection)>,
    /// The known authkeys and message limits, held across the fork.
    keys: MutexGuard<'static, HashMap<ServerAddress, Vec<u8>>>,
    maxes: MutexGuard<'static, HashMap<std::net::SocketAddr, usize>>,
}

impl Pinned {
    /// Gives the pinning connections back to their servers' spares.
    fn keep_connections(self, mut each: impl FnMut(u64, &Connection)) {
        let Pinned {
            mut guard,
            pins,
            keys,
            maxes,
        } = self;
        drop((keys, maxes));
        for (server, token, conn) in pins {
            each(token, &conn);
            if let Some(entry) = guard.conns.get_mut(&server) {
                keep_spare(entry, conn);
            }
        }
    }
}

impl ForkHook for ForkPins {
    fn prepare(&self) -> Box<dyn Any> {
        let mut guard = lock_client();
        let mut pins = Vec::new();
        let serving = FORKING_SERVER.with(|f| f.get());
        for (server, entry) in guard.conns.iter_mut().filter(|_| !serving) {
            let ids: Vec<ObjectId> = entry
                .refs
                .iter()
                .filter(|(_, h)| h.local > 0)
                .map(|(id, _)| *id)
                .collect();
            if ids.is_empty() || entry.conn.is_gone() {
                continue;
            }
            if entry
                .pins_stalled
                .is_some_and(|until| Instant::now() < until)
            {
                tracing::debug!(%server, "not pinning objects for a fork: the server stalled");
                continue;
            }
            match pin_for_fork(server, entry, ids) {
                Ok((t, conn)) => pins.push((*server, t, conn)),
                Err(e) => tracing::debug!("cannot pin managed objects for a fork: {e}"),
            }
        }
        // Taken last: pinning above may open connections, which read them.
        let (keys, maxes) = (AUTHKEYS.lock(), MAX_MESSAGES.lock());
        Box::new(Pinned {
            guard,
            pins,
            keys,
            maxes,
        })
    }

    fn parent(&self, state: Box<dyn Any>) {
        if let Ok(pinned) = state.downcast::<Pinned>() {
            pinned.keep_connections(|_, _| {});
        }
    }

    /// Names the child to each local server that pinned objects for it, so
    /// that a child that dies before it claims them (killed at once, say)
    /// does not keep them for [`PIN_TIMEOUT`](crate::manager::table::PIN_TIMEOUT).
    fn parent_of(&self, state: Box<dyn Any>, child: i32) {
        let Ok(pinned) = state.downcast::<Pinned>() else {
            return;
        };
        pinned.keep_connections(|token, conn| name_claimant(conn, token, child));
    }

    fn child(&self, state: Box<dyn Any>) {
        let Ok(pinned) = state.downcast::<Pinned>() else {
            return;
        };
        let Pinned {
            mut guard,
            pins,
            keys,
            maxes,
        } = *pinned;
        // Reconnecting below reads them.
        drop((keys, maxes));
        guard.pid = sys::process::getpid();
        let inherited = std::mem::take(&mut guard.conns);
        for (server, mut entry) in inherited {
            detach_inherited(entry.conn.tcp_fd);
            entry
                .waiting
                .drain(..)
                .for_each(|fd| detach_inherited(Some(fd)));
            let token = pins
                .iter()
                .find(|(s, _, _)| *s == server)
                .map(|(_, t, _)| *t);
            entry.refs.retain(|_, h| h.local > 0);
            // The parent's idle connections stay the parent's (dropping our
            // copies only closes our descriptors).
            entry.spare.clear();
            let (Some(token), false) = (token, entry.refs.is_empty()) else {
                continue;
            };
            let conn = match Connection::open(&server) {
                Ok(c) => Arc::new(c),
                Err(e) => {
                    tracing::debug!("a forked child cannot reach its manager: {e}");
                    continue;
                }
            };
            let claimed: Vec<ObjectId> = conn
                .call(&Request::ClaimMany { token })
                .and_then(|r| match r.get()? {
                    crate::manager::protocol::ArchivedResponse::Objects(ids) => {
                        Ok(ids.iter().map(|i| i.to_native()).collect())
                    }
                    _ => Err(unexpected()),
                })
                .unwrap_or_default();
            for h in entry.refs.values_mut() {
                h.server = 0;
            }
            let mut release = Vec::new();
            for id in claimed {
                match entry.refs.get_mut(&id) {
                    Some(h) => h.server += 1,
                    None => release.push(id),
                }
            }
            for id in release {
                release_on(&conn, id, 1);
            }
            // Anything created between the pin and the fork: attach plainly.
            entry.refs.retain(|_, h| h.server > 0);
            entry.conn = conn;
            guard.conns.insert(server, entry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::{ServeOptions, Server};

    /// Regression: a thread waited for the shared connection for as long as
    /// another thread's call on it took, forever if the server never
    /// answered; and asking whether the connection broke waited as well.
    #[test]
    fn a_call_waits_for_the_shared_connection_only_so_long() {
        let server = Server::bind(0x5eed_0000_0000_0001, &ServeOptions::default()).unwrap();
        let address = ServerAddress::Local(server.local_address());
        let stop = server.shutdown_handle();
        let serving = std::thread::spawn(move || server.serve_forever());
        let conn = Connection::open(&address).unwrap();
        assert!(conn.call(&Request::NumberOfObjects).is_ok());
        {
            // Another call in progress (one the server does not answer).
            let _busy = conn.wire.try_lock().unwrap();
            assert!(!conn.is_gone(), "answered without waiting for the call");
            let waited = conn.exchange(
                &Request::NumberOfObjects,
                Duration::from_millis(50),
                Deadline::Never,
            );
            assert!(
                matches!(waited, Err(Error::Timeout(_))),
                "{:?}",
                waited.err()
            );
        }
        assert!(conn.call(&Request::NumberOfObjects).is_ok(), "still usable");
        drop(conn);
        stop.shutdown();
        serving.join().unwrap();
    }
}
