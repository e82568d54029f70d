//! Chaos for the synchronisation primitives: a process is SIGKILLed at a
//! random instant while it holds a Lock or RLock, waits on a Condition or
//! loops through Barrier rounds. The RLock and Condition scenarios run
//! again with the ones a TCP `BaseManager` keeps (registered by name). Whatever the instant, the others neither
//! hang nor lose an update, and nothing is left behind.
//!
//! `CHAOS_ITERATIONS` (default 3) runs of each scenario under each start
//! method; `CHAOS_SEED` replays a run (each iteration prints its seed).

mod util;

use std::time::Instant;

use multiproc::{
    Barrier, BaseManager, Condition, Error, Lock, Process, RLock, RawArray, RawValue,
    RemoteManager, Shareable, StartMethod,
};
use util::PROMPTLY;
use util::chaos::{self, Rng, Snapshot};

multiproc::init_before_main!();

const METHODS: [StartMethod; 2] = [StartMethod::Spawn, StartMethod::Fork];
/// Kill delays are picked in `0..MAX_DELAY_US` after the victim is busy.
const MAX_DELAY_US: u64 = 20_000;

fn start<A: Shareable, R: Shareable>(m: StartMethod, f: fn(A) -> R, arg: A) -> Process<R> {
    let mut p = Process::new(f, arg).start_method(m);
    p.start().expect("start");
    p
}

fn wait_busy(ready: &RawValue<u32>) {
    assert!(
        util::eventually(PROMPTLY, || ready.load() != 0),
        "the victim never got going"
    );
}

fn assert_killed<R: Shareable>(p: &mut Process<R>) {
    match p.join_timeout(PROMPTLY) {
        Err(Error::ChildFailed {
            signal: Some(9), ..
        }) => {}
        other => panic!("the victim was not killed: {:?}", other.map(|_| ())),
    }
}

// ---------------------------------------------------------------- Lock / RLock

/// Two counters that are equal whenever the lock is free, unless a holder
/// died between the two writes (then the next holder sees `OwnerDied` and
/// repairs them).
type Pair = RawArray<u64>;

fn bump_pair(pair: &Pair, owner_died: Option<i32>, repairs: &mut u64) {
    let (a, b) = (pair.get(0).unwrap(), pair.get(1).unwrap());
    if owner_died.is_some() {
        assert!(a == b || a == b + 1, "torn beyond one step: {a} {b}");
        pair.set(1, a).unwrap();
        *repairs += 1;
    } else {
        assert_eq!(a, b, "a torn update without OwnerDied");
    }
    pair.set(0, a + 1).unwrap();
    std::hint::spin_loop();
    pair.set(1, pair.get(1).unwrap() + 1).unwrap();
}

/// Bumps the pair under the lock `rounds` times; returns how many repairs.
fn hammer_lock((lock, pair, ready, rounds): (Lock, Pair, RawValue<u32>, u64)) -> u64 {
    let mut repairs = 0;
    for _ in 0..rounds {
        let g = lock.lock_timeout(PROMPTLY).expect("lock within PROMPTLY");
        bump_pair(&pair, g.owner_died(), &mut repairs);
        ready.store(1);
    }
    repairs
}

/// The same through an RLock taken twice (recursion).
fn hammer_rlock((lock, pair, ready, rounds): (RLock, Pair, RawValue<u32>, u64)) -> u64 {
    let mut repairs = 0;
    for _ in 0..rounds {
        let outer = lock.lock_timeout(PROMPTLY).expect("lock within PROMPTLY");
        let inner = lock.lock_timeout(PROMPTLY).expect("re-entry");
        assert_eq!(lock.recursion_count().unwrap(), 2);
        assert!(inner.owner_died().is_none());
        bump_pair(&pair, outer.owner_died(), &mut repairs);
        drop(inner);
        drop(outer);
        ready.store(1);
    }
    repairs
}

const SURVIVOR_ROUNDS: u64 = 3_000;
/// A server-kept lock costs round trips: fewer rounds.
const REMOTE_SURVIVOR_ROUNDS: u64 = 300;

/// A TCP manager keeping an RLock and a Condition (over a recursive lock
/// of its own) under names.
fn remote_master() -> RemoteManager {
    BaseManager::new()
        .authkey(b"chaos-sync")
        .register::<RLock>("rlock")
        .register::<Condition>("cond")
        .start()
        .unwrap()
}

