//! The children this process started: reaping, listing, cleanup at exit.
//!
//! Every started child has a [`ChildState`] shared by its [`Process`] handle
//! and this registry, so whoever reaps it first records the exit status for
//! both. Children whose handle was dropped early are reaped later: by
//! [`active_children`], the next start, or at exit (where daemon children are
//! terminated and the others waited for, as Python does).
//!
//! [`Process`]: crate::Process

use std::sync::{Arc, LazyLock, Once};

use std::sync::MutexGuard;

use parking_lot::Mutex;

use crate::process::ForkMutex;

use crate::sys;
use crate::sys::process::ExitStatus;

/// What this process knows of one child.
#[derive(Debug)]
pub(crate) struct ChildState {
    pub pid: i32,
    pub name: String,
    pub daemon: bool,
    status: Mutex<Option<ExitStatus>>,
}

impl ChildState {
    pub fn new(pid: i32, name: String, daemon: bool) -> Arc<ChildState> {
        Arc::new(ChildState {
            pid,
            name,
            daemon,
            status: Mutex::new(None),
        })
    }

    /// The exit status if the child has ended (reaping it if needed).
    pub fn try_reap(&self) -> Option<ExitStatus> {
        let mut status = self.status.lock();
        if status.is_none() {
            match sys::process::try_wait(self.pid) {
                Ok(s) => *status = s,
                Err(e) => {
                    // ECHILD: someone else reaped it (a waitpid(-1) elsewhere).
                    tracing::warn!(pid = self.pid, "cannot reap child: {e}");
                    *status = Some(ExitStatus::Exited(255));
                }
            }
        }
        *status
    }

    /// Blocks until the child has ended, without reaping it: the next
    /// [`ChildState::try_reap`] does.
    ///
    /// The status lock is not held while blocking, so others can still
    /// reap the child meanwhile (this then returns at once). Were it reaped
    /// between the check and the wait, and its pid reused by a new child of
    /// this process, this would wait for that one instead: a delay, never a
    /// wrong status, as the status recorded by whoever reaped is kept.
    pub fn wait_ended(&self) -> std::io::Result<()> {
        if self.status.lock().is_some() {
            return Ok(());
        }
        sys::process::wait_ended(self.pid)
    }

    /// A descriptor that becomes readable when the child ends; `None` once
    /// it was reaped. Opened under the status lock, so the pid cannot have
    /// been reused by another process.
    pub fn pidfd(&self) -> Option<std::os::fd::OwnedFd> {
        let status = self.status.lock();
        if status.is_some() {
            return None;
        }
        sys::process::pidfd_open(self.pid).ok()
    }

    /// Blocks until the child ends; returns its status.
    pub fn reap(&self) -> ExitStatus {
        let mut status = self.status.lock();
        if let Some(s) = *status {
            return s;
        }
        let s = sys::process::wait(self.pid).unwrap_or(ExitStatus::Exited(255));
        *status = Some(s);
        s
    }

    /// Sends `signal` unless the child was already reaped (so a reused pid is never hit).
    pub fn signal(&self, signal: i32) -> std::io::Result<()> {
        let status = self.status.lock();
        if status.is_some() {
            return Ok(());
        }
        match sys::process::kill(self.pid, signal) {
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            other => other,
        }
    }
}

static CHILDREN: LazyLock<ForkMutex<Vec<Arc<ChildState>>>> =
    LazyLock::new(|| ForkMutex::new(Vec::new()));
static AT_EXIT: Once = Once::new();

/// Held across `fork` so the child never inherits the list mid-update.
pub(crate) fn fork_guard() -> MutexGuard<'static, Vec<Arc<ChildState>>> {
    CHILDREN.lock()
}

/// Adds a started child and reaps finished ones.
pub(crate) fn register(child: Arc<ChildState>) {
    AT_EXIT.call_once(|| {
        if let Err(e) = sys::process::at_exit(at_exit) {
            tracing::warn!("cannot register the exit handler that reaps children: {e}");
        }
    });
    let mut children = CHILDREN.lock();
    children.retain(|c| c.try_reap().is_none());
    children.push(child);
}

/// Called in a new forked child: the parent's children are not ours.
///
/// The list is leaked, not dropped: dropping would write every child's
/// reference count and free it, and each page written in a new child costs
/// a copy. The memory is the child's copy of the parent's and goes at exit.
pub(crate) fn forget_all(children: &mut Vec<Arc<ChildState>>) {
    std::mem::forget(std::mem::take(children));
}

/// A running child process, as listed by [`active_children`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildInfo {
    /// Its process id.
    pub pid: i32,
    /// Its name.
    pub name: String,
    /// Whether it is a daemon.
    pub daemon: bool,
}

/// The children of this process that are still running; reaps finished ones
/// (Python's `active_children()`).
pub fn active_children() -> Vec<ChildInfo> {
    let mut children = CHILDREN.lock();
    children.retain(|c| c.try_reap().is_none());
    children
        .iter()
        .map(|c| ChildInfo {
            pid: c.pid,
            name: c.name.clone(),
            daemon: c.daemon,
        })
        .collect()
}

extern "C" fn at_exit() {
    shutdown_children();
}

/// Terminates daemon children and waits for all children (at process exit).
pub(crate) fn shutdown_children() {
    let children: Vec<Arc<ChildState>> = std::mem::take(&mut *CHILDREN.lock());
    for child in children.iter().filter(|c| c.daemon) {
        let _ = child.signal(sys::process::signal::TERM);
    }
    for child in &children {
        child.reap();
    }
}
