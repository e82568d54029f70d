//! Locks, semaphores, events, barriers and queues a remote manager's server
//! keeps, used over TCP by processes that wait on them in the server.

mod util;

use std::time::Duration;

use multiproc::{
    Acquired, Barrier, BaseManager, DictProxy, Error, Event, JoinableQueue, Lock, Parties, Process,
    Queue, RemoteManager, StartMethod,
};
use util::{PROMPTLY, eventually};

multiproc::init_before_main!();

const METHODS: [StartMethod; 2] = [StartMethod::Spawn, StartMethod::Fork];
const KEY: &[u8] = b"remote-sync-key";
const SHORT: Duration = Duration::from_millis(50);

fn config() -> BaseManager {
    BaseManager::new()
        .address("127.0.0.1:0")
        .authkey(KEY)
        .register::<Lock>("lock")
        .register::<Event>("go")
        .register::<Event>("held")
        .register::<Event>("release")
        .register_with::<Barrier>("barrier", Parties(3))
        .register::<DictProxy<String, i64>>("counter")
        .register_with::<JoinableQueue<u32>>("jobs", 4)
}

fn connect(address: &str) -> RemoteManager {
    BaseManager::new()
        .address(address)
        .authkey(KEY)
        .connect()
        .expect("worker connects")
}

/// Increments the shared counter `n` times, each under the remote lock.
fn locked_increments((address, n): (String, u32)) -> u32 {
    let m = connect(&address);
    let lock: Lock = m.get("lock").unwrap();
    let counter: DictProxy<String, i64> = m.get("counter").unwrap();
    for _ in 0..n {
        let _guard = lock.lock().unwrap();
        let v = counter.get(&"n".to_string()).unwrap().unwrap_or(0);
        counter.insert("n".to_string(), v + 1).unwrap();
    }
    n
}

#[test]
fn a_remote_lock_serialises_read_modify_write_across_processes() {
    for m in METHODS {
        let master = config().start().unwrap();
        let address = master.address().to_string();
        let results = util::run_each(
            m,
            locked_increments,
            [(address.clone(), 100), (address, 100)],
        );
        assert_eq!(results, vec![100, 100]);
        let counter: DictProxy<String, i64> = master.get("counter").unwrap();
        assert_eq!(counter.get(&"n".to_string()).unwrap(), Some(200), "{m:?}");
        let lock: Lock = master.get("lock").unwrap();
        assert!(!lock.is_locked().unwrap());
        assert!(matches!(lock.release(), Err(Error::InvalidState(_))));
        master.shutdown().unwrap();
    }
}

/// Takes the lock, says so, and waits for ever (until killed).
fn hold_the_lock(address: String) {
    let m = connect(&address);
    let lock: Lock = m.get("lock").unwrap();
    let held: Event = m.get("held").unwrap();
    let go: Event = m.get("go").unwrap();
    let _guard = lock.lock().unwrap();
    held.set().unwrap();
    let _ = go.wait();
}

#[test]
fn a_lock_whose_holder_is_killed_goes_to_the_next_acquirer_who_is_told() {
    for m in METHODS {
        let master = config().start().unwrap();
        let lock: Lock = master.get("lock").unwrap();
        let held: Event = master.get("held").unwrap();
        let mut p = Process::new(hold_the_lock, master.address().to_string()).start_method(m);
        p.start().unwrap();
        assert!(
            held.wait_timeout(PROMPTLY).unwrap(),
            "{m:?}: the holder took the lock"
        );
        assert!(matches!(lock.try_acquire(), Err(Error::WouldBlock)));
        assert!(matches!(
            lock.acquire_timeout(SHORT),
            Err(Error::Timeout(_))
        ));
        let pid = p.pid().unwrap();
        p.kill().unwrap();
        let _ = p.join_timeout(PROMPTLY);
        let acquired = lock.acquire_timeout(PROMPTLY).unwrap();
        assert_eq!(acquired, Acquired::OwnerDied { pid }, "{m:?}");
        lock.release().unwrap();
        assert_eq!(
            lock.try_acquire().unwrap(),
            Acquired::Clean,
            "told once only"
        );
        lock.release().unwrap();
        master.shutdown().unwrap();
    }
}

