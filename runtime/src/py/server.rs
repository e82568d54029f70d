//! The Python listener: CPython's manager protocol on a TCP port of its own,
//! serving a server's named queues to `BaseManager` clients.
//!
//! Each connection runs on a thread of its own. After the handshake
//! ([`crate::py::auth`]), its first request is a server-level call
//! (`dummy`, `create`, `incref`, `decref`, `number_of_objects`,
//! `debug_info`, `shutdown`), answered before the connection closes, as
//! CPython's server does; or `accept_connection`, after which it carries a
//! proxy's method calls `(ident, method, args, kwds)` until the client
//! closes it. Methods are looked up in a fixed table of the queue methods,
//! never by attribute.
//!
//! A blocking `get` waits first and takes the item only for a client that
//! is still connected; if the reply then cannot be sent, the item goes back
//! to the front of the queue. (CPython's own server takes the item, then
//! fails to send it to a worker that died while waiting: the task is lost.)

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

use crate::fork_sync::Mutex;

use crate::codec::Shareable;
use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::manager::frontend::{FrontQueue, QueueWait, Taken};
use crate::manager::gate::{Admission, Gate, GateLimits, Source, Ticket};
use crate::manager::protocol::{ObjectId, RemoteError};
use crate::manager::server::ServerState;
use crate::py::auth;
use crate::py::conn::PyConn;
use crate::py::pickle::{self, Limits, Payload, PickleError, PyException, PyExceptionKind as Exc};
use crate::py::value::Value;
use crate::sys;

/// How often the accept loop checks whether the server stops.
const STOP_CHECK: Duration = Duration::from_millis(100);
/// Connections at once (each holds a thread); more are closed at once.
const MAX_CONNECTIONS: usize = 4096;
/// Keepalive, as for the native TCP transport: a vanished host's
/// connection ends within about 25 s.
const KEEPALIVE: (Duration, Duration, u32) = (Duration::from_secs(10), Duration::from_secs(5), 3);

/// The methods of `queue.Queue` a CPython client's proxy exposes, in the
/// order CPython's server lists them (`public_methods`, sorted).
pub const QUEUE_METHODS: [&str; 9] = [
    "empty",
    "full",
    "get",
    "get_nowait",
    "join",
    "put",
    "put_nowait",
    "qsize",
    "task_done",
];

/// A queue served to Python clients: its name (the typeid they ask for)
/// and its maxsize (0: unbounded).
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(crate = rkyv)]
pub struct PythonQueue {
    /// The typeid (`get_task_queue`).
    pub name: String,
    /// The most items it holds (0: no limit).
    pub maxsize: usize,
}

/// How a server serves Python clients (CPython's `BaseManager`).
#[derive(Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(crate = rkyv)]
pub struct PythonOptions {
    /// Where the Python listener listens (port 0 picks one).
    pub address: SocketAddr,
    /// The authkey Python clients prove they know (the manager's own by default).
    pub authkey: Vec<u8>,
    /// The queues served, by typeid.
    pub queues: Vec<PythonQueue>,
    /// Accept HMAC-MD5 in the handshake (what Python 3.11 speaks).
    pub allow_md5: bool,
    /// The longest request accepted, in bytes.
    pub max_message: u64,
    /// How long a new client has to complete the handshake, in milliseconds.
    pub handshake_ms: u64,
}

impl std::fmt::Debug for PythonOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PythonOptions")
            .field("address", &self.address)
            .field("queues", &self.queues)
            .field("allow_md5", &self.allow_md5)
            .field("max_message", &self.max_message)
            .finish_non_exhaustive()
    }
}

impl PythonOptions {
    /// Serve Python clients at `address`, MD5 allowed, 64 MiB requests,
    /// a 10 s handshake, no queues yet.
    pub fn new(address: SocketAddr) -> PythonOptions {
        PythonOptions {
            address,
            authkey: Vec::new(),
            queues: Vec::new(),
            allow_md5: true,
            max_message: crate::wire::frame::DEFAULT_MAX_FRAME as u64,
            handshake_ms: crate::wire::auth::DEFAULT_HANDSHAKE_TIMEOUT.as_millis() as u64,
        }
    }

    /// Serves an unbounded queue as typeid `name`.
    pub fn queue(self, name: impl Into<String>) -> PythonOptions {
        self.queue_with_maxsize(name, 0)
    }

