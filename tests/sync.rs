//! Locks, semaphores, conditions, events and barriers shared across processes.

mod util;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use multiproc::{
    Acquired, Barrier, BoundedSemaphore, Condition, Error, Event, Lock, Process, RLock, RawArray,
    RawValue, Semaphore, Shareable, StartMethod,
};
use util::PROMPTLY;

multiproc::init_before_main!();

const METHODS: [StartMethod; 2] = [StartMethod::Spawn, StartMethod::Fork];
const SHORT: Duration = Duration::from_millis(50);

fn start<A: Shareable, R: Shareable>(m: StartMethod, f: fn(A) -> R, arg: A) -> Process<R> {
    let mut p = Process::new(f, arg).start_method(m);
    p.start().expect("start");
    p
}

fn start_n<A: Shareable + Clone, R: Shareable>(
    m: StartMethod,
    n: usize,
    f: fn(A) -> R,
    arg: &A,
) -> Vec<Process<R>> {
    (0..n).map(|_| start(m, f, arg.clone())).collect()
}

fn join_all<R: Shareable>(ps: Vec<Process<R>>) -> Vec<R> {
    ps.into_iter()
        .map(|mut p| p.join_timeout(PROMPTLY * 3).expect("child"))
        .collect()
}

fn kill_myself() {
    // SAFETY: kill(2) on our own pid; the process ends here.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
}

fn assert_killed<R: Shareable>(p: &mut Process<R>) {
    assert!(matches!(
        p.join_timeout(PROMPTLY),
        Err(Error::ChildFailed {
            signal: Some(9),
            ..
        })
    ));
}

// ---------------------------------------------------------------- Lock

const ENTRIES: usize = 50;

/// Enters the lock `ENTRIES` times, logging +id on entry and -id on exit.
fn log_under_lock((lock, log, cursor, id): (Lock, RawArray<i32>, RawValue<u32>, i32)) {
    for round in 0..ENTRIES {
        let _g = lock.lock().unwrap();
        log.set(cursor.fetch_add(1) as usize, id).unwrap();
        if round == 0 {
            println!("process {id} holds the lock");
        }
        std::thread::yield_now();
        log.set(cursor.fetch_add(1) as usize, -id).unwrap();
    }
}

#[test]
fn lock_ordered_printing_never_overlaps() {
    for m in METHODS {
        let n = 4;
        let lock = Lock::new().unwrap();
        let log = RawArray::from_elem(0i32, 2 * n * ENTRIES).unwrap();
        let cursor = RawValue::new(0u32).unwrap();
        let children: Vec<_> = (1..=n as i32)
            .map(|id| {
                let arg = (lock.clone(), log.clone(), cursor.clone(), id);
                start(m, log_under_lock, arg)
            })
            .collect();
        join_all(children);
        let log = log.to_vec();
        assert_eq!(cursor.get() as usize, log.len());
        for pair in log.chunks(2) {
            assert!(
                pair[0] > 0 && pair[1] == -pair[0],
                "{m:?}: overlap in {log:?}"
            );
        }
        assert!(!lock.is_locked().unwrap());
    }
}

// ---------------------------------------------------------------- RLock

fn add_under_rlock((lock, counter): (RLock, RawValue<u64>)) {
    for _ in 0..2_000 {
        let _outer = lock.lock().unwrap();
        let _inner = lock.lock().unwrap();
        assert_eq!(lock.recursion_count().unwrap(), 2);
        // Plain read and write: only exclusion keeps the count exact.
        counter.set(counter.get() + 1);
    }
}

#[test]
fn rlock_excludes_across_processes() {
    for m in METHODS {
        let arg = (RLock::new().unwrap(), RawValue::new(0u64).unwrap());
        join_all(start_n(m, 3, add_under_rlock, &arg));
        assert_eq!(arg.1.get(), 6_000, "{m:?}");
        assert!(!arg.0.is_locked().unwrap());
    }
}

fn release_foreign(lock: RLock) -> (bool, bool, bool) {
    let bad_release = matches!(lock.release(), Err(Error::InvalidState(_)));
    let timed_out = matches!(lock.acquire_timeout(SHORT), Err(Error::Timeout(_)));
    let would_block = matches!(lock.try_acquire(), Err(Error::WouldBlock));
    (bad_release, timed_out, would_block)
}