/// A victim and a survivor contend for one lock; the victim dies at a
/// random instant; the survivor finishes its `rounds`, and the pair is consistent.
fn lock_scenario(
    m: StartMethod,
    rng: &mut Rng,
    rounds: u64,
    hammer: impl Fn(Pair, RawValue<u32>, u64) -> Process<u64>,
    check_free: impl Fn() -> (bool, Option<i32>),
) {
    let pair = RawArray::from_elem(0u64, 2).unwrap();
    let ready = RawValue::new(0u32).unwrap();
    let quiet = RawValue::new(0u32).unwrap();
    let mut victim = hammer(pair.clone(), ready.clone(), u64::MAX);
    wait_busy(&ready);
    let mut survivor = hammer(pair.clone(), quiet, rounds);
    std::thread::sleep(rng.delay(MAX_DELAY_US));
    victim.kill().unwrap();
    assert_killed(&mut victim);
    let repairs = survivor.join_timeout(PROMPTLY * 2).expect("survivor");
    // The parent takes the lock last: it may be the one to see the death.
    let (clean, died) = check_free();
    let (a, b) = (pair.get(0).unwrap(), pair.get(1).unwrap());
    assert!(clean, "{m:?}: the lock is still held");
    assert!(
        repairs + u64::from(died.is_some()) <= 1,
        "{m:?}: death seen twice"
    );
    if died.is_some() {
        assert_eq!(died, victim.pid());
        assert!(a == b || a == b + 1);
    } else {
        assert_eq!(a, b, "{m:?}: torn pair without OwnerDied");
    }
    assert!(b >= rounds, "{m:?}: the survivor's rounds are missing");
}

fn lock_free_after(lock: &Lock) -> (bool, Option<i32>) {
    let g = lock.lock_timeout(PROMPTLY).unwrap();
    let died = g.owner_died();
    drop(g);
    (!lock.is_locked().unwrap(), died)
}

fn rlock_free_after(lock: &RLock) -> (bool, Option<i32>) {
    let g = lock.lock_timeout(PROMPTLY).unwrap();
    let died = g.owner_died();
    assert_eq!(
        lock.recursion_count().unwrap(),
        1,
        "the dead holder's recursion leaked"
    );
    drop(g);
    (!lock.is_locked().unwrap(), died)
}

fn lock_holder_killed(base: u64, n: u64) {
    for m in METHODS {
        chaos::repeat(&format!("lock/{m:?}"), base, n, |rng, _| {
            let lock = Lock::new().unwrap();
            let hammer =
                |pair, ready, rounds| start(m, hammer_lock, (lock.clone(), pair, ready, rounds));
            lock_scenario(m, rng, SURVIVOR_ROUNDS, hammer, || lock_free_after(&lock))
        });
        chaos::repeat(&format!("rlock/{m:?}"), base, n, |rng, _| {
            let lock = RLock::new().unwrap();
            let hammer =
                |pair, ready, rounds| start(m, hammer_rlock, (lock.clone(), pair, ready, rounds));
            lock_scenario(m, rng, SURVIVOR_ROUNDS, hammer, || rlock_free_after(&lock))
        });
        chaos::repeat(&format!("remote-rlock/{m:?}"), base, n, |rng, _| {
            let master = remote_master();
            let lock: RLock = master.get("rlock").unwrap();
            let hammer =
                |pair, ready, rounds| start(m, hammer_rlock, (lock.clone(), pair, ready, rounds));
            lock_scenario(m, rng, REMOTE_SURVIVOR_ROUNDS, hammer, || {
                rlock_free_after(&lock)
            });
            drop(lock);
            master.shutdown().unwrap();
        });
    }
}

// ---------------------------------------------------------------- Condition

/// `items << 32 | taken`, written in one store so it is never torn.
fn split(word: u64) -> (u64, u64) {
    (word >> 32, word & 0xffff_ffff)
}

/// Takes items one by one until `total` were taken (by anyone); returns its share.
fn consume((cond, word, ready, total): (Condition, RawValue<u64>, RawValue<u32>, u64)) -> u64 {
    let mut mine = 0;
    loop {
        let g = cond.lock_timeout(PROMPTLY).expect("condition lock");
        let outcome = cond.wait_for_timeout(
            || {
                let (items, taken) = split(word.load());
                items > 0 || taken == total
            },
            PROMPTLY,
        );
        // A victim killed holding the lock is reported in the outcome
        // (`owner_died`), never as an error.
        match outcome {
            Ok(w) if !w.timed_out() => {}
            Ok(_) => panic!("no item and no end within PROMPTLY"),
            Err(e) => panic!("{e}"),
        }
        let (items, taken) = split(word.load());
        if items > 0 {
            word.store((items - 1) << 32 | (taken + 1));
            mine += 1;
            ready.store(1);
        } else if taken == total {
            // Wake the other consumer so it sees the end too.
            cond.notify_all().unwrap();
            drop(g);
            return mine;
        }
    }
}

