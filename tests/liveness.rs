//! Liveness is three-valued: alive, dead, or cannot tell. A process out of
//! descriptors cannot open `/proc/<pid>/stat` to check a peer, and must not
//! take that for the peer's death: it never takes a lock from a live
//! holder, loses no message, sees no false `Closed` or `ManagerGone`, does
//! not break a barrier for live parties, and a manager server at its limit
//! keeps its live clients and their objects.
//!
//! Each test puts a child (never the test process) at its descriptor limit
//! ([`util::exhaust_descriptors`]: the soft limit just above what is open,
//! the rest filled with `dup(0)`) and has it use a primitive whose peer is a
//! live process; the server test lowers the server's limit with `prlimit`.

mod util;

use std::time::Duration;

use multiproc::{
    Acquired, Barrier, Connection, DictProxy, Error, Event, Lock, Manager, Pipe, Process, Queue,
    RLock, ServerAddress, Shareable, StartMethod,
};
use util::{PROMPTLY, eventually, exhaust_descriptors, within};

multiproc::init_before_main!();

const METHODS: [StartMethod; 2] = [StartMethod::Spawn, StartMethod::Fork];
/// Several liveness slices (100 ms each): a waiter checks its peer a few times.
const SLICES: Duration = Duration::from_millis(350);

fn start<A: Shareable, R: Shareable>(m: StartMethod, f: fn(A) -> R, arg: A) -> Process<R> {
    let mut p = Process::new(f, arg).start_method(m);
    p.start().expect("start");
    p
}

/// Lets a process that waits on us run its liveness checks a few times.
/// Nothing is ordered by it: a slower machine only checks fewer times.
fn let_it_check() {
    std::thread::sleep(SLICES);
}

// ------------------------------------------------------------------ locks

/// Out of descriptors, tries the lock and the RLock the parent holds, says
/// so, then takes both once the parent has let go.
fn try_held_locks(args: (Lock, RLock, Event, Event)) -> Vec<String> {
    let (lock, rlock, tried, released) = args;
    exhaust_descriptors();
    let mut seen = vec![
        format!("{:?}", lock.try_acquire()),
        format!("{:?}", lock.acquire_timeout(SLICES)),
        format!("{:?}", rlock.try_acquire()),
        format!("{:?}", rlock.acquire_timeout(SLICES)),
    ];
    tried.set().unwrap();
    seen.push(format!("{:?}", released.wait_timeout(PROMPTLY)));
    seen.push(format!("{:?}", lock.acquire_timeout(PROMPTLY)));
    seen.push(format!("{:?}", rlock.acquire_timeout(PROMPTLY)));
    seen
}

#[test]
fn a_process_out_of_descriptors_cannot_take_a_lock_from_a_live_holder() {
    for m in METHODS {
        let lock = Lock::new().unwrap();
        let rlock = RLock::new().unwrap();
        let (tried, released) = (Event::new().unwrap(), Event::new().unwrap());
        let guard = lock.lock().unwrap();
        let rguard = rlock.lock().unwrap();
        let args = (lock.clone(), rlock.clone(), tried.clone(), released.clone());
        let mut p = start(m, try_held_locks, args);
        assert!(tried.wait_timeout(PROMPTLY).unwrap(), "{m:?}");
        // Still ours: nobody took them over.
        let me = std::process::id();
        assert_eq!(format!("{lock:?}"), format!("Lock {{ owner: Some({me}) }}"));
        assert!(rlock.is_owned().unwrap(), "{m:?}");
        drop((guard, rguard));
        released.set().unwrap();
        let seen = p.join_timeout(PROMPTLY).unwrap();
        let want = [
            "Err(WouldBlock)",
            &format!("Err(Timeout({SLICES:?}))"),
            "Err(WouldBlock)",
            &format!("Err(Timeout({SLICES:?}))"),
            "Ok(true)",
            "Ok(Clean)",
            "Ok(Clean)",
        ];
        assert_eq!(seen, want, "{m:?}");
    }
}

/// Out of descriptors, takes the lock and holds it until the parent has tried it.
fn hold_a_lock(args: (Lock, Event, Event)) -> String {
    let (lock, holding, tried) = args;
    exhaust_descriptors();
    let acquired = lock.acquire();
    holding.set().unwrap();
    let waited = tried.wait_timeout(PROMPTLY);
    let released = lock.release();
    format!("{acquired:?} {waited:?} {released:?}")
}

