//! Python workers on a Rust manager: CPython's `BaseManager` clients, under
//! Python 3.11 and 3.12, against `multiproc serve --python-address` and a
//! Rust master's `BaseManager::python`.
//!
//! The interpreters are pyenv's (`$PYENV_ROOT/versions/3.X.*/bin/python3`,
//! else `python3.X` on PATH). A missing one fails these tests: it is never
//! a skip. The Python side lives in `tests/python/`.

mod util;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use multiproc::py::{PythonOptions, Value};
use multiproc::{BaseManager, Error, Process, Queue, RemoteManager, StartMethod};

multiproc::init_before_main!();

/// Generous: Python starts slowly on a loaded 2-core machine.
const LIMIT: Duration = Duration::from_secs(60);
const AUTHKEY: &[u8] = b"bridge-test-secret";

/// The interpreter of Python `version` ("3.11"); panics if there is none.
fn python(version: &str) -> PathBuf {
    let root = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root/.pyenv"));
    let prefix = format!("{version}.");
    if let Ok(dir) = std::fs::read_dir(root.join("versions")) {
        let mut found: Vec<PathBuf> = dir
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .map(|e| e.path().join("bin").join("python3"))
            .filter(|p| p.exists())
            .collect();
        found.sort();
        if let Some(p) = found.pop() {
            return p;
        }
    }
    let name = format!("python{version}");
    let reports = Command::new(&name)
        .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
        .output();
    match reports {
        Ok(o) if o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == version => {
            PathBuf::from(name)
        }
        _ => panic!(
            "Python {version} is required by this test: not in {}/versions, and no working {name} on PATH",
            root.display()
        ),
    }
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("python")
        .join(name)
}

fn key_file(tag: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "multiproc-pybridge-{tag}-{}.key",
        std::process::id()
    ));
    let mut key = AUTHKEY.to_vec();
    key.push(b'\n');
    std::fs::write(&path, key).unwrap();
    path
}

/// A `multiproc serve --python-address` child, stopped by SIGTERM on drop.
struct Serve {
    child: Child,
    native: String,
    python: SocketAddr,
    key: PathBuf,
}

impl Serve {
    fn start(tag: &str, queues: &[&str], extra: &[&str]) -> Serve {
        let key = key_file(tag);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_multiproc"));
        cmd.args(["serve", "--address", "127.0.0.1:0"])
            .args(["--python-address", "127.0.0.1:0", "--authkey-file"])
            .arg(&key);
        for q in queues {
            cmd.args(["--queue", q]);
        }
        let mut child = cmd
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = |prefix: &str| {
            let mut l = String::new();
            out.read_line(&mut l).unwrap();
            l.trim()
                .strip_prefix(prefix)
                .unwrap_or_else(|| panic!("unexpected line {l:?}"))
                .to_string()
        };
        let native = line("listening on ");
        let python = line("python listening on ").parse().unwrap();
        Serve {
            child,
            native,
            python,
            key,
        }
    }

    fn rust(&self) -> RemoteManager {
        BaseManager::new()
            .address(self.native.clone())
            .authkey(AUTHKEY)
            .connect()
            .unwrap()
    }

    /// `checks.py HOST PORT KEY args…` under Python `version`.
    fn checks(&self, version: &str, args: &[&str]) -> Command {
        py_command(version, "checks.py", self.python, &self.key, args)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        // SAFETY: signalling our own child, whose pid we hold and have not reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        while self.child.try_wait().ok().flatten().is_none() {
            if start.elapsed() > LIMIT {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = std::fs::remove_file(&self.key);
    }
}

fn py_command(version: &str, file: &str, at: SocketAddr, key: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(python(version));
    cmd.arg(script(file))
        .arg(at.ip().to_string())
        .arg(at.port().to_string())
        .arg(key)
        .args(args)
        .stdin(Stdio::null());
    cmd
}

/// Runs `cmd` to its end (killing it past `LIMIT`) and returns its output.
fn run(mut cmd: Command) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    finish(child)
}

