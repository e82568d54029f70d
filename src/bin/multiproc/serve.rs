//! `multiproc serve`: a generic manager server over TCP.

use std::io::Write;
use std::process::ExitCode;

use multiproc::BaseManager;

use crate::usage_error;

const DEFAULT_ADDRESS: &str = "127.0.0.1:50000";
/// The shortest key `serve` accepts from its key file.
const MIN_KEY_LEN: usize = 16;

/// Reads the key file: its bytes without trailing newlines, at least
/// [`MIN_KEY_LEN`] long. Warns (on stderr) when group or others may read it.
fn read_key(key_file: &str) -> Result<Vec<u8>, String> {
    use std::os::unix::fs::PermissionsExt;
    let mut file =
        std::fs::File::open(key_file).map_err(|e| format!("cannot read {key_file}: {e}"))?;
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

pub fn command(args: &[String]) -> ExitCode {
    // Before any thread starts, so that every thread leaves the signals to
    // the one that waits for them.
    if let Err(e) = multiproc::__internal::sys::signal::block_termination() {
        eprintln!("multiproc serve: cannot block signals: {e}");
        return ExitCode::FAILURE;
    }
    let mut address = DEFAULT_ADDRESS.to_string();
    let mut key_file = None;
    let mut max_frame = None;
    let mut max_objects = None;
    let mut max_bytes = None;
    let mut python_address = None;
    let mut queues: Vec<String> = Vec::new();
    let mut allow_md5 = true;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--address" => match it.next() {
                Some(a) => address = a.clone(),
                None => return usage_error("--address needs HOST:PORT"),
            },
            "--authkey-file" => match it.next() {
                Some(f) => key_file = Some(f.clone()),
                None => return usage_error("--authkey-file needs a file"),
            },
            "--max-frame" => match it.next().map(|m| m.parse::<usize>()) {
                Some(Ok(m)) if m > 0 => max_frame = Some(m),
                _ => return usage_error("--max-frame needs a positive number of bytes"),
            },
            "--max-objects" => match it.next().map(|m| m.parse::<u64>()) {
                Some(Ok(m)) if m > 0 => max_objects = Some(m),
                _ => return usage_error("--max-objects needs a positive number"),
            },
            "--max-bytes" => match it.next().map(|m| m.parse::<u64>()) {
                Some(Ok(m)) if m > 0 => max_bytes = Some(m),
                _ => return usage_error("--max-bytes needs a positive number of bytes"),
            },
            "--python-address" => match it.next() {
                Some(a) => python_address = Some(a.clone()),
                None => return usage_error("--python-address needs HOST:PORT"),
            },
            "--queue" => match it.next() {
                Some(q) if !q.is_empty() => queues.push(q.clone()),
                _ => return usage_error("--queue needs a name"),
            },
            "--no-md5" => allow_md5 = false,
            other => return usage_error(&format!("unknown serve option {other:?}")),
        }
    }
    let Some(key_file) = key_file else {
        return usage_error("serve needs --authkey-file");
    };
    if python_address.is_none() && (!queues.is_empty() || !allow_md5) {
        return usage_error("--queue and --no-md5 need --python-address");
    }
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
    if let Some(a) = python_address {
        let address = match std::net::ToSocketAddrs::to_socket_addrs(&a).map(|mut i| i.next()) {
            Ok(Some(address)) => address,
            _ => return usage_error(&format!("--python-address {a:?} is not HOST:PORT")),
        };
        let mut python = multiproc::py::PythonOptions::new(address).allow_md5(allow_md5);
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
    // As bound: 0.0.0.0:P when asked to listen on every interface.
    println!("listening on {}", server.bound_address());
    if let Some(python) = server.python_address() {
        println!("python listening on {python}");
    }
    let _ = std::io::stdout().flush();
    server.serve_forever();
    println!("server stopped");
    ExitCode::SUCCESS
}
