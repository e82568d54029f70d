//! Value and Array shared across processes, with and without their locks.

mod util;

use multiproc::{Array, DataLock, Error, Lock, Process, RawValue, StartMethod, Value};
use util::PROMPTLY;

multiproc::init_before_main!();

const METHODS: [StartMethod; 2] = [StartMethod::Spawn, StartMethod::Fork];

fn add_locked(counter: Value<u64>) {
    for _ in 0..10_000 {
        *counter.lock().unwrap() += 1;
    }
}

fn add_atomic(counter: RawValue<u64>) {
    for _ in 0..10_000 {
        counter.fetch_add(1);
    }
}

fn negate(a: Array<f64>) {
    for x in a.lock().unwrap().iter_mut() {
        *x = -*x;
    }
}

fn run_all<A: multiproc::Shareable + Clone>(method: StartMethod, f: fn(A), arg: &A, n: usize) {
    let mut ps: Vec<_> = (0..n)
        .map(|_| Process::new(f, arg.clone()).start_method(method))
        .collect();
    for p in &mut ps {
        p.start().unwrap();
    }
    for p in &mut ps {
        p.join_timeout(PROMPTLY * 3).unwrap();
    }
}

#[test]
fn four_processes_count_exactly_under_the_lock() {
    for m in METHODS {
        let counter = Value::new(0u64).unwrap();
        run_all(m, add_locked, &counter, 4);
        assert_eq!(counter.get(), 40_000, "{m:?}");
    }
}

#[test]
fn four_processes_count_exactly_with_fetch_add() {
    for m in METHODS {
        let counter = RawValue::new(0u64).unwrap();
        run_all(m, add_atomic, &counter, 4);
        assert_eq!(counter.load(), 40_000, "{m:?}");
    }
}

#[test]
fn a_child_negates_an_array() {
    for m in METHODS {
        let values: Vec<f64> = (0..10).map(f64::from).collect();
        let a = Array::new(&values).unwrap();
        run_all(m, negate, &a, 1);
        let expected: Vec<f64> = values.iter().map(|x| -x).collect();
        assert_eq!(a.to_vec(), expected, "{m:?}");
    }
}

fn hold_lock_and_report(lock: Lock) -> i32 {
    let guard = lock.lock().unwrap();
    std::mem::forget(guard);
    multiproc::current_process().pid
}

fn die_holding(lock: Lock) {
    std::mem::forget(lock.lock().unwrap());
    // SAFETY: kill(2) on our own pid; the process ends here.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
}

#[test]
fn a_lock_whose_holder_died_is_handed_over() {
    for m in METHODS {
        let lock = Lock::new().unwrap();
        // The holder exits normally but never releases.
        let mut p = Process::new(hold_lock_and_report, lock.clone()).start_method(m);
        p.start().unwrap();
        let holder = p.join_timeout(PROMPTLY).unwrap();
        let guard = lock.lock_timeout(PROMPTLY).unwrap();
        assert_eq!(guard.owner_died(), Some(holder), "{m:?}");
        drop(guard);
        // The holder is SIGKILLed while holding it.
        let mut p = Process::new(die_holding, lock.clone()).start_method(m);
        p.start().unwrap();
        assert!(matches!(
            p.join_timeout(PROMPTLY),
            Err(Error::ChildFailed {
                signal: Some(9),
                ..
            })
        ));
        let acquired = lock.acquire_timeout(PROMPTLY).unwrap();
        assert_eq!(
            acquired,
            multiproc::Acquired::OwnerDied {
                pid: p.pid().unwrap()
            }
        );
        lock.release().unwrap();
        assert!(util::shm_leaks().is_empty());
    }
}

fn set_then_die_holding(v: Value<u64>) {
    let mut g = v.lock().unwrap();
    *g = 7;
    std::mem::forget(g);
    // SAFETY: kill(2) on our own pid; the process ends here.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
}

