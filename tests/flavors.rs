//! One type per primitive (#13): the same test body runs against a plain
//! local handle, one a local `Manager` hands out, one a TCP `BaseManager`
//! hands out and (feature `redis`) one a `RedisManager` hands out, under
//! spawn and fork, with the same assertions.

mod util;

use std::time::Duration;

use multiproc::{
    Acquired, Barrier, BaseManager, BoundedSemaphore, Error, Event, JoinableQueue, Lock, Manager,
    Process, Queue, RemoteManager, Semaphore, StartMethod,
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
