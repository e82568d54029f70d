//! Remote managers: a server reached over TCP with an authkey, named
//! objects, workers in other processes, hostile clients.

mod util;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use multiproc::connection::{Address, SocketConnection};
use multiproc::{
    BaseManager, DictProxy, Error, ListProxy, Process, Queue, RemoteManager, StartMethod,
};
use util::{PROMPTLY, eventually};

multiproc::init_before_main!();

const METHODS: [StartMethod; 2] = [StartMethod::Spawn, StartMethod::Fork];
const KEY: &[u8] = b"remote-test-key-of-16+ bytes";
/// The task that tells a worker to stop.
const STOP: i64 = -1;

/// A user type the server owns; workers count the tasks they did in it.
#[derive(Default)]
struct Tally {
    done: u64,
    by_worker: std::collections::BTreeMap<u32, u64>,
}

impl Tally {
    fn record(&mut self, worker: u32) -> u64 {
        self.done += 1;
        *self.by_worker.entry(worker).or_default() += 1;
        self.done
    }
    fn total(&mut self) -> u64 {
        self.done
    }
    fn workers(&mut self) -> Vec<(u32, u64)> {
        self.by_worker.iter().map(|(w, n)| (*w, *n)).collect()
    }
}

multiproc::remote_object! {
    Tally as TallyProxy {
        1 => fn record(worker: u32) -> u64;
        2 => fn total() -> u64;
        3 => fn workers() -> Vec<(u32, u64)>;
    }
}

fn config() -> BaseManager<(Tally, ())> {
    BaseManager::new()
        .address("127.0.0.1:0")
        .authkey(KEY)
        .register::<Queue<i64>>("tasks")
        .register::<Queue<(i64, i64)>>("results")
        .register::<DictProxy<String, i64>>("stats")
        .register_object::<Tally>("tally")
}

fn connect(address: &str) -> RemoteManager {
    BaseManager::new()
        .address(address)
        .authkey(KEY)
        .connect()
        .expect("worker connects")
}

/// Squares tasks until told to stop; returns how many it did.
fn worker(address: String) -> u32 {
    let m = connect(&address);
    let tasks: Queue<i64> = m.get("tasks").unwrap();
    let results: Queue<(i64, i64)> = m.get("results").unwrap();
    let tally: TallyProxy = m.get_object("tally").unwrap();
    let me = std::process::id();
    let mut done = 0;
    loop {
        let n = tasks.get_timeout(PROMPTLY).unwrap();
        if n == STOP {
            return done;
        }
        tally.record(me).unwrap();
        results.put((n, n * n)).unwrap();
        done += 1;
    }
}

fn collect(results: &Queue<(i64, i64)>, n: usize) -> Vec<(i64, i64)> {
    let mut got: Vec<_> = (0..n)
        .map(|_| results.get_timeout(PROMPTLY).unwrap())
        .collect();
    got.sort();
    got
}

#[test]
fn a_master_and_two_workers_share_task_and_result_queues() {
    for m in METHODS {
        let master = config().start().expect("server starts");
        let address = master.address().to_string();
        let tasks: Queue<i64> = master.get("tasks").unwrap();
        let results: Queue<(i64, i64)> = master.get("results").unwrap();
        for n in 0..10 {
            tasks.put(n).unwrap();
        }
        let mut workers: Vec<_> = (0..2)
            .map(|_| Process::new(worker, address.clone()).start_method(m))
            .collect();
        for w in &mut workers {
            w.start().unwrap();
        }
        let got = collect(&results, 10);
        assert_eq!(
            got,
            (0..10).map(|n| (n, n * n)).collect::<Vec<_>>(),
            "{m:?}"
        );
        tasks.put(STOP).unwrap();
        tasks.put(STOP).unwrap();
        let done: u32 = workers
            .iter_mut()
            .map(|w| w.join_timeout(PROMPTLY * 3).unwrap())
            .sum();
        assert_eq!(done, 10, "{m:?}");
        let tally: TallyProxy = master.get_object("tally").unwrap();
        assert_eq!(tally.total().unwrap(), 10, "{m:?}");
        let per_worker = tally.workers().unwrap();
        assert!(per_worker.len() <= 2, "{m:?}");
        assert_eq!(per_worker.iter().map(|(_, n)| n).sum::<u64>(), 10, "{m:?}");
        assert!(matches!(
            master.get_object::<TallyProxy>("stats"),
            Err(Error::TypeMismatch { .. })
        ));
        master.shutdown().unwrap();
    }
}

