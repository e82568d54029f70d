//! Hangs a user could trigger with an ordinary panic, and the data such a
//! panic must not lose: a served method that panics, a pool input iterator
//! that panics, callbacks that panic, and a caller stuck on a wedged server.
//!
//! Each scenario runs under [`within`], so a regression fails the test after
//! a generous bound instead of hanging CI.

mod util;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use multiproc::{
    BaseManager, Callbacks, DictProxy, Error, Manager, Pool, Process, RemoteManager, StartMethod,
    ThreadPool,
};
use util::{PROMPTLY, eventually};

multiproc::init_before_main!();

const METHODS: [StartMethod; 2] = [StartMethod::Spawn, StartMethod::Fork];
const KEY: &[u8] = b"panics-test-key";
/// The bound on a whole scenario: far more than it takes on a loaded machine.
const SCENARIO: Duration = Duration::from_secs(120);

/// Runs `f` on its own thread and returns what it returned; fails the test
/// if it takes longer than `limit` (the hang being tested for), and passes
/// on a panic of `f`.
fn within<T: Send + 'static>(
    what: &str,
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let runner = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => {
            let _ = runner.join();
            v
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what}: still running after {limit:?} (a hang)")
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => match runner.join() {
            Err(p) => std::panic::resume_unwind(p),
            Ok(()) => panic!("{what}: ended without a result"),
        },
    }
}

// ---------------------------------------------------------------------------
// Served methods that panic
// ---------------------------------------------------------------------------

/// A user type whose method panics after changing the object.
#[derive(Default)]
struct Fragile {
    calls: u64,
}

#[multiproc::remote(proxy = FragileProxy)]
impl Fragile {
    /// Counts the call, then panics with `message`.
    #[remote(1)]
    fn explode(&mut self, message: String) -> u64 {
        self.calls += 1;
        panic!("{message}");
    }
    /// How many calls `explode` counted.
    #[remote(2)]
    fn calls(&self) -> u64 {
        self.calls
    }
}

fn fragile_config() -> BaseManager<(Fragile, ())> {
    BaseManager::new()
        .address("127.0.0.1:0")
        .authkey(KEY)
        .register::<DictProxy<String, u64>>("stats")
        .register_object::<Fragile>("fragile")
}

fn connect(address: &str) -> RemoteManager {
    BaseManager::new()
        .address(address)
        .authkey(KEY)
        .connect()
        .expect("client connects")
}

/// Expects the panic of a served method as `Error::Remote` with its message.
fn remote_panic<T: std::fmt::Debug>(r: multiproc::Result<T>, message: &str) {
    match r {
        Err(Error::Remote(m)) => {
            assert!(m.contains(message), "{m:?} lacks {message:?}");
            assert!(m.contains("panicked"), "{m:?}");
            // The method is named (it was a bare number, from a newcomer's port).
            assert!(m.contains("explode"), "{m:?}");
        }
        other => panic!("expected the remote panic {message:?}, got {other:?}"),
    }
}

/// In a child: makes the served method panic, then reads the object.
fn explode_from_child(address: String) -> u64 {
    let m = connect(&address);
    let f: FragileProxy = m.get_object("fragile").unwrap();
    let message = format!("child {} says boom", std::process::id());
    remote_panic(f.explode(message.clone()), &message);
    // The same connection serves on.
    f.calls().unwrap()
}

/// Regression: a served method that panicked never answered its caller,
/// and every later call of that process to that server (a new connection,
/// `shutdown`, the manager's `Drop`) hung behind it.
#[test]
fn a_panicking_served_method_is_an_error_and_the_server_serves_on() {
    within("a panicking served method", SCENARIO, || {
        let master = fragile_config().start().expect("server starts");
        let address = master.address().to_string();
        let f: FragileProxy = master.get_object("fragile").unwrap();
        remote_panic(f.explode("first boom".into()), "first boom");
        // The object keeps what the method did before it panicked (as in
        // Python), and the same proxy and connection go on working.
        assert_eq!(f.calls().unwrap(), 1);
        remote_panic(f.explode("second boom".into()), "second boom");
        assert_eq!(f.calls().unwrap(), 2);
        let stats: DictProxy<String, u64> = master.get("stats").unwrap();
        stats.insert("calls".into(), 2).unwrap();
        // New connections from this process and from children work too.
        let other = connect(&address);
        let f2: FragileProxy = other.get_object("fragile").unwrap();
        assert_eq!(f2.calls().unwrap(), 2);
        let mut seen = 2;
        for m in METHODS {
            let mut p = Process::new(explode_from_child, address.clone()).start_method(m);
            p.start().unwrap();
            let calls = p.join_timeout(PROMPTLY).unwrap();
            seen += 1;
            assert_eq!(calls, seen, "{m:?}");
        }
        assert_eq!(f.calls().unwrap(), seen);
        assert_eq!(stats.get(&"calls".to_string()).unwrap(), Some(2));
        drop((f, f2, stats, other));
        master.shutdown().unwrap();
    });
}

