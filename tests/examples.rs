//! Every example runs to completion and prints what it shows.

use std::path::PathBuf;
use std::process::Command;

fn example(name: &str) -> PathBuf {
    // tests run from target/<profile>/deps; `cargo test` builds examples into target/<profile>/examples.
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let path = profile_dir.join("examples").join(name);
    // Only a plain `cargo test` builds the examples; one that picks this
    // test target alone (`--test examples`) does not.
    assert!(
        path.exists(),
        "no example binary at {}: run `cargo build --examples` (with this test's \
         features and profile) first, or the whole `cargo test`, which builds them",
        path.display()
    );
    path
}

fn run(name: &str, expect: &[&str]) {
    let out = Command::new(example(name))
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap_or_else(|e| panic!("cannot run example {name}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{name} failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in expect {
        assert!(
            stdout.contains(needle),
            "{name}: {needle:?} missing from\n{stdout}"
        );
    }
}

#[test]
fn process_basics() {
    run(
        "process_basics",
        &[
            "[Spawn] worker 1",
            "[Fork] worker 2",
            "[Forkserver] worker 1",
            "ended first: [1]",
            "exitcode Some(-15)",
        ],
    );
}

#[test]
fn shared_memory() {
    run(
        "shared_memory",
        &[
            "[other program] read \"hello\"",
            "segment now holds \"HELLO\"",
            "list now holds [Int(42), Str(\"done\")]",
            "after unlink, attaching again: not found",
        ],
    );
}

#[test]
fn shared_value() {
    run(
        "shared_value",
        &[
            "under the lock: 40000",
            "with fetch_add: 40000",
            "[-1, -2, -3, -4, -5]",
        ],
    );
}

#[test]
fn queue_pipe() {
    run(
        "queue_pipe",
        &[
            "queue: received 100000 items from a child (sum 4999950000)",
            "joinable: join() returned, unfinished tasks: 0",
            "sum of squares 1..=10: 385",
            "a task_done too many is Some(InvalidState(",
            "got back \"HELLO\"",
            "poll with nothing sent: false",
            "the server answered 10001 messages",
            "recv on a closed end is Closed: true",
        ],
    );
}

#[test]
fn pool() {
    run(
        "pool",
        &[
            "map of squares: [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]",
            "apply_async callbacks collected: [0, 1, 4, 9, 16]",
            "starmap with a fixed exponent: [1, 8, 27, 64, 125]",
            "starmap3 of clamp: [0, 5, 10]",
            "imap_unordered results (sorted): [10, 20, 30]",
            "still running after 50 ms",
            "a crashing task: worker",
            "the pool carries on: [1, 4, 9]",
            "a ThreadPool closure: [3, 6, 9, 12], called 4 times",
        ],
    );
}

#[test]
fn own_types() {
    run(
        "own_types",
        &[
            "packed in a child: Packed { boxes: 1 }",
            "shipped: customer-2 -> Shipped(\"TRACK-2\")",
            "the dict gives back the same order: true",
            "weighed by the pool (grams): [750, 1000, 1250]",
        ],
    );
}

#[test]
fn locks() {
    run(
        "locks",
        &[
            "hello world 0",
            "hello world 3",
            "rlock held 2 deep",
            "rlock free again: true",
            "never more than 2: true",
            "child saw the event",
            "barrier action: everyone has arrived",
            "barrier arrival indexes: [0, 1, 2]",
        ],
    );
}

#[test]
fn manager() {
    run(
        "manager",
        &[
            "the dict has 10 entries",
            "the list holds [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]",
            "4 processes x 1,000 atomic increments: 4000",
            "nested list even: [0, 2, 4]",
            "nested list odd: [1, 3, 5]",
            "namespace status = done",
            "objects after the proxies were dropped: 0",
            "3 workers summed 1..=100 from a manager queue: 5050",
            "one function, objects of a local Manager: took 55",
            "one function, objects of a TCP BaseManager: took 55",
            "manager shut down",
        ],
    );
}

#[test]
fn distributed_master_and_two_workers() {
    use std::io::{BufRead, BufReader, Read};
    use std::process::Stdio;
    let mut master = Command::new(example("distributed_master"))
        // Ten tasks, handed out once both workers are connected.
        .args(["127.0.0.1:0", "example-key", "10", "2"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("the master starts");
    let mut out = BufReader::new(master.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    let address = first
        .trim()
        .strip_prefix("master listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_string();
    let workers: Vec<_> = (0..2)
        .map(|_| {
            Command::new(example("distributed_worker"))
                .args([address.as_str(), "example-key", "30"])
                .stdout(Stdio::piped())
                .spawn()
                .expect("a worker starts")
        })
        .collect();
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert!(master.wait().unwrap().success(), "{rest}");
    for needle in [
        "put 10 tasks",
        "result: 10^2 = 100",
        "collected 10 results, sum 385",
        "tally: 10 tasks, ",
        "master shut down",
    ] {
        assert!(rest.contains(needle), "{needle:?} missing from\n{rest}");
    }
    let mut total = 0;
    for w in workers {
        let o = w.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{text}");
        assert!(text.contains("the master has gone"), "{text}");
        let did = text
            .lines()
            .find_map(|l| l.split(" did ").nth(1))
            .and_then(|t| t.split_whitespace().next())
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or_else(|| panic!("no count in\n{text}"));
        total += did;
    }
    assert_eq!(total, 10);
}

/// A subscriber installed before `init()` gets the events of children
/// started by spawn and by fork, and of pool workers.
#[test]
fn logging() {
    let out = Command::new(example("logging"))
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .output()
        .unwrap_or_else(|e| panic!("cannot run example logging: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}\n{stdout}\n{stderr}", out.status);
    let parent: u32 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("parent pid "))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no parent pid in\n{stdout}"));
    assert!(stderr.contains("the parent logs"), "{stderr}");
    for how in ["Spawn", "Fork", "Pool"] {
        let line = stderr
            .lines()
            .find(|l| l.contains("child at work") && l.contains(&format!("how={how}")))
            .unwrap_or_else(|| panic!("no event from the {how} child in\n{stderr}"));
        let pid: u32 = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("pid="))
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no pid in {line:?}"));
        assert_ne!(pid, parent, "{line:?} came from the parent");
    }
    assert!(stdout.contains("[Spawn] the child returned 42"), "{stdout}");
    assert!(stdout.contains("[pool] a worker returned 8"), "{stdout}");
}

/// The distributed Pool examples start their own redis-server (the
/// `redis` feature's tests need one installed; CI installs it).
#[cfg(feature = "redis")]
#[test]
fn redis_pool_master() {
    run(
        "redis_pool_master",
        &[
            "map of squares: [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]",
            "live worker: pid ",
            "killed mid-map: still 40 results, sum 20540",
            "pool dropped",
        ],
    );
}

#[cfg(feature = "redis")]
#[test]
fn redis_pool_worker() {
    run(
        "redis_pool_worker",
        &[
            "shouted by the workers: [\"SPAM!\", \"EGGS!\", \"HAM!\"]",
            "a pool without workers: Some(Timeout(",
        ],
    );
}

/// Starts its own `redis-server` (CI installs it; see `.ci/run`).
#[cfg(feature = "redis")]
#[test]
fn redis_manager() {
    run(
        "redis_manager",
        &[
            "jobs done: 100, counted: Some(100), sum of squares: Some(338350)",
            "condition: the waiter saw ready = 42",
            "lock: previous holder died holding it",
            "keys deleted by clear():",
        ],
    );
}