#[test]
fn named_objects_are_typed_and_unknown_names_are_errors() {
    let master = config().start().unwrap();
    let stats: DictProxy<String, i64> = master.get("stats").unwrap();
    stats.insert("runs".into(), 1).unwrap();
    let worker = connect(&master.address().to_string());
    let again: DictProxy<String, i64> = worker.get("stats").unwrap();
    assert_eq!(again.get(&"runs".to_string()).unwrap(), Some(1));
    assert!(matches!(
        worker.get::<DictProxy<u8, u8>>("stats"),
        Err(Error::TypeMismatch { .. })
    ));
    assert!(matches!(
        worker.get::<ListProxy<u8>>("nothing"),
        Err(Error::KeyNotFound(k)) if k == "\"nothing\""
    ));
    // Objects made by a client over TCP, and proxies passed between processes.
    let l = worker.list::<u32>().unwrap();
    l.push(3).unwrap();
    let p = Process::new(
        |l: ListProxy<u32>| {
            l.push(4).unwrap();
            l.len().unwrap()
        },
        l.clone(),
    )
    .start_method(StartMethod::Spawn);
    let mut p = p;
    p.start().unwrap();
    assert_eq!(p.join_timeout(PROMPTLY).unwrap(), 2);
    assert_eq!(l.to_vec().unwrap(), vec![3, 4]);
    master.shutdown().unwrap();
}

/// `start` on a port another socket holds fails with the server's own
/// error (an `Io` error of kind `AddrInUse` that names the address), not a
/// `ManagerGone` that hides the cause.
#[test]
fn start_on_a_port_in_use_is_an_io_error_naming_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap();
    let expect_in_use = |result: Result<RemoteManager, Error>| match result {
        Err(Error::Io(e)) => {
            assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "{e}");
            let text = e.to_string();
            assert!(
                text.contains("in use") && text.contains(&address.to_string()),
                "{text}"
            );
        }
        Err(other) => panic!("not an Io error: {other:?}"),
        Ok(_) => panic!("the server started on a port in use"),
    };
    // In a server process of its own, and in this process.
    expect_in_use(
        BaseManager::new()
            .address(address.to_string())
            .authkey(KEY)
            .start(),
    );
    match BaseManager::new()
        .address(address.to_string())
        .authkey(KEY)
        .get_server()
    {
        Err(Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "{e}"),
        other => panic!("{:?}", other.map(|_| ())),
    }
    // The Python listener's port, too.
    let python = multiproc::py::PythonOptions::new(address);
    expect_in_use(
        BaseManager::new()
            .address("127.0.0.1:0")
            .authkey(KEY)
            .python(python)
            .start(),
    );
}

#[test]
fn a_wrong_authkey_is_refused() {
    let master = config().start().unwrap();
    // The address as the server gives it (a `SocketAddr`), or as text.
    let wrong = BaseManager::new()
        .address(master.address())
        .authkey(b"not the key")
        .connect();
    assert!(matches!(wrong, Err(Error::Authentication(_))), "{wrong:?}");
    // The server still serves the right key.
    let right = connect(&master.address().to_string());
    assert!(right.number_of_objects().unwrap() >= 4);
    master.shutdown().unwrap();
}