/// The same with the server running in this process (`get_server`): the
/// panic stays in its connection thread, the process and server live on.
#[test]
fn a_server_in_this_process_survives_a_panicking_method() {
    within(
        "a panicking method of an in-process server",
        SCENARIO,
        || {
            let server = fragile_config().get_server().expect("server binds");
            let address = server.address().to_string();
            let stop = server.shutdown_handle();
            let serving = std::thread::spawn(move || server.serve_forever());
            let client = connect(&address);
            let f: FragileProxy = client.get_object("fragile").unwrap();
            for round in 1..=3 {
                remote_panic(f.explode(format!("boom {round}")), &format!("boom {round}"));
                assert_eq!(f.calls().unwrap(), round);
            }
            client.shutdown().unwrap();
            stop.shutdown();
            serving.join().unwrap();
        },
    );
}

/// The gate that [`Gate`] objects share in the server process.
static GATE: Mutex<(bool, bool)> = Mutex::new((false, false));
static GATE_CHANGED: Condvar = Condvar::new();

/// A served method that blocks until another call opens the gate (at most
/// two minutes, so a failed test leaves no server behind for long).
#[derive(Default)]
struct Gate;

#[multiproc::remote(proxy = GateProxy)]
impl Gate {
    /// Waits until the gate opens; returns whether it did.
    #[remote(1)]
    fn wait_open(&self) -> bool {
        let mut g = GATE.lock().unwrap();
        g.0 = true;
        GATE_CHANGED.notify_all();
        let (g, _) = GATE_CHANGED
            .wait_timeout_while(g, Duration::from_secs(120), |g| !g.1)
            .unwrap();
        g.1
    }
    /// Whether a caller waits in `wait_open` (or did).
    #[remote(2)]
    fn entered(&self) -> bool {
        GATE.lock().unwrap().0
    }
    /// Opens the gate.
    #[remote(3)]
    fn open(&self) {
        GATE.lock().unwrap().1 = true;
        GATE_CHANGED.notify_all();
    }
    /// Closes the gate again.
    #[remote(4)]
    fn reset(&self) {
        *GATE.lock().unwrap() = (false, false);
    }
}

fn gate_config() -> BaseManager<(Gate, (Gate, ()))> {
    BaseManager::new()
        .address("127.0.0.1:0")
        .authkey(KEY)
        .register::<DictProxy<String, u64>>("stats")
        .register_object::<Gate>("waiting")
        .register_object::<Gate>("control")
}

/// Regression: a served method runs as long as it likes; while it ran, its
/// caller held the connection that every thread of the process shares, so
/// no other call, new connection or shutdown got through.
#[test]
fn a_slow_served_method_holds_up_only_its_caller() {
    within("a slow served method", SCENARIO, || {
        let master = gate_config().start().expect("server starts");
        let address = master.address().to_string();
        let waiting: GateProxy = master.get_object("waiting").unwrap();
        let control: GateProxy = master.get_object("control").unwrap();
        let stats: DictProxy<String, u64> = master.get("stats").unwrap();
        let waiter = std::thread::spawn(move || waiting.wait_open());
        // Not synchronisation of our own steps: the waiter is in the server.
        assert!(eventually(PROMPTLY, || control.entered().unwrap()));
        // Meanwhile this process's other calls and new connections go through.
        stats.insert("n".into(), 1).unwrap();
        assert_eq!(stats.get(&"n".to_string()).unwrap(), Some(1));
        let other = connect(&address);
        let mirror: DictProxy<String, u64> = other.get("stats").unwrap();
        assert_eq!(mirror.get(&"n".to_string()).unwrap(), Some(1));
        control.open().unwrap();
        assert!(waiter.join().unwrap().unwrap(), "the gate opened");

        // A shutdown while a call waits in the server: the caller hears of it.
        control.reset().unwrap();
        let waiting: GateProxy = master.get_object("waiting").unwrap();
        let waiter = std::thread::spawn(move || waiting.wait_open());
        assert!(eventually(PROMPTLY, || control.entered().unwrap()));
        drop((control, stats, mirror, other));
        master.shutdown().unwrap();
        assert!(matches!(waiter.join().unwrap(), Err(Error::ManagerGone(_))));
    });
}