/// Waits for the go event, then at the barrier; returns its arrival index.
fn wait_for_go_then_barrier(address: String) -> usize {
    let m = connect(&address);
    let go: Event = m.get("go").unwrap();
    let barrier: Barrier = m.get("barrier").unwrap();
    go.wait().unwrap();
    barrier.wait_timeout(PROMPTLY).unwrap()
}

#[test]
fn an_event_and_a_barrier_coordinate_processes() {
    for m in METHODS {
        let master = config().start().unwrap();
        let address = master.address().to_string();
        let go: Event = master.get("go").unwrap();
        let barrier: Barrier = master.get("barrier").unwrap();
        assert_eq!(barrier.parties().unwrap(), 3);
        let mut workers: Vec<_> = (0..2)
            .map(|_| Process::new(wait_for_go_then_barrier, address.clone()).start_method(m))
            .collect();
        for w in &mut workers {
            w.start().unwrap();
        }
        assert!(!go.wait_timeout(SHORT).unwrap(), "not set yet");
        assert_eq!(barrier.n_waiting().unwrap(), 0, "nobody passed the event");
        go.set().unwrap();
        assert!(go.is_set().unwrap());
        let mine = barrier.wait_timeout(PROMPTLY).unwrap();
        let mut indices: Vec<usize> = workers
            .iter_mut()
            .map(|w| w.join_timeout(PROMPTLY).unwrap())
            .collect();
        indices.push(mine);
        indices.sort_unstable();
        assert_eq!(indices, vec![0, 1, 2], "{m:?}");
        assert!(!barrier.broken().unwrap());
        master.shutdown().unwrap();
    }
}

/// Waits at the barrier for ever (until killed).
fn wait_at_barrier(address: String) {
    let m = connect(&address);
    let barrier: Barrier = m.get("barrier").unwrap();
    let _ = barrier.wait();
}

#[test]
fn a_barrier_breaks_when_a_waiting_party_dies_or_a_wait_times_out() {
    let master = config().start().unwrap();
    let barrier: Barrier = master.get("barrier").unwrap();
    let mut p =
        Process::new(wait_at_barrier, master.address().to_string()).start_method(StartMethod::Fork);
    p.start().unwrap();
    assert!(eventually(PROMPTLY, || barrier.n_waiting().unwrap() == 1));
    p.kill().unwrap();
    let _ = p.join_timeout(PROMPTLY);
    assert!(
        eventually(PROMPTLY, || barrier.broken().unwrap()),
        "the dead party broke the barrier"
    );
    assert!(matches!(
        barrier.wait_timeout(PROMPTLY),
        Err(Error::BrokenBarrier)
    ));
    barrier.reset().unwrap();
    assert!(!barrier.broken().unwrap());
    assert!(matches!(barrier.try_wait(), Err(Error::WouldBlock)));
    assert_eq!(barrier.n_waiting().unwrap(), 0, "try_wait did not arrive");
    assert!(matches!(
        barrier.wait_timeout(SHORT),
        Err(Error::BrokenBarrier)
    ));
    assert!(
        barrier.broken().unwrap(),
        "a timeout breaks it, as in Python"
    );
    barrier.reset().unwrap();
    master.shutdown().unwrap();
}

#[test]
fn a_waiting_call_does_not_hold_up_the_other_proxies_of_its_process() {
    let master = BaseManager::new().authkey(KEY).start().unwrap();
    let q = master.queue::<u32>().unwrap();
    let lock = master.lock().unwrap();
    let d = master.dict::<u32, u32>().unwrap();
    // Timed forms: were a wait to hold the process's shared connection,
    // the calls below would queue behind it until it timed out, and the
    // test would fail instead of hanging.
    let getter = {
        let q = q.clone();
        std::thread::spawn(move || q.get_timeout(PROMPTLY))
    };
    let held = lock.lock().unwrap();
    let waiter = {
        let lock = lock.clone();
        std::thread::spawn(move || lock.acquire_timeout(PROMPTLY).map(|a| (a, lock.release())))
    };
    // Both threads wait in the server now (or soon); this thread's calls
    // on the same process's connection still go through.
    for i in 0..20 {
        d.insert(i, i * i).unwrap();
    }
    assert_eq!(d.len().unwrap(), 20);
    q.put(7).unwrap();
    assert_eq!(getter.join().unwrap().unwrap(), 7);
    drop(held);
    let (acquired, released) = waiter.join().unwrap().unwrap();
    assert_eq!(acquired, Acquired::Clean);
    released.unwrap();
    master.shutdown().unwrap();
}