/// `get`/`set` have no `Result` to tell of a holder that died: they take
/// the lock over (with a warning in the log) and go on; `lock` tells.
#[test]
fn get_and_set_go_on_past_a_holder_that_died() {
    for m in METHODS {
        let v = Value::new(0u64).unwrap();
        // A child sets 7 and dies holding the lock: its pid.
        let dies_holding = || {
            let mut p = Process::new(set_then_die_holding, v.clone()).start_method(m);
            p.start().unwrap();
            assert!(p.join_timeout(PROMPTLY).is_err());
            p.pid().unwrap()
        };
        dies_holding();
        assert_eq!(v.get(), 7, "{m:?}: the value as the holder left it");
        v.set(8);
        let g = v.lock_timeout(PROMPTLY).unwrap();
        assert_eq!((*g, g.owner_died()), (8, None), "{m:?}: taken over once");
        drop(g);
        let pid = dies_holding();
        let g = v.lock_timeout(PROMPTLY).unwrap();
        assert_eq!(g.owner_died(), Some(pid), "{m:?}");
    }
}

#[test]
fn value_lock_is_the_get_lock_handle() {
    let v = Value::new(1i32).unwrap();
    let l = v.get_lock();
    let g = l.lock().unwrap();
    assert!(matches!(v.try_lock(), Err(Error::WouldBlock)));
    drop(g);
    assert_eq!(v.get(), 1);
}

/// Takes and releases (by dropping its guard) a value's lock.
fn lock_in_child(lock: DataLock) -> bool {
    lock.try_lock().is_ok()
}

#[test]
fn a_value_lock_can_be_passed_to_a_child() {
    for m in METHODS {
        let v = Value::new(1u64).unwrap();
        let mut p = Process::new(lock_in_child, v.get_lock()).start_method(m);
        p.start().unwrap();
        assert!(p.join_timeout(PROMPTLY).unwrap(), "{m:?}");
        // It is the value's own lock: while we hold it, the child cannot take it.
        let held = v.lock().unwrap();
        let mut p = Process::new(lock_in_child, v.get_lock()).start_method(m);
        p.start().unwrap();
        assert!(!p.join_timeout(PROMPTLY).unwrap());
        drop(held);
    }
}

/// A user type carrying handles: it derives rkyv's traits, nothing more
/// (implementing the hidden `ShareHandle` is not needed to send handles).
#[derive(multiproc::rkyv::Archive, multiproc::rkyv::Serialize, multiproc::rkyv::Deserialize)]
#[rkyv(crate = multiproc::rkyv)]
struct Job {
    counter: Value<u64>,
    log: Array<u32>,
    times: u32,
}

fn run_job(job: Job) {
    for _ in 0..job.times {
        *job.counter.lock().unwrap() += 1;
    }
    job.log.set(0, job.times).unwrap();
}

#[test]
fn a_user_struct_with_handle_fields_travels_to_a_child() {
    for m in METHODS {
        let job = Job {
            counter: Value::new(0u64).unwrap(),
            log: Array::new(&[0u32]).unwrap(),
            times: 5,
        };
        let (counter, log) = (job.counter.clone(), job.log.clone());
        let mut p = Process::new(run_job, job).start_method(m);
        p.start().unwrap();
        p.join_timeout(PROMPTLY).unwrap();
        assert_eq!(counter.get(), 5, "{m:?}");
        assert_eq!(log.get(0).unwrap(), 5, "{m:?}");
    }
}

// ----- char arrays (CPython's test_sharedctypes: `string.value *= 2`) -----

fn double_string((locked, raw): (Array<u8>, multiproc::RawArray<u8>)) {
    let v = locked.value();
    locked.set_value([v.clone(), v].concat()).unwrap();
    let r = raw.value();
    raw.set_value([r.clone(), r].concat()).unwrap();
}

