//! Who this process is, who its parent is, and its authkey.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::fork_sync::ForkCell;

use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::process::sentinel::Sentinel;
use crate::sys;
use std::time::Duration;

#[derive(Clone)]
struct Me {
    name: String,
    daemon: bool,
    /// Python's `_identity`: the child numbers from the main process down
    /// to this one (`[2, 1]` for the first child of `Process-2`).
    identity: Vec<u32>,
    parent: Option<ParentProcess>,
}

/// Who this process is, once it knows (a forked child sets it: see
/// [`ForkCell`] for why this is no lock).
static ME: ForkCell<Me> = ForkCell::new();

/// How many processes this process has made `Process` handles for (the
/// last number of their identity). Each new child starts again at 0.
static CHILD_COUNTER: AtomicU32 = AtomicU32::new(0);

/// The identity of the next process this one makes a handle for: this
/// process's identity plus the next number (Python's `_process_counter`).
pub(crate) fn next_child_identity() -> Vec<u32> {
    let n = CHILD_COUNTER.fetch_add(1, Ordering::Relaxed) + 1;
    let mut identity = ME.get().map(|m| m.identity.clone()).unwrap_or_default();
    identity.push(n);
    identity
}

/// Python's default name for a process of this identity: `Process-2:1`.
pub(crate) fn default_name(identity: &[u32]) -> String {
    let numbers: Vec<String> = identity.iter().map(u32::to_string).collect();
    format!("Process-{}", numbers.join(":"))
}

/// This process, as Python's `current_process()` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentProcess {
    /// "MainProcess" for the first process, the given or default name in children.
    pub name: String,
    /// The process id. Pids are `i32` everywhere in this crate (libc's
    /// `pid_t`, what `kill`, `waitpid` and `/proc` use), whichever call
    /// gives them ([`Process::pid`](crate::Process::pid),
    /// [`active_children`](crate::active_children), errors, lock owners);
    /// compare with this rather than with `std::process::id()`, a `u32`.
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
    /// Whether the parent still runs (a pid reused by another process does
    /// not count). False only once its end is known: a check that fails
    /// (this process is out of descriptors and cannot read `/proc`) counts
    /// as running.
    pub fn is_alive(&self) -> bool {
        !self.liveness().is_dead()
    }

    fn liveness(&self) -> sys::process::Liveness {
        sys::process::liveness(self.pid, Some(self.ticks))
    }

    /// A waitable that is ready once the parent has ended (Python's
    /// `parent_process().sentinel`; see [`Sentinel`]).
    ///
    /// Needs a descriptor: [`Error::Io`] (`EMFILE`) when none is left.
    pub fn sentinel(&self) -> Result<Sentinel> {
        let pidfd = match sys::process::pidfd_open(self.pid) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Sentinel::ended(),
            Err(e) => return Err(Error::Io(e)),
        };
        // The pid may have been reused before the pidfd was opened: only a
        // check after the open vouches for it.
        if self.liveness().is_dead() {
            return Sentinel::ended();
        }
        Ok(Sentinel::from_fd(pidfd))
    }

    /// Waits until the parent has ended (Python's `parent_process().join()`).
    ///
    /// From a child this waits for the process that started it, whether or
    /// not that is the child's parent in the kernel's eyes (under
    /// [`StartMethod::Forkserver`](crate::StartMethod::Forkserver) the
    /// server is). A process out of descriptors checks every 100 ms instead
    /// of sleeping on a pidfd.
    pub fn join(&self) -> Result<()> {
        self.join_deadline(Deadline::Never)
    }

    /// As [`ParentProcess::join`], giving up with [`Error::Timeout`] after
    /// `timeout` while the parent still runs (Python's `join(timeout)`,
    /// which then returns with `is_alive()` still true).
    pub fn join_timeout(&self, timeout: Duration) -> Result<()> {
        self.join_deadline(Deadline::after(timeout))
    }

    fn join_deadline(&self, deadline: Deadline) -> Result<()> {
        match self.sentinel() {
            Ok(sentinel) => {
                if sentinel.wait_deadline(deadline) {
                    Ok(())
                } else {
                    Err(deadline.timeout_error())
                }
            }
            // No descriptor to be had: only a death the kernel confirms counts.
            Err(Error::Io(_)) => loop {
                if self.liveness().is_dead() {
                    return Ok(());
                }
                if deadline.expired() {
                    return Err(deadline.timeout_error());
                }
                std::thread::sleep(deadline.slice(PARENT_POLL));
            },
            Err(e) => Err(e),
        }
    }
}

