//! Manager objects kept in Redis (#16): `RedisManager` hands out the same
//! types as the other managers, by name, and processes meet at them. Each
//! test runs its own `redis-server` (tests/util/redis.rs).
#![cfg(feature = "redis")]

mod util;

use std::time::Duration;

use multiproc::{
    Acquired, Barrier, Condition, ConditionLock, DictProxy, Error, Event, JoinableQueue, ListProxy,
    Lock, Process, Queue, RLock, RawValue, RedisManager, Semaphore, StartMethod,
};
use util::redis::RedisServer;
use util::{PROMPTLY, within};

multiproc::init_before_main!();

const METHODS: [StartMethod; 2] = [StartMethod::Spawn, StartMethod::Fork];

/// A short lease, so that a dead holder's lock passes on soon.
const LEASE: Duration = Duration::from_millis(500);

fn manager(server: &RedisServer) -> RedisManager {
    RedisManager::connect(&server.url())
        .unwrap()
        .prefix("test")
        .unwrap()
        .lease(LEASE)
        .unwrap()
}

fn start<A: multiproc::Shareable, R: multiproc::Shareable>(
    m: StartMethod,
    f: fn(A) -> R,
    arg: A,
) -> Process<R> {
    let mut p = Process::new(f, arg).start_method(m);
    p.start().expect("start");
    p
}

fn unavailable<T: std::fmt::Debug>(r: multiproc::Result<T>) -> String {
    match r {
        Err(Error::BackendUnavailable { backend, cause }) => {
            assert_eq!(backend, "redis");
            cause
        }
        other => panic!("expected BackendUnavailable, got {other:?}"),
    }
}

#[test]
fn an_unreachable_server_is_backend_unavailable_promptly() {
    // Nothing listens on port 1 of loopback.
    let r = within(PROMPTLY, || RedisManager::connect("redis://127.0.0.1:1/0"))
        .expect("connect to an unreachable server hung");
    let cause = unavailable(r);
    assert!(cause.contains("127.0.0.1:1"), "{cause}");
}

#[test]
fn a_wrong_password_is_backend_unavailable_and_never_shown() {
    let server = RedisServer::start_with_password("right-pw");
    let wrong = format!("redis://:wrong-pw@127.0.0.1:{}/0", server.port());
    let cause =
        unavailable(within(PROMPTLY, move || RedisManager::connect(&wrong)).expect("connect hung"));
    assert!(!cause.contains("wrong-pw"), "{cause}");
    let none = format!("redis://127.0.0.1:{}/0", server.port());
    unavailable(within(PROMPTLY, move || RedisManager::connect(&none)).expect("connect hung"));
    let m = RedisManager::connect(&server.url()).unwrap();
    assert!(!format!("{m:?}").contains("right-pw"));
    let lock = m.lock("l").unwrap();
    assert!(!format!("{lock:?}").contains("right-pw"));
    // In a message the handle leaves the password out...
    let bytes = multiproc::Shareable::encode(&lock).unwrap();
    assert!(!bytes.windows(8).any(|w| w == b"right-pw"));
    // ...and a process that connected with it can still use the handle.
    let back: Lock = multiproc::Shareable::decode(&bytes).unwrap();
    assert!(!back.is_locked().unwrap());
    // A child gets the password with the handle, as a remote handle's authkey.
    for method in METHODS {
        let mut p = start(method, take_and_release, lock.clone());
        assert!(p.join_timeout(PROMPTLY).unwrap(), "{method:?}");
    }
    m.clear().unwrap();
}

fn take_and_release(lock: Lock) -> bool {
    let taken = lock.try_acquire().is_ok();
    taken && lock.release().is_ok()
}

#[test]
fn a_dict_is_a_hash_with_python_methods() {
    let server = RedisServer::start();
    let m = manager(&server);
    let d: DictProxy<String, u32> = m.dict("d").unwrap();
    assert_eq!(d.get(&"a".into()).unwrap(), None);
    d.insert("a".into(), 1).unwrap();
    d.update([("b".to_string(), 2), ("c".to_string(), 3)])
        .unwrap();
    assert_eq!(d.len().unwrap(), 3);
    assert!(d.contains_key(&"b".into()).unwrap());
    assert_eq!(d.setdefault("a".into(), 9).unwrap(), 1);
    assert_eq!(d.setdefault("z".into(), 9).unwrap(), 9);
    assert_eq!(d.pop(&"z".into()).unwrap(), 9);
    assert!(matches!(d.pop(&"z".into()), Err(Error::KeyNotFound(_))));
    assert_eq!(d.remove(&"c".into()).unwrap(), Some(3));
    let mut keys = d.keys().unwrap();
    keys.sort();
    assert_eq!(keys, vec!["a".to_string(), "b".to_string()]);
    assert_eq!(d.copy().unwrap().get("b"), Some(&2));
    assert_eq!(d.update_with("a".into(), 0, |n| n + 10).unwrap(), 11);
    let (k, _) = d.popitem().unwrap();
    assert!(!d.contains_key(&k).unwrap());
    d.clear().unwrap();
    assert!(d.is_empty().unwrap());
    assert!(matches!(d.popitem(), Err(Error::KeyNotFound(_))));
    // The same name with other types is refused; another handle of the
    // same types meets the same dict.
    assert!(matches!(
        m.dict::<u8, u8>("d"),
        Err(Error::TypeMismatch { .. })
    ));
    assert!(m.list::<u32>("d").is_ok(), "kinds have their own names");
    d.insert("x".into(), 5).unwrap();
    assert_eq!(
        m.dict::<String, u32>("d")
            .unwrap()
            .get(&"x".into())
            .unwrap(),
        Some(5)
    );
    m.clear().unwrap();
    assert_eq!(server.dbsize(), 0);
}

fn count_up(d: DictProxy<String, u64>) {
    for _ in 0..50 {
        d.update_with("n".into(), 0, |n| n + 1).unwrap();
    }
}

#[test]
fn many_processes_counting_in_a_dict_lose_nothing() {
    let server = RedisServer::start();
    let m = manager(&server);
    for method in METHODS {
        let d = m.dict::<String, u64>(&format!("count-{method:?}")).unwrap();
        let mut ps: Vec<_> = (0..4).map(|_| start(method, count_up, d.clone())).collect();
        for p in &mut ps {
            p.join_timeout(PROMPTLY * 3).unwrap();
        }
        assert_eq!(d.get(&"n".into()).unwrap(), Some(200), "{method:?}");
    }
    m.clear().unwrap();
}

fn locked_increments((lock, d): (Lock, DictProxy<String, u64>)) {
    for _ in 0..20 {
        let _g = lock.lock().unwrap();
        // A read, then a write: only the lock makes this safe.
        let n = d.get(&"n".into()).unwrap().unwrap_or(0);
        d.insert("n".into(), n + 1).unwrap();
    }
}

#[test]
fn a_lock_excludes_other_processes() {
    let server = RedisServer::start();
    let m = manager(&server);
    for method in METHODS {
        let lock = m.lock(&format!("l-{method:?}")).unwrap();
        let d = m.dict::<String, u64>(&format!("d-{method:?}")).unwrap();
        let mut ps: Vec<_> = (0..3)
            .map(|_| start(method, locked_increments, (lock.clone(), d.clone())))
            .collect();
        for p in &mut ps {
            p.join_timeout(PROMPTLY * 3).unwrap();
        }
        assert_eq!(d.get(&"n".into()).unwrap(), Some(60), "{method:?}");
        assert!(!lock.is_locked().unwrap());
    }
    m.clear().unwrap();
}