    /// Serves a queue of at most `maxsize` items (0: no limit) as typeid `name`.
    pub fn queue_with_maxsize(mut self, name: impl Into<String>, maxsize: usize) -> PythonOptions {
        let name = name.into();
        self.queues.retain(|q| q.name != name);
        self.queues.push(PythonQueue { name, maxsize });
        self
    }

    /// Whether Python 3.11 clients (HMAC-MD5) are accepted (yes by default).
    pub fn allow_md5(mut self, allow: bool) -> PythonOptions {
        self.allow_md5 = allow;
        self
    }

    /// The authkey (the manager's own unless set).
    pub fn authkey(mut self, key: impl AsRef<[u8]>) -> PythonOptions {
        self.authkey = key.as_ref().to_vec();
        self
    }

    /// The longest request accepted (64 MiB by default); a longer one
    /// closes the connection.
    pub fn max_message(mut self, bytes: usize) -> PythonOptions {
        self.max_message = bytes as u64;
        self
    }

    fn limit(&self) -> usize {
        usize::try_from(self.max_message).unwrap_or(usize::MAX)
    }
}

/// One queue as Python clients see it.
struct Served {
    typeid: String,
    /// What `create` returns and proxies send back.
    ident: String,
    queue: FrontQueue,
    /// Python proxies' references (`incref` / `decref`); the queue lives
    /// as long as the server whatever this says.
    refcount: AtomicI64,
    /// Python clients waiting in `get` now.
    waiting_getters: AtomicUsize,
}

struct Shared {
    options: PythonOptions,
    queues: Vec<Served>,
    state: Arc<ServerState>,
    /// Duplicates of the connections' sockets, to cut them on shutdown.
    conns: Mutex<HashMap<u64, TcpStream>>,
    /// Handshakes in flight, in all and from one address, and addresses
    /// that kept failing them: as for the native TCP transport.
    gate: Arc<Gate>,
}

/// A bound Python listener, before it serves.
pub(crate) struct PyListener {
    listener: TcpListener,
    bound: SocketAddr,
    options: PythonOptions,
    queues: Vec<Served>,
}

