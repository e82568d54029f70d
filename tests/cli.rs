//! The `multiproc` command line: help, version, usage errors, `--x=value`,
//! bench progress and serve's logs.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use multiproc::{BaseManager, Error};

multiproc::init_before_main!();

/// Generous: the machine running the tests may be busy.
const LIMIT: Duration = Duration::from_secs(60);
/// `serve` wants at least 16 bytes of key.
const KEY: &[u8] = b"cli-test-secret-0123456789";

fn multiproc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_multiproc"))
        .args(args)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A key file of mode 0600 that is removed on drop.
struct KeyFile(std::path::PathBuf);

impl KeyFile {
    fn new(tag: &str) -> KeyFile {
        use std::os::unix::fs::PermissionsExt;
        let path =
            std::env::temp_dir().join(format!("multiproc-cli-{tag}-{}.key", std::process::id()));
        std::fs::write(&path, KEY).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        KeyFile(path)
    }
    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for KeyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn version_prints_the_package_version_and_exits_0() {
    for flag in ["--version", "-V"] {
        let out = multiproc(&[flag]);
        assert_eq!(out.status.code(), Some(0), "{flag}");
        assert_eq!(
            text(&out.stdout).trim(),
            format!("multiproc {}", env!("CARGO_PKG_VERSION"))
        );
    }
}

#[test]
fn subcommand_help_exits_0_and_lists_the_subcommands_options() {
    let cases: [(&[&str], &[&str]); 5] = [
        (
            &["serve", "--help"],
            &[
                "--address",
                "--authkey-file",
                "--max-frame",
                "--max-objects",
                "--max-bytes",
                "--python-address",
                "--queue",
                "--no-md5",
                "--log-level",
            ],
        ),
        (
            &["bench", "--help"],
            &[
                "--smoke",
                "--filter",
                "--json",
                "--no-python",
                "--sleep",
                "--list",
            ],
        ),
        (&["help", "serve"], &["--authkey-file"]),
        (&["--help"], &["bench", "serve"]),
        (&["help"], &["bench", "serve"]),
    ];
    for (args, needles) in cases {
        let out = multiproc(args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
        let help = text(&out.stdout);
        for needle in needles {
            assert!(
                help.contains(needle),
                "{args:?}: {needle} missing from\n{help}"
            );
        }
    }
}

/// A usage error is exit status 2 and an error line that names the
/// culprit (for a missing option, the line after "error: the following
/// required arguments were not provided:"), the usage line and a pointer to
/// --help; the help is not reprinted.
fn assert_usage_error(args: &[&str], culprit: &str) {
    let out = multiproc(args);
    assert_eq!(out.status.code(), Some(2), "{args:?}");
    assert!(out.stdout.is_empty(), "{args:?}: {}", text(&out.stdout));
    let err = text(&out.stderr);
    let message = err.split("Usage:").next().unwrap_or_default();
    assert!(
        message.starts_with("error: ") && message.contains(culprit),
        "{args:?}: the error does not name {culprit}:\n{err}"
    );
    assert!(
        !err.contains("Options:") && err.lines().count() <= 8,
        "{args:?}: more than a short error:\n{err}"
    );
}

#[test]
fn an_unknown_flag_exits_2_with_a_line_naming_it() {
    assert_usage_error(&["bench", "--frobnicate"], "'--frobnicate'");
    assert_usage_error(
        &["serve", "--authkey-file", "k", "--frobnicate=1"],
        "'--frobnicate'",
    );
    assert_usage_error(&["--frobnicate"], "'--frobnicate'");
    assert_usage_error(&["frobnicate"], "'frobnicate'");
}

#[test]
fn a_bad_value_exits_2_with_a_line_naming_the_flag() {
    assert_usage_error(
        &["serve", "--authkey-file", "k", "--max-frame=0"],
        "--max-frame",
    );
    assert_usage_error(
        &["serve", "--authkey-file", "k", "--max-objects", "many"],
        "--max-objects",
    );
    assert_usage_error(
        &[
            "serve",
            "--authkey-file",
            "k",
            "--python-address",
            "nowhere",
        ],
        "--python-address",
    );
    assert_usage_error(
        &["serve", "--authkey-file", "k", "--log-level=loud"],
        "--log-level",
    );
    assert_usage_error(
        &["serve", "--authkey-file", "k", "--log-level=a=b=c"],
        "--log-level",
    );
    assert_usage_error(&["serve"], "--authkey-file");
    assert_usage_error(
        &["serve", "--authkey-file", "k", "--queue", "q"],
        "--python-address",
    );
    assert_usage_error(
        &["serve", "--authkey-file", "k", "--no-md5"],
        "--python-address",
    );
    assert_usage_error(&["bench", "--json"], "--json");
}

#[test]
fn options_take_the_equals_form_and_bench_shows_its_progress() {
    let out = multiproc(&["bench", "--smoke", "--no-python", "--filter=value/raw_read"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(table.contains("value/raw_read"), "{table}");
    assert!(
        !table.contains("lock/"),
        "the filter was not applied:\n{table}"
    );
    // Not a terminal: one progress line per operation, then a summary.
    let err = text(&out.stderr);
    assert!(err.contains("[1/1] value/raw_read"), "{err}");
    assert!(err.contains("measured 1 of 1 operations"), "{err}");
}

/// Runs `serve` with `extra` arguments (and RUST_LOG set to `rust_log`, if
/// given), connects with a wrong key, waits for `until` on its stderr (if
/// given), then stops it with SIGTERM; returns all of its stderr.
fn serve_and_connect_with_a_wrong_key(
    tag: &str,
    extra: &[&str],
    rust_log: Option<&str>,
    until: Option<&str>,
) -> String {
    let key = KeyFile::new(tag);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_multiproc"));
    cmd.args([
        "serve",
        "--address=127.0.0.1:0",
        "--authkey-file",
        key.path(),
    ])
    .args(extra);
    match rust_log {
        Some(filter) => cmd.env("RUST_LOG", filter),
        None => cmd.env_remove("RUST_LOG"),
    };
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    // Read, then closed: the server must serve on and stop cleanly all the
    // same (its last line, "server stopped", meets a closed pipe).
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let address = first
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_string();
    let stderr = child.stderr.take().unwrap();
    let (lines, seen) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            all.push_str(&line);
            all.push('\n');
            let _ = lines.send(line);
        }
        all
    });
    let wrong = BaseManager::new()
        .address(address.clone())
        .authkey(b"not-the-key-at-all")
        .connect();
    assert!(matches!(wrong, Err(Error::Authentication(_))), "{wrong:?}");
    // A client with the key is served after it.
    let right = BaseManager::new()
        .address(address)
        .authkey(KEY)
        .connect()
        .unwrap();
    right.number_of_objects().unwrap();
    drop(right);
    if let Some(until) = until {
        // Until the line comes (or the limit: the caller's assertion then
        // says what is missing).
        let deadline = std::time::Instant::now() + LIMIT;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match seen.recv_timeout(left) {
                Ok(line) if line.contains(until) => break,
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }
    // SAFETY: signalling our own child, whose pid we hold.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = child.wait().unwrap();
    let err = reader.join().unwrap();
    assert!(status.success(), "{status}: {err}");
    err
}

#[test]
fn serve_logs_on_stderr_at_the_level_asked() {
    const REFUSED: &str = "failed the authkey handshake";
    // The default (info) shows the refused client, with its level.
    let err = serve_and_connect_with_a_wrong_key("default", &[], None, Some(REFUSED));
    assert!(
        err.lines()
            .any(|l| l.contains("WARN") && l.contains(REFUSED)),
        "{err}"
    );
    // --log-level error hides warnings; the signal is still reported.
    let err = serve_and_connect_with_a_wrong_key("quiet", &["--log-level=error"], None, None);
    assert!(!err.contains(REFUSED), "{err}");
    assert!(err.contains("shutting down"), "{err}");
    // So does RUST_LOG, when --log-level is not given ...
    let err = serve_and_connect_with_a_wrong_key("env", &[], Some("error"), None);
    assert!(!err.contains(REFUSED), "{err}");
    // ... and --log-level wins over it.
    let err = serve_and_connect_with_a_wrong_key(
        "both",
        &["--log-level", "warn"],
        Some("error"),
        Some(REFUSED),
    );
    assert!(err.contains(REFUSED), "{err}");
}

#[test]
fn serve_reports_an_address_in_use_and_exits_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let key = KeyFile::new("inuse");
    let out = Command::new(env!("CARGO_BIN_EXE_multiproc"))
        .args(["serve", "--address", &address, "--authkey-file", key.path()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("in use") && err.contains(&address), "{err}");
    assert!(out.stdout.is_empty(), "it served: {}", text(&out.stdout));
}