#[test]
fn test_sharedctypes_char_arrays_as_strings() {
    for m in METHODS {
        let string = Array::from_elem(0u8, 20).unwrap();
        let raw = multiproc::RawArray::from_elem(0u8, 20).unwrap();
        string.set_value("hello").unwrap();
        raw.set_value(b"hello").unwrap();
        let mut p = Process::new(double_string, (string.clone(), raw.clone())).start_method(m);
        p.start().unwrap();
        p.join_timeout(PROMPTLY).unwrap();
        assert_eq!(string.value(), b"hellohello", "{m:?}");
        assert_eq!(string.value_str().unwrap(), "hellohello");
        assert_eq!(raw.value(), b"hellohello", "{m:?}");
    }
}

#[test]
fn char_arrays_raw_and_value_follow_ctypes() {
    let s = Array::new(b"abcdef").unwrap();
    assert_eq!(s.value(), b"abcdef", "no NUL: the whole array");
    s.set_value("xy").unwrap();
    assert_eq!(s.raw(), b"xy\0def");
    assert_eq!(s.value(), b"xy");
    s.set_raw(b"12").unwrap();
    assert_eq!(s.raw(), b"12\0def", "raw leaves the rest");
    s.set_value(b"123456").unwrap();
    assert_eq!(s.value(), b"123456", "exactly full: no room for the NUL");
    assert!(matches!(
        s.set_value("1234567"),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        s.set_raw("1234567"),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(s.raw(), b"123456", "a refused write changes nothing");
    s.set_raw([0xff, 0xfe, 0]).unwrap();
    assert!(matches!(s.value_str(), Err(Error::Codec(_))));
    let r = multiproc::RawArray::from_elem(b'z', 3).unwrap();
    assert_eq!(r.value(), b"zzz");
    r.set_raw(b"a").unwrap();
    assert_eq!(r.raw(), b"azz");
    r.set_value(b"").unwrap();
    assert_eq!(r.value(), b"");
    assert_eq!(r.raw(), b"\0zz");
}

/// CPython's `test_getobj_getlock`: a value built with a caller's lock
/// hands back that lock and its raw value; `lock=False` is a raw value.
#[test]
fn test_getobj_getlock() {
    let lock = Lock::new().unwrap();
    let v = Value::with_lock(5i32, lock.clone()).unwrap();
    assert_eq!(v.get().unwrap(), 5);
    assert_eq!(v.get_obj().get(), 5);
    {
        let _held = lock.lock().unwrap();
        assert!(
            v.get_lock().is_locked().unwrap(),
            "get_lock is the caller's lock"
        );
        assert!(matches!(v.try_get(), Err(Error::WouldBlock)));
        assert!(matches!(
            v.get_timeout(std::time::Duration::from_millis(20)),
            Err(Error::Timeout(_))
        ));
        assert!(matches!(v.try_set(1), Err(Error::WouldBlock)));
        // The raw value needs no lock.
        v.get_obj().set(6);
    }
    assert_eq!(v.get().unwrap(), 6);
    let rlock = multiproc::RLock::new().unwrap();
    let r = Value::with_lock(1u8, rlock.clone()).unwrap();
    assert_eq!(r.update(|x| x + 1).unwrap(), 2);
    let raw: RawValue<i32> = Value::without_lock(5).unwrap();
    assert_eq!(raw.get(), 5);
}

/// CPython's `test_getobj_getlock_obj`, for arrays.
#[test]
fn test_getobj_getlock_obj() {
    let lock = multiproc::RLock::new().unwrap();
    let a = Array::with_lock(&(0..10).collect::<Vec<i32>>(), lock.clone()).unwrap();
    assert_eq!(a.len(), 10);
    assert_eq!(a.to_vec().unwrap(), (0..10).collect::<Vec<_>>());
    a.set(3, 30).unwrap();
    assert_eq!(a.get(3).unwrap(), 30);
    assert_eq!(a.get_obj().get(3).unwrap(), 30);
    assert!(matches!(
        a.get(10),
        Err(Error::IndexOutOfRange { index: 10, len: 10 })
    ));
    a.update(|xs| xs.reverse()).unwrap();
    assert_eq!(a.get(0).unwrap(), 9);
    assert!(!a.get_lock().is_locked().unwrap());
    let raw = Array::without_lock(&[1u8, 2]).unwrap();
    assert_eq!(raw.to_vec(), vec![1, 2]);
}

/// An RLock may be taken again inside `update`'s closure: the closure gets
/// a copy, never a reference into the segment, so re-entry is sound.
#[test]
fn an_rlock_value_may_be_read_inside_its_own_update() {
    let v = Value::with_lock(1u64, multiproc::RLock::new().unwrap()).unwrap();
    let new = v
        .update(|x| {
            let again = v.get().unwrap();
            v.set(100).unwrap();
            x + again
        })
        .unwrap();
    assert_eq!(new, 2, "the update's result is written last");
    assert_eq!(v.get().unwrap(), 2);
    assert!(!v.get_lock().is_locked().unwrap());
}

/// A panic in `update` releases the lock and leaves the value as it was.
#[test]
fn a_panicking_update_releases_the_lock() {
    let v = Value::with_lock(7i32, Lock::new().unwrap()).unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        v.update(|_| panic!("user code")).unwrap()
    }));
    assert!(r.is_err());
    assert!(!v.get_lock().is_locked().unwrap());
    assert_eq!(v.try_get().unwrap(), 7);
    let a = Array::with_lock(&[1u8, 2], Lock::new().unwrap()).unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        a.update(|xs| {
            xs[0] = 9;
            panic!("user code")
        })
        .unwrap()
    }));
    assert!(r.is_err());
    assert_eq!(a.try_get(0).unwrap(), 1, "nothing written");
}