#[test]
fn garbage_and_truncated_frames_leave_the_server_serving() {
    let master = config().max_frame(1 << 20).start().unwrap();
    let addr = master.address();
    let before = master.number_of_objects().unwrap();
    // Random bytes instead of a handshake.
    let mut raw = TcpStream::connect(addr).unwrap();
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let _ = raw.write_all(&noise);
    // A length prefix claiming a terabyte, then silence.
    let mut huge = TcpStream::connect(addr).unwrap();
    let _ = huge.write_all(&(1u64 << 40).to_le_bytes());
    // A truncated frame, then a hang-up.
    let mut cut = TcpStream::connect(addr).unwrap();
    let _ = cut.write_all(&100u64.to_le_bytes());
    let _ = cut.write_all(&[1, 2, 3]);
    drop(cut);
    // After a good handshake, garbage where the version hello belongs: the
    // server answers with its own hello and closes.
    let authed = || {
        SocketConnection::<()>::connect_timeout(&Address::Tcp(addr), Some(KEY), PROMPTLY).unwrap()
    };
    let mut no_hello = authed();
    no_hello.send_bytes(&noise).unwrap();
    assert!(
        no_hello
            .recv_bytes_timeout(PROMPTLY)
            .unwrap()
            .starts_with(b"MPMT")
    );
    assert!(matches!(
        no_hello.recv_bytes_timeout(PROMPTLY),
        Err(Error::Closed | Error::Io(_))
    ));
    // After the handshake and the hello (version, then the largest message
    // each side accepts): garbage requests get error answers, and so does
    // a request over the limit, thrown away as it arrives.
    let mut authed = authed();
    let mut hello = b"MPMT".to_vec();
    hello.extend_from_slice(&multiproc::manager::remote::TCP_PROTOCOL_VERSION.to_le_bytes());
    hello.extend_from_slice(&(64u64 << 20).to_le_bytes());
    authed.send_bytes(&hello).unwrap();
    let theirs = authed.recv_bytes_timeout(PROMPTLY).unwrap();
    assert_eq!(theirs[..8], hello[..8]);
    assert_eq!(theirs[8..], (1u64 << 20).to_le_bytes());
    authed.send_bytes(&noise).unwrap();
    let answer = authed.recv_bytes_timeout(PROMPTLY).unwrap();
    assert!(!answer.is_empty());
    authed.send_bytes(&[]).unwrap();
    assert!(!authed.recv_bytes_timeout(PROMPTLY).unwrap().is_empty());
    authed.set_max_message(1 << 30);
    authed.send_bytes(&vec![0u8; 2 << 20]).unwrap();
    let mut refused = multiproc::rkyv::util::AlignedVec::<16>::new();
    refused.extend_from_slice(&authed.recv_bytes_timeout(PROMPTLY).unwrap());
    assert!(matches!(
        multiproc::manager::protocol::access_response(&refused),
        Ok(multiproc::manager::protocol::ArchivedResponse::Error(_))
    ));
    authed.send_bytes(&[]).unwrap();
    assert!(!authed.recv_bytes_timeout(PROMPTLY).unwrap().is_empty());
    // A well-behaved client is served all along.
    let good = connect(&addr.to_string());
    let stats: DictProxy<String, i64> = good.get("stats").unwrap();
    stats.insert("ok".into(), 1).unwrap();
    assert_eq!(stats.len().unwrap(), 1);
    drop((raw, huge));
    drop(stats);
    assert!(eventually(PROMPTLY, || good.number_of_objects().unwrap() == before));
    master.shutdown().unwrap();
}

/// Takes one task, makes an object, and hangs (until killed).
fn stuck_worker(address: String) {
    let m = connect(&address);
    let tasks: Queue<i64> = m.get("tasks").unwrap();
    let scratch = m.list::<i64>().unwrap();
    scratch.push(tasks.get_timeout(PROMPTLY).unwrap()).unwrap();
    std::thread::sleep(PROMPTLY * 10);
}

#[test]
fn a_worker_killed_mid_task_loses_only_its_task_and_its_references() {
    let master = config().start().unwrap();
    let address = master.address().to_string();
    let before = master.number_of_objects().unwrap();
    let tasks: Queue<i64> = master.get("tasks").unwrap();
    let results: Queue<(i64, i64)> = master.get("results").unwrap();
    tasks.put(100).unwrap();
    let mut stuck = Process::new(stuck_worker, address.clone()).start_method(StartMethod::Spawn);
    stuck.start().unwrap();
    // It took its task and made its object.
    assert!(eventually(PROMPTLY, || master.number_of_objects().unwrap()
        == before + 1));
    assert_eq!(tasks.qsize().unwrap(), 0);
    for n in 0..9 {
        tasks.put(n).unwrap();
    }
    tasks.put(STOP).unwrap();
    let mut good = Process::new(worker, address).start_method(StartMethod::Spawn);
    good.start().unwrap();
    stuck.kill().unwrap();
    assert!(stuck.join_timeout(PROMPTLY).is_err());
    let got = collect(&results, 9);
    assert_eq!(got, (0..9).map(|n| (n, n * n)).collect::<Vec<_>>());
    assert_eq!(good.join_timeout(PROMPTLY).unwrap(), 9);
    assert!(eventually(PROMPTLY, || master.number_of_objects().unwrap() == before));
    master.shutdown().unwrap();
}

