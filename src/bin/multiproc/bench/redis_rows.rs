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

/// A plain TCP connection to a server that sends PING and reads PONG,
/// the protocol written by hand: the floor of any one-round-trip call.
struct Pinger {
    conn: TcpStream,
}

impl Pinger {
    fn connect(server: &Server) -> multiproc::Result<Pinger> {
        let conn = TcpStream::connect(("127.0.0.1", server.port))?;
        conn.set_nodelay(true)?;
        conn.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Pinger { conn })
    }

    fn ping(&mut self) -> std::io::Result<()> {
        let mut pong = [0u8; 7];
        self.conn.write_all(b"*1\r\n$4\r\nPING\r\n")?;
        self.conn.read_exact(&mut pong)?;
        if &pong == b"+PONG\r\n" {
            Ok(())
        } else {
            Err(std::io::Error::other(format!(
                "PING answered {:?}",
                String::from_utf8_lossy(&pong)
            )))
        }
    }
}

/// `redis/ping`: one PING round trip on a fresh server.
pub fn ping(scale: &Scale) -> multiproc::Result<Figure> {
    let server = Server::start()?;
    let mut pinger = Pinger::connect(&server)?;
    let mut failure = None;
    let figure = per_call("redis/ping", scale.samples, 200 * scale.k, || {
        if failure.is_none() {
            failure = pinger.ping().err();
        }
    });
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(figure),
    }
}

/// Times `op` (`calls` Redis calls each) against `server`, and a PING
/// on its own connection to the same server, in alternate samples of
/// `batch` each: the two medians see the same machine (where the server
/// and this process run, what else runs), which a `redis/ping` row
/// measured at another moment may not. The figure's `floor_ns` is the
/// PING's median times `calls`.
fn beside_ping(
    key: &'static str,
    server: &Server,
    scale: &Scale,
    batch: usize,
    calls: usize,
    mut op: impl FnMut() -> multiproc::Result<()>,
) -> multiproc::Result<Figure> {
    let mut pinger = Pinger::connect(server)?;
    // A call that fails would be timed as a fast one: fail the row instead.
    op()?;
    pinger.ping()?;
    let (mut ours, mut pings) = (Vec::new(), Vec::new());
    for _ in 0..scale.samples.max(1) {
        let mut failed = Ok(());
        ours.push(time_ops(batch, || {
            for _ in 0..batch {
                if let Err(e) = op() {
                    failed = Err(e);
                    return;
                }
            }
        }));
        failed?;
        let mut failed = Ok(());
        pings.push(time_ops(batch, || {
            for _ in 0..batch {
                if let Err(e) = pinger.ping() {
                    failed = Err(e);
                    return;
                }
            }
        }));
        failed?;
    }
    let mut figure = summarize(key, &mut ours, None);
    let ping = summarize(key, &mut pings, None);
    figure.floor_ns = Some(ping.median_ns * calls as f64);
    Ok(figure)
}

/// A `RedisManager` on a fresh server, and the server.
fn manager() -> multiproc::Result<(RedisManager, Server)> {
    let server = Server::start()?;
    let m = RedisManager::connect(&server.url())?.prefix("bench")?;
    Ok((m, server))
}

/// `redis/dict_get`: one `get` of a dict kept in Redis (a hash field).
pub fn dict_get(scale: &Scale) -> multiproc::Result<Figure> {
    let (m, server) = manager()?;
    let d = m.dict::<u32, u64>("d")?;
    d.insert(1, 7)?;
    beside_ping("redis/dict_get", &server, scale, 200 * scale.k, 1, || {
        std::hint::black_box(d.get(&1)?);
        Ok(())
    })
}

/// `redis/queue_put_get`: a `put` and a `get` on a queue kept in Redis
/// (two calls: its floor is two PINGs).
pub fn queue_put_get(scale: &Scale) -> multiproc::Result<Figure> {
    let (m, server) = manager()?;
    let q = m.queue::<u64>("q")?;
    beside_ping(
        "redis/queue_put_get",
        &server,
        scale,
        100 * scale.k,
        2,
        || {
            q.put(7)?;
            std::hint::black_box(q.get()?);
            Ok(())
        },
    )
}

/// `redis/lock_acquire_release`: `try_acquire` and `release` of a lock
/// kept in Redis (two calls: its floor is two PINGs).
pub fn lock_acquire_release(scale: &Scale) -> multiproc::Result<Figure> {
    let (m, server) = manager()?;
    let lock = m.lock("l")?;
    beside_ping(
        "redis/lock_acquire_release",
        &server,
        scale,
        100 * scale.k,
        2,
        || {
            let _ = lock.try_acquire()?;
            lock.release()
        },
    )
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