/// Says it is about to wait, then waits (in the server) for `release`;
/// whether it was set before the (long) timeout.
fn wait_for_release(address: String) -> bool {
    let m = connect(&address);
    let held: Event = m.get("held").unwrap();
    let release: Event = m.get("release").unwrap();
    held.set().unwrap();
    release.wait_timeout(Duration::from_secs(120)).unwrap()
}

/// Fills and reads back a dict of its own; returns the sum read.
fn use_own_dict(address: String) -> u64 {
    let m = connect(&address);
    let d = m.dict::<u32, u64>().unwrap();
    for i in 0..200 {
        d.insert(i, u64::from(i)).unwrap();
    }
    (0..200).map(|i| d.get(&i).unwrap().unwrap()).sum()
}

#[test]
fn clients_on_other_objects_proceed_while_a_call_waits() {
    for m in METHODS {
        let master = config().start().unwrap();
        let address = master.address().to_string();
        let held: Event = master.get("held").unwrap();
        let release: Event = master.get("release").unwrap();
        let mut waiter = Process::new(wait_for_release, address.clone()).start_method(m);
        waiter.start().unwrap();
        assert!(held.wait_timeout(PROMPTLY).unwrap(), "{m:?}");
        // The waiter's call holds a server thread and its event; two other
        // clients' calls on their own dicts still go through. Were they
        // held up behind the wait, they would finish only once it timed
        // out, and the waiter would report the timeout.
        let sums = util::run_each(m, use_own_dict, [address.clone(), address.clone()]);
        assert_eq!(sums, vec![19_900, 19_900], "{m:?}");
        release.set().unwrap();
        let set_in_time = waiter.join_timeout(PROMPTLY).unwrap();
        assert!(
            set_in_time,
            "{m:?}: the wait ended by the set, not its timeout"
        );
        master.shutdown().unwrap();
    }
}

/// Takes `n` jobs, marking each done; returns their sum.
fn consume(address: String) -> u32 {
    let m = connect(&address);
    let jobs: JoinableQueue<u32> = m.get("jobs").unwrap();
    let mut sum = 0;
    for _ in 0..10 {
        sum += jobs.get_timeout(PROMPTLY).unwrap();
        jobs.task_done().unwrap();
    }
    sum
}

#[test]
fn a_bounded_queue_blocks_producers_and_join_waits_for_task_done() {
    for m in METHODS {
        let master = config().start().unwrap();
        let jobs: JoinableQueue<u32> = master.get("jobs").unwrap();
        assert_eq!(jobs.maxsize().unwrap(), 4);
        assert!(matches!(jobs.get_timeout(SHORT), Err(Error::Empty)));
        assert!(matches!(jobs.try_get(), Err(Error::Empty)));
        for i in 0..4 {
            jobs.put(i).unwrap();
        }
        assert!(jobs.full().unwrap());
        assert!(matches!(jobs.try_put(9), Err(Error::Full)));
        assert!(matches!(jobs.put_timeout(9, SHORT), Err(Error::Full)));
        assert!(matches!(jobs.join_timeout(SHORT), Err(Error::Timeout(_))));
        assert!(matches!(jobs.try_join(), Err(Error::WouldBlock)));
        let mut consumer = Process::new(consume, master.address().to_string()).start_method(m);
        consumer.start().unwrap();
        // Six more than fit: each put waits for the consumer to make room.
        for i in 4..10 {
            jobs.put_timeout(i, PROMPTLY).unwrap();
        }
        jobs.join_timeout(PROMPTLY).unwrap();
        assert_eq!(jobs.unfinished_tasks().unwrap(), 0);
        assert_eq!(
            consumer.join_timeout(PROMPTLY).unwrap(),
            (0..10).sum::<u32>(),
            "{m:?}"
        );
        assert!(matches!(jobs.task_done(), Err(Error::InvalidState(_))));
        master.shutdown().unwrap();
    }
}

