//! Sync objects and queues a manager creates: children use them directly,
//! and a dead server is a prompt error for anyone blocked on one.

mod util;

use std::time::Instant;

use multiproc::{
    Barrier, BoundedSemaphore, Condition, DictProxy, Error, Event, JoinableQueue, Lock, Manager,
    Process, Queue, RLock, RawValue, Semaphore, ServerAddress, StartMethod, Value,
};
use util::{PROMPTLY, eventually};

multiproc::init_before_main!();

const METHODS: [StartMethod; 2] = [StartMethod::Spawn, StartMethod::Fork];

fn start(method: StartMethod) -> Manager {
    Manager::start_with(method).expect("manager starts")
}

fn square_tasks(args: (JoinableQueue<u32>, Queue<u64>)) {
    let (tasks, results) = args;
    loop {
        let n = tasks.get().unwrap();
        if n == u32::MAX {
            tasks.task_done().unwrap();
            return;
        }
        results.put(u64::from(n) * u64::from(n)).unwrap();
        tasks.task_done().unwrap();
    }
}

#[test]
fn manager_queues_carry_work_between_children() {
    for m in METHODS {
        let manager = start(m);
        let tasks = manager.joinable_queue::<u32>().unwrap();
        let results = manager.queue::<u64>().unwrap();
        let bounded = manager.queue_with_maxsize::<u8>(1).unwrap();
        bounded.put(1u8).unwrap();
        assert!(matches!(bounded.try_put(2u8), Err(multiproc::Error::Full)));
        let mut ps: Vec<_> = (0..2)
            .map(|_| Process::new(square_tasks, (tasks.clone(), results.clone())).start_method(m))
            .collect();
        for p in &mut ps {
            p.start().unwrap();
        }
        for n in 0..20u32 {
            tasks.put(n).unwrap();
        }
        tasks.join_timeout(PROMPTLY).unwrap();
        let mut got: Vec<u64> = (0..20)
            .map(|_| results.get_timeout(PROMPTLY).unwrap())
            .collect();
        got.sort();
        assert_eq!(got, (0..20u64).map(|n| n * n).collect::<Vec<_>>(), "{m:?}");
        for _ in &ps {
            tasks.put(u32::MAX).unwrap();
        }
        for p in &mut ps {
            p.join_timeout(PROMPTLY).unwrap();
        }
        manager.shutdown().unwrap();
    }
}

type Party = (
    Event,
    Barrier,
    Semaphore,
    BoundedSemaphore,
    RLock,
    Value<u32>,
);

/// Waits for the start signal, meets the others, then counts itself in
/// under the semaphores and the re-entered RLock; returns its barrier index.
fn party(args: Party) -> usize {
    let (start, barrier, sem, bounded, rlock, count) = args;
    assert!(start.wait_timeout(PROMPTLY).unwrap());
    let index = barrier.wait().unwrap();
    sem.acquire().unwrap();
    bounded.acquire().unwrap();
    {
        let _outer = rlock.lock().unwrap();
        let _inner = rlock.lock().unwrap();
        assert_eq!(rlock.recursion_count().unwrap(), 2);
        count.set(count.get() + 1);
    }
    bounded.release().unwrap();
    sem.release().unwrap();
    index
}

#[test]
fn manager_event_barrier_semaphores_and_rlock_work_across_children() {
    for m in METHODS {
        let manager = start(m);
        let start_signal = manager.event().unwrap();
        let barrier = manager.barrier(3).unwrap();
        let sem = manager.semaphore(2).unwrap();
        let bounded = manager.bounded_semaphore(1).unwrap();
        assert_eq!(bounded.max_value(), Some(1));
        assert!(
            bounded.release().is_err(),
            "a bounded semaphore stays at its bound"
        );
        let rlock = manager.rlock().unwrap();
        let count = manager.value(0u32).unwrap();
        start_signal.set().unwrap();
        let party_args = (
            start_signal.clone(),
            barrier.clone(),
            sem.clone(),
            bounded.clone(),
            rlock.clone(),
            count.clone(),
        );
        let mut indices = util::run_each(m, party, (0..3).map(|_| party_args.clone()));
        indices.sort();
        assert_eq!(indices, vec![0, 1, 2], "{m:?}");
        assert_eq!(count.get(), 3, "{m:?}");
        assert_eq!(sem.get_value().unwrap(), 2);
        assert_eq!(bounded.get_value().unwrap(), 1);
        manager.shutdown().unwrap();
    }
}

fn wait_for_flag(args: (Condition, Value<u32>)) -> u32 {
    let (cond, flag) = args;
    let _guard = cond.lock().unwrap();
    let acquired = cond.wait_for(|| flag.get() != 0).unwrap();
    assert_eq!(acquired.owner_died(), None);
    flag.get()
}

