//! `BaseManager`: a manager served over TCP with an authkey (Python's
//! `multiprocessing.managers.BaseManager(address=…, authkey=…)`).
//!
//! The master registers named objects, which the server creates once when
//! it starts, and starts the server (in a child process with
//! [`BaseManager::start`], or in this process with
//! [`BaseManager::get_server`]). Workers on any host connect with the same
//! address and authkey and ask for the objects by name (example on
//! [`BaseManager`]).
//!
//! The registry: the server's first object is a dict from each name to the
//! object's id and type; `get` reads it and attaches, checking the type.
//!
//! This file is the client side. The server's start-up (the process it
//! runs in, the registry and the objects it makes before serving) is the
//! runtime's `manager::startup`.

use std::marker::PhantomData;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use multiproc_runtime::__internal::fingerprint_str;
use multiproc_runtime::__internal::fork_sync::Mutex;
use multiproc_runtime::__internal::sys;
use multiproc_runtime::manager::protocol::{ArchivedResponse, Blob, Call, ObjectId, Request};
use multiproc_runtime::manager::startup::{
    self, EXIT_TIMEOUT, FACTORY_BIT, Named, NamedEntry, REGISTRY, UserName,
};
use multiproc_runtime::manager::{
    Limits, ObjectKind, ServeOptions, ServerAddress, ShutdownHandle, TcpClient, TcpOptions,
};
use multiproc_runtime::manager::{RemoteObject, Server, USER_OBJECT_BIT, UserTypes};
use multiproc_runtime::py::{PythonOptions, Value};
use multiproc_runtime::{Error, Process, Result, Shareable, StartMethod};

use crate::client::{self, unexpected};
use crate::core::{ProxyCore, ProxyRepr, RemoteFlavor, TypeTag};
use crate::{DictProxy, ListProxy, NamespaceProxy};
use multiproc_runtime::{
    Barrier, BoundedSemaphore, Condition, ConditionLock, Event, JoinableQueue, Lock, Queue, RLock,
    Semaphore,
};

/// The server's registry of names, as a client reads it.
type Registry = DictProxy<String, NamedEntry>;

/// A proxy type a [`BaseManager`] can register by name.
///
/// Implemented for [`DictProxy`], [`ListProxy`], [`NamespaceProxy`],
/// [`Queue`], [`JoinableQueue`], [`Lock`], [`RLock`], [`Condition`] (over a
/// recursive lock of its own), [`Semaphore`], [`BoundedSemaphore`],
/// [`Event`] and [`Barrier`].
pub trait Registrable: Sized + Shareable {
    /// What the server needs to make one: a queue's maxsize, a semaphore's
    /// value, a barrier's [`Parties`]; `()` for the others.
    type Config;
    #[doc(hidden)]
    fn object_kind() -> ObjectKind;
    #[doc(hidden)]
    fn config_arg(config: &Self::Config) -> u64;
    #[doc(hidden)]
    fn type_tag() -> (u64, String);
    #[doc(hidden)]
    fn attach(repr: &ProxyRepr) -> Result<Self>;
}

fn attach_as<P: RemoteFlavor>(repr: &ProxyRepr) -> Result<P> {
    ProxyCore::from_repr(repr, P::remote_tag()).and_then(P::from_remote)
}

macro_rules! registrable {
    (impl<$($g:ident),*> for $ty:ty, $kind:expr, $config:ty, |$c:ident| $arg:expr) => {
        impl<$($g: Shareable),*> Registrable for $ty {
            type Config = $config;
            fn object_kind() -> ObjectKind {
                $kind
            }
            fn config_arg($c: &$config) -> u64 {
                $arg
            }
            fn type_tag() -> (u64, String) {
                let t = <$ty as RemoteFlavor>::remote_tag();
                (t.fingerprint, t.name)
            }
            fn attach(repr: &ProxyRepr) -> Result<Self> {
                attach_as::<$ty>(repr)
            }
        }
    };
}

registrable!(impl<K, V> for DictProxy<K, V>, ObjectKind::Dict, (), |_c| 0);
registrable!(impl<T> for ListProxy<T>, ObjectKind::List, (), |_c| 0);
registrable!(impl<> for NamespaceProxy, ObjectKind::Namespace, (), |_c| 0);
registrable!(impl<T> for Queue<T>, ObjectKind::Queue, usize, |maxsize| *maxsize as u64);
registrable!(impl<T> for JoinableQueue<T>, ObjectKind::Queue, usize, |maxsize| *maxsize as u64);
registrable!(impl<> for Lock, ObjectKind::Lock, (), |_c| 0);
registrable!(impl<> for RLock, ObjectKind::RLock, (), |_c| 0);
registrable!(impl<> for Condition, ObjectKind::Condition, (), |_c| 0);
registrable!(impl<> for Event, ObjectKind::Event, (), |_c| 0);
registrable!(impl<> for Semaphore, ObjectKind::Semaphore, SemaphoreValue, |v| u64::from(v.0));
registrable!(impl<> for BoundedSemaphore, ObjectKind::BoundedSemaphore, SemaphoreValue, |v| u64::from(v.0));
registrable!(impl<> for Barrier, ObjectKind::Barrier, Parties, |p| p.0 as u64);