fn exit_code(code: i32) -> i32 {
    code
}

/// Regression: with a server that does not answer (here: stopped with
/// SIGSTOP), forking a child (which pins this process's objects for it
/// first, holding the process's client lock) waited for the server forever,
/// and with a call stuck on the shared connection, dropping the manager
/// did. The start method of the server makes no difference to the client,
/// so one is enough. Connecting to a server that does not answer gives up
/// after 30 s, hence the longer bound.
#[test]
fn a_stopped_server_blocks_neither_a_fork_nor_dropping_the_manager() {
    within(
        "forking and dropping beside a stopped server",
        2 * SCENARIO,
        || {
            let manager = Manager::start_with(StartMethod::Spawn).expect("manager starts");
            let server = manager.pid();
            let d = manager.dict::<u32, u32>().unwrap();
            d.insert(1, 1).unwrap();
            let calls = Arc::new(AtomicU64::new(0));
            let (c, d2) = (calls.clone(), d.clone());
            let caller = std::thread::spawn(move || {
                loop {
                    if let Err(e) = d2.get(&1) {
                        return e;
                    }
                    c.fetch_add(1, Ordering::SeqCst);
                }
            });
            assert!(eventually(PROMPTLY, || calls.load(Ordering::SeqCst) > 0));
            // SAFETY: kill(2) on the manager's server, a child of this process.
            unsafe { libc::kill(server, libc::SIGSTOP) };
            // A forked child starts (without the pins it would have had).
            let mut child = Process::new(exit_code, 7).start_method(StartMethod::Fork);
            child.start().unwrap();
            assert_eq!(child.join_timeout(PROMPTLY).unwrap(), 7);
            // Drop (and with it shutdown) ends the server, killing it if it
            // does not answer; the stuck caller is told the manager is gone.
            drop(manager);
            assert!(matches!(caller.join().unwrap(), Error::ManagerGone(_)));
            assert!(matches!(d.get(&1), Err(Error::ManagerGone(_))));
            drop(d);
            util::assert_not_our_zombie(server);
        },
    );
}

// ---------------------------------------------------------------------------
// Pools: input iterators and callbacks that panic
// ---------------------------------------------------------------------------

fn square(x: u64) -> u64 {
    x * x
}

/// The items 0..n, panicking when it reaches `bad`.
fn breaks_at(n: u64, bad: u64) -> impl Iterator<Item = u64> + Send + 'static {
    (0..n).inspect(move |&x| {
        if x == bad {
            panic!("input broke at {x}");
        }
    })
}

/// A pool under test: a process pool or a thread pool.
enum AnyPool {
    Processes(Pool),
    Threads(ThreadPool),
}

impl AnyPool {
    fn all() -> Vec<(String, fn() -> AnyPool)> {
        fn spawn() -> AnyPool {
            AnyPool::processes(StartMethod::Spawn, None)
        }
        fn fork() -> AnyPool {
            AnyPool::processes(StartMethod::Fork, None)
        }
        fn spawn_1() -> AnyPool {
            AnyPool::processes(StartMethod::Spawn, Some(1))
        }
        fn fork_1() -> AnyPool {
            AnyPool::processes(StartMethod::Fork, Some(1))
        }
        fn threads() -> AnyPool {
            AnyPool::Threads(ThreadPool::new(2).unwrap())
        }
        fn threads_1() -> AnyPool {
            AnyPool::Threads(ThreadPool::with_options::<u8>(2, None, Some(1)).unwrap())
        }
        vec![
            ("Pool/Spawn".into(), spawn as fn() -> AnyPool),
            ("Pool/Fork".into(), fork),
            ("Pool/Spawn/maxtasks=1".into(), spawn_1),
            ("Pool/Fork/maxtasks=1".into(), fork_1),
            ("ThreadPool".into(), threads),
            ("ThreadPool/maxtasks=1".into(), threads_1),
        ]
    }

