//! The forkserver start method: a small server process that forks children
//! on request (Python's `multiprocessing.forkserver`).
//!
//! **Starting.** The first time a process starts a child with
//! [`StartMethod::Forkserver`](crate::StartMethod::Forkserver), it spawns
//! the server: a fresh copy of its own binary, as under spawn, whose
//! [`init`](crate::init) sees `MULTIPROC_CHILD_FD=forkserver` and runs
//! [`serve`] instead of `main`. So the server runs no user code and one
//! thread, whatever the client had running when it asked. The server says
//! it is ready on the control socket before the first request goes; a
//! binary that does not call `init()` first in `main` never does, and the
//! client reports that instead of waiting for ever.
//!
//! **Control.** Client and server share a `SOCK_SEQPACKET` socket pair:
//! each request is one record (a magic word and two descriptors), so
//! several processes may hold the client end (a child forked from the
//! client inherits it and uses the same server) without their requests
//! mixing. The server ends when every client end is closed: when the last
//! process of the family that could ask has exited, however it died.
//!
//! **A child.** A request carries the child's launch socket (the one a
//! spawned child gets as stdin: the launch message with the target and its
//! descriptors comes in on it, the outcome goes out on it, straight between
//! the client and the child) and a status socket. The server forks; the
//! child closes the server's descriptors and runs the launch exactly as a
//! spawned child does. The server writes the child's pid (with a pidfd for
//! it) on the status socket at once, and its exit status when it reaps it;
//! the client's [`Served`] reads them. A server that dies leaves its
//! children running; their clients learn that they ended (from the pidfd)
//! but not how: status 255, as in Python. The next request starts a new
//! server.

use crate::fork_sync::MutexGuard;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::fork_sync::Mutex;
use crate::process::child;
use crate::process::fork_hooks::{ForkHook, register_fork_hook};
use crate::process::launch;
use crate::process::registry::Served;
use crate::sys;
use crate::sys::process::{ExitStatus, Forked};

/// The value of `MULTIPROC_CHILD_FD` that makes a spawned process the
/// forkserver, with the control socket as its stdin.
pub(crate) const SERVER_STDIN: &str = "forkserver";

/// A request: this word, with the child's launch socket and status socket attached.
const REQUEST: [u8; 8] = *b"mpfsreq1";
/// What the server sends on the control socket once it serves.
const READY: [u8; 8] = *b"mpfsrdy1";
/// Bytes of a record on a status socket: a tag, three zero bytes, an i32.
pub(crate) const STATUS_LEN: usize = 8;
const TAG_PID: u8 = b'P';
const TAG_EXITED: u8 = b'E';
const TAG_SIGNALED: u8 = b'S';

/// How long a client waits for a new server to say it is ready, or for a
/// running one to answer a request. Both take milliseconds; this bound
/// only turns a server that cannot serve into an error instead of a hang.
const ANSWER_LIMIT: Duration = Duration::from_secs(60);
/// How often the server looks at children it has no pidfd for.
const NO_PIDFD_POLL: Duration = Duration::from_millis(50);

/// This process's connection to its forkserver.
struct Link {
    /// The client end of the control socket.
    ctl: OwnedFd,
    /// The server's pid (a child of the process that started it).
    pid: i32,
}

static LINK: Mutex<Option<Link>> = Mutex::new(None);

/// Holds the link across a fork, so a forked child never inherits it
/// locked by another thread midway through starting a server.
struct LinkForkHook;

impl ForkHook for LinkForkHook {
    fn prepare(&self) -> Box<dyn std::any::Any> {
        Box::new(LINK.lock())
    }
    fn parent(&self, state: Box<dyn std::any::Any>) {
        drop(state);
    }
    fn child(&self, state: Box<dyn std::any::Any>) {
        // The guard is dropped here, releasing the child's copy of the lock.
        drop(state);
    }
}

static LINK_FORK_HOOK: LinkForkHook = LinkForkHook;

fn link() -> MutexGuard<'static, Option<Link>> {
    register_fork_hook(&LINK_FORK_HOOK);
    LINK.lock()
}

/// The pid of this process's forkserver, if it started one (for tests).
pub fn server_pid() -> Option<i32> {
    link().as_ref().map(|l| l.pid)
}

/// A request the server took: the child's pid comes on the status socket.
pub(crate) struct Pending {
    status: UnixStream,
}

/// Asks the forkserver (started if needed) to fork a child that reads its
/// launch message from `child_sock`. Send the launch message on the other
/// end, then read the pid with [`Pending::started`].
pub(crate) fn request(child_sock: OwnedFd) -> Result<Pending> {
    let (status, status_there) = sys::socket::socketpair()?;
    let mut link = link();
    let mut restarted = false;
    loop {
        let ctl = match link.as_ref() {
            Some(l) => l.ctl.as_fd(),
            None => {
                restarted = true;
                link.insert(start_server()?).ctl.as_fd()
            }
        };
        let sent =
            sys::socket::send_with_fds(ctl, &REQUEST, &[child_sock.as_fd(), status_there.as_fd()]);
        match sent {
            Ok(()) => break,
            // The server is gone (killed, say): start another, once.
            Err(e) if !restarted && server_gone(&e) => {
                if let Some(old) = link.take() {
                    forget_server(old);
                }
            }
            Err(e) => return Err(Error::Io(e)),
        }
    }
    Ok(Pending { status })
}

