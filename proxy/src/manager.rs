//! `Manager`: starts a manager server and creates objects in it.

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use multiproc_runtime::__internal::fork_sync::Mutex;
use multiproc_runtime::__internal::{DEFAULT_CAPACITY_BYTES, Initializer, ShmSpec, sys};
use multiproc_runtime::handle::ShareHandle;
use multiproc_runtime::manager::protocol::{ArchivedResponse, Request};
use multiproc_runtime::manager::server::{Limits, connect_local_with_authkey};
use multiproc_runtime::manager::{ObjectKind, ServeOptions, ServerAddress};
use multiproc_runtime::{
    Array, AuthKey, Barrier, BoundedSemaphore, Condition, Error, Event, JoinableQueue, Lock, Pool,
    Process, Queue, RLock, Result, Semaphore, Shareable, ShmSafe, StartMethod, Value,
    current_process,
};

use crate::client::{self, unexpected};
use crate::core::{ProxyCore, RemoteFlavor};
use crate::remote::{create_user_object, lookup_user_object};
use crate::{DictProxy, ListProxy, NamespaceProxy, RemoteObject, UserProxy, UserTypes};
use multiproc_runtime::manager::startup::{self, EXIT_TIMEOUT, UserName};

struct Inner {
    owner: i32,
    address: ServerAddress,
    /// The start method the server was started with (here).
    method: Option<StartMethod>,
    process: Mutex<Option<Process<()>>>,
    shut_down: AtomicBool,
}

/// A manager: a server process that owns dicts, lists and namespaces, and
/// creates objects in it (Python's `multiprocessing.Manager()`).
///
/// Objects are used through typed proxies ([`DictProxy`], [`ListProxy`],
/// [`NamespaceProxy`]) that any process may hold: pass them to children as
/// arguments or inside messages, store them inside other managed objects.
/// An object lives while any proxy to it does (in any process), and is
/// freed when the last one goes.
///
/// `lock()`, `rlock()`, `semaphore()`, `bounded_semaphore()`, `condition()`,
/// `event()`, `barrier()`, `queue()`, `joinable_queue()`, `value()` and
/// `array()` create shared objects in segments the server creates and
/// return the direct handle: this process maps the segment and uses it with
/// no further round trips. Such an object lives while any process holds a
/// handle to it, like one made with its own `new()`; but since the server
/// owns it, a blocking wait on it (a queue's `get`/`put`, an event's or a
/// condition's `wait`, a barrier's `wait`, a semaphore's `acquire`) fails
/// with `Error::ManagerGone` within about 100 ms once the server process
/// has died; so does a wait for a held `Lock` or `RLock`. What does not
/// wait still works: a free lock can be taken, a queue read with `try_get`.
/// `condition_with(lock)` makes a condition over a lock of yours. A TCP
/// `BaseManager` hands out the same types (kept by its server instead).
///
/// The server shuts down on [`Manager::shutdown`] or when the last clone
/// of the `Manager` is dropped, and dies with this process. Once it is
/// gone, every proxy call fails with `Error::ManagerGone` (within about
/// 100 ms if it was killed mid-call), never hangs. The proxies of one
/// process share its connection to the server; a call waits at most 60 s
/// for another thread's call on it (only a server that stopped answering
/// takes that long), then fails with `Error::Timeout`. Shutting down (or
/// dropping the manager) never waits for that connection: a server that
/// does not answer the request is killed.
///
/// # Who may connect
///
/// The server listens on an abstract Unix socket, whose name any local user
/// can see. It takes a connection only from a process that runs as the
/// server's own user (checked with the kernel's `SO_PEERCRED`; root only if
/// [`ManagerBuilder::allow_root`] says so) and that proves, by an HMAC
/// challenge both ways, that it knows the server's authkey: by default
/// this process's [`AuthKey`], which children started by spawn or fork
/// inherit, so proxies passed to them just work. Another program that
/// wants to use the server needs its address and its key
/// ([`Manager::connect_with_authkey`]).
///
/// # How objects stay alive
///
/// * Proxies in one process share one connection to the server; the first
///   proxy of an object registers a reference, the last one dropped
///   releases it. A process that dies (even by `SIGKILL`) loses its
///   references when the server notices, within about 100 ms.
/// * A proxy stored inside a managed object (a dict of list proxies) keeps
///   its object alive for as long as it is stored.
/// * So does a handle to an object this manager created (a `Queue`, a
///   `Lock`, a `Value`…) stored in a managed dict, list or namespace: the
///   server keeps its segment while the value is stored, so any process can
///   read it back after the one that stored it dropped its handle or ended.
///   (A handle to an object made elsewhere, with its own `new()`, is stored
///   as it is: readable while some process that encoded it still lives.)
/// * A proxy encoded for anything else (a spawned child's arguments, a
///   queue message) takes an in-flight reference that the first process
///   to decode it takes over; one nobody decodes is dropped after
///   [`PIN_TIMEOUT`](crate::PIN_TIMEOUT) (ten minutes).
/// * Under `Fork`, a child inherits this process's proxies: before each
///   fork every object they refer to is pinned, and the child takes the
///   pins over, so the parent may drop its own proxies at once.
///
/// ```
/// multiproc::init();
/// let manager = multiproc::Manager::start().unwrap();
/// let d = manager.dict::<u32, String>().unwrap();
/// d.insert(1, "one".into()).unwrap();
/// assert_eq!(d.get(&1).unwrap().as_deref(), Some("one"));
/// assert_eq!(manager.number_of_objects().unwrap(), 1);
/// drop(d);
/// assert_eq!(manager.number_of_objects().unwrap(), 0);
/// manager.shutdown().unwrap();
/// ```
#[derive(Clone)]
pub struct Manager {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("server", &self.inner.address)
            .finish()
    }
}