impl PyListener {
    pub fn bind(options: &PythonOptions) -> Result<PyListener> {
        if options.authkey.is_empty() {
            return Err(Error::InvalidArgument(
                "serving Python clients needs a non-empty authkey".into(),
            ));
        }
        let listener = TcpListener::bind(options.address)
            .map_err(|e| Error::cannot_listen(&options.address, e))?;
        let bound = listener.local_addr()?;
        Ok(PyListener {
            listener,
            bound,
            options: options.clone(),
            queues: Vec::new(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.bound
    }

    /// Serves the queue `id` of `state` to Python clients as `typeid`.
    pub fn add_queue(
        &mut self,
        state: &Arc<ServerState>,
        typeid: &str,
        id: ObjectId,
    ) -> Result<()> {
        let queue = FrontQueue::open(state, id)?;
        self.queues.retain(|q| q.typeid != typeid);
        self.queues.push(Served {
            typeid: typeid.to_string(),
            ident: format!("{id:x}"),
            queue,
            refcount: AtomicI64::new(0),
            waiting_getters: AtomicUsize::new(0),
        });
        Ok(())
    }

    /// Accepts Python clients until the server stops, one thread each;
    /// returns once every connection thread ended.
    pub fn accept_loop(self, state: Arc<ServerState>) {
        let shared = Arc::new(Shared {
            options: self.options,
            queues: self.queues,
            state,
            conns: Mutex::new(HashMap::new()),
            gate: Gate::new("Python", GateLimits::TCP),
        });
        let mut threads: Vec<std::thread::JoinHandle<()>> = Vec::new();
        while !shared.state.stopping() {
            threads.retain(|t| !t.is_finished());
            let ready = sys::fd::poll(
                &[self.listener.as_fd()],
                sys::fd::Interest::Read,
                Some(STOP_CHECK),
            );
            if !matches!(ready, Ok(ref r) if !r.is_empty()) {
                continue;
            }
            let (stream, peer) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::debug!("Python listener accept failed: {e}");
                    // A persistent failure (out of descriptors) must not spin.
                    std::thread::sleep(STOP_CHECK);
                    continue;
                }
            };
            if threads.len() >= MAX_CONNECTIONS {
                tracing::warn!("Python listener is at its connection limit; closing a new client");
                continue;
            }
            // Over its address's share of handshakes, or blocked for
            // guessing: closed at once (CPython's client has no retry
            // message to be told), and other addresses still get in.
            let ticket = match shared.gate.admit(Source::Ip(peer.ip())) {
                Admission::Go(t) => t,
                Admission::Busy | Admission::Blocked => continue,
            };
            let s = shared.clone();
            let spawned = std::thread::Builder::new()
                .name("multiproc-py-conn".into())
                .spawn(move || serve_connection(&s, stream, ticket));
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => tracing::warn!("Python listener cannot start a connection thread: {e}"),
            }
        }
        for stream in shared.conns.lock().values() {
            // Wakes the connection's thread from its read.
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        for t in threads {
            let _ = t.join();
        }
    }
}

/// A reply to one request.
enum Reply {
    Return(Value),
    Error(PyException),
    Traceback(String),
}

/// What a request leads to.
enum Outcome<'a> {
    Reply(Reply),
    /// An item taken for the client: send it, or put it back. `waited`:
    /// the item came after a wait (check the client is still there first).
    Deliver(&'a Served, Taken, bool),
    /// The client left (or the server stops) while the request waited.
    Close,
}

fn error(kind: Exc, message: impl Into<String>) -> Reply {
    Reply::Error(PyException::new(kind, message))
}

fn traceback(message: impl std::fmt::Display) -> Reply {
    // Shown by the client's RemoteError; no paths, no server internals.
    Reply::Traceback(format!("multiproc server: {message}\n"))
}

fn refused(e: PickleError) -> Reply {
    match e {
        PickleError::Unsupported(m) | PickleError::Refused(m) => error(Exc::TypeError, m),
        PickleError::IntTooLarge(m) => error(Exc::OverflowError, m),
        PickleError::TooLarge(m) => error(Exc::ValueError, m),
        PickleError::Malformed(m) => traceback(format!("refused a malformed request: {m}")),
    }
}

/// A request: `(ident, methodname, args, kwds)`.
struct Request {
    ident: Value,
    method: String,
    args: Vec<Value>,
    kwds: Vec<(String, Value)>,
}

fn parse_request(bytes: &[u8]) -> std::result::Result<Request, Reply> {
    let value = pickle::loads(bytes, &Limits::default()).map_err(refused)?;
    let shape = || traceback("a request must be (ident, methodname, args, kwds)");
    let items = match value {
        Value::Tuple(items) | Value::List(items) if items.len() == 4 => items,
        _ => return Err(shape()),
    };
    let mut it = items.into_iter();
    let (Some(ident), Some(Value::Str(method)), Some(args), Some(kwds)) =
        (it.next(), it.next(), it.next(), it.next())
    else {
        return Err(shape());
    };
    let args = match args {
        Value::Tuple(a) | Value::List(a) => a,
        _ => return Err(shape()),
    };
    let kwds = match kwds {
        Value::Dict(pairs) => pairs
            .into_iter()
            .map(|(k, v)| match k {
                Value::Str(k) => Ok((k, v)),
                _ => Err(error(Exc::TypeError, "keywords must be strings")),
            })
            .collect::<std::result::Result<Vec<_>, _>>()?,
        _ => return Err(shape()),
    };
    Ok(Request {
        ident,
        method,
        args,
        kwds,
    })
}

/// Binds `args` and `kwds` to `names` (the first `required` mandatory), as
/// Python binds a call.
fn bind(
    req: &Request,
    names: &[&str],
    required: usize,
) -> std::result::Result<Vec<Option<Value>>, Reply> {
    let method = &req.method;
    if req.args.len() > names.len() {
        return Err(error(
            Exc::TypeError,
            format!(
                "{method}() takes {} positional arguments but {} were given",
                names.len(),
                req.args.len()
            ),
        ));
    }
    let mut bound: Vec<Option<Value>> = vec![None; names.len()];
    for (slot, arg) in bound.iter_mut().zip(&req.args) {
        *slot = Some(arg.clone());
    }
    for (k, v) in &req.kwds {
        let Some(i) = names.iter().position(|n| n == k) else {
            return Err(error(
                Exc::TypeError,
                format!("{method}() got an unexpected keyword argument '{k}'"),
            ));
        };
        if bound[i].is_some() {
            return Err(error(
                Exc::TypeError,
                format!("{method}() got multiple values for argument '{k}'"),
            ));
        }
        bound[i] = Some(v.clone());
    }
    if let Some(missing) = (0..required).find(|i| bound[*i].is_none()) {
        return Err(error(
            Exc::TypeError,
            format!(
                "{method}() missing 1 required positional argument: '{}'",
                names[missing]
            ),
        ));
    }
    Ok(bound)
}

/// The deadline of `block` and `timeout` as `queue.Queue` reads them.
fn deadline_of(
    block: Option<&Value>,
    timeout: Option<&Value>,
) -> std::result::Result<Deadline, Reply> {
    if !block.is_none_or(Value::is_truthy) {
        return Ok(Deadline::Now);
    }
    let seconds = match timeout {
        None | Some(Value::None) => return Ok(Deadline::Never),
        Some(Value::Int(i)) => *i as f64,
        Some(Value::Bool(b)) => f64::from(u8::from(*b)),
        Some(Value::Float(f)) => *f,
        Some(other) => {
            return Err(error(
                Exc::TypeError,
                format!(
                    "'<' not supported between instances of '{}' and 'int'",
                    other.type_name()
                ),
            ));
        }
    };
    if seconds.is_nan() || seconds < 0.0 {
        return Err(error(
            Exc::ValueError,
            "'timeout' must be a non-negative number",
        ));
    }
    // A timeout too long to represent waits for ever.
    Ok(Duration::try_from_secs_f64(seconds).map_or(Deadline::Never, Deadline::after))
}

fn remote_failure(e: RemoteError) -> Reply {
    traceback(format!("{e:?}"))
}

impl Shared {
    fn served(&self, ident: &Value) -> Option<&Served> {
        let Value::Str(ident) = ident else {
            return None;
        };
        self.queues.iter().find(|q| &q.ident == ident)
    }