impl Pending {
    /// Waits for the server's answer: the child's pid, with how its end
    /// will be told; `Ok(None)` if the server died before it answered (ask
    /// again: the next request starts a new one).
    pub(crate) fn started(self) -> Result<Option<(i32, Served)>> {
        let mut record = [0u8; STATUS_LEN];
        let mut got = 0;
        let mut pidfd = None;
        let deadline = Deadline::after(ANSWER_LIMIT);
        while got < STATUS_LEN {
            if !sys::fd::poll_one(
                self.status.as_fd(),
                sys::fd::Interest::Read,
                deadline.remaining(),
            )? {
                if deadline.expired() {
                    return Err(Error::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the forkserver did not answer a request",
                    )));
                }
                continue;
            }
            let (n, fds) = sys::socket::recv_with_fds(self.status.as_fd(), &mut record[got..])?;
            if n == 0 {
                if !server_alive() {
                    return Ok(None);
                }
                return Err(Error::Io(std::io::Error::other(
                    "the forkserver could not fork the child (out of memory or processes?)",
                )));
            }
            got += n;
            pidfd = pidfd.or(fds.into_iter().next());
        }
        match record {
            [TAG_PID, 0, 0, 0, a, b, c, d] => {
                let pid = i32::from_le_bytes([a, b, c, d]);
                Ok(Some((pid, Served::new(self.status, pidfd))))
            }
            _ => Err(Error::Protocol(
                "the forkserver sent something other than a pid".into(),
            )),
        }
    }
}

/// The exit status at the start of `buf`, if a whole status record is there.
pub(crate) fn parse_status(buf: &[u8]) -> Option<ExitStatus> {
    let record: [u8; STATUS_LEN] = buf.get(..STATUS_LEN)?.try_into().ok()?;
    let value = i32::from_le_bytes([record[4], record[5], record[6], record[7]]);
    match record[0] {
        TAG_EXITED => Some(ExitStatus::Exited(value)),
        TAG_SIGNALED => Some(ExitStatus::Signaled(value)),
        // Nothing else is ever sent after the pid: a damaged record.
        _ => Some(ExitStatus::Exited(255)),
    }
}

fn status_record(status: ExitStatus) -> [u8; STATUS_LEN] {
    let (tag, value) = match status {
        ExitStatus::Exited(c) => (TAG_EXITED, c),
        ExitStatus::Signaled(s) => (TAG_SIGNALED, s),
    };
    let v = value.to_le_bytes();
    [tag, 0, 0, 0, v[0], v[1], v[2], v[3]]
}

/// Whether this process's server still holds its end of the control
/// socket; when it does not, the link is dropped (the next request starts
/// a new server).
fn server_alive() -> bool {
    let mut link = link();
    let gone = match link.as_ref() {
        Some(l) => sys::fd::peer_hung_up(l.ctl.as_fd()).unwrap_or(false),
        None => return false,
    };
    if gone && let Some(old) = link.take() {
        forget_server(old);
    }
    !gone
}

/// Whether a failed send on the control socket means the server is gone.
fn server_gone(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EPIPE | libc::ECONNRESET | libc::ENOTCONN | libc::ECONNREFUSED)
    )
}

/// Drops the link to a server that is gone, reaping it if it is our child.
///
/// Its end of the control socket is closed, which happens only as it
/// exits: the wait is short. A server that is not our child (a forked
/// child inherited the link) is `ECHILD` at once.
fn forget_server(old: Link) {
    drop(old.ctl);
    if let Err(e) = sys::process::wait(old.pid) {
        tracing::debug!(pid = old.pid, "the old forkserver is not ours to reap: {e}");
    }
}

/// Spawns a server and waits until it says it is ready.
fn start_server() -> Result<Link> {
    let (ctl, ctl_there) = sys::socket::seqpacket_pair()?;
    let argv0 = std::env::args_os().next();
    let env = [(launch::CHILD_FD_ENV, SERVER_STDIN.to_string())];
    let pid =
        sys::process::spawn_exec(Path::new("/proc/self/exe"), argv0.as_ref(), &env, ctl_there)?;
    let link = Link { ctl, pid };
    match wait_ready(&link) {
        Ok(()) => Ok(link),
        Err(e) => {
            let _ = sys::process::kill(pid, sys::process::signal::KILL);
            let _ = sys::process::wait(pid);
            Err(e)
        }
    }
}

