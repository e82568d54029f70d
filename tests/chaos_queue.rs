//! Chaos for queues: a producer is SIGKILLed at a random instant of its
//! puts (often mid-way through streaming a message larger than the ring), or
//! a consumer at a random instant of its gets. Every put that returned is
//! delivered exactly once, in order; only the message the dead process was
//! in the middle of may be missing; nobody hangs; nothing is left behind.
//!
//! `CHAOS_ITERATIONS` (default 3) runs of each scenario under each start
//! method; `CHAOS_SEED` replays a run (each iteration prints its seed).

mod util;

use std::thread;
use std::time::Duration;

use multiproc::{Error, Process, Queue, RawArray, RawValue, Shareable, StartMethod};
use util::PROMPTLY;
use util::chaos::{self, Rng, Snapshot};

multiproc::init_before_main!();

const METHODS: [StartMethod; 2] = [StartMethod::Spawn, StartMethod::Fork];
const MAX_DELAY_US: u64 = 30_000;
/// Small enough that the large messages are streamed through it.
const RING: usize = 64 << 10;

type Msg = (u32, Vec<u8>);

/// The size of message `seq` of a run: mostly small, some larger than the ring.
fn size_of(seed: u64, seq: u32) -> usize {
    let mut rng = Rng::new(seed ^ u64::from(seq).wrapping_mul(0x9e37_79b9));
    match rng.below(10) {
        0 => (RING * 3) + rng.below(RING as u64) as usize,
        1..=2 => RING / 2 + rng.below(RING as u64 / 2) as usize,
        _ => rng.below(200) as usize,
    }
}

fn message(seed: u64, seq: u32) -> Msg {
    (seq, vec![seq as u8 ^ 0x5a; size_of(seed, seq)])
}

fn check(seed: u64, (seq, data): &Msg) {
    assert_eq!(
        data.len(),
        size_of(seed, *seq),
        "message {seq}: wrong length"
    );
    assert!(
        data.iter().all(|&b| b == *seq as u8 ^ 0x5a),
        "message {seq}: corrupt"
    );
}

fn start<A: Shareable, R: Shareable>(m: StartMethod, f: fn(A) -> R, arg: A) -> Process<R> {
    let mut p = Process::new(f, arg).start_method(m);
    p.start().expect("start");
    p
}

fn assert_killed<R: Shareable>(p: &mut Process<R>) {
    assert!(
        matches!(
            p.join_timeout(PROMPTLY),
            Err(Error::ChildFailed {
                signal: Some(9),
                ..
            })
        ),
        "the victim was not killed"
    );
}

// ---------------------------------------------------------------- producer killed

/// Puts messages for ever, storing in `done` how many puts returned.
fn produce((q, done, seed): (Queue<Msg>, RawValue<u64>, u64)) {
    for seq in 0u32.. {
        q.put(message(seed, seq)).unwrap();
        done.store(u64::from(seq) + 1);
    }
}

fn producer_scenario(m: StartMethod, rng: &mut Rng) {
    let seed = rng.next_u64();
    let q = Queue::<Msg>::with_capacity_bytes(RING).unwrap();
    let done = RawValue::new(0u64).unwrap();
    let mut victim = start(m, produce, (q.clone(), done.clone(), seed));
    let pid = victim.pid().unwrap();
    let delay = rng.delay(MAX_DELAY_US);
    let killer = thread::spawn({
        let done = done.clone();
        move || {
            assert!(util::eventually(PROMPTLY, || done.load() > 0));
            thread::sleep(delay);
            chaos::sigkill(pid);
        }
    });
    // Consume while it produces (the large messages need a reader to finish).
    let mut got: Vec<u32> = Vec::new();
    loop {
        match q.get_timeout(Duration::from_millis(200)) {
            Ok(msg) => {
                check(seed, &msg);
                got.push(msg.0);
            }
            Err(Error::Empty) if killer.is_finished() => break,
            Err(Error::Empty) => {}
            Err(e) => panic!("{m:?}: {e}"),
        }
    }
    killer.join().unwrap();
    assert_killed(&mut victim);
    // Whatever is still there after the death arrives too.
    while let Ok(msg) = q.get_timeout(Duration::from_millis(200)) {
        check(seed, &msg);
        got.push(msg.0);
    }
    let completed = done.load();
    let n = got.len() as u64;
    assert!(
        n == completed || n == completed + 1,
        "{m:?}: {n} delivered, {completed} puts returned"
    );
    assert!(
        got.iter().enumerate().all(|(i, &s)| s as usize == i),
        "{m:?}: out of order or duplicated: {got:?}"
    );
    assert_eq!(q.qsize().unwrap(), 0, "{m:?}");
    // The queue still works for everyone else, large messages included.
    for seq in [7u32, 8] {
        let big = (seq, vec![1u8; RING * 2]);
        let q2 = q.clone();
        let put = thread::spawn(move || q2.put_timeout(big, PROMPTLY).unwrap());
        assert_eq!(q.get_timeout(PROMPTLY).unwrap().0, seq);
        put.join().unwrap();
    }
}