#[test]
fn a_remote_list_and_dict_are_made_with_their_contents() {
    let master = config().start().unwrap();
    let m = connect(&master.address().to_string());
    let l = m.list_from([1i64, 2, 3]).unwrap();
    assert_eq!(l.to_vec().unwrap(), [1, 2, 3]);
    let d = m.dict_from([(1u8, "one".to_string())]).unwrap();
    assert_eq!(d.get(&1).unwrap().as_deref(), Some("one"));
    master.shutdown().unwrap();
}

#[test]
fn a_list_that_cannot_be_filled_is_not_left_behind() {
    let master = config().max_frame(64 * 1024).start().unwrap();
    let m = BaseManager::new()
        .address(master.address().to_string())
        .authkey(KEY)
        .max_frame(64 * 1024)
        .connect()
        .unwrap();
    let before = m.number_of_objects().unwrap();
    let too_large = vec![0u8; 128 * 1024];
    assert!(matches!(
        m.list_from([too_large]),
        Err(Error::MessageTooLarge { .. })
    ));
    util::assert_objects(|| m.number_of_objects().unwrap(), before, "");
    master.shutdown().unwrap();
}

#[test]
fn a_server_in_this_process_serves_until_shut_down() {
    let server = config().get_server().unwrap();
    let address = server.address();
    let stop = server.shutdown_handle();
    let t = std::thread::spawn(move || server.serve_forever());
    let m = connect(&address.to_string());
    let stats: DictProxy<String, i64> = m.get("stats").unwrap();
    stats.insert("x".into(), 2).unwrap();
    stop.shutdown();
    t.join().unwrap();
    assert!(matches!(stats.len(), Err(Error::ManagerGone(_))));
    let _ = Duration::ZERO;
}

/// Two network namespaces joined by a veth pair: two "hosts" that reach
/// each other only over that link. Deleted on drop.
struct TwoHosts {
    a: String,
    b: String,
    ip_a: String,
}

use util::ip;

impl TwoHosts {
    fn setup() -> Result<TwoHosts, String> {
        let pid = std::process::id();
        let hosts = TwoHosts {
            a: format!("mp{pid}a"),
            b: format!("mp{pid}b"),
            ip_a: format!("10.213.{}.1", pid % 250),
        };
        let ip_b = format!("10.213.{}.2", pid % 250);
        let (va, vb) = (format!("mpv{pid}a"), format!("mpv{pid}b"));
        ip(&["netns", "add", &hosts.a])?;
        ip(&["netns", "add", &hosts.b])?;
        ip(&[
            "link", "add", &va, "netns", &hosts.a, "type", "veth", "peer", "name", &vb, "netns",
            &hosts.b,
        ])?;
        for (ns, dev, addr) in [(&hosts.a, &va, &hosts.ip_a), (&hosts.b, &vb, &ip_b)] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/30"), "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(hosts)
    }
}

impl Drop for TwoHosts {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth pair, and the pair with it.
        let _ = ip(&["netns", "del", &self.a]);
        let _ = ip(&["netns", "del", &self.b]);
    }
}

