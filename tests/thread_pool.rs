//! ThreadPool: the pool API backed by threads.

mod util;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use multiproc::{Callbacks, Error, ThreadPool};
use util::PROMPTLY;

fn square(x: u64) -> u64 {
    x * x
}

fn add(a: u64, b: u64) -> u64 {
    a + b
}

fn fails_on_7(x: u64) -> u64 {
    assert!(x != 7, "seven is bad");
    x
}

fn slow(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn thread_name(_: ()) -> String {
    std::thread::current().name().unwrap_or("").to_string()
}

#[test]
fn map_starmap_imap_over_10k_items() {
    let pool = ThreadPool::new(3).unwrap();
    let expected: Vec<u64> = (0..10_000).map(|x| x * x).collect();
    assert_eq!(pool.map(square, 0..10_000).unwrap(), expected);
    assert_eq!(pool.chunksize(1).map(square, 0..10_000).unwrap(), expected);
    let pairs: Vec<(u64, u64)> = (0..10_000).map(|x| (x, 1)).collect();
    let sums = pool.chunksize(7).starmap(add, pairs).unwrap();
    assert_eq!(sums, (1..=10_000).collect::<Vec<u64>>());
    let ordered: Vec<u64> = pool
        .chunksize(13)
        .imap(square, 0..10_000u64)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(ordered, expected);
    let mut unordered: Vec<u64> = pool
        .imap_unordered(square, 0..10_000u64)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    unordered.sort();
    assert_eq!(unordered, expected);
    assert!(pool.map(square, Vec::<u64>::new()).unwrap().is_empty());
    assert_eq!(pool.imap(square, Vec::<u64>::new()).unwrap().count(), 0);
}

#[test]
fn imap_over_an_endless_iterator_stops_early() {
    let pool = ThreadPool::new(2).unwrap();
    let first: Vec<u64> = pool
        .chunksize(4)
        .imap(square, 0u64..)
        .unwrap()
        .take(100)
        .map(Result::unwrap)
        .collect();
    assert_eq!(first, (0..100).map(|x| x * x).collect::<Vec<_>>());
    // The pool is still usable afterwards.
    assert_eq!(pool.apply(square, 9).unwrap(), 81);
}

/// As for a process pool: an `imap` input that waits stalls nothing else
/// (it ran on the pool's result handler, under its lock).
#[test]
fn a_waiting_imap_input_stalls_nothing_else() {
    let p = ThreadPool::new(2).unwrap();
    let (go, gate) = std::sync::mpsc::channel::<()>();
    let input = (0u64..).inspect(move |&i| {
        if i > 0 {
            let _ = gate.recv();
        }
    });
    let mut results = p.imap(square, input).unwrap();
    assert_eq!(results.next_timeout(PROMPTLY).unwrap().unwrap().unwrap(), 0);
    assert_eq!(
        p.apply_async(square, 7)
            .unwrap()
            .get_timeout(PROMPTLY)
            .unwrap(),
        49
    );
    go.send(()).unwrap();
    assert_eq!(results.next_timeout(PROMPTLY).unwrap().unwrap().unwrap(), 1);
    drop(results);
    drop(go);
    p.close();
    p.join_timeout(PROMPTLY).unwrap();
}

#[test]
fn callbacks_and_errors() {
    let pool = ThreadPool::new(2).unwrap();
    let total = Arc::new(AtomicUsize::new(0));
    let results: Vec<_> = (0..50u64)
        .map(|i| {
            let t = total.clone();
            pool.apply_async_with(
                square,
                i,
                Callbacks::new().callback(move |r: &u64| {
                    t.fetch_add(*r as usize, Ordering::SeqCst);
                }),
            )
            .unwrap()
        })
        .collect();
    for r in results {
        r.get().unwrap();
    }
    assert_eq!(
        total.load(Ordering::SeqCst),
        (0..50).map(|x| x * x).sum::<usize>()
    );

    let seen = Arc::new(util::TextSlot::default());
    let s2 = seen.clone();
    let r = pool
        .apply_async_with(
            fails_on_7,
            7,
            Callbacks::new().error_callback(move |e| s2.set(e.to_string())),
        )
        .unwrap();
    match r.get() {
        Err(Error::Remote(msg)) => {
            assert!(msg.contains("seven is bad"), "{msg}");
            assert!(
                msg.contains("tests/thread_pool.rs:"),
                "no location in {msg}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(seen.get().contains("seven is bad"));
    assert!(matches!(
        pool.chunksize(1).map(fails_on_7, 0..10),
        Err(Error::Remote(_))
    ));
    // The worker stays usable after a panicking task.
    assert_eq!(pool.apply(square, 3).unwrap(), 9);
}

#[test]
fn async_result_timeouts_and_state() {
    let pool = ThreadPool::new(1).unwrap();
    let r = pool.apply_async(slow, 300).unwrap();
    assert!(!r.ready());
    assert!(matches!(r.successful(), Err(Error::InvalidState(_))));
    assert!(matches!(
        r.get_timeout(Duration::from_millis(10)),
        Err(Error::Timeout(_))
    ));
    assert!(!r.wait_timeout(Duration::from_millis(1)));
    r.wait();
    assert!(r.ready());
    assert!(r.successful().unwrap());
    assert_eq!(r.get_timeout(Duration::from_secs(1)).unwrap(), 300);
    assert!(matches!(
        r.get_timeout(Duration::from_secs(1)),
        Err(Error::InvalidState(_))
    ));
}

#[test]
fn lifecycle_and_bad_input() {
    assert!(matches!(ThreadPool::new(0), Err(Error::InvalidArgument(_))));
    assert!(matches!(
        ThreadPool::with_options::<u8>(2, None, Some(0)),
        Err(Error::InvalidArgument(_))
    ));
    let pool = ThreadPool::new(2).unwrap();
    assert!(matches!(
        pool.chunksize(0).map(square, 0..4),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(pool.join(), Err(Error::InvalidState(_))));
    let pending = pool.chunksize(1).map_async(slow, vec![50, 50, 50]).unwrap();
    pool.close();
    assert!(matches!(pool.apply(square, 1), Err(Error::InvalidState(_))));
    pool.join().unwrap();
    assert_eq!(pending.get().unwrap(), vec![50, 50, 50]);

    let pool = ThreadPool::new(1).unwrap();
    let r = pool.apply_async(slow, 2_000).unwrap();
    let queued = pool.apply_async(slow, 1).unwrap();
    pool.terminate();
    assert!(matches!(queued.get(), Err(Error::Closed)));
    drop(r);
}

#[test]
fn initializer_and_maxtasksperchild() {
    fn init(_: u8) {}
    let pool = ThreadPool::with_options(2, Some((init as fn(u8), 0u8)), Some(2)).unwrap();
    let names: Vec<String> = pool.chunksize(1).map(thread_name, vec![(); 20]).unwrap();
    let mut distinct = names.clone();
    distinct.sort();
    distinct.dedup();
    assert!(
        distinct.len() > 2,
        "workers were not replaced: {distinct:?}"
    );

    fn bad_init(_: u8) {
        panic!("init exploded")
    }
    let pool = ThreadPool::with_options(2, Some((bad_init as fn(u8), 0u8)), None).unwrap();
    match pool.map(square, 0..10) {
        Err(Error::Remote(msg)) => assert!(msg.contains("init exploded"), "{msg}"),
        other => panic!("{other:?}"),
    }
}

fn sleep_then_thread(ms: u64) -> (u64, String) {
    std::thread::sleep(std::time::Duration::from_millis(ms));
    let name = std::thread::current().name().unwrap_or("").to_string();
    (ms, name)
}

/// Issue #17: the builder takes closures; an idle thread takes the next task
/// while another runs a long one.
#[test]
fn builder_with_a_closure_and_fair_scheduling() {
    let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let s2 = started.clone();
    let builder = ThreadPool::builder()
        .threads(2)
        .initializer(move || {
            s2.fetch_add(1, Ordering::SeqCst);
        })
        .prefetch(1);
    assert!(format!("{builder:?}").contains("initializer: true"));
    let pool = builder.build().unwrap();
    let done = pool
        .map(sleep_then_thread, [1_000, 50, 50, 50, 50])
        .unwrap();
    let long_thread = &done[0].1;
    assert!(done[1..].iter().all(|(_, t)| t != long_thread), "{done:?}");
    pool.close();
    pool.join().unwrap();
    assert_eq!(started.load(Ordering::SeqCst), 2);

    // The default adapts the same way for a function it has not seen.
    let pool = ThreadPool::builder().threads(2).build().unwrap();
    let done = pool
        .map(sleep_then_thread, [1_000, 50, 50, 50, 50])
        .unwrap();
    assert!(done[1..].iter().all(|(_, t)| *t != done[0].1), "{done:?}");
    assert!(matches!(
        ThreadPool::builder().threads(1).prefetch(0).build(),
        Err(Error::InvalidArgument(_))
    ));
}

fn add3(a: u64, b: u32, c: u8) -> u64 {
    a + u64::from(b) + u64::from(c)
}

fn label4(name: String, n: u64, negative: bool, scale: i32) -> String {
    let sign = if negative { "-" } else { "" };
    format!("{name}={sign}{}", n * scale as u64)
}

/// Issue #17 item 8: `starmap3` … `starmap6` take fn items and closures.
#[test]
fn starmap_with_three_to_six_arguments() {
    let pool = ThreadPool::new(2).unwrap();
    let triples: Vec<(u64, u32, u8)> = (0..500u64)
        .map(|x| (x, x as u32 * 2, (x % 7) as u8))
        .collect();
    let expected: Vec<u64> = triples.iter().map(|&(a, b, c)| add3(a, b, c)).collect();
    assert_eq!(pool.starmap3(add3, triples.clone()).unwrap(), expected);
    assert_eq!(pool.chunksize(9).starmap3(add3, triples).unwrap(), expected);

    let quads = (0..20u64).map(|n| (format!("n{n}"), n, n % 2 == 1, 3));
    let labels = pool
        .starmap4_async(label4, quads)
        .unwrap()
        .get_timeout(PROMPTLY)
        .unwrap();
    assert_eq!(labels.len(), 20);
    assert_eq!(labels[5], "n5=-15");

    let offset = Arc::new(100u64);
    let o2 = offset.clone();
    let shifted = pool
        .starmap4(
            move |a: u64, b: u64, c: u64, d: u64| a + b + c + d + *o2,
            [(1, 2, 3, 4), (0, 0, 0, 0)],
        )
        .unwrap();
    assert_eq!(shifted, vec![110, 100]);
    assert_eq!(
        pool.starmap5(
            |a: u8, b: u8, c: u8, d: u8, e: u8| [a, b, c, d, e].len(),
            [(1, 2, 3, 4, 5)]
        )
        .unwrap(),
        vec![5]
    );
    assert_eq!(
        pool.starmap6(
            |a: char, b: char, c: char, d: char, e: char, f: char| [a, b, c, d, e, f]
                .iter()
                .collect::<String>(),
            [('t', 'h', 'r', 'e', 'a', 'd')]
        )
        .unwrap(),
        vec!["thread".to_string()]
    );
    // The two-argument form takes closures too.
    assert_eq!(
        pool.starmap(move |a: u64, b: u64| a * b + *offset, [(2, 3)])
            .unwrap(),
        vec![106]
    );
}

/// Issue #17 item 8: a `ThreadPool` takes closures that capture, in every
/// call, and their items and results need not be encodable.
#[test]
fn closures_capture_state_in_every_call() {
    let pool = ThreadPool::new(3).unwrap();
    let count = Arc::new(AtomicUsize::new(0));

    let c = count.clone();
    let doubled = pool
        .map(
            move |x: u64| {
                c.fetch_add(1, Ordering::SeqCst);
                x * 2
            },
            0..1_000,
        )
        .unwrap();
    assert_eq!(doubled, (0..1_000).map(|x| x * 2).collect::<Vec<u64>>());
    assert_eq!(count.load(Ordering::SeqCst), 1_000);

    let c = count.clone();
    let counter = move |_: u64| c.fetch_add(1, Ordering::SeqCst);
    assert_eq!(
        pool.chunksize(10)
            .imap(counter.clone(), 0..100u64)
            .unwrap()
            .count(),
        100
    );
    assert_eq!(
        pool.imap_unordered(counter.clone(), 0..100u64)
            .unwrap()
            .count(),
        100
    );
    pool.apply(counter.clone(), 0).unwrap();
    pool.apply_async(counter.clone(), 0)
        .unwrap()
        .get_timeout(PROMPTLY)
        .unwrap();
    let called_back = Arc::new(AtomicUsize::new(0));
    let cb = called_back.clone();
    pool.apply_async_with(
        counter.clone(),
        0,
        Callbacks::new().callback(move |_| {
            cb.fetch_add(1, Ordering::SeqCst);
        }),
    )
    .unwrap()
    .get_timeout(PROMPTLY)
    .unwrap();
    pool.map_async(counter, 0..10u64)
        .unwrap()
        .get_timeout(PROMPTLY)
        .unwrap();
    assert_eq!(count.load(Ordering::SeqCst), 1_000 + 100 + 100 + 3 + 10);
    assert_eq!(called_back.load(Ordering::SeqCst), 1);

    // Neither the items nor the results are encoded: any `Send` type goes.
    struct NotEncodable(Arc<AtomicUsize>);
    let handles = pool
        .map(
            |n: usize| NotEncodable(Arc::new(AtomicUsize::new(n))),
            [1, 2, 3],
        )
        .unwrap();
    let total = pool
        .map(|h: NotEncodable| h.0.load(Ordering::SeqCst), handles)
        .unwrap();
    assert_eq!(total, vec![1, 2, 3]);

    // fn items still work, in the same pool.
    assert_eq!(pool.map(square, 0..4).unwrap(), vec![0, 1, 4, 9]);
    pool.close();
    pool.join().unwrap();
}

/// Issue #17 item 8: a closure that panics gives its caller `Error::Remote`
/// with the message, and the pool keeps working.
#[test]
fn a_panicking_closure_is_an_error_and_the_pool_goes_on() {
    let pool = ThreadPool::new(2).unwrap();
    let limit = Arc::new(5u64);
    let l2 = limit.clone();
    let checked = move |x: u64| {
        assert!(x < *l2, "{x} is over the limit");
        x
    };
    match pool.chunksize(1).map(checked.clone(), 0..10) {
        Err(Error::Remote(msg)) => assert!(msg.contains("5 is over the limit"), "{msg}"),
        other => panic!("{other:?}"),
    }
    match pool.apply(checked.clone(), 7) {
        Err(Error::Remote(msg)) => assert!(msg.contains("7 is over the limit"), "{msg}"),
        other => panic!("{other:?}"),
    }
    let results: Vec<_> = pool.imap(checked.clone(), 3..7).unwrap().collect();
    assert_eq!(results.len(), 4);
    assert_eq!(results[1].as_ref().ok(), Some(&4));
    assert!(matches!(&results[2], Err(Error::Remote(m)) if m.contains("over the limit")));
    assert!(matches!(
        pool.starmap3(move |a: u64, _: u8, _: u8| checked(a), [(9, 0, 0)]),
        Err(Error::Remote(_))
    ));
    // The pool works on, with the same threads.
    assert_eq!(
        pool.map(move |x: u64| x + *limit, 0..3).unwrap(),
        vec![5, 6, 7]
    );
    pool.close();
    pool.join().unwrap();
}

/// Quick tasks queued at a thread behind a stuck one go to an idle thread
/// (see the process pool's test of the same name).
#[test]
fn quick_tasks_queued_behind_a_stuck_one_go_to_an_idle_worker() {
    let pool = ThreadPool::builder()
        .threads(2)
        .prefetch(4)
        .build()
        .unwrap();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let released = Arc::new(std::sync::Mutex::new(released));
    let stuck_at_3 = move |x: u64| {
        if x == 3 {
            let _ = released.lock().unwrap().recv_timeout(PROMPTLY * 3);
        }
        x
    };
    let mut it = pool.chunksize(1).imap_unordered(stuck_at_3, 0..12).unwrap();
    let mut got = Vec::new();
    while got.len() < 11 {
        match it.next_timeout(PROMPTLY) {
            Ok(Some(r)) => got.push(r.unwrap()),
            other => panic!("after {got:?}: {other:?}"),
        }
    }
    got.sort_unstable();
    assert_eq!(got, [0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11]);
    release.send(()).unwrap();
    assert_eq!(it.next_timeout(PROMPTLY).unwrap().unwrap().unwrap(), 3);
    assert!(it.next_timeout(PROMPTLY).unwrap().is_none());
}