#[test]
fn a_holder_out_of_descriptors_keeps_its_lock() {
    for m in METHODS {
        let lock = Lock::new().unwrap();
        let (holding, tried) = (Event::new().unwrap(), Event::new().unwrap());
        let mut p = start(
            m,
            hold_a_lock,
            (lock.clone(), holding.clone(), tried.clone()),
        );
        assert!(holding.wait_timeout(PROMPTLY).unwrap(), "{m:?}");
        // The holder's lock word must name it rightly though it could not
        // read its own start time from /proc.
        let got = lock.acquire_timeout(SLICES);
        assert!(matches!(got, Err(Error::Timeout(_))), "{m:?}: {got:?}");
        tried.set().unwrap();
        assert_eq!(lock.acquire_timeout(PROMPTLY).unwrap(), Acquired::Clean);
        lock.release().unwrap();
        assert_eq!(
            p.join_timeout(PROMPTLY).unwrap(),
            "Ok(Clean) Ok(true) Ok(())"
        );
    }
}

// ------------------------------------------------------------------ queue

/// A queue message: who put it, its number, and its bytes.
type Msg = (u8, u32, Vec<u8>);

/// A big message: 8 MiB, far more than the 64 KiB ring, so it is streamed.
const BIG: usize = 8 << 20;
const RING: usize = 64 << 10;

fn payload(from: u8, n: u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(7)
                .wrapping_add(n * 31 + u32::from(from)) as u8
        })
        .collect()
}

/// Out of descriptors, puts a small message, a big one and a small one;
/// returns what each put said.
fn produce_out_of_descriptors(q: Queue<Msg>) -> Vec<String> {
    exhaust_descriptors();
    [(0, 100), (1, BIG), (2, 100)]
        .into_iter()
        .map(|(n, len)| format!("{:?}", q.put((0u8, n, payload(0, n, len)))))
        .collect()
}

#[test]
fn a_producer_out_of_descriptors_loses_no_message() {
    for m in METHODS {
        let q = Queue::<Msg>::with_capacity_bytes(RING).unwrap();
        let mut p = start(m, produce_out_of_descriptors, q.clone());
        // Another producer (this process) contends for the producer lock
        // until the child is done: it must wait for the child, not take the
        // lock from it.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (other, stop2) = (q.clone(), stop.clone());
        let ours = std::thread::spawn(move || {
            let mut n = 0u32;
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                other.put((1u8, n, payload(1, n, 64))).unwrap();
                n += 1;
            }
            n
        });
        let mut next = [0u32; 2];
        let mut ours = Some(ours);
        let mut put_here = None;
        let begun = std::time::Instant::now();
        while put_here != Some(next[1]) || next[0] != 3 {
            assert!(begun.elapsed() < PROMPTLY * 3, "{m:?}: stuck at {next:?}");
            if next[0] == 3 {
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                if ours.as_ref().is_some_and(|t| t.is_finished()) {
                    put_here = ours.take().map(|t| t.join().unwrap());
                    continue;
                }
            }
            let (from, n, bytes) = match q.get_timeout(Duration::from_millis(100)) {
                Ok(msg) => msg,
                Err(Error::Empty) => continue,
                Err(e) => panic!("{m:?}: {e:?}"),
            };
            let len = match (from, n) {
                (0, 1) => BIG,
                (0, _) => 100,
                _ => 64,
            };
            assert_eq!(n, next[from as usize], "{m:?}: in order");
            assert!(
                bytes == payload(from, n, len),
                "{m:?}: message {from}/{n} intact"
            );
            next[from as usize] += 1;
        }
        assert_eq!(p.join_timeout(PROMPTLY).unwrap(), ["Ok(())"; 3], "{m:?}");
        assert_eq!(q.qsize().unwrap(), 0);
    }
}

/// Out of descriptors, takes `n` messages; returns each message's number
/// and length, or the error.
fn consume_out_of_descriptors(args: (Queue<Msg>, u32, Event)) -> Vec<String> {
    let (q, n, ready) = args;
    exhaust_descriptors();
    ready.set().unwrap();
    (0..n)
        .map(|_| match q.get_timeout(PROMPTLY) {
            Ok((from, n, bytes)) if bytes == payload(from, n, bytes.len()) => {
                format!("{n}:{}", bytes.len())
            }
            Ok((_, n, _)) => format!("{n}: corrupt"),
            Err(e) => format!("{e:?}"),
        })
        .collect()
}