#[test]
fn manager_condition_wakes_a_waiting_child() {
    for m in METHODS {
        let manager = start(m);
        let cond = manager.condition().unwrap();
        let flag = manager.value(0u32).unwrap();
        let mut p = Process::new(wait_for_flag, (cond.clone(), flag.clone())).start_method(m);
        p.start().unwrap();
        {
            let _guard = cond.lock().unwrap();
            flag.set(7);
            cond.notify_all().unwrap();
        }
        assert_eq!(p.join_timeout(PROMPTLY).unwrap(), 7, "{m:?}");
        manager.shutdown().unwrap();
    }
}

#[test]
fn manager_objects_outlive_a_clean_shutdown() {
    let manager = start(StartMethod::Fork);
    let q = manager.queue::<String>().unwrap();
    q.put("kept".to_string()).unwrap();
    util::assert_objects(
        || manager.number_of_objects().unwrap(),
        0,
        "the server keeps no hold",
    );
    manager.shutdown().unwrap();
    // Items already in the ring are still there to take.
    assert_eq!(q.try_get().unwrap(), "kept");
}

fn kill_server(manager: &Manager) {
    // SAFETY: kill(2) on the server's pid, which this process started.
    unsafe {
        libc::kill(manager.pid(), libc::SIGKILL);
    }
}

fn is_manager_gone<T: std::fmt::Debug>(r: multiproc::Result<T>) -> bool {
    matches!(r, Err(Error::ManagerGone(_)))
}

/// Says it is about to block, then blocks on the queue (`which == 0`) or
/// the event; returns how the wait ended.
fn block_until_gone(args: (Queue<u32>, Event, RawValue<u32>, u32)) -> String {
    let (q, ev, started, which) = args;
    started.store(1);
    let outcome = if which == 0 {
        q.get().map(|v| format!("got {v}"))
    } else {
        ev.wait().map(|()| "set".to_string())
    };
    match outcome {
        Ok(s) => s,
        Err(e) => format!("{e:?}"),
    }
}

#[test]
fn a_child_blocked_on_a_manager_queue_or_event_fails_when_the_server_is_killed() {
    for m in METHODS {
        for which in 0..2u32 {
            let manager = start(m);
            let q = manager.queue::<u32>().unwrap();
            let ev = manager.event().unwrap();
            let started = RawValue::new(0u32).unwrap();
            let mut p = Process::new(
                block_until_gone,
                (q.clone(), ev.clone(), started.clone(), which),
            )
            .start_method(m);
            p.start().unwrap();
            assert!(eventually(PROMPTLY, || started.load() == 1), "{m:?}");
            kill_server(&manager);
            let t = Instant::now();
            let child_saw = p.join_timeout(PROMPTLY).unwrap();
            assert!(
                child_saw.starts_with("ManagerGone"),
                "{m:?} {which}: {child_saw}"
            );
            assert!(t.elapsed() < PROMPTLY);
            let server = manager.pid();
            manager.shutdown().unwrap();
            util::assert_not_our_zombie(server);
            assert!(util::shm_leaks().is_empty(), "{:?}", util::shm_leaks());
        }
    }
}

/// Says it is about to block, then waits for the manager's lock (`which ==
/// 0`) or rlock, which the parent holds; returns how the wait ended.
fn wait_for_a_managers_lock(args: (Lock, RLock, RawValue<u32>, u32)) -> String {
    let (lock, rlock, started, which) = args;
    started.store(1);
    let outcome = if which == 0 {
        lock.acquire()
    } else {
        rlock.acquire()
    };
    format!("{outcome:?}")
}

#[test]
fn a_child_waiting_on_a_managers_lock_fails_when_the_server_is_killed() {
    for m in METHODS {
        for which in 0..2u32 {
            let manager = start(m);
            let lock = manager.lock().unwrap();
            let rlock = manager.rlock().unwrap();
            let _held = (lock.lock().unwrap(), rlock.lock().unwrap());
            let started = RawValue::new(0u32).unwrap();
            let args = (lock.clone(), rlock.clone(), started.clone(), which);
            let mut p = Process::new(wait_for_a_managers_lock, args).start_method(m);
            p.start().unwrap();
            assert!(eventually(PROMPTLY, || started.load() == 1), "{m:?}");
            kill_server(&manager);
            let child_saw = p.join_timeout(PROMPTLY).unwrap();
            assert!(
                child_saw.starts_with("Err(ManagerGone"),
                "{m:?} {which}: {child_saw}"
            );
            // So does a waiting thread of this process; a try still says the lock is held.
            let waiter = lock.clone();
            let in_thread = std::thread::spawn(move || waiter.acquire().map(|_| ()));
            assert!(is_manager_gone(in_thread.join().unwrap()));
            assert!(matches!(lock.try_acquire(), Err(Error::WouldBlock)));
            let server = manager.pid();
            manager.shutdown().unwrap();
            util::assert_not_our_zombie(server);
        }
    }
}