/// How to start a [`Manager`] (from [`Manager::builder`]).
///
/// ```
/// multiproc::init();
/// let manager = multiproc::Manager::builder()
///     .start_method(multiproc::StartMethod::Fork)
///     .authkey(multiproc::AuthKey::new(b"a key for this manager only").unwrap())
///     .start()
///     .unwrap();
/// manager.shutdown().unwrap();
/// ```
///
/// `U` lists the user types registered with
/// [`ManagerBuilder::register_object`] (it grows with each one; you never
/// write it).
pub struct ManagerBuilder<U = ()> {
    method: Option<StartMethod>,
    authkey: Option<AuthKey>,
    allow_root: bool,
    limits: Limits,
    /// The server's initializer, or why its argument could not be encoded.
    init: Option<std::result::Result<Initializer, String>>,
    /// The initializer's argument, kept until the server has run it: a
    /// handle in it is opened by the server through this process.
    init_arg: Option<InitArg>,
    /// The names of the user objects `U` lists, in order.
    user_names: Vec<UserName>,
    _user: PhantomData<fn() -> U>,
}

impl Default for ManagerBuilder {
    fn default() -> Self {
        ManagerBuilder {
            method: None,
            authkey: None,
            allow_root: false,
            limits: Limits::default(),
            init: None,
            init_arg: None,
            user_names: Vec::new(),
            _user: PhantomData,
        }
    }
}

/// An initializer's argument, kept alive (see `ManagerBuilder::init_arg`).
type InitArg = Arc<Mutex<Box<dyn std::any::Any + Send>>>;

impl<U> Clone for ManagerBuilder<U> {
    fn clone(&self) -> Self {
        ManagerBuilder {
            method: self.method,
            authkey: self.authkey.clone(),
            allow_root: self.allow_root,
            limits: self.limits,
            init: self.init.clone(),
            init_arg: self.init_arg.clone(),
            user_names: self.user_names.clone(),
            _user: PhantomData,
        }
    }
}

