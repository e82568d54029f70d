//! The children this process started: reaping, listing, cleanup at exit.
//!
//! Every started child has a [`ChildState`] shared by its [`Process`] handle
//! and this registry, so whoever reaps it first records the exit status for
//! both. Children whose handle was dropped early are reaped later: by
//! [`active_children`], the next start, or at exit (where daemon children are
//! terminated and the others waited for, as Python does).
//!
//! [`Process`]: crate::Process

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, LazyLock, Once};
use std::time::Duration;

use crate::fork_sync::MutexGuard;

use crate::deadline::Deadline;
use crate::fork_sync::Mutex;
use crate::process::Sentinel;
use crate::process::forkserver;

use crate::sys;
use crate::sys::process::ExitStatus;

/// What this process knows of one child.
#[derive(Debug)]
pub(crate) struct ChildState {
    pub pid: i32,
    pub name: String,
    pub daemon: bool,
    status: Mutex<Option<ExitStatus>>,
    /// For a child the forkserver forked for us: how its end reaches us.
    served: Option<Served>,
}

/// The pidfd a timed wait for a child of ours sleeps on: `None` until the
/// first such wait opens it (`Some(None)` if it could not), kept by the
/// handle that waits (so it closes with it).
pub(crate) type PidfdCache = Option<Option<OwnedFd>>;

/// A child the forkserver forked: the server is its parent in the
/// kernel's eyes, reaps it, and writes its exit status to us.
#[derive(Debug)]
pub(crate) struct Served {
    /// The server writes the child's exit status here when it reaps it.
    status: UnixStream,
    /// The child's pidfd, which the server opened before it could be
    /// reaped, so signals and a dead server's child are told apart safely.
    pidfd: Option<OwnedFd>,
    /// Status bytes received so far.
    received: Mutex<Vec<u8>>,
}

impl Served {
    /// A child the server reported as `pid` over `status` (which carried
    /// its `pidfd`, if the server could open one).
    pub fn new(status: UnixStream, pidfd: Option<OwnedFd>) -> Served {
        Served {
            status,
            pidfd,
            received: Mutex::new(Vec::new()),
        }
    }

    /// The status if the server sent it; a dead server's child that ended
    /// has the unknown status 255 (as in Python). `None` while it runs.
    fn try_status(&self) -> Option<ExitStatus> {
        let mut received = self.received.lock();
        loop {
            if let Some(status) = forkserver::parse_status(&received) {
                return Some(status);
            }
            received.reserve(forkserver::STATUS_LEN);
            match sys::socket::recv_nonblocking(self.status.as_fd(), &mut received, 0) {
                Ok((0, _)) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        // The server closed the socket without a status: it died.
        if self.child_ended() {
            tracing::warn!("the forkserver died: a child's exit status is lost");
            Some(ExitStatus::Exited(255))
        } else {
            None
        }
    }

    /// Whether the child has ended, as its pidfd tells (true without one:
    /// nothing else can tell, and nothing would ever say so).
    fn child_ended(&self) -> bool {
        match &self.pidfd {
            Some(fd) => {
                sys::fd::poll_one(fd.as_fd(), sys::fd::Interest::Read, Some(Duration::ZERO))
                    .unwrap_or(false)
            }
            None => true,
        }
    }

    /// Waits until the status may be there (or `deadline`): on the status
    /// socket while the server lives, then on the child's pidfd.
    fn wait(&self, deadline: Deadline) -> std::io::Result<()> {
        let status = self.status.as_fd();
        if !sys::fd::peer_hung_up(status)? {
            sys::fd::poll_one(status, sys::fd::Interest::Read, deadline.remaining())?;
        } else if let Some(fd) = &self.pidfd {
            sys::fd::poll_one(fd.as_fd(), sys::fd::Interest::Read, deadline.remaining())?;
        }
        Ok(())
    }
}

impl ChildState {
    pub fn new(pid: i32, name: String, daemon: bool) -> Arc<ChildState> {
        Arc::new(ChildState {
            pid,
            name,
            daemon,
            status: Mutex::new(None),
            served: None,
        })
    }

    /// A child the forkserver forked for this process.
    pub fn served(pid: i32, name: String, daemon: bool, served: Served) -> Arc<ChildState> {
        Arc::new(ChildState {
            pid,
            name,
            daemon,
            status: Mutex::new(None),
            served: Some(served),
        })
    }

    /// The exit status if the child has ended (reaping it if needed).
    pub fn try_reap(&self) -> Option<ExitStatus> {
        let mut status = self.status.lock();
        if status.is_none() {
            if let Some(served) = &self.served {
                *status = served.try_status();
                return *status;
            }
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

    /// Blocks until the child has ended or `deadline` passes (it may also
    /// return earlier: check with [`ChildState::try_reap`]), without
    /// reaping it: the next `try_reap` does.
    ///
    /// The status lock is not held while blocking, so others can still
    /// reap the child meanwhile (this then returns at once). Were it reaped
    /// between the check and an untimed wait, and its pid reused by a new
    /// child of this process, this would wait for that one instead: a
    /// delay, never a wrong status, as the status recorded by whoever
    /// reaped is kept.
    pub fn wait_ended(&self, deadline: Deadline, pidfd: &mut PidfdCache) -> std::io::Result<()> {
        if self.status.lock().is_some() {
            return Ok(());
        }
        if let Some(served) = &self.served {
            return served.wait(deadline);
        }
        if deadline == Deadline::Never {
            return sys::process::wait_ended(self.pid);
        }
        let fd = pidfd.get_or_insert_with(|| {
            // Under the status lock, so the pid cannot have been reused.
            let status = self.status.lock();
            if status.is_some() {
                return None;
            }
            sys::process::pidfd_open(self.pid).ok()
        });
        match fd {
            Some(fd) => {
                sys::fd::poll_one(fd.as_fd(), sys::fd::Interest::Read, deadline.remaining())?;
            }
            // Without a pidfd, look again in short slices.
            None => std::thread::sleep(deadline.slice(Duration::from_millis(5))),
        }
        Ok(())
    }

    /// A sentinel that turns readable when the child ends.
    pub fn sentinel(&self) -> crate::error::Result<Sentinel> {
        let status = self.status.lock();
        if status.is_some() {
            return Sentinel::ended();
        }
        let fd = match &self.served {
            Some(served) => match &served.pidfd {
                Some(fd) => fd.try_clone()?,
                // Readable when the server reports the status.
                None => served.status.as_fd().try_clone_to_owned()?,
            },
            // Opened under the status lock: the pid cannot have been reused.
            None => sys::process::pidfd_open(self.pid)?,
        };
        Ok(Sentinel::from_fd(fd))
    }

    /// Blocks until the child ends; returns its status.
    pub fn reap(&self) -> ExitStatus {
        if let Some(served) = &self.served {
            loop {
                if let Some(s) = self.try_reap() {
                    return s;
                }
                if served.wait(Deadline::Never).is_err() {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
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
        let sent = match self.served.as_ref().and_then(|s| s.pidfd.as_ref()) {
            Some(pidfd) => sys::process::pidfd_send_signal(pidfd.as_fd(), signal),
            // The server reaps a child only after it ended, and reports it
            // at once: its pid is reused only in that short window.
            None => sys::process::kill(self.pid, signal),
        };
        match sent {
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            other => other,
        }
    }
}

static CHILDREN: LazyLock<Mutex<Vec<Arc<ChildState>>>> = LazyLock::new(|| Mutex::new(Vec::new()));
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