#[test]
fn rlock_release_by_another_process_is_refused() {
    for m in METHODS {
        let lock = RLock::new().unwrap();
        let _g = lock.lock().unwrap();
        let mut p = start(m, release_foreign, lock.clone());
        assert_eq!(
            p.join_timeout(PROMPTLY).unwrap(),
            (true, true, true),
            "{m:?}"
        );
        assert_eq!(lock.recursion_count().unwrap(), 1);
    }
}

fn die_holding_rlock(lock: RLock) {
    std::mem::forget(lock.lock().unwrap());
    std::mem::forget(lock.lock().unwrap());
    kill_myself();
}

fn acquire_within(lock: RLock) -> bool {
    lock.acquire_timeout(PROMPTLY).is_ok() && lock.release().is_ok()
}

#[test]
fn rlock_of_a_killed_holder_goes_to_the_next_acquirer() {
    for m in METHODS {
        let lock = RLock::new().unwrap();
        let mut p = start(m, die_holding_rlock, lock.clone());
        assert_killed(&mut p);
        let acquired = lock.acquire_timeout(PROMPTLY).unwrap();
        assert_eq!(
            acquired,
            Acquired::OwnerDied {
                pid: p.pid().unwrap()
            },
            "{m:?}"
        );
        assert_eq!(lock.recursion_count().unwrap(), 1);
        lock.release().unwrap();
        assert!(!lock.is_locked().unwrap());
        // And a timed acquire that does not fire.
        let mut p = start(m, acquire_within, lock.clone());
        assert!(p.join_timeout(PROMPTLY).unwrap());
    }
    assert!(util::shm_leaks().is_empty());
}

// ---------------------------------------------------------------- Semaphores

/// Takes a unit 200 times; returns the most holders it ever saw at once.
fn hold_unit((sem, inside): (Semaphore, RawValue<u32>)) -> u32 {
    let mut most = 0;
    for _ in 0..200 {
        sem.acquire().unwrap();
        let now = inside.fetch_add(1) + 1;
        most = most.max(now);
        std::thread::yield_now();
        inside.fetch_sub(1);
        sem.release().unwrap();
    }
    most
}

#[test]
fn semaphore_limits_holders_across_processes() {
    for m in METHODS {
        let arg = (Semaphore::new(2).unwrap(), RawValue::new(0u32).unwrap());
        let most = join_all(start_n(m, 4, hold_unit, &arg));
        assert!(
            most.iter().all(|&n| (1..=2).contains(&n)),
            "{m:?}: {most:?}"
        );
        assert_eq!(arg.0.get_value().unwrap(), 2);
    }
}

/// A timed acquire that fires, then (once the parent knows) one that does not.
fn acquire_twice((sem, ready): (Semaphore, Event)) -> (bool, bool) {
    let fired = matches!(sem.acquire_timeout(SHORT), Err(Error::Timeout(_)))
        && matches!(sem.acquire_timeout(Duration::ZERO), Err(Error::Timeout(_)));
    ready.set().unwrap();
    let got = sem.acquire_timeout(PROMPTLY).is_ok();
    (fired, got)
}

fn give_unit(sem: Semaphore) {
    sem.release().unwrap();
}

#[test]
fn semaphore_timeouts_fire_and_do_not_fire() {
    for m in METHODS {
        let (sem, ready) = (Semaphore::new(0).unwrap(), Event::new().unwrap());
        let mut waiter = start(m, acquire_twice, (sem.clone(), ready.clone()));
        assert!(ready.wait_timeout(PROMPTLY).unwrap());
        // The unit comes from a third process.
        join_all(vec![start(m, give_unit, sem.clone())]);
        assert_eq!(
            waiter.join_timeout(PROMPTLY).unwrap(),
            (true, true),
            "{m:?}"
        );
        assert_eq!(sem.get_value().unwrap(), 0);
    }
}

fn over_release(sem: BoundedSemaphore) -> (bool, bool, u32) {
    let first = matches!(sem.release(), Err(Error::InvalidState(_)));
    sem.acquire().unwrap();
    sem.release().unwrap();
    let second = matches!(sem.release(), Err(Error::InvalidState(_)));
    (first, second, sem.get_value().unwrap())
}