#[test]
fn semaphores_count_and_bounded_ones_refuse_extra_releases() {
    let master = BaseManager::new().authkey(KEY).start().unwrap();
    let s = master.semaphore(2).unwrap();
    s.acquire().unwrap();
    s.acquire_timeout(PROMPTLY).unwrap();
    assert_eq!(s.get_value().unwrap(), 0);
    assert!(matches!(s.try_acquire(), Err(Error::WouldBlock)));
    assert!(matches!(s.acquire_timeout(SHORT), Err(Error::Timeout(_))));
    let waiter = {
        let s = s.clone();
        std::thread::spawn(move || s.acquire())
    };
    s.release().unwrap();
    waiter.join().unwrap().unwrap();
    s.release().unwrap();
    s.release().unwrap();
    s.release().unwrap();
    assert_eq!(
        s.get_value().unwrap(),
        3,
        "a plain semaphore may go above its start"
    );

    let b = master.bounded_semaphore(1).unwrap();
    assert!(matches!(b.release(), Err(Error::InvalidState(_))));
    b.acquire().unwrap();
    b.release().unwrap();
    master.shutdown().unwrap();
}

#[test]
fn bad_requests_are_errors_not_hangs() {
    let master = config().start().unwrap();
    assert!(matches!(master.barrier(0), Err(Error::InvalidArgument(_))));
    assert!(matches!(
        master.get::<Lock>("go"),
        Err(Error::TypeMismatch { .. })
    ));
    assert!(matches!(
        master.get::<Queue<String>>("jobs"),
        Err(Error::TypeMismatch { .. })
    ));
    master.shutdown().unwrap();
    let no_parties = BaseManager::new()
        .authkey(KEY)
        .register_with::<Barrier>("b", Parties(0))
        .start();
    assert!(
        no_parties.is_err(),
        "a barrier of no parties cannot be made"
    );
}

#[test]
fn a_client_waiting_when_the_server_shuts_down_gets_manager_gone() {
    let master = BaseManager::new().authkey(KEY).start().unwrap();
    let event = master.event().unwrap();
    let q = master.queue::<u32>().unwrap();
    let waiters = [
        std::thread::spawn(move || event.wait().map(|_| ())),
        std::thread::spawn(move || q.get().map(|_| ())),
    ];
    // Give the waits a moment to reach the server (they end either way).
    std::thread::sleep(SHORT);
    master.shutdown().unwrap();
    for w in waiters {
        assert!(matches!(w.join().unwrap(), Err(Error::ManagerGone(_))));
    }
}

/// Uses a lock proxy it was given as its argument.
fn use_given_lock(lock: Lock) -> bool {
    let acquired = lock.try_acquire().is_ok();
    acquired && lock.release().is_ok()
}

#[test]
fn an_encoded_proxy_carries_the_authkey_only_to_a_spawned_child() {
    use multiproc::Shareable;
    let master = BaseManager::new().authkey(KEY).start().unwrap();
    let lock = master.lock().unwrap();
    // Into a message (which may cross the network): no key inside.
    let bytes = lock.encode().unwrap();
    assert!(
        !bytes.windows(KEY.len()).any(|w| w == KEY),
        "the authkey leaked into an encoded proxy"
    );
    // As a spawned child's argument: the child gets the key and connects.
    let used = util::run_each(StartMethod::Spawn, use_given_lock, [lock]);
    assert_eq!(used, vec![true]);
    master.shutdown().unwrap();
}

/// Lives until the master raises "release" (a forked grandchild of a lock holder).
fn linger(address: String) {
    let m = connect(&address);
    let release: Event = m.get("release").unwrap();
    let _ = release.wait_timeout(PROMPTLY);
}

/// Takes the lock, forks a child that outlives it, records the child's
/// pid, says it holds the lock, and waits to be killed.
fn hold_and_fork(address: String) {
    let m = connect(&address);
    let lock: Lock = m.get("lock").unwrap();
    let held: Event = m.get("held").unwrap();
    let go: Event = m.get("go").unwrap();
    let counter: DictProxy<String, i64> = m.get("counter").unwrap();
    let _guard = lock.lock().unwrap();
    let mut child = Process::new(linger, address).start_method(StartMethod::Fork);
    child.start().unwrap();
    counter
        .insert("child".into(), i64::from(child.pid().unwrap()))
        .unwrap();
    held.set().unwrap();
    let _ = go.wait();
}