#[test]
fn two_hosts_in_network_namespaces() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let hosts = match TwoHosts::setup() {
        Ok(h) => h,
        Err(why) => {
            println!("SKIPPED two_hosts_in_network_namespaces: {why}");
            return;
        }
    };
    let key = std::env::temp_dir().join(format!("multiproc-netns-{}.key", std::process::id()));
    std::fs::write(&key, KEY).unwrap();
    // The server on host A.
    let mut server = Command::new("ip")
        .args([
            "netns",
            "exec",
            &hosts.a,
            env!("CARGO_BIN_EXE_multiproc"),
            "serve",
        ])
        .args(["--address", &format!("{}:0", hosts.ip_a), "--authkey-file"])
        .arg(&key)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let address = line
        .trim()
        .strip_prefix("listening on ")
        .map(str::to_string);
    // The client on host B: this test binary, running `netns_client`.
    let client = address.as_ref().map(|address| {
        Command::new("ip")
            .args(["netns", "exec", &hosts.b])
            .arg(std::env::current_exe().unwrap())
            .args(["--exact", "netns_client", "--ignored", "--nocapture"])
            .env("MP_NETNS_ADDR", address)
            .output()
            .unwrap()
    });
    // SAFETY: signalling our own child (the `ip netns exec` that became the server).
    unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
    let stopped = eventually(PROMPTLY, || server.try_wait().unwrap().is_some());
    if !stopped {
        let _ = server.kill();
    }
    let status = server.wait().unwrap();
    let _ = std::fs::remove_file(&key);
    drop(hosts);
    let address = address.unwrap_or_else(|| panic!("the server printed {line:?}"));
    let client = client.unwrap();
    let text = String::from_utf8_lossy(&client.stdout);
    assert!(
        text.contains("NETNS-CLIENT-OK 55"),
        "client on B failed:\n{text}"
    );
    assert!(stopped && status.success(), "server at {address}: {status}");
}

/// Run by `two_hosts_in_network_namespaces` inside namespace B.
#[test]
#[ignore = "runs inside a network namespace, started by two_hosts_in_network_namespaces"]
fn netns_client() {
    let Ok(address) = std::env::var("MP_NETNS_ADDR") else {
        return;
    };
    let m = connect(&address);
    let q = m.queue::<u64>().unwrap();
    for n in 1..=10 {
        q.put(n).unwrap();
    }
    let d = m.dict::<String, u64>().unwrap();
    let mut sum = 0;
    for _ in 0..10 {
        sum += q.get_timeout(PROMPTLY).unwrap();
    }
    d.insert("sum".into(), sum).unwrap();
    println!(
        "NETNS-CLIENT-OK {}",
        d.get(&"sum".to_string()).unwrap().unwrap()
    );
}

/// A user type declared with `#[multiproc::remote]` (the recommended form).
#[derive(Default)]
struct Ledger {
    entries: Vec<(u32, i64)>,
    closed: bool,
}

#[multiproc::remote(proxy = LedgerProxy)]
impl Ledger {
    /// Books `amount` for `worker` unless the ledger is closed; returns the balance.
    #[remote(1)]
    fn book(&mut self, worker: u32, amount: i64) -> Result<i64, String> {
        if self.closed {
            return Err(format!("closed; {worker} booked nothing"));
        }
        self.entries.push((worker, amount));
        Ok(self.balance())
    }
    #[remote(2)]
    fn balance(&self) -> i64 {
        self.entries.iter().map(|(_, a)| a).sum()
    }
    #[remote(3)]
    fn close(&mut self) {
        self.closed = true;
    }
    #[remote(4)]
    fn entries_of(&self, worker: u32) -> Vec<i64> {
        self.entries
            .iter()
            .filter(|(w, _)| *w == worker)
            .map(|(_, a)| *a)
            .collect()
    }
    /// Not served: no `#[remote(N)]`.
    #[allow(dead_code)]
    fn is_closed(&self) -> bool {
        self.closed
    }
}

/// `Tally`'s methods declared with the attribute under `Tally`'s type name:
/// a proxy to the object `remote_object!` declared.
#[derive(Default)]
struct SameWireAsTally;

#[multiproc::remote(proxy = AttributeTallyProxy, name = concat!(module_path!(), "::Tally"))]
impl SameWireAsTally {
    #[remote(2)]
    fn total(&mut self) -> u64 {
        0
    }
    #[remote(1)]
    fn record(&mut self, _worker: u32) -> u64 {
        0
    }
}

