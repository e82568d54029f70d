//! One type per primitive (#13): the same test body runs against a plain
//! local handle, one a local `Manager` hands out, one a TCP `BaseManager`
//! hands out and (feature `redis`) one a `RedisManager` hands out, under
//! spawn and fork, with the same assertions.

mod util;

use std::time::Duration;

use multiproc::{
    Acquired, Barrier, BaseManager, BoundedSemaphore, Condition, ConditionLock, Error, Event,
    JoinableQueue, Lock, Manager, Process, Queue, RLock, RawValue, RemoteManager, Semaphore,
    StartMethod,
};
use std::time::Instant;
use util::{PROMPTLY, assert_not_our_zombie, eventually};

multiproc::init_before_main!();

const METHODS: [StartMethod; 2] = [StartMethod::Spawn, StartMethod::Fork];

/// Where a primitive comes from.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// `Lock::new()`, `Event::new()`.
    Plain,
    /// A local `Manager`.
    Local,
    /// A TCP `BaseManager`.
    Tcp,
    /// A `RedisManager` (objects kept in a `redis-server` this test starts).
    #[cfg(feature = "redis")]
    Redis,
}

#[cfg(not(feature = "redis"))]
const SOURCES: &[Source] = &[Source::Plain, Source::Local, Source::Tcp];
#[cfg(feature = "redis")]
const SOURCES: &[Source] = &[Source::Plain, Source::Local, Source::Tcp, Source::Redis];

/// The managers behind a source, kept alive for the test's length.
enum Maker {
    Plain,
    Local(Manager),
    Tcp(RemoteManager),
    /// Objects by name (a fresh name each), in a server of the test's own.
    #[cfg(feature = "redis")]
    Redis(Box<RedisSource>),
}

/// A `redis-server` of the test's own, a manager on it, and a counter for
/// fresh object names (Redis objects are named).
#[cfg(feature = "redis")]
struct RedisSource {
    server: util::redis::RedisServer,
    manager: multiproc::RedisManager,
    names: std::sync::atomic::AtomicU32,
}

#[cfg(feature = "redis")]
impl RedisSource {
    /// A new object name.
    fn fresh(&self) -> String {
        let n = self
            .names
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("o{n}")
    }
}

impl Maker {
    fn start(source: Source) -> Maker {
        match source {
            Source::Plain => Maker::Plain,
            Source::Local => Maker::Local(Manager::start().unwrap()),
            Source::Tcp => Maker::Tcp(BaseManager::new().authkey(b"flavors").start().unwrap()),
            #[cfg(feature = "redis")]
            Source::Redis => {
                let server = util::redis::RedisServer::start();
                let m = multiproc::RedisManager::connect(&server.url())
                    .unwrap()
                    .lease(Duration::from_millis(500))
                    .unwrap();
                Maker::Redis(Box::new(RedisSource {
                    server,
                    manager: m,
                    names: std::sync::atomic::AtomicU32::new(0),
                }))
            }
        }
    }

    fn lock(&self) -> Lock {
        match self {
            Maker::Plain => Lock::new().unwrap(),
            Maker::Local(m) => m.lock().unwrap(),
            Maker::Tcp(m) => m.lock().unwrap(),
            #[cfg(feature = "redis")]
            Maker::Redis(r) => r.manager.lock(&r.fresh()).unwrap(),
        }
    }

    fn rlock(&self) -> RLock {
        match self {
            Maker::Plain => RLock::new().unwrap(),
            Maker::Local(m) => m.rlock().unwrap(),
            Maker::Tcp(m) => m.rlock().unwrap(),
            #[cfg(feature = "redis")]
            Maker::Redis(r) => r.manager.rlock(&r.fresh()).unwrap(),
        }
    }

    /// A condition over a recursive lock of its own.
    fn condition(&self) -> Condition {
        match self {
            Maker::Plain => Condition::new().unwrap(),
            Maker::Local(m) => m.condition().unwrap(),
            Maker::Tcp(m) => m.condition().unwrap(),
            #[cfg(feature = "redis")]
            Maker::Redis(r) => r.manager.condition(&r.fresh()).unwrap(),
        }
    }

    /// A condition over a lock this source made.
    fn condition_with(&self, lock: impl Into<ConditionLock>) -> Condition {
        match self {
            Maker::Plain => Condition::with_lock(lock).unwrap(),
            Maker::Local(m) => m.condition_with(lock).unwrap(),
            Maker::Tcp(m) => m.condition_with(lock).unwrap(),
            #[cfg(feature = "redis")]
            Maker::Redis(r) => r.manager.condition_with(&r.fresh(), lock).unwrap(),
        }
    }

    /// The TCP server's address, which a child reading a handle from a
    /// message needs (with its key) first.
    fn tcp_address(&self) -> Option<std::net::SocketAddr> {
        match self {
            Maker::Tcp(r) => Some(r.address()),
            _ => None,
        }
    }

    fn event(&self) -> Event {
        match self {
            Maker::Plain => Event::new().unwrap(),
            Maker::Local(m) => m.event().unwrap(),
            Maker::Tcp(m) => m.event().unwrap(),
            #[cfg(feature = "redis")]
            Maker::Redis(r) => r.manager.event(&r.fresh()).unwrap(),
        }
    }

    fn semaphore(&self, value: u32) -> Semaphore {
        match self {
            Maker::Plain => Semaphore::new(value).unwrap(),
            Maker::Local(m) => m.semaphore(value).unwrap(),
            Maker::Tcp(m) => m.semaphore(value).unwrap(),
            #[cfg(feature = "redis")]
            Maker::Redis(r) => r.manager.semaphore(&r.fresh(), value).unwrap(),
        }
    }

