//! `multiproc serve`: a generic manager server clients reach over TCP,
//! stopped cleanly by SIGTERM or SIGINT.

mod util;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use multiproc::{BaseManager, Error};

multiproc::init_before_main!();

const LIMIT: Duration = Duration::from_secs(20);
/// `serve` wants at least 16 bytes of key.
const KEY: &[u8] = b"cli-secret-0123456789";

fn key_file(tag: &str) -> std::path::PathBuf {
    util::serve_key_file(&format!("serve-{tag}"), &[KEY, b"\n"].concat())
}

/// Starts the server; returns it and the address it printed.
fn serve(key: &std::path::Path) -> (Child, String) {
    util::start_serve(key, "127.0.0.1:0", &[])
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server did not exit");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn help_documents_serve() {
    // The command's help lists `serve`; its options are in `serve --help`.
    let out = Command::new(env!("CARGO_BIN_EXE_multiproc"))
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("serve"), "{text}");
    let out = Command::new(env!("CARGO_BIN_EXE_multiproc"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("--authkey-file"), "{text}");
}

#[test]
fn serves_dicts_lists_namespaces_queues_and_sync_objects_until_signalled() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let key = key_file(&signal.to_string());
        let (mut child, address) = serve(&key);
        let m = BaseManager::new()
            .address(address.clone())
            .authkey(KEY)
            .connect()
            .unwrap();
        let d = m.dict::<String, u32>().unwrap();
        d.insert("a".into(), 1).unwrap();
        let l = m.list::<u32>().unwrap();
        l.extend([1, 2]).unwrap();
        let ns = m.namespace().unwrap();
        ns.set("x", 5u64).unwrap();
        let q = m.queue::<String>().unwrap();
        q.put("job".to_string()).unwrap();
        assert_eq!(d.get(&"a".to_string()).unwrap(), Some(1));
        assert_eq!(l.len().unwrap(), 2);
        assert_eq!(ns.get::<u64>("x").unwrap(), 5);
        assert_eq!(q.get_timeout(LIMIT).unwrap(), "job");
        let lock = m.lock().unwrap();
        let held = lock.lock().unwrap();
        assert!(lock.is_locked().unwrap());
        drop(held);
        assert!(!lock.is_locked().unwrap());
        let event = m.event().unwrap();
        event.set().unwrap();
        assert!(event.wait_timeout(LIMIT).unwrap());
        assert_eq!(m.barrier(1).unwrap().wait_timeout(LIMIT).unwrap(), 0);
        assert_eq!(m.semaphore(3).unwrap().get_value().unwrap(), 3);
        let wrong = BaseManager::new()
            .address(address)
            .authkey(b"wrong")
            .connect();
        assert!(matches!(wrong, Err(Error::Authentication(_))));
        // SAFETY: signalling our own child, whose pid we hold.
        assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
        assert!(wait_exit(&mut child).success(), "signal {signal}");
        assert!(d.len().is_err());
        std::fs::remove_file(&key).unwrap();
    }
}

#[test]
fn a_missing_key_file_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_multiproc"))
        .args(["serve", "--address", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_killed_server_is_an_error_at_the_proxy_not_a_hang() {
    let key = key_file("killed");
    let (mut child, address) = serve(&key);
    let m = BaseManager::new()
        .address(address)
        .authkey(KEY)
        .connect()
        .unwrap();
    let d = m.dict::<u32, u32>().unwrap();
    d.insert(1, 1).unwrap();
    let q = m.queue::<u32>().unwrap();
    // A getter waiting on the server when it dies.
    let waiting = std::thread::spawn(move || q.get_timeout(LIMIT * 3));
    child.kill().unwrap();
    child.wait().unwrap();
    let start = Instant::now();
    assert!(matches!(d.len(), Err(Error::ManagerGone(_))));
    assert!(matches!(
        waiting.join().unwrap(),
        Err(Error::ManagerGone(_))
    ));
    assert!(start.elapsed() < LIMIT);
    std::fs::remove_file(&key).unwrap();
}

/// Runs `serve` with `key` in a key file of mode `mode`, on `address`;
/// returns the child (stdout and stderr piped) and the key file.
fn serve_with(tag: &str, key: &[u8], mode: u32, address: &str) -> (Child, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let path =
        std::env::temp_dir().join(format!("multiproc-serve-{tag}-{}.key", std::process::id()));
    std::fs::write(&path, key).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_multiproc"))
        .args(["serve", "--address", address, "--authkey-file"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    (child, path)
}

fn first_line(r: impl std::io::Read) -> String {
    let mut line = String::new();
    BufReader::new(r).read_line(&mut line).unwrap();
    line
}

#[test]
fn an_unspecified_address_is_printed_as_bound() {
    let (mut child, key) = serve_with("any", KEY, 0o600, "0.0.0.0:0");
    let line = first_line(child.stdout.as_mut().unwrap());
    let bound: std::net::SocketAddr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    assert!(bound.ip().is_unspecified(), "{line:?}");
    assert_ne!(bound.port(), 0);
    // Reachable on loopback, at the port printed.
    let m = BaseManager::new()
        .address(format!("127.0.0.1:{}", bound.port()))
        .authkey(KEY)
        .connect()
        .unwrap();
    m.number_of_objects().unwrap();
    drop(m);
    // SAFETY: signalling our own child, whose pid we hold.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    assert!(wait_exit(&mut child).success());
    std::fs::remove_file(&key).unwrap();
}

#[test]
fn a_key_shorter_than_16_bytes_is_refused() {
    let (child, key) = serve_with("short", b"short-key\n", 0o600, "127.0.0.1:0");
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("at least 16"), "{text}");
    assert!(
        out.stdout.is_empty(),
        "it served: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    std::fs::remove_file(&key).unwrap();
}

#[test]
fn a_key_file_others_can_read_is_warned_about() {
    for (mode, warned) in [(0o644, true), (0o640, true), (0o600, false)] {
        let (mut child, key) = serve_with(&format!("mode{mode:o}"), KEY, mode, "127.0.0.1:0");
        let line = first_line(child.stdout.as_mut().unwrap());
        assert!(line.starts_with("listening on "), "{line:?}");
        // SAFETY: signalling our own child, whose pid we hold.
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stderr);
        assert_eq!(text.contains("warning"), warned, "mode {mode:o}: {text}");
        std::fs::remove_file(&key).unwrap();
    }
}
