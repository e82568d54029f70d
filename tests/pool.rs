//! Process pools under both start methods: results, errors, crashes, lifecycle.

mod util;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use multiproc::{Callbacks, Error, Pool, Process, StartMethod};
use util::PROMPTLY;

multiproc::init_before_main!();

const METHODS: [StartMethod; 2] = [StartMethod::Spawn, StartMethod::Fork];

fn pool(m: StartMethod, n: usize) -> Pool {
    Pool::builder()
        .processes(n)
        .start_method(m)
        .build()
        .unwrap()
}

fn square(x: u64) -> u64 {
    x * x
}

fn add(a: u64, b: u64) -> u64 {
    a + b
}

fn panics_on_3(x: u64) -> u64 {
    assert!(x != 3, "three is not allowed");
    x
}

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn my_pid(_: u64) -> i32 {
    multiproc::current_process().pid
}

/// Kills its own worker when it sees the marker, after the others ran.
fn die_on_marker(x: u64) -> u64 {
    if x == u64::MAX {
        // SAFETY: kill(2) on our own pid.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
    x
}

#[test]
fn map_family_over_10k_items() {
    for m in METHODS {
        let p = pool(m, 2);
        let expected: Vec<u64> = (0..10_000).map(|x| x * x).collect();
        assert_eq!(p.map(square, 0..10_000).unwrap(), expected, "{m:?}");
        assert_eq!(
            p.chunksize(1).map(square, 0..2_000).unwrap(),
            expected[..2_000].to_vec()
        );
        let pairs: Vec<(u64, u64)> = (0..10_000).map(|x| (x, x)).collect();
        assert_eq!(
            p.starmap(add, pairs).unwrap(),
            (0..10_000).map(|x| 2 * x).collect::<Vec<u64>>()
        );
        let ordered: Vec<u64> = p
            .chunksize(50)
            .imap(square, 0..10_000u64)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(ordered, expected);
        let mut unordered: Vec<u64> = p
            .chunksize(50)
            .imap_unordered(square, 0..10_000u64)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        unordered.sort();
        assert_eq!(unordered, expected);
        assert!(p.map(square, Vec::<u64>::new()).unwrap().is_empty());
        let first: Vec<u64> = p
            .chunksize(3)
            .imap(square, 0u64..)
            .unwrap()
            .take(50)
            .map(Result::unwrap)
            .collect();
        assert_eq!(first, expected[..50].to_vec());
        p.close();
        p.join().unwrap();
    }
}

#[test]
fn apply_async_callbacks_and_errors() {
    for m in METHODS {
        let p = pool(m, 2);
        let total = Arc::new(AtomicU64::new(0));
        let results: Vec<_> = (0..20u64)
            .map(|i| {
                let t = total.clone();
                p.apply_async_with(
                    square,
                    i,
                    Callbacks::new().callback(move |r: &u64| {
                        t.fetch_add(*r, Ordering::SeqCst);
                    }),
                )
                .unwrap()
            })
            .collect();
        let got: Vec<u64> = results.into_iter().map(|r| r.get().unwrap()).collect();
        assert_eq!(got, (0..20).map(|x| x * x).collect::<Vec<_>>());
        assert_eq!(
            total.load(Ordering::SeqCst),
            (0..20).map(|x| x * x).sum::<u64>()
        );

        let message = Arc::new(util::TextSlot::default());
        let m2 = message.clone();
        let r = p
            .apply_async_with(
                panics_on_3,
                3,
                Callbacks::new().error_callback(move |e| m2.set(e.to_string())),
            )
            .unwrap();
        match r.get() {
            Err(Error::Remote(msg)) => {
                assert!(msg.contains("three is not allowed"), "{msg}");
                // Issue #15: where it panicked, as Python's RemoteTraceback says.
                assert!(
                    msg.contains("tests/pool.rs:"),
                    "{m:?}: no location in {msg}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(message.get().contains("three is not allowed"));
        assert!(matches!(
            p.chunksize(2).map(panics_on_3, 0..10),
            Err(Error::Remote(_))
        ));
        assert_eq!(p.apply(square, 5).unwrap(), 25, "the worker stays usable");

        let slow = p.apply_async(sleep_ms, 2_000).unwrap();
        assert!(matches!(
            slow.get_timeout(Duration::from_millis(50)),
            Err(Error::Timeout(_))
        ));
        // Both workers busy for seconds: what comes after waits its turn.
        let slow2 = p.apply_async(sleep_ms, 2_000).unwrap();
        let queued = p.apply_async(sleep_ms, 1).unwrap();
        let listed = p.imap(square, 0..1_000_000u64).unwrap();
        p.terminate();
        // Unfinished work fails with Closed, as documented, running or queued.
        assert!(matches!(slow.get(), Err(Error::Closed)), "{m:?}");
        assert!(matches!(slow2.get(), Err(Error::Closed)), "{m:?}");
        assert!(matches!(queued.get(), Err(Error::Closed)), "{m:?}");
        let last = listed.last();
        assert!(matches!(last, Some(Err(Error::Closed))), "{m:?}: {last:?}");
    }
}

#[test]
fn a_killed_worker_fails_its_tasks_and_is_replaced() {
    for m in METHODS {
        let p = pool(m, 2);
        let before = p.worker_pids();
        let mut items: Vec<u64> = (0..200).collect();
        items.push(u64::MAX);
        let started = std::time::Instant::now();
        match p.chunksize(1).map(die_on_marker, items) {
            Err(Error::WorkerDied {
                signal: Some(9),
                pid,
                ..
            }) => assert!(before.contains(&pid)),
            other => panic!("{m:?}: {other:?}"),
        }
        assert!(started.elapsed() < PROMPTLY);
        // The pool carries on with a replacement.
        assert_eq!(p.map(square, 0..100).unwrap().len(), 100);
        assert!(util::eventually(PROMPTLY, || p.worker_pids().len() == 2));
        assert_ne!(p.worker_pids(), before);
    }
}

#[test]
fn maxtasksperchild_replaces_workers_and_initializer_runs_once_each() {
    fn init(counter: multiproc::RawValue<u64>) {
        counter.fetch_add(1);
    }
    for m in METHODS {
        let inits = multiproc::RawValue::new(0u64).unwrap();
        let p = Pool::builder()
            .processes(2)
            .start_method(m)
            .maxtasksperchild(2)
            .initializer(init, inits.clone())
            .build()
            .unwrap();
        let pids = p.chunksize(1).map(my_pid, 0..20).unwrap();
        let mut distinct = pids.clone();
        distinct.sort();
        distinct.dedup();
        assert!(
            distinct.len() >= 10,
            "{m:?}: pids did not change: {distinct:?}"
        );
        p.close();
        p.join().unwrap();
        assert!(
            inits.load() >= distinct.len() as u64,
            "one initializer run per worker"
        );
    }
}

#[test]
fn bad_input_is_a_clear_error() {
    assert!(matches!(Pool::new(0), Err(Error::InvalidArgument(_))));
    assert!(matches!(
        Pool::builder().processes(1).maxtasksperchild(0).build(),
        Err(Error::InvalidArgument(_))
    ));
    let p = Pool::new(1).unwrap();
    assert!(matches!(
        p.chunksize(0).map(square, 0..3),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(p.join(), Err(Error::InvalidState(_))));
    p.close();
    assert!(matches!(p.apply(square, 1), Err(Error::InvalidState(_))));
    p.join().unwrap();

    fn bad_init(_: u8) {
        panic!("initializer refuses")
    }
    let p = Pool::builder()
        .processes(2)
        .initializer(bad_init, 0u8)
        .build()
        .unwrap();
    match p.map(square, 0..10) {
        Err(Error::Remote(msg)) => assert!(msg.contains("initializer refuses"), "{msg}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn dropping_a_pool_reaps_every_worker() {
    let p = pool(StartMethod::Fork, 3);
    let pids = p.worker_pids();
    assert_eq!(pids.len(), 3);
    drop(p);
    for pid in pids {
        util::assert_not_our_zombie(pid);
        assert!(util::is_gone(pid));
    }
}

/// A result type that refuses to be encoded.
struct Unencodable;

impl multiproc::handle::ShareHandle for Unencodable {
    fn to_repr(&self) -> multiproc::Result<multiproc::handle::HandleRepr> {
        Err(Error::InvalidArgument(
            "this result refuses to be encoded".into(),
        ))
    }
    fn from_repr(_: &multiproc::handle::HandleRepr) -> multiproc::Result<Self> {
        Ok(Unencodable)
    }
}
multiproc::impl_share_handle!(impl<> for Unencodable);

fn make_unencodable(_: u8) -> Unencodable {
    Unencodable
}

#[test]
fn an_unencodable_result_is_an_error_not_a_hang() {
    for m in METHODS {
        let p = pool(m, 1);
        let r = p.apply_async(make_unencodable, 1).unwrap();
        match r.get_timeout(PROMPTLY) {
            Err(Error::Remote(msg)) => assert!(msg.contains("refuses to be encoded"), "{msg}"),
            Err(other) => panic!("{m:?}: {other:?}"),
            Ok(_) => panic!("{m:?}: an unencodable result arrived"),
        }
        assert_eq!(p.apply(square, 4).unwrap(), 16);
    }
}

/// Regression: dropping a partly read `imap` after all its submitted items had
/// arrived left the job registered forever, so `join` after `close` hung.
#[test]
fn join_after_a_dropped_imap_does_not_hang() {
    for m in METHODS {
        for _ in 0..10 {
            let p = pool(m, 2);
            let mut results = p.chunksize(1).imap(square, 0u64..).unwrap();
            let first: Vec<u64> = results.by_ref().take(3).map(Result::unwrap).collect();
            assert_eq!(first, vec![0, 1, 4]);
            // Not synchronisation: give the submitted items time to arrive,
            // which is the case that used to hang.
            std::thread::sleep(Duration::from_millis(50));
            drop(results);
            p.close();
            let (tx, rx) = std::sync::mpsc::channel();
            let joiner = std::thread::spawn(move || {
                let r = p.join();
                let _ = tx.send(());
                r
            });
            assert!(
                rx.recv_timeout(PROMPTLY).is_ok(),
                "{m:?}: join hung after a dropped imap"
            );
            joiner.join().unwrap().unwrap();
        }
    }
}

/// An input that yields `0`, then waits for a word on `go` before each
/// next item (`1`, `2`, ...); it ends when `go` is closed.
fn gated_input(go: std::sync::mpsc::Receiver<()>) -> impl Iterator<Item = u64> + Send {
    let mut next = 0u64;
    std::iter::from_fn(move || {
        if next > 0 {
            go.recv().ok()?;
        }
        next += 1;
        Some(next - 1)
    })
}

/// An `imap` input is pulled on a thread of its own: while it waits (a slow
/// or blocked source), the results already pulled arrive, its iterator's
/// timeouts hold, and the pool's other work, `close` + `join_timeout` and
/// `terminate` go on. The input ran on the pool's result handler under
/// the pool's lock: a source that waited stalled the whole pool, and no
/// deadline held. From an attack battery.
#[test]
fn a_waiting_imap_input_stalls_nothing_else() {
    for m in METHODS {
        let p = pool(m, 2);
        let (go, gate) = std::sync::mpsc::channel();
        let mut results = p.imap(square, gated_input(gate)).unwrap();
        // Its first result comes while the input waits for the second item.
        assert_eq!(results.next_timeout(PROMPTLY).unwrap().unwrap().unwrap(), 0);
        assert!(matches!(
            results.next_timeout(Duration::from_millis(100)),
            Err(Error::Timeout(_))
        ));
        // Other work goes on meanwhile.
        assert_eq!(
            p.apply_async(square, 7)
                .unwrap()
                .get_timeout(PROMPTLY)
                .unwrap(),
            49
        );
        assert_eq!(p.map(square, 0..100).unwrap().len(), 100);
        go.send(()).unwrap();
        assert_eq!(results.next_timeout(PROMPTLY).unwrap().unwrap().unwrap(), 1);
        // Closed while the input still waits: join_timeout gives up on
        // the unfinished job, terminate ends the pool.
        p.close();
        assert!(matches!(
            p.join_timeout(Duration::from_millis(200)),
            Err(Error::Timeout(_))
        ));
        let started = std::time::Instant::now();
        p.terminate();
        assert!(started.elapsed() < PROMPTLY, "{m:?}");
        assert!(
            results
                .next_timeout(PROMPTLY)
                .unwrap()
                .is_none_or(|r| r.is_err())
        );
        // The input thread, still waiting in the source, ends with it.
        drop(go);
    }
}

/// Sleeps `ms` milliseconds and says which worker ran it.
/// A worker killed while its pool has nothing to do (its result handler
/// then looks at the workers only every second) is still replaced, and
/// the pool goes on working with the replacement.
#[test]
fn a_worker_killed_while_the_pool_idles_is_replaced() {
    for m in METHODS {
        let p = pool(m, 2);
        assert_eq!(p.map(square, 0..10).unwrap().len(), 10);
        let before = p.worker_pids();
        let victim = before[0];
        // SAFETY: kill sends a signal to a pid; this pool's worker is our child.
        assert_eq!(unsafe { libc::kill(victim, libc::SIGKILL) }, 0);
        assert!(
            util::eventually(PROMPTLY, || {
                let now = p.worker_pids();
                now.len() == 2 && !now.contains(&victim)
            }),
            "{m:?}: the dead worker was not replaced"
        );
        let squares = p.chunksize(1).map(square, 0..200).unwrap();
        assert_eq!(squares, (0..200).map(square).collect::<Vec<_>>(), "{m:?}");
    }
}

/// A worker that dies with chunks queued for it fails only what it took:
/// the chunks it never took run on its replacement (as in Python, where a
/// task left in the pool's queue goes to another worker). Here the worker is
/// stopped, so it takes none of the eight, then killed. From an attack
/// battery: two idle workers killed under load failed tasks submitted after
/// their deaths, which the pool had sent before it could see them.
#[test]
fn chunks_a_dead_worker_never_took_run_on_another() {
    for m in METHODS {
        let p = Pool::builder()
            .processes(1)
            .prefetch(8)
            .start_method(m)
            .build()
            .unwrap();
        let victim = p.apply(my_pid, 0).unwrap();
        // SAFETY: sends signals to this pool's worker, our child.
        assert_eq!(unsafe { libc::kill(victim, libc::SIGSTOP) }, 0);
        // Submitting sends them (up to the prefetch of 8) before it returns.
        let squares = p.chunksize(1).map_async(square, 0..8u64).unwrap();
        // SAFETY: as above.
        assert_eq!(unsafe { libc::kill(victim, libc::SIGKILL) }, 0);
        let got = squares.get_timeout(PROMPTLY);
        assert_eq!(
            got.unwrap(),
            (0..8).map(square).collect::<Vec<_>>(),
            "{m:?}"
        );
        let pids = p.chunksize(1).map(my_pid, 0..4u64).unwrap();
        assert!(!pids.contains(&victim), "{m:?}");
    }
}

fn sleep_on(ms: u64) -> (u64, i32) {
    std::thread::sleep(Duration::from_millis(ms));
    (ms, multiproc::current_process().pid)
}

/// Issue #17: with one long task and short ones in `Pool(2)`, the idle worker
/// takes every short task; none waits behind the long one.
#[test]
fn an_idle_worker_takes_the_next_task() {
    for m in METHODS {
        let p = pool(m, 2);
        let started = std::time::Instant::now();
        let done = p.map(sleep_on, [2_000, 100, 100, 100, 100]).unwrap();
        let elapsed = started.elapsed();
        let long_pid = done[0].1;
        for &(ms, pid) in &done[1..] {
            assert_ne!(
                pid, long_pid,
                "{m:?}: a {ms} ms task waited behind the long one"
            );
        }
        // Generous: the long task alone takes 2 s; today's order took 2.2 s.
        assert!(elapsed < Duration::from_secs(4), "{m:?}: {elapsed:?}");

        // The same with the long task submitted on its own first.
        let long = p.apply_async(sleep_on, 1_500).unwrap();
        let short = p.chunksize(1).map(sleep_on, [50; 6]).unwrap();
        let long_pid = long.get().unwrap().1;
        assert!(short.iter().all(|&(_, pid)| pid != long_pid), "{m:?}");
    }
}

/// Issue #14: `map` encodes its input as workers take it; the chunks the
/// parent holds stay bounded whatever the input's length.
#[test]
fn map_holds_a_bounded_number_of_chunks() {
    const N: u64 = 200_000;
    let p = pool(StartMethod::Fork, 2);
    let out = p.chunksize(1).map(square, 0..N).unwrap();
    assert_eq!(out.len(), N as usize);
    assert!(
        out.iter()
            .enumerate()
            .all(|(i, &v)| v == (i as u64) * (i as u64))
    );
    let peak = p.chunks_held_peak();
    assert!((1..=2 * 64 + 1).contains(&peak), "peak {peak}");

    let got: u64 = p
        .chunksize(1)
        .imap(square, 0..N)
        .unwrap()
        .map(Result::unwrap)
        .fold(0, u64::wrapping_add);
    assert_eq!(got, (0..N).map(|x| x * x).fold(0, u64::wrapping_add));
    let peak = p.chunks_held_peak();
    assert!(peak <= 2 * 64 + 1, "peak {peak}");

    let p = Pool::builder()
        .processes(2)
        .start_method(StartMethod::Fork)
        .prefetch(1)
        .build()
        .unwrap();
    assert_eq!(p.chunksize(1).map(square, 0..5_000).unwrap().len(), 5_000);
    let peak = p.chunks_held_peak();
    assert!(peak <= 3, "prefetch(1): peak {peak}");
    assert!(matches!(
        Pool::builder().processes(1).prefetch(0).build(),
        Err(Error::InvalidArgument(_))
    ));
}

/// `chunks_per_message(1)`: every chunk travels, and is reported, in a
/// message of its own; results are still complete and in order, errors
/// still the first by index, and `0` is refused.
#[test]
fn one_chunk_per_message_keeps_results_complete_and_ordered() {
    for m in METHODS {
        let p = Pool::builder()
            .processes(2)
            .start_method(m)
            .chunks_per_message(1)
            .build()
            .unwrap();
        let want: Vec<u64> = (0..3_000).map(|x| x * x).collect();
        assert_eq!(p.chunksize(1).map(square, 0..3_000).unwrap(), want, "{m:?}");
        assert_eq!(p.chunksize(7).map(square, 0..3_000).unwrap(), want, "{m:?}");
        assert_eq!(p.map(square, 0..3_000).unwrap(), want, "{m:?}");
        let lazy: Vec<u64> = p
            .chunksize(1)
            .imap(square, 0..500u64)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(lazy, want[..500], "{m:?}");
        let sums = p.chunksize(1).starmap(add, (0..100u64).map(|x| (x, x)));
        assert_eq!(sums.unwrap(), (0..100).map(|x| 2 * x).collect::<Vec<u64>>());
        match p.chunksize(1).map(panics_on_3, (0..10).rev().chain(3..4)) {
            Err(Error::Remote(msg)) => assert!(msg.contains("three"), "{msg}"),
            other => panic!("{m:?}: {other:?}"),
        }
        assert_eq!(p.apply(square, 9).unwrap(), 81, "{m:?}");
    }
    let b = Pool::builder().processes(1).chunks_per_message(1);
    assert!(format!("{b:?}").contains("chunks_per_message: Some(1)"));
    assert!(matches!(
        Pool::builder().processes(1).chunks_per_message(0).build(),
        Err(Error::InvalidArgument(_))
    ));
}

/// A map's errors: the lowest-index failure wins, once every item is done.
#[test]
fn map_reports_its_first_failure_by_index() {
    for m in METHODS {
        let p = pool(m, 2);
        match p.chunksize(1).map(panics_on_3, (0..10).rev().chain(3..4)) {
            Err(Error::Remote(msg)) => assert!(msg.contains("three"), "{msg}"),
            other => panic!("{m:?}: {other:?}"),
        }
        assert_eq!(p.chunksize(1).map(square, 0..3).unwrap(), vec![0, 1, 4]);
    }
}

/// Issue #17 item 8: chunk sizes through `chunksize(n)`, `AsyncResult`'s three
/// forms on `&self`, `starmap_async_with`, and `Debug` on the pool's types.
#[test]
fn api_chunksize_try_get_starmap_callbacks_and_debug() {
    let p = pool(StartMethod::Fork, 2);
    assert_eq!(p.chunksize(3).map(square, 0..10).unwrap().len(), 10);
    assert!(matches!(
        p.chunksize(0).map(square, 0..3),
        Err(Error::InvalidArgument(_))
    ));
    let by_three: Vec<u64> = p
        .chunksize(3)
        .imap(square, 0..7u64)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(by_three, vec![0, 1, 4, 9, 16, 25, 36]);

    let slow = p.apply_async(sleep_ms, 300).unwrap();
    assert!(matches!(slow.try_get(), Err(Error::WouldBlock)));
    slow.wait();
    assert_eq!(slow.try_get().unwrap(), 300);
    assert!(
        matches!(slow.get(), Err(Error::InvalidState(_))),
        "taken once"
    );

    let sum = Arc::new(AtomicU64::new(0));
    let s2 = sum.clone();
    let r = p
        .chunksize(2)
        .starmap_async_with(
            add,
            (0..10u64).map(|x| (x, x)),
            Callbacks::new().callback(move |v: &Vec<u64>| {
                s2.store(v.iter().sum(), Ordering::SeqCst);
            }),
        )
        .unwrap();
    assert_eq!(r.get_timeout(PROMPTLY).unwrap().len(), 10);
    assert_eq!(sum.load(Ordering::SeqCst), 90);

    let cb = Callbacks::<u64>::new().callback(|_| {});
    assert!(format!("{cb:?}").contains("callback: true"));
    let it = p.imap(square, 0..3u64).unwrap();
    assert!(format!("{it:?}").contains("IMapIterator"));
    let b = Pool::builder().processes(3).prefetch(4);
    assert!(format!("{b:?}").contains("prefetch: Some(4)"));
    assert!(format!("{:?}", p.chunksize(5)).contains("chunksize: 5"));
}

/// Issue #15: `context=` — workers start as a `Context` says; a worker that
/// cannot start fails `build`, and a replacement that cannot start breaks the
/// pool with an error instead of a wait for a worker that will not come.
#[test]
fn a_context_chooses_how_workers_start_and_a_failed_start_is_an_error() {
    let p = Pool::builder()
        .processes(2)
        .context(&multiproc::get_context(StartMethod::Fork))
        .build()
        .unwrap();
    assert_eq!(p.map(square, 0..5).unwrap(), vec![0, 1, 4, 9, 16]);
    drop(p);

    let missing = multiproc::get_context(StartMethod::Spawn).with_executable("/nonexistent/worker");
    assert!(
        Pool::builder()
            .processes(2)
            .context(&missing)
            .build()
            .is_err()
    );

    // Workers run this test binary under a second name (a hard link: the
    // same file, which children check), which then disappears: the
    // replacement for a killed worker cannot start.
    let exe = std::env::current_exe().unwrap();
    let link = exe.with_file_name(format!("pool-context-link-{}", std::process::id()));
    let _ = std::fs::remove_file(&link);
    std::fs::hard_link(&exe, &link).unwrap();
    let ctx = multiproc::get_context(StartMethod::Spawn).with_executable(&link);
    let p = Pool::builder().processes(2).context(&ctx).build();
    std::fs::remove_file(&link).unwrap();
    let p = p.unwrap();
    assert_eq!(p.map(square, 0..4).unwrap(), vec![0, 1, 4, 9]);
    let victim = p.worker_pids()[0];
    // SAFETY: kill(2) on a pool worker of ours.
    unsafe {
        libc::kill(victim, libc::SIGKILL);
    }
    assert!(
        util::eventually(PROMPTLY, || matches!(
            p.map(square, 0..4),
            Err(Error::Remote(m)) if m.contains("broken")
        )),
        "the pool did not report that it cannot replace its worker"
    );
    let pids = p.worker_pids();
    drop(p);
    for pid in pids {
        assert!(util::eventually(PROMPTLY, || util::is_gone(pid)));
    }
}

fn add3(a: u64, b: u32, c: u8) -> u64 {
    a + u64::from(b) + u64::from(c)
}

fn label4(name: String, n: u64, negative: bool, scale: i32) -> String {
    let sign = if negative { "-" } else { "" };
    format!("{name}={sign}{}", n * scale as u64)
}

fn sum5(a: u8, b: u16, c: u32, d: u64, e: i64) -> i64 {
    i64::from(a) + i64::from(b) + i64::from(c) + d as i64 + e
}

fn join6(a: char, b: char, c: char, d: char, e: char, f: char) -> String {
    [a, b, c, d, e, f].iter().collect()
}

fn panics_on_3_of_3(a: u64, b: u64, c: u64) -> u64 {
    assert!(a != 3, "three arguments, first is 3");
    a + b + c
}

/// Issue #17 item 8: `starmap` beyond two arguments (`starmap3` …
/// `starmap6`) with plain `fn` items, their `_async` forms, chunk sizes and
/// a panicking task, under both start methods.
#[test]
fn starmap_with_three_to_six_arguments() {
    for m in METHODS {
        let p = pool(m, 2);
        let triples: Vec<(u64, u32, u8)> = (0..500u64)
            .map(|x| (x, x as u32 * 2, (x % 7) as u8))
            .collect();
        let expected: Vec<u64> = triples.iter().map(|&(a, b, c)| add3(a, b, c)).collect();
        assert_eq!(
            p.starmap3(add3, triples.clone()).unwrap(),
            expected,
            "{m:?}"
        );
        assert_eq!(
            p.chunksize(7).starmap3(add3, triples).unwrap(),
            expected,
            "{m:?}"
        );

        let quads = (0..20u64).map(|n| (format!("n{n}"), n, n % 2 == 1, 3));
        let labels = p.starmap4_async(label4, quads).unwrap();
        let labels = labels.get_timeout(PROMPTLY).unwrap();
        assert_eq!(labels.len(), 20, "{m:?}");
        assert_eq!(labels[0], "n0=0");
        assert_eq!(labels[5], "n5=-15");

        let seen = Arc::new(AtomicU64::new(0));
        let s2 = seen.clone();
        let r = p
            .chunksize(3)
            .starmap4_async_with(
                label4,
                vec![("a".to_string(), 2, false, 5)],
                Callbacks::new().callback(move |v: &Vec<String>| {
                    s2.store(v.len() as u64, Ordering::SeqCst);
                }),
            )
            .unwrap();
        assert_eq!(r.get_timeout(PROMPTLY).unwrap(), vec!["a=10".to_string()]);
        assert_eq!(seen.load(Ordering::SeqCst), 1);

        assert_eq!(
            p.starmap5(sum5, [(1, 2, 3, 4, -5), (0, 0, 0, 0, 7)])
                .unwrap(),
            vec![5, 7],
            "{m:?}"
        );
        assert_eq!(
            p.starmap6(join6, [('m', 'u', 'l', 't', 'i', '!')]).unwrap(),
            vec!["multi!".to_string()],
            "{m:?}"
        );

        match p
            .chunksize(1)
            .starmap3(panics_on_3_of_3, (0..6u64).map(|x| (x, 1, 1)))
        {
            Err(Error::Remote(msg)) => assert!(msg.contains("first is 3"), "{m:?}: {msg}"),
            other => panic!("{m:?}: {other:?}"),
        }
        // The pool works on after the panic.
        assert_eq!(p.starmap3(add3, [(1, 1, 1)]).unwrap(), vec![3], "{m:?}");
        p.close();
        p.join().unwrap();
    }
}

/// `imap` pulls its input lazily: over an endless input, with its reader
/// stopped after 1000 results, it has pulled a bounded number of items
/// ahead (it refills in batches: a few hundred at most here), and the
/// reader's results are complete and in order.
#[test]
fn imap_pulls_a_bounded_number_of_items_ahead_of_its_reader() {
    for m in METHODS {
        let p = pool(m, 2);
        let pulled = Arc::new(AtomicU64::new(0));
        let counter = pulled.clone();
        let input = (0u64..).inspect(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        let mut results = p.chunksize(1).imap(square, input).unwrap();
        for i in 0..1000u64 {
            assert_eq!(results.next().unwrap().unwrap(), i * i, "{m:?}");
        }
        let ahead = pulled.load(Ordering::SeqCst);
        assert!(
            (1000..=1000 + 1024).contains(&ahead),
            "{m:?}: {ahead} items pulled for 1000 read"
        );
        drop(results);
        assert_eq!(p.apply(square, 9).unwrap(), 81, "{m:?}");
        p.close();
        p.join().unwrap();
    }
}

/// A callback that ends its own pool (terminates or joins it, or drops the
/// last handle) runs on the thread that would be waited for: terminate and
/// drop return at once and the pool still ends, with its workers reaped;
/// join is an error. Before, the library panicked ("Resource deadlock
/// avoided"). Found by an attack battery.
#[test]
fn a_callback_may_end_its_own_pool() {
    for action in ["join", "terminate", "drop"] {
        let pool = Arc::new(pool(StartMethod::Fork, 1));
        let workers = pool.worker_pids();
        let (go, gate) = std::sync::mpsc::channel::<()>();
        let (said, heard) = std::sync::mpsc::channel::<String>();
        let last = std::sync::Mutex::new(Some(pool.clone()));
        let r = pool
            .apply_async_with(
                square,
                7,
                Callbacks::new().callback(move |_: &u64| {
                    // Holding the last handle, once the test dropped its own.
                    gate.recv_timeout(PROMPTLY).unwrap();
                    let p = last.lock().unwrap().take().unwrap();
                    let outcome = match action {
                        "join" => {
                            p.close();
                            format!("{:?}", p.join())
                        }
                        "terminate" => {
                            p.terminate();
                            "terminated".to_string()
                        }
                        _ => "dropped".to_string(),
                    };
                    drop(p);
                    said.send(outcome).unwrap();
                }),
            )
            .unwrap();
        drop(pool);
        go.send(()).unwrap();
        assert_eq!(r.get_timeout(PROMPTLY).unwrap(), 49, "{action}");
        let outcome = heard.recv_timeout(PROMPTLY).expect("the callback returned");
        if action == "join" {
            assert!(outcome.contains("InvalidState"), "{outcome}");
        }
        assert!(
            util::eventually(PROMPTLY, || workers
                .iter()
                .all(|&w| util::proc_state(w).is_none())),
            "{action}: the pool's workers are gone and reaped"
        );
    }
}

/// Terminating a pool whose workers are stopped (SIGSTOP) ends them at
/// once: each is resumed to meet its SIGTERM, instead of the pool waiting
/// out a 5 s grace for each in turn before killing it (20 s for these
/// four). Found by an attack battery.
#[test]
fn terminating_a_pool_of_stopped_workers_does_not_wait_out_a_grace_for_each() {
    let p = pool(StartMethod::Fork, 4);
    assert_eq!(p.map(square, 0..8u64).unwrap().len(), 8);
    let workers = p.worker_pids();
    for &w in &workers {
        // SAFETY: sends a signal to a worker of this pool, which is running.
        assert_eq!(unsafe { libc::kill(w, libc::SIGSTOP) }, 0);
    }
    let started = std::time::Instant::now();
    p.terminate();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "terminate waited {took:?}: a grace period per stopped worker"
    );
    assert!(
        util::eventually(PROMPTLY, || workers
            .iter()
            .all(|&w| util::proc_state(w).is_none())),
        "the workers are gone and reaped"
    );
}

/// `join_timeout` gives up on a worker that does not exit (here stopped
/// with SIGSTOP), and `join` then still works: Python's `join` would wait
/// for ever. Found by an attack battery.
#[test]
fn join_timeout_gives_up_on_a_worker_that_does_not_exit() {
    for m in METHODS {
        let p = pool(m, 2);
        assert!(matches!(
            p.join_timeout(Duration::from_millis(10)),
            Err(Error::InvalidState(_))
        ));
        assert_eq!(p.map(square, 0..4u64).unwrap(), vec![0, 1, 4, 9]);
        let stopped = p.worker_pids()[0];
        // SAFETY: sends a signal to a running worker of this pool.
        assert_eq!(unsafe { libc::kill(stopped, libc::SIGSTOP) }, 0);
        p.close();
        assert!(matches!(
            p.join_timeout(Duration::from_millis(300)),
            Err(Error::Timeout(_))
        ));
        // SAFETY: as above; the worker has not been reaped (it cannot exit).
        assert_eq!(unsafe { libc::kill(stopped, libc::SIGCONT) }, 0);
        p.join_timeout(PROMPTLY).unwrap();
        p.join().unwrap();
    }
}

/// A callback runs on the thread that delivers its pool's results: waiting
/// there for another result of the same pool (`apply`, `map`, `get`,
/// `imap`) would wait for ever, and is an error at once instead; submitting
/// (`apply_async`) works, and its result comes later. Found by a
/// newcomer's first hour.
#[test]
fn a_callback_that_waits_for_its_own_pool_is_told_so() {
    let pool = Arc::new(pool(StartMethod::Fork, 1));
    let (said, heard) = std::sync::mpsc::channel();
    let inner = pool.clone();
    let r = pool
        .apply_async_with(
            square,
            2,
            Callbacks::new().callback(move |_: &u64| {
                let waited = format!(
                    "{:?} {:?} {:?}",
                    inner.apply(square, 3),
                    inner.map(square, 0..3u64),
                    inner.imap(square, 0..3u64).map(|it| it.collect::<Vec<_>>())
                );
                let later = inner.apply_async(square, 4).unwrap();
                said.send((waited, later)).unwrap();
            }),
        )
        .unwrap();
    assert_eq!(r.get_timeout(PROMPTLY).unwrap(), 4);
    let (waited, later) = heard.recv_timeout(PROMPTLY).expect("the callback returned");
    // One error each; the imap ends after its one (a `collect` returns).
    assert_eq!(waited.matches("InvalidState").count(), 3, "{waited}");
    assert_eq!(later.get_timeout(PROMPTLY).unwrap(), 16);
    // The pool still delivers.
    assert_eq!(pool.map(square, 0..4u64).unwrap(), vec![0, 1, 4, 9]);
}

/// The Value each worker's initializer was given.
static GIVEN: std::sync::OnceLock<multiproc::Value<u64>> = std::sync::OnceLock::new();

fn keep_given(v: multiproc::Value<u64>) {
    let _ = GIVEN.set(v);
}

fn read_given(_: ()) -> u64 {
    GIVEN.get().map_or(0, |v| v.get())
}

/// Python's `Pool(initializer=f, initargs=(lock,))`, with the handle made
/// in the call: the pool keeps the argument, so each worker it starts
/// (here one per task) opens the handle although the caller kept no copy.
/// Before, every worker failed to decode it and the pool broke. Found by a
/// newcomer's first hour.
#[test]
fn an_initializer_argument_made_in_the_call_reaches_every_worker() {
    for m in METHODS {
        let p = Pool::builder()
            .processes(1)
            .start_method(m)
            .maxtasksperchild(1)
            .initializer(keep_given, multiproc::Value::new(41u64).unwrap())
            .build()
            .unwrap();
        let got = p.map(read_given, vec![(); 3]).unwrap();
        assert_eq!(got, vec![41, 41, 41], "{m:?}");
    }
}

/// Returns `x` at once, except 3, which waits for `release` first.
fn stuck_at_3((x, release): (u64, multiproc::Event)) -> u64 {
    if x == 3 {
        assert!(release.wait_timeout(PROMPTLY * 3).unwrap());
    }
    x
}

/// Quick tasks queued at a worker behind a slow or stuck one go to an idle
/// worker, as in Python (whose workers take one task at a time): a
/// "skip what hangs" loop gets every other result. From a newcomer's port:
/// with tasks queued behind a hung one, `next_timeout` gave up with 4 of 11.
#[test]
fn quick_tasks_queued_behind_a_stuck_one_go_to_an_idle_worker() {
    for m in METHODS {
        let p = Pool::builder()
            .processes(2)
            .start_method(m)
            .prefetch(4)
            .build()
            .unwrap();
        let release = multiproc::Event::new().unwrap();
        let items: Vec<(u64, multiproc::Event)> = (0..12).map(|i| (i, release.clone())).collect();
        let mut it = p.chunksize(1).imap_unordered(stuck_at_3, items).unwrap();
        let mut got = Vec::new();
        while got.len() < 11 {
            match it.next_timeout(PROMPTLY) {
                Ok(Some(r)) => got.push(r.unwrap()),
                other => panic!("{m:?}: after {got:?}: {other:?}"),
            }
        }
        got.sort_unstable();
        assert_eq!(got, [0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11], "{m:?}");
        release.set().unwrap();
        assert_eq!(it.next_timeout(PROMPTLY).unwrap().unwrap().unwrap(), 3);
        assert!(it.next_timeout(PROMPTLY).unwrap().is_none());
    }
}

fn exit_on_2(i: u64) -> u64 {
    if i == 2 {
        std::process::exit(3);
    }
    i * 10
}

/// A worker takes up to 16 chunks in one message and runs them in turn: one
/// that dies running a task had not started the tasks of other calls behind
/// it, which run on another worker (only the task that ended it fails), as
/// in Python, whose workers take one task at a time. From a port of
/// CPython's pool tests: 15 tasks of 40 failed with `WorkerDied`, every run.
#[test]
fn a_task_that_ends_its_worker_fails_alone() {
    for m in METHODS {
        let p = pool(m, 2);
        let calls: Vec<_> = (0..40u64)
            .map(|i| p.apply_async(exit_on_2, i).unwrap())
            .collect();
        for (i, call) in (0..40u64).zip(calls) {
            let got = call.get_timeout(PROMPTLY);
            if i == 2 {
                assert!(
                    matches!(got, Err(Error::WorkerDied { .. })),
                    "{m:?}: {got:?}"
                );
            } else {
                assert_eq!(got.unwrap(), i * 10, "{m:?}: task {i}");
            }
        }
    }
}

/// A forked child has a copy of its parent's pool but not its threads, and
/// the workers are the parent's: using it there is `InvalidState` (it ran
/// the child's tasks on the parent's workers, whose results went to the
/// parent's call of the same job number: `apply(square, 3)` returned 700),
/// waiting there for a result of it is too, and dropping it there touches
/// nothing (it panicked in library code). The parent's pool is unharmed.
/// From an attack battery.
#[test]
fn a_forked_child_cannot_use_its_parents_pool() {
    for m in METHODS {
        let pool = std::sync::Arc::new(pool(m, 2));
        assert_eq!(pool.apply(square, 2).unwrap(), 4, "{m:?}");
        let slow = pool.apply_async(sleep_ms, 300).unwrap();
        let mut child = {
            let pool = pool.clone();
            Process::from_closure(move || {
                let seen = vec![
                    format!("{:?}", pool.apply(square, 3).map_err(|e| e.to_string())),
                    format!("{:?}", pool.map(square, 0..4).map_err(|e| e.to_string())),
                    format!("{:?}", slow.get().map_err(|e| e.to_string())),
                ];
                drop(pool);
                seen
            })
        };
        child.start().unwrap();
        let seen = child.join_timeout(PROMPTLY).unwrap();
        assert_eq!(seen.len(), 3);
        for s in &seen {
            assert!(
                s.starts_with("Err(") && s.contains("a forked child cannot use it"),
                "{m:?}: {seen:?}"
            );
        }
        assert_eq!(pool.apply(square, 3).unwrap(), 9, "{m:?}");
        assert_eq!(pool.map(square, 0..4).unwrap(), [0, 1, 4, 9], "{m:?}");
    }
}

/// A forked child makes a pool of its own (forked too) while two of the
/// parent's threads map on the parent's pool: the child's map returns. The
/// runtime's locks were `parking_lot`'s, whose process-wide table of parked
/// threads the child inherited from a parent whose threads were parked at
/// the fork; about one child in 1,500 then missed its wake-up and waited
/// for ever for a result its pool had delivered (from a newcomer's program).
#[test]
fn a_forked_childs_own_pool_works_while_the_parents_threads_wait_on_theirs() {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let parents = Arc::new(pool(StartMethod::Fork, 2));
    let busy: Vec<_> = (0..2)
        .map(|_| {
            let (stop, parents) = (stop.clone(), parents.clone());
            std::thread::spawn(move || {
                let mut maps = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    assert_eq!(parents.map(square, 0..50).unwrap().len(), 50);
                    maps += 1;
                }
                maps
            })
        })
        .collect();
    let mut failed = None;
    for i in 0..1500 {
        let mut child = Process::from_closure(|| {
            let own = pool(StartMethod::Fork, 1);
            own.map(square, [1u64, 2])
                .map(|r| r.iter().sum::<u64>())
                .map_err(|e| e.to_string())
        });
        child.start().unwrap();
        match child.join_timeout(PROMPTLY) {
            Ok(Ok(5)) => {}
            other => {
                failed = Some(format!("child {i}: {other:?}"));
                let _ = child.kill();
                let _ = child.join_timeout(PROMPTLY);
                break;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in busy {
        assert!(
            t.join().unwrap() > 0,
            "the parent's threads mapped meanwhile"
        );
    }
    assert_eq!(failed, None);
}

/// The same for a thread pool, whose threads a forked child does not have.
#[test]
fn a_forked_child_cannot_use_its_parents_thread_pool() {
    let pool = std::sync::Arc::new(multiproc::ThreadPool::new(2).unwrap());
    assert_eq!(pool.apply(|x: u64| x * 2, 2).unwrap(), 4);
    let mut child = {
        let pool = pool.clone();
        Process::from_closure(move || {
            let seen = format!(
                "{:?}",
                pool.apply(|x: u64| x * 2, 3).map_err(|e| e.to_string())
            );
            drop(pool);
            seen
        })
    };
    child.start().unwrap();
    let seen = child.join_timeout(PROMPTLY).unwrap();
    assert!(seen.contains("a forked child cannot use it"), "{seen}");
    assert_eq!(pool.apply(|x: u64| x * 2, 3).unwrap(), 6);
}

/// Notes its pid, then works for `ms`.
fn note_pid_and_work((pid, ms): (multiproc::RawValue<i32>, u64)) -> i32 {
    pid.set(multiproc::current_process().pid);
    std::thread::sleep(Duration::from_millis(ms));
    multiproc::current_process().pid
}

fn byte_count(bytes: Vec<u8>) -> usize {
    bytes.len()
}

/// A task whose argument is larger than a worker's order ring streams
/// through it only as the worker reads. Sent to an idle worker that is
/// stopped, that send held the pool's lock for ever: no result, no submit,
/// no `terminate` (and nothing ever again once the stopped worker was
/// killed). Now the send gives up after a while and the task goes to a
/// worker that reads. From an attack battery.
#[test]
fn a_large_task_for_a_stopped_worker_does_not_hold_the_pool() {
    for kill_it in [false, true] {
        let p = pool(StartMethod::Fork, 2);
        assert_eq!(p.map(square, 0..4).unwrap(), [0, 1, 4, 9]);
        let busy_pid = multiproc::RawValue::new(0i32).unwrap();
        let busy = p
            .apply_async(note_pid_and_work, (busy_pid.clone(), 1_500))
            .unwrap();
        assert!(util::eventually(PROMPTLY, || busy_pid.get() != 0));
        let idle = *p
            .worker_pids()
            .iter()
            .find(|&&w| w != busy_pid.get())
            .unwrap();
        // SAFETY: signals this pool's worker, our child.
        assert_eq!(unsafe { libc::kill(idle, libc::SIGSTOP) }, 0);
        let big = p.apply_async(byte_count, vec![7u8; 8 << 20]).unwrap();
        let small = p.apply_async(square, 3).unwrap();
        if kill_it {
            // SAFETY: as above.
            assert_eq!(unsafe { libc::kill(idle, libc::SIGKILL) }, 0);
        }
        assert_eq!(
            busy.get_timeout(PROMPTLY).unwrap(),
            busy_pid.get(),
            "{kill_it}"
        );
        assert_eq!(big.get_timeout(PROMPTLY).unwrap(), 8 << 20, "{kill_it}");
        assert_eq!(small.get_timeout(PROMPTLY).unwrap(), 9, "{kill_it}");
        let started = std::time::Instant::now();
        p.terminate();
        assert!(started.elapsed() < PROMPTLY, "{kill_it}");
    }
}
