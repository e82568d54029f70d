//! The distributed Pool on Redis (feature `redis`): a real redis-server per
//! test, workers that are separate processes (this test binary started
//! with `MULTIPROC_WORKER`), killed by pid at the end of each test.
#![cfg(feature = "redis")]

mod util;

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use multiproc::{Callbacks, Error, Pool};
use util::redis::RedisServer;
use util::{PROMPTLY, eventually};

multiproc::init_before_main!();

/// Long enough for any step on a loaded machine; a hang fails at this bound.
const LONG: Duration = Duration::from_secs(60);

/// Worker processes this test started; SIGKILLed by pid and reaped on drop.
struct Workers(Vec<Child>);

impl Workers {
    fn start(server: &RedisServer, name: &str, n: usize) -> Workers {
        Workers::start_with(server, name, n, &[])
    }

    fn start_with(server: &RedisServer, name: &str, n: usize, env: &[(&str, &str)]) -> Workers {
        let exe = std::env::current_exe().unwrap();
        let value = format!("{}/{name}", server.url());
        let children = (0..n)
            .map(|_| {
                let mut cmd = Command::new(&exe);
                cmd.env("MULTIPROC_WORKER", &value)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null());
                for (k, v) in env {
                    cmd.env(k, v);
                }
                cmd.spawn().expect("start a worker")
            })
            .collect();
        Workers(children)
    }

    fn pids(&self) -> Vec<i32> {
        self.0.iter().map(|c| c.id() as i32).collect()
    }

    fn kill(&mut self, pid: i32) {
        if let Some(c) = self.0.iter_mut().find(|c| c.id() as i32 == pid) {
            let _ = c.kill();
            let _ = c.wait();
        }
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

fn pool(server: &RedisServer, name: &str) -> Pool {
    Pool::builder()
        .redis(&server.url())
        .name(name)
        .lease(Duration::from_secs(2))
        .build()
        .expect("a distributed pool")
}

fn square(x: u64) -> u64 {
    x * x
}

fn add(a: u64, b: u64) -> u64 {
    a + b
}

fn panics_on_3(x: u64) -> u64 {
    assert!(x != 3, "no threes here");
    x
}

fn my_pid(_: ()) -> i32 {
    std::process::id() as i32
}

/// The first worker to run this in `dir` (exclusively, by creating
/// `dir/claimed`; it then writes its pid to `dir/holder`) waits there, to be killed; any other run
/// returns its worker's pid at once.
fn hold_first(dir: String) -> i32 {
    use std::io::Write;
    let pid = std::process::id() as i32;
    let first = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(format!("{dir}/claimed"));
    if first.is_ok() {
        let mut f = std::fs::File::create(format!("{dir}/holder.tmp")).unwrap();
        write!(f, "{pid}").unwrap();
        drop(f);
        // Renamed once written: a reader never sees a partial pid.
        std::fs::rename(format!("{dir}/holder.tmp"), format!("{dir}/holder")).unwrap();
        std::thread::sleep(LONG * 2);
    }
    pid
}

/// The pid of the worker holding `hold_first`'s task, once there is one.
fn holder(dir: &std::path::Path) -> Option<i32> {
    std::fs::read_to_string(dir.join("holder"))
        .ok()?
        .parse()
        .ok()
}

fn abort_worker(_: u64) -> u64 {
    std::process::abort()
}

#[test]
fn map_imap_starmap_apply_over_redis_workers() {
    let server = RedisServer::start();
    let _workers = Workers::start(&server, "jobs", 2);
    let pool = pool(&server, "jobs");

    let squares = pool.map_async(square, 0..100u64).unwrap();
    let expected: Vec<u64> = (0..100u64).map(square).collect();
    assert_eq!(squares.get_timeout(LONG).unwrap(), expected);

    let chunked = pool.chunksize(7).map_async(square, 0..30u64).unwrap();
    assert_eq!(chunked.get_timeout(LONG).unwrap(), expected[..30]);

    let mut it = pool.imap(square, 0..20u64).unwrap();
    let mut ordered = Vec::new();
    while let Some(r) = it.next_timeout(LONG).unwrap() {
        ordered.push(r.unwrap());
    }
    assert_eq!(ordered, expected[..20]);

    let mut it = pool.chunksize(3).imap_unordered(square, 0..20u64).unwrap();
    let mut unordered = Vec::new();
    while let Some(r) = it.next_timeout(LONG).unwrap() {
        unordered.push(r.unwrap());
    }
    unordered.sort();
    assert_eq!(unordered, expected[..20]);

    let sums = pool
        .starmap_async(add, vec![(1, 2), (3, 4), (5, 6)])
        .unwrap();
    assert_eq!(sums.get_timeout(LONG).unwrap(), vec![3, 7, 11]);

    let seen = Arc::new(Mutex::new(Vec::new()));
    let results: Vec<_> = (0..5u64)
        .map(|i| {
            let seen = seen.clone();
            pool.apply_async_with(
                square,
                i,
                Callbacks::new().callback(move |r: &u64| seen.lock().unwrap().push(*r)),
            )
            .unwrap()
        })
        .collect();
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.get_timeout(LONG).unwrap(), square(i as u64));
    }
    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    assert_eq!(seen, vec![0, 1, 4, 9, 16]);
}