/// The number of parties of a registered [`Barrier`]
/// (`register_with::<Barrier>("name", Parties(3))`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parties(pub usize);

/// The initial value of a registered semaphore (1 by default, as in Python).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SemaphoreValue(pub u32);

impl Default for SemaphoreValue {
    fn default() -> Self {
        SemaphoreValue(1)
    }
}

/// A remote manager's configuration: where it listens or connects, the
/// authkey, and the named objects its server makes (Python's `BaseManager`).
///
/// ```
/// use multiproc::{BaseManager, DictProxy, Queue};
/// multiproc::init();
/// let master = BaseManager::new()
///     .address("127.0.0.1:0")
///     .authkey(b"secret")
///     .register::<Queue<u32>>("tasks")
///     .register::<DictProxy<u32, u32>>("results")
///     .start()
///     .unwrap();
/// let worker = BaseManager::new()
///     .address(master.address().to_string())
///     .authkey(b"secret")
///     .connect()
///     .unwrap();
/// let tasks: Queue<u32> = worker.get("tasks").unwrap();
/// master.get::<Queue<u32>>("tasks").unwrap().put(7).unwrap();
/// let results: DictProxy<u32, u32> = worker.get("results").unwrap();
/// let n = tasks.get_timeout(std::time::Duration::from_secs(10)).unwrap();
/// results.insert(n, n * n).unwrap();
/// assert_eq!(master.get::<DictProxy<u32, u32>>("results").unwrap().get(&7).unwrap(), Some(49));
/// master.shutdown().unwrap();
/// ```
///
/// `U` lists the user types registered with [`BaseManager::register_object`]
/// (it grows with each one; you never write it).
pub struct BaseManager<U = ()> {
    address: String,
    authkey: Option<Vec<u8>>,
    named: Vec<Named>,
    user_names: Vec<UserName>,
    max_frame: Option<u64>,
    limits: Limits,
    python: Option<PythonOptions>,
    method: Option<StartMethod>,
    _user: PhantomData<fn() -> U>,
}

impl<U> Clone for BaseManager<U> {
    fn clone(&self) -> Self {
        BaseManager {
            address: self.address.clone(),
            authkey: self.authkey.clone(),
            named: self.named.clone(),
            user_names: self.user_names.clone(),
            max_frame: self.max_frame,
            limits: self.limits,
            python: self.python.clone(),
            method: self.method,
            _user: PhantomData,
        }
    }
}

impl<U> std::fmt::Debug for BaseManager<U> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BaseManager")
            .field("address", &self.address)
            .field("named", &self.named)
            .field("user_objects", &self.user_names)
            .field("max_frame", &self.max_frame)
            .field("limits", &self.limits)
            .field("start_method", &self.method)
            .finish_non_exhaustive()
    }
}

impl Default for BaseManager {
    fn default() -> Self {
        BaseManager::new()
    }
}

impl BaseManager {
    /// A manager for `127.0.0.1:0` (a free port), with this process's
    /// authkey unless [`BaseManager::authkey`] gives another.
    pub fn new() -> BaseManager {
        BaseManager {
            address: "127.0.0.1:0".into(),
            authkey: None,
            named: Vec::new(),
            user_names: Vec::new(),
            max_frame: None,
            limits: Limits::default(),
            python: None,
            method: None,
            _user: PhantomData,
        }
    }
}

impl<U: UserTypes> BaseManager<U> {
    /// Registers `name` as a `T` the server owns: made with `T::default()`
    /// when the server starts; clients call its methods through its typed
    /// proxy ([`RemoteManager::get_object`]). Declare the methods with the
    /// [`remote`](macro@crate::remote) attribute (or [`remote_object!`](crate::remote_object)).
    pub fn register_object<T: RemoteObject>(self, name: impl Into<String>) -> BaseManager<(T, U)> {
        self.with_user::<T>(name.into(), false)
    }

    /// Registers `typeid` as a factory of `T` (Python's
    /// `BaseManager.register(typeid, callable)`): each
    /// [`RemoteManager::create`] of it makes a new `T::default()` in the
    /// server, counted by its proxies and freed when the last one goes (a
    /// client that dies or disconnects drops its references).
    pub fn register_factory<T: RemoteObject>(
        self,
        typeid: impl Into<String>,
    ) -> BaseManager<(T, U)> {
        self.with_user::<T>(typeid.into(), true)
    }

    fn with_user<T: RemoteObject>(self, name: String, factory: bool) -> BaseManager<(T, U)> {
        let mut user_names = self.user_names;
        user_names.push((name, factory));
        BaseManager {
            address: self.address,
            authkey: self.authkey,
            named: self.named,
            user_names,
            max_frame: self.max_frame,
            limits: self.limits,
            python: self.python,
            method: self.method,
            _user: PhantomData,
        }
    }