/// Books 1..=5 for itself through the typed proxy; returns what the
/// ledger holds for it.
fn booking_worker(address: String) -> Vec<i64> {
    let m = connect(&address);
    let ledger: LedgerProxy = m.get_object("ledger").unwrap();
    let me = std::process::id();
    for amount in 1..=5 {
        ledger.book(me, amount).unwrap().unwrap();
    }
    // The object `remote_object!` declared, through the attribute's proxy.
    let tally: AttributeTallyProxy = m.get_object("tally").unwrap();
    tally.record(me).unwrap();
    ledger.entries_of(me).unwrap()
}

#[test]
fn workers_call_a_type_declared_with_the_attribute_through_its_typed_proxy() {
    for m in METHODS {
        let master = config()
            .register_object::<Ledger>("ledger")
            .start()
            .expect("server starts");
        let address = master.address().to_string();
        let mut workers: Vec<_> = (0..2)
            .map(|_| Process::new(booking_worker, address.clone()).start_method(m))
            .collect();
        for w in &mut workers {
            w.start().unwrap();
        }
        for w in &mut workers {
            assert_eq!(w.join_timeout(PROMPTLY).unwrap(), [1, 2, 3, 4, 5], "{m:?}");
        }
        let ledger: LedgerProxy = master.get_object("ledger").unwrap();
        assert_eq!(ledger.balance().unwrap(), 30, "{m:?}");
        ledger.close().unwrap();
        assert_eq!(
            ledger.book(7, 1).unwrap(),
            Err("closed; 7 booked nothing".to_string())
        );
        assert_eq!(ledger.balance().unwrap(), 30, "{m:?}");
        // Both forms speak one wire format: the attribute's proxy counted
        // in the `remote_object!` type, and its proxy reads the count.
        let tally: TallyProxy = master.get_object("tally").unwrap();
        assert_eq!(tally.total().unwrap(), 2, "{m:?}");
        let same: AttributeTallyProxy = master.get_object("tally").unwrap();
        assert_eq!(same.total().unwrap(), 2, "{m:?}");
        // Each proxy is checked against its own type.
        assert!(matches!(
            master.get_object::<LedgerProxy>("tally"),
            Err(Error::TypeMismatch { .. })
        ));
        master.shutdown().unwrap();
    }
}

/// Child: connects with no authkey given (so with the one it inherited)
/// and adds to the named dict; returns what happened.
fn connect_with_default_key(address: String) -> String {
    match BaseManager::new().address(address).connect() {
        Ok(m) => {
            let stats: DictProxy<String, i64> = m.get("stats").unwrap();
            stats.insert("child".into(), 1).unwrap();
            "ok".into()
        }
        Err(Error::Authentication(_)) => "authentication".into(),
        Err(e) => format!("unexpected: {e}"),
    }
}

/// Python's `BaseManager(authkey=None)`: the process's authkey. A child
/// inherits it and connects without being told; one given another key
/// with `Process::authkey` is refused.
#[test]
fn a_manager_without_an_authkey_uses_the_process_key() {
    for m in METHODS {
        let master = BaseManager::new()
            .register::<DictProxy<String, i64>>("stats")
            .start()
            .unwrap();
        let address = master.address().to_string();
        let mut p = Process::new(connect_with_default_key, address.clone()).start_method(m);
        p.start().unwrap();
        assert_eq!(p.join_timeout(PROMPTLY * 3).unwrap(), "ok", "{m:?}");
        let stats: DictProxy<String, i64> = master.get("stats").unwrap();
        assert_eq!(stats.get(&"child".to_string()).unwrap(), Some(1), "{m:?}");

        let other = multiproc::AuthKey::new(b"another key entirely").unwrap();
        let mut p = Process::new(connect_with_default_key, address)
            .authkey(other)
            .start_method(m);
        p.start().unwrap();
        assert_eq!(
            p.join_timeout(PROMPTLY * 3).unwrap(),
            "authentication",
            "{m:?}"
        );
        assert!(matches!(
            BaseManager::new()
                .address(master.address().to_string())
                .authkey(b"")
                .connect(),
            Err(Error::InvalidArgument(_))
        ));
        master.shutdown().unwrap();
    }
}
