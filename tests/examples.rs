//! Every example runs to completion and prints what it shows.

use std::path::PathBuf;
use std::process::Command;

fn example(name: &str) -> PathBuf {
    // tests run from target/<profile>/deps; `cargo test` builds examples into target/<profile>/examples.
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    profile_dir.join("examples").join(name)
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
        &["[Spawn] worker 1", "[Fork] worker 2", "exitcode Some(-15)"],
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
            "manager shut down",
        ],
    );
}
