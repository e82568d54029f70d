//! A worker of a distributed Pool started by calling
//! `multiproc::worker::run` (the other way is `MULTIPROC_WORKER`, see
//! `redis_pool_master.rs`):
//!
//!     redis_pool_worker redis://10.0.0.5:6379/0 words
//!
//! serves the pool named `words` of that server until it is signalled.
//! The pool's tasks must come from this same build (here: the `main`
//! below, run without arguments): a worker only runs the functions of its
//! own binary, and refuses a task of another build with
//! `Error::BinaryMismatch`.
//!
//! Run without arguments, the example talks to `MULTIPROC_REDIS_URL` or
//! starts its own `redis-server`, starts two workers of itself, submits
//! work to them and stops everything it started.
//!
//!     cargo run --features redis --example redis_pool_worker

use std::time::Duration;

use multiproc::Pool;

#[path = "redis_pool/support.rs"]
mod support;
use support::{Redis, Workers};

fn shout(word: String) -> String {
    word.to_uppercase() + "!"
}

fn main() -> multiproc::Result<()> {
    multiproc::init();
    let mut args = std::env::args().skip(1);
    if let Some(url) = args.next() {
        let name = args.next().unwrap_or_else(|| "words".to_owned());
        // Serves until the process is signalled; an unreachable server or a
        // wrong password is an error at once.
        return multiproc::worker::run(&url, &name);
    }
    let redis = Redis::get();
    let _workers = Workers::start(2, &[], &[&redis.url, "words"]);
    let pool = Pool::builder().redis(&redis.url).name("words").build()?;
    let words = ["spam", "eggs", "ham"].map(String::from);
    let shouted = pool
        .map_async(shout, words)?
        .get_timeout(Duration::from_secs(60))?;
    println!("shouted by the workers: {shouted:?}");
    let none = Pool::builder().redis(&redis.url).name("nobody").build()?;
    let waiting = none.apply_async(shout, "hello".to_owned())?;
    println!(
        "a pool without workers: {:?}",
        waiting.get_timeout(Duration::from_millis(200)).err()
    );
    Ok(())
}