    /// The start method of the server process [`BaseManager::start`]
    /// starts (default: the global default; Python's `BaseManager(ctx=…)`).
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.method = Some(method);
        self
    }

    /// Where the server listens, or the client connects: `host:port`
    /// (port 0 picks a free port when serving), as text or a `SocketAddr`
    /// (a started manager's [`address`](RemoteManager::address)).
    pub fn address(mut self, address: impl ToString) -> Self {
        self.address = address.to_string();
        self
    }

    /// The shared secret both sides prove they know: any non-empty key, as
    /// in Python, though a long random one is what keeps guessers out
    /// (`multiproc serve` asks for at least 16 bytes). Without one, the
    /// manager uses this process's
    /// [`current_process().authkey()`](multiproc_runtime::CurrentProcess::authkey),
    /// as Python's `BaseManager(authkey=None)` does: a server started so is
    /// reached by this process and its children (which inherit the key),
    /// and a program elsewhere must be given the key.
    pub fn authkey(mut self, authkey: impl AsRef<[u8]>) -> Self {
        self.authkey = Some(authkey.as_ref().to_vec());
        self
    }

    /// The largest message (64 MiB unless changed): the server accepts
    /// requests and sends responses up to this size, and a client connected
    /// with it accepts responses up to it. A call whose request or response
    /// is longer fails with [`Error::MessageTooLarge`]; the connection and
    /// its objects are unharmed.
    pub fn max_frame(mut self, bytes: usize) -> Self {
        self.max_frame = Some(bytes as u64);
        self
    }

    /// The most objects one client connection may have alive that it
    /// created (about a million unless changed); one more is
    /// [`Error::QuotaExceeded`]. See [`Limits`](multiproc_runtime::manager::Limits).
    pub fn max_objects(mut self, objects: u64) -> Self {
        self.limits.max_objects = objects;
        self
    }

    /// The most bytes of keys and values one client connection may have
    /// stored in the server at once (the machine's physical memory unless
    /// changed); storing more is [`Error::QuotaExceeded`].
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.limits.max_bytes = bytes;
        self
    }

    /// The largest shared segment the server creates for a client (the
    /// machine's physical memory unless changed); a larger one is
    /// [`Error::QuotaExceeded`].
    pub fn max_segment(mut self, bytes: u64) -> Self {
        self.limits.max_segment = bytes;
        self
    }

    /// Also serves queues to CPython clients, on a listener of their own
    /// ([`PythonOptions`]; see [`multiproc_runtime::py`]). Each queue is
    /// registered here as a [`Queue`] of [`py::Value`](Value), so
    /// Rust clients `get` it by the same name; a Python client asks for it
    /// as a typeid (`QueueManager.register('get_task_queue')`, then
    /// `m.get_task_queue()`). The authkey is the manager's unless the
    /// options set one.
    ///
    /// ```
    /// use multiproc::py::{PythonOptions, Value};
    /// use multiproc::{BaseManager, Queue};
    /// multiproc::init();
    /// let master = BaseManager::new()
    ///     .authkey(b"secret")
    ///     .python(PythonOptions::new("127.0.0.1:0".parse().unwrap()).queue("get_task_queue"))
    ///     .start()
    ///     .unwrap();
    /// // Python workers connect to this address with the same authkey.
    /// assert!(master.python_address().is_some());
    /// let tasks: Queue<Value> = master.get("get_task_queue").unwrap();
    /// tasks.put(Value::from((1, "square"))).unwrap();
    /// master.shutdown().unwrap();
    /// ```
    pub fn python(mut self, options: PythonOptions) -> Self {
        for q in &options.queues {
            self = self.register_with::<Queue<Value>>(q.name.clone(), q.maxsize);
        }
        self.python = Some(options);
        self
    }

    /// Registers `name`: the server creates one `P` object when it starts,
    /// and any client gets a proxy to it with [`RemoteManager::get`].
    pub fn register<P: Registrable>(self, name: impl Into<String>) -> Self
    where
        P::Config: Default,
    {
        self.register_with::<P>(name, P::Config::default())
    }

    /// As [`BaseManager::register`], with what the server needs to make the
    /// object: `register_with::<Barrier>("ready", Parties(3))`, or a
    /// queue's maxsize.
    pub fn register_with<P: Registrable>(
        mut self,
        name: impl Into<String>,
        config: P::Config,
    ) -> Self {
        let (fingerprint, type_name) = P::type_tag();
        let name = name.into();
        self.named.retain(|n| n.name != name);
        self.named.push(Named {
            name,
            kind: P::object_kind(),
            arg: P::config_arg(&config),
            fingerprint,
            type_name,
        });
        self
    }

    fn socket_addr(&self) -> Result<SocketAddr> {
        self.address
            .to_socket_addrs()
            .map_err(|e| Error::InvalidArgument(format!("bad address {:?}: {e}", self.address)))?
            .next()
            .ok_or_else(|| {
                Error::InvalidArgument(format!("{:?} resolves to no address", self.address))
            })
    }

    /// The key given, or this process's own (Python's `BaseManager(authkey=None)`).
    fn key(&self) -> Result<Vec<u8>> {
        match &self.authkey {
            Some(k) if !k.is_empty() => Ok(k.clone()),
            Some(_) => Err(Error::InvalidArgument(
                "a remote manager needs a non-empty authkey".into(),
            )),
            None => Ok(multiproc_runtime::current_process()
                .authkey()
                .as_bytes()
                .to_vec()),
        }
    }

    fn options(&self) -> Result<ServeOptions> {
        let mut tcp = TcpOptions::new(self.socket_addr()?, &self.key()?);
        if let Some(m) = self.max_frame {
            tcp.max_frame = m;
        }
        let python = match &self.python {
            Some(p) if p.authkey.is_empty() => Some(p.clone().authkey(self.key()?)),
            other => other.clone(),
        };
        Ok(ServeOptions {
            authkey: tcp.authkey.clone(),
            tcp: Some(tcp),
            allow_root: false,
            limits: self.limits,
            python,
        })
    }

    /// Starts the server in a child process and connects to it.
    pub fn start(&self) -> Result<RemoteManager> {
        let python = self.python.as_ref().map(|p| p.address.ip());
        let started = startup::start_remote::<U>(
            self.options()?,
            self.named.clone(),
            self.user_names.clone(),
            self.method,
        )?;
        let bound = self.socket_addr()?;
        let address = reachable(SocketAddr::new(bound.ip(), started.tcp_port));
        let python = python.map(|ip| reachable(SocketAddr::new(ip, started.python_port)));
        self.open(address, Some(started.process), python)
    }

    /// Connects to a running server.
    ///
    /// A server that refuses the authkey is [`Error::Authentication`].
    ///
    /// This process shares one connection per server among its proxies.
    /// If that connection broke (the server was restarted on the same
    /// address, for example), `connect` makes a new one: proxies from the
    /// new `RemoteManager` work, while those made before the break keep
    /// failing with [`Error::ManagerGone`] (their objects went with the old
    /// connection or the old server).
    pub fn connect(&self) -> Result<RemoteManager> {
        self.open(self.socket_addr()?, None, None)
    }

    fn open(
        &self,
        address: SocketAddr,
        process: Option<Process<()>>,
        python: Option<SocketAddr>,
    ) -> Result<RemoteManager> {
        if let Some(m) = self.max_frame {
            client::set_max_message(address, usize::try_from(m).unwrap_or(usize::MAX));
        }
        RemoteManager::open(address, &self.key()?, process, python)
    }

    /// Binds a server in this process (with its named objects made);
    /// [`ManagerServer::serve_forever`] then serves until shut down.
    pub fn get_server(&self) -> Result<ManagerServer> {
        let server = startup::bind::<U>(&self.options()?, &self.named, &self.user_names)?;
        let address = reachable(server.tcp_address().ok_or_else(unexpected)?);
        let python = server.python_address().map(reachable);
        client::set_authkey(ServerAddress::Tcp(address), &self.key()?);
        Ok(ManagerServer {
            server,
            address,
            python,
        })
    }
}