impl<U> std::fmt::Debug for ManagerBuilder<U> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagerBuilder")
            .field("method", &self.method)
            .field("own_authkey", &self.authkey.is_some())
            .field("allow_root", &self.allow_root)
            .field("limits", &self.limits)
            .field("initializer", &self.init.is_some())
            .field("user_objects", &self.user_names)
            .finish()
    }
}

impl<U: UserTypes> ManagerBuilder<U> {
    /// Registers `name` as a `T` the server owns (Python's
    /// `SyncManager.register(typeid, callable)` for one shared object, as
    /// [`BaseManager::register_object`](crate::BaseManager::register_object)
    /// does): made with `T::default()` when the server starts, and reached
    /// from any process through its typed proxy with
    /// [`Manager::get_object`]. Declare the methods with the
    /// [`remote`](macro@crate::remote) attribute. The server also keeps a
    /// registry of the names (one object in [`Manager::number_of_objects`]).
    pub fn register_object<T: RemoteObject>(
        self,
        name: impl Into<String>,
    ) -> ManagerBuilder<(T, U)> {
        self.with_user::<T>(name.into(), false)
    }

    /// Registers `typeid` as a factory of `T` (Python's
    /// `SyncManager.register(typeid, callable)`, called as
    /// `manager.Typeid()`): each [`Manager::create`] of it makes a new
    /// `T::default()` in the server, counted by its proxies as a dict is
    /// and freed when the last one goes (in any process, including one
    /// that dies). Declare the methods with the
    /// [`remote`](macro@crate::remote) attribute.
    ///
    /// ```
    /// #[derive(Default)]
    /// struct Counter { n: i64 }
    /// #[multiproc::remote(proxy = CounterProxy)]
    /// impl Counter {
    ///     #[remote(1)]
    ///     fn incr(&mut self, by: i64) -> i64 { self.n += by; self.n }
    /// }
    /// multiproc::init();
    /// let manager = multiproc::Manager::builder()
    ///     .register_factory::<Counter>("Counter")
    ///     .start()
    ///     .unwrap();
    /// let a: CounterProxy = manager.create("Counter").unwrap();
    /// let b: CounterProxy = manager.create("Counter").unwrap();
    /// assert_eq!(a.incr(2).unwrap(), 2);
    /// assert_eq!(b.incr(5).unwrap(), 5, "each create makes its own object");
    /// drop((a, b));
    /// manager.shutdown().unwrap();
    /// ```
    pub fn register_factory<T: RemoteObject>(
        self,
        typeid: impl Into<String>,
    ) -> ManagerBuilder<(T, U)> {
        self.with_user::<T>(typeid.into(), true)
    }

    fn with_user<T: RemoteObject>(self, name: String, factory: bool) -> ManagerBuilder<(T, U)> {
        let mut user_names = self.user_names;
        user_names.push((name, factory));
        ManagerBuilder {
            method: self.method,
            authkey: self.authkey,
            allow_root: self.allow_root,
            limits: self.limits,
            init: self.init,
            init_arg: self.init_arg,
            user_names,
            _user: PhantomData,
        }
    }

    /// Runs `f(arg)` in the server process before it serves (Python's
    /// `SyncManager.start(initializer, initargs)`): to set up logging,
    /// signal dispositions or process-wide state there. A panic in it
    /// fails [`ManagerBuilder::start`] with [`Error::ManagerGone`] carrying
    /// the panic's message; the start waits for it as long as for the
    /// server to listen (a minute), so it should be quick.
    ///
    /// ```
    /// fn greet(name: String) {
    ///     assert_eq!(name, "server");
    /// }
    ///
    /// fn main() {
    ///     multiproc::init();
    ///     let manager = multiproc::Manager::builder()
    ///         .initializer(greet, "server".to_string())
    ///         .start()
    ///         .unwrap();
    ///     manager.shutdown().unwrap();
    /// }
    /// ```
    pub fn initializer<A: Shareable>(mut self, f: fn(A), arg: A) -> Self {
        self.init = Some(Initializer::new(f, &arg).map_err(|e| e.to_string()));
        self.init_arg = Some(Arc::new(Mutex::new(Box::new(arg))));
        self
    }