#[test]
fn lock_forms_and_release() {
    let server = RedisServer::start();
    let m = manager(&server);
    let lock = m.lock("l").unwrap();
    assert_eq!(lock.try_acquire().unwrap(), Acquired::Clean);
    assert!(lock.is_locked().unwrap());
    assert_eq!(lock.owner_pid(), Some(std::process::id() as i32));
    assert!(matches!(lock.try_acquire(), Err(Error::WouldBlock)));
    assert!(matches!(
        lock.acquire_timeout(Duration::from_millis(50)),
        Err(Error::Timeout(_))
    ));
    // Held past several leases: the holder's process renews it.
    let other = m.lock("l").unwrap();
    assert!(matches!(
        other.acquire_timeout(LEASE * 3),
        Err(Error::Timeout(_))
    ));
    other.release().unwrap(); // any process (or handle) may release
    assert!(matches!(lock.release(), Err(Error::InvalidState(_))));
    {
        let g = lock.lock_timeout(PROMPTLY).unwrap();
        assert_eq!(g.owner_died(), None);
    }
    assert!(!lock.is_locked().unwrap());
    assert!(m.event("l").is_ok(), "kinds have their own names");
    assert!(matches!(
        m.semaphore("l", 1)
            .map(drop)
            .and_then(|()| m.bounded_semaphore("l", 1).map(drop)),
        Err(Error::TypeMismatch { .. })
    ));
    m.clear().unwrap();
}

fn hold_until_killed((lock, held, never): (Lock, Event, Event)) {
    let _g = lock.lock().unwrap();
    held.set().unwrap();
    // Killed while waiting here, holding the lock.
    let _ = never.wait_timeout(PROMPTLY * 3);
}

#[test]
fn a_killed_holder_loses_its_lock_and_the_next_is_told() {
    let server = RedisServer::start();
    let m = manager(&server);
    for method in METHODS {
        let lock = m.lock(&format!("dead-{method:?}")).unwrap();
        let held = m.event(&format!("held-{method:?}")).unwrap();
        let never = m.event("never").unwrap();
        let mut p = start(
            method,
            hold_until_killed,
            (lock.clone(), held.clone(), never),
        );
        assert!(held.wait_timeout(PROMPTLY).unwrap(), "{method:?}");
        let pid = p.pid().unwrap();
        p.kill().unwrap();
        assert!(p.join_timeout(PROMPTLY).is_err());
        match lock.acquire_timeout(PROMPTLY).unwrap() {
            Acquired::OwnerDied { pid: dead } => assert_eq!(dead, pid, "{method:?}"),
            other => panic!("{method:?}: expected OwnerDied, got {other:?}"),
        }
        lock.release().unwrap();
        assert_eq!(lock.acquire_timeout(PROMPTLY).unwrap(), Acquired::Clean);
        lock.release().unwrap();
    }
    m.clear().unwrap();
}

fn hold_until_told((lock, held, go): (Lock, Event, Event)) {
    let g = lock.lock().unwrap();
    held.set().unwrap();
    // Stopped here past its lease, then continued and told to go on.
    assert!(go.wait_timeout(PROMPTLY * 3).unwrap());
    drop(g);
}

/// A holder stopped (SIGSTOP) for longer than the lease is taken for
/// dead: the next acquirer claims the lock and is told. Continued, the
/// stopped holder's guard releases nothing of the new holder's.
#[test]
fn a_holder_stopped_past_its_lease_loses_the_lock_and_its_guard_releases_nothing() {
    let server = RedisServer::start();
    let m = manager(&server);
    for method in METHODS {
        let lock = m.lock(&format!("stopped-{method:?}")).unwrap();
        let held = m.event(&format!("held-{method:?}")).unwrap();
        let go = m.event(&format!("go-{method:?}")).unwrap();
        let mut p = start(
            method,
            hold_until_told,
            (lock.clone(), held.clone(), go.clone()),
        );
        assert!(held.wait_timeout(PROMPTLY).unwrap(), "{method:?}");
        let pid = p.pid().unwrap();
        // SAFETY: kill on the pid of a child this test started.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
        let resume = Resume(pid);
        match lock.acquire_timeout(PROMPTLY).unwrap() {
            Acquired::OwnerDied { pid: dead } => assert_eq!(dead, pid, "{method:?}"),
            other => panic!("{method:?}: expected OwnerDied, got {other:?}"),
        }
        drop(resume);
        go.set().unwrap();
        p.join_timeout(PROMPTLY).unwrap();
        assert_eq!(p.exitcode(), Some(0), "{method:?}");
        assert_eq!(
            lock.owner_pid(),
            Some(std::process::id() as i32),
            "{method:?}"
        );
        lock.release().unwrap();
    }
    m.clear().unwrap();
}

/// Two servers, each with a lock of the same prefix and name, held by one
/// process at once: each is renewed on its own server, past many leases.
#[test]
fn the_same_lock_name_on_two_servers_is_held_on_both() {
    let (one, two) = (RedisServer::start(), RedisServer::start());
    let (m1, m2) = (manager(&one), manager(&two));
    let (a, b) = (m1.lock("l").unwrap(), m2.lock("l").unwrap());
    let _ga = a.lock_timeout(PROMPTLY).unwrap();
    let _gb = b.lock_timeout(PROMPTLY).unwrap();
    let (a2, b2) = (m1.lock("l").unwrap(), m2.lock("l").unwrap());
    // Held past several leases, on both servers.
    assert!(matches!(
        a2.acquire_timeout(LEASE * 4),
        Err(Error::Timeout(_))
    ));
    assert!(matches!(b2.acquire_timeout(LEASE), Err(Error::Timeout(_))));
    assert!(a.is_locked().unwrap() && b.is_locked().unwrap());
    drop((_ga, _gb));
    assert!(!a.is_locked().unwrap() && !b.is_locked().unwrap());
    m1.clear().unwrap();
    m2.clear().unwrap();
}

#[test]
fn rlock_forms_and_owner_thread() {
    let server = RedisServer::start();
    let m = manager(&server);
    let lock = m.rlock("r").unwrap();
    assert_eq!(lock.acquire().unwrap(), Acquired::Clean);
    assert_eq!(lock.try_acquire().unwrap(), Acquired::Clean);
    assert_eq!(
        lock.acquire_timeout(Duration::ZERO).unwrap(),
        Acquired::Clean
    );
    assert_eq!(lock.recursion_count().unwrap(), 3);
    assert_eq!(lock.owner_pid(), Some(std::process::id() as i32));
    // Held past several leases: the holder's process renews it.
    let other = m.rlock("r").unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            assert!(!other.is_owned().unwrap());
            assert_eq!(other.recursion_count().unwrap(), 0);
            assert!(matches!(other.try_acquire(), Err(Error::WouldBlock)));
            assert!(matches!(
                other.acquire_timeout(LEASE * 3),
                Err(Error::Timeout(_))
            ));
            assert!(matches!(other.release(), Err(Error::InvalidState(_))));
        });
    });
    for left in [2, 1] {
        lock.release().unwrap();
        assert_eq!(lock.recursion_count().unwrap(), left);
        assert!(lock.is_locked().unwrap());
    }
    lock.release().unwrap();
    assert!(!lock.is_locked().unwrap());
    assert!(matches!(lock.release(), Err(Error::InvalidState(_))));
    {
        let outer = lock.lock_timeout(PROMPTLY).unwrap();
        let inner = lock.lock().unwrap();
        assert_eq!((outer.owner_died(), inner.owner_died()), (None, None));
        assert_eq!(other.recursion_count().unwrap(), 2, "a handle of one name");
    }
    assert!(!lock.is_locked().unwrap());
    assert!(m.lock("r").is_ok(), "kinds have their own names");
    m.clear().unwrap();
    assert_eq!(server.dbsize(), 0);
}