/// A secret shared by the processes of one program: Python's
/// `current_process().authkey`.
///
/// The first process makes one from 32 random bytes; every child started
/// by spawn or fork inherits its parent's (or the one given with
/// [`Process::authkey`](crate::Process::authkey)). Local manager servers
/// and their clients prove to each other that they know it before anything
/// else is said, so a process that can reach a server's socket but does
/// not have the key (another program of the same user, say) is refused.
///
/// Its `Debug` form never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthKey(Arc<[u8]>);

impl AuthKey {
    /// A key holding `bytes` ([`Error::InvalidArgument`] if empty).
    pub fn new(bytes: impl AsRef<[u8]>) -> Result<AuthKey> {
        let bytes = bytes.as_ref();
        if bytes.is_empty() {
            return Err(Error::InvalidArgument("an authkey cannot be empty".into()));
        }
        Ok(AuthKey(Arc::from(bytes)))
    }

    /// A fresh key of 32 random bytes.
    pub fn random() -> Result<AuthKey> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| {
            Error::Io(std::io::Error::other(format!(
                "no random bytes for an authkey: {e}"
            )))
        })?;
        Ok(AuthKey(Arc::from(&bytes[..])))
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuthKey(<{} secret bytes>)", self.0.len())
    }
}

/// This process's authkey, once made or inherited.
static AUTHKEY: ForkCell<AuthKey> = ForkCell::new();

/// This process's authkey (made on first use in the first process).
///
/// Without a source of random bytes (which Linux always has since 3.17)
/// the key is made from the time and pid: weak, and logged at warn.
pub(crate) fn authkey() -> AuthKey {
    AUTHKEY
        .get_or_init(|| {
            AuthKey::random().unwrap_or_else(|e| {
                tracing::warn!("this process's authkey is weak: {e}");
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                let weak = (t ^ (u128::from(sys::process::getpid() as u32) << 64)).to_le_bytes();
                AuthKey(Arc::from(&weak[..]))
            })
        })
        .clone()
}

/// Replaces this process's authkey (children started later inherit the new one).
pub(crate) fn set_authkey(key: AuthKey) {
    AUTHKEY.set(key);
}

impl CurrentProcess {
    /// This process's authkey (Python's `current_process().authkey`).
    ///
    /// ```
    /// let me = multiproc::current_process();
    /// assert_eq!(me.authkey().as_bytes().len(), 32);
    /// ```
    pub fn authkey(&self) -> AuthKey {
        authkey()
    }

    /// Replaces this process's authkey (Python's `current_process().authkey
    /// = key`): children started from now on inherit it, and managers
    /// started or connected from now on use it by default. A manager that
    /// already runs keeps the key it started with.
    pub fn set_authkey(&self, key: AuthKey) {
        set_authkey(key);
    }
}

/// The program this process belongs to: the first process of its tree (the
/// one no multiproc parent started), as a liveness word; 0 in that process
/// itself. A named segment a child creates lives as long as the program
/// does, as in Python (whose children share their parent's resource tracker).
static ROOT: AtomicU64 = AtomicU64::new(0);

/// The first process of this program's tree (see [`ROOT`]), as a liveness
/// word (pid and start time): this process, unless a multiproc parent
/// started it.
pub(crate) fn program_root() -> u64 {
    match ROOT.load(Ordering::Relaxed) {
        0 => crate::liveness::my_word(),
        root => root,
    }
}

/// Describes the calling process.
pub fn current_process() -> CurrentProcess {
    let me = ME.get().cloned();
    let (name, daemon) = me.map_or(("MainProcess".to_string(), false), |m| (m.name, m.daemon));
    CurrentProcess {
        name,
        pid: sys::process::getpid(),
        daemon,
    }
}

/// The parent of the calling process, or `None` in the main process.
pub fn parent_process() -> Option<ParentProcess> {
    ME.get().and_then(|m| m.parent.clone())
}