#[test]
fn bounded_semaphore_refuses_over_release_in_a_child() {
    for m in METHODS {
        let sem = BoundedSemaphore::new(3).unwrap();
        let mut p = start(m, over_release, sem.clone());
        assert_eq!(p.join_timeout(PROMPTLY).unwrap(), (true, true, 3), "{m:?}");
    }
}

// ---------------------------------------------------------------- Condition

const ITEMS: u64 = 300;

fn produce((cond, items): (Condition, RawValue<u64>)) {
    for _ in 0..ITEMS {
        let _g = cond.lock().unwrap();
        items.set(items.get() + 1);
        cond.notify(1).unwrap();
    }
}

/// Takes `ITEMS / 2` items, each once one is there.
fn consume((cond, items): (Condition, RawValue<u64>)) -> u64 {
    let mut taken = 0;
    for _ in 0..ITEMS / 2 {
        let _g = cond.lock().unwrap();
        assert!(
            !cond
                .wait_for_timeout(|| items.get() > 0, PROMPTLY)
                .unwrap()
                .timed_out()
        );
        items.set(items.get() - 1);
        taken += 1;
    }
    taken
}

fn conditions() -> Vec<Condition> {
    vec![
        Condition::new().unwrap(),
        Condition::with_lock(Lock::new().unwrap()).unwrap(),
        Condition::with_lock(RLock::new().unwrap()).unwrap(),
        // A Value's own lock (a DataLock) is no longer a condition's lock:
        // `Condition::release` and `wait` would release it under a live
        // value guard. tests/compile_fail/cases/condition_over_data_lock.rs checks
        // that it does not compile.
    ]
}

#[test]
fn condition_producer_and_consumers() {
    for m in METHODS {
        for cond in conditions() {
            let arg = (cond, RawValue::new(0u64).unwrap());
            let consumers = start_n(m, 2, consume, &arg);
            let producer = start(m, produce, arg.clone());
            join_all(vec![producer]);
            assert_eq!(join_all(consumers), vec![ITEMS / 2; 2], "{m:?}");
            assert_eq!(arg.1.get(), 0);
        }
    }
}

/// A timed wait that fires, then one that is ended by the parent's notify.
fn wait_twice((cond, flag): (Condition, RawValue<u32>)) -> (bool, bool, bool) {
    let _g = cond.lock().unwrap();
    let fired = cond.wait_timeout(SHORT).unwrap().timed_out();
    flag.set(1);
    cond.notify_all().unwrap();
    let released = !cond
        .wait_for_timeout(|| flag.get() == 2, PROMPTLY)
        .unwrap()
        .timed_out();
    let zero = cond.wait_timeout(Duration::ZERO).unwrap().timed_out();
    (fired, released, zero)
}

#[test]
fn condition_timeouts_fire_and_do_not_fire() {
    for m in METHODS {
        for cond in conditions() {
            let flag = RawValue::new(0u32).unwrap();
            let mut p = start(m, wait_twice, (cond.clone(), flag.clone()));
            {
                let _g = cond.lock().unwrap();
                assert!(
                    !cond
                        .wait_for_timeout(|| flag.get() == 1, PROMPTLY)
                        .unwrap()
                        .timed_out()
                );
                flag.set(2);
                cond.notify(1).unwrap();
            }
            assert_eq!(
                p.join_timeout(PROMPTLY).unwrap(),
                (true, true, true),
                "{m:?}"
            );
        }
    }
}

fn misuse(cond: Condition) -> (bool, bool, bool) {
    let wait = matches!(cond.wait_timeout(SHORT), Err(Error::InvalidState(_)));
    let wait_for = matches!(cond.wait_for(|| true), Err(Error::InvalidState(_)));
    let notify = matches!(cond.notify_all(), Err(Error::InvalidState(_)));
    (wait, wait_for, notify)
}

#[test]
fn condition_without_the_lock_is_refused() {
    for m in METHODS {
        for cond in conditions() {
            // Not held by anyone, then held by the parent: neither lets the child wait.
            let mut p = start(m, misuse, cond.clone());
            assert_eq!(p.join_timeout(PROMPTLY).unwrap(), (true, true, true));
            let _g = cond.lock().unwrap();
            let mut p = start(m, misuse, cond.clone());
            assert_eq!(p.join_timeout(PROMPTLY).unwrap(), (true, true, true));
        }
    }
}