fn wait_ready(link: &Link) -> Result<()> {
    let mut answer = [0u8; READY.len()];
    let deadline = Deadline::after(ANSWER_LIMIT);
    let mut n = 0;
    loop {
        // An interrupted poll says "not ready": look again until the deadline.
        if sys::fd::poll_one(
            link.ctl.as_fd(),
            sys::fd::Interest::Read,
            deadline.remaining(),
        )? {
            n = sys::socket::recv_with_fds(link.ctl.as_fd(), &mut answer)?.0;
            break;
        }
        if deadline.expired() {
            break;
        }
    }
    if n == READY.len() && answer == READY {
        return Ok(());
    }
    Err(Error::InvalidState(
        "the forkserver did not start: a fresh copy of this program did not serve \
         (is multiproc::init() the first line of main, or init_before_main! in the file?)"
            .into(),
    ))
}

/// A child the server forked and has not reaped yet.
struct ServedChild {
    pid: i32,
    pidfd: Option<OwnedFd>,
    /// Where the child's exit status goes.
    status: OwnedFd,
}

/// The server's loop, in the process `init()` found to be the forkserver:
/// forks a child for each request, reports each child's end, and exits
/// when every client is gone.
pub(crate) fn serve(ctl: OwnedFd) -> ! {
    // Ctrl-C in a terminal reaches the whole process group: the clients
    // decide what it means; the server goes when they do.
    let _ = sys::signal::set_ignored(sys::signal::INT, true);
    // Set up once here what every child would otherwise set up on pages
    // of its own: the binary's identity and the encoder.
    let _ = launch::identity();
    launch::prepare_encoder();
    if sys::socket::send_with_fds(ctl.as_fd(), &READY, &[]).is_err() {
        sys::process::exit_now(1);
    }
    let mut children: Vec<ServedChild> = Vec::new();
    let mut buf = [0u8; 64];
    loop {
        let without_pidfd = children.iter().any(|c| c.pidfd.is_none());
        let mut fds = vec![ctl.as_fd()];
        let mut owners = vec![usize::MAX];
        for (i, c) in children.iter().enumerate() {
            if let Some(fd) = &c.pidfd {
                fds.push(fd.as_fd());
                owners.push(i);
            }
        }
        let timeout = without_pidfd.then_some(NO_PIDFD_POLL);
        let ready = match sys::fd::poll(&fds, sys::fd::Interest::Read, timeout) {
            Ok(ready) => ready,
            Err(_) => sys::process::exit_now(1),
        };
        let ended: Vec<usize> = ready
            .iter()
            .filter(|&&r| r > 0)
            .map(|&r| owners[r])
            .collect();
        drop(fds);
        report_ended(&mut children, &ended, without_pidfd);
        if !ready.contains(&0) {
            continue;
        }
        let (n, mut received) = match sys::socket::recv_with_fds(ctl.as_fd(), &mut buf) {
            // Every client end is closed: nobody can ask any more.
            Ok((0, _)) => sys::process::exit_now(0),
            Ok(got) => got,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => sys::process::exit_now(1),
        };
        if n != REQUEST.len() || buf[..n] != REQUEST || received.len() != 2 {
            // Not a request of ours: its descriptors are closed, nothing else.
            continue;
        }
        let (Some(status), Some(launch_sock)) = (received.pop(), received.pop()) else {
            continue;
        };
        // SAFETY: this process runs one thread (it is the server, which
        // starts none), so the child inherits no lock held elsewhere; it
        // closes the server's descriptors and runs the launch as a spawned
        // child does, ending in `exit_now`.
        match unsafe { sys::process::fork() } {
            Ok(Forked::Child) => {
                drop(children);
                drop(ctl);
                drop(status);
                let _ = sys::signal::set_ignored(sys::signal::INT, false);
                child::run_launch(UnixStream::from(launch_sock))
            }
            Ok(Forked::Parent(pid)) => {
                drop(launch_sock);
                let pidfd = sys::process::pidfd_open(pid).ok();
                let v = pid.to_le_bytes();
                let record = [TAG_PID, 0, 0, 0, v[0], v[1], v[2], v[3]];
                let attached: Vec<_> = pidfd.iter().map(|fd| fd.as_fd()).collect();
                // A fresh socket takes 8 bytes at once; a client that went
                // away meanwhile is no reason to stop.
                let _ = sys::socket::send_with_fds(status.as_fd(), &record, &attached);
                children.push(ServedChild { pid, pidfd, status });
            }
            // No fork (out of memory or processes): dropping the sockets
            // tells the client.
            Err(_) => {}
        }
    }
}

/// Reaps the children at `ended` (indices into `children`), and all of
/// them that have no pidfd when `look_at_all`, telling each one's client.
fn report_ended(children: &mut Vec<ServedChild>, ended: &[usize], look_at_all: bool) {
    let mut index = 0;
    children.retain(|c| {
        let i = index;
        index += 1;
        if !(ended.contains(&i) || (look_at_all && c.pidfd.is_none())) {
            return true;
        }
        let status = match sys::process::try_wait(c.pid) {
            Ok(None) => return true,
            Ok(Some(status)) => status,
            Err(_) => ExitStatus::Exited(255),
        };
        let record = status_record(status);
        // The socket holds the pid record at most: this never blocks. A
        // client that went away is told nothing.
        let _ = sys::socket::send_nowait(c.status.as_fd(), &[std::io::IoSlice::new(&record)], &[]);
        false
    });
}