type Pair = (
    multiproc::Synchronized<u64, Lock>,
    multiproc::Synchronized<u64, Lock>,
    multiproc::SynchronizedArray<u64, Lock>,
);

/// Both values and the array change together under their one lock.
fn add_to_both(pair: Pair) {
    let (hits, misses, totals) = pair;
    for _ in 0..500 {
        hits.update(|n| n + 1).unwrap();
        let _held = hits.get_lock().lock().unwrap();
        let h = hits.get_obj().get();
        misses.get_obj().set(misses.get_obj().get() + 1);
        totals.get_obj().set(0, h).unwrap();
    }
}

/// Python's `Value('i', 0, lock=shared)` shared by children: counts are
/// exact and the values guarded together stay consistent.
#[test]
fn values_sharing_a_callers_lock_count_exactly_in_children() {
    for m in [
        StartMethod::Spawn,
        StartMethod::Fork,
        StartMethod::Forkserver,
    ] {
        let lock = Lock::new().unwrap();
        let hits = Value::with_lock(0u64, lock.clone()).unwrap();
        let misses = Value::with_lock(0u64, lock.clone()).unwrap();
        let totals = Array::with_lock(&[0u64], lock.clone()).unwrap();
        util::run_each(
            m,
            add_to_both,
            (0..3).map(|_| (hits.clone(), misses.clone(), totals.clone())),
        );
        assert_eq!(hits.get().unwrap(), 1500, "{m:?}");
        assert_eq!(misses.get().unwrap(), 1500, "{m:?}");
        assert!(totals.get(0).unwrap() <= 1500, "{m:?}");
        assert!(!lock.is_locked().unwrap());
    }
    assert!(util::shm_leaks().is_empty());
}

/// Python's idiom, ported line for line: `with v.get_lock(): v.value += 1`.
fn add_under_get_lock((v, a, n): (Value<u64>, Array<u64>, u64)) {
    for _ in 0..n {
        let lock = v.get_lock();
        let _held = lock.lock().unwrap();
        v.set(v.get() + 1);
        v.fetch_add(1);
        let array_lock = a.get_lock();
        let _also = array_lock.lock().unwrap();
        a.set(0, a.get(0).unwrap() + 1).unwrap();
    }
}

