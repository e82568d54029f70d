//! Load: eight processes hammer one manager dict and one queue for
//! `SOAK_SECS` seconds (default 3, the CI smoke run). Counts are exact,
//! every message is delivered exactly once and in order per producer, the
//! server's memory stays flat, and nothing is left behind.

mod util;

use std::time::{Duration, Instant};

use multiproc::{DictProxy, Error, Manager, Process, Queue, RawValue, StartMethod};
use util::PROMPTLY;
use util::chaos::Snapshot;

multiproc::init_before_main!();

const WORKERS: usize = 8;
const KEYS: u32 = 16;

type Msg = (u32, u64, Vec<u8>);

/// What one worker did: dict increments, puts, and per producer the count
/// and sum of the sequence numbers it got.
type Tally = (u64, u64, Vec<(u64, u64)>);

fn take(got: &mut [(u64, u64)], last: &mut [Option<u64>], (who, seq, pad): Msg) {
    let who = who as usize;
    assert_eq!(pad.len(), 48 + (seq % 64) as usize, "corrupt message");
    assert!(
        last[who].is_none_or(|l| l < seq),
        "producer {who}: {seq} after {:?}",
        last[who]
    );
    last[who] = Some(seq);
    got[who].0 += 1;
    got[who].1 += seq;
}

/// A worker's id, the dict, the queue, the stop flag and the round counter.
type Args = (
    u32,
    DictProxy<u32, u64>,
    Queue<Msg>,
    RawValue<u32>,
    RawValue<u64>,
);

fn hammer(args: Args) -> Tally {
    let (me, d, q, stop, ops) = args;
    let mut got = vec![(0, 0); WORKERS];
    let mut last = vec![None; WORKERS];
    let (mut incs, mut puts) = (0, 0);
    let mut i = 0u32;
    while stop.load() == 0 {
        d.update_with((me + i) % KEYS, 0, |n| n + 1).unwrap();
        incs += 1;
        q.put_timeout(
            (me, puts, vec![me as u8; 48 + (puts % 64) as usize]),
            PROMPTLY,
        )
        .unwrap();
        puts += 1;
        match q.try_get() {
            Ok(msg) => take(&mut got, &mut last, msg),
            Err(Error::Empty) => {}
            Err(e) => panic!("{e}"),
        }
        ops.fetch_add(1);
        i = i.wrapping_add(1);
    }
    (incs, puts, got)
}

fn vm_rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

#[test]
fn eight_processes_hammer_a_dict_and_a_queue() {
    let secs: f64 = std::env::var("SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let before = Snapshot::take();
    {
        let manager = Manager::start_with(StartMethod::Spawn).unwrap();
        let d = manager.dict::<u32, u64>().unwrap();
        let q = Queue::<Msg>::new().unwrap();
        let stop = RawValue::new(0u32).unwrap();
        let ops = RawValue::new(0u64).unwrap();
        let mut workers: Vec<_> = (0..WORKERS as u32)
            .map(|me| {
                let method = if me % 2 == 0 {
                    StartMethod::Spawn
                } else {
                    StartMethod::Fork
                };
                let arg = (me, d.clone(), q.clone(), stop.clone(), ops.clone());
                let mut p = Process::new(hammer, arg).start_method(method);
                p.start().unwrap();
                p
            })
            .collect();
        // Warm up (every worker connected, the dict has all its keys), then measure.
        assert!(util::eventually(PROMPTLY, || ops.load() >= 2_000));
        let rss_before = vm_rss_kib(manager.pid());
        let ops_before = ops.load();
        let started = Instant::now();
        std::thread::sleep(Duration::from_secs_f64(secs));
        let rss_after = vm_rss_kib(manager.pid());
        stop.store(1);
        let elapsed = started.elapsed();
        let tallies: Vec<Tally> = workers
            .iter_mut()
            .map(|p| p.join_timeout(PROMPTLY).expect("worker"))
            .collect();
        let ops_done = ops.load() - ops_before;
        println!(
            "soak: {ops_done} rounds in {elapsed:?} after warm-up; server VmRSS {rss_before} KiB -> {rss_after} KiB"
        );
        // The dict: every increment that returned is there, once.
        let incs: u64 = tallies.iter().map(|t| t.0).sum();
        let total: u64 = (0..KEYS).map(|k| d.get(&k).unwrap().unwrap_or(0)).sum();
        assert_eq!(total, incs, "dict increments lost or doubled");
        // The queue: what workers got plus what is left is each producer's
        // 0..puts exactly once.
        let mut got = vec![(0u64, 0u64); WORKERS];
        for t in &tallies {
            for (w, (n, sum)) in t.2.iter().enumerate() {
                got[w].0 += n;
                got[w].1 += sum;
            }
        }
        let mut last = vec![None; WORKERS];
        while let Ok(msg) = q.try_get() {
            take(&mut got, &mut last, msg);
        }
        for (w, t) in tallies.iter().enumerate() {
            let puts = t.1;
            let want = (puts, puts.saturating_sub(1) * puts / 2);
            assert_eq!(got[w], want, "producer {w}: (count, sum of seqs)");
        }
        assert_eq!(q.qsize().unwrap(), 0);
        // Flat memory: a generous margin over the warmed-up size.
        assert!(
            rss_after <= rss_before + rss_before / 2 + 8 * 1024,
            "the server grew from {rss_before} KiB to {rss_after} KiB"
        );
        drop(d);
        manager.shutdown().unwrap();
    }
    before.assert_no_leaks(1);
}