/// An unspecified address (`0.0.0.0`) is reached through loopback locally.
fn reachable(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        let ip = match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        };
        SocketAddr::new(ip, addr.port())
    } else {
        addr
    }
}

/// The number registered as `name` in the server's registry, checked to be
/// one of the kind `bit` marks (a shared object or a factory) for the type a
/// `P` calls: `KeyNotFound` for a name the server does not have,
/// `TypeMismatch` for another type or kind.
fn registered_as<P: UserProxy>(address: ServerAddress, name: &str, bit: u64) -> Result<u64> {
    let tag = <Registry as RemoteFlavor>::remote_tag();
    let registry: Registry = attach_as(&ProxyRepr {
        server: address,
        object: REGISTRY,
        fingerprint: tag.fingerprint,
        type_name: tag.name,
        pin: 0,
        authkey: Vec::new(),
    })?;
    let (number, fingerprint, type_name) = registry
        .get(&name.to_string())?
        .ok_or_else(|| Error::KeyNotFound(format!("{name:?}")))?;
    if fingerprint != fingerprint_str(P::TYPE_NAME) || number & bit == 0 {
        return Err(Error::TypeMismatch {
            expected: P::TYPE_NAME.into(),
            found: type_name,
        });
    }
    Ok(number)
}

/// The user object registered as `name` in the server at `address`,
/// checked to be the one a `P` calls: `KeyNotFound` for a name the server
/// does not have, `TypeMismatch` for another type.
pub(crate) fn lookup_user_object<P: UserProxy>(address: ServerAddress, name: &str) -> Result<P> {
    let object = registered_as::<P>(address, name, USER_OBJECT_BIT)?;
    Ok(P::from_handle(ObjectHandle {
        server: address,
        object,
        _hold: None,
    }))
}

