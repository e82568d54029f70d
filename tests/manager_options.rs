//! How managers start: a server initializer (Python's
//! `SyncManager.start(initializer)`), a joinable queue with a maxsize, and a
//! started `BaseManager`'s server pid, exit code and start method.

mod util;

use multiproc::{
    BaseManager, DictProxy, Error, JoinableQueue, Manager, NamespaceProxy, StartMethod,
};
use util::{PROMPTLY, eventually};

multiproc::init_before_main!();

const METHODS: [StartMethod; 3] = [
    StartMethod::Spawn,
    StartMethod::Fork,
    StartMethod::Forkserver,
];

fn set_test(ns: NamespaceProxy) {
    ns.set("test", 1u32).unwrap();
    ns.set("server_pid", std::process::id()).unwrap();
}

/// CPython's `test_manager_initializer`: the initializer runs in the new
/// manager's server, before `start` returns.
#[test]
fn test_manager_initializer() {
    let first = Manager::start().unwrap();
    for m in METHODS {
        let ns = first.namespace().unwrap();
        let second = Manager::builder()
            .start_method(m)
            .initializer(set_test, ns.clone())
            .start()
            .unwrap();
        assert_eq!(ns.get::<u32>("test").unwrap(), 1, "{m:?}");
        assert_eq!(
            ns.get::<u32>("server_pid").unwrap() as i32,
            second.pid(),
            "{m:?}: it ran in the server"
        );
        second.shutdown().unwrap();
    }
    first.shutdown().unwrap();
}

fn report_value((v, ns): (multiproc::Value<u32>, NamespaceProxy)) {
    ns.set("seen", v.get()).unwrap();
}

/// An initializer's argument made in the call (no copy kept by the caller)
/// still reaches the server: the builder keeps it until the server has run
/// the initializer. Found by a newcomer's first hour.
#[test]
fn an_initializer_argument_made_in_the_call_reaches_the_server() {
    let first = Manager::start().unwrap();
    for m in METHODS {
        let ns = first.namespace().unwrap();
        let second = Manager::builder()
            .start_method(m)
            .initializer(
                report_value,
                (multiproc::Value::new(7u32).unwrap(), ns.clone()),
            )
            .start()
            .unwrap();
        assert_eq!(ns.get::<u32>("seen").unwrap(), 7, "{m:?}");
        second.shutdown().unwrap();
    }
    first.shutdown().unwrap();
}

fn fail_to_start(why: String) {
    panic!("{why}");
}

/// A panicking initializer fails `start` with its message.
#[test]
fn a_panicking_manager_initializer_fails_start() {
    for m in METHODS {
        let r = Manager::builder()
            .start_method(m)
            .initializer(fail_to_start, "no config file".to_string())
            .start();
        match r {
            Err(Error::ManagerGone(msg)) => {
                assert!(msg.contains("no config file"), "{m:?}: {msg}")
            }
            other => panic!("{m:?}: {other:?}"),
        }
    }
}

fn take_two(q: JoinableQueue<u32>) -> Vec<u32> {
    let got = vec![
        q.get_timeout(PROMPTLY).unwrap(),
        q.get_timeout(PROMPTLY).unwrap(),
    ];
    q.task_done().unwrap();
    q.task_done().unwrap();
    got
}

/// Python's `manager.JoinableQueue(maxsize)`: a full queue refuses more,
/// a child drains it and marks the tasks done.
#[test]
fn test_joinable_queue_with_maxsize() {
    for m in METHODS {
        let manager = Manager::start_with(m).unwrap();
        let q = manager.joinable_queue_with_maxsize::<u32>(2).unwrap();
        q.try_put(1).unwrap();
        q.try_put(2).unwrap();
        assert!(matches!(q.try_put(3), Err(Error::Full)), "{m:?}");
        assert!(
            matches!(
                q.try_join(),
                Err(Error::WouldBlock) | Err(Error::Timeout(_))
            ),
            "{m:?}"
        );
        let got = util::run_each(m, take_two, [q.clone()]).remove(0);
        assert_eq!(got, vec![1, 2], "{m:?}");
        q.join_timeout(PROMPTLY).unwrap();
        q.try_put(3).unwrap();
        manager.shutdown().unwrap();
    }
}

