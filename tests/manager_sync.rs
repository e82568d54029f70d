//! Sync objects and queues a manager creates: children use them directly,
//! and a dead server is a prompt error for anyone blocked on one.

mod util;

use multiproc::{
    Barrier, BoundedSemaphore, Condition, Event, JoinableQueue, Manager, Process, Queue, RLock,
    Semaphore, Shareable, StartMethod, Value,
};
use util::PROMPTLY;

multiproc::init_before_main!();

const METHODS: [StartMethod; 2] = [StartMethod::Spawn, StartMethod::Fork];

fn start(method: StartMethod) -> Manager {
    Manager::start_with(method).expect("manager starts")
}

fn run_all<A: Shareable, R: Shareable>(
    method: StartMethod,
    f: fn(A) -> R,
    args: impl IntoIterator<Item = A>,
) -> Vec<R> {
    let mut ps: Vec<_> = args
        .into_iter()
        .map(|a| Process::new(f, a).start_method(method))
        .collect();
    for p in &mut ps {
        p.start().unwrap();
    }
    ps.iter_mut()
        .map(|p| p.join_timeout(PROMPTLY * 6).unwrap())
        .collect()
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
    assert!(start.wait_timeout(PROMPTLY));
    let index = barrier.wait().unwrap();
    sem.acquire().unwrap();
    bounded.acquire().unwrap();
    {
        let _outer = rlock.lock().unwrap();
        let _inner = rlock.lock().unwrap();
        assert_eq!(rlock.recursion_count(), 2);
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
        assert_eq!(bounded.max_value(), 1);
        assert!(
            bounded.release().is_err(),
            "a bounded semaphore stays at its bound"
        );
        let rlock = manager.rlock().unwrap();
        let count = manager.value(0u32).unwrap();
        start_signal.set();
        let party_args = (
            start_signal.clone(),
            barrier.clone(),
            sem.clone(),
            bounded.clone(),
            rlock.clone(),
            count.clone(),
        );
        let mut indices = run_all(m, party, (0..3).map(|_| party_args.clone()));
        indices.sort();
        assert_eq!(indices, vec![0, 1, 2], "{m:?}");
        assert_eq!(count.get(), 3, "{m:?}");
        assert_eq!(sem.get_value(), 2);
        assert_eq!(bounded.get_value(), 1);
        manager.shutdown().unwrap();
    }
}

fn wait_for_flag(args: (Condition, Value<u32>)) -> u32 {
    let (cond, flag) = args;
    let _guard = cond.lock().unwrap();
    cond.wait_for(|| flag.get() != 0).unwrap();
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
    assert_eq!(
        manager.number_of_objects().unwrap(),
        0,
        "the server keeps no hold"
    );
    manager.shutdown().unwrap();
    // Items already in the ring are still there to take.
    assert_eq!(q.try_get().unwrap(), "kept");
}