/// A new object from the factory registered as `typeid` in the server at
/// `address`, checked to be the one a `P` calls: `KeyNotFound` for a name
/// the server does not have, `TypeMismatch` for another type or a name of
/// one shared object. The proxy holds the object's first reference.
pub(crate) fn create_user_object<P: UserProxy>(address: ServerAddress, typeid: &str) -> Result<P> {
    let factory = registered_as::<P>(address, typeid, FACTORY_BIT)?;
    let conn = client::connection(&address)?;
    let core = ProxyCore::create_with(
        conn,
        ObjectKind::User,
        factory & !FACTORY_BIT,
        TypeTag::new(P::TYPE_NAME.into()),
    )?;
    Ok(P::from_handle(ObjectHandle {
        server: address,
        object: core.object(),
        _hold: Some(core),
    }))
}

/// A server bound in this process (from [`BaseManager::get_server`]).
#[derive(Debug)]
pub struct ManagerServer {
    server: Server,
    address: SocketAddr,
    python: Option<SocketAddr>,
}

impl ManagerServer {
    /// The TCP address clients connect to (the real port if bound to port
    /// 0; loopback if bound to an unspecified address such as `0.0.0.0`).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The TCP address the server is bound to, as bound: `0.0.0.0:P` if
    /// asked to listen on every interface (with the real port if asked for
    /// port 0).
    pub fn bound_address(&self) -> SocketAddr {
        self.server.tcp_address().unwrap_or(self.address)
    }

    /// Where CPython clients connect, if the manager serves them
    /// ([`BaseManager::python`]).
    pub fn python_address(&self) -> Option<SocketAddr> {
        self.python
    }

    /// A handle that stops [`ManagerServer::serve_forever`] from another thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.server.shutdown_handle()
    }

    /// Serves until a client calls [`RemoteManager::shutdown`] or the
    /// shutdown handle is used (Python's `serve_forever`).
    pub fn serve_forever(self) {
        self.server.serve_forever();
    }
}

struct Inner {
    owner: i32,
    tcp: SocketAddr,
    address: ServerAddress,
    process: Mutex<Option<Process<()>>>,
    /// The server's pid, if this process started it.
    pid: Option<i32>,
    /// How the server process ended, once `shutdown` reaped it.
    exit: Mutex<Option<i32>>,
    python: Option<SocketAddr>,
}

/// A connection to a remote manager's server (from [`BaseManager::start`]
/// or [`BaseManager::connect`]).
#[derive(Clone)]
pub struct RemoteManager {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RemoteManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteManager")
            .field("server", &self.inner.address)
            .finish()
    }
}

impl RemoteManager {
    fn open(
        address: SocketAddr,
        authkey: &[u8],
        process: Option<Process<()>>,
        python: Option<SocketAddr>,
    ) -> Result<RemoteManager> {
        // Prove the key on a connection of its own: this process may share
        // a connection to the same server made with another key.
        drop(TcpClient::connect(address, authkey)?);
        client::set_authkey(ServerAddress::Tcp(address), authkey);
        let server = ServerAddress::Tcp(address);
        let m = RemoteManager {
            inner: Arc::new(Inner {
                owner: sys::process::getpid(),
                tcp: address,
                address: server,
                pid: process.as_ref().and_then(Process::pid),
                process: Mutex::new(process),
                exit: Mutex::new(None),
                python,
            }),
        };
        // Connect now: a wrong key or an absent server is an error here,
        // and a connection that broke is replaced.
        client::checked_connection(&server)?;
        Ok(m)
    }

    /// The server's TCP address.
    pub fn address(&self) -> SocketAddr {
        self.inner.tcp
    }

    /// The server process's pid, if this process started it with
    /// [`BaseManager::start`] (Python's `manager._process.pid`); `None`
    /// for a server connected to.
    pub fn pid(&self) -> Option<i32> {
        self.inner.pid
    }

    /// How the server process this process started ended (Python's
    /// `manager._process.exitcode`): `None` while it runs (or if this
    /// process did not start it), its exit code (0 after a clean
    /// [`RemoteManager::shutdown`]), or minus the signal that killed it.
    pub fn exitcode(&self) -> Option<i32> {
        if let Some(code) = *self.inner.exit.lock() {
            return Some(code);
        }
        self.inner
            .process
            .lock()
            .as_ref()
            .and_then(Process::exitcode)
    }

    /// Where CPython clients connect, for a server this process started
    /// with [`BaseManager::python`] (`None` otherwise).
    pub fn python_address(&self) -> Option<SocketAddr> {
        self.inner.python
    }

    /// A proxy to the object registered as `name`, checked to be a `P`
    /// ([`Error::TypeMismatch`] otherwise; [`Error::KeyNotFound`] for a
    /// name the server does not have).
    pub fn get<P: Registrable>(&self, name: &str) -> Result<P> {
        let registry: Registry = self.attach(REGISTRY, <Registry as RemoteFlavor>::remote_tag())?;
        let (object, fingerprint, type_name) = registry
            .get(&name.to_string())?
            .ok_or_else(|| Error::KeyNotFound(format!("{name:?}")))?;
        P::attach(&ProxyRepr {
            server: self.inner.address,
            object,
            fingerprint,
            type_name,
            pin: 0,
            authkey: Vec::new(),
        })
    }

