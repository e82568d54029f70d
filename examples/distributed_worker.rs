//! A worker of a distributed job: connects to the master's manager over TCP,
//! takes tasks from its task queue, counts each in the master's `Tally` and
//! puts the squares on its result queue, until the master goes away (or
//! nothing comes for a while).
//!
//! Run the master first (see `distributed_master.rs`), then:
//!     cargo run --example distributed_worker -- 127.0.0.1:50000 secret
//!
//! Arguments (or MULTIPROC_ADDRESS and MULTIPROC_AUTHKEY): the master's
//! address (default 127.0.0.1:50000) and the authkey (default
//! "multiproc-demo"). A third argument is how many seconds to wait for a
//! task before giving up (default 60).

use std::time::{Duration, Instant};

use multiproc::{BaseManager, Error, QueueProxy};

#[path = "distributed/tally.rs"]
mod tally;
use tally::TallyProxy;

#[path = "distributed/common.rs"]
mod common;
use common::{Outcome, Task, arg};

fn main() -> multiproc::Result<()> {
    multiproc::init();
    let address = arg(1, "MULTIPROC_ADDRESS", "127.0.0.1:50000");
    let authkey = arg(2, "MULTIPROC_AUTHKEY", "multiproc-demo");
    let idle_limit = Duration::from_secs(arg(3, "MULTIPROC_IDLE", "60").parse().unwrap_or(60));

    let me = std::process::id();
    let manager = match BaseManager::new()
        .address(address.clone())
        .authkey(authkey.as_bytes())
        .connect()
    {
        Ok(m) => m,
        Err(Error::ManagerGone(why)) => {
            // Started after the master finished (another worker did the work).
            println!("worker {me}: the master has gone, stopping ({why})");
            println!("worker {me} did 0 tasks");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let tasks: QueueProxy<Task> = manager.get("get_task_queue")?;
    let results: QueueProxy<Outcome> = manager.get("get_result_queue")?;
    let tally: TallyProxy = manager.get_object("tally")?;
    println!("worker {me} connected to {address}");

    let mut done = 0;
    let mut idle_since = Instant::now();
    loop {
        match tasks.get_timeout(Duration::from_millis(500)) {
            Ok(n) => {
                tally.record(me)?;
                results.put((n, n * n, me))?;
                done += 1;
                idle_since = Instant::now();
            }
            Err(Error::Empty) if idle_since.elapsed() < idle_limit => {}
            Err(Error::Empty) => {
                println!("worker {me}: no task for {idle_limit:?}, stopping");
                break;
            }
            Err(Error::ManagerGone(_)) => {
                println!("worker {me}: the master has gone, stopping");
                break;
            }
            Err(e) => return Err(e),
        }
    }
    println!("worker {me} did {done} tasks");
    Ok(())
}