#[test]
fn a_killed_holders_forked_child_does_not_keep_its_lock() {
    for m in METHODS {
        let master = config().start().unwrap();
        let lock: Lock = master.get("lock").unwrap();
        let held: Event = master.get("held").unwrap();
        let counter: DictProxy<String, i64> = master.get("counter").unwrap();
        let mut p = Process::new(hold_and_fork, master.address().to_string()).start_method(m);
        p.start().unwrap();
        assert!(held.wait_timeout(PROMPTLY).unwrap(), "{m:?}");
        let grandchild = counter.get(&"child".to_string()).unwrap().unwrap() as i32;
        let pid = p.pid().unwrap();
        p.kill().unwrap();
        let _ = p.join_timeout(PROMPTLY);
        // The grandchild inherited the holder's sockets, but made them
        // inert: the server sees the holder's connection end.
        assert_eq!(
            lock.acquire_timeout(PROMPTLY).unwrap(),
            Acquired::OwnerDied { pid },
            "{m:?}"
        );
        assert!(
            !util::is_gone(grandchild),
            "{m:?}: the grandchild still lives"
        );
        lock.release().unwrap();
        master.get::<Event>("release").unwrap().set().unwrap();
        assert!(eventually(PROMPTLY, || util::is_gone(grandchild)), "{m:?}");
        master.shutdown().unwrap();
    }
}

/// Takes and gives back the lock a pool task carries.
fn lock_from_a_task(lock: Lock) -> bool {
    lock.try_acquire().is_ok() && lock.release().is_ok()
}

#[test]
fn a_spawned_pool_worker_can_use_a_tcp_proxy_from_its_task() {
    let master = BaseManager::new().authkey(KEY).start().unwrap();
    let lock = master.lock().unwrap();
    let pool = multiproc::Pool::builder()
        .processes(1)
        .start_method(StartMethod::Spawn)
        .build()
        .unwrap();
    // The worker never saw the key: it comes with the task, as the pool's
    // workers are this process's own children.
    assert_eq!(
        pool.map(lock_from_a_task, vec![lock.clone(); 3]).unwrap(),
        vec![true; 3]
    );
    drop(pool);
    master.shutdown().unwrap();
}

#[test]
fn proxies_inside_queued_items_live_while_queued_and_go_with_the_queue() {
    let master = BaseManager::new().authkey(KEY).start().unwrap();
    let base = master.number_of_objects().unwrap();
    let q = master
        .queue_with_maxsize::<multiproc::ListProxy<u32>>(1)
        .unwrap();
    let l = master.list::<u32>().unwrap();
    l.push(5).unwrap();
    q.put(l.clone()).unwrap();
    // A full queue refuses the second, and keeps no reference for it.
    let other = master.list::<u32>().unwrap();
    assert!(matches!(q.try_put(other), Err(Error::Full)));
    assert!(eventually(PROMPTLY, || master.number_of_objects().unwrap() == base + 2));
    drop(l);
    assert_eq!(
        master.number_of_objects().unwrap(),
        base + 2,
        "the queued item keeps the list"
    );
    let got = q.get_timeout(PROMPTLY).unwrap();
    assert_eq!(got.to_vec().unwrap(), vec![5]);
    drop(got);
    assert!(eventually(PROMPTLY, || master.number_of_objects().unwrap() == base + 1));
    // A list still queued when the queue goes, goes with it.
    q.put(master.list::<u32>().unwrap()).unwrap();
    drop(q);
    assert!(eventually(PROMPTLY, || master.number_of_objects().unwrap() == base));
    master.shutdown().unwrap();
}

#[test]
fn a_timed_barrier_wait_whose_time_is_up_breaks_the_barrier() {
    let master = config().start().unwrap();
    let barrier: Barrier = master.get("barrier").unwrap();
    assert!(matches!(
        barrier.wait_timeout(Duration::ZERO),
        Err(Error::BrokenBarrier)
    ));
    assert!(barrier.broken().unwrap());
    barrier.reset().unwrap();
    barrier.abort().unwrap();
    assert!(matches!(barrier.try_wait(), Err(Error::BrokenBarrier)));
    master.shutdown().unwrap();
}