/// Two consumers take items the parent produces one by one (notifying one
/// consumer each); one consumer dies at a random instant (waiting, or
/// holding the lock); the other takes every item left, none twice.
fn condition_scenario(m: StartMethod, rng: &mut Rng, cond: Condition) {
    const TOTAL: u64 = 400;
    let word = RawValue::new(0u64).unwrap();
    let ready = RawValue::new(0u32).unwrap();
    let arg = |r: &RawValue<u32>| (cond.clone(), word.clone(), r.clone(), TOTAL);
    let mut victim = start(m, consume, arg(&ready));
    let mut survivor = start(m, consume, arg(&RawValue::new(0u32).unwrap()));
    let kill_after = rng.below(TOTAL / 2);
    let delay = rng.delay(MAX_DELAY_US);
    for i in 0..TOTAL {
        if i == kill_after {
            std::thread::sleep(delay);
            victim.kill().unwrap();
        }
        let _g = cond.lock_timeout(PROMPTLY).expect("producer lock");
        let (items, taken) = split(word.load());
        word.store((items + 1) << 32 | taken);
        cond.notify(1).unwrap();
    }
    assert_killed(&mut victim);
    survivor.join_timeout(PROMPTLY * 2).expect("survivor");
    let (items, taken) = split(word.load());
    assert_eq!((items, taken), (0, TOTAL), "{m:?}: items lost or doubled");
    let g = cond.lock_timeout(PROMPTLY).unwrap();
    drop(g);
}

// ---------------------------------------------------------------- Barrier

/// Runs barrier rounds until one fails; returns that error.
fn rounds((b, ready): (Barrier, RawValue<u32>)) -> String {
    loop {
        if let Err(e) = b.wait_timeout(PROMPTLY) {
            return format!("{e:?}");
        }
        ready.store(1);
    }
}

fn barrier_scenario(m: StartMethod, rng: &mut Rng) {
    let b = Barrier::new(3).unwrap();
    let ready = RawValue::new(0u32).unwrap();
    let mut victim = start(m, rounds, (b.clone(), ready.clone()));
    let mut survivor = start(m, rounds, (b.clone(), RawValue::new(0u32).unwrap()));
    let pid = victim.pid().unwrap();
    let delay = rng.delay(MAX_DELAY_US);
    let killer = std::thread::spawn({
        let ready = ready.clone();
        move || {
            wait_busy(&ready);
            std::thread::sleep(delay);
            chaos::sigkill(pid);
            Instant::now()
        }
    });
    let mine = loop {
        if let Err(e) = b.wait_timeout(PROMPTLY) {
            break e;
        }
    };
    let noticed = Instant::now();
    let killed_at = killer.join().unwrap();
    assert!(matches!(mine, Error::BrokenBarrier), "{m:?}: {mine:?}");
    let theirs = survivor.join_timeout(PROMPTLY * 2).expect("survivor");
    assert_eq!(theirs, "BrokenBarrier", "{m:?}");
    assert_killed(&mut victim);
    let late = noticed.saturating_duration_since(killed_at);
    assert!(
        late < PROMPTLY / 4,
        "{m:?}: noticed {late:?} after the kill"
    );
    b.reset().unwrap();
    assert!(!b.broken().unwrap());
    assert_eq!(b.n_waiting().unwrap(), 0);
}

// ---------------------------------------------------------------- the run

#[test]
fn sync_primitives_survive_random_kills_and_leave_nothing() {
    let base = chaos::base_seed();
    let n = chaos::iterations(3);
    let before = Snapshot::take();
    lock_holder_killed(base, n);
    for m in METHODS {
        chaos::repeat(&format!("condition/{m:?}"), base, n, |rng, _| {
            condition_scenario(m, rng, Condition::new().unwrap())
        });
        chaos::repeat(&format!("remote-condition/{m:?}"), base, n, |rng, _| {
            let master = remote_master();
            condition_scenario(m, rng, master.get("cond").unwrap());
            master.shutdown().unwrap();
        });
        chaos::repeat(&format!("barrier/{m:?}"), base, n, |rng, _| {
            barrier_scenario(m, rng)
        });
    }
    before.assert_no_leaks(1);
}