    fn processes(m: StartMethod, maxtasks: Option<usize>) -> AnyPool {
        let mut b = Pool::builder().processes(2).start_method(m);
        if let Some(n) = maxtasks {
            b = b.maxtasksperchild(n);
        }
        AnyPool::Processes(b.build().unwrap())
    }

    fn imap<I>(
        &self,
        items: I,
        chunksize: usize,
        ordered: bool,
    ) -> multiproc::Result<multiproc::IMapIterator<u64>>
    where
        I: IntoIterator<Item = u64>,
        I::IntoIter: Send + 'static,
    {
        match (self, ordered) {
            (AnyPool::Processes(p), true) => p.chunksize(chunksize).imap(square, items),
            (AnyPool::Processes(p), false) => p.chunksize(chunksize).imap_unordered(square, items),
            (AnyPool::Threads(p), true) => p.chunksize(chunksize).imap(square, items),
            (AnyPool::Threads(p), false) => p.chunksize(chunksize).imap_unordered(square, items),
        }
    }

    fn map(
        &self,
        items: impl IntoIterator<Item = u64>,
        chunksize: Option<usize>,
    ) -> multiproc::Result<Vec<u64>> {
        match (self, chunksize) {
            (AnyPool::Processes(p), Some(n)) => p.chunksize(n).map(square, items),
            (AnyPool::Processes(p), None) => p.map(square, items),
            (AnyPool::Threads(p), Some(n)) => p.chunksize(n).map(square, items),
            (AnyPool::Threads(p), None) => p.map(square, items),
        }
    }

    fn apply_with(
        &self,
        f: fn(u64) -> u64,
        x: u64,
        cb: Callbacks<u64>,
    ) -> multiproc::Result<multiproc::AsyncResult<u64>> {
        match self {
            AnyPool::Processes(p) => p.apply_async_with(f, x, cb),
            AnyPool::Threads(p) => p.apply_async_with(f, x, cb),
        }
    }

    fn close_and_join(&self) -> multiproc::Result<()> {
        match self {
            AnyPool::Processes(p) => {
                p.close();
                p.join()
            }
            AnyPool::Threads(p) => {
                p.close();
                p.join()
            }
        }
    }
}

/// Expects the error an input iterator's panic becomes.
fn input_panic(r: Option<multiproc::Result<u64>>, bad: u64, what: &str) {
    match r {
        Some(Err(Error::InputPanicked { message })) => {
            assert!(
                message.contains(&format!("input broke at {bad}")),
                "{what}: {message:?}"
            );
        }
        other => panic!("{what}: expected the input's panic, got {other:?}"),
    }
}

/// Regression: an `imap` input that panicked killed the pool's result
/// handler (or reached the caller and left the job without a total): that
/// imap and every later call hung, `close` + `join` never returned, and the
/// results of the items before the bad one were lost.
#[test]
fn a_panicking_imap_input_yields_the_results_before_it_then_an_error() {
    for (name, make) in AnyPool::all() {
        within(&name.clone(), SCENARIO, move || {
            let pool = make();
            // The bad item first, inside a chunk, and at a chunk's start.
            for (bad, chunksize) in [(0, 1), (7, 1), (7, 3), (6, 3), (40, 4)] {
                for ordered in [true, false] {
                    let what = format!("{name} bad={bad} chunksize={chunksize} ordered={ordered}");
                    let mut results = pool.imap(breaks_at(100, bad), chunksize, ordered).unwrap();
                    let mut got: Vec<u64> = results
                        .by_ref()
                        .take(bad as usize)
                        .map(|r| r.unwrap_or_else(|e| panic!("{what}: {e}")))
                        .collect();
                    if !ordered {
                        got.sort();
                    }
                    let expected: Vec<u64> = (0..bad).map(square).collect();
                    assert_eq!(got, expected, "{what}");
                    input_panic(results.next(), bad, &what);
                    assert!(results.next().is_none(), "{what}: the iterator ends");
                    assert!(results.next().is_none(), "{what}: and stays ended");
                }
            }
            // Dropped unread after a panic: nothing is left behind either.
            drop(pool.imap(breaks_at(100, 3), 1, true).unwrap());
            // The pool keeps working.
            assert_eq!(
                pool.map(0..20, None).unwrap(),
                (0..20).map(square).collect::<Vec<_>>()
            );
            let tail: Vec<u64> = pool
                .imap(0..10, 2, true)
                .unwrap()
                .map(Result::unwrap)
                .collect();
            assert_eq!(tail, (0..10).map(square).collect::<Vec<_>>());
            // A panic that reached the caller last still lets the pool go idle.
            let mut last = pool.imap(breaks_at(10, 4), 1, true).unwrap();
            for _ in 0..4 {
                last.next().unwrap().unwrap();
            }
            input_panic(last.next(), 4, &name);
            pool.close_and_join().unwrap();
        });
    }
}

