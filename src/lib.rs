//! # multiproc
//!
//! Python's `multiprocessing`, rebuilt in Rust on shared memory.
//!
//! ## Start a process
//!
//! A target is any non-capturing `fn(A) -> R`; the argument and the result
//! travel encoded. Call [`init`] first in `main`: in a child started by the
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
//! `multiproc::init_before_main!();` once at the top instead.
//!
//! ## Share a value
//!
//! [`Value`] and [`Array`] live in shared segments; handles to them can be
//! passed to children as arguments, under both start methods.
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
//! ## Use a pool
//!
//! A [`Pool`] fans a function out over worker processes: `map`, `starmap`,
//! `imap`, `imap_unordered`, `apply_async` with callbacks. A panicking task is
//! an error carrying its message; a worker that dies fails only the tasks it
//! held (`Error::WorkerDied`) and is replaced; an input iterator that panics
//! is `Error::InputPanicked` (after the results of the items before it, for
//! `imap`). [`ThreadPool`] has the same API.
//!
//! ```
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! fn main() {
//!     multiproc::init();
//!     let pool = multiproc::Pool::new(2).unwrap();
//!     assert_eq!(pool.map(square, 1..=4, None).unwrap(), vec![1, 4, 9, 16]);
//!     let mut lazy = pool.imap(square, 1u64.., 8).unwrap();
//!     assert_eq!(lazy.next().unwrap().unwrap(), 1);
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
//! ## Errors
//!
//! Every fallible call returns [`Result`] with the one [`Error`] enum; blocking
//! calls come as `x`, `try_x` and `x_timeout(Duration)`.

pub use multiproc_proxy::{
    BarrierProxy, BaseManager, BoundedSemaphoreProxy, DictProxy, EventProxy, ListProxy, LockProxy,
    LockProxyGuard, Manager, ManagerServer, NamespaceProxy, ObjectHandle, Parties, QueueProxy,
    Registrable, RemoteManager, RemoteObject, SemaphoreProxy, SemaphoreValue, ServerAddress,
    ShutdownHandle, UserProxy, UserTypes, remote, remote_object, set_manager_authkey,
};
pub use multiproc_runtime::*;

/// What the code generated by [`remote`] and [`remote_object!`] names.
#[doc(hidden)]
pub use multiproc_proxy::__private;