fn hold_rlock_until_killed((lock, held, never): (RLock, Event, Event)) {
    let _outer = lock.lock().unwrap();
    let _inner = lock.lock().unwrap();
    held.set().unwrap();
    // Killed while waiting here, holding the lock two deep.
    let _ = never.wait_timeout(PROMPTLY * 3);
}

#[test]
fn a_killed_rlock_holder_loses_it_and_the_next_is_told() {
    let server = RedisServer::start();
    let m = manager(&server);
    for method in METHODS {
        let lock = m.rlock(&format!("dead-{method:?}")).unwrap();
        let held = m.event(&format!("held-{method:?}")).unwrap();
        let never = m.event("never").unwrap();
        let mut p = start(
            method,
            hold_rlock_until_killed,
            (lock.clone(), held.clone(), never),
        );
        assert!(held.wait_timeout(PROMPTLY).unwrap(), "{method:?}");
        assert!(matches!(lock.try_acquire(), Err(Error::WouldBlock)));
        let pid = p.pid().unwrap();
        p.kill().unwrap();
        assert!(p.join_timeout(PROMPTLY).is_err());
        match lock.acquire_timeout(PROMPTLY).unwrap() {
            Acquired::OwnerDied { pid: dead } => assert_eq!(dead, pid, "{method:?}"),
            other => panic!("{method:?}: expected OwnerDied, got {other:?}"),
        }
        // The dead holder's two levels went with it.
        assert_eq!(lock.recursion_count().unwrap(), 1, "{method:?}");
        lock.release().unwrap();
        assert_eq!(lock.acquire_timeout(PROMPTLY).unwrap(), Acquired::Clean);
        lock.release().unwrap();
        assert!(!lock.is_locked().unwrap());
    }
    m.clear().unwrap();
}

/// Holds the condition's lock, counts itself in and waits; once woken
/// (holding the lock again) counts itself out: (timed out, owner died,
/// whether it holds the lock).
fn wait_counted((cond, waiting, woken): (Condition, RawValue<u32>, RawValue<u32>)) -> String {
    let g = cond.lock().unwrap();
    waiting.fetch_add(1);
    let w = cond.wait_timeout(PROMPTLY * 3).unwrap();
    woken.fetch_add(1);
    let holds = match cond.get_lock() {
        ConditionLock::RLock(l) => l.is_owned().unwrap(),
        ConditionLock::Lock(l) => l.is_locked().unwrap(),
    };
    drop(g);
    format!("{:?}", (w.timed_out(), w.owner_died(), holds))
}

#[test]
fn notify_one_of_two_waiting_processes_wakes_exactly_one() {
    let server = RedisServer::start();
    let m = manager(&server);
    for method in METHODS {
        let lock = m.lock(&format!("l-{method:?}")).unwrap();
        for cond in [
            m.condition(&format!("own-{method:?}")).unwrap(),
            m.condition_with(&format!("over-{method:?}"), lock.clone())
                .unwrap(),
        ] {
            let (waiting, woken) = (RawValue::new(0u32).unwrap(), RawValue::new(0u32).unwrap());
            let mut waiters: Vec<_> = (0..2)
                .map(|_| {
                    start(
                        method,
                        wait_counted,
                        (cond.clone(), waiting.clone(), woken.clone()),
                    )
                })
                .collect();
            // Each counts itself in holding the lock and lets go of it only
            // by waiting: once both counted, taking the lock finds both waiting.
            assert!(
                util::eventually(PROMPTLY, || waiting.load() == 2),
                "{method:?}"
            );
            {
                let _g = cond.lock_timeout(PROMPTLY).unwrap();
                assert_eq!(woken.load(), 0, "{method:?}: woken without a notify");
                cond.notify(1).unwrap();
            }
            assert!(
                util::eventually(PROMPTLY, || woken.load() == 1),
                "{method:?}"
            );
            {
                // Exactly one: the other would need the lock, held here,
                // to count itself out.
                let _g = cond.lock_timeout(PROMPTLY).unwrap();
                assert_eq!(woken.load(), 1, "{method:?}: notify(1) woke two");
                cond.notify_all().unwrap();
            }
            for p in &mut waiters {
                let seen = p.join_timeout(PROMPTLY * 3).unwrap();
                assert_eq!(seen, "(false, None, true)", "{method:?}");
            }
            assert_eq!(woken.load(), 2);
        }
        assert!(!lock.is_locked().unwrap());
    }
    m.clear().unwrap();
    assert_eq!(server.dbsize(), 0);
}

#[test]
fn a_timed_out_wait_returns_holding_the_lock() {
    let server = RedisServer::start();
    let m = manager(&server);
    let rlock = m.rlock("r").unwrap();
    let lock = m.lock("l").unwrap();
    for cond in [
        m.condition("own").unwrap(),
        m.condition_with("over-rlock", rlock.clone()).unwrap(),
        m.condition_with("over-lock", lock.clone()).unwrap(),
    ] {
        assert!(matches!(cond.wait(), Err(Error::InvalidState(_))));
        assert!(matches!(cond.notify(1), Err(Error::InvalidState(_))));
        let _outer = cond.lock().unwrap();
        let w = cond.wait_timeout(Duration::from_millis(100)).unwrap();
        assert!(w.timed_out());
        assert_eq!(w.acquired(), Acquired::Clean);
        assert!(cond.wait_timeout(Duration::ZERO).unwrap().timed_out());
        // Held again: another thread cannot take it, this one may notify.
        std::thread::scope(|s| {
            s.spawn(|| assert!(matches!(cond.try_acquire(), Err(Error::WouldBlock))));
        });
        if let ConditionLock::RLock(l) = cond.get_lock() {
            assert_eq!(l.recursion_count().unwrap(), 1);
        }
        cond.notify_all().unwrap();
    }
    assert!(!rlock.is_locked().unwrap() && !lock.is_locked().unwrap());
    // A condition keeps the lock it was made with, and takes only a
    // lock of its own server and prefix.
    assert!(matches!(
        m.condition("over-lock"),
        Err(Error::TypeMismatch { .. })
    ));
    assert!(matches!(
        m.condition_with("own", lock.clone()),
        Err(Error::TypeMismatch { .. })
    ));
    assert!(matches!(
        m.condition_with("x", Lock::new().unwrap()),
        Err(Error::InvalidArgument(_))
    ));
    let elsewhere = manager(&server).prefix("elsewhere").unwrap();
    assert!(matches!(
        elsewhere.condition_with("x", lock.clone()),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        Condition::with_lock(lock.clone()),
        Err(Error::InvalidArgument(_))
    ));
    // Over another condition's own lock: they share it.
    let own = m.condition("own").unwrap();
    let twin = m.condition_with("twin", own.get_lock().clone()).unwrap();
    {
        let _g = own.lock().unwrap();
        assert!(matches!(
            twin.get_lock(),
            ConditionLock::RLock(l) if l.recursion_count().unwrap() == 1
        ));
        twin.notify_all().unwrap();
    }
    m.clear().unwrap();
}