/// Makes `n` big messages, says it is about to put them, and puts them.
fn produce_big(args: (Queue<Msg>, u32, Event)) -> u32 {
    let (q, n, putting) = args;
    let msgs: Vec<Vec<u8>> = (0..n).map(|i| payload(1, i, BIG)).collect();
    putting.set().unwrap();
    for (i, m) in msgs.into_iter().enumerate() {
        q.put((1u8, i as u32, m)).unwrap();
    }
    n
}

/// Stops (`SIGSTOP`) or resumes (`SIGCONT`) process `pid`.
fn pause(pid: i32, stop: bool) {
    let sig = if stop { libc::SIGSTOP } else { libc::SIGCONT };
    // SAFETY: kill(2) on a child this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
}

#[test]
fn a_consumer_out_of_descriptors_loses_no_message() {
    for m in METHODS {
        let q = Queue::<Msg>::with_capacity_bytes(RING).unwrap();
        let ready = Event::new().unwrap();
        let n = 3;
        let mut c = start(m, consume_out_of_descriptors, (q.clone(), n, ready.clone()));
        assert!(ready.wait_timeout(PROMPTLY).unwrap(), "{m:?}");
        let putting = Event::new().unwrap();
        let mut p = start(m, produce_big, (q.clone(), n, putting.clone()));
        let pid = p.pid().unwrap();
        assert!(putting.wait_timeout(PROMPTLY).unwrap(), "{m:?}");
        // Pause the (live) producer a few times while it streams: the
        // consumer, half-way through a message, checks whether the producer
        // lives each 100 ms it waits for the rest, and cannot tell.
        for _ in 0..4 {
            pause(pid, true);
            let_it_check();
            pause(pid, false);
            if eventually(Duration::from_millis(20), || !p.is_alive()) {
                break;
            }
        }
        assert_eq!(p.join_timeout(PROMPTLY).unwrap(), n, "{m:?}");
        let want: Vec<String> = (0..n).map(|i| format!("{i}:{BIG}")).collect();
        assert_eq!(c.join_timeout(PROMPTLY * 2).unwrap(), want, "{m:?}");
    }
}

/// What [`receive_handles_out_of_descriptors`] receives from, and the
/// events it says it is ready on and waits for the messages on.
type HandleCarriers = (
    Queue<Queue<u32>>,
    Connection<Queue<u32>>,
    Queue<DictProxy<u8, u8>>,
    Event,
    Event,
);

/// Out of descriptors, receives messages that hold handles it has not
/// opened yet (a queue's, a manager's dict): each receive is `Io` with
/// `EMFILE`, and the message waits for the next one, which gets it once
/// there is room again. Nothing is lost, and order is kept.
fn receive_handles_out_of_descriptors(args: HandleCarriers) -> Vec<String> {
    let (q, conn, proxies, ready, go) = args;
    let room = util::exhaust_descriptors_for_now();
    ready.set().unwrap();
    assert!(go.wait_timeout(PROMPTLY).unwrap());
    let emfile = |e: Error| match e {
        Error::Io(e) if e.raw_os_error() == Some(libc::EMFILE) => "EMFILE".to_string(),
        e => format!("{e:?}"),
    };
    let mut seen = vec![
        format!("{:?}", q.get_timeout(PROMPTLY).map(drop).map_err(emfile)),
        format!("{:?}", q.get_timeout(PROMPTLY).map(drop).map_err(emfile)),
        format!("{:?}", conn.poll(Some(Duration::ZERO))),
        format!(
            "{:?}",
            conn.recv_timeout(PROMPTLY).map(drop).map_err(emfile)
        ),
        format!(
            "{:?}",
            proxies.get_timeout(PROMPTLY).map(drop).map_err(emfile)
        ),
    ];
    drop(room);
    let inner = |r: multiproc::Result<Queue<u32>>| r.and_then(|q| q.get_timeout(PROMPTLY));
    seen.push(format!("{:?}", inner(q.get_timeout(PROMPTLY))));
    seen.push(format!("{:?}", inner(q.get_timeout(PROMPTLY))));
    seen.push(format!("{:?}", inner(conn.recv_timeout(PROMPTLY))));
    let d = proxies.get_timeout(PROMPTLY);
    seen.push(format!("{:?}", d.and_then(|d| d.get(&1))));
    seen
}