    /// Starts the server with `method` instead of the default.
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.method = Some(method);
        self
    }

    /// The key clients must prove they know (default: this process's
    /// [`AuthKey`], which its children inherit). This process and its
    /// children started later use it for this manager's proxies; another
    /// process needs [`Manager::connect_with_authkey`].
    pub fn authkey(mut self, key: AuthKey) -> Self {
        self.authkey = Some(key);
        self
    }

    /// Whether processes running as root may connect to the server when it
    /// runs as another user (default: no). A server running as root takes
    /// root's processes anyway: they run as its own user.
    pub fn allow_root(mut self, allow: bool) -> Self {
        self.allow_root = allow;
        self
    }

    /// The most objects one client connection may have alive that it
    /// created (about a million unless changed); creating more is
    /// [`Error::QuotaExceeded`](multiproc_runtime::Error::QuotaExceeded).
    pub fn max_objects(mut self, objects: u64) -> Self {
        self.limits.max_objects = objects;
        self
    }

    /// The most bytes of keys and values one client connection may have
    /// stored in the server at once (the machine's physical memory unless
    /// changed).
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.limits.max_bytes = bytes;
        self
    }

    /// The largest shared segment the server creates for a client (the
    /// machine's physical memory unless changed).
    pub fn max_segment(mut self, bytes: u64) -> Self {
        self.limits.max_segment = bytes;
        self
    }

    /// Starts the server process.
    pub fn start(self) -> Result<Manager> {
        let key = self.authkey.unwrap_or_else(|| current_process().authkey());
        let options = ServeOptions {
            tcp: None,
            authkey: key.as_bytes().to_vec(),
            allow_root: self.allow_root,
            limits: self.limits,
            python: None,
        };
        let init = match self.init {
            Some(Ok(init)) => Some(init),
            Some(Err(e)) => {
                return Err(Error::Codec(format!(
                    "the manager initializer's argument: {e}"
                )));
            }
            None => None,
        };
        let started = startup::start_local::<U>(options, init, self.user_names, self.method)?;
        // The server has run the initializer: its argument may go.
        drop(self.init_arg);
        let address = ServerAddress::Local(started.address);
        // This process keeps using the key the server started with, even
        // if its own authkey changes later.
        client::set_authkey(address, key.as_bytes());
        Ok(Manager {
            inner: Arc::new(Inner {
                owner: sys::process::getpid(),
                address,
                method: self.method,
                process: Mutex::new(Some(started.process)),
                shut_down: AtomicBool::new(false),
            }),
        })
    }
}

impl Manager {
    /// Starts a server process with the default start method.
    pub fn start() -> Result<Manager> {
        Self::builder().start()
    }

    /// Starts a server process with `method`.
    pub fn start_with(method: StartMethod) -> Result<Manager> {
        Self::builder().start_method(method).start()
    }

    /// Options for a new server: start method, authkey, whether root may
    /// connect; then [`ManagerBuilder::start`].
    pub fn builder() -> ManagerBuilder {
        ManagerBuilder::default()
    }

    /// A handle to the running server at `address` (another process's
    /// [`Manager::address`], passed to this one as an argument or in a
    /// message): this process can then create objects in that server too.
    ///
    /// The server must take this process's [`AuthKey`]: it does if it was
    /// started by this process or an ancestor it inherited its key from,
    /// with the default key. Otherwise use [`Manager::connect_with_authkey`].
    ///
    /// Only the process that started the server may shut it down; dropping
    /// a connected `Manager` leaves the server running. `Err(ManagerGone)`
    /// if the server is not running or cannot be reached,
    /// `Err(Authentication)` if it refuses this process (another key, or
    /// another user).
    pub fn connect(address: ServerAddress) -> Result<Manager> {
        client::connection(&address)?;
        Ok(Self::connected(address))
    }