/// Waits on the condition (the lock held); returns the wait's outcome:
/// (timed out, owner died, whether it holds the lock).
fn wait_once((cond, waiting): (Condition, RawValue<u32>)) -> (bool, Option<i32>, bool) {
    let g = cond.lock().unwrap();
    waiting.fetch_add(1);
    let w = cond.wait_timeout(PROMPTLY * 3).unwrap();
    let holds = match cond.get_lock() {
        ConditionLock::RLock(l) => l.is_owned().unwrap(),
        ConditionLock::Lock(l) => l.is_locked().unwrap(),
    };
    drop(g);
    (w.timed_out(), w.owner_died(), holds)
}

#[test]
fn a_killed_waiters_notify_passes_on() {
    let server = RedisServer::start();
    let m = manager(&server);
    for method in METHODS {
        let cond = m.condition(&format!("c-{method:?}")).unwrap();
        let (waiting, woken) = (RawValue::new(0u32).unwrap(), RawValue::new(0u32).unwrap());
        // The first in line, to be killed while it waits.
        let mut doomed = start(method, wait_once, (cond.clone(), waiting.clone()));
        assert!(util::eventually(PROMPTLY, || waiting.load() == 1));
        let mut live: Vec<_> = (0..2)
            .map(|_| {
                start(
                    method,
                    wait_counted,
                    (cond.clone(), waiting.clone(), woken.clone()),
                )
            })
            .collect();
        assert!(util::eventually(PROMPTLY, || waiting.load() == 3));
        // All three wait now: each let go of the lock only by waiting.
        drop(cond.lock_timeout(PROMPTLY).unwrap());
        doomed.kill().unwrap();
        assert!(doomed.join_timeout(PROMPTLY).is_err());
        {
            // The dead waiter is first in line; its lease may not have
            // ended yet, so the notify may go to it first and pass on.
            let _g = cond.lock_timeout(PROMPTLY).unwrap();
            cond.notify(1).unwrap();
        }
        assert!(
            util::eventually(PROMPTLY, || woken.load() == 1),
            "{method:?}: the dead waiter's notify was lost"
        );
        {
            let _g = cond.lock_timeout(PROMPTLY).unwrap();
            assert_eq!(woken.load(), 1, "{method:?}: notify(1) woke two");
            cond.notify_all().unwrap();
        }
        for p in &mut live {
            let seen = p.join_timeout(PROMPTLY * 3).unwrap();
            assert_eq!(seen, "(false, None, true)", "{method:?}");
        }
    }
    m.clear().unwrap();
}

/// Takes the condition's lock (once its waiters let go of it by waiting),
/// says so, and waits to be killed.
fn hold_condition_lock((cond, held, never): (Condition, Event, Event)) {
    let _g = cond.lock().unwrap();
    held.set().unwrap();
    let _ = never.wait_timeout(PROMPTLY * 3);
}

#[test]
fn a_killed_holder_wakes_the_waiters_and_the_next_is_told() {
    let server = RedisServer::start();
    let m = manager(&server);
    for method in METHODS {
        let lock = m.lock(&format!("l-{method:?}")).unwrap();
        for cond in [
            m.condition(&format!("own-{method:?}")).unwrap(),
            m.condition_with(&format!("over-{method:?}"), lock.clone())
                .unwrap(),
        ] {
            let waiting = RawValue::new(0u32).unwrap();
            let mut waiters: Vec<_> = (0..2)
                .map(|_| start(method, wait_once, (cond.clone(), waiting.clone())))
                .collect();
            assert!(util::eventually(PROMPTLY, || waiting.load() == 2));
            let (held, never) = (m.event("held").unwrap(), m.event("never").unwrap());
            held.clear().unwrap();
            let mut holder = start(
                method,
                hold_condition_lock,
                (cond.clone(), held.clone(), never),
            );
            assert!(held.wait_timeout(PROMPTLY).unwrap(), "{method:?}");
            let pid = holder.pid().unwrap();
            holder.kill().unwrap();
            assert!(holder.join_timeout(PROMPTLY).is_err());
            // No notify comes: the death wakes both, each returns holding
            // the lock, and the first to take it back is told.
            let mut seen: Vec<_> = waiters
                .iter_mut()
                .map(|p| p.join_timeout(PROMPTLY * 3).unwrap())
                .collect();
            seen.sort();
            assert_eq!(
                seen,
                [(false, None, true), (false, Some(pid), true)],
                "{method:?}"
            );
            assert_eq!(cond.acquire_timeout(PROMPTLY).unwrap(), Acquired::Clean);
            cond.release().unwrap();
        }
    }
    m.clear().unwrap();
}

/// Receives an RLock and a condition through a queue; takes the RLock
/// (leaving with it held) and notifies the condition's waiter.
fn rlock_and_condition_from_a_queue(q: Queue<(RLock, Condition)>) -> bool {
    let (lock, cond) = q.get_timeout(PROMPTLY * 3).unwrap();
    let taken = lock.try_acquire().is_ok();
    let _g = cond.lock_timeout(PROMPTLY).unwrap();
    cond.notify_all().unwrap();
    taken
}

#[test]
fn rlocks_and_conditions_travel_inside_a_redis_queue() {
    let server = RedisServer::start();
    let m = manager(&server);
    for method in METHODS {
        let q = m
            .queue::<(RLock, Condition)>(&format!("q-{method:?}"))
            .unwrap();
        let lock = m.rlock(&format!("r-{method:?}")).unwrap();
        let cond = m
            .condition_with(&format!("c-{method:?}"), lock.clone())
            .unwrap();
        let other = m.rlock(&format!("o-{method:?}")).unwrap();
        let mut p = start(method, rlock_and_condition_from_a_queue, q.clone());
        let g = cond.lock().unwrap();
        q.put((other.clone(), cond.clone())).unwrap();
        let w = cond.wait_timeout(PROMPTLY * 3).unwrap();
        assert!(!w.timed_out(), "{method:?}");
        drop(g);
        assert!(p.join_timeout(PROMPTLY * 3).unwrap(), "{method:?}");
        // The child left holding the other RLock: the next acquirer is told.
        let got = other.acquire_timeout(PROMPTLY).unwrap();
        assert!(
            matches!(got, Acquired::OwnerDied { .. }),
            "{method:?}: {got:?}"
        );
        other.release().unwrap();
        assert!(!lock.is_locked().unwrap());
    }
    m.clear().unwrap();
}

fn produce(q: Queue<u32>) {
    for i in 0..20 {
        q.put(i).unwrap();
    }
}

