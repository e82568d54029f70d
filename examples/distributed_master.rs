//! The master of a distributed job (Python's `BaseManager` "remote manager"
//! recipe): it serves a task queue, a result queue and a `Tally` of its own
//! type over TCP, puts tasks, and collects what remote workers send back.
//!
//! Run in one terminal:
//!     cargo run --example distributed_master -- 127.0.0.1:50000 secret
//! and in one or more others (on any host that reaches the address):
//!     cargo run --example distributed_worker -- 127.0.0.1:50000 secret
//!
//! Arguments (or the environment variables MULTIPROC_ADDRESS and
//! MULTIPROC_AUTHKEY): the address to listen on (default 127.0.0.1:50000;
//! port 0 picks one) and the authkey (default "multiproc-demo"). A third
//! argument is the number of tasks (default 10), a fourth (or
//! MULTIPROC_WORKERS) how many workers to wait for before the first task goes
//! out (default 0: start at once). Each worker says hello on a queue of its own
//! once it is connected, so waiting for them needs no timing guess.

use std::time::Duration;

use multiproc::{BaseManager, Queue};

#[path = "distributed/tally.rs"]
mod tally;
use tally::{Tally, TallyProxy};

/// How long the master waits for each result before giving up.
const RESULT_TIMEOUT: Duration = Duration::from_secs(300);

#[path = "distributed/common.rs"]
mod common;
use common::{Hello, Outcome, Task, arg};

/// How long the master waits for each expected worker to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(300);

fn main() -> multiproc::Result<()> {
    multiproc::init();
    let address = arg(1, "MULTIPROC_ADDRESS", "127.0.0.1:50000");
    let authkey = arg(2, "MULTIPROC_AUTHKEY", "multiproc-demo");
    let tasks_wanted: u64 = arg(3, "MULTIPROC_TASKS", "10").parse().unwrap_or(10);
    let workers_wanted: usize = arg(4, "MULTIPROC_WORKERS", "0").parse().unwrap_or(0);

    let master = BaseManager::new()
        .address(address)
        .authkey(authkey.as_bytes())
        .register::<Queue<Hello>>("get_hello_queue")
        .register::<Queue<Task>>("get_task_queue")
        .register::<Queue<Outcome>>("get_result_queue")
        .register_object::<Tally>("tally")
        .start()?;
    println!("master listening on {}", master.address());

    let hello: Queue<Hello> = master.get("get_hello_queue")?;
    for _ in 0..workers_wanted {
        let pid = hello.get_timeout(HELLO_TIMEOUT)?;
        println!("worker {pid} said hello");
    }
    let tasks: Queue<Task> = master.get("get_task_queue")?;
    let results: Queue<Outcome> = master.get("get_result_queue")?;
    for n in 1..=tasks_wanted {
        tasks.put(n)?;
    }
    println!("put {tasks_wanted} tasks; waiting for workers");

    let mut collected = Vec::new();
    for _ in 0..tasks_wanted {
        let (n, square, pid) = results.get_timeout(RESULT_TIMEOUT)?;
        println!("result: {n}^2 = {square} (worker {pid})");
        collected.push(square);
    }
    collected.sort();
    println!(
        "collected {} results, sum {}",
        collected.len(),
        collected.iter().sum::<u64>()
    );
    let tally: TallyProxy = master.get_object("tally")?;
    let by_worker = tally.by_worker()?;
    println!(
        "tally: {} tasks, (worker pid, tasks): {by_worker:?}",
        by_worker.iter().map(|(_, n)| n).sum::<u64>()
    );
    master.shutdown()?;
    println!("master shut down");
    Ok(())
}