#[test]
fn every_blocking_wait_on_a_dead_managers_object_fails_but_locks_stay_usable() {
    let manager = start(StartMethod::Fork);
    let full = manager.queue_with_maxsize::<u32>(1).unwrap();
    full.put(1u32).unwrap();
    let empty = manager.queue::<u32>().unwrap();
    let tasks = manager.joinable_queue::<u32>().unwrap();
    tasks.put(1u32).unwrap();
    let ev = manager.event().unwrap();
    let sem = manager.semaphore(0).unwrap();
    let bounded = manager.bounded_semaphore(1).unwrap();
    bounded.acquire().unwrap();
    let cond = manager.condition().unwrap();
    let barrier = manager.barrier(2).unwrap();
    let lock = manager.lock().unwrap();
    let rlock = manager.rlock().unwrap();
    kill_server(&manager);

    assert!(is_manager_gone(full.put(2u32)), "put on a full queue");
    assert!(is_manager_gone(empty.get()), "get on an empty queue");
    assert!(is_manager_gone(tasks.join()), "join with a task left");
    assert!(is_manager_gone(ev.wait()));
    assert!(is_manager_gone(ev.wait_timeout(PROMPTLY)));
    assert!(is_manager_gone(sem.acquire()));
    assert!(is_manager_gone(bounded.acquire_timeout(PROMPTLY)));
    {
        let _guard = cond.lock().unwrap();
        assert!(is_manager_gone(cond.wait()));
        assert!(
            cond.notify_all().is_ok(),
            "the lock is held again after the failed wait"
        );
    }
    assert!(is_manager_gone(barrier.wait()));
    // What does not wait still works: the segments live while mapped.
    assert_eq!(full.try_get().unwrap(), 1);
    ev.set().unwrap();
    assert!(ev.wait().is_ok());
    drop(lock.lock().unwrap());
    drop(rlock.lock().unwrap());
    manager.shutdown().unwrap();
}

/// What the child creates in the parent's manager.
type Created = (Queue<u32>, DictProxy<u32, String>);

/// Connects to the parent's manager, creates a queue and a dict there and
/// hands both back through the parent's queue; keeps them until they are
/// taken (a handle in a message is opened from the sender's descriptors).
fn create_in_parents_manager(args: (ServerAddress, Queue<Created>, Event)) {
    let (address, back, taken) = args;
    let manager = Manager::connect(address).unwrap();
    assert!(manager.shutdown().is_err(), "only the starter shuts down");
    let q = manager.queue::<u32>().unwrap();
    q.put(42u32).unwrap();
    let d = manager.dict::<u32, String>().unwrap();
    d.insert(1, "from the child".into()).unwrap();
    let pair = (q, d);
    back.put(&pair).unwrap();
    assert!(taken.wait_timeout(PROMPTLY).unwrap());
    drop(pair);
}

#[test]
fn a_child_connects_to_the_managers_address_and_creates_objects() {
    for m in METHODS {
        let manager = start(m);
        let back = manager.queue().unwrap();
        let taken = manager.event().unwrap();
        let args = (*manager.address(), back.clone(), taken.clone());
        let mut p = Process::new(create_in_parents_manager, args).start_method(m);
        p.start().unwrap();
        let (q, d) = back.get_timeout(PROMPTLY).unwrap();
        taken.set().unwrap();
        p.join_timeout(PROMPTLY).unwrap();
        assert_eq!(q.get_timeout(PROMPTLY).unwrap(), 42, "{m:?}");
        assert_eq!(
            d.get(&1).unwrap().as_deref(),
            Some("from the child"),
            "{m:?}"
        );
        util::assert_objects(
            || manager.number_of_objects().unwrap(),
            1,
            "the dict, now held here",
        );
        drop(d);
        util::assert_objects(|| manager.number_of_objects().unwrap(), 0, "");
        manager.shutdown().unwrap();
        assert!(is_manager_gone(Manager::connect(*manager.address())));
    }
}

/// Waits several liveness slices on objects of a live manager; returns what
/// each timed wait ended with.
fn wait_out_slices(args: (Queue<u32>, Event, Semaphore)) -> Vec<String> {
    let (q, ev, sem) = args;
    let long = std::time::Duration::from_millis(350);
    vec![
        format!("{:?}", q.get_timeout(long)),
        format!("{:?}", ev.wait_timeout(long)),
        format!("{:?}", sem.acquire_timeout(long)),
    ]
}

#[test]
fn long_waits_on_a_live_managers_objects_just_time_out() {
    for m in METHODS {
        let manager = start(m);
        let args = (
            manager.queue::<u32>().unwrap(),
            manager.event().unwrap(),
            manager.semaphore(0).unwrap(),
        );
        let got = util::run_each(m, wait_out_slices, [args]).remove(0);
        assert_eq!(got[0], "Err(Empty)", "{m:?}: {got:?}");
        assert_eq!(got[1], "Ok(false)", "{m:?}");
        assert!(got[2].starts_with("Err(Timeout"), "{m:?}: {got:?}");
        manager.shutdown().unwrap();
    }
}
