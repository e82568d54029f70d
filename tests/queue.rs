//! Queues across processes: many producers and consumers, killed producers
//! and consumers, close, JoinableQueue, SimpleQueue, bad input.

mod util;

use std::collections::HashSet;
use std::time::Duration;

use multiproc::{Error, Event, JoinableQueue, Process, Queue, RawValue, SimpleQueue, StartMethod};
use util::{PROMPTLY, assert_not_our_zombie, eventually, shm_leaks};

multiproc::init_before_main!();

const METHODS: [StartMethod; 2] = [StartMethod::Spawn, StartMethod::Fork];

/// A message: (producer, sequence number, payload).
type Msg = (u32, u32, Vec<u8>);

/// A small deterministic generator (xorshift), so producers and consumers agree.
fn mix(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

/// The payload of message `seq` of producer `p`: mostly small, every 250th large.
fn payload(p: u32, seq: u32) -> Vec<u8> {
    let h = mix(((p as u64) << 32 | seq as u64) + 0x9E37_79B9);
    let len = if seq % 250 == 7 {
        // A few hundred large ones in all, some larger than the 1 MiB ring.
        (256 << 10) + (h % (800 << 10)) as usize
    } else {
        1 + (h % 200) as usize
    };
    // A block of a prime length, repeated: cheap to build even unoptimised,
    // and parts delivered out of order would not line up.
    let block: Vec<u8> = (0..251u64).map(|i| (h.wrapping_add(i * 7)) as u8).collect();
    let mut v = block.repeat(len / 251 + 1);
    v.truncate(len);
    v
}

const PRODUCERS: u32 = 4;
const PER_PRODUCER: u32 = 25_000;
const CONSUMERS: usize = 3;

fn produce(args: (Queue<Msg>, u32, u32)) {
    let (q, p, n) = args;
    for seq in 0..n {
        q.put((p, seq, payload(p, seq))).unwrap();
    }
}

/// Takes messages until the queue is closed; returns the (producer, seq) of
/// each, and how many had a wrong payload.
fn consume(q: Queue<Msg>) -> (Vec<(u32, u32)>, u32) {
    let mut ids = Vec::new();
    let mut bad = 0;
    loop {
        match q.get() {
            Ok((p, seq, data)) => {
                if data != payload(p, seq) {
                    bad += 1;
                }
                ids.push((p, seq));
            }
            Err(Error::Closed) => return (ids, bad),
            Err(e) => panic!("consumer: {e}"),
        }
    }
}

fn many_to_many(method: StartMethod, q: Queue<Msg>) {
    let mut consumers: Vec<_> = (0..CONSUMERS)
        .map(|_| Process::new(consume, q.clone()).start_method(method))
        .collect();
    for c in &mut consumers {
        c.start().unwrap();
    }
    let mut producers: Vec<_> = (0..PRODUCERS)
        .map(|p| Process::new(produce, (q.clone(), p, PER_PRODUCER)).start_method(method))
        .collect();
    for p in &mut producers {
        p.start().unwrap();
    }
    for p in &mut producers {
        p.join_timeout(PROMPTLY * 6).unwrap();
    }
    q.close().unwrap();
    let mut seen = HashSet::new();
    for c in &mut consumers {
        let (ids, bad) = c.join_timeout(PROMPTLY).unwrap();
        assert_eq!(bad, 0, "{method:?}: corrupted payloads");
        for id in ids {
            assert!(seen.insert(id), "{method:?}: {id:?} arrived twice");
        }
    }
    assert_eq!(
        seen.len(),
        (PRODUCERS * PER_PRODUCER) as usize,
        "{method:?}"
    );
    assert!(q.empty().unwrap());
    let pids = consumers
        .iter()
        .map(|c| c.pid())
        .chain(producers.iter().map(|p| p.pid()));
    for pid in pids {
        assert_not_our_zombie(pid.unwrap());
    }
}

#[test]
fn four_producers_three_consumers_every_message_once() {
    many_to_many(StartMethod::Spawn, Queue::new().unwrap());
}

#[test]
fn four_producers_three_consumers_with_maxsize() {
    let q = Queue::with_maxsize(64).unwrap();
    assert_eq!(q.maxsize().unwrap(), 64);
    many_to_many(StartMethod::Fork, q);
}

/// Puts `n` small messages (counting them in `done`), then one larger than
/// the ring, which blocks half-way since nobody reads.
fn put_then_stream(args: (Queue<Msg>, RawValue<u64>, u32)) {
    let (q, done, n) = args;
    for seq in 0..n {
        q.put((0, seq, vec![seq as u8; 100])).unwrap();
        done.fetch_add(1);
    }
    q.put((0, n, vec![1u8; 4 << 20])).unwrap();
    done.fetch_add(1);
}

#[test]
fn producer_killed_mid_put_loses_only_that_message() {
    for m in METHODS {
        let q = Queue::<Msg>::with_capacity_bytes(64 << 10).unwrap();
        let done = RawValue::new(0u64).unwrap();
        let mut p = Process::new(put_then_stream, (q.clone(), done.clone(), 50)).start_method(m);
        p.start().unwrap();
        // The large put has begun once 51 messages are counted in the queue.
        assert!(eventually(PROMPTLY, || q.qsize().unwrap() == 51), "{m:?}");
        assert_eq!(done.load(), 50);
        p.kill().unwrap();
        assert!(p.join_timeout(PROMPTLY).is_err());
        for seq in 0..50 {
            let (who, s, data) = q.get_timeout(PROMPTLY).unwrap();
            assert_eq!((who, s), (0, seq), "{m:?}");
            assert_eq!(data, vec![seq as u8; 100]);
        }
        // The half-written message is dropped, not delivered.
        assert!(matches!(
            q.get_timeout(Duration::from_millis(300)),
            Err(Error::Empty)
        ));
        assert_eq!(q.qsize().unwrap(), 0);
        // The queue still works for everyone else.
        let mut p2 = Process::new(produce, (q.clone(), 1, 20)).start_method(m);
        p2.start().unwrap();
        for seq in 0..20 {
            let (who, s, _) = q.get_timeout(PROMPTLY).unwrap();
            assert_eq!((who, s), (1, seq));
        }
        p2.join_timeout(PROMPTLY).unwrap();
        assert!(q.empty().unwrap());
    }
}

/// Puts messages of mixed sizes for ever, counting each put that returned.
fn produce_counting(args: (Queue<Msg>, RawValue<u64>, u32)) {
    let (q, done, p) = args;
    for seq in 0.. {
        let len = if seq % 3 == 0 { 300 << 10 } else { 40 };
        q.put((p, seq, vec![p as u8; len])).unwrap();
        done.store(seq as u64 + 1);
    }
}

#[test]
fn producer_killed_mid_stream_keeps_what_it_completed() {
    let q = Queue::<Msg>::with_capacity_bytes(128 << 10).unwrap();
    let done = RawValue::new(0u64).unwrap();
    let mut consumer = Process::new(consume, q.clone());
    consumer.start().unwrap();
    let mut victim = Process::new(produce_counting, (q.clone(), done.clone(), 0));
    victim.start().unwrap();
    let mut other = Process::new(produce, (q.clone(), 1, 2000));
    other.start().unwrap();
    assert!(eventually(PROMPTLY, || done.load() >= 300));
    victim.kill().unwrap();
    assert!(victim.join_timeout(PROMPTLY).is_err());
    let completed = done.load() as u32;
    other.join_timeout(PROMPTLY).unwrap();
    // Everything put after the kill still arrives.
    let mut after = Process::new(produce, (q.clone(), 2, 100));
    after.start().unwrap();
    after.join_timeout(PROMPTLY).unwrap();
    q.close().unwrap();
    let (ids, _) = consumer.join_timeout(PROMPTLY).unwrap();
    let mut from_victim: Vec<u32> = ids.iter().filter(|i| i.0 == 0).map(|i| i.1).collect();
    from_victim.sort_unstable();
    let n = from_victim.len() as u32;
    assert!(
        n == completed || n == completed + 1,
        "{n} delivered, {completed} completed"
    );
    assert_eq!(from_victim, (0..n).collect::<Vec<_>>());
    assert_eq!(ids.iter().filter(|i| i.0 == 1).count(), 2000);
    assert_eq!(ids.iter().filter(|i| i.0 == 2).count(), 100);
}

/// Takes messages one by one, counting them in `got`, until killed.
fn consume_counting(args: (Queue<u32>, RawValue<u64>)) {
    let (q, got) = args;
    while q.get().is_ok() {
        got.fetch_add(1);
    }
}

#[test]
fn consumer_killed_mid_get_does_not_block_the_others() {
    for m in METHODS {
        let q = Queue::<u32>::new().unwrap();
        let got = RawValue::new(0u64).unwrap();
        let mut c = Process::new(consume_counting, (q.clone(), got.clone())).start_method(m);
        c.start().unwrap();
        for i in 0..100 {
            q.put(i).unwrap();
        }
        assert!(eventually(PROMPTLY, || got.load() == 100));
        // It is now in (or about to enter) `get`, which holds the consumer
        // lock; the assertions below hold wherever it is killed.
        c.kill().unwrap();
        assert!(c.join_timeout(PROMPTLY).is_err());
        for i in 0..100 {
            q.put(i).unwrap();
        }
        for i in 0..100 {
            assert_eq!(q.get_timeout(PROMPTLY).unwrap(), i, "{m:?}");
        }
    }
}

fn get_one(q: Queue<String>) -> Result<String, String> {
    q.get().map_err(|e| e.to_string())
}

#[test]
fn close_refuses_puts_and_lets_gets_drain() {
    for m in METHODS {
        let q = Queue::<String>::new().unwrap();
        q.put("a".to_string()).unwrap();
        q.put("b".to_string()).unwrap();
        q.close().unwrap();
        assert!(q.is_closed());
        assert!(matches!(q.put("c".to_string()), Err(Error::Closed)));
        assert!(matches!(q.try_put("c".to_string()), Err(Error::Closed)));
        // A child sees the close, and drains too.
        let mut p = Process::new(get_one, q.clone()).start_method(m);
        p.start().unwrap();
        assert_eq!(p.join_timeout(PROMPTLY).unwrap(), Ok("a".to_string()));
        assert_eq!(q.get().unwrap(), "b");
        assert!(matches!(q.get(), Err(Error::Closed)));
        assert!(matches!(q.try_get(), Err(Error::Closed)));
        assert!(matches!(
            q.get_timeout(Duration::from_millis(10)),
            Err(Error::Closed)
        ));
    }
}

#[test]
fn close_wakes_a_blocked_getter_in_another_process() {
    for m in METHODS {
        let q = Queue::<String>::new().unwrap();
        let mut p = Process::new(get_one, q.clone()).start_method(m);
        p.start().unwrap();
        // Give the child time to block in `get` (the result is the same if it has not).
        std::thread::sleep(Duration::from_millis(50));
        q.close().unwrap();
        assert_eq!(
            p.join_timeout(PROMPTLY).unwrap(),
            Err(Error::Closed.to_string()),
            "{m:?}"
        );
    }
}

/// A task (two factors, `None` to stop) and a result (the factors and their product).
type Task = Option<(u64, u64)>;
type Product = (u64, u64, u64);

/// Python's "feed tasks to workers, collect results" example.
fn worker(args: (Queue<Task>, Queue<Product>)) {
    let (tasks, done) = args;
    while let Some((a, b)) = tasks.get().unwrap() {
        done.put((a, b, a * b)).unwrap();
    }
}

#[test]
fn workers_take_tasks_and_return_results() {
    for m in METHODS {
        let tasks = Queue::new().unwrap();
        let done = Queue::new().unwrap();
        let mut workers: Vec<_> = (0..4)
            .map(|_| Process::new(worker, (tasks.clone(), done.clone())).start_method(m))
            .collect();
        for w in &mut workers {
            w.start().unwrap();
        }
        for i in 0..200u64 {
            tasks.put(Some((i, i + 1))).unwrap();
        }
        let mut results: Vec<Product> = (0..200)
            .map(|_| done.get_timeout(PROMPTLY).unwrap())
            .collect();
        for _ in &workers {
            tasks.put(None).unwrap();
        }
        for w in &mut workers {
            w.join_timeout(PROMPTLY).unwrap();
        }
        results.sort_unstable();
        let expected: Vec<_> = (0..200u64).map(|i| (i, i + 1, i * (i + 1))).collect();
        assert_eq!(results, expected, "{m:?}");
        assert!(done.empty().unwrap() && tasks.empty().unwrap());
    }
}

fn finish_tasks(q: JoinableQueue<u32>) -> u32 {
    let mut sum = 0;
    while let Ok(x) = q.get_timeout(Duration::from_millis(300)) {
        sum += x;
        q.task_done().unwrap();
    }
    sum
}

#[test]
fn joinable_queue_join_waits_for_task_done() {
    for m in METHODS {
        let q = JoinableQueue::<u32>::new().unwrap();
        assert!(q.try_join().is_ok());
        for i in 0..100 {
            q.put(i).unwrap();
        }
        assert_eq!(q.unfinished_tasks().unwrap(), 100);
        assert!(matches!(q.try_join(), Err(Error::WouldBlock)));
        assert!(matches!(
            q.join_timeout(Duration::from_millis(20)),
            Err(Error::Timeout(_))
        ));
        let mut workers: Vec<_> = (0..2)
            .map(|_| Process::new(finish_tasks, q.clone()).start_method(m))
            .collect();
        for w in &mut workers {
            w.start().unwrap();
        }
        q.join_timeout(PROMPTLY).unwrap();
        assert_eq!(q.unfinished_tasks().unwrap(), 0);
        let total: u32 = workers
            .iter_mut()
            .map(|w| w.join_timeout(PROMPTLY).unwrap())
            .sum();
        assert_eq!(total, (0..100).sum::<u32>(), "{m:?}");
        // More task_done calls than items is an error.
        assert!(matches!(q.task_done(), Err(Error::InvalidState(_))));
        q.put(1).unwrap();
        q.get().unwrap();
        q.task_done().unwrap();
        assert!(matches!(q.task_done(), Err(Error::InvalidState(_))));
        q.join().unwrap();
    }
}

fn simple_echo(args: (SimpleQueue<String>, SimpleQueue<String>)) {
    let (inbox, outbox) = args;
    while let Ok(s) = inbox.get() {
        outbox.put(s.repeat(2)).unwrap();
    }
    outbox.close();
}

#[test]
fn simple_queue_between_processes() {
    for m in METHODS {
        let inbox = SimpleQueue::new().unwrap();
        let outbox = SimpleQueue::new().unwrap();
        assert!(inbox.empty());
        let mut p = Process::new(simple_echo, (inbox.clone(), outbox.clone())).start_method(m);
        p.start().unwrap();
        for word in ["ab", "c", ""] {
            inbox.put(word.to_string()).unwrap();
        }
        inbox.close();
        let mut got = Vec::new();
        while let Ok(s) = outbox.get() {
            got.push(s);
        }
        assert_eq!(got, ["abab", "cc", ""], "{m:?}");
        p.join_timeout(PROMPTLY).unwrap();
        assert!(outbox.empty());
        assert!(matches!(outbox.try_get(), Err(Error::Closed)));
    }
}

#[test]
fn zero_timeouts_and_limits() {
    let q = Queue::<u64>::with_maxsize(2).unwrap();
    assert!(matches!(q.get_timeout(Duration::ZERO), Err(Error::Empty)));
    assert!(matches!(q.try_get(), Err(Error::Empty)));
    q.put(1u64).unwrap();
    q.put_timeout(2u64, Duration::ZERO).unwrap();
    assert!(q.full().unwrap());
    assert_eq!(q.qsize().unwrap(), 2);
    assert!(matches!(q.try_put(3u64), Err(Error::Full)));
    assert!(matches!(
        q.put_timeout(3u64, Duration::ZERO),
        Err(Error::Full)
    ));
    assert!(matches!(
        q.put_timeout(3u64, Duration::from_millis(20)),
        Err(Error::Full)
    ));
    assert_eq!(q.get_timeout(Duration::ZERO).unwrap(), 1);
    assert!(!q.full().unwrap());
    // A message larger than the ring cannot be put without waiting.
    let small = Queue::<Vec<u8>>::with_capacity_bytes(256).unwrap();
    assert_eq!(small.capacity_bytes().unwrap(), 256);
    assert!(matches!(small.try_put(vec![0u8; 1000]), Err(Error::Full)));
    assert!(matches!(
        small.put_timeout(vec![0u8; 1000], Duration::from_millis(20)),
        Err(Error::Full)
    ));
    // What it had written is dropped by the next getter.
    assert!(matches!(small.try_get(), Err(Error::Empty)));
    assert!(small.empty().unwrap());
    assert!(matches!(
        Queue::<u8>::with_capacity_bytes(usize::MAX),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn a_handle_of_the_wrong_type_is_refused() {
    use multiproc::Shareable;
    let q = Queue::<u32>::new().unwrap();
    let bytes = q.encode().unwrap();
    assert!(Queue::<u32>::decode(&bytes).is_ok());
    let err = Queue::<String>::decode(&bytes).unwrap_err();
    assert!(err.to_string().contains("mismatch"), "{err}");
}

#[test]
fn queues_travel_inside_messages() {
    let outer = Queue::<Queue<String>>::new().unwrap();
    let inner = Queue::<String>::new().unwrap();
    outer.put(&inner).unwrap();
    let got = outer.get().unwrap();
    got.put("through".to_string()).unwrap();
    assert_eq!(inner.get().unwrap(), "through");
}

#[test]
fn nothing_is_left_in_dev_shm() {
    let q = Queue::<u8>::new().unwrap();
    q.put(1u8).unwrap();
    drop(q);
    assert!(shm_leaks().is_empty(), "{:?}", shm_leaks());
}

/// Streams one message four times the ring's size into a queue nobody
/// reads; says so first. It blocks mid-stream until killed.
fn stream_into_the_void(args: (Queue<Vec<u8>>, Event)) {
    let (q, streaming) = args;
    let msg = vec![5u8; 256 << 10];
    streaming.set().unwrap();
    let _ = q.put(msg);
}

#[test]
fn a_producer_killed_mid_stream_with_no_consumer_is_not_counted_nor_fills_the_queue() {
    for m in METHODS {
        let q = Queue::<Vec<u8>>::with_maxsize_and_capacity(1, 64 << 10).unwrap();
        let streaming = Event::new().unwrap();
        let mut p =
            Process::new(stream_into_the_void, (q.clone(), streaming.clone())).start_method(m);
        p.start().unwrap();
        assert!(streaming.wait_timeout(PROMPTLY).unwrap());
        let pid = p.pid().unwrap();
        // Asleep in the put: the ring is full of the message's first parts.
        assert!(eventually(PROMPTLY, || util::proc_state(pid)
            .is_some_and(|(state, _)| state == 'S')));
        p.kill().unwrap();
        assert!(p.join_timeout(PROMPTLY).is_err());
        assert_eq!(
            q.qsize().unwrap(),
            0,
            "{m:?}: the dead message is not counted"
        );
        assert!(q.empty().unwrap() && !q.full().unwrap(), "{m:?}");
        // Other producers get room (the limit is one message; the ring is
        // 64 KiB) at once.
        let next = vec![6u8; 60 << 10];
        q.try_put(&next).unwrap();
        assert!(q.get_timeout(PROMPTLY).unwrap() == next, "{m:?}");
        assert_eq!(q.qsize().unwrap(), 0);
    }
}

// ----- CPython's TestSimpleQueue: test_close, test_closed -----

fn close_simple(q: SimpleQueue<u8>) -> bool {
    q.close();
    q.is_closed()
}

#[test]
fn test_simple_queue_close_and_closed() {
    let queue = SimpleQueue::<u8>::new().unwrap();
    assert!(!queue.is_closed());
    queue.put(1).unwrap();
    queue.close();
    // Closing twice does not fail.
    queue.close();
    assert!(queue.is_closed());
    assert!(matches!(queue.put(2), Err(Error::Closed)));
    assert_eq!(queue.get().unwrap(), 1);
    assert!(matches!(queue.get(), Err(Error::Closed)));
    // Unlike Python's, the flag is shared: a close in a child shows here.
    for m in [StartMethod::Spawn, StartMethod::Fork] {
        let q = SimpleQueue::<u8>::new().unwrap();
        let mut p = Process::new(close_simple, q.clone()).start_method(m);
        p.start().unwrap();
        assert!(p.join_timeout(util::PROMPTLY).unwrap());
        assert!(q.is_closed(), "{m:?}");
    }
}

/// Python's `queue.Empty` / `queue.Full` for the non-blocking and the timed
/// call alike, on every queue type (issue 15, bug 4); `Timeout` is never
/// what an empty or full queue says.
#[test]
fn test_queue_empty_and_full_for_every_queue_type_and_call() {
    let short = Duration::from_millis(30);
    let q: Queue<u32> = Queue::with_maxsize(1).unwrap();
    assert!(matches!(q.try_get(), Err(Error::Empty)));
    assert!(matches!(q.get_timeout(short), Err(Error::Empty)));
    q.put(1).unwrap();
    assert!(matches!(q.try_put(2), Err(Error::Full)));
    assert!(matches!(q.put_timeout(2, short), Err(Error::Full)));
    assert_eq!(q.get_timeout(short).unwrap(), 1);

    let j: JoinableQueue<u32> = JoinableQueue::with_maxsize(1).unwrap();
    assert!(matches!(j.try_get(), Err(Error::Empty)));
    assert!(matches!(j.get_timeout(short), Err(Error::Empty)));
    j.put(1).unwrap();
    assert!(matches!(j.try_put(2), Err(Error::Full)));
    assert!(matches!(j.put_timeout(2, short), Err(Error::Full)));

    let s: SimpleQueue<u32> = SimpleQueue::new().unwrap();
    assert!(matches!(s.try_get(), Err(Error::Empty)));
    assert!(matches!(s.get_timeout(short), Err(Error::Empty)));

    let m = multiproc::Manager::start().unwrap();
    let mq = m.queue_with_maxsize::<u32>(1).unwrap();
    assert!(matches!(mq.try_get(), Err(Error::Empty)));
    assert!(matches!(mq.get_timeout(short), Err(Error::Empty)));
    mq.put(1).unwrap();
    assert!(matches!(mq.try_put(2), Err(Error::Full)));
    assert!(matches!(mq.put_timeout(2, short), Err(Error::Full)));
    drop(mq);
    m.shutdown().unwrap();

    let r = multiproc::BaseManager::new().authkey(b"k").start().unwrap();
    let rq = r.queue_with_maxsize::<u32>(1).unwrap();
    assert!(matches!(rq.try_get(), Err(Error::Empty)));
    assert!(matches!(rq.get_timeout(short), Err(Error::Empty)));
    rq.put(1).unwrap();
    assert!(matches!(rq.try_put(2), Err(Error::Full)));
    assert!(matches!(rq.put_timeout(2, short), Err(Error::Full)));
    drop(rq);
    r.shutdown().unwrap();
}

/// Puts a Value, drops it and makes another (whose descriptor takes the
/// dropped one's number), then waits until the parent has read the message.
fn put_then_replace((q, ready, done): (Queue<multiproc::Value<u64>>, Event, Event)) -> u64 {
    let first = multiproc::Value::new(111u64).unwrap();
    q.put(&first).unwrap();
    drop(first);
    let second = multiproc::Value::new(222u64).unwrap();
    ready.set().unwrap();
    done.wait_timeout(Duration::from_secs(120)).unwrap();
    second.get()
}

/// A handle in a message names its sender's descriptor: once the sender has
/// dropped the object, that number can name another object, which the
/// receiver must refuse, not take for the one sent (a Value reading and
/// writing another's memory, a Lock that excludes nothing). Found by an
/// attack battery.
#[test]
fn a_handle_whose_object_its_sender_dropped_is_refused_not_taken_for_another() {
    // Within one process (whose other test threads may take the freed
    // descriptor number first: then it names no segment at all).
    let q: Queue<multiproc::Value<u64>> = Queue::new().unwrap();
    let first = multiproc::Value::new(111u64).unwrap();
    q.put(&first).unwrap();
    drop(first);
    let second = multiproc::Value::new(222u64).unwrap();
    match q.get() {
        Err(Error::Codec(_)) => {}
        Ok(v) => panic!("took another object for the one sent: it holds {}", v.get()),
        Err(e) => panic!("{e:?}"),
    }
    assert_eq!(second.get(), 222);
    let locks: Queue<multiproc::Lock> = Queue::new().unwrap();
    let first = multiproc::Lock::new().unwrap();
    locks.put(&first).unwrap();
    drop(first);
    let _second = multiproc::Lock::new().unwrap();
    assert!(matches!(locks.get(), Err(Error::Codec(_))));
    // From another process, which still runs: one thread, so the new
    // Value's descriptor surely takes the dropped one's number.
    for m in METHODS {
        let (q, ready, done) = (
            Queue::new().unwrap(),
            Event::new().unwrap(),
            Event::new().unwrap(),
        );
        let mut p = Process::new(put_then_replace, (q.clone(), ready.clone(), done.clone()))
            .start_method(m);
        p.start().unwrap();
        assert!(ready.wait_timeout(Duration::from_secs(120)).unwrap());
        match q.get_timeout(Duration::from_secs(120)) {
            Err(e @ Error::Codec(_)) => assert!(e.to_string().contains("is gone"), "{m:?}: {e}"),
            Ok(v) => panic!("{m:?}: took another object for the one sent: {}", v.get()),
            Err(e) => panic!("{m:?}: {e:?}"),
        }
        done.set().unwrap();
        assert_eq!(
            p.join().unwrap(),
            222,
            "{m:?}: the other object is untouched"
        );
    }
}

/// In a child at its memory limit: the first get of a message it has no
/// room for, then the length of what a get brings once the limit is lifted.
fn get_at_the_memory_limit(q: Queue<Vec<u8>>) -> (String, usize) {
    util::limit_memory(Some(8 << 20));
    let first = q.get_timeout(PROMPTLY).map(|m| m.len());
    util::limit_memory(None);
    let second = q.get_timeout(PROMPTLY).map_or(0, |m| m.len());
    (format!("{first:?}"), second)
}

/// A consumer with no memory for the next message gets `Io(OutOfMemory)`
/// and the message stays in the queue for the next get: it aborted (the
/// buffer's growth failed after the message was marked taken), and the
/// message was gone for every consumer. From an attack battery.
#[test]
fn a_consumer_at_its_memory_limit_is_told_and_the_message_stays() {
    for m in METHODS {
        let q: Queue<Vec<u8>> = Queue::new().unwrap();
        let mut child = Process::new(get_at_the_memory_limit, q.clone()).start_method(m);
        child.start().unwrap();
        // Larger than the ring: the put ends once the child took it all.
        q.put_timeout(vec![3u8; 48 << 20], PROMPTLY).unwrap();
        let (first, len) = child.join_timeout(PROMPTLY).unwrap();
        assert!(first.contains("OutOfMemory"), "{m:?}: {first}");
        assert_eq!(len, 48 << 20, "{m:?}");
    }
}

/// `join_timeout(ZERO)` with a task unfinished is `Timeout`, as its docs
/// say (it was `WouldBlock`, `try_join`'s answer), on a local queue and on
/// a manager's. From a port of CPython's tests.
#[test]
fn a_zero_join_timeout_is_a_timeout() {
    let manager = multiproc::Manager::start().unwrap();
    for q in [
        multiproc::JoinableQueue::<u8>::new().unwrap(),
        manager.joinable_queue::<u8>().unwrap(),
    ] {
        q.put(1).unwrap();
        assert!(matches!(q.try_join(), Err(multiproc::Error::WouldBlock)));
        let zero = q.join_timeout(Duration::ZERO);
        assert!(
            matches!(zero, Err(multiproc::Error::Timeout(_))),
            "{zero:?}"
        );
        assert_eq!(q.get().unwrap(), 1);
        q.task_done().unwrap();
        q.join_timeout(Duration::ZERO).unwrap();
    }
    manager.shutdown().unwrap();
}