/// Records who this child is; called once in a new child, before its target runs.
///
/// `identity` is the child's own (see [`next_child_identity`]).
///
/// Inline, as the rest of a forked child's path: each new code page a
/// forked child runs costs it a page fault.
#[inline]
pub(crate) fn become_child(
    name: String,
    identity: Vec<u32>,
    daemon: bool,
    parent_pid: i32,
    parent_ticks: u64,
    parent_name: String,
    root: u64,
) {
    ROOT.store(root, Ordering::Relaxed);
    // The parent's count is not ours (a forked child inherits it): this
    // process's first child is `Process-<our identity>:1`, as in Python.
    CHILD_COUNTER.store(0, Ordering::Relaxed);
    ME.set(Me {
        name,
        daemon,
        identity,
        parent: Some(ParentProcess {
            pid: parent_pid,
            name: parent_name,
            ticks: parent_ticks,
        }),
    });
}

/// How often a daemon child that could not get a pidfd for its parent checks it.
const PARENT_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// In a daemon child: ends this process when the parent ends, however it ends.
#[inline]
pub(crate) fn watch_parent_if_daemon() {
    let parent = match ME.get() {
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
        Ok(fd) => Some(fd),
        // No such process: the parent is already gone.
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => sys::process::exit_now(1),
        // No descriptor to be had (EMFILE, say): watch by polling instead.
        Err(e) => {
            tracing::debug!("watching the parent without a pidfd: {e}");
            None
        }
    };
    // The pid may have been reused before the pidfd was opened.
    if parent.liveness().is_dead() {
        sys::process::exit_now(1);
    }
    let spawned = std::thread::Builder::new()
        .name("multiproc-parent-watch".into())
        .spawn(move || {
            use std::os::fd::AsFd;
            match pidfd {
                Some(pidfd) => loop {
                    match sys::fd::poll(&[pidfd.as_fd()], sys::fd::Interest::Read, None) {
                        Ok(ready) if !ready.is_empty() => break,
                        Ok(_) => continue,
                        // A wait that failed is not a death: ask the kernel.
                        Err(e) => {
                            tracing::debug!("watching the parent by polling: {e}");
                            if parent.liveness().is_dead() {
                                break;
                            }
                            std::thread::sleep(PARENT_POLL);
                        }
                    }
                },
                // Only a death the kernel confirms ends this process.
                None => {
                    while !parent.liveness().is_dead() {
                        std::thread::sleep(PARENT_POLL);
                    }
                }
            }
            let _ = sys::process::kill(sys::process::getpid(), sys::process::signal::TERM);
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot watch the parent of a daemon process: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_authkey_is_never_empty_and_never_shown() {
        assert!(matches!(AuthKey::new(b""), Err(Error::InvalidArgument(_))));
        let key = AuthKey::new(b"0123456789abcdef-hidden").unwrap();
        assert_eq!(key.as_bytes(), b"0123456789abcdef-hidden");
        let shown = format!("{key:?}");
        assert!(
            !shown.contains("hidden") && !shown.contains("48, 49"),
            "{shown}"
        );
        let a = AuthKey::random().unwrap();
        let b = AuthKey::random().unwrap();
        assert_eq!(a.as_bytes().len(), 32);
        assert_ne!(a, b);
    }

    #[test]
    fn the_process_authkey_is_made_once_and_stays() {
        let first = current_process().authkey();
        assert_eq!(first.as_bytes().len(), 32);
        assert_eq!(current_process().authkey(), first);
    }

    use crate::sys::process::{Forked, exit_now, fork, wait};

    #[test]
    fn a_daemon_that_cannot_open_a_pidfd_watches_its_parent_anyway() {
        let parent = ParentProcess {
            pid: sys::process::getpid(),
            name: "test".into(),
            ticks: sys::process::own_start_ticks(),
        };
        // SAFETY: the child only lowers its own descriptor limit, runs the
        // watcher (no locks shared with other threads of this test) and exits.
        let pid = match unsafe { fork() }.unwrap() {
            Forked::Child => {
                // No new descriptor can be opened now, pidfds included.
                crate::sys::process::tests::run_out_of_descriptors();
                // The parent lives: this must return (it exited with 1 here
                // when the pidfd could not be opened).
                watch_parent(parent);
                exit_now(0)
            }
            Forked::Parent(pid) => pid,
        };
        assert_eq!(wait(pid).unwrap().code(), 0);
    }
}