    fn bounded_semaphore(&self, value: u32) -> BoundedSemaphore {
        match self {
            Maker::Plain => BoundedSemaphore::new(value).unwrap(),
            Maker::Local(m) => m.bounded_semaphore(value).unwrap(),
            Maker::Tcp(m) => m.bounded_semaphore(value).unwrap(),
            #[cfg(feature = "redis")]
            Maker::Redis(r) => r.manager.bounded_semaphore(&r.fresh(), value).unwrap(),
        }
    }

    fn barrier(&self, parties: usize) -> Barrier {
        match self {
            Maker::Plain => Barrier::new(parties).unwrap(),
            Maker::Local(m) => m.barrier(parties).unwrap(),
            Maker::Tcp(m) => m.barrier(parties).unwrap(),
            #[cfg(feature = "redis")]
            Maker::Redis(r) => r.manager.barrier(&r.fresh(), parties).unwrap(),
        }
    }

    fn queue(&self, maxsize: usize) -> Queue<u32> {
        match self {
            Maker::Plain => Queue::with_maxsize(maxsize).unwrap(),
            Maker::Local(m) => m.queue_with_maxsize(maxsize).unwrap(),
            Maker::Tcp(m) => m.queue_with_maxsize(maxsize).unwrap(),
            #[cfg(feature = "redis")]
            Maker::Redis(r) => r.manager.queue_with_maxsize(&r.fresh(), maxsize).unwrap(),
        }
    }

    fn joinable_queue(&self) -> JoinableQueue<u32> {
        match self {
            Maker::Plain => JoinableQueue::new().unwrap(),
            Maker::Local(m) => m.joinable_queue().unwrap(),
            Maker::Tcp(m) => m.joinable_queue().unwrap(),
            #[cfg(feature = "redis")]
            Maker::Redis(r) => r.manager.joinable_queue(&r.fresh()).unwrap(),
        }
    }

    /// Whether queue items live outside this host's shared memory (a
    /// TCP server's or Redis's queue: no ring, no close, nothing to watch).
    fn keeps_items_elsewhere(&self) -> bool {
        match self {
            Maker::Plain | Maker::Local(_) => false,
            Maker::Tcp(_) => true,
            #[cfg(feature = "redis")]
            Maker::Redis(..) => true,
        }
    }