#[test]
fn a_task_that_panics_fails_alone_and_the_worker_serves_on() {
    let server = RedisServer::start();
    let _workers = Workers::start(&server, "jobs", 1);
    let pool = pool(&server, "jobs");
    let r = pool.apply_async(panics_on_3, 3).unwrap();
    match r.get_timeout(LONG) {
        Err(Error::Remote(m)) => assert!(m.contains("no threes here"), "{m}"),
        other => panic!("expected the task's panic, got {other:?}"),
    }
    let r = pool.chunksize(2).map_async(panics_on_3, 0..6u64).unwrap();
    assert!(matches!(r.get_timeout(LONG), Err(Error::Remote(m)) if m.contains("no threes")));
    let r = pool.map_async(panics_on_3, [1, 2, 4]).unwrap();
    assert_eq!(r.get_timeout(LONG).unwrap(), vec![1, 2, 4]);
}

/// A value whose decoding panics when it holds 14 (a `Deserialize` of
/// the user's, written with the re-exported `rkyv`).
#[derive(Debug, Clone, Copy, PartialEq, multiproc::rkyv::Archive, multiproc::rkyv::Serialize)]
#[rkyv(crate = multiproc::rkyv)]
struct Fragile(u64);

impl<D: multiproc::rkyv::rancor::Fallible + ?Sized> multiproc::rkyv::Deserialize<Fragile, D>
    for ArchivedFragile
{
    fn deserialize(&self, _: &mut D) -> Result<Fragile, D::Error> {
        let v = self.0.to_native();
        assert_ne!(v, 14, "Fragile(14) cannot be decoded");
        Ok(Fragile(v))
    }
}

fn fragile(x: u64) -> Fragile {
    Fragile(x)
}

fn unwrap_fragile(f: Fragile) -> u64 {
    f.0
}

/// On a distributed pool too, a result whose decoding panics (in the
/// submitting process) fails its call, and an argument whose decoding
/// panics (in a worker) fails its chunk; the pool and the worker go on.
#[test]
fn a_panicking_decode_on_either_side_fails_its_call_and_the_pool_goes_on() {
    let server = RedisServer::start();
    let _workers = Workers::start(&server, "jobs", 1);
    let pool = pool(&server, "jobs");
    match pool
        .map_async(fragile, [1, 14, 2])
        .unwrap()
        .get_timeout(LONG)
    {
        Err(Error::Codec(m)) => assert!(m.contains("Fragile(14)"), "{m}"),
        other => panic!("expected a codec error, got {other:?}"),
    }
    let r = pool
        .map_async(unwrap_fragile, [Fragile(1), Fragile(14)])
        .unwrap();
    match r.get_timeout(LONG) {
        Err(Error::Remote(m)) => assert!(m.contains("Fragile(14)"), "{m}"),
        other => panic!("expected the worker's decoding panic, got {other:?}"),
    }
    let r = pool
        .map_async(unwrap_fragile, [Fragile(3), Fragile(4)])
        .unwrap();
    assert_eq!(r.get_timeout(LONG).unwrap(), vec![3, 4]);
}

