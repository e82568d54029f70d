//! Queues and pipes between processes: a producer/consumer pair over a
//! `Queue`, workers acknowledging tasks on a `JoinableQueue`, and an echo
//! server on the other end of a `Pipe`.
//!
//! Run: `cargo run --example queue_pipe`

use std::time::{Duration, Instant};

use multiproc::{Connection, Error, JoinableQueue, Pipe, Process, Queue};

/// Puts `n` numbers, then `None` to say it is done.
fn producer(args: (Queue<Option<u64>>, u64)) {
    let (q, n) = args;
    for i in 0..n {
        q.put(Some(i)).unwrap();
    }
    q.put(None).unwrap();
}

/// Squares tasks until the queue is closed, marking each done.
fn worker(tasks: JoinableQueue<u64>) -> u64 {
    let mut sum = 0;
    while let Ok(x) = tasks.get() {
        sum += x * x;
        tasks.task_done().unwrap();
    }
    sum
}

/// Answers every message with its upper-case form until the pipe closes.
fn echo(conn: Connection<String>) -> usize {
    let mut n = 0;
    while let Ok(msg) = conn.recv() {
        conn.send(msg.to_uppercase()).unwrap();
        n += 1;
    }
    n
}

fn main() -> multiproc::Result<()> {
    multiproc::init();

    // 1. One producer process, the main process consumes.
    let q = Queue::new()?;
    let mut p = Process::new(producer, (q.clone(), 100_000));
    let start = Instant::now();
    p.start()?;
    let (mut count, mut sum) = (0u64, 0u64);
    while let Some(x) = q.get()? {
        count += 1;
        sum += x;
    }
    p.join()?;
    println!(
        "queue: received {count} items from a child (sum {sum}) in {:.1} ms",
        start.elapsed().as_secs_f64() * 1e3
    );

    // 2. A JoinableQueue: join() returns once every task was marked done.
    let tasks = JoinableQueue::new()?;
    let mut workers: Vec<_> = (0..2)
        .map(|_| Process::new(worker, tasks.clone()))
        .collect();
    for w in &mut workers {
        w.start()?;
    }
    for i in 1..=10 {
        tasks.put(i)?;
    }
    tasks.join()?;
    println!(
        "joinable: join() returned, unfinished tasks: {}",
        tasks.unfinished_tasks().unwrap()
    );
    tasks.close().unwrap();
    let total: u64 = workers
        .iter_mut()
        .map(|w| w.join())
        .collect::<multiproc::Result<Vec<_>>>()?
        .into_iter()
        .sum();
    println!("joinable: workers' sum of squares 1..=10: {total}");
    println!(
        "joinable: a task_done too many is {:?}",
        tasks.task_done().err()
    );

    // 3. A pipe to an echo process, and end of file when we close our end.
    let (here, there) = Pipe::new()?;
    let mut server = Process::new(echo, there);
    server.start()?;
    here.send("hello".to_string())?;
    println!("pipe: sent \"hello\", got back {:?}", here.recv()?);
    let rounds = 10_000;
    let start = Instant::now();
    for _ in 0..rounds {
        here.send("ping".to_string())?;
        here.recv()?;
    }
    println!(
        "pipe: {rounds} round trips, {:.2} µs each",
        start.elapsed().as_secs_f64() * 1e6 / rounds as f64
    );
    println!(
        "pipe: poll with nothing sent: {}",
        here.poll(Some(Duration::from_millis(10)))?
    );
    here.close();
    println!(
        "pipe: after close, the server answered {} messages",
        server.join()?
    );
    println!(
        "pipe: recv on a closed end is Closed: {}",
        matches!(here.recv(), Err(Error::Closed))
    );
    Ok(())
}