/// Under its own thread's `get_lock()` guard, `get`, `set` and the atomic
/// methods of a `Value` (and an `Array`) use the data the thread holds, as
/// Python's `RLock` lets `.value` do: they waited for the thread itself,
/// for ever. Another guard of the same lock in that thread is an error, not
/// a wait; other threads and processes still wait. From a newcomer's port.
#[test]
fn gets_and_sets_under_the_threads_own_get_lock_guard() {
    let v = Value::new(0u64).unwrap();
    let a = Array::from_elem(0u64, 2).unwrap();
    let mut children: Vec<_> = METHODS
        .iter()
        .map(|&m| {
            let mut p =
                Process::new(add_under_get_lock, (v.clone(), a.clone(), 200)).start_method(m);
            p.start().unwrap();
            p
        })
        .collect();
    add_under_get_lock((v.clone(), a.clone(), 200));
    for p in &mut children {
        p.join_timeout(PROMPTLY).unwrap();
    }
    assert_eq!(v.get(), 3 * 400);
    assert_eq!(a.get(0).unwrap(), 3 * 200);

    let lock = v.get_lock();
    let held = lock.lock().unwrap();
    assert!(matches!(v.lock(), Err(Error::InvalidState(_))));
    assert!(matches!(v.try_lock(), Err(Error::WouldBlock)));
    assert!(matches!(lock.lock(), Err(Error::InvalidState(_))));
    // Another thread is held off.
    let other = v.clone();
    let blocked = std::thread::spawn(move || matches!(other.try_lock(), Err(Error::WouldBlock)));
    assert!(blocked.join().unwrap());
    drop(held);
    {
        let _guard = v.lock().unwrap();
        assert!(matches!(v.get_lock().lock(), Err(Error::InvalidState(_))));
        assert!(matches!(
            v.lock_timeout(PROMPTLY),
            Err(Error::InvalidState(_))
        ));
    }
    let _guard = a.lock().unwrap();
    assert!(matches!(a.lock(), Err(Error::InvalidState(_))));
    assert!(matches!(a.get_lock().lock(), Err(Error::InvalidState(_))));
}

/// A ctypes `Structure` ported with `#[derive(ShmSafe)]`: checked at compile
/// time (repr(C), fields ShmSafe, no padding; `tests/compile_fail` shows the
/// refusals), and shared with children in a `Value` and an `Array`.
#[derive(Clone, Copy, Debug, PartialEq, multiproc::ShmSafe)]
#[repr(C)]
struct Particle {
    position: [f64; 3],
    id: u32,
    flags: u16,
    _pad: [u8; 2],
}

fn move_particles((one, many): (Value<Particle>, Array<Particle>)) -> u32 {
    one.lock().unwrap().position[0] += 1.0;
    let mut all = many.lock().unwrap();
    for p in all.iter_mut() {
        p.flags += 1;
    }
    all.iter().map(|p| p.id).sum()
}

#[test]
fn a_derived_shm_safe_struct_is_shared_with_children() {
    let start = Particle {
        position: [0.5, 1.0, 2.0],
        id: 7,
        flags: 0,
        _pad: [0; 2],
    };
    for m in METHODS {
        let one = Value::new(start).unwrap();
        let many = Array::new(&[start, Particle { id: 8, ..start }]).unwrap();
        let mut p = Process::new(move_particles, (one.clone(), many.clone())).start_method(m);
        p.start().unwrap();
        assert_eq!(p.join_timeout(PROMPTLY).unwrap(), 15, "{m:?}");
        assert_eq!(one.get().position, [1.5, 1.0, 2.0], "{m:?}");
        assert!(many.lock().unwrap().iter().all(|p| p.flags == 1), "{m:?}");
    }
}
