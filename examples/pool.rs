//! A process pool: map, apply_async with a callback, starmap (two and three
//! arguments), imap_unordered, a timeout, and a worker that crashes without
//! hanging the pool; then a thread pool running a closure.
//!
//! Run: `cargo run --example pool`

use std::sync::{Arc, Mutex};
use std::time::Duration;

use multiproc::{Callbacks, Error, Pool};

fn square(x: u64) -> u64 {
    x * x
}

/// Python's `functools.partial(power, exponent=3)` becomes a pair argument.
fn power(base: u64, exponent: u32) -> u64 {
    base.pow(exponent)
}

/// Three arguments: `starmap3` (the number of arguments is in the name).
fn clamp(x: i64, low: i64, high: i64) -> i64 {
    x.clamp(low, high)
}

fn slow(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn crash(_: ()) {
    std::process::abort()
}

fn main() -> multiproc::Result<()> {
    multiproc::init();
    let pool = Pool::new(4)?;

    println!("map of squares: {:?}", pool.map(square, 0..10)?);

    let collected = Arc::new(Mutex::new(Vec::new()));
    let handles: Vec<_> = (0..5)
        .map(|i| {
            let sink = collected.clone();
            pool.apply_async_with(
                square,
                i,
                Callbacks::new().callback(move |r: &u64| sink.lock().unwrap().push(*r)),
            )
        })
        .collect::<multiproc::Result<_>>()?;
    for h in handles {
        h.get()?;
    }
    let mut got = collected.lock().unwrap().clone();
    got.sort();
    println!("apply_async callbacks collected: {got:?}");

    let cubes = pool.starmap(power, (1..=5).map(|b| (b, 3)))?;
    println!("starmap with a fixed exponent: {cubes:?}");
    let clamped = pool.starmap3(clamp, [(-5, 0, 10), (5, 0, 10), (50, 0, 10)])?;
    println!("starmap3 of clamp: {clamped:?}");

    let mut done: Vec<u64> = pool
        .imap_unordered(slow, vec![30, 10, 20])?
        .collect::<multiproc::Result<_>>()?;
    println!("imap_unordered finished {} tasks", done.len());
    done.sort();
    println!("imap_unordered results (sorted): {done:?}");

    let pending = pool.apply_async(slow, 1_000)?;
    match pending.get_timeout(Duration::from_millis(50)) {
        Err(Error::Timeout(_)) => println!("get_timeout: still running after 50 ms"),
        other => println!("get_timeout: {other:?}"),
    }

    match pool.apply(crash, ()) {
        Err(e @ Error::WorkerDied { .. }) => println!("a crashing task: {e}"),
        other => println!("a crashing task: {other:?}"),
    }
    println!("the pool carries on: {:?}", pool.map(square, 1..=3)?);
    pool.close();
    pool.join()?;

    // A thread pool runs in this process: its tasks may be closures.
    let threads = multiproc::ThreadPool::new(2)?;
    let calls = Arc::new(Mutex::new(0u32));
    let counter = calls.clone();
    let tripled = threads.map(
        move |x: u64| {
            *counter.lock().unwrap() += 1;
            x * 3
        },
        1..=4,
    )?;
    println!(
        "a ThreadPool closure: {tripled:?}, called {} times",
        calls.lock().unwrap()
    );
    Ok(())
}