#[test]
fn a_receiver_out_of_descriptors_keeps_a_message_whose_handles_it_cannot_open() {
    for m in METHODS {
        let manager = Manager::start().unwrap();
        let q = Queue::<Queue<u32>>::new().unwrap();
        let proxies = Queue::<DictProxy<u8, u8>>::new().unwrap();
        let (mine, theirs) = Pipe::new::<Queue<u32>>().unwrap();
        let (ready, go) = (Event::new().unwrap(), Event::new().unwrap());
        let args = (
            q.clone(),
            theirs,
            proxies.clone(),
            ready.clone(),
            go.clone(),
        );
        let mut c = start(m, receive_handles_out_of_descriptors, args);
        assert!(ready.wait_timeout(PROMPTLY).unwrap(), "{m:?}");
        // Made after the child started: it has none of them open yet.
        let inner: Vec<Queue<u32>> = (0..3).map(|_| Queue::new().unwrap()).collect();
        for (i, one) in inner.iter().enumerate() {
            one.put(40 + i as u32).unwrap();
        }
        q.put(inner[0].clone()).unwrap();
        q.put(inner[1].clone()).unwrap();
        mine.send(inner[2].clone()).unwrap();
        let d = manager.dict::<u8, u8>().unwrap();
        d.insert(1, 7).unwrap();
        proxies.put(d).unwrap();
        go.set().unwrap();
        let seen = c.join_timeout(PROMPTLY * 3).unwrap();
        let emfile = r#"Err("EMFILE")"#;
        assert_eq!(
            seen,
            [
                emfile,
                emfile,
                "Ok(true)",
                emfile,
                emfile,
                "Ok(40)",
                "Ok(41)",
                "Ok(42)",
                "Ok(Some(7))"
            ],
            "{m:?}"
        );
        drop(inner);
        manager.shutdown().unwrap();
    }
}

/// What [`held_messages_stay_with_their_taker`] receives from: a queue two
/// threads take from, one whose single message it holds across a fork, a
/// pipe end, and the events it says it is ready on and waits for the
/// messages on.
type HeldCarriers = (
    Queue<Queue<u32>>,
    Queue<Queue<u32>>,
    Connection<Queue<u32>>,
    Event,
    Event,
);

/// Out of descriptors, two threads receive at once from one queue, one
/// message of another queue is taken, and a pipe end is read: every
/// message is kept (each thread's own, not the last one only), a child
/// forked meanwhile does not get the message its parent holds (the parent
/// delivers it), and raw bytes come out of the pipe in order, the held
/// message first.
fn held_messages_stay_with_their_taker(args: HeldCarriers) -> Vec<String> {
    let (q, lone, conn, ready, go) = args;
    let room = util::exhaust_descriptors_for_now();
    ready.set().unwrap();
    assert!(go.wait_timeout(PROMPTLY).unwrap());
    let emfile = |r: multiproc::Result<Queue<u32>>| match r {
        Err(Error::Io(e)) if e.raw_os_error() == Some(libc::EMFILE) => "EMFILE".to_string(),
        other => format!("{:?}", other.map(drop)),
    };
    let both = std::sync::Barrier::new(2);
    let mut seen: Vec<String> = std::thread::scope(|s| {
        let takers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    both.wait();
                    emfile(q.get_timeout(PROMPTLY))
                })
            })
            .collect();
        takers.into_iter().map(|t| t.join().unwrap()).collect()
    });
    seen.push(emfile(lone.get_timeout(PROMPTLY)));
    seen.push(emfile(conn.recv_timeout(PROMPTLY)));
    drop(room);
    // `lone`'s only message is held here; its ring is empty.
    let mut forked = {
        let lone = lone.clone();
        Process::from_closure(move || format!("{:?}", lone.try_get().map(drop)))
    };
    forked.start().unwrap();
    seen.push(forked.join_timeout(PROMPTLY).unwrap());
    let inner = |r: multiproc::Result<Queue<u32>>| r.and_then(|q| q.get_timeout(PROMPTLY));
    let mut values = vec![
        format!("{:?}", inner(q.get_timeout(PROMPTLY))),
        format!("{:?}", inner(q.get_timeout(PROMPTLY))),
    ];
    values.sort();
    seen.extend(values);
    seen.push(format!("{:?}", inner(lone.get_timeout(PROMPTLY))));
    seen.push(format!(
        "{:?}",
        conn.recv_bytes_timeout(PROMPTLY).map(|b| !b.is_empty())
    ));
    seen.push(format!("{:?}", conn.try_recv_bytes().map(drop)));
    seen
}