    fn by_typeid(&self, typeid: &str) -> Option<&Served> {
        self.queues.iter().find(|q| q.typeid == typeid)
    }

    fn typeids(&self) -> String {
        let names: Vec<String> = self
            .queues
            .iter()
            .map(|q| format!("'{}'", q.typeid))
            .collect();
        names.join(", ")
    }

    /// A server-level call (the first request of a connection).
    fn server_call(&self, req: &Request) -> Reply {
        let only_ident = |req: &Request| -> std::result::Result<&Served, Reply> {
            let args = bind(req, &["ident"], 1)?;
            let ident = args[0].as_ref().unwrap_or(&Value::None);
            self.served(ident)
                .ok_or_else(|| traceback(format!("KeyError: no object with ident {ident:?}")))
        };
        match req.method.as_str() {
            "dummy" => Reply::Return(Value::None),
            "create" => {
                let Some(Value::Str(typeid)) = req.args.first() else {
                    return traceback("TypeError: create() needs a typeid");
                };
                let Some(q) = self.by_typeid(typeid) else {
                    return traceback(format!(
                        "KeyError: '{typeid}' is not a typeid this server serves (it serves {})",
                        self.typeids()
                    ));
                };
                if req.args.len() > 1 || !req.kwds.is_empty() {
                    return traceback(format!(
                        "TypeError: '{typeid}' takes no arguments (it is a queue the server owns)"
                    ));
                }
                q.refcount.fetch_add(1, Ordering::SeqCst);
                let exposed = QUEUE_METHODS.iter().map(|m| Value::from(*m)).collect();
                Reply::Return(Value::Tuple(vec![
                    Value::Str(q.ident.clone()),
                    Value::Tuple(exposed),
                ]))
            }
            "incref" => match only_ident(req) {
                Ok(q) => {
                    q.refcount.fetch_add(1, Ordering::SeqCst);
                    Reply::Return(Value::None)
                }
                Err(r) => r,
            },
            "decref" => match only_ident(req) {
                Ok(q) => {
                    let dropped =
                        q.refcount
                            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                                (n > 0).then_some(n - 1)
                            });
                    match dropped {
                        Ok(_) => Reply::Return(Value::None),
                        Err(_) => traceback(format!(
                            "AssertionError: ident {} has refcount 0, not 1+",
                            q.ident
                        )),
                    }
                }
                Err(r) => r,
            },
            "number_of_objects" => {
                let n = self
                    .queues
                    .iter()
                    .filter(|q| q.refcount.load(Ordering::SeqCst) > 0)
                    .count();
                Reply::Return(Value::Int(n as i64))
            }
            "debug_info" => Reply::Return(Value::Str(self.debug_info())),
            "shutdown" => Reply::Return(Value::None),
            "accept_connection" => Reply::Return(Value::None),
            other => traceback(format!("AssertionError: {other:?} unrecognized")),
        }
    }

    /// CPython's format, one entry per queue, plus its length, the Python
    /// clients in a `get` on it now, and the clients (Rust or Python)
    /// asleep in a wait on it now.
    fn debug_info(&self) -> String {
        let entries: Vec<String> = self
            .queues
            .iter()
            .map(|q| {
                let len = q.queue.status().map_or(0, |s| s.0);
                format!(
                    "  {}:       refcount={}\n    {} (queue): items={} python_getters={} sleepers={}",
                    q.ident,
                    q.refcount.load(Ordering::SeqCst),
                    q.typeid,
                    len,
                    q.waiting_getters.load(Ordering::SeqCst),
                    q.queue.sleepers(),
                )
            })
            .collect();
        entries.join("\n")
    }

    /// A proxy's method call on an accepted connection.
    fn object_call<'a>(
        &'a self,
        req: &Request,
        conn_id: u64,
        gone: &dyn Fn() -> bool,
    ) -> Outcome<'a> {
        let Some(q) = self.served(&req.ident) else {
            return Outcome::Reply(traceback(format!(
                "KeyError: no object with ident {:?}",
                req.ident
            )));
        };
        match self.queue_call(q, req, conn_id, gone) {
            Ok(outcome) => outcome,
            Err(reply) => Outcome::Reply(reply),
        }
    }

    fn queue_call<'a>(
        &'a self,
        q: &'a Served,
        req: &Request,
        conn_id: u64,
        gone: &dyn Fn() -> bool,
    ) -> std::result::Result<Outcome<'a>, Reply> {
        let reply = |r| Ok(Outcome::Reply(r));
        let status = || q.queue.status().map_err(remote_failure);
        match req.method.as_str() {
            "put" | "put_nowait" => {
                let (item, deadline) = if req.method == "put" {
                    let a = bind(req, &["item", "block", "timeout"], 1)?;
                    (a[0].clone(), deadline_of(a[1].as_ref(), a[2].as_ref())?)
                } else {
                    let a = bind(req, &["item"], 1)?;
                    (a[0].clone(), Deadline::Now)
                };
                let item = item.unwrap_or(Value::None);
                let mut bytes: Box<[u8]> = match item.encode() {
                    Ok(b) => Box::from(&b[..]),
                    Err(e) => return Err(error(Exc::TypeError, e.to_string())),
                };
                loop {
                    match q.queue.put(bytes).map_err(remote_failure)? {
                        Ok(()) => return reply(Reply::Return(Value::None)),
                        Err(back) => bytes = back,
                    }
                    match q.queue.wait(QueueWait::NotFull, deadline, conn_id, gone) {
                        Ok(true) => {}
                        Ok(false) => return reply(Reply::Error(PyException::bare(Exc::Full))),
                        Err(_) => return Ok(Outcome::Close),
                    }
                }
            }
            "get" | "get_nowait" => {
                let deadline = if req.method == "get" {
                    let a = bind(req, &["block", "timeout"], 0)?;
                    deadline_of(a[0].as_ref(), a[1].as_ref())?
                } else {
                    bind(req, &[], 0)?;
                    Deadline::Now
                };
                q.waiting_getters.fetch_add(1, Ordering::SeqCst);
                let got = self.take_for_live_client(q, deadline, conn_id, gone);
                q.waiting_getters.fetch_sub(1, Ordering::SeqCst);
                got
            }
            "qsize" => {
                bind(req, &[], 0)?;
                reply(Reply::Return(Value::Int(status()?.0 as i64)))
            }
            "empty" => {
                bind(req, &[], 0)?;
                reply(Reply::Return(Value::Bool(status()?.0 == 0)))
            }
            "full" => {
                bind(req, &[], 0)?;
                let (len, max, _) = status()?;
                reply(Reply::Return(Value::Bool(max > 0 && len >= max)))
            }
            "task_done" => {
                bind(req, &[], 0)?;
                match q.queue.task_done() {
                    Ok(()) => reply(Reply::Return(Value::None)),
                    Err(RemoteError::InvalidState(_)) => {
                        reply(error(Exc::ValueError, "task_done() called too many times"))
                    }
                    Err(e) => reply(remote_failure(e)),
                }
            }
            "join" => {
                bind(req, &[], 0)?;
                match q
                    .queue
                    .wait(QueueWait::AllDone, Deadline::Never, conn_id, gone)
                {
                    Ok(_) => reply(Reply::Return(Value::None)),
                    Err(_) => Ok(Outcome::Close),
                }
            }
            "__repr__" | "__str__" => reply(Reply::Return(Value::Str(format!(
                "<multiproc queue '{}' ({} items)>",
                q.typeid,
                status()?.0
            )))),
            other => reply(traceback(format!(
                "AttributeError: method {other:?} of a queue is not in exposed={:?}",
                QUEUE_METHODS
            ))),
        }
    }

    /// Waits for an item and takes it only while the client is still
    /// there (the caller sends it, or puts it back).
    fn take_for_live_client<'a>(
        &'a self,
        q: &'a Served,
        deadline: Deadline,
        conn_id: u64,
        gone: &dyn Fn() -> bool,
    ) -> std::result::Result<Outcome<'a>, Reply> {
        // An item there now goes to the client that just asked for it.
        if let Some(item) = q.queue.take().map_err(remote_failure)? {
            return Ok(Outcome::Deliver(q, item, false));
        }
        loop {
            match q.queue.wait(QueueWait::NotEmpty, deadline, conn_id, gone) {
                Ok(true) => {}
                Ok(false) => {
                    return Ok(Outcome::Reply(Reply::Error(PyException::bare(Exc::Empty))));
                }
                Err(_) => return Ok(Outcome::Close),
            }
            if gone() || self.state.stopping() {
                return Ok(Outcome::Close);
            }
            match q.queue.take().map_err(remote_failure)? {
                Some(item) => return Ok(Outcome::Deliver(q, item, true)),
                // Another getter took it first.
                None if deadline.expired() => {
                    return Ok(Outcome::Reply(Reply::Error(PyException::bare(Exc::Empty))));
                }
                None => {}
            }
        }
    }
}

