//! `multiproc serve`: a generic manager server over TCP.

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use multiproc::BaseManager;

const DEFAULT_ADDRESS: &str = "127.0.0.1:50000";
/// The shortest key `serve` accepts from its key file.
const MIN_KEY_LEN: usize = 16;

/// Reads the key file: its bytes without trailing newlines, at least
/// [`MIN_KEY_LEN`] long. Warns (on stderr) when group or others may read it.
fn read_key(path: &Path) -> Result<Vec<u8>, String> {
    use std::os::unix::fs::PermissionsExt;
    let key_file = path.display();
    let mut file = std::fs::File::open(path).map_err(|e| format!("cannot read {key_file}: {e}"))?;
    if let Ok(meta) = file.metadata() {
        let mode = meta.permissions().mode();
        if mode & 0o044 != 0 {
            eprintln!(
                "multiproc serve: warning: {key_file} may be read by its group or by others \
                 (mode {:o}); `chmod 600 {key_file}` keeps the authkey yours",
                mode & 0o777
            );
        }
    }
    let mut key = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut key)
        .map_err(|e| format!("cannot read {key_file}: {e}"))?;
    while key.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        key.pop();
    }
    if key.len() < MIN_KEY_LEN {
        return Err(format!(
            "{key_file} holds an authkey of {} bytes; at least {MIN_KEY_LEN} are required \
             (for example: head -c 32 /dev/urandom | base64 > {key_file})",
            key.len()
        ));
    }
    Ok(key)
}

/// Options of `multiproc serve`.
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    /// Where to listen; port 0 picks one.
    #[arg(long, value_name = "HOST:PORT", default_value = DEFAULT_ADDRESS)]
    address: String,
    /// The shared secret clients must prove they know: the file's bytes, a
    /// trailing newline dropped; at least 16 bytes; a warning if group or
    /// others may read the file.
    #[arg(long, value_name = "FILE")]
    authkey_file: PathBuf,
    /// The largest request accepted and response sent [default: 64 MiB];
    /// a longer one fails that call.
    #[arg(long, value_name = "BYTES", value_parser = positive::<usize>)]
    max_frame: Option<usize>,
    /// The most objects one client connection may have alive that it
    /// created [default: 1048576].
    #[arg(long, value_name = "N", value_parser = positive::<u64>)]
    max_objects: Option<u64>,
    /// The most bytes of keys and values one client connection may have
    /// stored [default: physical memory].
    #[arg(long, value_name = "BYTES", value_parser = positive::<u64>)]
    max_bytes: Option<u64>,
    /// Also serve CPython clients (multiprocessing's BaseManager, Python
    /// 3.11+) on this second port.
    #[arg(long, value_name = "HOST:PORT", value_parser = socket_address)]
    python_address: Option<SocketAddr>,
    /// A queue Python clients get as typeid NAME (m.get_task_queue() for
    /// `--queue get_task_queue`) and Rust clients as Queue<py::Value>;
    /// repeatable.
    #[arg(long = "queue", value_name = "NAME", requires = "python_address",
          value_parser = clap::builder::NonEmptyStringValueParser::new())]
    queues: Vec<String>,
    /// Refuse the HMAC-MD5 handshake (Python 3.11).
    #[arg(long, requires = "python_address")]
    no_md5: bool,
    /// What to log on stderr: a level (error, warn, info, debug, trace,
    /// off) or RUST_LOG-style directives [default: RUST_LOG, else info].
    #[arg(long, value_name = "LEVEL", value_parser = crate::logging::parse_level)]
    pub log_level: Option<String>,
}

const AFTER_HELP: &str = "\
Clients connect with BaseManager::new().address(..).authkey(..).connect() and
create dicts, lists, namespaces, queues, locks, semaphores, events and
barriers in it. On SIGINT or SIGTERM (or a client's shutdown) the server
stops and exits with status 0. It prints `listening on ADDRESS` once it
accepts clients (then `python listening on ADDRESS` with --python-address).";

/// A number above zero.
fn positive<T>(s: &str) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + Default,
    T::Err: std::fmt::Display,
{
    match s.parse::<T>() {
        Ok(n) if n > T::default() => Ok(n),
        Ok(_) => Err("must be above 0".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// HOST:PORT, resolved to its first address.
fn socket_address(s: &str) -> Result<SocketAddr, String> {
    match s.to_socket_addrs().map(|mut all| all.next()) {
        Ok(Some(address)) => Ok(address),
        Ok(None) => Err(format!("{s} resolves to no address")),
        Err(e) => Err(format!("not HOST:PORT ({e})")),
    }
}

pub fn command(args: Args) -> ExitCode {
    // Before any thread starts, so that every thread leaves the signals to
    // the one that waits for them.
    if let Err(e) = multiproc::__internal::sys::signal::block_termination() {
        eprintln!("multiproc serve: cannot block signals: {e}");
        return ExitCode::FAILURE;
    }
    let Args {
        address,
        authkey_file: key_file,
        max_frame,
        max_objects,
        max_bytes,
        python_address,
        queues,
        no_md5,
        log_level: _,
    } = args;
    let key = match read_key(&key_file) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("multiproc serve: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut config = BaseManager::new().address(address).authkey(&key);
    if let Some(m) = max_frame {
        config = config.max_frame(m);
    }
    if let Some(m) = max_objects {
        config = config.max_objects(m);
    }
    if let Some(m) = max_bytes {
        config = config.max_bytes(m);
    }
    if let Some(address) = python_address {
        let mut python = multiproc::py::PythonOptions::new(address).allow_md5(!no_md5);
        for q in queues {
            python = python.queue(q);
        }
        config = config.python(python);
    }
    let server = match config.get_server() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("multiproc serve: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stop = server.shutdown_handle();
    let watcher = std::thread::Builder::new()
        .name("multiproc-serve-signals".into())
        .spawn(move || {
            if let Ok(sig) = multiproc::__internal::sys::signal::wait_termination() {
                eprintln!("multiproc serve: signal {sig}, shutting down");
                stop.shutdown();
            }
        });
    if let Err(e) = watcher {
        eprintln!("multiproc serve: cannot watch for signals: {e}");
        return ExitCode::FAILURE;
    }
    // As bound: 0.0.0.0:P when asked to listen on every interface. Whoever
    // started us may have stopped reading (closed the pipe): the server
    // serves on all the same, and a write that fails is not an error.
    let mut out = std::io::stdout();
    let _ = writeln!(out, "listening on {}", server.bound_address());
    if let Some(python) = server.python_address() {
        let _ = writeln!(out, "python listening on {python}");
    }
    let _ = out.flush();
    server.serve_forever();
    let _ = writeln!(out, "server stopped");
    ExitCode::SUCCESS
}