    fn shutdown(self) {
        match self {
            Maker::Plain => {}
            Maker::Local(m) => m.shutdown().unwrap(),
            Maker::Tcp(m) => m.shutdown().unwrap(),
            #[cfg(feature = "redis")]
            Maker::Redis(r) => {
                r.manager.clear().unwrap();
                assert_eq!(r.server.dbsize(), 0);
            }
        }
    }
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

// ---------------------------------------------------------------- Lock

/// The child's side: fails to take the parent's lock, then takes it once
/// the parent lets go, says so, and holds it until told to let go.
fn contend(args: (Lock, Event, Event, Event)) -> Vec<String> {
    let (lock, tried, held, release) = args;
    let mut seen = vec![format!("{:?}", lock.try_acquire())];
    tried.set().unwrap();
    let guard = lock.lock_timeout(PROMPTLY * 3).unwrap();
    seen.push(format!("{:?}", guard.owner_died()));
    held.set().unwrap();
    seen.push(format!("{:?}", release.wait_timeout(PROMPTLY * 3)));
    drop(guard);
    seen
}

#[test]
fn lock_is_one_type_for_every_source() {
    for &source in SOURCES {
        let maker = Maker::start(source);
        for m in METHODS {
            let lock = maker.lock();
            let (tried, held, release) = (maker.event(), maker.event(), maker.event());
            let guard = lock.lock().unwrap();
            assert!(lock.is_locked().unwrap(), "{source:?} {m:?}");
            let mut p = start(
                m,
                contend,
                (lock.clone(), tried.clone(), held.clone(), release.clone()),
            );
            assert!(tried.wait_timeout(PROMPTLY).unwrap(), "{source:?} {m:?}");
            drop(guard);
            assert!(held.wait_timeout(PROMPTLY).unwrap(), "{source:?} {m:?}");
            // The child holds it now.
            assert!(lock.is_locked().unwrap(), "{source:?} {m:?}");
            assert!(matches!(lock.try_acquire(), Err(Error::WouldBlock)));
            assert!(matches!(
                lock.acquire_timeout(Duration::from_millis(50)),
                Err(Error::Timeout(_))
            ));
            release.set().unwrap();
            let seen = p.join_timeout(PROMPTLY * 3).unwrap();
            assert_eq!(
                seen,
                ["Err(WouldBlock)", "None", "Ok(true)"],
                "{source:?} {m:?}"
            );
            assert_eq!(
                lock.acquire_timeout(PROMPTLY).unwrap(),
                Acquired::Clean,
                "{source:?} {m:?}"
            );
            lock.release().unwrap();
            assert!(!lock.is_locked().unwrap(), "{source:?} {m:?}");
            assert!(matches!(lock.release(), Err(Error::InvalidState(_))));
        }
        maker.shutdown();
    }
}

/// Takes the lock, says so, and waits to be killed.
fn hold_and_wait(args: (Lock, Event, Event)) {
    let (lock, held, never) = args;
    let guard = lock.lock().unwrap();
    held.set().unwrap();
    let _ = never.wait();
    drop(guard);
}

#[test]
fn a_lock_whose_holder_is_killed_goes_to_the_next_acquirer_for_every_source() {
    for &source in SOURCES {
        let maker = Maker::start(source);
        for m in METHODS {
            let lock = maker.lock();
            let (held, never) = (maker.event(), maker.event());
            let mut p = start(
                m,
                hold_and_wait,
                (lock.clone(), held.clone(), never.clone()),
            );
            assert!(held.wait_timeout(PROMPTLY).unwrap(), "{source:?} {m:?}");
            let pid = p.pid().unwrap();
            p.kill().unwrap();
            let _ = p.join_timeout(PROMPTLY);
            assert_not_our_zombie(pid);
            let got = lock.acquire_timeout(PROMPTLY * 3).unwrap();
            assert_eq!(got, Acquired::OwnerDied { pid }, "{source:?} {m:?}");
            lock.release().unwrap();
        }
        maker.shutdown();
    }
}

// ---------------------------------------------------------------- Event

/// Waits for the parent's flag, lowers it and raises its own.
fn answer(args: (Event, Event)) -> Vec<String> {
    let (ping, pong) = args;
    let mut seen = vec![format!("{:?}", ping.wait_timeout(PROMPTLY * 3))];
    seen.push(format!("{:?}", ping.is_set()));
    ping.clear().unwrap();
    seen.push(format!("{:?}", ping.try_wait()));
    pong.set().unwrap();
    seen
}

#[test]
fn event_is_one_type_for_every_source() {
    for &source in SOURCES {
        let maker = Maker::start(source);
        for m in METHODS {
            let (ping, pong) = (maker.event(), maker.event());
            assert!(!ping.is_set().unwrap());
            assert!(!ping.wait_timeout(Duration::from_millis(20)).unwrap());
            let mut p = start(m, answer, (ping.clone(), pong.clone()));
            ping.set().unwrap();
            assert!(pong.wait_timeout(PROMPTLY * 3).unwrap(), "{source:?} {m:?}");
            pong.wait().unwrap();
            let seen = p.join_timeout(PROMPTLY * 3).unwrap();
            assert_eq!(
                seen,
                ["Ok(true)", "Ok(true)", "Ok(false)"],
                "{source:?} {m:?}"
            );
            assert!(!ping.is_set().unwrap(), "{source:?} {m:?}");
        }
        maker.shutdown();
    }
}

// ------------------------------------------------------------ Semaphore

/// Takes both units of each semaphore (waiting for the second), then hands
/// one of each back.
fn take_units(args: (Semaphore, BoundedSemaphore, Event)) -> Vec<String> {
    let (sem, bounded, took) = args;
    let mut seen = vec![];
    for _ in 0..2 {
        seen.push(format!("{:?}", sem.acquire_timeout(PROMPTLY * 3)));
        seen.push(format!("{:?}", bounded.acquire_timeout(PROMPTLY * 3)));
    }
    seen.push(format!("{:?}", sem.try_acquire()));
    seen.push(format!("{:?}", bounded.try_acquire()));
    took.set().unwrap();
    sem.release().unwrap();
    bounded.release().unwrap();
    seen
}

#[test]
fn semaphores_are_one_type_for_every_source() {
    for &source in SOURCES {
        let maker = Maker::start(source);
        for m in METHODS {
            let (sem, bounded, took) = (
                maker.semaphore(1),
                maker.bounded_semaphore(2),
                maker.event(),
            );
            bounded.acquire().unwrap();
            assert_eq!(sem.get_value().unwrap(), 1, "{source:?} {m:?}");
            assert_eq!(bounded.get_value().unwrap(), 1, "{source:?} {m:?}");
            let mut p = start(m, take_units, (sem.clone(), bounded.clone(), took.clone()));
            // The child waits for the second units until these come.
            sem.release().unwrap();
            bounded.release().unwrap();
            let seen = p.join_timeout(PROMPTLY * 3).unwrap();
            assert!(took.is_set().unwrap());
            assert_eq!(
                seen,
                [
                    "Ok(())",
                    "Ok(())",
                    "Ok(())",
                    "Ok(())",
                    "Err(WouldBlock)",
                    "Err(WouldBlock)"
                ],
                "{source:?} {m:?}"
            );
            assert_eq!(sem.get_value().unwrap(), 1, "{source:?} {m:?}");
            assert_eq!(bounded.get_value().unwrap(), 1, "{source:?} {m:?}");
            sem.acquire().unwrap();
            assert!(matches!(
                sem.acquire_timeout(Duration::from_millis(50)),
                Err(Error::Timeout(_))
            ));
            bounded.release().unwrap();
            assert!(
                matches!(bounded.release(), Err(Error::InvalidState(_))),
                "{source:?} {m:?}"
            );
        }
        maker.shutdown();
    }
}

// ---------------------------------------------------------------- Queue

/// Takes three items (the third put only once there is room), then finds
/// the queue empty.
fn take_three(q: Queue<u32>) -> Vec<String> {
    let mut seen: Vec<String> = (0..3)
        .map(|_| format!("{:?}", q.get_timeout(PROMPTLY * 3)))
        .collect();
    seen.push(format!("{:?}", q.try_get()));
    seen.push(format!("{:?}", q.get_timeout(Duration::from_millis(20))));
    seen
}

#[test]
fn queue_is_one_type_for_every_source() {
    for &source in SOURCES {
        let maker = Maker::start(source);
        for m in METHODS {
            let q = maker.queue(2);
            assert_eq!(q.maxsize().unwrap(), 2, "{source:?} {m:?}");
            assert!(q.empty().unwrap() && !q.full().unwrap());
            assert!(matches!(q.try_get(), Err(Error::Empty)), "{source:?} {m:?}");
            assert!(matches!(
                q.get_timeout(Duration::from_millis(20)),
                Err(Error::Empty)
            ));
            q.put(1).unwrap();
            q.try_put(2).unwrap();
            assert_eq!(q.qsize().unwrap(), 2, "{source:?} {m:?}");
            assert!(q.full().unwrap(), "{source:?} {m:?}");
            assert!(matches!(q.try_put(3), Err(Error::Full)), "{source:?} {m:?}");
            assert!(matches!(
                q.put_timeout(3, Duration::from_millis(20)),
                Err(Error::Full)
            ));
            let mut p = start(m, take_three, q.clone());
            // Waits for the child to make room.
            q.put_timeout(3, PROMPTLY * 3).unwrap();
            let seen = p.join_timeout(PROMPTLY * 3).unwrap();
            assert_eq!(
                seen,
                ["Ok(1)", "Ok(2)", "Ok(3)", "Err(Empty)", "Err(Empty)"],
                "{source:?} {m:?}"
            );
            assert_eq!(q.qsize().unwrap(), 0, "{source:?} {m:?}");
            if maker.keeps_items_elsewhere() {
                // A server's queue has no close (as in Python): said, not ignored.
                assert!(matches!(q.close(), Err(Error::InvalidArgument(_))));
                assert!(!q.is_closed());
                assert_eq!(q.capacity_bytes(), None);
                // Nothing here can watch it: refused, never counted ready
                // (a caller looping on wait would spin).
                let waited = multiproc::wait(&[&q], Some(Duration::ZERO));
                assert!(
                    matches!(waited, Err(Error::InvalidArgument(_))),
                    "{waited:?}"
                );
            } else {
                assert!(q.capacity_bytes().is_some());
                let waited = multiproc::wait(&[&q], Some(Duration::ZERO)).unwrap();
                assert!(
                    waited.is_empty(),
                    "{source:?} {m:?}: an empty queue is not ready"
                );
            }
        }
        maker.shutdown();
    }
}

/// Takes every job, marking each done only after the parent saw it unfinished.
fn work(args: (JoinableQueue<u32>, Event)) -> u32 {
    let (jobs, go) = args;
    assert!(go.wait_timeout(PROMPTLY * 3).unwrap());
    let mut sum = 0;
    for _ in 0..3 {
        sum += jobs.get_timeout(PROMPTLY * 3).unwrap();
        jobs.task_done().unwrap();
    }
    sum
}

#[test]
fn joinable_queue_is_one_type_for_every_source() {
    for &source in SOURCES {
        let maker = Maker::start(source);
        for m in METHODS {
            let (jobs, go) = (maker.joinable_queue(), maker.event());
            jobs.try_join().unwrap();
            let mut p = start(m, work, (jobs.clone(), go.clone()));
            for job in [1, 2, 3] {
                jobs.put(job).unwrap();
            }
            assert_eq!(jobs.unfinished_tasks().unwrap(), 3, "{source:?} {m:?}");
            assert!(matches!(jobs.try_join(), Err(Error::WouldBlock)));
            assert!(matches!(
                jobs.join_timeout(Duration::from_millis(20)),
                Err(Error::Timeout(_))
            ));
            go.set().unwrap();
            jobs.join_timeout(PROMPTLY * 3).unwrap();
            assert_eq!(p.join_timeout(PROMPTLY * 3).unwrap(), 6, "{source:?} {m:?}");
            assert_eq!(jobs.unfinished_tasks().unwrap(), 0);
            assert!(
                matches!(jobs.task_done(), Err(Error::InvalidState(_))),
                "{source:?} {m:?}"
            );
        }
        maker.shutdown();
    }
}

/// Receives a joinable queue inside a message and works it.
fn queue_through_a_queue(args: (Queue<JoinableQueue<u32>>, Option<std::net::SocketAddr>)) -> u32 {
    let (q, server) = args;
    if let Some(address) = server {
        multiproc::set_manager_authkey(address, b"flavors");
    }
    let jobs = q.get_timeout(PROMPTLY * 3).unwrap();
    let job = jobs.get_timeout(PROMPTLY * 3).unwrap();
    jobs.task_done().unwrap();
    job
}

#[test]
fn queues_of_every_flavour_travel_inside_a_queue() {
    for &source in SOURCES {
        let maker = Maker::start(source);
        for m in METHODS {
            let q: Queue<JoinableQueue<u32>> = Queue::new().unwrap();
            let jobs = maker.joinable_queue();
            let server = match &maker {
                Maker::Tcp(r) => Some(r.address()),
                _ => None,
            };
            let mut p = start(m, queue_through_a_queue, (q.clone(), server));
            jobs.put(42).unwrap();
            q.put(jobs.clone()).unwrap();
            assert_eq!(
                p.join_timeout(PROMPTLY * 3).unwrap(),
                42,
                "{source:?} {m:?}"
            );
            jobs.join_timeout(PROMPTLY).unwrap();
        }
        maker.shutdown();
    }
}

// -------------------------------------------------------------- Barrier

/// Three rounds with the parent, then one wait the parent aborts.
fn rounds(b: Barrier) -> Vec<String> {
    let mut seen: Vec<String> = (0..3)
        .map(|_| format!("{:?}", b.wait_timeout(PROMPTLY * 3).map(|i| i < 2)))
        .collect();
    seen.push(format!("{:?}", b.wait_timeout(PROMPTLY * 3)));
    seen
}

#[test]
fn barrier_is_one_type_for_every_source() {
    for &source in SOURCES {
        let maker = Maker::start(source);
        for m in METHODS {
            let b = maker.barrier(2);
            assert_eq!(b.parties().unwrap(), 2, "{source:?} {m:?}");
            assert!(matches!(
                maker_barrier_zero(&maker),
                Err(Error::InvalidArgument(_))
            ));
            let mut p = start(m, rounds, b.clone());
            let mut indexes = vec![];
            for _ in 0..3 {
                indexes.push(b.wait_timeout(PROMPTLY * 3).unwrap());
            }
            assert!(indexes.iter().all(|&i| i < 2), "{source:?} {m:?}");
            // The child's fourth wait is aborted from here.
            assert!(eventually(PROMPTLY, || b.n_waiting().unwrap() == 1));
            b.abort().unwrap();
            let seen = p.join_timeout(PROMPTLY * 3).unwrap();
            assert_eq!(
                seen,
                ["Ok(true)", "Ok(true)", "Ok(true)", "Err(BrokenBarrier)"],
                "{source:?} {m:?}"
            );
            assert!(b.broken().unwrap(), "{source:?} {m:?}");
            assert!(matches!(b.try_wait(), Err(Error::BrokenBarrier)));
            b.reset().unwrap();
            assert!(!b.broken().unwrap(), "{source:?} {m:?}");
            assert_eq!(b.n_waiting().unwrap(), 0);
            // A try that would not complete the round neither arrives nor breaks.
            assert!(
                matches!(b.try_wait(), Err(Error::WouldBlock)),
                "{source:?} {m:?}"
            );
            assert_eq!(b.n_waiting().unwrap(), 0);
            assert!(!b.broken().unwrap());
            // A timed wait whose round stays short breaks the barrier.
            assert!(matches!(
                b.wait_timeout(Duration::from_millis(50)),
                Err(Error::BrokenBarrier)
            ));
            assert!(b.broken().unwrap(), "{source:?} {m:?}");
            b.reset().unwrap();
        }
        maker.shutdown();
    }
}

fn maker_barrier_zero(maker: &Maker) -> multiproc::Result<Barrier> {
    match maker {
        Maker::Plain => Barrier::new(0),
        Maker::Local(m) => m.barrier(0),
        Maker::Tcp(m) => m.barrier(0),
        #[cfg(feature = "redis")]
        Maker::Redis(r) => r.manager.barrier(&r.fresh(), 0),
    }
}

/// Waits at the barrier until killed.
fn wait_at(b: Barrier) {
    let _ = b.wait();
}

#[test]
fn a_party_killed_at_the_barrier_breaks_it_for_every_source() {
    for &source in SOURCES {
        let maker = Maker::start(source);
        for m in METHODS {
            let b = maker.barrier(3);
            let mut p = start(m, wait_at, b.clone());
            assert!(
                eventually(PROMPTLY, || b.n_waiting().unwrap() == 1),
                "{source:?} {m:?}"
            );
            let pid = p.pid().unwrap();
            p.kill().unwrap();
            let _ = p.join_timeout(PROMPTLY);
            assert_not_our_zombie(pid);
            // Broken for the death, far sooner than the timeout would.
            let start = Instant::now();
            let got = b.wait_timeout(PROMPTLY);
            assert!(
                matches!(got, Err(Error::BrokenBarrier)),
                "{source:?} {m:?}: {got:?}"
            );
            let ms = start.elapsed().as_millis();
            assert!(ms < PROMPTLY.as_millis() / 4, "{source:?} {m:?}: {ms} ms");
        }
        maker.shutdown();
    }
}

// ------------------------------------------------------ handles in messages

/// Receives a lock and an event through a queue and uses them. A remote
/// handle read from a message needs its server's key known here first
/// (the key travels only in a child's own arguments, as Python's does).
fn through_a_queue(args: (Queue<(Lock, Event)>, Option<std::net::SocketAddr>)) -> bool {
    let (q, server) = args;
    if let Some(address) = server {
        multiproc::set_manager_authkey(address, b"flavors");
    }
    let (lock, done) = q.get_timeout(PROMPTLY * 3).unwrap();
    let ok = lock.try_acquire().is_ok();
    done.set().unwrap();
    ok
}

#[test]
fn both_flavours_travel_inside_a_queue() {
    for &source in SOURCES {
        let maker = Maker::start(source);
        for m in METHODS {
            let q: Queue<(Lock, Event)> = Queue::new().unwrap();
            let (lock, done) = (maker.lock(), maker.event());
            let server = match &maker {
                Maker::Tcp(r) => Some(r.address()),
                _ => None,
            };
            let mut p = start(m, through_a_queue, (q.clone(), server));
            q.put((lock.clone(), done.clone())).unwrap();
            assert!(done.wait_timeout(PROMPTLY * 3).unwrap(), "{source:?} {m:?}");
            assert!(p.join_timeout(PROMPTLY * 3).unwrap(), "{source:?} {m:?}");
            // The child took it and left: a plain lock passes on as a dead
            // holder's, a server's lock as a departed client's.
            let got = lock.acquire_timeout(PROMPTLY).unwrap();
            assert!(
                matches!(got, Acquired::OwnerDied { .. }),
                "{source:?} {m:?}: {got:?}"
            );
        }
        maker.shutdown();
    }
}

/// A remote handle whose server is gone says `ManagerGone` for every call,
/// a non-blocking one included (never `WouldBlock`, never a hang).
#[test]
fn remote_handles_of_a_stopped_server_say_manager_gone() {
    let maker = Maker::start(Source::Tcp);
    let (lock, event, sem) = (maker.lock(), maker.event(), maker.semaphore(0));
    let barrier = maker.barrier(2);
    let (queue, jobs) = (maker.queue(0), maker.joinable_queue());
    maker.shutdown();
    let gone = |r: String| r.starts_with("Err(ManagerGone");
    assert!(gone(format!("{:?}", lock.try_acquire())));
    assert!(gone(format!("{:?}", lock.acquire_timeout(PROMPTLY))));
    assert!(gone(format!("{:?}", lock.is_locked())));
    assert!(gone(format!("{:?}", event.set())));
    assert!(gone(format!("{:?}", event.wait_timeout(PROMPTLY))));
    assert!(gone(format!("{:?}", sem.try_acquire())));
    assert!(gone(format!("{:?}", sem.get_value())));
    assert!(gone(format!("{:?}", barrier.wait_timeout(PROMPTLY))));
    assert!(gone(format!("{:?}", barrier.try_wait())));
    assert!(gone(format!("{:?}", barrier.broken())));
    assert!(gone(format!("{:?}", queue.put(1))));
    assert!(gone(format!("{:?}", queue.try_put(1))));
    assert!(gone(format!("{:?}", queue.try_get())));
    assert!(gone(format!("{:?}", queue.get_timeout(PROMPTLY))));
    assert!(gone(format!("{:?}", queue.qsize())));
    assert!(gone(format!("{:?}", jobs.task_done())));
    assert!(gone(format!("{:?}", jobs.try_join())));
    assert!(gone(format!("{:?}", jobs.join_timeout(PROMPTLY))));
}

// ---------------------------------------------------------------- RLock

/// The child's side: cannot take, enter or release the parent's RLock;
/// takes it once the parent let go of both levels, enters it again, says
/// so, and holds it until told to let go.
fn contend_rlock(args: (RLock, Event, Event, Event)) -> Vec<String> {
    let (lock, tried, held, release) = args;
    let mut seen = vec![
        format!("{:?}", lock.try_acquire()),
        format!(
            "{:?}",
            lock.release()
                .map_err(|e| matches!(e, Error::InvalidState(_)))
        ),
        format!("{:?}", lock.is_owned()),
        format!("{:?}", lock.recursion_count()),
    ];
    tried.set().unwrap();
    let outer = lock.lock_timeout(PROMPTLY * 3).unwrap();
    let inner = lock.try_lock().unwrap();
    seen.push(format!("{:?}", (outer.owner_died(), inner.owner_died())));
    seen.push(format!("{:?}", lock.recursion_count()));
    held.set().unwrap();
    seen.push(format!("{:?}", release.wait_timeout(PROMPTLY * 3)));
    drop(inner);
    seen.push(format!("{:?}", lock.is_locked()));
    drop(outer);
    seen
}

#[test]
fn rlock_is_one_type_for_every_source() {
    for &source in SOURCES {
        let maker = Maker::start(source);
        for m in METHODS {
            let lock = maker.rlock();
            let (tried, held, release) = (maker.event(), maker.event(), maker.event());
            assert_eq!(lock.acquire().unwrap(), Acquired::Clean, "{source:?} {m:?}");
            assert_eq!(lock.try_acquire().unwrap(), Acquired::Clean);
            assert_eq!(lock.recursion_count().unwrap(), 2, "{source:?} {m:?}");
            assert!(lock.is_owned().unwrap() && lock.is_locked().unwrap());
            // Another thread of this process neither enters nor releases it.
            std::thread::scope(|s| {
                s.spawn(|| {
                    assert!(!lock.is_owned().unwrap(), "{source:?} {m:?}");
                    assert!(matches!(lock.try_acquire(), Err(Error::WouldBlock)));
                    assert!(matches!(
                        lock.acquire_timeout(Duration::from_millis(20)),
                        Err(Error::Timeout(_))
                    ));
                    assert!(
                        matches!(lock.release(), Err(Error::InvalidState(_))),
                        "{source:?} {m:?}"
                    );
                });
            });
            let mut p = start(
                m,
                contend_rlock,
                (lock.clone(), tried.clone(), held.clone(), release.clone()),
            );
            assert!(tried.wait_timeout(PROMPTLY).unwrap(), "{source:?} {m:?}");
            lock.release().unwrap();
            assert!(lock.is_locked().unwrap(), "one level is still held");
            assert_eq!(lock.recursion_count().unwrap(), 1);
            lock.release().unwrap();
            assert!(held.wait_timeout(PROMPTLY).unwrap(), "{source:?} {m:?}");
            // The child holds it, two deep.
            assert!(!lock.is_owned().unwrap(), "{source:?} {m:?}");
            assert!(matches!(lock.try_acquire(), Err(Error::WouldBlock)));
            assert!(matches!(lock.release(), Err(Error::InvalidState(_))));
            release.set().unwrap();
            let seen = p.join_timeout(PROMPTLY * 3).unwrap();
            assert_eq!(
                seen,
                [
                    "Err(WouldBlock)",
                    "Err(true)",
                    "Ok(false)",
                    "Ok(0)",
                    "(None, None)",
                    "Ok(2)",
                    "Ok(true)",
                    "Ok(true)",
                ],
                "{source:?} {m:?}"
            );
            assert_eq!(lock.acquire_timeout(PROMPTLY).unwrap(), Acquired::Clean);
            lock.release().unwrap();
            assert!(!lock.is_locked().unwrap(), "{source:?} {m:?}");
            assert!(matches!(lock.release(), Err(Error::InvalidState(_))));
        }
        maker.shutdown();
    }
}

/// Takes the RLock two deep, says so, and waits to be killed.
fn hold_rlock_and_wait(args: (RLock, Event, Event)) {
    let (lock, held, never) = args;
    let outer = lock.lock().unwrap();
    let inner = lock.lock().unwrap();
    held.set().unwrap();
    let _ = never.wait();
    drop((inner, outer));
}

#[test]
fn an_rlock_whose_holder_is_killed_goes_to_the_next_acquirer_for_every_source() {
    for &source in SOURCES {
        let maker = Maker::start(source);
        for m in METHODS {
            let lock = maker.rlock();
            let (held, never) = (maker.event(), maker.event());
            let mut p = start(
                m,
                hold_rlock_and_wait,
                (lock.clone(), held.clone(), never.clone()),
            );
            assert!(held.wait_timeout(PROMPTLY).unwrap(), "{source:?} {m:?}");
            let pid = p.pid().unwrap();
            p.kill().unwrap();
            let _ = p.join_timeout(PROMPTLY);
            assert_not_our_zombie(pid);
            let got = lock.acquire_timeout(PROMPTLY * 3).unwrap();
            assert_eq!(got, Acquired::OwnerDied { pid }, "{source:?} {m:?}");
            // The dead holder's two levels are gone with it.
            assert_eq!(lock.recursion_count().unwrap(), 1, "{source:?} {m:?}");
            lock.release().unwrap();
            assert!(!lock.is_locked().unwrap(), "{source:?} {m:?}");
        }
        maker.shutdown();
    }
}

// ------------------------------------------------------------ Condition

/// Holds the condition's lock two deep, counts itself in, and waits; once
/// woken, counts itself out, still two deep: (timed out, owner died, depth).
fn wait_on(args: (Condition, RawValue<u32>, RawValue<u32>)) -> String {
    let (cond, waiting, woken) = args;
    let outer = cond.lock().unwrap();
    let inner = cond.lock().unwrap();
    waiting.fetch_add(1);
    let w = cond.wait_timeout(PROMPTLY * 3).unwrap();
    woken.fetch_add(1);
    let depth = match cond.get_lock() {
        ConditionLock::RLock(l) => l.recursion_count().unwrap(),
        ConditionLock::Lock(_) => unreachable!("a condition over its own RLock"),
    };
    drop((inner, outer));
    format!("{:?}", (w.timed_out(), w.owner_died(), depth))
}

#[test]
fn condition_notify_n_and_notify_all_for_every_source() {
    for &source in SOURCES {
        let maker = Maker::start(source);
        for m in METHODS {
            let cond = maker.condition();
            let (waiting, woken) = (RawValue::new(0u32).unwrap(), RawValue::new(0u32).unwrap());
            let mut waiters: Vec<_> = (0..3)
                .map(|_| start(m, wait_on, (cond.clone(), waiting.clone(), woken.clone())))
                .collect();
            // Each counts itself in holding the lock and releases it only
            // by waiting: once all three counted, the lock is theirs no more.
            assert!(
                eventually(PROMPTLY, || waiting.load() == 3),
                "{source:?} {m:?}"
            );
            {
                let _g = cond.lock_timeout(PROMPTLY).unwrap();
                assert_eq!(woken.load(), 0, "{source:?} {m:?}: woken without a notify");
                cond.notify(2).unwrap();
            }
            assert!(
                eventually(PROMPTLY, || woken.load() == 2),
                "{source:?} {m:?}"
            );
            {
                // Exactly two: the third is still waiting (it would need
                // the lock, held here, to count itself out).
                let _g = cond.lock_timeout(PROMPTLY).unwrap();
                assert_eq!(woken.load(), 2, "{source:?} {m:?}: notify(2) woke more");
                cond.notify(0).unwrap();
            }
            {
                let _g = cond.lock_timeout(PROMPTLY).unwrap();
                assert!(woken.load() <= 2, "{source:?} {m:?}: notify(0) woke one");
                cond.notify_all().unwrap();
            }
            for p in &mut waiters {
                let seen = p.join_timeout(PROMPTLY * 3).unwrap();
                assert_eq!(seen, "(false, None, 2)", "{source:?} {m:?}");
            }
            assert_eq!(woken.load(), 3);
            // notify_all wakes every waiter at once.
            waiting.store(0);
            woken.store(0);
            let mut waiters: Vec<_> = (0..3)
                .map(|_| start(m, wait_on, (cond.clone(), waiting.clone(), woken.clone())))
                .collect();
            assert!(
                eventually(PROMPTLY, || waiting.load() == 3),
                "{source:?} {m:?}"
            );
            {
                let _g = cond.lock_timeout(PROMPTLY).unwrap();
                cond.notify_all().unwrap();
            }
            for p in &mut waiters {
                let seen = p.join_timeout(PROMPTLY * 3).unwrap();
                assert_eq!(seen, "(false, None, 2)", "{source:?} {m:?}");
            }
        }
        maker.shutdown();
    }
}

#[test]
fn condition_waits_time_out_holding_the_lock_for_every_source() {
    for &source in SOURCES {
        let maker = Maker::start(source);
        let lock = maker.rlock();
        for cond in [maker.condition(), maker.condition_with(lock.clone())] {
            let ConditionLock::RLock(held) = cond.get_lock().clone() else {
                panic!("{source:?}: an RLock under the condition")
            };
            assert!(
                matches!(cond.wait(), Err(Error::InvalidState(_))),
                "{source:?}"
            );
            assert!(matches!(cond.notify(1), Err(Error::InvalidState(_))));
            assert!(matches!(cond.notify_all(), Err(Error::InvalidState(_))));
            let _outer = cond.lock().unwrap();
            let _inner = cond.lock().unwrap();
            let w = cond.wait_timeout(Duration::from_millis(50)).unwrap();
            assert!(w.timed_out(), "{source:?}");
            assert_eq!(w.acquired(), Acquired::Clean);
            // Held again, as deep as before.
            assert_eq!(held.recursion_count().unwrap(), 2, "{source:?}");
            assert!(cond.wait_timeout(Duration::ZERO).unwrap().timed_out());
            assert_eq!(held.recursion_count().unwrap(), 2, "{source:?}");
            let w = cond
                .wait_for_timeout(|| false, Duration::from_millis(50))
                .unwrap();
            assert!(w.timed_out(), "{source:?}");
            assert_eq!(held.recursion_count().unwrap(), 2, "{source:?}");
            let w = cond.wait_for_timeout(|| true, Duration::ZERO).unwrap();
            assert!(!w.timed_out(), "{source:?}");
            assert_eq!(cond.wait_for(|| true).unwrap(), Acquired::Clean);
            // Nobody waits: notifying changes nothing.
            cond.notify(3).unwrap();
            cond.notify_all().unwrap();
        }
        assert!(!lock.is_locked().unwrap(), "{source:?}");
        maker.shutdown();
    }
}

/// Waits (through `wait_for`) until the flag is up.
fn wait_for_flag(args: (Condition, RawValue<u32>, Event)) -> String {
    let (cond, flag, waiting) = args;
    let _g = cond.lock().unwrap();
    waiting.set().unwrap();
    let w = cond
        .wait_for_timeout(|| flag.load() == 1, PROMPTLY * 3)
        .unwrap();
    format!("{:?}", (w.timed_out(), w.owner_died(), flag.load()))
}

#[test]
fn a_condition_over_a_given_lock_for_every_source() {
    for &source in SOURCES {
        let maker = Maker::start(source);
        for m in METHODS {
            let lock = maker.lock();
            let cond = maker.condition_with(lock.clone());
            let (flag, waiting) = (RawValue::new(0u32).unwrap(), maker.event());
            let mut p = start(
                m,
                wait_for_flag,
                (cond.clone(), flag.clone(), waiting.clone()),
            );
            assert!(waiting.wait_timeout(PROMPTLY).unwrap(), "{source:?} {m:?}");
            {
                // The lock is the condition's: taking one takes the other.
                let _g = lock.lock_timeout(PROMPTLY).unwrap();
                assert!(matches!(cond.try_acquire(), Err(Error::WouldBlock)));
                // A spurious wake-up is re-checked by wait_for.
                cond.notify_all().unwrap();
            }
            {
                let _g = cond.lock_timeout(PROMPTLY).unwrap();
                flag.store(1);
                cond.notify(1).unwrap();
            }
            let seen = p.join_timeout(PROMPTLY * 3).unwrap();
            assert_eq!(seen, "(false, None, 1)", "{source:?} {m:?}");
            assert!(!lock.is_locked().unwrap(), "{source:?} {m:?}");
        }
        maker.shutdown();
    }
}

/// Takes the condition's lock (once the waiter released it by waiting),
/// says so, and waits to be killed.
fn hold_condition_lock(args: (Condition, Event, Event)) {
    let (cond, held, never) = args;
    let g = cond.lock().unwrap();
    held.set().unwrap();
    let _ = never.wait();
    drop(g);
}

/// Waits on the condition: (timed out, owner died, still holding the lock).
fn wait_once(args: (Condition, RawValue<u32>)) -> (bool, Option<i32>, bool) {
    let (cond, waiting) = args;
    let g = cond.lock().unwrap();
    waiting.store(1);
    let w = cond.wait_timeout(PROMPTLY * 3).unwrap();
    let still = match cond.get_lock() {
        ConditionLock::RLock(l) => l.is_owned().unwrap(),
        ConditionLock::Lock(l) => l.is_locked().unwrap(),
    };
    drop(g);
    (w.timed_out(), w.owner_died(), still)
}

#[test]
fn a_condition_waiter_is_told_when_the_lock_holder_is_killed_for_every_source() {
    for &source in SOURCES {
        let maker = Maker::start(source);
        for m in METHODS {
            for cond in [maker.condition(), maker.condition_with(maker.lock())] {
                let waiting = RawValue::new(0u32).unwrap();
                let (held, never) = (maker.event(), maker.event());
                let mut waiter = start(m, wait_once, (cond.clone(), waiting.clone()));
                assert!(
                    eventually(PROMPTLY, || waiting.load() == 1),
                    "{source:?} {m:?}"
                );
                // The holder gets the lock only once the waiter waits.
                let mut holder = start(
                    m,
                    hold_condition_lock,
                    (cond.clone(), held.clone(), never.clone()),
                );
                assert!(held.wait_timeout(PROMPTLY).unwrap(), "{source:?} {m:?}");
                let pid = holder.pid().unwrap();
                holder.kill().unwrap();
                let _ = holder.join_timeout(PROMPTLY);
                assert_not_our_zombie(pid);
                // Woken by the death (no notify comes), holding the lock, and told.
                let seen = waiter.join_timeout(PROMPTLY * 3).unwrap();
                assert_eq!(seen, (false, Some(pid), true), "{source:?} {m:?}");
                let _g = cond.lock_timeout(PROMPTLY).unwrap();
            }
        }
        maker.shutdown();
    }
}

/// Receives an RLock and a condition through a queue: takes the RLock and
/// leaves holding it, and notifies the condition's waiter.
fn rlock_and_condition_through_a_queue(
    args: (Queue<(RLock, Condition)>, Option<std::net::SocketAddr>),
) -> bool {
    let (q, server) = args;
    if let Some(address) = server {
        multiproc::set_manager_authkey(address, b"flavors");
    }
    let (lock, cond) = q.get_timeout(PROMPTLY * 3).unwrap();
    let taken = lock.try_acquire().is_ok();
    let _g = cond.lock_timeout(PROMPTLY).unwrap();
    cond.notify_all().unwrap();
    taken
}

#[test]
fn rlocks_and_conditions_of_every_flavour_travel_inside_a_queue() {
    for &source in SOURCES {
        let maker = Maker::start(source);
        for m in METHODS {
            let q: Queue<(RLock, Condition)> = Queue::new().unwrap();
            let (lock, cond) = (maker.rlock(), maker.condition());
            let mut p = start(
                m,
                rlock_and_condition_through_a_queue,
                (q.clone(), maker.tcp_address()),
            );
            let _g = cond.lock().unwrap();
            q.put((lock.clone(), cond.clone())).unwrap();
            // Notified by the child, which took the condition's lock through its copy.
            let w = cond.wait_timeout(PROMPTLY * 3).unwrap();
            assert!(!w.timed_out(), "{source:?} {m:?}");
            assert!(p.join_timeout(PROMPTLY * 3).unwrap(), "{source:?} {m:?}");
            // The child left holding the RLock: the next acquirer is told.
            let got = lock.acquire_timeout(PROMPTLY).unwrap();
            assert!(
                matches!(got, Acquired::OwnerDied { .. }),
                "{source:?} {m:?}: {got:?}"
            );
            lock.release().unwrap();
        }
        maker.shutdown();
    }
}

/// A remote RLock or condition whose server is gone says `ManagerGone`.
#[test]
fn remote_rlocks_and_conditions_of_a_stopped_server_say_manager_gone() {
    let maker = Maker::start(Source::Tcp);
    let (lock, cond) = (maker.rlock(), maker.condition());
    maker.shutdown();
    let gone = |r: String| r.starts_with("Err(ManagerGone");
    assert!(gone(format!("{:?}", lock.try_acquire())));
    assert!(gone(format!("{:?}", lock.acquire_timeout(PROMPTLY))));
    assert!(gone(format!("{:?}", lock.release())));
    assert!(gone(format!("{:?}", lock.is_locked())));
    assert!(gone(format!("{:?}", lock.recursion_count())));
    assert!(gone(format!("{:?}", cond.try_acquire())));
    assert!(gone(format!("{:?}", cond.wait_timeout(PROMPTLY))));
    assert!(gone(format!("{:?}", cond.notify_all())));
}
