//! A distributed Pool on Redis: this program submits the work, and the
//! same program, started with `MULTIPROC_WORKER` on any host, runs it.
//!
//! Tasks are functions of this program (they travel as their place in
//! its binary), so a worker is this very build, not a generic command:
//! copy the binary to each host and start it there as a worker:
//!
//!     MULTIPROC_WORKER=redis://10.0.0.5:6379/0/squares ./redis_pool_master
//!
//! `multiproc::init()`, the first line of `main`, turns that process into
//! a worker of the pool named `squares`; it serves until it is signalled.
//!
//! Run as it is, the example talks to `MULTIPROC_REDIS_URL` or starts its
//! own `redis-server`, starts two workers of itself on this host, maps
//! over them, lists them, kills one in the middle of a map (its task is
//! taken back after the lease and finished by the other), and stops
//! everything it started.
//!
//!     cargo run --features redis --example redis_pool_master

use std::time::Duration;

use multiproc::Pool;

#[path = "redis_pool/support.rs"]
mod support;
use support::{Redis, Workers, eventually};

fn square(x: u64) -> u64 {
    x * x
}

fn slow_square(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(50));
    x * x
}

fn main() -> multiproc::Result<()> {
    // In a process started with MULTIPROC_WORKER, this serves the pool and
    // never returns.
    multiproc::init();
    let redis = Redis::get();
    let worker_var = format!("{}/squares", redis.url);
    let mut workers = Workers::start(2, &[(multiproc::worker::WORKER_ENV, &worker_var)], &[]);

    let pool = Pool::builder()
        .redis(&redis.url)
        .name("squares")
        .lease(Duration::from_secs(2))
        .build()?;
    let squares = pool
        .map_async(square, 0..10)?
        .get_timeout(Duration::from_secs(60))?;
    println!("map of squares: {squares:?}");

    eventually(|| pool.workers().is_ok_and(|w| w.len() == 2));
    for w in pool.workers()? {
        println!(
            "live worker: pid {} on {}, {} tasks done",
            w.pid, w.host, w.tasks_done
        );
    }

    let big = pool.chunksize(1).map_async(slow_square, 0..40)?;
    let killed = workers.kill_first();
    let big = big.get_timeout(Duration::from_secs(120))?;
    println!(
        "worker {killed} killed mid-map: still {} results, sum {}",
        big.len(),
        big.iter().sum::<u64>()
    );
    drop(pool);
    println!("pool dropped: its keys are gone from Redis");
    Ok(())
}