    /// Like [`Manager::connect`], proving `authkey` (Python's
    /// `BaseManager(address, authkey).connect()`): this process then uses
    /// that key for this server, and passes it to the children it starts
    /// along with proxies to the server's objects.
    pub fn connect_with_authkey(address: ServerAddress, authkey: &AuthKey) -> Result<Manager> {
        match &address {
            ServerAddress::Local(local) => {
                // Prove the key on a connection of its own: this process
                // may hold one to the same server made with another key.
                drop(connect_local_with_authkey(local, authkey.as_bytes())?);
            }
            ServerAddress::Tcp(a) => {
                drop(multiproc_runtime::manager::TcpClient::connect(
                    *a,
                    authkey.as_bytes(),
                )?);
            }
        }
        client::set_authkey(address, authkey.as_bytes());
        Self::connect(address)
    }

    fn connected(address: ServerAddress) -> Manager {
        Manager {
            inner: Arc::new(Inner {
                // No process has pid 0: nobody here may shut the server down.
                owner: 0,
                address,
                method: None,
                process: Mutex::new(None),
                shut_down: AtomicBool::new(false),
            }),
        }
    }

    /// Where the server listens; pass it to another process for [`Manager::connect`].
    pub fn address(&self) -> &ServerAddress {
        &self.inner.address
    }

    /// The server process's pid.
    pub fn pid(&self) -> i32 {
        self.inner.address.pid().unwrap_or(0)
    }

    fn create_kind<P: RemoteFlavor>(&self, kind: ObjectKind) -> Result<P> {
        let conn = client::connection(&self.inner.address)?;
        ProxyCore::create(conn, kind, P::remote_tag()).and_then(P::from_remote)
    }

    /// A proxy to the user object registered as `name` with
    /// [`ManagerBuilder::register_object`], checked to be the one a `P`
    /// calls: [`Error::KeyNotFound`] for a name the server does not have,
    /// [`Error::TypeMismatch`] for another type. Works in any process that
    /// reaches the server ([`Manager::connect`]).
    pub fn get_object<P: UserProxy>(&self, name: &str) -> Result<P> {
        lookup_user_object(self.inner.address, name)
    }

    /// A new object made in the server by the factory registered as
    /// `typeid` with [`ManagerBuilder::register_factory`] (Python's
    /// `manager.Typeid()`), and its proxy, which holds a reference to it:
    /// the object is freed when the last proxy goes.
    /// [`Error::KeyNotFound`] for a typeid the server does not have,
    /// [`Error::TypeMismatch`] if the factory makes another type than `P`
    /// calls, [`Error::Remote`] with the message if the constructor
    /// panicked (the server serves on).
    pub fn create<P: UserProxy>(&self, typeid: &str) -> Result<P> {
        create_user_object(self.inner.address, typeid)
    }