    /// A typed proxy to the user object registered as `name` (see
    /// [`BaseManager::register_object`] and the [`remote`](macro@crate::remote) attribute).
    pub fn get_object<P: UserProxy>(&self, name: &str) -> Result<P> {
        lookup_user_object(self.inner.address, name)
    }

    /// A new object made in the server by the factory registered as
    /// `typeid` with [`BaseManager::register_factory`], and its proxy,
    /// which holds a reference to it: the object is freed when the last
    /// proxy goes. [`Error::KeyNotFound`] for a typeid the server does not
    /// have, [`Error::TypeMismatch`] if the factory makes another type than
    /// `P` calls, [`Error::Remote`] with the message if the constructor
    /// panicked (the server serves on).
    pub fn create<P: UserProxy>(&self, typeid: &str) -> Result<P> {
        create_user_object(self.inner.address, typeid)
    }

    fn attach<P: RemoteFlavor>(&self, object: ObjectId, tag: TypeTag) -> Result<P> {
        attach_as(&ProxyRepr {
            server: self.inner.address,
            object,
            fingerprint: tag.fingerprint,
            type_name: tag.name,
            pin: 0,
            authkey: Vec::new(),
        })
    }

    fn create_kind<P: RemoteFlavor>(&self, kind: ObjectKind) -> Result<P> {
        self.create_with(kind, 0)
    }

    fn create_with<P: RemoteFlavor>(&self, kind: ObjectKind, arg: u64) -> Result<P> {
        let conn = client::connection(&self.inner.address)?;
        ProxyCore::create_with(conn, kind, arg, P::remote_tag()).and_then(P::from_remote)
    }

    /// A new, empty dict in the server.
    pub fn dict<K: Shareable, V: Shareable>(&self) -> Result<DictProxy<K, V>> {
        self.create_kind(ObjectKind::Dict)
    }

    /// A new, empty list in the server.
    pub fn list<T: Shareable>(&self) -> Result<ListProxy<T>> {
        self.create_kind(ObjectKind::List)
    }

    /// A new list in the server holding `items` (Python's
    /// `manager.list(items)`): the list is created and filled in one call,
    /// and if filling it fails (a value too large, say) it is freed again.
    pub fn list_from<T: Shareable>(
        &self,
        items: impl IntoIterator<Item = T>,
    ) -> Result<ListProxy<T>> {
        let list = self.list()?;
        list.extend(items)?;
        Ok(list)
    }