// ---------------------------------------------------------------- Event

const PINGS: u32 = 200;

fn pong((ping, pong): (Event, Event)) -> u32 {
    let mut rounds = 0;
    for _ in 0..PINGS {
        if !ping.wait_timeout(PROMPTLY).unwrap() {
            break;
        }
        ping.clear().unwrap();
        pong.set().unwrap();
        rounds += 1;
    }
    rounds
}

#[test]
fn event_ping_pong_between_two_processes() {
    for m in METHODS {
        let (ping, pong_ev) = (Event::new().unwrap(), Event::new().unwrap());
        let mut p = start(m, pong, (ping.clone(), pong_ev.clone()));
        for _ in 0..PINGS {
            ping.set().unwrap();
            assert!(pong_ev.wait_timeout(PROMPTLY).unwrap(), "{m:?}");
            pong_ev.clear().unwrap();
        }
        assert_eq!(p.join_timeout(PROMPTLY).unwrap(), PINGS);
    }
}

/// Timed waits that fire, then (once the parent knows) one that does not.
fn wait_event((e, ready): (Event, Event)) -> (bool, bool) {
    let fired = !e.wait_timeout(SHORT).unwrap()
        && !e.wait_timeout(Duration::ZERO).unwrap()
        && !e.try_wait().unwrap();
    ready.set().unwrap();
    (fired, e.wait_timeout(PROMPTLY).unwrap())
}

fn set_event(e: Event) {
    e.set().unwrap();
}

#[test]
fn event_timeouts_fire_and_do_not_fire() {
    for m in METHODS {
        let (e, ready) = (Event::new().unwrap(), Event::new().unwrap());
        let mut waiter = start(m, wait_event, (e.clone(), ready.clone()));
        assert!(ready.wait_timeout(PROMPTLY).unwrap());
        join_all(vec![start(m, set_event, e.clone())]);
        assert_eq!(
            waiter.join_timeout(PROMPTLY).unwrap(),
            (true, true),
            "{m:?}"
        );
        assert!(e.is_set().unwrap());
    }
}

// ---------------------------------------------------------------- Barrier

const ROUNDS: usize = 30;
static ACTIONS_RUN: AtomicUsize = AtomicUsize::new(0);

fn count_round() {
    ACTIONS_RUN.fetch_add(1, Ordering::SeqCst);
}

/// Waits `ROUNDS` times; returns the indexes and how many actions ran here.
fn party(b: Barrier) -> (Vec<usize>, usize) {
    let idx = (0..ROUNDS)
        .map(|_| b.wait_timeout(PROMPTLY).unwrap())
        .collect();
    (idx, ACTIONS_RUN.load(Ordering::SeqCst))
}

#[test]
fn barrier_rounds_across_processes_with_an_action() {
    for m in METHODS {
        ACTIONS_RUN.store(0, Ordering::SeqCst);
        let b = Barrier::with_action(3, count_round).unwrap();
        let children = start_n(m, 2, party, &b);
        let (mine, actions_here) = party(b.clone());
        let theirs = join_all(children);
        for (round, &here) in mine.iter().enumerate() {
            let mut idx = vec![here, theirs[0].0[round], theirs[1].0[round]];
            idx.sort();
            assert_eq!(idx, vec![0, 1, 2], "{m:?} round {round}");
        }
        // The action ran once per round, in whichever process arrived last.
        let total = actions_here + theirs[0].1 + theirs[1].1;
        assert_eq!(total, ROUNDS, "{m:?}");
        assert_eq!(b.n_waiting().unwrap(), 0);
        assert!(!b.broken().unwrap());
    }
}

fn lone_party(b: Barrier) -> bool {
    matches!(b.wait_timeout(SHORT), Err(Error::BrokenBarrier))
}

fn one_round(b: Barrier) -> bool {
    b.wait_timeout(PROMPTLY).is_ok()
}

#[test]
fn barrier_timeouts_fire_and_do_not_fire() {
    for m in METHODS {
        let b = Barrier::new(2).unwrap();
        let mut p = start(m, lone_party, b.clone());
        assert!(p.join_timeout(PROMPTLY).unwrap(), "{m:?}");
        assert!(b.broken().unwrap());
        assert!(matches!(
            b.wait_timeout(PROMPTLY),
            Err(Error::BrokenBarrier)
        ));
        b.reset().unwrap();
        let mut p = start(m, one_round, b.clone());
        b.wait_timeout(PROMPTLY).unwrap();
        assert!(p.join_timeout(PROMPTLY).unwrap());
    }
}