/// A started `BaseManager` tells its server's pid and, once it ended, its
/// exit code; the server runs under the start method asked for.
#[test]
fn a_started_base_managers_server_pid_and_exit_code() {
    for m in METHODS {
        let master = BaseManager::new()
            .authkey(b"pid and exit code")
            .start_method(m)
            .register::<DictProxy<String, i64>>("stats")
            .start()
            .unwrap();
        let pid = master.pid().expect("started here");
        assert_ne!(pid, std::process::id() as i32);
        assert!(
            multiproc::active_children().iter().any(|c| c.pid == pid),
            "{m:?}"
        );
        assert_eq!(master.exitcode(), None, "{m:?}: running");
        let connected = BaseManager::new()
            .address(master.address().to_string())
            .authkey(b"pid and exit code")
            .connect()
            .unwrap();
        assert_eq!(connected.pid(), None, "{m:?}: not started here");
        master.shutdown().unwrap();
        assert_eq!(master.exitcode(), Some(0), "{m:?}");
        assert!(util::is_gone(pid), "{m:?}");
    }
}

/// A server killed by a signal reports minus the signal, as Python does.
#[test]
fn a_killed_base_manager_server_reports_the_signal() {
    let master = BaseManager::new()
        .authkey(b"killed server")
        .register::<DictProxy<String, i64>>("stats")
        .start()
        .unwrap();
    let pid = master.pid().unwrap();
    // SAFETY: kill(2) on our own child, which is alive (not yet reaped).
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    assert!(eventually(PROMPTLY, || master.exitcode().is_some()));
    assert_eq!(master.exitcode(), Some(-libc::SIGKILL));
    master.shutdown().unwrap();
    assert_eq!(master.exitcode(), Some(-libc::SIGKILL));
}

/// A user type a local manager's server owns.
#[derive(Default)]
struct Counter {
    n: u64,
}

impl Counter {
    fn add(&mut self, by: u64) -> u64 {
        self.n += by;
        self.n
    }
    fn get(&mut self) -> u64 {
        self.n
    }
}

multiproc::remote_object! {
    Counter as CounterProxy {
        1 => fn add(by: u64) -> u64;
        2 => fn get() -> u64;
    }
}

/// Another user type, to be asked for under the wrong name.
#[derive(Default)]
struct Other;

impl Other {
    fn ping(&mut self) -> bool {
        true
    }
}

multiproc::remote_object! {
    Other as OtherProxy {
        1 => fn ping() -> bool;
    }
}

fn add_from_child(address: multiproc::ServerAddress) -> u64 {
    let manager = Manager::connect(address).unwrap();
    let counter: CounterProxy = manager.get_object("counter").unwrap();
    for _ in 0..99 {
        counter.add(1).unwrap();
    }
    counter.add(1).unwrap()
}

/// Python's `SyncManager.register(typeid, callable)` for one shared object
/// on the local manager: children reach it by name through its typed
/// proxy; an unknown name and a wrong type are typed errors.
#[test]
fn user_objects_registered_on_a_local_manager() {
    for m in METHODS {
        let manager = Manager::builder()
            .start_method(m)
            .register_object::<Counter>("counter")
            .register_object::<Other>("other")
            .start()
            .unwrap();
        let counter: CounterProxy = manager.get_object("counter").unwrap();
        let address = *manager.address();
        let ends = util::run_each(m, add_from_child, (0..3).map(|_| address));
        assert!(ends.iter().all(|&n| n <= 300), "{m:?}: {ends:?}");
        assert_eq!(counter.get().unwrap(), 300, "{m:?}");
        let other: OtherProxy = manager.get_object("other").unwrap();
        assert!(other.ping().unwrap());
        assert!(matches!(
            manager.get_object::<CounterProxy>("missing"),
            Err(Error::KeyNotFound(_))
        ));
        assert!(matches!(
            manager.get_object::<CounterProxy>("other"),
            Err(Error::TypeMismatch { .. })
        ));
        manager.shutdown().unwrap();
    }
    let plain = Manager::start().unwrap();
    assert!(plain.get_object::<CounterProxy>("counter").is_err());
    assert_eq!(
        plain.number_of_objects().unwrap(),
        0,
        "no registry without user objects"
    );
    plain.shutdown().unwrap();
}

fn count_in(args: (DictProxy<String, i64>, i64)) -> i64 {
    let (d, n) = args;
    d.update_with("sum".to_string(), 0, |s| s + n).unwrap();
    n * 2
}

/// Python's `SyncManager.Pool`: a pool for work on the manager's objects,
/// its workers started with the manager's start method.
#[test]
fn a_managers_pool_works_on_its_objects() {
    for m in METHODS {
        let manager = Manager::start_with(m).unwrap();
        let d = manager.dict::<String, i64>().unwrap();
        let pool = manager.pool(2).unwrap();
        let doubled = pool
            .map(count_in, (1..=20).map(|n| (d.clone(), n)))
            .unwrap();
        assert_eq!(
            doubled,
            (1..=20).map(|n| n * 2).collect::<Vec<_>>(),
            "{m:?}"
        );
        assert_eq!(d.get(&"sum".to_string()).unwrap(), Some(210), "{m:?}");
        drop(pool);
        manager.shutdown().unwrap();
    }
}