    /// A new dict in the server holding `pairs` (Python's
    /// `manager.dict(pairs)`): created and filled in one call, as
    /// [`list_from`](Self::list_from) does for a list.
    pub fn dict_from<K: Shareable, V: Shareable>(
        &self,
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<DictProxy<K, V>> {
        let dict = self.dict()?;
        dict.update(pairs)?;
        Ok(dict)
    }

    /// A new, empty namespace in the server.
    pub fn namespace(&self) -> Result<NamespaceProxy> {
        self.create_kind(ObjectKind::Namespace)
    }

    /// A new, empty queue in the server, without a size limit: the same
    /// [`Queue`] type a local `Manager` or `Queue::new` gives, in its
    /// remote flavour.
    ///
    /// ```
    /// use std::time::Duration;
    /// multiproc::init();
    /// let m = multiproc::BaseManager::new().authkey(b"k").start().unwrap();
    /// let q = m.queue::<String>().unwrap();
    /// q.put("hello".to_string()).unwrap();
    /// assert_eq!(q.get().unwrap(), "hello");
    /// assert!(matches!(q.get_timeout(Duration::from_millis(10)), Err(multiproc::Error::Empty)));
    /// m.shutdown().unwrap();
    /// ```
    pub fn queue<T: Shareable>(&self) -> Result<Queue<T>> {
        self.create_kind(ObjectKind::Queue)
    }

    /// A new queue that holds at most `maxsize` items (0: no limit).
    pub fn queue_with_maxsize<T: Shareable>(&self, maxsize: usize) -> Result<Queue<T>> {
        self.create_with(ObjectKind::Queue, maxsize as u64)
    }

    /// A new, empty joinable queue in the server (`task_done`/`join`, as
    /// Python's `manager.JoinableQueue()`), without a size limit.
    pub fn joinable_queue<T: Shareable>(&self) -> Result<JoinableQueue<T>> {
        self.create_kind(ObjectKind::Queue)
    }

    /// A new joinable queue that holds at most `maxsize` items (0: no limit).
    pub fn joinable_queue_with_maxsize<T: Shareable>(
        &self,
        maxsize: usize,
    ) -> Result<JoinableQueue<T>> {
        self.create_with(ObjectKind::Queue, maxsize as u64)
    }

    /// A new, unlocked lock in the server: the same [`Lock`] type a local
    /// `Manager` or `Lock::new` gives, in its remote flavour.
    pub fn lock(&self) -> Result<Lock> {
        self.create_kind(ObjectKind::Lock)
    }

    /// A new, unlocked recursive lock in the server: the same [`RLock`]
    /// type a local `Manager` or `RLock::new` gives, in its remote flavour
    /// (Python's `manager.RLock()`).
    pub fn rlock(&self) -> Result<RLock> {
        self.create_kind(ObjectKind::RLock)
    }

    /// A new condition in the server over a recursive lock of its own: the
    /// same [`Condition`] type a local `Manager` or `Condition::new` gives,
    /// in its remote flavour (Python's `manager.Condition()`).
    ///
    /// ```
    /// use std::time::Duration;
    /// multiproc::init();
    /// let m = multiproc::BaseManager::new().authkey(b"k").start().unwrap();
    /// let cond = m.condition().unwrap();
    /// let _held = cond.lock().unwrap();
    /// let waited = cond.wait_timeout(Duration::from_millis(10)).unwrap();
    /// assert!(waited.timed_out()); // nobody notified; the lock is held again
    /// cond.notify_all().unwrap();
    /// drop(_held);
    /// m.shutdown().unwrap();
    /// ```
    pub fn condition(&self) -> Result<Condition> {
        self.create_kind(ObjectKind::Condition)
    }

    /// A new condition in the server over `lock`, a [`Lock`] or [`RLock`]
    /// this manager's server keeps (Python's `manager.Condition(lock)`);
    /// [`Error::InvalidArgument`] for any other lock.
    pub fn condition_with(&self, lock: impl Into<ConditionLock>) -> Result<Condition> {
        let lock = lock.into();
        if lock.server() != Some(self.inner.address) {
            return Err(Error::InvalidArgument(
                "a remote manager's condition needs a lock that manager keeps".into(),
            ));
        }
        Condition::with_lock(lock)
    }

    /// A new semaphore in the server with `value` free units.
    pub fn semaphore(&self, value: u32) -> Result<Semaphore> {
        self.create_with(ObjectKind::Semaphore, u64::from(value))
    }

    /// A new semaphore that may not be released above `value`.
    pub fn bounded_semaphore(&self, value: u32) -> Result<BoundedSemaphore> {
        self.create_with(ObjectKind::BoundedSemaphore, u64::from(value))
    }

    /// A new, lowered event in the server: the same [`Event`] type a local
    /// `Manager` or `Event::new` gives, in its remote flavour.
    pub fn event(&self) -> Result<Event> {
        self.create_kind(ObjectKind::Event)
    }

    /// A new barrier in the server for `parties` parties
    /// ([`Error::InvalidArgument`] for 0).
    pub fn barrier(&self, parties: usize) -> Result<Barrier> {
        if parties == 0 {
            return Err(Error::InvalidArgument(
                "a barrier needs at least one party".into(),
            ));
        }
        self.create_with(ObjectKind::Barrier, parties as u64)
    }

    /// How many objects the server holds (its registry and named objects included).
    pub fn number_of_objects(&self) -> Result<usize> {
        let conn = client::connection(&self.inner.address)?;
        match conn.call(&Request::NumberOfObjects)?.get()? {
            ArchivedResponse::Len(n) => Ok(n.to_native() as usize),
            _ => Err(unexpected()),
        }
    }

    /// Asks the server to stop (any client may), and if this process
    /// started it, waits for its process to end.
    pub fn shutdown(&self) -> Result<()> {
        // On a connection of its own: the shared one may be held by a call
        // that does not return.
        if let Err(e) = client::request_shutdown(&self.inner.address) {
            tracing::debug!("remote manager shutdown request failed: {e}");
        }
        client::forget(&self.inner.address);
        let Some(mut p) = self.inner.process.lock().take() else {
            return Ok(());
        };
        if self.inner.owner != sys::process::getpid() {
            return Ok(());
        }
        if let Err(Error::Timeout(_)) = p.join_timeout(EXIT_TIMEOUT) {
            let _ = p.kill();
            let _ = p.join();
        }
        *self.inner.exit.lock() = p.exitcode();
        Ok(())
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // A server this process started goes with its last handle.
        if self.owner == sys::process::getpid()
            && let Some(mut p) = self.process.lock().take()
        {
            if let Err(e) = client::request_shutdown(&self.address) {
                tracing::debug!("remote manager shutdown request failed: {e}");
            }
            client::forget(&self.address);
            if p.join_timeout(EXIT_TIMEOUT).is_err() {
                let _ = p.kill();
                let _ = p.join();
            }
        }
    }
}

/// The typed proxy of a [`RemoteObject`] (generated by the
/// [`remote`](macro@crate::remote) attribute or
/// [`remote_object!`](crate::remote_object)).
pub trait UserProxy: Sized {
    /// The name of the type it calls (the object's `TYPE_NAME`).
    const TYPE_NAME: &'static str;
    /// The proxy over a handle to the object.
    fn from_handle(handle: ObjectHandle) -> Self;
}

/// A client's handle to a user object: calls its methods by number.
///
/// A method is user code that may run as long as it likes, so each call
/// goes over a connection of its own (kept for the next call), never the
/// one the process shares: a slow or stuck method holds up only its caller.
/// A method that panics is [`Error::Remote`] with the panic's message, and
/// the server and the object serve on.
pub struct ObjectHandle {
    server: ServerAddress,
    object: ObjectId,
    /// The reference that keeps an object made by a factory alive (none
    /// for a named object, which lives as long as the server).
    _hold: Option<ProxyCore>,
}

impl std::fmt::Debug for ObjectHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectHandle")
            .field("server", &self.server)
            .field("object", &self.object)
            .finish()
    }
}