#[test]
fn a_queue_passes_items_between_processes_in_order() {
    let server = RedisServer::start();
    let m = manager(&server);
    for method in METHODS {
        let q = m.queue::<u32>(&format!("q-{method:?}")).unwrap();
        let mut p = start(method, produce, q.clone());
        for i in 0..20 {
            assert_eq!(q.get_timeout(PROMPTLY).unwrap(), i, "{method:?}");
        }
        p.join_timeout(PROMPTLY).unwrap();
        assert!(matches!(q.try_get(), Err(Error::Empty)));
        assert!(matches!(
            q.get_timeout(Duration::from_millis(20)),
            Err(Error::Empty)
        ));
        assert!(q.empty().unwrap());
    }
    let b = m.queue_with_maxsize::<String>("bounded", 2).unwrap();
    assert_eq!(b.maxsize().unwrap(), 2);
    b.put("a".to_string()).unwrap();
    b.try_put("b".to_string()).unwrap();
    assert!(b.full().unwrap());
    assert!(matches!(b.try_put("c".to_string()), Err(Error::Full)));
    assert!(matches!(
        b.put_timeout("c".to_string(), Duration::from_millis(20)),
        Err(Error::Full)
    ));
    assert_eq!(b.get().unwrap(), "a");
    b.put_timeout("c".to_string(), PROMPTLY).unwrap();
    assert_eq!(b.qsize().unwrap(), 2);
    assert!(matches!(b.close(), Err(Error::InvalidArgument(_))));
    assert!(matches!(
        m.queue::<u32>("bounded"),
        Err(Error::TypeMismatch { .. })
    ));
    m.clear().unwrap();
}

fn take_and_die((q, took, never): (JoinableQueue<u32>, Event, Event)) {
    let item = q.get().unwrap();
    assert_eq!(item, 42);
    took.set().unwrap();
    // Killed while working on the item, before task_done.
    let _ = never.wait_timeout(PROMPTLY * 3);
}

#[test]
fn a_killed_consumers_item_goes_to_another_consumer() {
    let server = RedisServer::start();
    let m = manager(&server);
    for method in METHODS {
        let q = m.joinable_queue::<u32>(&format!("jq-{method:?}")).unwrap();
        let took = m.event(&format!("took-{method:?}")).unwrap();
        let never = m.event("never").unwrap();
        q.put(42).unwrap();
        let mut p = start(method, take_and_die, (q.clone(), took.clone(), never));
        assert!(took.wait_timeout(PROMPTLY).unwrap(), "{method:?}");
        assert_eq!(q.qsize().unwrap(), 0, "the item is in flight");
        p.kill().unwrap();
        assert!(p.join_timeout(PROMPTLY).is_err());
        assert_eq!(q.get_timeout(PROMPTLY).unwrap(), 42, "{method:?}");
        assert_eq!(q.unfinished_tasks().unwrap(), 1);
        assert!(matches!(q.try_join(), Err(Error::WouldBlock)));
        q.task_done().unwrap();
        q.join_timeout(PROMPTLY).unwrap();
        assert!(matches!(q.task_done(), Err(Error::InvalidState(_))));
    }
    m.clear().unwrap();
}

fn take_two_then_wait((q, took_one, took_two, never): (Queue<u32>, Event, Event, Event)) {
    // An item is there: taken in one round trip.
    assert_eq!(q.get().unwrap(), 1);
    took_one.set().unwrap();
    // None yet: waits in Redis until the parent puts one.
    assert_eq!(q.get_timeout(PROMPTLY).unwrap(), 2);
    took_two.set().unwrap();
    let _ = never.wait_timeout(PROMPTLY * 3);
}

#[test]
fn a_plain_queues_taken_items_are_not_given_again_when_its_consumer_dies() {
    let server = RedisServer::start();
    let m = manager(&server);
    for method in METHODS {
        let q = m.queue::<u32>(&format!("plain-{method:?}")).unwrap();
        let took_one = m.event(&format!("one-{method:?}")).unwrap();
        let took_two = m.event(&format!("two-{method:?}")).unwrap();
        let never = m.event("never").unwrap();
        q.put(1).unwrap();
        let mut p = start(
            method,
            take_two_then_wait,
            (q.clone(), took_one.clone(), took_two.clone(), never),
        );
        assert!(took_one.wait_timeout(PROMPTLY).unwrap(), "{method:?}");
        // Put the second item once the child waits for it in Redis.
        assert!(
            util::eventually(PROMPTLY, || server.blocked_clients() >= 1),
            "{method:?}: the child never waited in Redis"
        );
        q.put(2).unwrap();
        assert!(took_two.wait_timeout(PROMPTLY).unwrap(), "{method:?}");
        p.kill().unwrap();
        assert!(p.join_timeout(PROMPTLY).is_err());
        // Once the child's lease ends, a consumer that finds the queue
        // empty gives a dead consumer's in-flight items back: both items
        // were taken, so none may come back.
        assert!(
            matches!(q.get_timeout(LEASE * 6), Err(Error::Empty)),
            "{method:?}"
        );
        assert_eq!(q.qsize().unwrap(), 0);
    }
    m.clear().unwrap();
}

fn consume_all(q: JoinableQueue<u32>) -> u32 {
    let mut sum = 0;
    while let Ok(v) = q.get_timeout(Duration::from_secs(2)) {
        sum += v;
        q.task_done().unwrap();
    }
    sum
}

#[test]
fn join_waits_for_task_done_in_other_processes() {
    let server = RedisServer::start();
    let m = manager(&server);
    for method in METHODS {
        let q = m
            .joinable_queue::<u32>(&format!("work-{method:?}"))
            .unwrap();
        for i in 1..=10 {
            q.put(i).unwrap();
        }
        let mut ps: Vec<_> = (0..2)
            .map(|_| start(method, consume_all, q.clone()))
            .collect();
        q.join_timeout(PROMPTLY).unwrap();
        let total: u32 = ps
            .iter_mut()
            .map(|p| p.join_timeout(PROMPTLY).unwrap())
            .sum();
        assert_eq!(total, 55, "{method:?}");
    }
    m.clear().unwrap();
}

fn wait_then_release((ev, sem): (Event, Semaphore)) {
    assert!(ev.wait_timeout(PROMPTLY).unwrap());
    sem.release().unwrap();
}

#[test]
fn events_and_semaphores_across_processes() {
    let server = RedisServer::start();
    let m = manager(&server);
    for method in METHODS {
        let ev = m.event(&format!("go-{method:?}")).unwrap();
        let sem = m.semaphore(&format!("done-{method:?}"), 0).unwrap();
        assert!(!ev.is_set().unwrap());
        assert!(!ev.wait_timeout(Duration::from_millis(20)).unwrap());
        let mut ps: Vec<_> = (0..3)
            .map(|_| start(method, wait_then_release, (ev.clone(), sem.clone())))
            .collect();
        assert!(matches!(sem.try_acquire(), Err(Error::WouldBlock)));
        ev.set().unwrap();
        for _ in 0..3 {
            sem.acquire_timeout(PROMPTLY).unwrap();
        }
        for p in &mut ps {
            p.join_timeout(PROMPTLY).unwrap();
        }
        assert_eq!(sem.get_value().unwrap(), 0);
        ev.clear().unwrap();
        assert!(!ev.try_wait().unwrap());
    }
    let b = m.bounded_semaphore("b", 1).unwrap();
    assert_eq!(b.max_value(), Some(1));
    b.acquire().unwrap();
    b.release().unwrap();
    assert!(matches!(b.release(), Err(Error::InvalidState(_))));
    m.clear().unwrap();
}