    /// A process pool of `n` workers for work on this manager's objects
    /// (Python's `SyncManager.Pool`).
    ///
    /// Python runs that pool inside the server and hands out a proxy to it,
    /// because its tasks are pickled callables any client may send. Here a
    /// task is a `fn` of this binary and its results return through shared
    /// memory to the process that submitted it, so the honest form is a
    /// [`Pool`] started for the manager by the calling process: its workers
    /// use the start method the manager was started with (the default for
    /// a manager connected to) and inherit this process's authkey, so proxies
    /// to the manager's objects passed in tasks work in them. It is a plain
    /// `Pool`, not a proxy: it cannot be handed to another process (which
    /// makes its own), and it ends when dropped, independently of the
    /// manager.
    ///
    /// ```
    /// use multiproc::{DictProxy, Manager};
    ///
    /// fn record((d, n): (DictProxy<u32, u32>, u32)) -> u32 {
    ///     d.insert(n, n * n).unwrap();
    ///     n
    /// }
    ///
    /// fn main() {
    ///     multiproc::init();
    ///     let manager = Manager::start().unwrap();
    ///     let d = manager.dict::<u32, u32>().unwrap();
    ///     let pool = manager.pool(2).unwrap();
    ///     let done = pool.map(record, (0..4).map(|n| (d.clone(), n))).unwrap();
    ///     assert_eq!(done, vec![0, 1, 2, 3]);
    ///     assert_eq!(d.get(&3).unwrap(), Some(9));
    ///     drop(pool);
    ///     manager.shutdown().unwrap();
    /// }
    /// ```
    pub fn pool(&self, n: usize) -> Result<Pool> {
        let mut builder = Pool::builder().processes(n);
        if let Some(m) = self.inner.method {
            builder = builder.start_method(m);
        }
        builder.build()
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

    /// Asks the server to create a segment from `spec`, opens it as an `H`,
    /// lets `init` fill it, then lets the server drop its hold.
    fn create_shm<H: ShareHandle>(&self, spec: ShmSpec, init: impl FnOnce(&H)) -> Result<H> {
        let conn = client::connection(&self.inner.address)?;
        let reply = conn.call(&Request::CreateShm(spec))?;
        let (object, repr) = match reply.get()? {
            ArchivedResponse::Handle { object, handle } => (
                object.to_native(),
                multiproc_runtime::rkyv::deserialize::<_, multiproc_runtime::rkyv::rancor::Error>(
                    handle,
                )
                .map_err(|e| Error::Codec(e.to_string()))?,
            ),
            _ => return Err(unexpected()),
        };
        let opened = H::from_repr(&repr);
        if let Ok(h) = &opened {
            init(h);
        }
        conn.call(&Request::Release { object, count: 1 })?.get()?;
        opened
    }

    /// A new lock, created by the server (Python's `manager.Lock()`); the
    /// handle acts on the shared segment directly.
    pub fn lock(&self) -> Result<Lock> {
        self.create_shm(Lock::spec(), |_| {})
    }

    /// A new recursive lock, created by the server (Python's `manager.RLock()`).
    pub fn rlock(&self) -> Result<RLock> {
        self.create_shm(RLock::spec(), |_| {})
    }

    /// A new semaphore at `value`, created by the server (Python's `manager.Semaphore()`).
    pub fn semaphore(&self, value: u32) -> Result<Semaphore> {
        self.create_shm(Semaphore::spec(value), |_| {})
    }

    /// A new bounded semaphore at `value`, created by the server (Python's
    /// `manager.BoundedSemaphore()`).
    pub fn bounded_semaphore(&self, value: u32) -> Result<BoundedSemaphore> {
        self.create_shm(BoundedSemaphore::spec(value), |_| {})
    }

    /// A new condition with its own recursive lock, created by the server
    /// (Python's `manager.Condition()`).
    pub fn condition(&self) -> Result<Condition> {
        self.create_shm(Condition::spec(), |_| {})
    }

    /// A new condition over `lock`, a shared-memory [`Lock`] or [`RLock`]
    /// (one this manager or a plain constructor made), as Python's
    /// `manager.Condition(lock)`; [`Error::InvalidArgument`] for a lock a
    /// TCP manager keeps. The condition's own words live in a segment this
    /// process creates (as [`Condition::with_lock`] does); its lock is
    /// the one given.
    pub fn condition_with(
        &self,
        lock: impl Into<multiproc_runtime::ConditionLock>,
    ) -> Result<Condition> {
        let lock = lock.into();
        if lock.server().is_some() {
            return Err(Error::InvalidArgument(
                "a local manager's condition needs a shared-memory lock".into(),
            ));
        }
        Condition::with_lock(lock)
    }

    /// A new, clear event, created by the server (Python's `manager.Event()`).
    pub fn event(&self) -> Result<Event> {
        self.create_shm(Event::spec(), |_| {})
    }

    /// A new barrier for `parties` parties, created by the server (Python's
    /// `manager.Barrier()`).
    pub fn barrier(&self, parties: usize) -> Result<Barrier> {
        self.create_shm(Barrier::spec(parties)?, |_| {})
    }

    /// A new unbounded queue (1 MiB ring), created by the server (Python's `manager.Queue()`).
    pub fn queue<T: Shareable>(&self) -> Result<Queue<T>> {
        self.queue_with_maxsize(0)
    }

    /// A new queue holding at most `maxsize` messages (0: no limit), created by the server.
    pub fn queue_with_maxsize<T: Shareable>(&self, maxsize: usize) -> Result<Queue<T>> {
        self.create_shm(Queue::<T>::spec(maxsize, DEFAULT_CAPACITY_BYTES)?, |_| {})
    }

    /// A new unbounded joinable queue, created by the server (Python's
    /// `manager.JoinableQueue()`).
    pub fn joinable_queue<T: Shareable>(&self) -> Result<JoinableQueue<T>> {
        self.joinable_queue_with_maxsize(0)
    }

    /// A new joinable queue holding at most `maxsize` messages (0: no
    /// limit), created by the server (Python's `manager.JoinableQueue(maxsize)`).
    pub fn joinable_queue_with_maxsize<T: Shareable>(
        &self,
        maxsize: usize,
    ) -> Result<JoinableQueue<T>> {
        self.create_shm(
            JoinableQueue::<T>::spec(maxsize, DEFAULT_CAPACITY_BYTES)?,
            |_| {},
        )
    }

    /// A new shared value holding `v`, created by the server (Python's `manager.Value()`).
    pub fn value<T: ShmSafe>(&self, v: T) -> Result<Value<T>> {
        self.create_shm(Value::<T>::spec(), |h: &Value<T>| h.set(v))
    }

    /// A new shared array holding a copy of `values`, created by the server
    /// (Python's `manager.Array()`).
    pub fn array<T: ShmSafe>(&self, values: &[T]) -> Result<Array<T>> {
        self.create_shm(Array::<T>::spec(values.len())?, |h: &Array<T>| {
            if let Ok(mut guard) = h.lock() {
                guard.copy_from_slice(values);
            }
        })
    }

    /// How many objects the server holds now (Python's debug info), for tests
    /// and leak hunting.
    pub fn number_of_objects(&self) -> Result<usize> {
        let conn = client::connection(&self.inner.address)?;
        match conn.call(&Request::NumberOfObjects)?.get()? {
            ArchivedResponse::Len(n) => Ok(n.to_native() as usize),
            _ => Err(unexpected()),
        }
    }

    /// Stops the server and waits for its process to end (killing it if it
    /// does not within a few seconds). Proxies fail with `ManagerGone` after.
    ///
    /// Only the process that started the manager may shut it down.
    pub fn shutdown(&self) -> Result<()> {
        self.inner.shutdown()
    }
}

impl Inner {
    fn shutdown(&self) -> Result<()> {
        if self.owner != sys::process::getpid() {
            return Err(Error::InvalidState(
                "only the process that started a manager can shut it down".into(),
            ));
        }
        if self.shut_down.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        // On a connection of its own: the shared one may be held by a call
        // that does not return (a server that stopped answering is killed below).
        if self.address.is_alive()
            && let Err(e) = client::request_shutdown(&self.address)
        {
            tracing::debug!("manager shutdown request failed: {e}");
        }
        client::forget(&self.address);
        let Some(mut p) = self.process.lock().take() else {
            return Ok(());
        };
        match p.join_timeout(EXIT_TIMEOUT) {
            Ok(()) => Ok(()),
            Err(Error::Timeout(_)) => {
                let _ = p.kill();
                let _ = p.join();
                Ok(())
            }
            // Killed by someone else, for example: it is gone, which was the point.
            Err(e) => {
                tracing::debug!("manager server ended badly: {e}");
                Ok(())
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // A forked child's copy of the manager leaves the server alone.
        if self.owner == sys::process::getpid()
            && let Err(e) = self.shutdown()
        {
            tracing::debug!("manager shutdown failed: {e}");
        }
    }
}