/// Whether the client hung up (a Python client sends nothing while it
/// waits for a reply, so a readable socket means it closed or died).
fn client_left(stream: &TcpStream) -> bool {
    matches!(
        sys::fd::poll(&[stream.as_fd()], sys::fd::Interest::Read, Some(Duration::ZERO)),
        Ok(ready) if !ready.is_empty()
    )
}

/// Pickles and sends `reply`; a value that cannot be pickled is sent as
/// `#UNSERIALIZABLE` (the client's `RemoteError`).
fn send_reply(conn: &mut PyConn, buf: &mut Vec<u8>, reply: &Reply) -> Result<()> {
    let pickled = match reply {
        Reply::Return(v) => pickle::dumps_reply(buf, "#RETURN", Payload::Value(v)),
        Reply::Error(e) => pickle::dumps_reply(buf, "#ERROR", Payload::Exception(e)),
        Reply::Traceback(t) => {
            pickle::dumps_reply(buf, "#TRACEBACK", Payload::Value(&Value::Str(t.clone())))
        }
    };
    if let Err(e) = pickled {
        let text = Value::Str(format!("{e}\n"));
        pickle::dumps_reply(buf, "#UNSERIALIZABLE", Payload::Value(&text))?;
    }
    conn.send(buf)
}

fn serve_connection(shared: &Shared, stream: TcpStream, ticket: Ticket) {
    let _ = stream.set_nodelay(true);
    let conn_id = shared.state.connection_id();
    let mut conn = PyConn::new(stream);
    let deadline = Deadline::after(Duration::from_millis(shared.options.handshake_ms));
    let handshake = auth::server_handshake(
        &mut conn,
        &shared.options.authkey,
        shared.options.allow_md5,
        deadline,
    );
    if let Err(e) = handshake {
        // Counted against its address (logged there, rate limited).
        ticket.handshake_failed(&e);
        return;
    }
    drop(ticket);
    if conn.set_deadline(Deadline::Never).is_err() {
        return;
    }
    let (idle, interval, count) = KEEPALIVE;
    if let Err(e) = sys::socket::set_tcp_liveness(conn.fd(), idle, interval, count) {
        tracing::debug!("cannot enable TCP keepalive: {e}");
    }
    let Ok(closer) = conn.stream().try_clone() else {
        return;
    };
    shared.conns.lock().insert(conn_id, closer);
    // Checked after registering: a shutdown before that is seen here, one
    // after it cuts the socket.
    if !shared.state.stopping() {
        serve_requests(shared, &mut conn, conn_id);
    }
    shared.conns.lock().remove(&conn_id);
}