/// Regression: `map` over an input that panics.
#[test]
fn map_over_a_panicking_input_is_an_error() {
    for (name, make) in AnyPool::all() {
        within(&name.clone(), SCENARIO, move || {
            let pool = make();
            match pool.map(breaks_at(50, 20), Some(3)) {
                Err(Error::InputPanicked { message }) => {
                    assert!(message.contains("input broke at 20"), "{name}: {message}")
                }
                other => panic!("{name}: {other:?}"),
            }
            assert_eq!(
                pool.map(0..5, None).unwrap(),
                vec![0, 1, 4, 9, 16],
                "{name}"
            );
            pool.close_and_join().unwrap();
        });
    }
}

/// An iterator that yields the items of its inner one but claims another length.
struct Liar<I> {
    inner: I,
    hint: (usize, Option<usize>),
}

impl<I: Iterator> Iterator for Liar<I> {
    type Item = I::Item;
    fn next(&mut self) -> Option<I::Item> {
        self.inner.next()
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.hint
    }
}

/// Regression: `map` trusted its input's `size_hint`; a huge lower bound
/// made it allocate for items that never came (a panic, or an abort when
/// the allocation failed).
#[test]
fn map_does_not_trust_an_inputs_size_hint() {
    for (name, make) in AnyPool::all() {
        within(&name.clone(), SCENARIO, move || {
            let pool = make();
            let expected: Vec<u64> = (0..30).map(square).collect();
            for hint in [
                (usize::MAX, None),
                (1 << 40, None),
                (1 << 40, Some(1 << 40)),
                (0, Some(0)),
                (3, Some(3)),
            ] {
                let liar = Liar {
                    inner: 0..30u64,
                    hint,
                };
                assert_eq!(pool.map(liar, None).unwrap(), expected, "{name} {hint:?}");
                let liar = Liar {
                    inner: 0..30u64,
                    hint,
                };
                let got: Vec<u64> = pool
                    .imap(liar, 4, true)
                    .unwrap()
                    .map(Result::unwrap)
                    .collect();
                assert_eq!(got, expected, "{name} {hint:?}");
            }
            pool.close_and_join().unwrap();
        });
    }
}

fn fails(x: u64) -> u64 {
    panic!("task {x} fails");
}

/// A callback or error callback that panics runs on the pool's result
/// handler: the result is still delivered and the pool works on.
#[test]
fn panicking_callbacks_leave_the_pool_working() {
    for (name, make) in AnyPool::all() {
        within(&name.clone(), SCENARIO, move || {
            let pool = make();
            let ran = Arc::new(AtomicBool::new(false));
            let r1 = ran.clone();
            let ok = pool
                .apply_with(
                    square,
                    6,
                    Callbacks::new().callback(move |_: &u64| {
                        r1.store(true, Ordering::SeqCst);
                        panic!("callback exploded")
                    }),
                )
                .unwrap();
            assert_eq!(ok.get().unwrap(), 36, "{name}");
            assert!(ran.load(Ordering::SeqCst), "{name}: the callback ran");
            let err = pool
                .apply_with(
                    fails,
                    2,
                    Callbacks::new().error_callback(|_| panic!("error callback exploded")),
                )
                .unwrap();
            match err.get() {
                Err(Error::Remote(m)) => assert!(m.contains("task 2 fails"), "{name}: {m}"),
                other => panic!("{name}: {other:?}"),
            }
            for x in 0..10 {
                assert_eq!(
                    pool.apply_with(square, x, Callbacks::new())
                        .unwrap()
                        .get()
                        .unwrap(),
                    x * x
                );
            }
            pool.close_and_join().unwrap();
        });
    }
}