fn abort_it(b: Barrier) {
    b.abort().unwrap();
}

#[test]
fn barrier_abort_from_another_process_fails_the_waiter() {
    for m in METHODS {
        let b = Barrier::new(2).unwrap();
        let mut p = start(m, abort_it, b.clone());
        assert!(matches!(
            b.wait_timeout(PROMPTLY),
            Err(Error::BrokenBarrier)
        ));
        p.join_timeout(PROMPTLY).unwrap();
        assert!(b.broken().unwrap());
    }
}

/// One round, then hold the barrier until killed.
fn round_then_hang((b, never): (Barrier, Event)) {
    b.wait_timeout(PROMPTLY).unwrap();
    never.wait().unwrap();
}

fn wait_and_time(b: &Barrier) -> (bool, u128) {
    let start = Instant::now();
    let broken = matches!(b.wait_timeout(PROMPTLY), Err(Error::BrokenBarrier));
    (broken, start.elapsed().as_millis())
}

/// One round, then a second that the killed party never joins.
fn two_rounds(b: Barrier) -> (bool, u128) {
    b.wait_timeout(PROMPTLY).unwrap();
    wait_and_time(&b)
}

/// Far below the timeout that would also have broken the barrier.
fn assert_prompt(m: StartMethod, ms: &[u128]) {
    let bound = PROMPTLY.as_millis() / 4;
    assert!(ms.iter().all(|&t| t < bound), "{m:?}: {ms:?} ms");
}

#[test]
fn a_killed_party_breaks_the_barrier_promptly() {
    for m in METHODS {
        let b = Barrier::new(3).unwrap();
        let never = Event::new().unwrap();
        let mut other = start(m, two_rounds, b.clone());
        let mut victim = start(m, round_then_hang, (b.clone(), never.clone()));
        b.wait_timeout(PROMPTLY).unwrap();
        victim.kill().unwrap();
        let (broken_here, ms_here) = wait_and_time(&b);
        assert_killed(&mut victim);
        let (broken_there, ms_there) = other.join_timeout(PROMPTLY * 2).unwrap();
        assert!(broken_here && broken_there, "{m:?}");
        assert_prompt(m, &[ms_here, ms_there]);

        // The death was reported once: after a reset, a replacement party
        // completes a round with the two survivors.
        b.reset().unwrap();
        let mut again = start(m, one_round, b.clone());
        let mut replacement = start(m, one_round, b.clone());
        b.wait_timeout(PROMPTLY).unwrap();
        assert!(again.join_timeout(PROMPTLY).unwrap(), "{m:?}");
        assert!(replacement.join_timeout(PROMPTLY).unwrap());
    }
    assert!(util::shm_leaks().is_empty());
}

fn die_with_the_barrier(_b: Barrier) {
    kill_myself();
}

fn wait_alone(b: Barrier) -> (bool, u128) {
    wait_and_time(&b)
}

/// A spawned child holds the barrier from the moment it decodes its handle,
/// so it is noticed even if it dies before its first wait. (A forked child
/// inherits its argument without decoding it and is recorded at its first
/// use of the barrier, as the test above does.)
#[test]
fn a_spawned_party_killed_before_it_waits_breaks_the_barrier() {
    let m = StartMethod::Spawn;
    let b = Barrier::new(3).unwrap();
    let mut other = start(m, wait_alone, b.clone());
    let mut victim = start(m, die_with_the_barrier, b.clone());
    let (broken_here, ms_here) = wait_and_time(&b);
    assert_killed(&mut victim);
    let (broken_there, ms_there) = other.join_timeout(PROMPTLY * 2).unwrap();
    assert!(broken_here && broken_there);
    assert_prompt(m, &[ms_here, ms_there]);
}

/// Where a pool initializer or a child keeps its barrier (Python's usual
/// way to give a pool's workers a sync object: a global set by the
/// initializer).
static KEPT: std::sync::OnceLock<Barrier> = std::sync::OnceLock::new();

fn keep_barrier(b: Barrier) {
    assert_eq!(b.parties().unwrap(), 2);
    let _ = KEPT.set(b);
}

