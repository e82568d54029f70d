//! `multiproc bench`: every operation's median and p99, beside CPython's.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Duration;

use multiproc::{
    Barrier, Connection, Event, Lock, Manager, Pipe, Pool, Process, Queue, RLock, RawValue,
    StartMethod, ThreadPool, Value,
};

use multiproc::shared_memory::{Item, ShareableList, SharedMemory};

use crate::stats::{Figure, fmt_ns, per_call, summarize, time_ops};

mod memory_rows;
#[cfg(feature = "redis")]
mod redis_rows;

/// Options of `multiproc bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Tiny iteration counts (seconds); used by the tests.
    #[arg(long)]
    smoke: bool,
    /// Only operations whose key contains TEXT (repeatable). The `redis/*`
    /// rows exist in a build with the `redis` feature (`--features
    /// cli,redis`); they start their own redis-server, which must be on PATH.
    #[arg(long, value_name = "TEXT")]
    filter: Vec<String>,
    /// Also write the figures as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Do not run CPython's baseline (benches/python/baseline.py).
    #[arg(long)]
    no_python: bool,
    /// Make waiters sleep instead of spinning (MULTIPROC_SPIN=0).
    #[arg(long)]
    sleep: bool,
    /// Print the operation keys and exit.
    #[arg(long)]
    list: bool,
}