fn meet(b: Barrier) -> usize {
    b.wait_timeout(PROMPTLY).unwrap()
}

#[test]
fn a_barrier_releases_all_parties_together() {
    let server = RedisServer::start();
    let m = manager(&server);
    for method in METHODS {
        let b = m.barrier(&format!("b-{method:?}"), 3).unwrap();
        assert_eq!(b.parties().unwrap(), 3);
        let mut ps: Vec<_> = (0..2).map(|_| start(method, meet, b.clone())).collect();
        let mine = b.wait_timeout(PROMPTLY).unwrap();
        let mut seen: Vec<usize> = ps
            .iter_mut()
            .map(|p| p.join_timeout(PROMPTLY).unwrap())
            .collect();
        seen.push(mine);
        seen.sort();
        assert_eq!(seen, vec![0, 1, 2], "{method:?}");
    }
    // A timeout breaks it for everyone, until reset; abort breaks it too.
    let b = m.barrier("t", 2).unwrap();
    assert!(matches!(b.try_wait(), Err(Error::WouldBlock)));
    assert!(matches!(
        b.wait_timeout(Duration::from_millis(50)),
        Err(Error::BrokenBarrier)
    ));
    assert!(b.broken().unwrap());
    assert!(matches!(b.wait(), Err(Error::BrokenBarrier)));
    b.reset().unwrap();
    assert!(!b.broken().unwrap());
    let other = b.clone();
    let waiter = std::thread::spawn(move || other.wait_timeout(PROMPTLY));
    assert!(util::eventually(PROMPTLY, || b.n_waiting().unwrap() == 1));
    b.abort().unwrap();
    assert!(matches!(waiter.join().unwrap(), Err(Error::BrokenBarrier)));
    m.clear().unwrap();
}

fn use_nested(d: DictProxy<String, Queue<u32>>) -> u32 {
    let q = d.get(&"q".into()).unwrap().unwrap();
    q.get_timeout(PROMPTLY).unwrap()
}

#[test]
fn redis_handles_travel_inside_values() {
    let server = RedisServer::start();
    let m = manager(&server);
    let d = m.dict::<String, Queue<u32>>("nested").unwrap();
    let q = m.queue::<u32>("inner").unwrap();
    d.insert("q".into(), q.clone()).unwrap();
    q.put(9).unwrap();
    for method in METHODS {
        let mut p = start(method, use_nested, d.clone());
        assert_eq!(p.join_timeout(PROMPTLY).unwrap(), 9);
        q.put(9).unwrap();
    }
    // In a list, and through a queue of locks.
    let l: ListProxy<Lock> = m.list("locks").unwrap();
    l.push(m.lock("x").unwrap()).unwrap();
    let lock = l.get(0).unwrap();
    let _g = lock.lock().unwrap();
    assert!(m.lock("x").unwrap().is_locked().unwrap());
    m.clear().unwrap();
}

/// A Redis container cannot keep a manager's object alive: a manager proxy
/// stored in one is refused (its object was freed once a first reader
/// dropped it, or after the pin's 10 minutes). A Redis queue carries one,
/// as any message does.
#[test]
fn a_redis_container_refuses_a_manager_proxy() {
    let server = RedisServer::start();
    let m = manager(&server);
    let local = multiproc::Manager::start().unwrap();
    let list = local.list::<u32>().unwrap();
    list.push(5).unwrap();
    let d = m.dict::<String, ListProxy<u32>>("holders").unwrap();
    let refused = d.insert("l".into(), list.clone());
    assert!(
        matches!(refused, Err(Error::InvalidArgument(_))),
        "{refused:?}"
    );
    assert_eq!(d.len().unwrap(), 0);
    let l = m.list::<ListProxy<u32>>("holders-list").unwrap();
    assert!(matches!(
        l.push(list.clone()),
        Err(Error::InvalidArgument(_))
    ));
    let q = m.queue::<ListProxy<u32>>("carrier").unwrap();
    q.put(list).unwrap();
    assert_eq!(q.get_timeout(PROMPTLY).unwrap().to_vec().unwrap(), [5]);
    m.clear().unwrap();
    local.shutdown().unwrap();
}

#[test]
fn a_list_is_a_redis_list_with_python_methods() {
    let server = RedisServer::start();
    let m = manager(&server);
    let l: ListProxy<i32> = m.list("l").unwrap();
    l.extend([3, 1, 2]).unwrap();
    l.push(5).unwrap();
    assert_eq!(l.len().unwrap(), 4);
    assert_eq!(l.get(1).unwrap(), 1);
    assert_eq!(l.get_signed(-1).unwrap(), 5);
    assert!(matches!(
        l.get(7),
        Err(Error::IndexOutOfRange { index: 7, len: 4 })
    ));
    l.set(0, 4).unwrap();
    l.insert(1, 9).unwrap();
    assert_eq!(l.to_vec().unwrap(), vec![4, 9, 1, 2, 5]);
    assert_eq!(l.pop_at(1).unwrap(), 9);
    assert_eq!(l.pop().unwrap(), Some(5));
    assert_eq!(l.pop_signed(0).unwrap(), 4);
    assert!(l.remove(&2).unwrap());
    assert!(!l.remove(&2).unwrap());
    l.extend([7, 7, 3]).unwrap();
    assert_eq!(l.count(&7).unwrap(), 2);
    assert_eq!(l.index(&3).unwrap(), Some(3));
    l.sort().unwrap();
    assert_eq!(l.to_vec().unwrap(), vec![1, 3, 7, 7]);
    l.reverse().unwrap();
    assert_eq!(l.get_range(1..3).unwrap(), vec![7, 3]);
    l.set_range(1..3, [0]).unwrap();
    assert_eq!(l.to_vec().unwrap(), vec![7, 0, 1]);
    assert!(matches!(
        l.get_range(2..7),
        Err(Error::IndexOutOfRange { index: 7, len: 3 })
    ));
    l.clear().unwrap();
    assert!(l.is_empty().unwrap());
    m.clear().unwrap();
}

#[test]
fn a_namespace_keeps_each_attributes_type() {
    let server = RedisServer::start();
    let m = manager(&server);
    let ns = m.namespace("ns").unwrap();
    ns.set("answer", 42u32).unwrap();
    ns.set("name", "x".to_string()).unwrap();
    assert_eq!(ns.get::<u32>("answer").unwrap(), 42);
    assert!(matches!(
        ns.get::<String>("answer"),
        Err(Error::TypeMismatch { .. })
    ));
    assert!(matches!(ns.get::<u32>("nope"), Err(Error::KeyNotFound(_))));
    assert!(ns.contains("name").unwrap());
    let mut names = ns.names().unwrap();
    names.sort();
    assert_eq!(names, vec!["answer", "name"]);
    assert_eq!(ns.attributes().unwrap()[0].1, "u32");
    ns.delete("name").unwrap();
    assert!(matches!(ns.delete("name"), Err(Error::KeyNotFound(_))));
    assert!(format!("{ns:?}").contains("answer"));
    m.clear().unwrap();
}