fn plus_one(x: u32) -> u32 {
    x + 1
}

fn keep_and_return(b: Barrier) {
    keep_barrier(b);
}

fn keep_and_exit(b: Barrier) {
    keep_barrier(b);
    std::process::exit(0);
}

/// Completes a round of two: a thread waits, then (once it has had time to
/// check the barrier's holders, which is when it would have seen a "dead"
/// one) this thread arrives.
fn a_round_of_two(b: &Barrier, what: &str) {
    let other = b.clone();
    let t = std::thread::spawn(move || other.wait_timeout(PROMPTLY));
    util::eventually(PROMPTLY, || b.n_waiting().unwrap() == 1);
    std::thread::sleep(Duration::from_millis(300)); // past two liveness checks
    let mine = b.wait_timeout(PROMPTLY);
    let theirs = t.join().unwrap();
    assert!(
        mine.is_ok() && theirs.is_ok(),
        "{what}: {mine:?} {theirs:?}"
    );
}

/// A process that ends normally with a barrier handle it never dropped (in
/// a `static`, from a pool initializer; left by `std::process::exit`) is
/// not a dead party: the barrier is not broken for the live ones (it was,
/// for every round after a pool's workers ended). From an attack battery.
#[test]
fn a_process_that_ends_normally_holding_a_barrier_breaks_nothing() {
    for m in METHODS {
        let b = Barrier::new(2).unwrap();
        for maxtasks in [None, Some(1)] {
            let mut builder = multiproc::Pool::builder()
                .processes(1)
                .start_method(m)
                .initializer(keep_barrier, b.clone());
            if let Some(n) = maxtasks {
                builder = builder.maxtasksperchild(n);
            }
            let pool = builder.build().unwrap();
            assert_eq!(pool.map(plus_one, 0..4).unwrap(), [1, 2, 3, 4]);
            pool.close();
            pool.join_timeout(PROMPTLY).unwrap();
            a_round_of_two(&b, &format!("{m:?}, pool, maxtasksperchild {maxtasks:?}"));
        }
        start(m, keep_and_return, b.clone())
            .join_timeout(PROMPTLY)
            .unwrap();
        a_round_of_two(&b, &format!("{m:?}, a target that returned"));
        start(m, keep_and_exit, b.clone())
            .join_timeout(PROMPTLY)
            .unwrap();
        a_round_of_two(&b, &format!("{m:?}, a target that called exit"));
        assert!(!b.broken().unwrap());
    }
}

/// The same while another thread of this process waits at an unrelated
/// barrier: a forked child, which starts with a copy of this process's
/// state, ended normally and still counted as a party that died (its end
/// let go of nothing while any thread of its parent had waited anywhere).
/// From an attack battery.
#[test]
fn a_forked_child_ends_normally_while_its_parent_waits_elsewhere() {
    let elsewhere = Barrier::new(2).unwrap();
    let waiter = {
        let elsewhere = elsewhere.clone();
        std::thread::spawn(move || elsewhere.wait_timeout(PROMPTLY * 3))
    };
    assert!(util::eventually(PROMPTLY, || elsewhere
        .n_waiting()
        .unwrap()
        == 1));
    let b = Barrier::new(2).unwrap();
    for round in 0..3 {
        start(StartMethod::Fork, keep_and_return, b.clone())
            .join_timeout(PROMPTLY)
            .unwrap();
        a_round_of_two(&b, &format!("round {round}"));
    }
    elsewhere.wait_timeout(PROMPTLY).unwrap();
    waiter.join().unwrap().unwrap();
}

fn a_barrier_of_its_own(_: ()) -> usize {
    Barrier::new(1).unwrap().wait().unwrap()
}