fn serve_requests(shared: &Shared, conn: &mut PyConn, conn_id: u64) {
    let limit = shared.options.limit();
    let mut buf = Vec::new();
    let first = match conn.recv(limit) {
        Ok(m) => m,
        Err(e) => {
            tracing::debug!("Python client left before its request: {e}");
            return;
        }
    };
    let request = match parse_request(&first) {
        Ok(r) => r,
        Err(reply) => {
            let _ = send_reply(conn, &mut buf, &reply);
            return;
        }
    };
    let reply = shared.server_call(&request);
    if send_reply(conn, &mut buf, &reply).is_err() {
        return;
    }
    match (request.method.as_str(), &reply) {
        ("shutdown", Reply::Return(_)) => {
            tracing::info!("a Python client asked the server to shut down");
            shared.state.begin_shutdown();
            return;
        }
        ("accept_connection", Reply::Return(_)) => {}
        // Any other server-level call ends its connection, as in CPython.
        _ => return,
    }
    let Ok(watch) = conn.stream().try_clone() else {
        return;
    };
    let gone = || client_left(&watch);
    loop {
        let message = match conn.recv(limit) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!("Python connection ended: {e}");
                return;
            }
        };
        let outcome = match parse_request(&message) {
            Ok(req) => shared.object_call(&req, conn_id, &gone),
            Err(reply) => Outcome::Reply(reply),
        };
        drop(message);
        let sent = match outcome {
            Outcome::Reply(reply) => send_reply(conn, &mut buf, &reply),
            Outcome::Close => return,
            Outcome::Deliver(q, item, waited) => deliver(conn, &mut buf, q, item, waited, &gone),
        };
        if sent.is_err() {
            return;
        }
    }
}