/// Regression: a forked pool worker replaced its panic hook, which takes
/// std's hook lock; forked while another thread of the pool's process was
/// in a panic hook (holding that lock), the worker waited for it forever,
/// and so did the pool's work. `maxtasksperchild(1)` forks a worker per task.
#[test]
fn a_panicking_thread_does_not_wedge_new_forked_workers() {
    within(
        "forking pool workers beside a panicking thread",
        SCENARIO,
        || {
            let stop = Arc::new(AtomicBool::new(false));
            let stopped = stop.clone();
            let panicker = std::thread::spawn(move || {
                while !stopped.load(Ordering::SeqCst) {
                    let _ = std::panic::catch_unwind(|| panic!("a panic beside the pool"));
                }
            });
            let pool = Pool::builder()
                .processes(2)
                .start_method(StartMethod::Fork)
                .maxtasksperchild(1)
                .build()
                .unwrap();
            let got = pool.chunksize(1).map(square, 0..200);
            stop.store(true, Ordering::SeqCst);
            panicker.join().unwrap();
            assert_eq!(got.unwrap(), (0..200).map(square).collect::<Vec<_>>());
            pool.close();
            pool.join().unwrap();
        },
    );
}

fn first_of(item: (u64, Option<DictProxy<u8, u8>>)) -> u64 {
    item.0 * item.0
}

/// An item that cannot be encoded (here: a proxy to a manager that was
/// shut down) ends an `imap`'s input like a panic does: the results of the
/// items before it first, then the error, then the end.
#[test]
fn an_unencodable_imap_item_ends_the_input_after_the_results_before_it() {
    within("an unencodable imap item", SCENARIO, || {
        let manager = Manager::start().expect("manager starts");
        let dead = manager.dict::<u8, u8>().unwrap();
        manager.shutdown().unwrap();
        for m in METHODS {
            let pool = Pool::builder()
                .processes(2)
                .start_method(m)
                .build()
                .unwrap();
            for ordered in [true, false] {
                let items: Vec<(u64, Option<DictProxy<u8, u8>>)> = (0..20)
                    .map(|i| (i, (i == 5).then(|| dead.clone())))
                    .collect();
                let mut results = if ordered {
                    pool.chunksize(1).imap(first_of, items).unwrap()
                } else {
                    pool.chunksize(1).imap_unordered(first_of, items).unwrap()
                };
                let mut got: Vec<u64> = results.by_ref().take(5).map(Result::unwrap).collect();
                got.sort();
                assert_eq!(got, vec![0, 1, 4, 9, 16], "{m:?} ordered={ordered}");
                assert!(
                    matches!(results.next(), Some(Err(_))),
                    "{m:?} ordered={ordered}"
                );
                assert!(results.next().is_none(), "{m:?} ordered={ordered}");
            }
            assert_eq!(pool.map(square, 0..3).unwrap(), vec![0, 1, 4]);
            pool.close();
            pool.join().unwrap();
        }
    });
}

fn refuses(_: u8) {
    panic!("initializer refuses");
}

/// A panicking initializer breaks the pool: every call is an error carrying
/// the panic message (an `imap` too), and the pool still closes and joins.
#[test]
fn a_panicking_initializer_breaks_the_pool_without_a_hang() {
    for m in METHODS {
        within(&format!("{m:?}"), SCENARIO, move || {
            let pool = Pool::builder()
                .processes(2)
                .start_method(m)
                .initializer(refuses, 0u8)
                .build()
                .unwrap();
            broken_pool_calls(&AnyPool::Processes(pool), &format!("{m:?}"));
        });
    }
    within("ThreadPool", SCENARIO, || {
        let pool = ThreadPool::with_options(2, Some((refuses as fn(u8), 0u8)), Some(1)).unwrap();
        broken_pool_calls(&AnyPool::Threads(pool), "ThreadPool");
    });
}

fn broken_pool_calls(pool: &AnyPool, what: &str) {
    let refused = |e: &Error| e.to_string().contains("initializer refuses");
    match pool.map(0..10, None) {
        Err(e) if refused(&e) => {}
        other => panic!("{what}: {other:?}"),
    }
    match pool.imap(0..10, 1, true) {
        Err(e) if refused(&e) => {}
        Err(e) => panic!("{what}: {e}"),
        Ok(results) => {
            for r in results {
                assert!(r.as_ref().is_err_and(refused), "{what}: {r:?}");
            }
        }
    }
    pool.close_and_join().unwrap();
}
