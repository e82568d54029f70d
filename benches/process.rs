//! Process start+join latency under spawn, fork and the forkserver
//! (`process/spawn_join`, `process/fork_join`, `process/forkserver_join`),
//! beside this machine's floor: a bare `fork` whose child calls `_exit(0)`
//! at once, and `waitpid` (`process/bare_fork_waitpid`).

// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use criterion::{Criterion, criterion_group};
use multiproc::{Process, StartMethod};

fn noop(_: ()) {}

fn start_join(c: &mut Criterion) {
    let mut group = c.benchmark_group("process");
    group.sample_size(20);
    for (name, method) in [
        ("spawn_join", StartMethod::Spawn),
        ("fork_join", StartMethod::Fork),
        ("forkserver_join", StartMethod::Forkserver),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut p = Process::new(noop, ()).start_method(method);
                p.start().expect("start");
                p.join().expect("join");
            })
        });
    }
    group.bench_function("bare_fork_waitpid", |b| b.iter(bare_fork_waitpid));
    group.finish();
}

/// The least a fork start+join can cost here: no result, no bookkeeping.
fn bare_fork_waitpid() {
    // SAFETY: the child calls only the async-signal-safe `_exit`.
    let pid = unsafe { libc::fork() };
    match pid {
        // SAFETY: `_exit` ends the child at once.
        0 => unsafe { libc::_exit(0) },
        -1 => panic!("fork failed: {}", std::io::Error::last_os_error()),
        _ => {
            let mut status = 0;
            // SAFETY: `pid` is this process's child; `status` is a valid out pointer.
            let reaped = unsafe { libc::waitpid(pid, &mut status, 0) };
            assert_eq!(reaped, pid, "waitpid failed");
        }
    }
}

criterion_group!(benches, start_join);

fn main() {
    multiproc::init();
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
