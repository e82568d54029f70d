//! Manager objects kept in Redis (`--features redis`): workers (here child
//! processes; on other hosts they would connect to the same URL) take jobs
//! from a joinable queue, count in a dict without losing updates, and
//! meet at a lock and a condition by name.
//!
//! Uses the Redis at `$REDIS_URL`; without it, starts its own
//! `redis-server` on a free port and stops it at the end.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use multiproc::{Acquired, Condition, DictProxy, Process, RedisManager};

/// What every worker needs: where Redis is (handles carry it, too).
fn worker(redis: (String, u32)) -> u32 {
    let (url, id) = redis;
    let m = RedisManager::connect(&url)
        .unwrap()
        .prefix("example")
        .unwrap();
    let jobs = m.joinable_queue::<u32>("jobs").unwrap();
    let stats = m.dict::<String, u64>("stats").unwrap();
    let lock = m.lock("console").unwrap();
    let mut done = 0;
    while let Ok(job) = jobs.get_timeout(Duration::from_millis(500)) {
        stats
            .update_with("squares".into(), 0, |s| s + u64::from(job * job))
            .unwrap();
        stats.update_with("jobs".into(), 0, |n| n + 1).unwrap();
        jobs.task_done().unwrap();
        done += 1;
    }
    let _g = lock.lock().unwrap();
    println!("[worker {id}] did {done} jobs");
    done
}

/// Waits on the condition (lock held, released while it sleeps) until the
/// dict says the batch is ready.
fn wait_ready(args: (Condition, DictProxy<String, u64>)) -> u64 {
    let (cond, flags) = args;
    let _g = cond.lock().unwrap();
    let ready = || flags.get(&"ready".into()).unwrap_or(None).is_some();
    let acquired = cond.wait_for(ready).unwrap();
    assert_eq!(acquired, Acquired::Clean, "nobody died holding the lock");
    flags.get(&"ready".into()).unwrap().unwrap_or(0)
}

fn holder(lock: multiproc::Lock) {
    let _g = lock.lock().unwrap();
    // Dies holding the lock: its lease ends, and the next acquirer is told.
    std::process::exit(0);
}

fn main() {
    multiproc::init();
    let (url, server) = match std::env::var("REDIS_URL") {
        Ok(url) => (url, None),
        Err(_) => {
            let (url, child) = start_redis();
            (url, Some(child))
        }
    };
    let m = RedisManager::connect(&url)
        .unwrap()
        .prefix("example")
        .unwrap()
        .lease(Duration::from_millis(500))
        .unwrap();
    m.clear().unwrap();

    let jobs = m.joinable_queue::<u32>("jobs").unwrap();
    for n in 1..=100 {
        jobs.put(n).unwrap();
    }
    let mut workers: Vec<_> = (1..=3)
        .map(|id| {
            let mut p = Process::new(worker, (url.clone(), id));
            p.start().unwrap();
            p
        })
        .collect();
    jobs.join().unwrap();
    let total: u32 = workers.iter_mut().map(|p| p.join().unwrap()).sum();
    let stats = m.dict::<String, u64>("stats").unwrap();
    println!(
        "jobs done: {total}, counted: {:?}, sum of squares: {:?}",
        stats.get(&"jobs".into()).unwrap(),
        stats.get(&"squares".into()).unwrap()
    );

    // A condition: the child sleeps in Redis until notified, with the
    // lock released meanwhile; checking the flag under the lock means no
    // notify can be missed, whichever side gets there first.
    let cond = m.condition("batch").unwrap();
    let flags = m.dict::<String, u64>("flags").unwrap();
    let mut p = Process::new(wait_ready, (cond.clone(), flags.clone()));
    p.start().unwrap();
    {
        let _g = cond.lock().unwrap();
        flags.insert("ready".into(), 42).unwrap();
        cond.notify_all().unwrap();
    }
    println!("condition: the waiter saw ready = {}", p.join().unwrap());

    // A lock whose holder exits without releasing it passes on when its
    // lease ends, and the next holder is told.
    let lock = m.lock("shared").unwrap();
    let mut p = Process::new(holder, lock.clone());
    p.start().unwrap();
    let _ = p.join();
    match lock.acquire().unwrap() {
        Acquired::OwnerDied { .. } => println!("lock: previous holder died holding it"),
        Acquired::Clean => println!("lock: taken cleanly"),
    }
    lock.release().unwrap();

    println!("keys deleted by clear(): {}", m.clear().unwrap());
    drop(server);
}

/// A `redis-server` this example started: stopped and reaped on drop.
struct OwnServer(Child);

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `redis-server` on a free loopback port, without persistence.
fn start_redis() -> (String, OwnServer) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let server = OwnServer(
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (or set REDIS_URL)"),
    );
    let url = format!("redis://127.0.0.1:{port}/0");
    // Wait until it answers: nothing can tell us sooner.
    for _ in 0..500 {
        if RedisManager::connect(&url).is_ok() {
            return (url, server);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("redis-server did not start");
}
