//! # multiproc
//!
//! Python's `multiprocessing`, rebuilt in Rust on shared memory. Linux
//! only: it runs on `memfd`, futexes, pidfds and `/proc`.
//!
//! Coming from Python? [`from_python`] maps each `multiprocessing` name to
//! its form here and says what differs.
//!
//! ## Start a process
//!
//! A target is any non-capturing `fn(A) -> R` (or `fn() -> R`, with
//! [`Process::from_fn`]); the argument and the result travel encoded
//! (several arguments as a tuple). Call [`init`] first in `main`: in a child started by the
//! default spawn method it runs the target and exits.
//!
//! ```
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! fn main() {
//!     multiproc::init();
//!     let mut p = multiproc::Process::new(square, 12);
//!     p.start().unwrap();
//!     assert_eq!(p.join().unwrap(), 144);
//! }
//! ```
//!
//! In integration-test files (where the harness owns `main`) write
//! `multiproc::init_before_main!();` once at the top instead (for unit
//! tests, inside the `#[cfg(test)]` module); a test binary without it gets
//! [`Error::InitMissing`] from `join`, saying so. Code before `init()` runs
//! in every spawned child too.
//!
//! **Logs.** The library logs through `tracing`. A spawned child runs the
//! program from the top and runs its target inside [`init`], so install
//! your subscriber *before* `init()`: then spawned children (processes,
//! pool workers, manager servers) log through one too. Installed after
//! `init()`, it exists only in the parent (and in children forked after
//! it); a spawned child's events go nowhere. Keep that line to building
//! the subscriber (no work, no threads). See `examples/logging.rs`.
//!
//! ```
//! tracing_subscriber::fmt().init(); // before init(): children run it too
//! multiproc::init();
//! // … the program …
//! ```
//!
//! Three start methods, as in Python ([`StartMethod`]): `Spawn` (the
//! default) runs a fresh copy of the program, `Fork` forks this process
//! (and takes capturing closures), `Forkserver` asks a small server, started
//! on first use as a fresh copy of the program, to fork the child: nearly
//! fork's speed, without this process's threads and memory.
//!
//! ## Share a value
//!
//! [`Value`] and [`Array`] live in shared segments; handles to them can be
//! passed to children as arguments, under both start methods. Their data is
//! reached only under their lock: the guard is the one way in (and, for
//! `get_lock()`'s [`DataLock`], the one safe way to release it).
//! [`RawValue`] and [`RawArray`] have no lock; their accesses are atomic, and
//! integer `RawValue`s offer lock-free `fetch_add` and friends.
//! [`Value::with_lock`] and [`Array::with_lock`] guard them with a lock you
//! give (Python's `lock=`), one [`Lock`] or [`RLock`] for many values; those
//! copy on every access, since such a lock cannot vouch for a `&mut`.
//!
//! ```
//! use multiproc::{Process, Value};
//!
//! fn add_many(counter: Value<u64>) {
//!     for _ in 0..1000 {
//!         *counter.lock().unwrap() += 1;
//!     }
//! }
//!
//! fn main() {
//!     multiproc::init();
//!     let counter = Value::new(0u64).unwrap();
//!     let mut workers: Vec<_> = (0..2)
//!         .map(|_| Process::new(add_many, counter.clone()))
//!         .collect();
//!     for w in &mut workers {
//!         w.start().unwrap();
//!     }
//!     for w in &mut workers {
//!         w.join().unwrap();
//!     }
//!     assert_eq!(counter.get(), 2000);
//! }
//! ```
//!
//! ## Share memory by name
//!
//! [`shared_memory`] is Python's `multiprocessing.shared_memory`: segments in
//! `/dev/shm` (mode 0600) that any process of the same user attaches by
//! name, a program you did not start or Python included. A segment's
//! creator's tracker unlinks it once the creator is gone, even after a
//! SIGKILL.
//!
//! ```
//! use multiproc::shared_memory::{Item, ShareableList, SharedMemory};
//!
//! let shm = SharedMemory::create(None, 1024).unwrap();
//! shm.write(0, b"ready").unwrap();
//! // In any process of this user, given the name:
//! let seen = SharedMemory::attach(shm.name()).unwrap();
//! let mut buf = [0u8; 5];
//! seen.read(0, &mut buf).unwrap();
//! assert_eq!(&buf, b"ready");
//! shm.unlink().unwrap();
//!
//! // Python's ShareableList, in Python's layout.
//! let list = ShareableList::create(None, &[Item::Int(1), "two".into()]).unwrap();
//! assert_eq!(list.get(1).unwrap(), Item::Str("two".into()));
//! list.shm().unlink().unwrap();
//! ```
//!
//! ## Send messages
//!
//! A [`Queue`] carries messages between any number of producers and
//! consumers; a [`Pipe`] connects two processes. Both live in shared memory
//! (no feeder thread, no socket): a `put` that returned is in the queue.
//!
//! ```
//! use multiproc::{Connection, Pipe, Process, Queue};
//!
//! fn square_all(args: (Queue<Option<u64>>, Connection<u64>)) {
//!     let (tasks, results) = args;
//!     while let Some(x) = tasks.get().unwrap() {
//!         results.send(x * x).unwrap();
//!     }
//! }
//!
//! fn main() {
//!     multiproc::init();
//!     let tasks = Queue::new().unwrap();
//!     let (results, child_end) = Pipe::new().unwrap();
//!     let mut p = Process::new(square_all, (tasks.clone(), child_end));
//!     p.start().unwrap();
//!     for x in [1, 2, 3] {
//!         tasks.put(Some(x)).unwrap();
//!     }
//!     tasks.put(None).unwrap();
//!     let squares: Vec<u64> = (0..3).map(|_| results.recv().unwrap()).collect();
//!     assert_eq!(squares, [1, 4, 9]);
//!     p.join().unwrap();
//! }
//! ```
//!
//! ## Send your own types
//!
//! `#[derive(Shareable)]` makes a struct or enum of yours
//! [`Shareable`](trait@Shareable): a
//! process argument or result, a queue or pipe message, a manager's dict
//! value, a pool task. Nothing else is needed (no `rkyv` dependency, no
//! other attribute); a field whose type cannot travel is a compile error
//! at that field.
//!
//! ```
//! use multiproc::{Pipe, Process, Shareable};
//!
//! #[derive(Shareable, Debug, PartialEq)]
//! enum Command {
//!     Resize { width: u32, height: u32 },
//!     Rename(String),
//!     Quit,
//! }
//!
//! #[derive(Shareable, Debug, PartialEq)]
//! struct Reply<T> {
//!     done: u32,
//!     last: T,
//! }
//!
//! fn worker(end: multiproc::Connection<Command>) -> Reply<Option<String>> {
//!     let mut reply = Reply { done: 0, last: None };
//!     while let Ok(cmd) = end.recv() {
//!         match cmd {
//!             Command::Quit => break,
//!             Command::Rename(name) => reply.last = Some(name),
//!             Command::Resize { .. } => {}
//!         }
//!         reply.done += 1;
//!     }
//!     reply
//! }
//!
//! fn main() {
//!     multiproc::init();
//!     let (here, there) = Pipe::new().unwrap();
//!     let mut p = Process::new(worker, there);
//!     p.start().unwrap();
//!     here.send(Command::Resize { width: 640, height: 480 }).unwrap();
//!     here.send(Command::Rename("photo".into())).unwrap();
//!     here.send(Command::Quit).unwrap();
//!     let reply = p.join().unwrap();
//!     assert_eq!(reply, Reply { done: 2, last: Some("photo".to_string()) });
//! }
//! ```
//!
//! ## Wait on several things at once
//!
//! [`wait`] (Python's `multiprocessing.connection.wait`) returns the ready
//! ones among pipe ends, socket connections, queues and process
//! [`Sentinel`]s (ready once the process ended).
//!
//! ```
//! use multiproc::{wait, Pipe, Process, Queue, StartMethod};
//!
//! fn report(q: Queue<u32>) {
//!     q.put(7).unwrap();
//! }
//!
//! fn main() {
//!     multiproc::init();
//!     let q = Queue::new().unwrap();
//!     let (quiet, _other_end) = Pipe::new::<u32>().unwrap();
//!     let mut p = Process::new(report, q.clone()).start_method(StartMethod::Forkserver);
//!     p.start().unwrap();
//!     let ended = p.sentinel().unwrap();
//!     let mut seen = Vec::new();
//!     while seen.len() < 2 {
//!         for i in wait(&[&quiet, &q, &ended], None).unwrap() {
//!             if i == 1 {
//!                 assert_eq!(q.get().unwrap(), 7);
//!             }
//!             if !seen.contains(&i) {
//!                 seen.push(i);
//!             }
//!         }
//!     }
//!     p.join().unwrap();
//! }
//! ```
//!
//! ## Use a pool
//!
//! A [`Pool`] fans a function out over worker processes: `map`, `starmap`
//! (and `starmap3` … `starmap6` for tuples of three to six arguments),
//! `imap`, `imap_unordered`, `apply_async` with callbacks. A chunk size
//! other than the default goes first: `pool.chunksize(8).map(f, items)`.
//! An idle worker takes the next chunk while another runs a long one (a
//! worker holds about 2 ms of queued work at most; `PoolBuilder::prefetch`
//! changes that), and inputs are encoded as workers take them, so a long
//! `map` holds a bounded number of encoded chunks. A panicking task is an
//! error carrying its message and where it panicked; a worker that dies
//! fails only the tasks it held (`Error::WorkerDied`) and is replaced; an
//! input iterator that panics is `Error::InputPanicked` (after the results
//! of the items before it, for `imap`). [`ThreadPool`] has the same API
//! over threads of this process, where a task may also be a closure
//! (capturing an `Arc`, say) and nothing is encoded.
//!
//! ```
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! fn volume(w: u64, h: u64, d: u64) -> u64 {
//!     w * h * d
//! }
//!
//! fn main() {
//!     multiproc::init();
//!     let pool = multiproc::Pool::new(2).unwrap();
//!     assert_eq!(pool.map(square, 1..=4).unwrap(), vec![1, 4, 9, 16]);
//!     let mut lazy = pool.chunksize(8).imap(square, 1u64..).unwrap();
//!     assert_eq!(lazy.next().unwrap().unwrap(), 1);
//!     let volumes = pool.starmap3(volume, [(1, 2, 3), (2, 2, 2)]).unwrap();
//!     assert_eq!(volumes, vec![6, 8]);
//!
//!     let threads = multiproc::ThreadPool::new(2).unwrap();
//!     let offset = std::sync::Arc::new(10u64);
//!     let shifted = threads.map(move |x: u64| x + *offset, 1..=3).unwrap();
//!     assert_eq!(shifted, vec![11, 12, 13]);
//! }
//! ```
//!
//! ## Use a manager
//!
//! A [`Manager`] starts a server process that owns dicts, lists and
//! namespaces; typed proxies to them can be cloned, passed to children and
//! stored inside other managed objects. `update_with` is an atomic
//! read-modify-write, so counting from many processes loses nothing.
//!
//! Only processes of the server's own user that know its authkey get in:
//! by default the [`AuthKey`] of the process that started it, which every
//! child (spawn or fork) inherits, so the children need nothing more.
//! Another program needs the address and the key
//! ([`Manager::connect_with_authkey`]).
//!
//! ```
//! use multiproc::{DictProxy, Manager, Process};
//!
//! fn tally(d: DictProxy<String, u64>) {
//!     for _ in 0..100 {
//!         d.update_with("total".to_string(), 0, |n| n + 1).unwrap();
//!     }
//! }
//!
//! fn main() {
//!     multiproc::init();
//!     let manager = Manager::start().unwrap();
//!     let d = manager.dict::<String, u64>().unwrap();
//!     let mut workers: Vec<_> = (0..2).map(|_| Process::new(tally, d.clone())).collect();
//!     for w in &mut workers {
//!         w.start().unwrap();
//!     }
//!     for w in &mut workers {
//!         w.join().unwrap();
//!     }
//!     assert_eq!(d.get(&"total".to_string()).unwrap(), Some(200));
//!     manager.shutdown().unwrap();
//! }
//! ```
//!
//! A [`Lock`], an [`Event`] or a [`Semaphore`] is one type wherever it lives: in shared
//! memory (`Lock::new()`, a local `Manager`) or in a TCP [`BaseManager`]'s
//! server. A function written against it runs unchanged with either
//! manager, and either flavour passes to children and inside messages:
//!
//! ```
//! use multiproc::{BaseManager, Event, Lock, Manager, Result};
//!
//! fn worker(lock: Lock, done: Event) -> Result<()> {
//!     let _held = lock.lock()?;
//!     done.set()
//! }
//!
//! fn main() -> Result<()> {
//!     multiproc::init();
//!     let here = Manager::start()?;
//!     worker(here.lock()?, here.event()?)?;
//!     let there = BaseManager::new().authkey(b"k").start()?;
//!     worker(there.lock()?, there.event()?)?;
//!     here.shutdown()?;
//!     there.shutdown()
//! }
//! ```
//!
//! ## Serve your own type
//!
//! A [`BaseManager`] serves over TCP, to workers on any host that knows its
//! authkey. Besides dicts, lists and queues it can own a value of your own
//! type: mark the impl block with [`remote`](macro@remote) and number the
//! methods clients may call (the numbers are the wire format); a worker
//! calls them through the generated typed proxy. A method that panics is an
//! `Error::Remote` carrying the panic message for its caller; the server
//! serves on.
//!
//! ```
//! use multiproc::{BaseManager, Process};
//!
//! #[derive(Default)]
//! struct Counter {
//!     n: i64,
//! }
//!
//! #[multiproc::remote(proxy = CounterProxy)]
//! impl Counter {
//!     #[remote(1)]
//!     fn incr(&mut self, by: i64) -> i64 {
//!         self.n += by;
//!         self.n
//!     }
//!     #[remote(2)]
//!     fn get(&self) -> i64 {
//!         self.n
//!     }
//! }
//!
//! // A worker: any process (on any host) that reaches the master.
//! fn worker(address: String) -> i64 {
//!     let m = BaseManager::new().address(address).authkey(b"secret").connect().unwrap();
//!     let counter: CounterProxy = m.get_object("counter").unwrap();
//!     counter.incr(5).unwrap()
//! }
//!
//! fn main() {
//!     multiproc::init();
//!     let master = BaseManager::new()
//!         .authkey(b"secret")
//!         .register_object::<Counter>("counter")
//!         .start()
//!         .unwrap();
//!     let mut p = Process::new(worker, master.address().to_string());
//!     p.start().unwrap();
//!     assert_eq!(p.join().unwrap(), 5);
//!     let counter: CounterProxy = master.get_object("counter").unwrap();
//!     assert_eq!(counter.get().unwrap(), 5);
//!     master.shutdown().unwrap();
//! }
//! ```
//!
//! ## Python workers on a Rust manager
//!
//! With [`BaseManager::python`] (or `multiproc serve --python-address`), the
//! server also listens for CPython's own `BaseManager` clients, unchanged:
//! each named queue is a typeid they `register` and call
//! (`m.get_task_queue()`), and a queue of [`py::Value`] for Rust clients.
//! See [`py`] for what travels and how hostile pickles are refused.
//!
//! ```
//! use multiproc::py::{PythonOptions, Value};
//! use multiproc::{BaseManager, Queue};
//!
//! multiproc::init();
//! let master = BaseManager::new()
//!     .authkey(b"secret")
//!     .python(PythonOptions::new("127.0.0.1:0".parse().unwrap()).queue("get_task_queue"))
//!     .start()
//!     .unwrap();
//! // Python workers: QueueManager(address=master.python_address(), authkey=b"secret")
//! let tasks: Queue<Value> = master.get("get_task_queue").unwrap();
//! tasks.put(Value::from((1, "square"))).unwrap();
//! let (n, op): (i64, String) = tasks.get().unwrap().try_into().unwrap();
//! assert_eq!((n, op.as_str()), (1, "square"));
//! master.shutdown().unwrap();
//! ```
//!
//! ## Past one machine: a distributed Pool on Redis
//!
//! With the `redis` feature, a [`Pool`] can hand its tasks to workers on
//! any host through a Redis server: `Pool::builder().redis(url).name("jobs")`
//! gives the same `Pool` with the same calls (`map`, `imap`, `starmap`,
//! `apply_async` with callbacks, `chunksize`). Chunks go on a Redis stream
//! that the workers read in a consumer group; results come back on a list
//! of the submitting pool's own, and nothing of the pool is left in Redis
//! once it is dropped.
//!
//! Tasks are functions of *your* program, sent as their place in its
//! binary, so a generic `multiproc worker` command cannot run them: a
//! worker is your own program, the same build, started on each host with
//! `MULTIPROC_WORKER` set. [`init`] then turns it into a worker that
//! serves until it is signalled (or call `multiproc::worker::run` yourself):
//!
//! ```text
//! MULTIPROC_WORKER=redis://:password@10.0.0.5:6379/0/jobs ./my_program
//! ```
//!
//! (the server's URL, then `/` and the pool name). A worker of another
//! build refuses the task, which fails with [`Error::BinaryMismatch`]
//! naming both builds. A worker killed mid-task stops renewing its claim;
//! after the pool's lease (`PoolBuilder::lease`, default 10 s) the task is
//! run again by another worker, up to `PoolBuilder::max_retries` times
//! (default 3), then fails with [`Error::WorkerDied`]. A task that panics
//! is the same error as in a local pool, and the worker carries on.
//! `pool.workers()` lists the live workers (host, pid, tasks done) from
//! their heartbeats. An unreachable server, a wrong password or a server
//! gone mid-call is [`Error::BackendUnavailable`]; with no live worker a
//! task simply waits, so use `get_timeout` (a `map_async(…)?.get_timeout(d)`
//! rather than `map`) where none may come.
//!
//! ```ignore
//! // Needs the `redis` feature and a server; see examples/redis_pool_master.rs.
//! fn square(x: u64) -> u64 { x * x }
//!
//! fn main() -> multiproc::Result<()> {
//!     multiproc::init(); // a process with MULTIPROC_WORKER set serves here
//!     let pool = multiproc::Pool::builder()
//!         .redis("redis://127.0.0.1:6379/0")
//!         .name("jobs")
//!         .build()?;
//!     let squares = pool.map_async(square, 0..10)?.get_timeout(std::time::Duration::from_secs(60))?;
//!     println!("{squares:?} from {} workers", pool.workers()?.len());
//!     Ok(())
//! }
//! ```
//!
//! Whoever can write to the Redis server can make the workers call any
//! task function of their binary with arguments of its choosing: protect
//! the server as you would the workers themselves (a password, a private
//! network).
//!
//! ## Past one machine: objects in Redis
//!
//! With the `redis` feature, `RedisManager::connect("redis://[:password@]host:port/db")`
//! keeps manager objects in a Redis server, by name, so that processes on
//! any host meet at the same object. It hands out the same types as
//! [`Manager`] and [`BaseManager`]: `dict::<K, V>(name)` is a
//! [`DictProxy`] on a Redis hash, `list`, `namespace`, `queue` and
//! `joinable_queue` (a Redis list; a joinable queue's consumer keeps its
//! item until `task_done`, so the item of a consumer that dies first goes
//! to another), `lock` (a key with a lease its holder's process renews; a
//! holder that dies loses it when the lease ends and the next acquirer
//! gets [`Acquired::OwnerDied`]), `rlock` (the same, owned by one thread),
//! `condition` (over its own RLock, or `condition_with(name, lock)` over a
//! Redis `Lock` or `RLock`: waiters block in Redis, a notify is never lost
//! between a waiter's release and its wait, and a dead waiter's notify
//! passes on), `semaphore`, `bounded_semaphore`, `event` and `barrier`.
//! Read-modify-write calls (`update_with`,
//! `setdefault`, `pop`) are atomic in Redis. Objects persist until
//! deleted (`RedisManager::delete(name)`, `RedisManager::clear()` for the
//! whole key prefix). A server that is unreachable, refuses the password or
//! goes away mid-call is [`Error::BackendUnavailable`], never a hang.
//! The distributed `Pool` on Redis is described in the section above.
//!
//! ```ignore
//! // Needs `--features redis` and a Redis server.
//! let redis = multiproc::RedisManager::connect("redis://127.0.0.1:6379/0")?.prefix("myapp")?;
//! let hits = redis.dict::<String, u64>("hits")?;
//! hits.update_with("home".into(), 0, |n| n + 1)?;   // from any host, nothing lost
//! let jobs = redis.joinable_queue::<u32>("jobs")?;
//! let job = jobs.get()?;                              // a worker on another host
//! jobs.task_done()?;
//! ```
//!
//! ## Errors
//!
//! Every fallible call returns [`Result`] with the one [`Error`] enum; blocking
//! calls come as `x`, `try_x` and `x_timeout(Duration)`.
//!
//! A manager call whose request or answer is larger than the connection
//! allows fails with [`Error::MessageTooLarge`], and one past a server's
//! per-connection quotas (see [`BaseManager::max_objects`]) with
//! [`Error::QuotaExceeded`]: that call alone, nothing changed, the
//! connection and its objects unharmed.
//!
//! ## Safety
//!
//! No safe function of this crate can break memory safety: what could
//! (forcing a data lock open, a `RawArray`'s zero-copy slices) is `unsafe`,
//! and the platform layer is private. Modules and items hidden from these
//! docs (`manager`, `wire`, `handle`, `__internal` …) are internals shared
//! with the CLI and tests, with no stability promise.

// The runtime stops first with the same message (this crate is built after
// it); this one keeps the facade's own statement of it.
#[cfg(not(target_os = "linux"))]
compile_error!(
    "multiproc supports Linux only for now (it is built on futexes, memfd, \
     SO_PEERCRED and /proc); other systems are not supported yet"
);

/// Manager objects kept in Redis (feature `redis`): see [the section
/// above](crate#past-one-machine-objects-in-redis).
#[cfg(feature = "redis")]
pub use multiproc_proxy::RedisManager;
#[allow(deprecated)]
pub use multiproc_proxy::{
    BarrierProxy, BoundedSemaphoreProxy, EventProxy, LockProxy, LockProxyGuard, QueueProxy,
    SemaphoreProxy,
};
pub use multiproc_proxy::{
    BaseManager, DictProxy, ListProxy, Manager, ManagerBuilder, ManagerServer, NamespaceProxy,
    ObjectHandle, Parties, Registrable, RemoteManager, RemoteObject, SORT_TIMEOUT, SemaphoreValue,
    ServerAddress, Shareable, ShmSafe, ShutdownHandle, UserProxy, UserTypes, remote, remote_object,
    set_manager_authkey,
};
pub use multiproc_runtime::{
    Acquired, Address, Array, ArrayGuard, AsyncResult, AtomicInt, AuthKey, Barrier,
    BoundedSemaphore, Callbacks, ChildInfo, Chunked, Condition, ConditionGuard, ConditionLock,
    Connection, Context, CurrentProcess, DataLock, DataLockGuard, Error, Event, IMapIterator,
    JoinableQueue, Listener, Lock, LockGuard, ParentProcess, Pipe, Pool, PoolBuilder, Process,
    Queue, Quota, RLock, RLockGuard, RawArray, RawValue, Result, Segment, Semaphore, Sentinel,
    Shareable, ShmSafe, SimpleQueue, SocketConnection, StartMethod, Synchronized,
    SynchronizedArray, ThreadPool, ThreadPoolBuilder, Value, ValueGuard, ValueLock,
    WaitTimeoutResult, Waitable, active_children, client, cpu_count, current_process,
    force_start_method, get_all_start_methods, get_context, get_start_method, init,
    init_before_main, parent_process, set_start_method, wait,
};

/// For Python programmers: each `multiprocessing` name and its Rust form,
/// how spawn starts a child (and what test binaries need), what dropping a
/// `Process` or `Pool` does, and how to call all this from async code.
/// Also `docs/from-python.md` in the repository.
#[doc = include_str!("../docs/from-python.md")]
pub mod from_python {}

/// Python's `multiprocessing.connection`: [`Listener`], [`client`], [`wait`]
/// and the connections they make.
pub use multiproc_runtime::connection;

/// Python's `multiprocessing.shared_memory`: named segments any program of
/// the same user can attach, [`shared_memory::ShareableList`] in Python's
/// layout, and a tracker that unlinks a dead creator's segments.
pub use multiproc_runtime::shared_memory;

/// Python clients on a Rust manager: CPython's `BaseManager` recipe against
/// [`BaseManager::python`] or `multiproc serve --python-address`, and
/// [`py::Value`], what a pickle of plain data becomes.
pub use multiproc_runtime::py;

/// Workers of a distributed [`Pool`] on Redis (feature `redis`): see
/// "Past one machine" above.
#[cfg(feature = "redis")]
pub use multiproc_runtime::worker;

/// The encoding library, re-exported so derives and handles agree on one version.
pub use multiproc_runtime::rkyv;

/// What the code generated by [`remote`] and [`remote_object!`] names.
#[doc(hidden)]
pub use multiproc_proxy::__private;

// Internals of the runtime for the CLI, tests, benches and fuzz targets:
// hidden, no stability promise, not public API (see `multiproc_runtime`).
#[doc(hidden)]
pub use multiproc_runtime::{__internal, deadline, handle, impl_share_handle, manager, wire};
