//! Who this process is, and who its parent is.

use parking_lot::RwLock;

use crate::sys;

#[derive(Clone)]
struct Me {
    name: String,
    daemon: bool,
    parent: Option<ParentProcess>,
}

static ME: RwLock<Option<Me>> = RwLock::new(None);

/// This process, as Python's `current_process()` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentProcess {
    /// "MainProcess" for the first process, the given or default name in children.
    pub name: String,
    /// The process id.
    pub pid: i32,
    /// Whether this process was started as a daemon.
    pub daemon: bool,
}

/// The process that started this one (Python's `parent_process()`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentProcess {
    /// The parent's process id.
    pub pid: i32,
    /// The parent's name.
    pub name: String,
    ticks: u64,
}

impl ParentProcess {
    /// Whether the parent still runs (a pid reused by another process does not count).
    pub fn is_alive(&self) -> bool {
        sys::process::is_alive(self.pid, Some(self.ticks))
    }
}

/// Describes the calling process.
pub fn current_process() -> CurrentProcess {
    let me = ME.read().clone();
    let (name, daemon) = me.map_or(("MainProcess".to_string(), false), |m| (m.name, m.daemon));
    CurrentProcess {
        name,
        pid: sys::process::getpid(),
        daemon,
    }
}

/// The parent of the calling process, or `None` in the main process.
pub fn parent_process() -> Option<ParentProcess> {
    ME.read().as_ref().and_then(|m| m.parent.clone())
}

/// Records who this child is; called once in a new child, before its target runs.
///
/// Inline, as the rest of a forked child's path: each new code page a
/// forked child runs costs it a page fault.
#[inline]
pub(crate) fn become_child(
    name: String,
    daemon: bool,
    parent_pid: i32,
    parent_ticks: u64,
    parent_name: String,
) {
    *ME.write() = Some(Me {
        name,
        daemon,
        parent: Some(ParentProcess {
            pid: parent_pid,
            name: parent_name,
            ticks: parent_ticks,
        }),
    });
}

/// In a daemon child: ends this process when the parent ends, however it ends.
#[inline]
pub(crate) fn watch_parent_if_daemon() {
    let parent = match ME.read().as_ref() {
        Some(Me {
            daemon: true,
            parent: Some(parent),
            ..
        }) => parent.clone(),
        _ => return,
    };
    watch_parent(parent);
}

fn watch_parent(parent: ParentProcess) {
    let pidfd = match sys::process::pidfd_open(parent.pid) {
        Ok(fd) if parent.is_alive() => fd,
        // The parent is already gone (or the pid was reused): go now.
        _ => sys::process::exit_now(1),
    };
    let spawned = std::thread::Builder::new()
        .name("multiproc-parent-watch".into())
        .spawn(move || {
            use std::os::fd::AsFd;
            loop {
                match sys::fd::poll(&[pidfd.as_fd()], sys::fd::Interest::Read, None) {
                    Ok(ready) if !ready.is_empty() => break,
                    Ok(_) => continue,
                    Err(_) => break,
                }
            }
            let _ = sys::process::kill(sys::process::getpid(), sys::process::signal::TERM);
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot watch the parent of a daemon process: {e}");
    }
}
