//! The `redis/*` rows (built with the `redis` feature only): a Redis
//! server started here for the run, one plain PING round trip as the
//! floor, `RedisManager` objects beside it, and the distributed `Pool.map`
//! with two worker processes.
//!
//! The server is a `redis-server` from `PATH` on a free loopback port,
//! without persistence (`--save "" --appendonly no`); it and the workers
//! (this binary, started with `MULTIPROC_WORKER`) are stopped by pid when
//! the row ends, whatever its outcome.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use multiproc::{Error, Pool, RedisManager};

use super::{Scale, square};
use crate::stats::{Figure, per_call, summarize, time_ops};

/// How long the server may take to answer on its port.
const START_WITHIN: Duration = Duration::from_secs(20);
/// A bound on one map of the row: a stuck worker fails the row, never hangs it.
const MAP_WITHIN: Duration = Duration::from_secs(300);

/// A `redis-server` this run started; SIGKILLed by pid and reaped on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start() -> multiproc::Result<Server> {
        let unavailable = |cause: String| Error::BackendUnavailable {
            backend: "redis",
            cause,
        };
        // A port the kernel just handed out; tried again if another
        // process takes it before the server binds it.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| unavailable(format!("cannot start redis-server: {e}")))?;
            let mut server = Server { child, port };
            if server.wait_ready() {
                return Ok(server);
            }
        }
        Err(unavailable(
            "redis-server did not start on a free port in 5 tries".into(),
        ))
    }

    /// Whether the server answers before [`START_WITHIN`] (false at once if it exited).
    fn wait_ready(&mut self) -> bool {
        let start = Instant::now();
        while start.elapsed() < START_WITHIN {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            // A process we do not control: nothing can signal readiness.
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // `Child::kill` signals our own unreaped child by its pid.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Worker processes of a distributed pool: this binary started with
/// `MULTIPROC_WORKER`; SIGKILLed by pid and reaped on drop.
struct Workers(Vec<Child>);

impl Workers {
    fn start(url: &str, name: &str, n: usize) -> multiproc::Result<Workers> {
        let exe = std::env::current_exe()?;
        let mut workers = Workers(Vec::with_capacity(n));
        for _ in 0..n {
            let child = Command::new(&exe)
                .env("MULTIPROC_WORKER", format!("{url}/{name}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()?;
            workers.0.push(child);
        }
        Ok(workers)
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `redis/ping`: one PING and its PONG over a plain TCP connection, the
/// protocol written by hand: the floor of any one-round-trip Redis call.
pub fn ping(scale: &Scale) -> multiproc::Result<Figure> {
    let server = Server::start()?;
    let mut conn = TcpStream::connect(("127.0.0.1", server.port))?;
    conn.set_nodelay(true)?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut failure: Option<std::io::Error> = None;
    let mut pong = [0u8; 7];
    let figure = per_call("redis/ping", scale.samples, 200 * scale.k, || {
        if failure.is_some() {
            return;
        }
        let round = conn
            .write_all(b"*1\r\n$4\r\nPING\r\n")
            .and_then(|()| conn.read_exact(&mut pong));
        match round {
            Ok(()) if &pong == b"+PONG\r\n" => {}
            Ok(()) => {
                failure = Some(std::io::Error::other(format!(
                    "PING answered {:?}",
                    String::from_utf8_lossy(&pong)
                )))
            }
            Err(e) => failure = Some(e),
        }
    });
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(figure),
    }
}

/// A `RedisManager` on a fresh server, and the server.
fn manager() -> multiproc::Result<(RedisManager, Server)> {
    let server = Server::start()?;
    let m = RedisManager::connect(&server.url())?.prefix("bench")?;
    Ok((m, server))
}

/// `redis/dict_get`: one `get` of a dict kept in Redis (a hash field).
pub fn dict_get(scale: &Scale) -> multiproc::Result<Figure> {
    let (m, _server) = manager()?;
    let d = m.dict::<u32, u64>("d")?;
    d.insert(1, 7)?;
    // A call that fails would be timed as a fast one: fail the row instead.
    d.get(&1)?;
    Ok(per_call(
        "redis/dict_get",
        scale.samples,
        200 * scale.k,
        || {
            let _ = std::hint::black_box(d.get(&1));
        },
    ))
}

/// `redis/queue_put_get`: a `put` and a `get` on a queue kept in Redis
/// (two calls: compare with two PINGs).
pub fn queue_put_get(scale: &Scale) -> multiproc::Result<Figure> {
    let (m, _server) = manager()?;
    let q = m.queue::<u64>("q")?;
    q.put(7)?;
    q.get()?;
    Ok(per_call(
        "redis/queue_put_get",
        scale.samples,
        100 * scale.k,
        || {
            if q.put(7).is_ok() {
                let _ = std::hint::black_box(q.get());
            }
        },
    ))
}

/// `redis/lock_acquire_release`: `try_acquire` and `release` of a lock
/// kept in Redis (two calls: compare with two PINGs).
pub fn lock_acquire_release(scale: &Scale) -> multiproc::Result<Figure> {
    let (m, _server) = manager()?;
    let lock = m.lock("l")?;
    let _ = lock.try_acquire()?;
    lock.release()?;
    Ok(per_call(
        "redis/lock_acquire_release",
        scale.samples,
        100 * scale.k,
        || {
            if lock.try_acquire().is_ok() {
                let _ = lock.release();
            }
        },
    ))
}

/// `redis/pool_map_100k`: per-task time of a distributed `Pool.map` of
/// 100k small tasks (10k in a smoke run), one task a chunk (as every task
/// is a queue item of its own in CPython's recipe, its baseline), run by
/// two worker processes on this machine.
pub fn pool_map_100k(scale: &Scale) -> multiproc::Result<Figure> {
    pool_map("redis/pool_map_100k", scale, Some(1))
}

/// `redis/pool_map_100k_default`: the same map with the pool's
/// default chunk size (a few thousand tasks a chunk here).
pub fn pool_map_100k_default(scale: &Scale) -> multiproc::Result<Figure> {
    pool_map("redis/pool_map_100k_default", scale, None)
}

fn pool_map(
    key: &'static str,
    scale: &Scale,
    chunksize: Option<usize>,
) -> multiproc::Result<Figure> {
    let server = Server::start()?;
    let url = server.url();
    let _workers = Workers::start(&url, "bench", 2)?;
    let pool = Pool::builder().redis(&url).name("bench").build()?;
    // Both workers serving before the clock starts (their heartbeats list
    // them), then a warm-up map.
    let start = Instant::now();
    while pool.workers()?.len() < 2 {
        if start.elapsed() > START_WITHIN {
            return Err(Error::InvalidState(
                "the two bench workers did not start serving".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    pool.chunksize(1)
        .map_async(square, 0..64u64)?
        .get_timeout(MAP_WITHIN)?;
    let n = 10_000 * scale.k;
    let mut per_op = Vec::new();
    for _ in 0..scale.samples.min(5) {
        let mut result = Ok(());
        let ns = time_ops(n, || {
            let r = match chunksize {
                Some(c) => pool.chunksize(c).map_async(square, 0..n as u64),
                None => pool.map_async(square, 0..n as u64),
            };
            result = r.and_then(|r| r.get_timeout(MAP_WITHIN)).map(drop)
        });
        result?;
        per_op.push(ns);
    }
    drop(pool);
    Ok(summarize(key, &mut per_op, None))
}