#[test]
fn deleting_objects_leaves_nothing_in_redis() {
    let server = RedisServer::start();
    let m = manager(&server);
    let other = manager(&server).prefix("other").unwrap();
    let d = m.dict::<u8, u8>("a").unwrap();
    d.insert(1, 1).unwrap();
    let q = m.joinable_queue::<u8>("a").unwrap();
    q.put(1).unwrap();
    assert_eq!(q.get().unwrap(), 1);
    let lock = m.lock("a").unwrap();
    assert_eq!(lock.acquire().unwrap(), Acquired::Clean);
    lock.release().unwrap();
    let ev = m.event("a").unwrap();
    ev.set().unwrap();
    m.barrier("a", 2).unwrap();
    m.semaphore("a", 2).unwrap();
    let ns = m.namespace("a").unwrap();
    ns.set("x", 1u8).unwrap();
    m.list::<u8>("a").unwrap().push(1).unwrap();
    other.dict::<u8, u8>("kept").unwrap().insert(1, 1).unwrap();
    assert!(m.delete("a").unwrap() > 0);
    assert_eq!(m.delete("a").unwrap(), 0);
    // Only the other prefix's dict and its type record are left.
    assert_eq!(server.dbsize(), 2);
    assert_eq!(other.clear().unwrap(), 2);
    assert_eq!(server.dbsize(), 0);
}

#[test]
fn rlocks_and_conditions_leave_nothing_after_delete() {
    let server = RedisServer::start();
    let m = manager(&server);
    let rlock = m.rlock("a").unwrap();
    assert_eq!(rlock.acquire().unwrap(), Acquired::Clean);
    assert_eq!(rlock.acquire().unwrap(), Acquired::Clean);
    rlock.release().unwrap();
    rlock.release().unwrap();
    let lock = m.lock("a").unwrap();
    let over = m.condition_with("b", lock).unwrap();
    {
        let _g = over.lock().unwrap();
        assert!(over.wait_timeout(Duration::ZERO).unwrap().timed_out());
    }
    let cond = m.condition("a").unwrap();
    for method in METHODS {
        // A waiter killed while it waits leaves its ticket; a notify may
        // grant it before its lease ends.
        let waiting = RawValue::new(0u32).unwrap();
        let mut p = start(method, wait_once, (cond.clone(), waiting.clone()));
        assert!(util::eventually(PROMPTLY, || waiting.load() == 1));
        p.kill().unwrap();
        assert!(p.join_timeout(PROMPTLY).is_err());
        let _g = cond.lock_timeout(PROMPTLY).unwrap();
        if method == StartMethod::Fork {
            cond.notify(1).unwrap();
        }
    }
    {
        let _g = cond.lock().unwrap();
        assert!(
            cond.wait_timeout(Duration::from_millis(10))
                .unwrap()
                .timed_out()
        );
    }
    assert!(m.delete("a").unwrap() > 0);
    assert!(m.delete("b").unwrap() > 0);
    assert_eq!(server.dbsize(), 0);
}

/// Takes the condition's lock, says so, and waits (letting go of it).
fn wait_on_condition(
    cond: Condition,
    locked: &std::sync::atomic::AtomicBool,
) -> multiproc::Result<bool> {
    let _g = cond.lock()?;
    locked.store(true, std::sync::atomic::Ordering::SeqCst);
    cond.wait().map(|_| true)
}

#[test]
fn a_condition_wait_on_a_killed_server_is_backend_unavailable_promptly() {
    let mut server = RedisServer::start();
    let m = manager(&server);
    let cond = m.condition("c").unwrap();
    let locked = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let waiting = {
        let (cond, locked) = (cond.clone(), locked.clone());
        std::thread::spawn(move || wait_on_condition(cond, &locked))
    };
    // The waiter took the lock, and lets go of it only by waiting.
    assert!(util::eventually(PROMPTLY, || locked
        .load(std::sync::atomic::Ordering::SeqCst)));
    drop(cond.lock_timeout(PROMPTLY).unwrap());
    server.kill();
    unavailable(within(PROMPTLY, move || waiting.join().unwrap()).expect("wait hung"));
    unavailable(within(PROMPTLY, move || cond.notify(1)).expect("notify hung"));
}

#[test]
fn a_server_killed_mid_call_is_backend_unavailable_promptly() {
    let mut server = RedisServer::start();
    let m = manager(&server);
    let q = m.queue::<u32>("q").unwrap();
    let lock = m.lock("l").unwrap();
    let blocked = {
        let q = q.clone();
        std::thread::spawn(move || q.get())
    };
    let ev = m.event("e").unwrap();
    let waiting = {
        let ev = ev.clone();
        std::thread::spawn(move || ev.wait())
    };
    // Both block in Redis now (or are about to); killing the server ends
    // their connections.
    assert!(util::eventually(PROMPTLY, || {
        m.lock("probe").and_then(|l| l.is_locked()).is_ok()
    }));
    server.kill();
    unavailable(within(PROMPTLY, move || blocked.join().unwrap()).expect("get hung"));
    unavailable(within(PROMPTLY, move || waiting.join().unwrap()).expect("wait hung"));
    unavailable(within(PROMPTLY, move || lock.acquire_timeout(PROMPTLY)).expect("acquire hung"));
    unavailable(within(PROMPTLY, move || q.put(1)).expect("put hung"));
}

/// A lock (or rlock) key that another program wrote, with no lease: no
/// holder will ever renew or release it. The next acquirer gives it a
/// lease, and takes the lock once that ends, instead of waiting for ever.
#[test]
fn a_lock_key_written_without_a_lease_ends_like_an_abandoned_one() {
    let server = RedisServer::start();
    let m = manager(&server);
    server.set("test:lock:lk", "garbage-holder");
    server.set("test:rlock:rl", "garbage-holder");
    let lock = m.lock("lk").unwrap();
    let rlock = m.rlock("rl").unwrap();
    assert!(lock.acquire_timeout(PROMPTLY).is_ok());
    assert!(rlock.acquire_timeout(PROMPTLY).is_ok());
    lock.release().unwrap();
    rlock.release().unwrap();
    m.clear().unwrap();
}

/// Sends SIGCONT to a stopped server when dropped, whatever the test did.
struct Resume(i32);