impl ObjectHandle {
    /// Calls method number `method` with `args`, returning its result.
    pub fn call<A: Shareable, R: Shareable>(&self, method: u32, args: &A) -> Result<R> {
        let encoded = args.encode()?;
        let reply = client::on_own_connection(&self.server, |conn| {
            conn.call(&Request::Call(Call {
                object: self.object,
                method,
                index: 0,
                key: None,
                value: Some(Blob::plain(&encoded)),
                expected: None,
                batch: Vec::new(),
                fingerprint: 0,
                type_name: "",
                wait_us: 0,
            }))
        })?;
        match reply.get()? {
            ArchivedResponse::Value {
                bytes: multiproc_runtime::rkyv::option::ArchivedOption::Some(b),
                ..
            } => R::decode(b),
            _ => Err(unexpected()),
        }
    }
}

/// Declares which methods of a type a remote manager serves, and generates
/// its typed proxy.
///
/// The [`remote`](macro@crate::remote) attribute on the type's impl block is
/// the recommended form: it generates the same code and speaks the same wire
/// format, without repeating each signature. This macro stays for the code
/// that uses it.
///
/// The type must be `Default + Send + 'static` (the server makes it with
/// `default()`); each method takes `&mut self` and [`Shareable`](multiproc_runtime::Shareable)
/// arguments and returns a `Shareable` value. Number the methods: the
/// numbers are the wire format, so keep them when you add methods.
///
/// ```
/// #[derive(Default)]
/// struct Counter { n: i64 }
/// impl Counter {
///     fn incr(&mut self, by: i64) -> i64 { self.n += by; self.n }
///     fn get(&mut self) -> i64 { self.n }
/// }
/// multiproc::remote_object! {
///     Counter as CounterProxy {
///         1 => fn incr(by: i64) -> i64;
///         2 => fn get() -> i64;
///     }
/// }
/// multiproc::init();
/// let m = multiproc::BaseManager::new()
///     .authkey(b"k")
///     .register_object::<Counter>("counter")
///     .start()
///     .unwrap();
/// let c: CounterProxy = m.get_object("counter").unwrap();
/// assert_eq!(c.incr(5).unwrap(), 5);
/// assert_eq!(c.get().unwrap(), 5);
/// m.shutdown().unwrap();
/// ```
#[macro_export]
macro_rules! remote_object {
    ($ty:ty as $proxy:ident {
        $( $id:literal => fn $name:ident ( $( $arg:ident : $aty:ty ),* $(,)? ) -> $ret:ty ; )*
    }) => {
        impl $crate::__private::ServedObject for $ty {
            fn call(
                &mut self,
                method: u32,
                args: &[u8],
            ) -> ::std::result::Result<::std::vec::Vec<u8>, $crate::__private::CallError> {
                use $crate::__private::{CallError, Shareable};
                match method {
                    $(
                        $id => {
                            #[allow(unused_parens)]
                            let ($($arg,)*): ($($aty,)*) = Shareable::decode(args)
                                .map_err(|e| CallError::Codec(e.to_string()))?;
                            let out: $ret = <$ty>::$name(self $(, $arg)*);
                            Shareable::encode(&out)
                                .map(|b| b.to_vec())
                                .map_err(|e| CallError::Codec(e.to_string()))
                        }
                    )*
                    _ => Err(CallError::UnknownMethod),
                }
            }
            fn method_name(&self, method: u32) -> ::std::option::Option<&'static str> {
                match method {
                    $( $id => Some(stringify!($name)), )*
                    _ => None,
                }
            }
        }
        impl $crate::RemoteObject for $ty {
            const TYPE_NAME: &'static str = concat!(module_path!(), "::", stringify!($ty));
        }
        /// The typed proxy of a remote object (generated by `remote_object!`).
        #[derive(Debug)]
        pub struct $proxy {
            handle: $crate::ObjectHandle,
        }
        impl $crate::UserProxy for $proxy {
            const TYPE_NAME: &'static str = <$ty as $crate::RemoteObject>::TYPE_NAME;
            fn from_handle(handle: $crate::ObjectHandle) -> Self {
                $proxy { handle }
            }
        }
        impl $proxy {
            $(
                /// Calls the server's object.
                pub fn $name(&self $(, $arg: $aty)*) -> $crate::__private::Result<$ret> {
                    self.handle.call($id, &($($arg,)*))
                }
            )*
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_makes_the_registry_with_the_tag_its_readers_check() {
        assert_eq!(
            startup::registry_tag(),
            <Registry as RemoteFlavor>::remote_tag()
        );
    }
}