fn finish(mut child: Child) -> Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > LIMIT * 2 {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

#[track_caller]
fn assert_ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `SAMPLES` of checks.py, as Rust values.
fn samples() -> Vec<Value> {
    use Value::{Bool, Bytes, Dict, Float, Int, List, None, Str, Tuple};
    let s = |t: &str| Str(t.to_string());
    vec![
        None,
        Bool(true),
        Bool(false),
        Int(0),
        Int(-1),
        Int(255),
        Int(65536),
        Int(-(1 << 31)),
        Int(i64::MAX),
        Int(i64::MIN),
        Float(1.5),
        Float(-0.0),
        Float(f64::INFINITY),
        s(""),
        s("héllo wörld"),
        Str("x".repeat(300)),
        Bytes(vec![]),
        Bytes(b"\x00\xffbytes".to_vec()),
        Tuple(vec![]),
        Tuple(vec![Int(1)]),
        Tuple(vec![Int(1), s("two"), Float(3.0), None]),
        List(vec![]),
        List(vec![Int(1), List(vec![Int(2), List(vec![Int(3)])])]),
        Dict(vec![]),
        Dict(vec![
            (s("z"), Int(1)),
            (s("a"), Int(2)),
            (Int(3), List(vec![None])),
            (Tuple(vec![Int(1), Int(2)]), Bytes(b"k".to_vec())),
        ]),
        Dict(vec![(
            s("nested"),
            Dict(vec![
                (s("b"), Tuple(vec![Bool(true), Bool(false)])),
                (s("a"), List(vec![])),
            ]),
        )]),
    ]
}

const RECIPE_QUEUES: [&str; 2] = ["get_task_queue", "get_result_queue"];

#[test]
fn values_round_trip_between_python_and_rust_with_their_types_and_order() {
    for version in ["3.11", "3.12"] {
        let s = Serve::start(&format!("roundtrip{version}"), &RECIPE_QUEUES, &[]);
        assert_ok("roundtrip-put", &run(s.checks(version, &["roundtrip-put"])));
        let m = s.rust();
        let tasks: Queue<Value> = m.get("get_task_queue").unwrap();
        let results: Queue<Value> = m.get("get_result_queue").unwrap();
        for want in samples() {
            let got = tasks.get_timeout(LIMIT).unwrap();
            assert_eq!(got, want, "Python {version}");
            if let (Value::Float(a), Value::Float(b)) = (&got, &want) {
                assert_eq!(a.to_bits(), b.to_bits(), "Python {version}");
            }
            results.put(got).unwrap();
        }
        assert_ok("roundtrip-get", &run(s.checks(version, &["roundtrip-get"])));
    }
}

#[test]
fn errors_come_back_as_the_python_exceptions_a_worker_catches() {
    // queue.Empty on a timeout, RemoteError for an unknown typeid and a
    // method not exposed, TypeError / OverflowError for values that do not
    // travel, ValueError for task_done() once too often,
    // AuthenticationError for a wrong key.
    for version in ["3.11", "3.12"] {
        let s = Serve::start(
            &format!("errors{version}"),
            &["get_task_queue", "get_result_queue", "get_done_queue"],
            &[],
        );
        assert_ok("errors", &run(s.checks(version, &["errors"])));
    }
}

#[test]
fn no_md5_refuses_python_311_and_still_serves_312() {
    let s = Serve::start("nomd5", &RECIPE_QUEUES, &["--no-md5"]);
    assert_ok("3.11 refused", &run(s.checks("3.11", &["auth-refused"])));
    assert_ok("3.12 served", &run(s.checks("3.12", &["roundtrip-put"])));
    let tasks: Queue<Value> = s.rust().get("get_task_queue").unwrap();
    assert_eq!(tasks.qsize().unwrap(), samples().len());
    // And without --no-md5, 3.11 is served.
    let s = Serve::start("md5", &RECIPE_QUEUES, &[]);
    assert_ok("3.11 served", &run(s.checks("3.11", &["roundtrip-put"])));
}

#[test]
fn queue_options_without_a_python_address_are_a_usage_error() {
    let key = key_file("usage");
    for extra in [&["--queue", "q"][..], &["--no-md5"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_multiproc"))
            .args(["serve", "--address", "127.0.0.1:0", "--authkey-file"])
            .arg(&key)
            .args(extra)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{extra:?}");
    }
    std::fs::remove_file(&key).unwrap();
}

/// The Rust worker of the mixed recipe: squares tasks until "STOP".
fn rust_worker(address: String) -> u64 {
    let m = BaseManager::new()
        .address(address)
        .authkey(AUTHKEY)
        .connect()
        .unwrap();
    let tasks: Queue<Value> = m.get("get_task_queue").unwrap();
    let results: Queue<Value> = m.get("get_result_queue").unwrap();
    let mut done = 0;
    loop {
        let task = tasks.get_timeout(LIMIT * 2).unwrap();
        if task.as_str() == Some("STOP") {
            return done;
        }
        let n = i64::try_from(task).unwrap();
        results.put(Value::from(("rust", n, n * n))).unwrap();
        done += 1;
    }
}

fn mixed_recipe(method: StartMethod) {
    let key = key_file(&format!("mixed{method:?}"));
    let mut python = PythonOptions::new("127.0.0.1:0".parse().unwrap());
    for q in RECIPE_QUEUES {
        python = python.queue(q);
    }
    let master = BaseManager::new()
        .address("127.0.0.1:0")
        .authkey(AUTHKEY)
        .python(python)
        .start()
        .unwrap();
    let at = master.python_address().unwrap();
    let tasks: Queue<Value> = master.get("get_task_queue").unwrap();
    let results: Queue<Value> = master.get("get_result_queue").unwrap();

    let workers: Vec<Child> = [("3.11", "py311"), ("3.12", "py312")]
        .iter()
        .map(|(v, name)| {
            py_command(v, "recipe_worker.py", at, &key, &[name])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut rust = Process::new(rust_worker, master.address().to_string()).start_method(method);
    rust.start().unwrap();

    // Rounds of three tasks, each put once all three workers wait in a get
    // (the server's own count of sleepers). Which sleeper takes which task
    // is the scheduler's choice (a Python worker waits and takes inside the
    // server; the Rust worker's wait and take are two round trips), so the
    // rounds go on until every worker has taken part, at least MIN_ROUNDS
    // and at most MAX_ROUNDS of them.
    const MIN_ROUNDS: usize = 8;
    const MAX_ROUNDS: usize = 400;
    let mut n = 0;
    let mut seen = std::collections::BTreeMap::new();
    let mut by_worker = std::collections::BTreeMap::new();
    let mut rounds = 0;
    while rounds < MIN_ROUNDS || by_worker.len() < 3 {
        assert!(
            rounds < MAX_ROUNDS,
            "{MAX_ROUNDS} rounds and not every worker took a task: {by_worker:?}"
        );
        rounds += 1;
        let wait = py_command(
            "3.12",
            "checks.py",
            at,
            &key,
            &["wait-sleepers", "get_task_queue", "3"],
        );
        assert_ok("wait-sleepers", &run(wait));
        for _ in 0..3 {
            n += 1;
            tasks.put(Value::Int(n)).unwrap();
        }
        for _ in 0..3 {
            let (worker, task, square): (String, i64, i64) =
                results.get_timeout(LIMIT).unwrap().try_into().unwrap();
            assert_eq!(square, task * task);
            assert!(seen.insert(task, worker.clone()).is_none(), "{task} twice");
            *by_worker.entry(worker).or_insert(0u64) += 1;
        }
    }
    for _ in 0..3 {
        tasks.put(Value::from("STOP")).unwrap();
    }
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        (1..=n).collect::<Vec<_>>()
    );
    assert!(
        matches!(results.try_get(), Err(Error::Empty)),
        "a result arrived twice"
    );
    for w in workers {
        assert_ok("recipe worker", &finish(w));
    }
    let rust_done = rust.join_timeout(LIMIT).unwrap();
    assert_eq!(by_worker.get("rust").copied().unwrap_or(0), rust_done);
    assert_eq!(
        by_worker.keys().map(String::as_str).collect::<Vec<_>>(),
        ["py311", "py312", "rust"]
    );
    master.shutdown().unwrap();
    std::fs::remove_file(&key).unwrap();
}

#[test]
fn python_and_rust_workers_share_the_recipe_queues_and_every_result_arrives_once_spawn() {
    mixed_recipe(StartMethod::Spawn);
}

#[test]
fn python_and_rust_workers_share_the_recipe_queues_and_every_result_arrives_once_fork() {
    mixed_recipe(StartMethod::Fork);
}

#[test]
fn a_python_getter_killed_while_waiting_does_not_swallow_the_next_task() {
    // CPython's own server loses the task here: its thread blocked in the
    // dead worker's get takes the item, then fails to send it.
    for version in ["3.11", "3.12"] {
        let s = Serve::start(&format!("killed{version}"), &RECIPE_QUEUES, &[]);
        let tasks: Queue<Value> = s.rust().get("get_task_queue").unwrap();
        for round in 0..3 {
            let mut getter = s
                .checks(version, &["blocking-get"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            // Synchronised on the server's state: the getter waits in it.
            let wait = s.checks("3.12", &["wait-python-getters", "get_task_queue", "1"]);
            assert_ok("wait-python-getters", &run(wait));
            getter.kill().unwrap();
            getter.wait().unwrap();
            let task = Value::from(("precious", round));
            tasks.put(task.clone()).unwrap();
            assert_eq!(
                tasks.get_timeout(Duration::from_secs(20)).unwrap(),
                task,
                "Python {version}, round {round}"
            );
        }
    }
}

#[test]
fn hostile_pickles_get_errors_while_other_clients_are_served() {
    // A global, INST, 100,000-deep nesting, a memo bomb, a 10 MB LONG4,
    // truncated pickles and frames, lone surrogates and more (see
    // checks.py `hostile`): each is answered with an error, the hostile
    // connection stays usable, nothing a pickle names runs.
    let s = Serve::start("hostile", &RECIPE_QUEUES, &[]);
    let marker =
        std::env::temp_dir().join(format!("multiproc-pybridge-pwned-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let stop = Arc::new(AtomicBool::new(false));
    let other = {
        let results: Queue<Value> = s.rust().get("get_result_queue").unwrap();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut served = 0u64;
            while !stop.load(Ordering::SeqCst) {
                results.put(Value::Int(served as i64)).unwrap();
                assert_eq!(
                    results.get_timeout(LIMIT).unwrap(),
                    Value::Int(served as i64)
                );
                served += 1;
            }
            served
        })
    };
    let out = run(s.checks("3.12", &["hostile", marker.to_str().unwrap()]));
    stop.store(true, Ordering::SeqCst);
    let served = other.join().unwrap();
    assert_ok("hostile", &out);
    assert!(served > 0, "the other client was not served");
    assert!(!marker.exists(), "a pickle ran a command");
    // 3.11 speaks the same; its pickles are refused the same way.
    assert_ok(
        "hostile 3.11",
        &run(s.checks("3.11", &["hostile", marker.to_str().unwrap()])),
    );
    assert!(!marker.exists(), "a pickle ran a command");
    assert!(util::shm_leaks().is_empty());
}

/// One host holding many silent handshakes open fills its own share of the
/// Python listener (16), not the listener: a CPython client from another
/// address still gets in and is served. (Before, 64 from anywhere shut
/// every Python client out for as long as they were held.)
#[test]
fn one_host_holding_handshakes_open_does_not_lock_python_clients_out() {
    use std::io::Read;
    let s = Serve::start("py-flood", &RECIPE_QUEUES, &[]);
    let flooder = std::net::Ipv4Addr::new(127, 0, 0, 2);
    let mut held = Vec::new();
    let mut challenged = 0;
    for _ in 0..80 {
        let mut c = util::connect_from(flooder, s.python);
        c.set_read_timeout(Some(LIMIT)).unwrap();
        // A challenge comes first (its 4-byte length), or the end at once.
        let mut len = [0u8; 4];
        if c.read_exact(&mut len).is_ok() {
            challenged += 1;
        }
        held.push(c);
    }
    assert!(
        (1..=16).contains(&challenged),
        "{challenged} handshakes from one host at once"
    );
    assert_ok(
        "a client beside the flood",
        &run(s.checks("3.12", &["roundtrip-put"])),
    );
    drop(held);
}