/// Sends a taken item; puts it back at the front of its queue if it
/// cannot be sent (the client left). An item that came after a wait is
/// sent only if the client is still connected.
fn deliver(
    conn: &mut PyConn,
    buf: &mut Vec<u8>,
    q: &Served,
    item: Taken,
    waited: bool,
    gone: &dyn Fn() -> bool,
) -> Result<()> {
    let value = match Value::decode(item.bytes()) {
        Ok(v) => v,
        Err(e) => {
            // Not a value a Python client can take: it goes (logged), the
            // client is told.
            tracing::warn!(queue = %q.typeid, "dropped an item Python cannot read: {e}");
            q.queue.delivered(item);
            return send_reply(
                conn,
                buf,
                &traceback(format!("the item taken was unreadable: {e}")),
            );
        }
    };
    if let Err(e) = pickle::dumps_reply(buf, "#RETURN", Payload::Value(&value)) {
        tracing::warn!(queue = %q.typeid, "dropped an item Python cannot read: {e}");
        q.queue.delivered(item);
        return send_reply(
            conn,
            buf,
            &traceback(format!("the item taken cannot be sent: {e}")),
        );
    }
    let sent = if waited && gone() {
        Err(Error::Closed)
    } else {
        conn.send(buf)
    };
    match sent {
        Ok(()) => {
            q.queue.delivered(item);
            Ok(())
        }
        Err(e) => {
            if let Err(back) = q.queue.put_back(item) {
                tracing::warn!(queue = %q.typeid, "cannot put an undelivered item back: {back:?}");
            } else {
                tracing::debug!(queue = %q.typeid, "the client left; its item went back to the front");
            }
            Err(e)
        }
    }
}