#[test]
fn held_messages_are_each_kept_once_for_the_process_that_took_them() {
    for m in METHODS {
        let (q, lone) = (Queue::new().unwrap(), Queue::new().unwrap());
        let (mine, theirs) = Pipe::new::<Queue<u32>>().unwrap();
        let (ready, go) = (Event::new().unwrap(), Event::new().unwrap());
        let args = (q.clone(), lone.clone(), theirs, ready.clone(), go.clone());
        let mut c = start(m, held_messages_stay_with_their_taker, args);
        assert!(ready.wait_timeout(PROMPTLY).unwrap(), "{m:?}");
        // Made after the child started: it has none of them open yet.
        let inner: Vec<Queue<u32>> = (0..4).map(|_| Queue::new().unwrap()).collect();
        for (i, one) in inner.iter().enumerate() {
            one.put(40 + i as u32).unwrap();
        }
        q.put(inner[0].clone()).unwrap();
        q.put(inner[1].clone()).unwrap();
        lone.put(inner[2].clone()).unwrap();
        mine.send(inner[3].clone()).unwrap();
        go.set().unwrap();
        let seen = c.join_timeout(PROMPTLY * 3).unwrap();
        assert_eq!(
            seen,
            [
                "EMFILE",
                "EMFILE",
                "EMFILE",
                "EMFILE",
                "Err(Empty)",
                "Ok(40)",
                "Ok(41)",
                "Ok(42)",
                "Ok(true)",
                "Err(Empty)"
            ],
            "{m:?}"
        );
        drop(inner);
    }
}

// ------------------------------------------------------------------ pipe

const PIPE_BIG: usize = 1 << 20;

/// Out of descriptors: waits on a silent live writer (no end of file),
/// then exchanges messages larger than the pipe both ways.
fn pipe_out_of_descriptors(conn: Connection<Vec<u8>>) -> Vec<String> {
    exhaust_descriptors();
    let mut seen = vec![
        format!("{:?}", conn.recv_timeout(SLICES).map(|b| b.len())),
        format!("{:?}", conn.poll(Some(SLICES))),
        format!("{:?}", conn.send(b"ready".to_vec())),
    ];
    seen.push(format!(
        "{:?}",
        conn.recv_timeout(PROMPTLY).map(|b| b.len())
    ));
    seen.push(format!("{:?}", conn.send(vec![7u8; PIPE_BIG])));
    // The parent closes its end once it has the big message: a true end of file.
    seen.push(format!(
        "{:?}",
        conn.recv_timeout(PROMPTLY).map(|b| b.len())
    ));
    seen
}

#[test]
fn a_pipe_end_out_of_descriptors_sees_no_false_end_of_file() {
    for m in METHODS {
        let (here, there) = Pipe::new::<Vec<u8>>().unwrap();
        let mut p = start(m, pipe_out_of_descriptors, there);
        let first = here.recv_timeout(PROMPTLY).unwrap();
        assert!(first == b"ready", "{m:?}: {} bytes first", first.len());
        here.send(vec![9u8; PIPE_BIG]).unwrap();
        let big = here.recv_timeout(PROMPTLY).unwrap();
        assert!(big == vec![7u8; PIPE_BIG], "{m:?}: {} bytes", big.len());
        here.close();
        let want = [
            format!("Err(Timeout({SLICES:?}))"),
            "Ok(false)".to_string(),
            "Ok(())".to_string(),
            format!("Ok({PIPE_BIG})"),
            "Ok(())".to_string(),
            "Err(Closed)".to_string(),
        ];
        assert_eq!(p.join_timeout(PROMPTLY).unwrap(), want, "{m:?}");
    }
}

// ------------------------------------------------------------------ barrier

