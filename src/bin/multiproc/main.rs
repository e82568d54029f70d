//! The `multiproc` command: benchmarks and a generic remote manager server.

mod serve;

mod bench;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;

const HELP: &str = "\
multiproc: Python's multiprocessing, rebuilt in Rust

USAGE:
    multiproc <COMMAND> [OPTIONS]

COMMANDS:
    bench       Measure every operation; print median, p99 and CPython's figure
    serve       Run a manager server over TCP until SIGINT or SIGTERM
    help        Print this help

BENCH OPTIONS:
    --smoke             Tiny iteration counts (seconds); used by the tests
    --filter TEXT       Only operations whose key contains TEXT (repeatable)
    --json FILE         Also write the figures as JSON
    --no-python         Do not run CPython's baseline (benches/python/baseline.py)
    --sleep             Make waiters sleep instead of spinning (MULTIPROC_SPIN=0)
    --list              Print the operation keys and exit

SERVE OPTIONS:
    --address HOST:PORT     Where to listen (default 127.0.0.1:50000; port 0 picks one)
    --authkey-file FILE     The shared secret clients must prove they know
                            (required; the file's bytes, a trailing newline
                            dropped; at least 16 bytes; a warning if group or
                            others may read the file)
    --max-frame BYTES       The largest request accepted and response sent
                            (default 64 MiB); a longer one fails that call
    --max-objects N         The most objects one client connection may have
                            alive that it created (default 1048576)
    --max-bytes BYTES       The most bytes of keys and values one client
                            connection may have stored (default: physical memory)
    --python-address HOST:PORT
                            Also serve CPython clients (multiprocessing's
                            BaseManager, Python 3.11+) on this second port
    --queue NAME            A queue Python clients get as typeid NAME
                            (m.get_task_queue() for `--queue get_task_queue`)
                            and Rust clients as QueueProxy<py::Value>;
                            repeatable
    --no-md5                Refuse the HMAC-MD5 handshake (Python 3.11)

    Clients connect with BaseManager::new().address(..).authkey(..).connect()
    and create dicts, lists, namespaces, queues, locks, semaphores, events and
    barriers in it. On SIGINT or SIGTERM (or a client's shutdown) the server
    stops and exits with status 0. It prints `listening on ADDRESS` once it
    accepts clients (then `python listening on ADDRESS` with --python-address).
";

fn main() -> ExitCode {
    multiproc::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None | Some("help" | "--help" | "-h") => {
            print!("{HELP}");
            ExitCode::SUCCESS
        }
        Some("bench") => bench_command(&args[1..]),
        Some("serve") => serve::command(&args[1..]),
        Some(other) => usage_error(&format!("unknown command {other:?}")),
    }
}

pub(crate) fn usage_error(msg: &str) -> ExitCode {
    eprintln!("multiproc: {msg}\n\n{HELP}");
    ExitCode::from(2)
}

fn bench_command(args: &[String]) -> ExitCode {
    let mut opts = bench::Options {
        smoke: false,
        filter: Vec::new(),
        json: None,
        python: true,
        sleep: false,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--smoke" => opts.smoke = true,
            "--no-python" => opts.python = false,
            "--sleep" => opts.sleep = true,
            "--list" => {
                for (key, _) in bench::operations() {
                    println!("{key}");
                }
                return ExitCode::SUCCESS;
            }
            "--filter" => match it.next() {
                Some(f) => opts.filter.push(f.clone()),
                None => return usage_error("--filter needs a value"),
            },
            "--json" => match it.next() {
                Some(f) => opts.json = Some(PathBuf::from(f)),
                None => return usage_error("--json needs a file"),
            },
            other => return usage_error(&format!("unknown bench option {other:?}")),
        }
    }
    match bench::run(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("multiproc bench: {e}");
            ExitCode::FAILURE
        }
    }
}