fn seven(_: ()) -> u32 {
    7
}

#[test]
fn a_forked_child_after_a_broken_tcp_connection_still_reports_its_result() {
    let server = BaseManager::new().authkey(KEY).get_server().unwrap();
    let address = server.address();
    let stop = server.shutdown_handle();
    let serving = std::thread::spawn(move || server.serve_forever());
    let m = connect(&address.to_string());
    let d = m.dict::<u32, u32>().unwrap();
    stop.shutdown();
    serving.join().unwrap();
    // The connection breaks; its descriptor number must stay taken, or the
    // next child's result socket gets it and the fork hook, which makes
    // inherited manager sockets inert by number, silences that child.
    assert!(matches!(d.len(), Err(Error::ManagerGone(_))));
    // Descriptors go to the lowest free numbers: holding k placeholders
    // moves the child's result socket to the k-th free number, so some
    // round puts it where the broken connection's socket was.
    for k in 0..32 {
        let placeholders: Vec<_> = (0..k)
            .map(|_| std::fs::File::open("/dev/null").unwrap())
            .collect();
        let mut p = Process::new(seven, ()).start_method(StartMethod::Fork);
        p.start().unwrap();
        assert_eq!(p.join_timeout(PROMPTLY).unwrap(), 7, "round {k}");
        drop(placeholders);
    }
}

/// A zero timeout on a held lock, rlock or semaphore is `Timeout`, as on a
/// local one, and `try_acquire` is `WouldBlock`, on every flavour (a
/// `BaseManager`'s said `WouldBlock` to both). From a port of CPython's tests.
#[test]
fn a_zero_timeout_is_a_timeout_on_every_flavour() {
    let master = BaseManager::new().authkey(KEY).start().unwrap();
    let manager = multiproc::Manager::start().unwrap();
    let locks = [
        Lock::new().unwrap(),
        manager.lock().unwrap(),
        master.lock().unwrap(),
    ];
    for (i, lock) in locks.iter().enumerate() {
        let held = lock.lock().unwrap();
        // Another thread: a lock is not reentrant, an rlock is.
        std::thread::scope(|s| {
            s.spawn(|| {
                let zero = lock.acquire_timeout(Duration::ZERO);
                assert!(matches!(zero, Err(Error::Timeout(_))), "lock {i}: {zero:?}");
                let tried = lock.try_acquire();
                assert!(
                    matches!(tried, Err(Error::WouldBlock)),
                    "lock {i}: {tried:?}"
                );
            });
        });
        drop(held);
    }
    let rlocks = [
        multiproc::RLock::new().unwrap(),
        manager.rlock().unwrap(),
        master.rlock().unwrap(),
    ];
    for (i, rlock) in rlocks.iter().enumerate() {
        let held = rlock.lock().unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                let zero = rlock.acquire_timeout(Duration::ZERO);
                assert!(
                    matches!(zero, Err(Error::Timeout(_))),
                    "rlock {i}: {zero:?}"
                );
            });
        });
        drop(held);
    }
    let conditions = [
        multiproc::Condition::new().unwrap(),
        manager.condition().unwrap(),
        master.condition().unwrap(),
    ];
    for (i, c) in conditions.iter().enumerate() {
        let held = c.lock().unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                let zero = c.acquire_timeout(Duration::ZERO);
                assert!(
                    matches!(zero, Err(Error::Timeout(_))),
                    "condition {i}: {zero:?}"
                );
            });
        });
        drop(held);
    }
    let semaphores = [
        multiproc::Semaphore::new(1).unwrap(),
        manager.semaphore(1).unwrap(),
        master.semaphore(1).unwrap(),
    ];
    for (i, s) in semaphores.iter().enumerate() {
        s.acquire().unwrap();
        let zero = s.acquire_timeout(Duration::ZERO);
        assert!(
            matches!(zero, Err(Error::Timeout(_))),
            "semaphore {i}: {zero:?}"
        );
        s.release().unwrap();
    }
    drop((locks, rlocks, conditions, semaphores));
    manager.shutdown().unwrap();
    master.shutdown().unwrap();
}
