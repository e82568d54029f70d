//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::time::{Duration, Instant};

/// Generous bound for anything that should happen "promptly" on a loaded 2-core machine.
pub const PROMPTLY: Duration = Duration::from_secs(20);

/// Polls `cond` until it holds or `limit` passes; returns whether it held.
///
/// For conditions no one can signal us about (a process we do not own
/// ending, for example); never used to order our own steps.
pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The state letter of process `pid` and its parent pid, if it exists.
pub fn proc_state(pid: i32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Whether `pid` is gone (or a zombie that is not ours to reap).
pub fn is_gone(pid: i32) -> bool {
    match proc_state(pid) {
        None => true,
        Some((state, _)) => state == 'Z' || state == 'X',
    }
}

/// Asserts `pid` is not a zombie child of this process.
pub fn assert_not_our_zombie(pid: i32) {
    if let Some((state, ppid)) = proc_state(pid) {
        assert!(
            !(state == 'Z' && ppid == std::process::id() as i32),
            "process {pid} was left as a zombie"
        );
    }
}

/// Entries in /dev/shm that look like ours (there should never be any).
pub fn shm_leaks() -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains("multiproc"))
                .collect()
        })
        .unwrap_or_default()
}
pub mod chaos;

/// Starts one process per argument with `method`, then joins them all
/// (generous bound) and returns their results in order.
pub fn run_each<A: multiproc::Shareable, R: multiproc::Shareable>(
    method: multiproc::StartMethod,
    f: fn(A) -> R,
    args: impl IntoIterator<Item = A>,
) -> Vec<R> {
    let mut ps: Vec<_> = args
        .into_iter()
        .map(|a| multiproc::Process::new(f, a).start_method(method))
        .collect();
    for p in &mut ps {
        p.start().unwrap();
    }
    ps.iter_mut()
        .map(|p| p.join_timeout(PROMPTLY * 6).unwrap())
        .collect()
}

/// A string a callback writes and the test reads.
#[derive(Default)]
pub struct TextSlot(std::sync::Mutex<String>);

impl TextSlot {
    pub fn set(&self, s: String) {
        *self.0.lock().unwrap() = s;
    }
    pub fn get(&self) -> String {
        self.0.lock().unwrap().clone()
    }
}