impl Drop for Resume {
    fn drop(&mut self) {
        // SAFETY: kill on the pid of a server this test started.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

/// A server that accepts connections and never answers (stopped): each
/// call is `BackendUnavailable` after at most the 10 s I/O deadline, the
/// `try_` call that makes a new connection included (it took 20 s: 10 to
/// connect, 10 more for its command), and calls work once it goes on.
#[test]
fn a_stopped_server_costs_a_call_at_most_its_io_deadline() {
    let server = RedisServer::start();
    let m = manager(&server);
    let lock = m.lock("l").unwrap();
    assert!(!lock.is_locked().unwrap());
    // SAFETY: kill on the pid of the server this test started.
    assert_eq!(unsafe { libc::kill(server.pid(), libc::SIGSTOP) }, 0);
    let resume = Resume(server.pid());
    // The deadline, and slack for a loaded machine: the old cost was 20 s.
    let limit = Duration::from_secs(16);
    for what in ["on the pooled connection", "on a new connection", "timed"] {
        let started = std::time::Instant::now();
        if what == "timed" {
            unavailable(lock.acquire_timeout(Duration::from_millis(300)));
        } else {
            unavailable(lock.try_acquire());
        }
        let took = started.elapsed();
        assert!(took < limit, "a call {what} took {took:?}");
    }
    drop(resume);
    assert!(util::eventually(PROMPTLY, || lock.try_acquire().is_ok()));
    lock.release().unwrap();
    m.clear().unwrap();
}

#[test]
fn calls_work_again_once_a_restarted_server_is_back() {
    let mut server = RedisServer::start();
    let m = manager(&server);
    let d = m.dict::<String, u32>("d").unwrap();
    let q = m.queue::<u32>("q").unwrap();
    d.insert("a".into(), 1).unwrap();
    q.put(1).unwrap();
    server.kill();
    unavailable(d.get(&"a".into()));
    unavailable(q.try_get());
    server.restart();
    // A restarted server without persistence is empty; the handles work
    // on it again, without being made anew.
    assert_eq!(d.get(&"a".into()).unwrap(), None);
    d.insert("a".into(), 2).unwrap();
    assert_eq!(d.get(&"a".into()).unwrap(), Some(2));
    q.put(3).unwrap();
    assert_eq!(q.get_timeout(PROMPTLY).unwrap(), 3);
    m.clear().unwrap();
}

/// A queue whose key another program overwrote with a value of another
/// type: a put (one transaction, sent while the last get's acknowledgement
/// is still unanswered) fails with the server's error, and the connection
/// stays in step: the calls after it get their own replies.
#[test]
fn a_queue_key_of_another_type_fails_the_put_and_the_connection_stays_in_step() {
    let server = RedisServer::start();
    let m = manager(&server);
    let q = m.queue::<u32>("clobbered").unwrap();
    let d = m.dict::<String, u32>("d").unwrap();
    q.put(1).unwrap();
    assert_eq!(q.get().unwrap(), 1);
    let set = std::process::Command::new("redis-cli")
        .args([
            "-p",
            &server.port().to_string(),
            "SET",
            "test:queue:clobbered",
            "x",
        ])
        .output()
        .expect("run redis-cli");
    assert!(set.status.success(), "{set:?}");
    match q.put(2) {
        Err(Error::Remote(msg)) => assert!(msg.contains("WRONGTYPE"), "{msg}"),
        other => panic!("expected the server's WRONGTYPE, got {other:?}"),
    }
    d.insert("a".into(), 7).unwrap();
    assert_eq!(d.get(&"a".into()).unwrap(), Some(7));
    assert_eq!(d.len().unwrap(), 1);
    m.clear().unwrap();
}

/// A handle that read "no bound" takes items without the script that wakes
/// a bounded queue's producers, and puts them without the script that
/// checks the bound. If the queue is deleted and made anew with a bound
/// meanwhile, a producer waiting for room still gets it (by its own next
/// look, within a second), and the bound holds for both handles' puts.
#[test]
fn a_queue_made_anew_with_a_bound_still_lets_its_waiting_producer_in() {
    let server = RedisServer::start();
    let m = manager(&server);
    let old = m.queue::<u32>("remade").unwrap();
    old.put(0).unwrap();
    assert_eq!(old.get().unwrap(), 0);
    assert!(m.delete("remade").unwrap() > 0);
    let new = m.queue_with_maxsize::<u32>("remade", 1).unwrap();
    new.put(1).unwrap();
    assert!(matches!(new.try_put(2), Err(Error::Full)));
    // The old handle's put finds the bound and takes its item back.
    assert!(matches!(old.try_put(9), Err(Error::Full)));
    assert!(matches!(
        old.put_timeout(9, Duration::from_millis(300)),
        Err(Error::Full)
    ));
    assert_eq!(new.qsize().unwrap(), 1);
    let producer = {
        let new = new.clone();
        std::thread::spawn(move || new.put_timeout(2, PROMPTLY))
    };
    assert_eq!(old.get_timeout(PROMPTLY).unwrap(), 1);
    producer.join().unwrap().unwrap();
    assert!(matches!(new.try_put(3), Err(Error::Full)));
    assert_eq!(old.get_timeout(PROMPTLY).unwrap(), 2);
    assert!(new.empty().unwrap());
    m.clear().unwrap();
}

fn take_then_finish_when_told(
    (q, took, go): (JoinableQueue<u32>, multiproc::Event, multiproc::Event),
) -> String {
    assert_eq!(q.get().unwrap(), 42);
    took.set().unwrap();
    assert!(go.wait_timeout(PROMPTLY * 3).unwrap());
    format!("{:?}", q.task_done())
}

/// A consumer stopped (SIGSTOP) past its lease loses its item to another
/// consumer, which finishes it; when the first resumes, its `task_done` is
/// refused instead of counting the item twice (which let `join` return
/// while another item was still unfinished). Found by an attack battery.
#[test]
fn a_consumer_that_lost_its_item_to_another_does_not_count_it_again() {
    let server = RedisServer::start();
    let m = manager(&server);
    for method in METHODS {
        let q = m
            .joinable_queue::<u32>(&format!("stopped-{method:?}"))
            .unwrap();
        // Local events: the child's wait is not what is tested here.
        let took = multiproc::Event::new().unwrap();
        let go = multiproc::Event::new().unwrap();
        q.put(42).unwrap();
        let mut p = start(
            method,
            take_then_finish_when_told,
            (q.clone(), took.clone(), go.clone()),
        );
        assert!(took.wait_timeout(PROMPTLY).unwrap(), "{method:?}");
        let pid = p.pid().unwrap();
        // SAFETY: kill(2) on a child this test started and has not reaped.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
        // Once its lease ends, the item comes back to this consumer.
        assert_eq!(q.get_timeout(PROMPTLY).unwrap(), 42, "{method:?}");
        q.task_done().unwrap();
        q.put(43).unwrap();
        // SAFETY: as above.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
        go.set().unwrap();
        let said = p.join_timeout(PROMPTLY).unwrap();
        assert!(said.contains("another consumer"), "{method:?}: {said}");
        assert_eq!(
            q.unfinished_tasks().unwrap(),
            1,
            "{method:?}: 43 is not done"
        );
        assert_eq!(q.get_timeout(PROMPTLY).unwrap(), 43);
        q.task_done().unwrap();
        q.join_timeout(PROMPTLY).unwrap();
    }
    m.clear().unwrap();
}

fn get_one(q: Queue<u64>) -> String {
    format!("{:?}", q.get_timeout(PROMPTLY))
}

/// A consumer blocked in Redis that is stopped and continued goes on
/// waiting: its interrupted read is read again, for what is left of its
/// deadline. Before, Linux ended the read (a socket read with a deadline is
/// never restarted after a signal), the get failed with
/// `BackendUnavailable`, and the item Redis had moved for it was lost.
/// Found by an attack battery.
#[test]
fn a_consumer_stopped_and_continued_in_a_blocked_get_still_gets_its_item() {
    let server = RedisServer::start();
    let m = manager(&server);
    for method in METHODS {
        let q = m.queue::<u64>(&format!("stopped-get-{method:?}")).unwrap();
        let mut p = start(method, get_one, q.clone());
        assert!(
            util::eventually(PROMPTLY, || server.blocked_clients() >= 1),
            "{method:?}: the child never waited in Redis"
        );
        let pid = p.pid().unwrap();
        // SAFETY: kill(2) on a child this test started and has not reaped.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
        q.put(42).unwrap();
        // SAFETY: as above.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
        assert_eq!(p.join_timeout(PROMPTLY).unwrap(), "Ok(42)", "{method:?}");
        assert_eq!(q.qsize().unwrap(), 0);
    }
    m.clear().unwrap();
}