/// Runs `multiproc bench`.
pub fn command(args: Args) -> ExitCode {
    if args.list {
        for (key, _) in operations() {
            println!("{key}");
        }
        for (key, _) in memory_rows::operations() {
            println!("{key}");
        }
        return ExitCode::SUCCESS;
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("multiproc bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Sample counts, scaled down in smoke mode.
pub struct Scale {
    samples: usize,
    k: usize,
    smoke: bool,
}

/// One operation's measurement.
pub type OpFn = fn(&Scale) -> multiproc::Result<Figure>;

/// Every operation the command knows, in report order.
pub fn operations() -> Vec<(&'static str, OpFn)> {
    #[allow(unused_mut)]
    let mut ops = vec![
        ("process/spawn_join", spawn_join as OpFn),
        ("process/fork_join", fork_join),
        ("process/forkserver_join", forkserver_join),
        ("value/locked_increment", value_locked_increment),
        ("value/fetch_add", value_fetch_add),
        ("value/raw_read", value_raw_read),
        ("lock/acquire_release", lock_acquire_release),
        ("rlock/acquire_release", rlock_acquire_release),
        ("event/ping_pong", event_ping_pong),
        ("barrier/wait_2", barrier_wait_2),
        ("pool/map_chunksize_1_batched", pool_map_chunksize_1),
        // One task and one result a message (chunks_per_message(1)), as CPython's.
        (
            "pool/map_chunksize_1_unbatched",
            pool_map_chunksize_1_unbatched,
        ),
        ("pool/map_default", pool_map_default),
        ("pool/imap_chunksize_1", pool_imap_chunksize_1),
        ("pool/cpu_1ms", pool_cpu_1ms),
        ("pool/cpu_1ms_one_process", cpu_1ms_one_process),
        ("threadpool/map_chunksize_1", threadpool_map_chunksize_1),
        ("queue/throughput_8b", queue_throughput_8b),
        ("queue/throughput_1mib", queue_throughput_1mib),
        ("pipe/round_trip", pipe_round_trip),
        ("manager/dict_get", manager_dict_get),
        ("manager/dict_get_2_clients", manager_dict_get_2_clients),
        ("manager/dict_get_1mib", manager_dict_get_1mib),
        ("manager/dict_set", manager_dict_set),
        ("lock/from_manager", manager_lock),
        ("queue/from_manager_put_get", manager_queue_put_get),
        ("manager/create_object", manager_create_object),
        ("manager/tcp_dict_get", manager_tcp_dict_get),
        ("manager/tcp_lock", manager_tcp_lock),
        ("manager/tcp_queue_put_get", manager_tcp_queue_put_get),
        ("tcp/round_trip_64b", tcp_round_trip),
        ("proxy_vs_raw/counter_proxy", counter_proxy),
        ("proxy_vs_raw/counter_raw", counter_raw),
        ("pyclient/put_1cpu", pyclient_put_1cpu),
        ("pyclient/get_1cpu", pyclient_get_1cpu),
        ("pyclient/connect_1cpu", pyclient_connect_1cpu),
        ("pyclient/worker_start_1cpu", pyclient_worker_start_1cpu),
        ("pyclient/put_2cpu", pyclient_put_2cpu),
        ("pyclient/get_2cpu", pyclient_get_2cpu),
        ("pyclient/connect_2cpu", pyclient_connect_2cpu),
        ("pyclient/worker_start_2cpu", pyclient_worker_start_2cpu),
        ("contended/pipe_round_trip", contended_pipe_round_trip),
        (
            "contended/queue_throughput_8b",
            contended_queue_throughput_8b,
        ),
        ("contended/manager_dict_get", contended_manager_dict_get),
        ("contended/event_ping_pong", contended_event_ping_pong),
        ("contended/pool_map_chunksize_1_batched", contended_pool_map),
        // What the machine allows there: no library's round trip between two
        // processes on one CPU can beat two context switches.
        ("floor/same_cpu_switch_round_trip", floor_same_cpu_switch),
        // CPU time (utime + stime), not elapsed time: per message / request at
        // 10k/s (µs = % of a core), or per second of quiet for the idle rows
        // (10 ms = 1 % of a core).
        ("cpu/queue_consumer_10k", cpu_queue_consumer_10k),
        ("cpu/manager_server_10k", cpu_manager_server_10k),
        ("cpu/idle_manager", cpu_idle_manager),
        ("cpu/idle_pool", cpu_idle_pool),
        ("cpu/blocked_get", cpu_blocked_get),
        ("shared_memory/create_unlink_4k", shm_create_unlink),
        ("shared_memory/attach_4k", shm_attach),
        ("shared_memory/write_1mib", shm_write_1mib),
        ("shared_memory/read_1mib", shm_read_1mib),
        ("shared_memory/list_get_int", shm_list_get_int),
        ("shared_memory/list_set_int", shm_list_set_int),
        ("shared_memory/list_get_str", shm_list_get_str),
    ];
    // Past one machine (feature `redis`): a redis-server started for the
    // row; one plain PING round trip is the floor of every Redis call.
    #[cfg(feature = "redis")]
    ops.extend([
        ("redis/ping", redis_rows::ping as OpFn),
        ("redis/dict_get", redis_rows::dict_get),
        ("redis/queue_put_get", redis_rows::queue_put_get),
        (
            "redis/lock_acquire_release",
            redis_rows::lock_acquire_release,
        ),
        ("redis/pool_map_100k", redis_rows::pool_map_100k),
        (
            "redis/pool_map_100k_default",
            redis_rows::pool_map_100k_default,
        ),
    ]);
    ops
}

fn noop(_: ()) {}

fn process_join(
    key: &'static str,
    method: StartMethod,
    scale: &Scale,
) -> multiproc::Result<Figure> {
    let mut per_op = Vec::with_capacity(scale.samples);
    for i in 0..=scale.samples {
        let ns = time_ops(1, || {
            let mut p = Process::new(noop, ()).start_method(method);
            if p.start().is_ok() {
                let _ = p.join();
            }
        });
        if i > 0 {
            per_op.push(ns);
        }
    }
    Ok(summarize(key, &mut per_op, None))
}

fn spawn_join(scale: &Scale) -> multiproc::Result<Figure> {
    process_join("process/spawn_join", StartMethod::Spawn, scale)
}

fn fork_join(scale: &Scale) -> multiproc::Result<Figure> {
    process_join("process/fork_join", StartMethod::Fork, scale)
}

/// Start+join of a child the forkserver forks; the warm-up sample (not
/// counted) starts the server.
fn forkserver_join(scale: &Scale) -> multiproc::Result<Figure> {
    process_join("process/forkserver_join", StartMethod::Forkserver, scale)
}

fn value_locked_increment(scale: &Scale) -> multiproc::Result<Figure> {
    let v = Value::new(0u64)?;
    Ok(per_call(
        "value/locked_increment",
        scale.samples,
        10_000 * scale.k,
        || {
            if let Ok(mut g) = v.lock() {
                *g += 1;
            }
        },
    ))
}

fn value_fetch_add(scale: &Scale) -> multiproc::Result<Figure> {
    let v = RawValue::new(0u64)?;
    Ok(per_call(
        "value/fetch_add",
        scale.samples,
        10_000 * scale.k,
        || {
            v.fetch_add(1);
        },
    ))
}

fn value_raw_read(scale: &Scale) -> multiproc::Result<Figure> {
    let v = RawValue::new(7u64)?;
    Ok(per_call(
        "value/raw_read",
        scale.samples,
        10_000 * scale.k,
        || {
            std::hint::black_box(v.get());
        },
    ))
}

fn lock_acquire_release(scale: &Scale) -> multiproc::Result<Figure> {
    let l = Lock::new()?;
    Ok(per_call(
        "lock/acquire_release",
        scale.samples,
        10_000 * scale.k,
        || {
            if let Ok(g) = l.lock() {
                drop(g);
            }
        },
    ))
}

fn rlock_acquire_release(scale: &Scale) -> multiproc::Result<Figure> {
    let l = RLock::new()?;
    Ok(per_call(
        "rlock/acquire_release",
        scale.samples,
        10_000 * scale.k,
        || {
            if let Ok(g) = l.lock() {
                drop(g);
            }
        },
    ))
}

/// Runs `child(arg)` in a forked process while `parent` measures; joins it.
fn with_peer<A: multiproc::Shareable>(
    child: fn(A),
    arg: A,
    parent: impl FnOnce() -> Figure,
) -> multiproc::Result<Figure> {
    let mut p = Process::new(child, arg).start_method(StartMethod::Fork);
    p.start()?;
    let figure = parent();
    p.join_timeout(Duration::from_secs(60))?;
    Ok(figure)
}

fn event_echo((ping, pong, n): (Event, Event, u64)) {
    for _ in 0..n {
        if ping.wait().is_err() {
            return;
        }
        ping.clear().unwrap();
        pong.set().unwrap();
    }
}

fn event_ping_pong(scale: &Scale) -> multiproc::Result<Figure> {
    let (ping, pong) = (Event::new()?, Event::new()?);
    let batch = 200 * scale.k;
    let total = (batch * (scale.samples + 1)) as u64;
    with_peer(event_echo, (ping.clone(), pong.clone(), total), || {
        per_call("event/ping_pong", scale.samples, batch, || {
            ping.set().unwrap();
            pong.wait().expect("a plain event's wait cannot fail");
            pong.clear().unwrap();
        })
    })
}

fn barrier_party((b, n): (Barrier, u64)) {
    for _ in 0..n {
        if b.wait().is_err() {
            return;
        }
    }
}

fn barrier_wait_2(scale: &Scale) -> multiproc::Result<Figure> {
    let b = Barrier::new(2)?;
    let batch = 200 * scale.k;
    let total = (batch * (scale.samples + 1)) as u64;
    with_peer(barrier_party, (b.clone(), total), || {
        per_call("barrier/wait_2", scale.samples, batch, || {
            let _ = b.wait();
        })
    })
}

/// Per-task time of `pool.chunksize(chunksize).map(f, 0..n)`.
fn pool_map(
    key: &'static str,
    scale: &Scale,
    n: usize,
    chunksize: Option<usize>,
    f: fn(u64) -> u64,
) -> multiproc::Result<Figure> {
    pool_map_with(key, scale, n, chunksize, None, f)
}

/// [`pool_map`] on a pool whose order messages carry at most
/// `chunks_per_message` chunks (the pool's default if `None`).
fn pool_map_with(
    key: &'static str,
    scale: &Scale,
    n: usize,
    chunksize: Option<usize>,
    chunks_per_message: Option<usize>,
    f: fn(u64) -> u64,
) -> multiproc::Result<Figure> {
    let mut builder = Pool::builder().processes(2).start_method(StartMethod::Fork);
    if let Some(c) = chunks_per_message {
        builder = builder.chunks_per_message(c);
    }
    let pool = builder.build()?;
    pool.chunksize(1).map(f, 0..64)?;
    let mut per_op = Vec::new();
    for _ in 0..scale.samples.min(10) {
        let mut result = Ok(());
        let ns = time_ops(n, || {
            result = match chunksize {
                Some(c) => pool.chunksize(c).map(f, 0..n as u64),
                None => pool.map(f, 0..n as u64),
            }
            .map(drop)
        });
        result?;
        per_op.push(ns);
    }
    Ok(summarize(key, &mut per_op, None))
}

/// `map` with chunksize 1: the pool still sends up to 16 chunks in one
/// message (and their results in one), hence the name.
fn pool_map_chunksize_1(scale: &Scale) -> multiproc::Result<Figure> {
    pool_map(
        "pool/map_chunksize_1_batched",
        scale,
        2_000 * scale.k,
        Some(1),
        square,
    )
}

/// `map` with chunksize 1 and one chunk per message: each task travels to a
/// worker, and its result back, in a message of its own, as in CPython's
/// pool (whose figure here is the same call as `_batched`'s).
fn pool_map_chunksize_1_unbatched(scale: &Scale) -> multiproc::Result<Figure> {
    pool_map_with(
        "pool/map_chunksize_1_unbatched",
        scale,
        2_000 * scale.k,
        Some(1),
        Some(1),
        square,
    )
}

fn pool_map_default(scale: &Scale) -> multiproc::Result<Figure> {
    pool_map("pool/map_default", scale, 10_000 * scale.k, None, square)
}

/// A forked `Pool(2)` that has run one small map (its workers started and warm).
fn warm_pool() -> multiproc::Result<Pool> {
    let pool = Pool::builder()
        .processes(2)
        .start_method(StartMethod::Fork)
        .build()?;
    pool.chunksize(1).map(square, 0..64)?;
    Ok(pool)
}

/// `imap` with its default chunksize (1, as Python's): per item, from the
/// call to the last result read.
fn pool_imap_chunksize_1(scale: &Scale) -> multiproc::Result<Figure> {
    let pool = warm_pool()?;
    let n = 2_000 * scale.k;
    let mut per_op = Vec::new();
    for _ in 0..scale.samples.min(10) {
        let mut result = Ok(());
        let ns = time_ops(n, || {
            result = pool
                .imap(square, 0..n as u64)
                .and_then(|mut results| results.try_for_each(|r| r.map(drop)));
        });
        result?;
        per_op.push(ns);
    }
    Ok(summarize("pool/imap_chunksize_1", &mut per_op, None))
}

/// About a millisecond of CPU work.
fn cpu_1ms(seed: u64) -> u64 {
    let start = std::time::Instant::now();
    let mut x = seed;
    while start.elapsed() < Duration::from_millis(1) {
        for _ in 0..1000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
        }
    }
    x
}

fn pool_cpu_1ms(scale: &Scale) -> multiproc::Result<Figure> {
    pool_map("pool/cpu_1ms", scale, 20 * scale.k, Some(1), cpu_1ms)
}

fn cpu_1ms_one_process(scale: &Scale) -> multiproc::Result<Figure> {
    Ok(per_call(
        "pool/cpu_1ms_one_process",
        scale.samples.min(10),
        20 * scale.k,
        || {
            std::hint::black_box(cpu_1ms(1));
        },
    ))
}

/// Puts `n` copies of `item` and then `None`.
fn produce<T: Clone>((q, item, n): (Queue<Option<T>>, T, u64))
where
    Option<T>: multiproc::Shareable,
    (Queue<Option<T>>, T, u64): multiproc::Shareable,
{
    let item = Some(item);
    for _ in 0..n {
        if q.put(&item).is_err() {
            return;
        }
    }
    let _ = q.put(&None);
}

/// Per-message time of a child producing `n` messages into a queue we drain.
fn queue_throughput<T: Clone>(
    key: &'static str,
    scale: &Scale,
    item: T,
    n: usize,
    bytes: Option<f64>,
) -> multiproc::Result<Figure>
where
    Option<T>: multiproc::Shareable,
    (Queue<Option<T>>, T, u64): multiproc::Shareable,
{
    let mut per_op = Vec::new();
    for _ in 0..scale.samples.min(10) {
        let q = Queue::<Option<T>>::new()?;
        let mut p = Process::new(produce::<T>, (q.clone(), item.clone(), n as u64))
            .start_method(StartMethod::Fork);
        p.start()?;
        // Time from the first message on: process start is measured elsewhere.
        let first = q.get()?;
        let mut got = usize::from(first.is_some());
        let ns = time_ops(n.saturating_sub(1), || {
            while let Ok(Some(_)) = q.get() {
                got += 1;
            }
        });
        p.join_timeout(Duration::from_secs(60))?;
        if got != n {
            return Err(multiproc::Error::InvalidState(format!(
                "{key}: {got} of {n} arrived"
            )));
        }
        per_op.push(ns);
    }
    Ok(summarize(key, &mut per_op, bytes))
}

fn queue_throughput_8b(scale: &Scale) -> multiproc::Result<Figure> {
    queue_throughput("queue/throughput_8b", scale, 7u64, 20_000 * scale.k, None)
}

fn queue_throughput_1mib(scale: &Scale) -> multiproc::Result<Figure> {
    let mib = vec![7u8; 1 << 20];
    queue_throughput(
        "queue/throughput_1mib",
        scale,
        mib,
        20 * scale.k,
        Some((1 << 20) as f64),
    )
}

fn echo(conn: Connection<u64>) {
    while let Ok(x) = conn.recv() {
        if conn.send(x).is_err() {
            return;
        }
    }
}

fn pipe_round_trip(scale: &Scale) -> multiproc::Result<Figure> {
    let (here, there) = Pipe::new::<u64>()?;
    let mut p = Process::new(echo, there).start_method(StartMethod::Fork);
    p.start()?;
    let figure = per_call("pipe/round_trip", scale.samples, 200 * scale.k, || {
        if here.send(1).is_ok() {
            let _ = here.recv();
        }
    });
    here.close();
    p.join_timeout(Duration::from_secs(60))?;
    Ok(figure)
}

fn manager_tcp_dict_get(scale: &Scale) -> multiproc::Result<Figure> {
    let key: &[u8] = b"bench-key";
    let master = multiproc::BaseManager::new()
        .authkey(key)
        .register::<multiproc::DictProxy<u32, u64>>("d")
        .start()?;
    let client = multiproc::BaseManager::new()
        .address(master.address().to_string())
        .authkey(key)
        .connect()?;
    let d: multiproc::DictProxy<u32, u64> = client.get("d")?;
    d.insert(1, 0)?;
    let figure = per_call("manager/tcp_dict_get", scale.samples, 50 * scale.k, || {
        let _ = std::hint::black_box(d.get(&1));
    });
    drop(d);
    drop(client);
    master.shutdown()?;
    Ok(figure)
}

/// A remote manager reached over TCP loopback from this process.
fn tcp_manager() -> multiproc::Result<(multiproc::RemoteManager, multiproc::RemoteManager)> {
    let key: &[u8] = b"bench-key";
    let master = multiproc::BaseManager::new().authkey(key).start()?;
    let client = multiproc::BaseManager::new()
        .address(master.address().to_string())
        .authkey(key)
        .connect()?;
    Ok((master, client))
}

/// Acquire and release of a lock the server keeps: two round trips.
fn manager_tcp_lock(scale: &Scale) -> multiproc::Result<Figure> {
    let (master, client) = tcp_manager()?;
    let lock = client.lock()?;
    let figure = per_call("manager/tcp_lock", scale.samples, 20 * scale.k, || {
        if lock.try_acquire().is_ok() {
            let _ = lock.release();
        }
    });
    drop(lock);
    drop(client);
    master.shutdown()?;
    Ok(figure)
}

/// A put and a get on a queue the server keeps: two round trips.
fn manager_tcp_queue_put_get(scale: &Scale) -> multiproc::Result<Figure> {
    let (master, client) = tcp_manager()?;
    let q = client.queue::<u64>()?;
    let figure = per_call(
        "manager/tcp_queue_put_get",
        scale.samples,
        20 * scale.k,
        || {
            if q.put(7).is_ok() {
                let _ = std::hint::black_box(q.get());
            }
        },
    );
    drop(q);
    drop(client);
    master.shutdown()?;
    Ok(figure)
}

/// A plain TCP loopback round trip of a 64-byte frame, the floor for remote calls.
fn tcp_round_trip(scale: &Scale) -> multiproc::Result<Figure> {
    use multiproc::connection::{Address, Listener, SocketConnection};
    let address: Address = "127.0.0.1:0"
        .parse()
        .map_err(|e| multiproc::Error::InvalidArgument(format!("{e:?}")))?;
    let listener = Listener::bind(&address, None)?;
    let bound = listener.address().clone();
    let server = std::thread::spawn(move || -> multiproc::Result<()> {
        let mut conn: SocketConnection<()> = listener.accept()?;
        while let Ok(frame) = conn.recv_bytes() {
            conn.send_bytes(&frame)?;
        }
        Ok(())
    });
    let mut conn: SocketConnection<()> = SocketConnection::connect(&bound, None)?;
    let frame = [7u8; 64];
    let figure = per_call("tcp/round_trip_64b", scale.samples, 50 * scale.k, || {
        if conn.send_bytes(&frame).is_ok() {
            let _ = conn.recv_bytes();
        }
    });
    drop(conn);
    let _ = server.join();
    Ok(figure)
}

fn square(x: u64) -> u64 {
    x * x
}

fn threadpool_map_chunksize_1(scale: &Scale) -> multiproc::Result<Figure> {
    let pool = ThreadPool::new(2)?;
    let n = 2_000 * scale.k;
    pool.chunksize(1).map(square, 0..64)?;
    let mut per_op = Vec::new();
    for _ in 0..scale.samples {
        let mut result = Ok(());
        let ns = time_ops(n, || {
            result = pool.chunksize(1).map(square, 0..n as u64).map(drop)
        });
        result?;
        per_op.push(ns);
    }
    Ok(summarize("threadpool/map_chunksize_1", &mut per_op, None))
}

/// Runs `f` with a fresh manager, shutting it down after.
fn with_manager(
    f: impl FnOnce(&Manager) -> multiproc::Result<Figure>,
) -> multiproc::Result<Figure> {
    let manager = Manager::start()?;
    let figure = f(&manager);
    manager.shutdown()?;
    figure
}

fn manager_dict_get(scale: &Scale) -> multiproc::Result<Figure> {
    with_manager(|m| {
        let d = m.dict::<u32, u64>()?;
        d.insert(1, 1)?;
        Ok(per_call(
            "manager/dict_get",
            scale.samples,
            200 * scale.k,
            || {
                std::hint::black_box(d.get(&1).ok());
            },
        ))
    })
}

/// One client of `manager/dict_get_2_clients`: `rounds` rounds of `n`
/// gets on its own dict, each between two waits on `start`.
fn dict_reader((d, start, rounds, n): (multiproc::DictProxy<u32, u64>, Barrier, u64, u64)) {
    let wait = || start.wait_timeout(Duration::from_secs(120)).is_ok();
    for _ in 0..rounds {
        if !wait() {
            return;
        }
        for _ in 0..n {
            std::hint::black_box(d.get(&1).ok());
        }
        if !wait() {
            return;
        }
    }
}

/// Two client processes, each getting from its own dict at once: time per
/// get of both together (so ops/s is their total), beside
/// `manager/dict_get`'s one client. Grows with clients when independent
/// objects do not serialise in the server.
fn manager_dict_get_2_clients(scale: &Scale) -> multiproc::Result<Figure> {
    const KEY: &str = "manager/dict_get_2_clients";
    with_manager(|m| {
        let n = (200 * scale.k) as u64;
        let rounds = scale.samples as u64 + 1;
        let start = Barrier::new(3)?;
        let mut clients = Vec::new();
        for _ in 0..2 {
            let d = m.dict::<u32, u64>()?;
            d.insert(1, 1)?;
            let mut p = Process::new(dict_reader, (d, start.clone(), rounds, n))
                .start_method(StartMethod::Fork);
            p.start()?;
            clients.push(p);
        }
        let timeout = Duration::from_secs(120);
        let mut per_op = Vec::new();
        for round in 0..rounds {
            start.wait_timeout(timeout)?;
            let began = std::time::Instant::now();
            start.wait_timeout(timeout)?;
            // The first round warms up.
            if round > 0 {
                per_op.push(began.elapsed().as_nanos() as f64 / (2 * n) as f64);
            }
        }
        for mut p in clients {
            p.join_timeout(timeout)?;
        }
        Ok(summarize(KEY, &mut per_op, None))
    })
}

/// A 1 MiB value: larger than the channel's slots, so it travels through
/// the connection's (kept) overflow segment.
fn manager_dict_get_1mib(scale: &Scale) -> multiproc::Result<Figure> {
    with_manager(|m| {
        let d = m.dict::<u32, Vec<u8>>()?;
        d.insert(1, vec![7u8; 1 << 20])?;
        Ok(per_call(
            "manager/dict_get_1mib",
            scale.samples,
            5 * scale.k,
            || {
                std::hint::black_box(d.get(&1).ok());
            },
        ))
    })
}

fn manager_dict_set(scale: &Scale) -> multiproc::Result<Figure> {
    with_manager(|m| {
        let d = m.dict::<u32, u64>()?;
        Ok(per_call(
            "manager/dict_set",
            scale.samples,
            200 * scale.k,
            || {
                std::hint::black_box(d.insert(1, 2).ok());
            },
        ))
    })
}

fn manager_create_object(scale: &Scale) -> multiproc::Result<Figure> {
    with_manager(|m| {
        Ok(per_call(
            "manager/create_object",
            scale.samples,
            20 * scale.k,
            || {
                std::hint::black_box(m.dict::<u32, u64>().ok());
            },
        ))
    })
}

/// A manager's Lock: it lives in shared memory, so acquiring it crosses to
/// no server (`manager/tcp_lock` does).
fn manager_lock(scale: &Scale) -> multiproc::Result<Figure> {
    with_manager(|m| {
        let l = m.lock()?;
        Ok(per_call(
            "lock/from_manager",
            scale.samples,
            10_000 * scale.k,
            || {
                if let Ok(g) = l.lock() {
                    drop(g);
                }
            },
        ))
    })
}

/// A manager's Queue: it lives in shared memory, so put and get cross to no
/// server (`manager/tcp_queue_put_get` does).
fn manager_queue_put_get(scale: &Scale) -> multiproc::Result<Figure> {
    with_manager(|m| {
        let q = m.queue::<u64>()?;
        Ok(per_call(
            "queue/from_manager_put_get",
            scale.samples,
            1_000 * scale.k,
            || {
                if q.put(1u64).is_ok() {
                    std::hint::black_box(q.get().ok());
                }
            },
        ))
    })
}

fn counter_proxy(scale: &Scale) -> multiproc::Result<Figure> {
    with_manager(|m| {
        let d = m.dict::<u32, u64>()?;
        d.insert(0, 0)?;
        Ok(per_call(
            "proxy_vs_raw/counter_proxy",
            scale.samples,
            200 * scale.k,
            || {
                std::hint::black_box(d.update_with(0, 0, |v| v + 1).ok());
            },
        ))
    })
}

fn counter_raw(scale: &Scale) -> multiproc::Result<Figure> {
    let v = RawValue::new(0u64)?;
    Ok(per_call(
        "proxy_vs_raw/counter_raw",
        scale.samples,
        10_000 * scale.k,
        || v.set(v.get() + 1),
    ))
}

/// Create a tracked 4 KiB named segment, drop it, unlink it (Python:
/// `SharedMemory(create=True, size=4096)`, `close()`, `unlink()`).
fn shm_create_unlink(scale: &Scale) -> multiproc::Result<Figure> {
    Ok(per_call(
        "shared_memory/create_unlink_4k",
        scale.samples,
        20 * scale.k,
        || {
            if let Ok(shm) = SharedMemory::create(None, 4096) {
                let _ = shm.unlink();
            }
        },
    ))
}

/// Attach an existing 4 KiB segment by name and drop it (Python:
/// `SharedMemory(name)`, `close()`).
fn shm_attach(scale: &Scale) -> multiproc::Result<Figure> {
    let shm = SharedMemory::create(None, 4096)?;
    let name = shm.name().to_string();
    let fig = per_call(
        "shared_memory/attach_4k",
        scale.samples,
        20 * scale.k,
        || {
            std::hint::black_box(SharedMemory::attach(&name).ok());
        },
    );
    shm.unlink()?;
    Ok(fig)
}

fn shm_copy_1mib(key: &'static str, scale: &Scale, write: bool) -> multiproc::Result<Figure> {
    const MIB: usize = 1 << 20;
    let shm = SharedMemory::create(None, MIB)?;
    let mut buf = vec![7u8; MIB];
    let batch = 5 * scale.k;
    let mut op = || {
        if write {
            let _ = shm.write(0, &buf);
        } else {
            let _ = shm.read(0, &mut buf);
        }
    };
    op();
    let mut per_op: Vec<f64> = (0..scale.samples)
        .map(|_| {
            time_ops(batch, || {
                for _ in 0..batch {
                    op();
                }
            })
        })
        .collect();
    shm.unlink()?;
    Ok(summarize(key, &mut per_op, Some(MIB as f64)))
}

/// Copy 1 MiB into a mapped segment (Python: `shm.buf[:] = data`).
fn shm_write_1mib(scale: &Scale) -> multiproc::Result<Figure> {
    shm_copy_1mib("shared_memory/write_1mib", scale, true)
}

/// Copy 1 MiB out of a mapped segment (Python: `dst[:] = shm.buf`).
fn shm_read_1mib(scale: &Scale) -> multiproc::Result<Figure> {
    shm_copy_1mib("shared_memory/read_1mib", scale, false)
}

fn with_list(
    key: &'static str,
    scale: &Scale,
    op: impl Fn(&ShareableList),
) -> multiproc::Result<Figure> {
    let list = ShareableList::create(None, &[Item::Int(1), Item::Str("hello world".into())])?;
    let fig = per_call(key, scale.samples, 1000 * scale.k, || op(&list));
    list.shm().unlink()?;
    Ok(fig)
}

/// `ShareableList` item 0, an int (Python: `sl[0]`).
fn shm_list_get_int(scale: &Scale) -> multiproc::Result<Figure> {
    with_list("shared_memory/list_get_int", scale, |l| {
        std::hint::black_box(l.get(0).ok());
    })
}

/// Set `ShareableList` item 0 to an int (Python: `sl[0] = 5`).
fn shm_list_set_int(scale: &Scale) -> multiproc::Result<Figure> {
    with_list("shared_memory/list_set_int", scale, |l| {
        let _ = l.set(0, 5i64);
    })
}

/// `ShareableList` item 1, an 11-byte string (Python: `sl[1]`).
fn shm_list_get_str(scale: &Scale) -> multiproc::Result<Figure> {
    with_list("shared_memory/list_get_str", scale, |l| {
        std::hint::black_box(l.get(1).ok());
    })
}

/// Measures `op` with this thread, and every process it starts meanwhile
/// (peers, pool workers, the manager server), pinned to the CPU it runs on:
/// two processes sharing one CPU, where a waiter that spins only delays its peer.
fn pinned(key: &'static str, scale: &Scale, op: OpFn) -> multiproc::Result<Figure> {
    let pin = multiproc::__internal::sys::sched::pin_to_one_cpu()?;
    let figure = op(scale);
    drop(pin);
    let mut figure = figure?;
    figure.key = key;
    Ok(figure)
}

fn contended_pipe_round_trip(scale: &Scale) -> multiproc::Result<Figure> {
    pinned("contended/pipe_round_trip", scale, pipe_round_trip)
}

fn contended_queue_throughput_8b(scale: &Scale) -> multiproc::Result<Figure> {
    pinned("contended/queue_throughput_8b", scale, queue_throughput_8b)
}

fn contended_manager_dict_get(scale: &Scale) -> multiproc::Result<Figure> {
    pinned("contended/manager_dict_get", scale, manager_dict_get)
}

fn contended_event_ping_pong(scale: &Scale) -> multiproc::Result<Figure> {
    pinned("contended/event_ping_pong", scale, event_ping_pong)
}

fn contended_pool_map(scale: &Scale) -> multiproc::Result<Figure> {
    pinned(
        "contended/pool_map_chunksize_1_batched",
        scale,
        pool_map_chunksize_1,
    )
}

/// Hands the turn back: waits (yielding its CPU) for each odd count and
/// makes it even, `n` times.
fn turn_taker((turn, n): (RawValue<u64>, u64)) {
    for i in 0..n {
        while turn.get() != 2 * i + 1 {
            std::thread::yield_now();
        }
        turn.set(2 * i + 2);
    }
}

/// Two processes on one CPU pass a turn back and forth through a shared
/// word, each yielding its CPU until the turn is its own: a round trip is
/// two context switches and nothing else (no futex, no message), the least
/// any hand-off between processes on one CPU costs on this machine.
fn same_cpu_switch_round_trip(scale: &Scale) -> multiproc::Result<Figure> {
    let turn = RawValue::new(0u64)?;
    let batch = 200 * scale.k;
    let total = (batch * (scale.samples.max(1) + 1)) as u64;
    let mut count = 0u64;
    with_peer(turn_taker, (turn.clone(), total), || {
        per_call(
            "floor/same_cpu_switch_round_trip",
            scale.samples,
            batch,
            || {
                turn.set(2 * count + 1);
                count += 1;
                while turn.get() != 2 * count {
                    std::thread::yield_now();
                }
            },
        )
    })
}

fn floor_same_cpu_switch(scale: &Scale) -> multiproc::Result<Figure> {
    pinned(
        "floor/same_cpu_switch_round_trip",
        scale,
        same_cpu_switch_round_trip,
    )
}

/// Takes messages until `None`; returns the CPU time it used per message.
fn consume_counting_cpu(q: Queue<Option<u64>>) -> u64 {
    let start = multiproc::__internal::sys::time::process_cpu_time();
    let mut got = 0u64;
    while let Ok(Some(_)) = q.get() {
        got += 1;
    }
    let used = multiproc::__internal::sys::time::process_cpu_time().saturating_sub(start);
    used.as_nanos() as u64 / got.max(1)
}

/// The CPU a Queue consumer burns per message when messages come at 10k/s
/// (one every 100 µs): its figure in µs is also the share of a core it
/// keeps busy, in percent (10 µs a message = 10 %). Spinning waiters show here.
fn cpu_queue_consumer_10k(scale: &Scale) -> multiproc::Result<Figure> {
    let n = if scale.smoke { 200 } else { 3_000 };
    let mut per_op = Vec::new();
    for _ in 0..scale.samples.min(5) {
        let q = Queue::<Option<u64>>::new()?;
        let mut p = Process::new(consume_counting_cpu, q.clone()).start_method(StartMethod::Fork);
        p.start()?;
        paced_10k(n, |i| q.put(Some(i as u64)))?;
        q.put(None)?;
        per_op.push(p.join_timeout(Duration::from_secs(60))? as f64);
    }
    Ok(summarize("cpu/queue_consumer_10k", &mut per_op, None))
}

/// Another process's CPU time so far (utime + stime, all its threads).
fn cpu_time_of(pid: i32) -> multiproc::Result<Duration> {
    Ok(multiproc::__internal::sys::time::process_cpu_time_of(pid)?)
}

/// Paces `n` calls of `op` at one every 100 µs (10k/s), sleeping between them.
fn paced_10k(
    n: usize,
    mut op: impl FnMut(usize) -> multiproc::Result<()>,
) -> multiproc::Result<()> {
    let mut next = std::time::Instant::now();
    for i in 0..n {
        next += Duration::from_micros(100);
        let now = std::time::Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
        op(i)?;
    }
    Ok(())
}

/// The CPU a manager server burns per request while one client (this
/// process) gets a dict item 10k times a second, paced as
/// `cpu/queue_consumer_10k` paces its messages: the server's utime + stime,
/// all threads, per request, so its value in µs is also the share of a core
/// the server keeps busy, in percent.
fn cpu_manager_server_10k(scale: &Scale) -> multiproc::Result<Figure> {
    let n = if scale.smoke { 200 } else { 3_000 };
    with_manager(|m| {
        let d = m.dict::<u32, u64>()?;
        d.insert(1, 1)?;
        for _ in 0..100 {
            d.get(&1)?;
        }
        let server = m.pid();
        let mut per_op = Vec::new();
        for _ in 0..scale.samples.min(5) {
            let before = cpu_time_of(server)?;
            paced_10k(n, |_| d.get(&1).map(drop))?;
            let used = cpu_time_of(server)?.saturating_sub(before);
            per_op.push(used.as_nanos() as f64 / n as f64);
        }
        Ok(summarize("cpu/manager_server_10k", &mut per_op, None))
    })
}

/// How long each sample of an idle `cpu/*` row stays quiet.
fn quiet_window(scale: &Scale) -> Duration {
    if scale.smoke {
        Duration::from_millis(100)
    } else {
        Duration::from_secs(1)
    }
}

/// Samples of an idle `cpu/*` row: the CPU time `used` reports across a
/// quiet window in which this thread sleeps, per second of quiet (so 10 ms
/// is 1 % of a core).
fn quiet_cpu(
    key: &'static str,
    scale: &Scale,
    mut used: impl FnMut() -> multiproc::Result<Duration>,
) -> multiproc::Result<Figure> {
    let window = quiet_window(scale);
    let mut per_second = Vec::new();
    for _ in 0..scale.samples.min(5) {
        let before = used()?;
        std::thread::sleep(window);
        let burned = used()?.saturating_sub(before);
        per_second.push(burned.as_nanos() as f64 / window.as_secs_f64());
    }
    Ok(summarize(key, &mut per_second, None))
}

/// The CPU a started manager server burns over a quiet second (per second),
/// with one connected client (this process) holding a dict, a list and a
/// namespace it has just used, and no requests.
fn cpu_idle_manager(scale: &Scale) -> multiproc::Result<Figure> {
    with_manager(|m| {
        let d = m.dict::<u32, u64>()?;
        d.insert(1, 1)?;
        let l = m.list::<u64>()?;
        l.push(1)?;
        let ns = m.namespace()?;
        ns.set("x", 1u64)?;
        for _ in 0..100 {
            d.get(&1)?;
        }
        l.to_vec()?;
        let server = m.pid();
        let figure = quiet_cpu("cpu/idle_manager", scale, || cpu_time_of(server));
        drop((d, l, ns));
        figure
    })
}

/// The CPU a `Pool(2)` burns over a quiet second (per second) with no
/// tasks: its workers and this process (the pool's helper threads; the
/// measuring thread sleeps), after one `map` has run.
fn cpu_idle_pool(scale: &Scale) -> multiproc::Result<Figure> {
    let pool = warm_pool()?;
    let workers = pool.worker_pids();
    quiet_cpu("cpu/idle_pool", scale, || {
        let mut used = multiproc::__internal::sys::time::process_cpu_time();
        for &pid in &workers {
            used += cpu_time_of(pid)?;
        }
        Ok(used)
    })
}

/// Blocks in `get` until a message comes; returns the CPU time it used from
/// the start of the wait to its end.
fn get_counting_cpu((ready, q): (Event, Queue<u64>)) -> u64 {
    if ready.set().is_err() {
        return 0;
    }
    let start = multiproc::__internal::sys::time::process_cpu_time();
    let _ = q.get();
    let used = multiproc::__internal::sys::time::process_cpu_time().saturating_sub(start);
    used.as_nanos() as u64
}

/// The CPU a process blocked in `Queue::get` burns, per second of waiting:
/// the child's own CPU time from the start of its `get` until the message
/// put after a quiet second arrives (so one wake-up is counted too).
fn cpu_blocked_get(scale: &Scale) -> multiproc::Result<Figure> {
    let window = quiet_window(scale);
    let mut per_second = Vec::new();
    for _ in 0..scale.samples.min(5) {
        let (ready, q) = (Event::new()?, Queue::<u64>::new()?);
        let mut p = Process::new(get_counting_cpu, (ready.clone(), q.clone()))
            .start_method(StartMethod::Fork);
        p.start()?;
        if !ready.wait_timeout(Duration::from_secs(60))? {
            return Err(multiproc::Error::Timeout(Duration::from_secs(60)));
        }
        std::thread::sleep(window);
        q.put(1)?;
        let ns = p.join_timeout(Duration::from_secs(60))?;
        per_second.push(ns as f64 / window.as_secs_f64());
    }
    Ok(summarize("cpu/blocked_get", &mut per_second, None))
}

/// CPython's figures for the same keys, if python3 and the script are there.
/// CPython's figures: median and p99 ns by time row, bytes by memory row.
#[derive(Default)]
struct Baseline {
    ops: BTreeMap<String, (f64, f64)>,
    memory: BTreeMap<String, f64>,
}

fn python_figures(opts: &Args, progress: &Progress) -> Baseline {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/python/baseline.py");
    if opts.no_python {
        return Baseline::default();
    }
    if !script.exists() {
        eprintln!(
            "CPython's baseline script {} is not there (run from a checkout of multiproc); \
             CPython columns left empty",
            script.display()
        );
        return Baseline::default();
    }
    eprintln!("running CPython's baseline ({})…", script.display());
    let mut cmd = Command::new("python3");
    cmd.arg(&script);
    if opts.smoke {
        cmd.arg("--smoke");
    }
    // The script takes one filter, with the same meaning: it then measures
    // only what the table shows.
    if let [filter] = opts.filter.as_slice() {
        cmd.args(["--filter", filter]);
    }
    let out = match run_showing_progress(cmd, progress) {
        Ok((status, out)) if status.success() => out,
        Ok((_, out)) => {
            eprintln!(
                "CPython baseline failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return Baseline::default();
        }
        Err(e) => {
            eprintln!("python3 not available ({e}); CPython columns left empty");
            return Baseline::default();
        }
    };
    let parsed: serde_json::Value = match serde_json::from_slice(&out.stdout) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("cannot parse CPython's figures: {e}");
            return Baseline::default();
        }
    };
    let mut figures = Baseline::default();
    if let Some(ops) = parsed.get("ops").and_then(|o| o.as_object()) {
        for (key, v) in ops {
            let get = |f: &str| v.get(f).and_then(serde_json::Value::as_f64);
            if let (Some(m), Some(p)) = (get("median_ns"), get("p99_ns")) {
                figures.ops.insert(key.clone(), (m, p));
            }
        }
    }
    if let Some(memory) = parsed.get("memory").and_then(|o| o.as_object()) {
        for (key, v) in memory {
            if let Some(b) = v.get("bytes").and_then(serde_json::Value::as_f64) {
                figures.memory.insert(key.clone(), b);
            }
        }
    }
    figures
}

/// Above this share of stolen CPU time (see [`steal_percent`]) a run says
/// its figures are not a quiet machine's.
const STEAL_DISTURBED: f64 = 5.0;

/// Runs the suite and prints the table; writes JSON if asked.
fn run(opts: &Args) -> multiproc::Result<()> {
    if opts.sleep {
        // SAFETY: set before any thread of ours starts; children inherit it.
        unsafe { std::env::set_var("MULTIPROC_SPIN", "0") };
        // And in this process, whatever it read before.
        multiproc::__internal::set_spin_limit(0);
    }
    let scale = if opts.smoke {
        Scale {
            samples: 3,
            k: 1,
            smoke: true,
        }
    } else {
        Scale {
            samples: 30,
            k: 10,
            smoke: false,
        }
    };
    let wanted =
        |key: &str| opts.filter.is_empty() || opts.filter.iter().any(|f| key.contains(f.as_str()));
    let selected: Vec<(&str, OpFn)> = operations()
        .into_iter()
        .filter(|(key, _)| wanted(key))
        .collect();
    let memory_selected: Vec<(&str, memory_rows::MemFn)> = memory_rows::operations()
        .into_iter()
        .filter(|(key, _)| wanted(key))
        .collect();
    let ticks_at_start = cpu_ticks();
    let progress = Progress::new(selected.len() + memory_selected.len());
    let mut figures = Vec::new();
    for (i, (key, op)) in selected.iter().enumerate() {
        progress.step(i + 1, key);
        match op(&scale) {
            Ok(f) => figures.push(f),
            Err(e) => progress.line(&format!("{key}: failed: {e}")),
        }
    }
    let mut memory = Vec::new();
    for (i, (key, op)) in memory_selected.iter().enumerate() {
        progress.step(selected.len() + i + 1, key);
        match op(&scale) {
            Ok(m) => memory.push(m),
            Err(e) => progress.line(&format!("{key}: failed: {e}")),
        }
    }
    progress.finish(figures.len() + memory.len());
    let python = python_figures(opts, &progress);
    let steal = steal_percent(ticks_at_start);
    print_table(&figures, &python.ops);
    print_floors(&figures);
    print_memory_table(&memory, &python.memory);
    if let Some(steal) = steal {
        println!();
        println!("CPU time stolen by the hypervisor during the run: {steal:.1} %");
        if steal > STEAL_DISTURBED {
            println!("(more than {STEAL_DISTURBED} %: these figures are not a quiet machine's)");
        }
    }
    if let Some(path) = &opts.json {
        write_json(path, &figures, &memory, &python, steal, opts)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// Runs `cmd`, showing each line it writes on stderr (`python: KEY`) as
/// progress; returns its status and everything it wrote.
fn run_showing_progress(
    mut cmd: Command,
    progress: &Progress,
) -> std::io::Result<(std::process::ExitStatus, std::process::Output)> {
    use std::io::{BufRead, Read};
    use std::process::Stdio;
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let mut stdout = child.stdout.take();
    // stdout on its own thread, so that neither pipe fills while the other is read.
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(out) = stdout.as_mut() {
            let _ = out.read_to_end(&mut buf);
        }
        buf
    });
    let mut stderr = Vec::new();
    if let Some(err) = child.stderr.take() {
        for line in std::io::BufReader::new(err).split(b'\n') {
            let Ok(line) = line else { break };
            let text = String::from_utf8_lossy(&line);
            if !text.trim().is_empty() {
                progress.note(text.trim());
            }
            stderr.extend_from_slice(&line);
            stderr.push(b'\n');
        }
    }
    let status = child.wait()?;
    let stdout = reader.join().unwrap_or_default();
    progress.clear();
    Ok((
        status,
        std::process::Output {
            status,
            stdout,
            stderr,
        },
    ))
}

/// The progress line on stderr: redrawn in place on a terminal, one line
/// per step otherwise (a log file, CI).
struct Progress {
    total: usize,
    start: std::time::Instant,
    tty: bool,
}

impl Progress {
    fn new(total: usize) -> Progress {
        Progress {
            total,
            start: std::time::Instant::now(),
            tty: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        }
    }

    fn elapsed(&self) -> String {
        let s = self.start.elapsed().as_secs();
        format!("{}:{:02}", s / 60, s % 60)
    }

    /// Operation `i` of the total starts.
    fn step(&self, i: usize, key: &str) {
        self.show(&format!("[{i}/{}] {key}", self.total));
    }

    /// Something else under way (CPython's baseline).
    fn note(&self, what: &str) {
        self.show(what);
    }

    fn show(&self, what: &str) {
        let elapsed = self.elapsed();
        let mut err = std::io::stderr().lock();
        if self.tty {
            // \r and clear-to-end-of-line: the line is redrawn in place.
            let _ = write!(err, "\r\x1b[K{what}  ({elapsed})");
        } else {
            let _ = writeln!(err, "{what}  ({elapsed})");
        }
        let _ = err.flush();
    }

    /// A message of its own line (a failed operation).
    fn line(&self, what: &str) {
        self.clear();
        eprintln!("{what}");
    }

    fn clear(&self) {
        if self.tty {
            eprint!("\r\x1b[K");
        }
    }

    fn finish(&self, measured: usize) {
        self.clear();
        eprintln!(
            "measured {measured} of {} operations in {}",
            self.total,
            self.elapsed()
        );
    }
}

fn print_table(figures: &[Figure], python: &BTreeMap<String, (f64, f64)>) {
    println!(
        "{:<32} {:>12} {:>12} {:>14} {:>12} {:>9}",
        "operation", "median", "p99", "throughput", "CPython", "speedup"
    );
    for f in figures {
        let throughput = match f.bytes_per_op {
            Some(b) => format!("{:.2} GB/s", b / f.median_ns),
            None => format!("{:.0}/s", f.ops_per_sec()),
        };
        let (cpy, ratio) = match python.get(f.key) {
            Some((m, _)) => (fmt_ns(*m), format!("{:.1}x", m / f.median_ns.max(0.001))),
            None => ("-".into(), "-".into()),
        };
        println!(
            "{:<32} {:>12} {:>12} {:>14} {:>12} {:>9}",
            f.key,
            fmt_ns(f.median_ns),
            fmt_ns(f.p99_ns),
            throughput,
            cpy,
            ratio
        );
    }
}

/// The rows measured beside a floor (a Redis call beside a PING, in
/// alternate samples): the ratio of their medians.
fn print_floors(figures: &[Figure]) {
    let floored: Vec<_> = figures
        .iter()
        .filter_map(|f| f.floor_ns.map(|floor| (f, floor)))
        .collect();
    if floored.is_empty() {
        return;
    }
    println!();
    println!(
        "{:<32} {:>12} {:>12} {:>9}",
        "beside its floor", "median", "floor", "ratio"
    );
    for (f, floor) in floored {
        println!(
            "{:<32} {:>12} {:>12} {:>8.2}x",
            f.key,
            fmt_ns(f.median_ns),
            fmt_ns(floor),
            f.median_ns / floor.max(0.001)
        );
    }
}

/// The memory rows: megabytes (10^6 bytes) beside CPython's.
fn print_memory_table(memory: &[memory_rows::Memory], python: &BTreeMap<String, f64>) {
    if memory.is_empty() {
        return;
    }
    println!();
    println!(
        "{:<40} {:>10} {:>12} {:>12} {:>9}",
        "memory (resident set)", "items", "ours", "CPython", "ratio"
    );
    for m in memory {
        let (cpy, ratio) = match python.get(m.key) {
            Some(b) => (
                format!("{:.1} MB", b / 1e6),
                format!("{:.2}x", m.bytes as f64 / b.max(1.0)),
            ),
            None => ("-".into(), "-".into()),
        };
        println!(
            "{:<40} {:>10} {:>12} {:>12} {:>9}",
            m.key,
            m.items,
            format!("{:.1} MB", m.bytes as f64 / 1e6),
            cpy,
            ratio
        );
    }
}

fn write_json(
    path: &PathBuf,
    figures: &[Figure],
    memory: &[memory_rows::Memory],
    python: &Baseline,
    steal: Option<f64>,
    opts: &Args,
) -> multiproc::Result<()> {
    let ops: serde_json::Map<String, serde_json::Value> = figures
        .iter()
        .map(|f| {
            let mut o = serde_json::json!({
                "median_ns": f.median_ns,
                "p99_ns": f.p99_ns,
                "ops_per_sec": f.ops_per_sec(),
                "samples": f.samples,
            });
            if let Some(floor) = f.floor_ns {
                o["floor_ns"] = floor.into();
            }
            if let Some(b) = f.bytes_per_op {
                o["bytes_per_op"] = b.into();
                o["gb_per_sec"] = (b / f.median_ns).into();
            }
            if let Some((m, p)) = python.ops.get(f.key) {
                o["cpython_median_ns"] = (*m).into();
                o["cpython_p99_ns"] = (*p).into();
                o["speedup"] = (m / f.median_ns.max(0.001)).into();
            }
            (f.key.to_string(), o)
        })
        .collect();
    let memory: serde_json::Map<String, serde_json::Value> = memory
        .iter()
        .map(|m| {
            let mut o = serde_json::json!({ "bytes": m.bytes, "items": m.items });
            if let Some(b) = python.memory.get(m.key) {
                o["cpython_bytes"] = (*b).into();
                o["ratio"] = (m.bytes as f64 / b.max(1.0)).into();
            }
            (m.key.to_string(), o)
        })
        .collect();
    let doc = serde_json::json!({
        "machine": machine(),
        "date": date(),
        "cpu_steal_percent": steal,
        "smoke": opts.smoke,
        "sleeping_waiters": opts.sleep,
        "ops": ops,
        "memory": memory,
    });
    let text =
        serde_json::to_string_pretty(&doc).map_err(|e| multiproc::Error::Codec(e.to_string()))?;
    std::fs::write(path, text + "\n")?;
    Ok(())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown cpu".into());
    format!("{} cores, {cpu}", multiproc::cpu_count())
}

/// The machine's CPU time so far, from the `cpu` line of `/proc/stat`
/// (in ticks): (all of it, the part the hypervisor stole for others).
fn cpu_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is in user).
    let steal = *ticks.get(7)?;
    Some((ticks.iter().take(8).sum(), steal))
}