// ---------------------------------------------------------------- consumer killed

/// Takes messages for ever, marking each one it got in `seen`.
fn consume((q, seen, ready, seed): (Queue<Msg>, RawArray<u8>, RawValue<u32>, u64)) {
    loop {
        let msg = q.get().unwrap();
        check(seed, &msg);
        seen.set(msg.0 as usize, seen.get(msg.0 as usize).unwrap() + 1)
            .unwrap();
        ready.store(1);
    }
}

const MESSAGES: u32 = 120;

fn consumer_scenario(m: StartMethod, rng: &mut Rng) {
    let seed = rng.next_u64();
    let q = Queue::<Msg>::with_capacity_bytes(RING).unwrap();
    let seen = RawArray::from_elem(0u8, MESSAGES as usize).unwrap();
    let ready = RawValue::new(0u32).unwrap();
    let mut victim = start(m, consume, (q.clone(), seen.clone(), ready.clone(), seed));
    let producer = thread::spawn({
        let q = q.clone();
        move || {
            for seq in 0..MESSAGES {
                q.put_timeout(message(seed, seq), PROMPTLY * 2).unwrap();
            }
        }
    });
    assert!(util::eventually(PROMPTLY, || ready.load() != 0));
    thread::sleep(rng.delay(MAX_DELAY_US));
    victim.kill().unwrap();
    assert_killed(&mut victim);
    // This process takes over as the consumer.
    let mut drained = vec![0u8; MESSAGES as usize];
    loop {
        match q.get_timeout(Duration::from_millis(200)) {
            Ok(msg) => {
                check(seed, &msg);
                drained[msg.0 as usize] += 1;
            }
            Err(Error::Empty) if producer.is_finished() => break,
            Err(Error::Empty) => {}
            Err(e) => panic!("{m:?}: {e}"),
        }
    }
    producer.join().unwrap();
    let seen = seen.to_vec();
    let counts: Vec<u8> = seen.iter().zip(&drained).map(|(a, b)| a + b).collect();
    assert!(
        counts.iter().all(|&c| c <= 1),
        "{m:?}: delivered twice: {counts:?}"
    );
    let lost: Vec<usize> = (0..counts.len()).filter(|&i| counts[i] == 0).collect();
    assert!(
        lost.len() <= 1,
        "{m:?}: more than the victim's one in-flight message lost: {lost:?}"
    );
    // The lost one, if any, is the victim's: the last it was taking.
    if let Some(&i) = lost.first() {
        let last_seen = seen.iter().rposition(|&c| c == 1);
        assert!(
            last_seen.is_none_or(|l| l < i),
            "{m:?}: {i} lost mid-stream"
        );
        assert!(
            drained[..i].iter().all(|&c| c == 0),
            "{m:?}: lost {i} after drained ones"
        );
    }
    assert_eq!(q.qsize().unwrap(), 0, "{m:?}");
}

// ---------------------------------------------------------------- the run

#[test]
fn queues_survive_random_kills_and_leave_nothing() {
    let base = chaos::base_seed();
    let n = chaos::iterations(3);
    let before = Snapshot::take();
    for m in METHODS {
        chaos::repeat(&format!("producer/{m:?}"), base, n, |rng, _| {
            producer_scenario(m, rng)
        });
        chaos::repeat(&format!("consumer/{m:?}"), base, n, |rng, _| {
            consumer_scenario(m, rng)
        });
    }
    before.assert_no_leaks(1);
}
