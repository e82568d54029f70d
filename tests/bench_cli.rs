//! `multiproc bench --smoke` runs, and its JSON has every operation key
//! (time rows under `ops`, `memory/*` rows under `memory`).

use std::process::Command;

fn multiproc() -> Command {
    Command::new(env!("CARGO_BIN_EXE_multiproc"))
}

fn keys() -> Vec<String> {
    let out = multiproc().args(["bench", "--list"]).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn smoke_run_writes_every_key() {
    let dir = std::env::temp_dir().join(format!("multiproc-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("bench.json");
    let out = multiproc()
        .args(["bench", "--smoke", "--no-python", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let ops = doc["ops"].as_object().unwrap();
    let memory = doc["memory"].as_object().unwrap();
    for key in keys() {
        if let Some(m) = memory.get(&key) {
            assert!(m["bytes"].as_u64().unwrap() > 0, "{key}");
            assert!(m["items"].as_u64().unwrap() > 0, "{key}");
            continue;
        }
        let op = ops
            .get(&key)
            .unwrap_or_else(|| panic!("{key} missing from the JSON"));
        let median = op["median_ns"].as_f64().unwrap();
        if key.starts_with("cpu/idle") {
            // CPU burned while idle: a process that did not wake in the
            // smoke run's short window burned none.
            assert!(median >= 0.0, "{key}");
        } else {
            assert!(median > 0.0, "{key}");
        }
        assert!(
            op["p99_ns"].as_f64().unwrap() >= op["median_ns"].as_f64().unwrap(),
            "{key}"
        );
    }
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("lock/acquire_release"), "{table}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_python_baseline_uses_the_same_keys() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/python/baseline.py");
    let ours = keys();
    for filter in ["value/", "memory/"] {
        let Ok(out) = Command::new("python3")
            .args([script, "--smoke", "--filter", filter])
            .output()
        else {
            eprintln!("python3 not available: skipped");
            return;
        };
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let ops = doc["ops"].as_object().unwrap().keys();
        let memory = doc["memory"].as_object().unwrap();
        assert_eq!(
            memory.is_empty(),
            filter != "memory/",
            "{filter}: {memory:?}"
        );
        for key in ops.chain(memory.keys()) {
            assert!(
                ours.contains(key),
                "the baseline measures {key}, which multiproc bench does not"
            );
        }
    }
}

#[test]
fn bad_options_are_refused() {
    let out = multiproc()
        .args(["bench", "--frobnicate"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = multiproc().arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("bench"));
}