#[test]
fn a_worker_killed_mid_task_has_its_task_finished_by_another() {
    let server = RedisServer::start();
    let mut workers = Workers::start(&server, "jobs", 2);
    let pool = pool(&server, "jobs");
    let dir = std::env::temp_dir().join(format!("multiproc-redis-hold-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let r = pool
        .apply_async(hold_first, dir.to_str().unwrap().to_owned())
        .unwrap();
    assert!(
        eventually(LONG, || holder(&dir).is_some()),
        "no worker took the task"
    );
    let victim = holder(&dir).unwrap();
    assert!(workers.pids().contains(&victim));
    workers.kill(victim);
    let finisher = r
        .get_timeout(LONG)
        .expect("another worker finishes the task");
    assert_ne!(finisher, victim);
    assert!(workers.pids().contains(&finisher));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_worker_killed_mid_map_still_leaves_every_result() {
    let server = RedisServer::start();
    let mut workers = Workers::start(&server, "jobs", 2);
    let pool = pool(&server, "jobs");
    let dir = std::env::temp_dir().join(format!("multiproc-redis-map-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let items = vec![dir.to_str().unwrap().to_owned(); 6];
    // The first chunk taken holds its worker; the other worker runs the rest.
    let r = pool.chunksize(1).map_async(hold_first, items).unwrap();
    assert!(
        eventually(LONG, || holder(&dir).is_some()),
        "no worker took a chunk"
    );
    let victim = holder(&dir).unwrap();
    workers.kill(victim);
    let pids = r
        .get_timeout(LONG)
        .expect("every result, from the other worker");
    assert_eq!(pids.len(), 6);
    let survivor = workers.pids();
    assert!(
        pids.iter().all(|p| survivor.contains(p)),
        "{pids:?} vs {survivor:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn small_chunks_travel_packed_and_a_packed_entry_of_a_killed_worker_is_run_again() {
    let server = RedisServer::start();
    let mut workers = Workers::start(&server, "jobs", 2);
    let pool = pool(&server, "jobs");
    // Once small chunks have run, the pool packs several into an entry.
    let expected: Vec<u64> = (0..3000u64).map(square).collect();
    for _ in 0..2 {
        let r = pool.chunksize(1).map_async(square, 0..3000u64).unwrap();
        assert_eq!(r.get_timeout(LONG).unwrap(), expected);
    }
    let mut it = pool.chunksize(2).imap(square, 0..500u64).unwrap();
    let mut ordered = Vec::new();
    while let Some(r) = it.next_timeout(LONG).unwrap() {
        ordered.push(r.unwrap());
    }
    assert_eq!(ordered, expected[..500]);
    // The six chunks now share an entry: the worker that takes it holds
    // them all, and once it is killed each runs again on the other.
    let dir = std::env::temp_dir().join(format!("multiproc-redis-pack-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let items = vec![dir.to_str().unwrap().to_owned(); 6];
    let r = pool.chunksize(1).map_async(hold_first, items).unwrap();
    assert!(
        eventually(LONG, || holder(&dir).is_some()),
        "no worker took a chunk"
    );
    let victim = holder(&dir).unwrap();
    workers.kill(victim);
    let pids = r
        .get_timeout(LONG)
        .expect("every result, from the other worker");
    assert_eq!(pids.len(), 6);
    let survivor = workers.pids();
    assert!(
        pids.iter().all(|p| survivor.contains(p)),
        "{pids:?} vs {survivor:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_task_that_kills_every_worker_fails_with_worker_died_once_retries_are_spent() {
    let server = RedisServer::start();
    let workers = Workers::start(&server, "jobs", 2);
    let pool = Pool::builder()
        .redis(&server.url())
        .name("jobs")
        .lease(Duration::from_secs(2))
        .max_retries(1)
        .build()
        .unwrap();
    let r = pool.apply_async(abort_worker, 1).unwrap();
    match r.get_timeout(LONG) {
        Err(Error::WorkerDied { pid, .. }) => assert!(workers.pids().contains(&pid), "{pid}"),
        other => panic!("expected WorkerDied, got {other:?}"),
    }
}

#[test]
fn a_worker_of_another_build_refuses_with_binary_mismatch() {
    let server = RedisServer::start();
    let _workers = Workers::start_with(
        &server,
        "jobs",
        1,
        &[("MULTIPROC_WORKER_FAKE_BUILD", "another-build")],
    );
    let pool = pool(&server, "jobs");
    let r = pool.apply_async(square, 2).unwrap();
    match r.get_timeout(LONG) {
        Err(Error::BinaryMismatch(m)) => {
            assert!(m.contains("another-build"), "{m}");
            assert!(m.contains("from build"), "{m}");
        }
        other => panic!("expected BinaryMismatch, got {other:?}"),
    }
}

#[test]
fn workers_lists_live_workers_with_their_tasks() {
    let server = RedisServer::start();
    let workers = Workers::start(&server, "jobs", 2);
    let pool = pool(&server, "jobs");
    assert!(
        eventually(LONG, || pool.workers().unwrap().len() == 2),
        "{:?}",
        pool.workers()
    );
    let listed: Vec<i32> = pool.workers().unwrap().iter().map(|w| w.pid).collect();
    for pid in workers.pids() {
        assert!(listed.contains(&pid), "{pid} not in {listed:?}");
    }
    let r = pool.chunksize(1).map_async(square, 0..10u64).unwrap();
    r.get_timeout(LONG).unwrap();
    // Heartbeats carry the count: within a few of them it is up to date
    // (more, if a worker starved past the lease had a task run again).
    assert!(
        eventually(LONG, || pool
            .workers()
            .unwrap()
            .iter()
            .map(|w| w.tasks_done)
            .sum::<u64>()
            >= 10),
        "{:?}",
        pool.workers()
    );
    let w = &pool.workers().unwrap()[0];
    assert!(!w.host.is_empty());
    // A pid on this host runs the worker; the pool pins nothing on it.
    assert!(pool.worker_pids().is_empty());
}

#[test]
fn nothing_is_left_in_redis_once_the_pool_is_dropped() {
    let server = RedisServer::start();
    let _workers = Workers::start(&server, "jobs", 1);
    let pool = pool(&server, "jobs");
    let r = pool.apply_async(my_pid, ()).unwrap();
    r.get_timeout(LONG).unwrap();
    assert!(eventually(LONG, || pool.workers().unwrap().len() == 1));
    assert!(server.dbsize() > 0);
    drop(pool);
    assert_eq!(server.dbsize(), 0);
    // The worker waits for a pool without writing anything meanwhile.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(server.dbsize(), 0);
    // And serves the next pool of its name.
    let pool = self::pool(&server, "jobs");
    let r = pool.apply_async(square, 5).unwrap();
    assert_eq!(r.get_timeout(LONG).unwrap(), 25);
    drop(pool);
    assert_eq!(server.dbsize(), 0);
}

#[test]
fn without_workers_get_timeout_times_out() {
    let server = RedisServer::start();
    let pool = pool(&server, "idle");
    let r = pool.apply_async(square, 2).unwrap();
    assert!(matches!(
        r.get_timeout(Duration::from_millis(300)),
        Err(Error::Timeout(_))
    ));
    assert!(pool.workers().unwrap().is_empty());
}

#[test]
fn an_unreachable_or_refusing_server_is_backend_unavailable() {
    // Port 1 on loopback: nothing listens.
    let unreachable = Pool::builder()
        .redis("redis://127.0.0.1:1/0")
        .name("jobs")
        .build();
    assert!(matches!(
        unreachable,
        Err(Error::BackendUnavailable {
            backend: "redis",
            ..
        })
    ));
    assert!(matches!(
        multiproc::worker::run("redis://127.0.0.1:1/0", "jobs"),
        Err(Error::BackendUnavailable { .. })
    ));
    let server = RedisServer::start_with_password("s3cret");
    let wrong = format!("redis://:wrong@127.0.0.1:{}/0", server.port());
    match Pool::builder().redis(&wrong).name("jobs").build() {
        Err(Error::BackendUnavailable { cause, .. }) => {
            assert!(!cause.contains("wrong"), "{cause}")
        }
        other => panic!("expected BackendUnavailable, got {:?}", other.map(|_| ())),
    }
    assert!(matches!(
        Pool::builder().redis(&server.url()).name("a:b").build(),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn a_server_gone_mid_run_fails_calls_with_backend_unavailable() {
    let mut server = RedisServer::start();
    let pool = pool(&server, "jobs");
    // In flight (no worker takes it) when the server goes.
    let waiting = pool.apply_async(square, 1).unwrap();
    assert!(matches!(
        waiting.get_timeout(Duration::from_millis(200)),
        Err(Error::Timeout(_))
    ));
    server.kill();
    assert!(matches!(
        waiting.get_timeout(PROMPTLY),
        Err(Error::BackendUnavailable { .. })
    ));
    let r = pool.apply_async(square, 2).unwrap();
    assert!(matches!(
        r.get_timeout(PROMPTLY),
        Err(Error::BackendUnavailable { .. })
    ));
}

/// A redis-server on a given port (the one a killed server had), stopped
/// by pid on drop.
struct RestartedServer(Child);

impl RestartedServer {
    fn on(port: u16) -> RestartedServer {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server");
        assert!(
            eventually(PROMPTLY, || std::net::TcpStream::connect((
                "127.0.0.1",
                port
            ))
            .is_ok()),
            "the restarted server does not answer"
        );
        RestartedServer(child)
    }
}

impl Drop for RestartedServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn after_a_server_restart_the_pool_and_its_workers_work_again() {
    let mut server = RedisServer::start();
    let _workers = Workers::start(&server, "jobs", 1);
    let pool = pool(&server, "jobs");
    assert_eq!(
        pool.apply_async(square, 3)
            .unwrap()
            .get_timeout(LONG)
            .unwrap(),
        9
    );
    server.kill();
    let lost = pool.apply_async(square, 4).unwrap();
    assert!(matches!(
        lost.get_timeout(PROMPTLY),
        Err(Error::BackendUnavailable { .. })
    ));
    let _back = RestartedServer::on(server.port());
    // The pool reconnects (its stream and lease come back) and the worker
    // too; a call may still fail while they do.
    let mut answer = None;
    assert!(eventually(LONG, || {
        answer = pool
            .apply_async(square, 5)
            .ok()
            .and_then(|r| r.get_timeout(Duration::from_secs(5)).ok());
        answer.is_some()
    }));
    assert_eq!(answer, Some(25));
}

// ---- Three hosts in network namespaces ----

/// Three network namespaces, each a "host": `hub` (Redis and the
/// submitting pool) joined to `w1` and `w2` (a worker each) by a veth pair
/// apiece, so a worker reaches Redis only over its own link. Deleting the
/// namespaces on drop deletes the links with them.
struct ThreeHosts {
    hub: String,
    workers: [String; 2],
    /// The hub's address on each worker's link.
    hub_ips: [String; 2],
}

use util::ip;

impl ThreeHosts {
    fn setup() -> Result<ThreeHosts, String> {
        let pid = std::process::id();
        let net = format!("10.214.{}", pid % 250);
        let hosts = ThreeHosts {
            hub: format!("mpr{pid}h"),
            workers: [format!("mpr{pid}a"), format!("mpr{pid}b")],
            hub_ips: [format!("{net}.1"), format!("{net}.5")],
        };
        // Each namespace is deleted on drop from here on, made or not.
        ip(&["netns", "add", &hosts.hub])?;
        for (i, ns) in hosts.workers.iter().enumerate() {
            ip(&["netns", "add", ns])?;
            let (hub_dev, dev) = (format!("mprv{pid}h{i}"), format!("mprv{pid}w{i}"));
            ip(&[
                "link", "add", &hub_dev, "netns", &hosts.hub, "type", "veth", "peer", "name", &dev,
                "netns", ns,
            ])?;
            // Two /30s: .1–.2 and .5–.6.
            let worker_ip = format!("{net}.{}", 4 * i + 2);
            for (host, d, addr) in [
                (&hosts.hub, &hub_dev, &hosts.hub_ips[i]),
                (ns, &dev, &worker_ip),
            ] {
                ip(&["-n", host, "addr", "add", &format!("{addr}/30"), "dev", d])?;
                ip(&["-n", host, "link", "set", d, "up"])?;
            }
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        ip(&["-n", &hosts.hub, "link", "set", "lo", "up"])?;
        Ok(hosts)
    }
}

impl Drop for ThreeHosts {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.hub]);
        for ns in &self.workers {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// A process this test started (through `ip netns exec`, which becomes
/// it); SIGKILLed by pid and reaped on drop.
struct Started(Child);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A directory of this test's, removed on drop.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether `server`'s log says it is ready before `within` passes (its
/// stdout, read on a thread of its own so the wait is bounded).
fn redis_ready(server: &mut Child, within: Duration) -> bool {
    use std::io::{BufRead, BufReader};
    let Some(out) = server.stdout.take() else {
        return false;
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if line.contains("Ready to accept connections") {
                let _ = tx.send(());
            }
            // Read on to the end: the server never blocks on a full pipe.
        }
    });
    rx.recv_timeout(within).is_ok()
}

#[test]
fn three_hosts_in_network_namespaces_a_worker_killed_mid_map() {
    let hosts = match ThreeHosts::setup() {
        Ok(h) => h,
        Err(why) => {
            println!("SKIPPED three_hosts_in_network_namespaces_a_worker_killed_mid_map: {why}");
            return;
        }
    };
    // Redis on the hub, listening on both links (a fresh namespace: the
    // default port is free).
    let mut redis = Started(
        Command::new("ip")
            .args(["netns", "exec", &hosts.hub, "redis-server"])
            .args([
                "--port",
                "6379",
                "--bind",
                &hosts.hub_ips[0],
                &hosts.hub_ips[1],
            ])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server)"),
    );
    assert!(
        redis_ready(&mut redis.0, LONG),
        "redis-server on the hub did not start"
    );
    // One worker on each worker host, reaching Redis over its own link.
    let exe = std::env::current_exe().unwrap();
    let mut workers = Workers(Vec::new());
    for (ns, hub_ip) in hosts.workers.iter().zip(&hosts.hub_ips) {
        let worker = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(&exe)
            .env("MULTIPROC_WORKER", format!("redis://{hub_ip}:6379/0/jobs"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start a worker");
        workers.0.push(worker);
    }
    let dir =
        TempDir(std::env::temp_dir().join(format!("multiproc-redis-netns-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    std::fs::create_dir_all(&dir.0).unwrap();
    // The submitting process on the hub: this test binary, running `netns_submitter`.
    let mut submitter = Started(
        Command::new("ip")
            .args(["netns", "exec", &hosts.hub])
            .arg(&exe)
            .args(["--exact", "netns_submitter", "--ignored", "--nocapture"])
            .env(
                "MP_NETNS_REDIS",
                format!("redis://{}:6379/0", hosts.hub_ips[0]),
            )
            .env("MP_NETNS_DIR", &dir.0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // The first chunk taken holds its worker: kill that one, mid-map.
    assert!(
        eventually(LONG, || holder(&dir.0).is_some()),
        "no worker took a chunk"
    );
    let victim = holder(&dir.0).unwrap();
    assert!(workers.pids().contains(&victim), "{victim}");
    workers.kill(victim);
    let survivor: Vec<i32> = workers
        .pids()
        .into_iter()
        .filter(|p| *p != victim)
        .collect();
    assert!(
        eventually(LONG * 2, || submitter.0.try_wait().unwrap().is_some()),
        "the submitter did not finish"
    );
    let mut text = String::new();
    use std::io::Read;
    submitter
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("NETNS-SUBMITTER-OK "))
        .unwrap_or_else(|| panic!("the submitter on the hub failed:\n{text}"));
    let pids: Vec<i32> = line.split(',').map(|p| p.trim().parse().unwrap()).collect();
    assert_eq!(pids.len(), 6, "{line}");
    assert!(
        pids.iter().all(|p| survivor.contains(p)),
        "{pids:?}: every result from the surviving worker {survivor:?}"
    );
}

/// Run by `three_hosts_in_network_namespaces_a_worker_killed_mid_map` in
/// the hub namespace: maps `hold_first` over both workers and prints the
/// pids that ran each item.
#[test]
#[ignore = "runs inside a network namespace, started by three_hosts_in_network_namespaces_a_worker_killed_mid_map"]
fn netns_submitter() {
    let (Ok(url), Ok(dir)) = (
        std::env::var("MP_NETNS_REDIS"),
        std::env::var("MP_NETNS_DIR"),
    ) else {
        return;
    };
    let pool = Pool::builder()
        .redis(&url)
        .name("jobs")
        .lease(Duration::from_secs(2))
        .build()
        .expect("a distributed pool on the hub");
    // Both workers serving, so the chunks spread over both hosts.
    assert!(
        eventually(LONG, || pool.workers().unwrap().len() == 2),
        "{:?}",
        pool.workers()
    );
    let r = pool
        .chunksize(1)
        .map_async(hold_first, vec![dir; 6])
        .unwrap();
    let pids = r
        .get_timeout(LONG)
        .expect("every result, from the surviving worker");
    let pids: Vec<String> = pids.iter().map(i32::to_string).collect();
    println!("NETNS-SUBMITTER-OK {}", pids.join(","));
}