/// Out of descriptors, waits at the barrier.
fn wait_out_of_descriptors(b: Barrier) -> String {
    exhaust_descriptors();
    format!("{:?}", b.wait_timeout(PROMPTLY))
}

#[test]
fn a_barrier_party_out_of_descriptors_does_not_break_it_for_live_parties() {
    for m in METHODS {
        let b = Barrier::new(2).unwrap();
        let mut p = start(m, wait_out_of_descriptors, b.clone());
        assert!(
            eventually(PROMPTLY, || b.n_waiting().unwrap() == 1),
            "{m:?}"
        );
        // The child checks this (live) process a few times meanwhile.
        let_it_check();
        assert!(!b.broken().unwrap(), "{m:?}");
        let mine = b.wait_timeout(PROMPTLY).expect("released with the child");
        let theirs = p.join_timeout(PROMPTLY).unwrap();
        assert_eq!(theirs, format!("Ok({})", 1 - mine), "{m:?}");
    }
}

// ------------------------------------------------------------------ manager

/// What a client out of descriptors gets from its manager's objects.
type ClientArgs = (DictProxy<u32, String>, Event, Queue<u32>, Lock);

fn manager_client_out_of_descriptors(args: ClientArgs) -> Vec<String> {
    let (d, ev, q, lock) = args;
    exhaust_descriptors();
    vec![
        format!("{:?}", d.get(&1)),
        format!("{:?}", d.insert(2, "two".into())),
        format!("{:?}", ev.wait_timeout(SLICES)),
        format!("{:?}", q.get_timeout(SLICES)),
        format!("{:?}", lock.acquire_timeout(SLICES)),
        format!("{:?}", d.get(&2)),
    ]
}

#[test]
fn a_manager_client_out_of_descriptors_sees_no_false_manager_gone() {
    for m in METHODS {
        let manager = Manager::start_with(m).unwrap();
        let d = manager.dict::<u32, String>().unwrap();
        d.insert(1, "one".into()).unwrap();
        let lock = manager.lock().unwrap();
        let guard = lock.lock().unwrap();
        let args = (
            d.clone(),
            manager.event().unwrap(),
            manager.queue().unwrap(),
            lock.clone(),
        );
        let seen = start(m, manager_client_out_of_descriptors, args)
            .join_timeout(PROMPTLY)
            .unwrap();
        let want = [
            "Ok(Some(\"one\"))".to_string(),
            "Ok(())".to_string(),
            "Ok(false)".to_string(),
            // An empty queue says `Empty`, as Python's `queue.Empty`.
            "Err(Empty)".to_string(),
            format!("Err(Timeout({SLICES:?}))"),
            "Ok(Some(\"two\"))".to_string(),
        ];
        assert_eq!(seen, want, "{m:?}");
        drop(guard);
        manager.shutdown().unwrap();
    }
}

/// A client of the server: makes a dict of its own, says so, then reads it
/// back once told to (its connection sat idle in between).
fn own_a_dict(args: (ServerAddress, Event, Event)) -> Result<Option<String>, String> {
    let (address, ready, go) = args;
    let manager = Manager::connect(address).map_err(|e| e.to_string())?;
    let d = manager.dict::<u32, String>().map_err(|e| e.to_string())?;
    d.insert(7, "seven".into()).map_err(|e| e.to_string())?;
    ready.set().unwrap();
    if !go.wait_timeout(PROMPTLY).map_err(|e| e.to_string())? {
        return Err("never told to go on".into());
    }
    d.get(&7).map_err(|e| e.to_string())
}