/// Forked children each make a barrier while another thread of the parent
/// makes and drops barriers: the list of barriers a process holds, which
/// each new one goes into, was not held across the fork, and about one
/// child in 1,200 inherited it locked and waited for ever (from an attack
/// battery; 6,000 children here).
#[test]
fn forked_children_make_barriers_while_the_parent_does() {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut made = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let b = Barrier::new(2).unwrap();
                assert_eq!(b.parties().unwrap(), 2);
                made += 1;
            }
            made
        })
    };
    let mut failed = None;
    for i in 0..6000 {
        let mut p = start(StartMethod::Fork, a_barrier_of_its_own, ());
        if let Err(e) = p.join_timeout(PROMPTLY) {
            failed = Some(format!("child {i}: {e:?}"));
            let _ = p.kill();
            let _ = p.join_timeout(PROMPTLY);
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    assert!(churn.join().unwrap() > 0);
    assert_eq!(failed, None);
}

// ---------------------------------------------------------------- bad input

#[test]
fn bad_input_and_zero_timeouts() {
    assert!(matches!(Barrier::new(0), Err(Error::InvalidArgument(_))));

    let lock = Lock::new().unwrap();
    let g = lock.lock_timeout(Duration::ZERO).unwrap();
    assert!(matches!(
        lock.acquire_timeout(Duration::ZERO),
        Err(Error::Timeout(_))
    ));
    drop(g);
    assert!(matches!(lock.release(), Err(Error::InvalidState(_))));

    let rlock = RLock::new().unwrap();
    assert!(matches!(rlock.release(), Err(Error::InvalidState(_))));
    assert_eq!(
        rlock.acquire_timeout(Duration::ZERO).unwrap(),
        Acquired::Clean
    );
    assert_eq!(
        rlock.acquire_timeout(Duration::ZERO).unwrap(),
        Acquired::Clean
    );
    assert_eq!(rlock.recursion_count().unwrap(), 2);

    let sem = BoundedSemaphore::new(1).unwrap();
    sem.acquire_timeout(Duration::ZERO).unwrap();
    assert!(matches!(
        sem.acquire_timeout(Duration::ZERO),
        Err(Error::Timeout(_))
    ));
    sem.release().unwrap();
    assert!(matches!(sem.release(), Err(Error::InvalidState(_))));

    let event = Event::new().unwrap();
    assert!(!event.wait_timeout(Duration::ZERO).unwrap());
    event.set().unwrap();
    assert!(event.wait_timeout(Duration::ZERO).unwrap());

    let cond = Condition::new().unwrap();
    assert!(matches!(cond.wait(), Err(Error::InvalidState(_))));
    let _g = cond.lock().unwrap();
    assert!(cond.wait_timeout(Duration::ZERO).unwrap().timed_out());

    // A zero timeout on a barrier that is not complete breaks it, as in Python.
    let b = Barrier::new(2).unwrap();
    assert!(matches!(
        b.wait_timeout(Duration::ZERO),
        Err(Error::BrokenBarrier)
    ));
    assert!(b.broken().unwrap());
}

// ----- a barrier's default timeout (CPython's test_default_timeout) -----

const N: usize = 4;

/// CPython's `_test_default_timeout_f`: every party waits once (with an
/// explicit timeout), then again with the default; the late one comes only
/// once the others broke the barrier by their default timeout.
fn default_timeout_party(barrier: Barrier) -> bool {
    let i = barrier.wait_timeout(PROMPTLY).unwrap();
    if i == N / 2 {
        // Later than the default timeout: it comes once the others gave up.
        let start = Instant::now();
        while !barrier.broken().unwrap() && start.elapsed() < PROMPTLY {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    matches!(barrier.wait(), Err(Error::BrokenBarrier))
}

#[test]
fn test_default_timeout() {
    for m in METHODS {
        let barrier = Barrier::with_timeout(N, Duration::from_millis(500)).unwrap();
        assert_eq!(barrier.timeout(), Some(Duration::from_millis(500)));
        let results = join_all(start_n(m, N, default_timeout_party, &barrier));
        assert_eq!(results, [true; N], "{m:?}");
    }
    assert!(Barrier::new(1).unwrap().timeout().is_none());
}

fn action() {}

#[test]
fn a_default_timeout_goes_with_the_barrier_and_its_action() {
    let b = Barrier::with_action_and_timeout(1, action, Duration::from_secs(3)).unwrap();
    assert_eq!(b.timeout(), Some(Duration::from_secs(3)));
    assert_eq!(b.wait().unwrap(), 0);
    fn timeout_in_child(b: Barrier) -> Option<Duration> {
        b.timeout()
    }
    for m in METHODS {
        let mut p = start(m, timeout_in_child, b.clone());
        assert_eq!(
            p.join_timeout(PROMPTLY).unwrap(),
            Some(Duration::from_secs(3))
        );
    }
}