/// The share of the machine's CPU time, over the run, that a hypervisor
/// gave other guests (`steal` in /proc/stat), in percent: on a VM whose
/// host is busy, every figure is slower than on a quiet machine.
fn steal_percent(start: Option<(u64, u64)>) -> Option<f64> {
    let ((t0, s0), (t1, s1)) = (start?, cpu_ticks()?);
    let total = t1.checked_sub(t0)?;
    (total > 0).then(|| 100.0 * s1.saturating_sub(s0) as f64 / total as f64)
}

fn date() -> String {
    Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d %H:%M UTC")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

// ---- A CPython client against our Python listener ----
//
// The client is CPython's BaseManager (benches/python/pyclient.py); the
// server is `multiproc serve --python-address`. The CPython column is the
// same client against CPython's own server (baseline.py), pinned the same
// way: `1cpu` puts the client and every server thread on one CPU, `2cpu`
// the client on one and the server on another.

/// Per key: median and p99 in ns, and the sample count.
type PyclientFigures = BTreeMap<String, (f64, f64, usize)>;

static PYCLIENT: std::sync::Mutex<Option<PyclientFigures>> = std::sync::Mutex::new(None);

macro_rules! pyclient_rows {
    ($($f:ident => $key:literal),* $(,)?) => {$(
        fn $f(scale: &Scale) -> multiproc::Result<Figure> {
            pyclient_row($key, scale)
        }
    )*};
}

pyclient_rows! {
    pyclient_put_1cpu => "pyclient/put_1cpu",
    pyclient_get_1cpu => "pyclient/get_1cpu",
    pyclient_connect_1cpu => "pyclient/connect_1cpu",
    pyclient_worker_start_1cpu => "pyclient/worker_start_1cpu",
    pyclient_put_2cpu => "pyclient/put_2cpu",
    pyclient_get_2cpu => "pyclient/get_2cpu",
    pyclient_connect_2cpu => "pyclient/connect_2cpu",
    pyclient_worker_start_2cpu => "pyclient/worker_start_2cpu",
}

/// One row of the Python client's run (the run happens once, for the first row asked).
fn pyclient_row(key: &'static str, scale: &Scale) -> multiproc::Result<Figure> {
    let mut cache = PYCLIENT.lock().unwrap_or_else(|e| e.into_inner());
    if cache.is_none() {
        *cache = Some(run_pyclient(scale.smoke)?);
    }
    let figures = cache.as_ref().map(|c| c.get(key).copied());
    match figures.flatten() {
        Some((median_ns, p99_ns, samples)) => Ok(Figure {
            key,
            median_ns,
            p99_ns,
            bytes_per_op: None,
            samples,
            floor_ns: None,
        }),
        None => Err(multiproc::Error::InvalidState(format!(
            "the Python client measured no {key} (one CPU only?)"
        ))),
    }
}

/// Starts `multiproc serve --python-address` and runs pyclient.py against it.
fn run_pyclient(smoke: bool) -> multiproc::Result<PyclientFigures> {
    use std::io::BufRead;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/python/pyclient.py");
    if !script.exists() {
        return Err(multiproc::Error::InvalidState(format!(
            "{} is not there (run from a checkout of multiproc)",
            script.display()
        )));
    }
    let key = std::env::temp_dir().join(format!("multiproc-bench-py-{}.key", std::process::id()));
    std::fs::write(&key, b"bench-python-client-key")?;
    let mut server = Command::new(std::env::current_exe()?)
        .args(["serve", "--address", "127.0.0.1:0"])
        .args([
            "--python-address",
            "127.0.0.1:0",
            "--queue",
            "get_task_queue",
        ])
        .arg("--authkey-file")
        .arg(&key)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let result = (|| {
        let stdout = server
            .stdout
            .take()
            .ok_or_else(|| multiproc::Error::InvalidState("no server output".into()))?;
        let mut lines = std::io::BufReader::new(stdout).lines();
        let mut python = None;
        for line in lines.by_ref().take(2) {
            if let Some(a) = line?.strip_prefix("python listening on ") {
                python = Some(a.to_string());
            }
        }
        let python: std::net::SocketAddr =
            python.and_then(|a| a.parse().ok()).ok_or_else(|| {
                multiproc::Error::InvalidState("the server printed no Python address".into())
            })?;
        let mut cmd = Command::new("python3");
        cmd.arg(&script)
            .arg(python.ip().to_string())
            .arg(python.port().to_string())
            .arg(&key)
            .arg(server.id().to_string());
        if smoke {
            cmd.arg("--smoke");
        }
        let out = cmd.output()?;
        if !out.status.success() {
            return Err(multiproc::Error::InvalidState(format!(
                "pyclient.py failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let parsed: serde_json::Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| multiproc::Error::InvalidState(format!("pyclient.py output: {e}")))?;
        let mut figures = PyclientFigures::new();
        if let Some(ops) = parsed.get("ops").and_then(|o| o.as_object()) {
            for (k, v) in ops {
                let get = |f: &str| v.get(f).and_then(serde_json::Value::as_f64);
                if let (Some(m), Some(p), Some(n)) =
                    (get("median_ns"), get("p99_ns"), get("samples"))
                {
                    figures.insert(k.clone(), (m, p, n as usize));
                }
            }
        }
        Ok(figures)
    })();
    // Our own child, by its handle: it owns nothing that outlives it.
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_file(&key);
    result
}