#[test]
fn a_manager_server_out_of_descriptors_keeps_its_clients_and_their_objects() {
    for m in METHODS {
        let manager = Manager::start_with(m).unwrap();
        let d = manager.dict::<u32, String>().unwrap();
        d.insert(1, "one".into()).unwrap();
        let (ready, go) = (Event::new().unwrap(), Event::new().unwrap());
        let args = (*manager.address(), ready.clone(), go.clone());
        let mut p = start(m, own_a_dict, args);
        assert!(ready.wait_timeout(PROMPTLY).unwrap(), "{m:?}");
        util::assert_objects(|| manager.number_of_objects().unwrap(), 2, "");

        let server = manager.pid();
        let old = util::lower_descriptor_limit(server, 0);
        // Every connection thread of the server checks its idle client each
        // 100 ms slice, now without a descriptor to read /proc with.
        let_it_check();
        let d2 = d.clone();
        let read = within(PROMPTLY, move || d2.get(&1));
        let m2 = manager.clone();
        let count = within(PROMPTLY, move || m2.number_of_objects());
        util::restore_descriptor_limit(server, old);

        assert_eq!(
            read.expect("the server still answers this client")
                .unwrap()
                .as_deref(),
            Some("one"),
            "{m:?}"
        );
        assert_eq!(count.expect("answered").unwrap(), 2, "{m:?}: nothing freed");
        go.set().unwrap();
        let theirs = p.join_timeout(PROMPTLY).unwrap();
        assert_eq!(theirs, Ok(Some("seven".to_string())), "{m:?}");
        assert!(eventually(PROMPTLY, || manager
            .number_of_objects()
            .unwrap()
            == 1));
        manager.shutdown().unwrap();
    }
}

// ------------------------------------------------------------------ giving up

/// Out of descriptors, waits without a deadline on three live peers that
/// never act: the lock's holder, the pipe's writer, the barrier's other party.
fn nothing(_: ()) -> u32 {
    7
}

/// A fork pins the managed objects its child inherits, on a connection of
/// its own, while the process's client lock is held. A server that cannot
/// take that connection (it is out of descriptors) made the fork, and every
/// manager call of the process behind it, wait out the whole connect
/// timeout (30 s); pinning now gives up after a few seconds, and a fork
/// soon after does not try again.
#[test]
fn a_fork_while_a_server_is_out_of_descriptors_holds_no_one_up_for_long() {
    let manager = Manager::start_with(StartMethod::Spawn).unwrap();
    let d = manager.dict::<u32, String>().unwrap();
    d.insert(1, "one".into()).unwrap();
    let server = manager.pid();
    let old = util::lower_descriptor_limit(server, 0);
    let d2 = d.clone();
    let forks = within(Duration::from_secs(25), move || {
        let results: Vec<_> = (0..2)
            .map(|_| {
                let mut p = Process::new(nothing, ()).start_method(StartMethod::Fork);
                p.start().and_then(|()| p.join_timeout(PROMPTLY))
            })
            .collect();
        (results, d2.get(&1))
    });
    util::restore_descriptor_limit(server, old);
    let (results, read) = forks.expect("two forks and a call within 25 s, not 30 s or more");
    for r in results {
        assert_eq!(r.unwrap(), 7);
    }
    assert_eq!(read.unwrap().as_deref(), Some("one"));
    manager.shutdown().unwrap();
}

fn wait_forever_out_of_descriptors(args: (Lock, Connection<u32>, Barrier)) -> Vec<String> {
    let (lock, conn, barrier) = args;
    exhaust_descriptors();
    // Scoped: no handle is dropped (freeing its descriptor) before all gave up.
    std::thread::scope(|s| {
        let lock = s.spawn(|| format!("{:?}", lock.acquire().map(|_| ())));
        let pipe = s.spawn(|| format!("{:?}", conn.recv()));
        let party = s.spawn(|| format!("{:?}", barrier.wait()));
        [lock, pipe, party]
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect()
    })
}

#[test]
fn an_untimed_wait_that_cannot_tell_gives_up_with_an_io_error() {
    let lock = Lock::new().unwrap();
    let _held = lock.lock().unwrap();
    let (_here, there) = Pipe::new::<u32>().unwrap();
    let barrier = Barrier::new(2).unwrap();
    let args = (lock.clone(), there, barrier.clone());
    let seen = start(StartMethod::Spawn, wait_forever_out_of_descriptors, args)
        .join_timeout(PROMPTLY * 2)
        .unwrap();
    // After about 10 s of not being able to tell, each wait says why it
    // gives up; nothing was taken over, closed or broken.
    for s in &seen {
        assert!(
            s.starts_with("Err(Io(") && s.contains("cannot tell whether"),
            "{seen:?}"
        );
    }
    assert!(seen[0].contains("lock's holder"), "{seen:?}");
    assert!(lock.is_locked().unwrap());
    assert!(!barrier.broken().unwrap());
    assert_eq!(barrier.n_waiting().unwrap(), 0, "the waiter left the round");
}
