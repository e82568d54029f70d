//! A worker of a distributed job: connects to the master's manager over TCP,
//! says hello, takes tasks from its task queue, counts each in the master's
//! `Tally` and puts the squares on its result queue, until the master goes
//! away (or nothing comes for a while).
//!
//! The master may go away at any moment (it shuts down as soon as it has every
//! result), so a worker treats `ManagerGone` from any call the same way: the
//! job is over, it says so and exits 0.
//!
//! Run the master first (see `distributed_master.rs`), then:
//!     cargo run --example distributed_worker -- 127.0.0.1:50000 secret
//!
//! Arguments (or MULTIPROC_ADDRESS and MULTIPROC_AUTHKEY): the master's
//! address (default 127.0.0.1:50000) and the authkey (default
//! "multiproc-demo"). A third argument is how many seconds to wait for a
//! task before giving up (default 60).

use std::time::{Duration, Instant};

use multiproc::{BaseManager, Error, Queue};

#[path = "distributed/tally.rs"]
mod tally;
use tally::TallyProxy;

#[path = "distributed/common.rs"]
mod common;
use common::{Hello, Outcome, Task, arg};

fn main() -> multiproc::Result<()> {
    multiproc::init();
    let address = arg(1, "MULTIPROC_ADDRESS", "127.0.0.1:50000");
    let authkey = arg(2, "MULTIPROC_AUTHKEY", "multiproc-demo");
    let idle_limit = Duration::from_secs(arg(3, "MULTIPROC_IDLE", "60").parse().unwrap_or(60));

    let me = multiproc::current_process().pid;
    let mut done = 0;
    match work(&address, &authkey, idle_limit, &mut done) {
        Ok(()) => {}
        // Started after the master finished, or it finished while this worker
        // was between calls: either way the job is over.
        Err(Error::ManagerGone(why)) => {
            println!("worker {me}: the master has gone, stopping ({why})")
        }
        Err(e) => return Err(e),
    }
    println!("worker {me} did {done} tasks");
    Ok(())
}

/// Connects and works until the queue stays empty for `idle_limit`; counts
/// each task whose result was delivered in `done`.
fn work(
    address: &str,
    authkey: &str,
    idle_limit: Duration,
    done: &mut u64,
) -> multiproc::Result<()> {
    let me = multiproc::current_process().pid;
    let manager = BaseManager::new()
        .address(address.to_string())
        .authkey(authkey.as_bytes())
        .connect()?;
    let hello: Queue<Hello> = manager.get("get_hello_queue")?;
    let tasks: Queue<Task> = manager.get("get_task_queue")?;
    let results: Queue<Outcome> = manager.get("get_result_queue")?;
    let tally: TallyProxy = manager.get_object("tally")?;
    println!("worker {me} connected to {address}");
    hello.put(me)?;

    let mut idle_since = Instant::now();
    loop {
        match tasks.get_timeout(Duration::from_millis(500)) {
            Ok(n) => {
                tally.record(me)?;
                results.put((n, n * n, me))?;
                *done += 1;
                idle_since = Instant::now();
            }
            Err(Error::Empty) if idle_since.elapsed() < idle_limit => {}
            Err(Error::Empty) => {
                println!("worker {me}: no task for {idle_limit:?}, stopping");
                return Ok(());
            }
            Err(e) => return Err(e),
        }
    }
}
