//! Watching local clients die, so that an idle connection's thread need
//! not wake to look.
//!
//! A connection's thread sleeps on its channel's request word. Requests and
//! a client's close wake it; a client's death does not. So that it does not
//! wake every [`LIVENESS_SLICE`] to look (each wake-up costs a sleeping
//! process CPU time, however little it does), one thread per server polls a
//! pidfd of each watched client and, when one ends, flags its connection
//! and wakes that connection's thread. A watched connection's thread still
//! looks for itself every [`WATCHED_SLICE`]: a safeguard, and the bound on
//! a wake-up lost in the instant before it sleeps. A connection whose
//! client could not be watched (no descriptor left, no pidfds) looks every
//! [`LIVENESS_SLICE`], as before.
//!
//! [`LIVENESS_SLICE`]: crate::manager::channel::LIVENESS_SLICE

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::fork_sync::Mutex;

use crate::manager::channel::Channel;
use crate::sys;

/// How often a watched connection's thread looks for itself whether its
/// client lives.
pub(crate) const WATCHED_SLICE: Duration = Duration::from_secs(1);

/// The most clients watched at once: each costs the server a descriptor,
/// and a server near its descriptor limit must keep those for its
/// connections. Connections beyond it look for themselves.
const MAX_WATCHED: usize = 128;

/// One watched client.
struct Watched {
    /// Its pidfd: readable once the process ended.
    pidfd: OwnedFd,
    /// The connection's channel, whose server thread a death wakes.
    chan: Channel,
    /// Set when the client is seen to end.
    died: Arc<AtomicBool>,
    /// The connection no longer needs watching (its guard was dropped).
    dropped: Arc<AtomicBool>,
}

#[derive(Default)]
struct Inner {
    watched: Vec<Watched>,
    /// The watcher thread's wake-up socket, once it runs.
    wake: Option<UnixStream>,
    stopping: bool,
}

/// The server's watcher of client deaths.
#[derive(Default)]
pub(crate) struct Deaths {
    inner: Arc<Mutex<Inner>>,
}

/// A watched client, as its connection holds it: dropping it ends the watch.
pub(crate) struct Watch {
    died: Arc<AtomicBool>,
    dropped: Arc<AtomicBool>,
    inner: Arc<Mutex<Inner>>,
}

impl Watch {
    /// Whether the client was seen to end.
    pub(crate) fn died(&self) -> &AtomicBool {
        &self.died
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
        poke(&self.inner.lock());
    }
}

/// Wakes the watcher thread to look at its list again.
fn poke(inner: &Inner) {
    if let Some(wake) = &inner.wake {
        // A full socket already has a wake-up waiting.
        let _ = (&*wake).write(&[1]);
    }
}

impl Deaths {
    /// Watches process `pid` (started at `ticks`), the client of `chan`;
    /// `None` if it cannot be (then its connection looks for itself).
    pub(crate) fn watch(&self, pid: i32, ticks: u64, chan: &Channel) -> Option<Watch> {
        if self.inner.lock().watched.len() >= MAX_WATCHED {
            return None;
        }
        let pidfd = sys::process::pidfd_open(pid).ok()?;
        let died = Arc::new(AtomicBool::new(false));
        // The pid may have been reused before the pidfd was opened: the
        // pidfd then names another process, and the client is dead.
        match sys::process::liveness(pid, Some(ticks)) {
            sys::process::Liveness::Alive => {}
            sys::process::Liveness::Dead => died.store(true, Ordering::SeqCst),
            sys::process::Liveness::Unknown { .. } => return None,
        }
        let dropped = Arc::new(AtomicBool::new(false));
        let mut inner = self.inner.lock();
        // Counted again: other connections may have been watched meanwhile.
        if inner.stopping || inner.watched.len() >= MAX_WATCHED {
            return None;
        }
        if inner.wake.is_none() {
            inner.wake = Some(self.start()?);
        }
        inner.watched.push(Watched {
            pidfd,
            chan: chan.clone(),
            died: died.clone(),
            dropped: dropped.clone(),
        });
        poke(&inner);
        Some(Watch {
            died,
            dropped,
            inner: self.inner.clone(),
        })
    }

    /// Ends the watcher thread (the server is shutting down).
    pub(crate) fn stop(&self) {
        let mut inner = self.inner.lock();
        inner.stopping = true;
        poke(&inner);
    }

    /// Starts the watcher thread; returns the socket that wakes it.
    fn start(&self) -> Option<UnixStream> {
        let (wake, woken) = UnixStream::pair().ok()?;
        wake.set_nonblocking(true).ok()?;
        woken.set_nonblocking(true).ok()?;
        let inner = self.inner.clone();
        std::thread::Builder::new()
            .name("multiproc-manager-deaths".into())
            .spawn(move || watch_forever(&inner, woken))
            .ok()?;
        Some(wake)
    }
}

/// The watcher thread: polls the watched pidfds and its wake-up socket.
fn watch_forever(inner: &Mutex<Inner>, woken: UnixStream) {
    loop {
        let fds: Vec<RawFd> = {
            let mut inner = inner.lock();
            if inner.stopping {
                inner.watched.clear();
                return;
            }
            // Entries (and their pidfds) are dropped only here, between
            // polls; other threads only append.
            inner
                .watched
                .retain(|w| !w.dropped.load(Ordering::SeqCst) && !w.died.load(Ordering::SeqCst));
            inner.watched.iter().map(|w| w.pidfd.as_raw_fd()).collect()
        };
        let mut polled: Vec<BorrowedFd<'_>> = fds
            .iter()
            // SAFETY: only this thread closes a watched pidfd (by dropping
            // its entry, above), so each stays open through the poll below.
            .map(|&fd| unsafe { BorrowedFd::borrow_raw(fd) })
            .collect();
        polled.push(woken.as_fd());
        let ready = match sys::fd::poll(&polled, sys::fd::Interest::Read, None) {
            Ok(r) => r,
            Err(e) => {
                // Not expected (the descriptors are open); the connections
                // still look for themselves every slice of theirs.
                tracing::debug!("manager cannot poll its clients: {e}");
                std::thread::sleep(crate::manager::channel::LIVENESS_SLICE);
                continue;
            }
        };
        if ready.contains(&fds.len()) {
            let mut buf = [0u8; 64];
            while matches!((&woken).read(&mut buf), Ok(n) if n > 0) {}
        }
        let inner = inner.lock();
        // The first `fds.len()` entries are those polled, in order.
        for i in ready.into_iter().filter(|&i| i < fds.len()) {
            if let Some(w) = inner.watched.get(i) {
                w.died.store(true, Ordering::SeqCst);
                w.chan.wake_server();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::channel::SLOT_SIZE;
    use std::time::Instant;

    fn eventually(mut cond: impl FnMut() -> bool) -> bool {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if cond() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        cond()
    }

    /// A child process that sleeps, with its pid and start time.
    fn sleeper() -> (std::process::Child, i32, u64) {
        let child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let ticks = sys::process::start_ticks(pid).unwrap();
        (child, pid, ticks)
    }

    #[test]
    fn a_watched_client_that_dies_is_flagged_and_a_dropped_watch_is_let_go() {
        let deaths = Deaths::default();
        let chan = Channel::create(SLOT_SIZE).unwrap();
        let (mut child, pid, ticks) = sleeper();
        let watch = deaths
            .watch(pid, ticks, &chan)
            .expect("a live child can be watched");
        let (mut other, other_pid, other_ticks) = sleeper();
        let kept = deaths.watch(other_pid, other_ticks, &chan).unwrap();
        assert!(!watch.died().load(Ordering::SeqCst));
        child.kill().unwrap();
        child.wait().unwrap();
        // Only the watcher thread sets the flag: no slice passes here.
        assert!(eventually(|| watch.died().load(Ordering::SeqCst)));
        assert!(!kept.died().load(Ordering::SeqCst));
        drop(kept);
        assert!(eventually(|| deaths.inner.lock().watched.is_empty()));
        other.kill().unwrap();
        other.wait().unwrap();
        // A process that is gone cannot be watched: its connection looks
        // for itself.
        assert!(deaths.watch(pid, ticks, &chan).is_none());
        // A start time that does not match: the pid names another process.
        let (mut third, third_pid, _) = sleeper();
        let wrong = deaths.watch(third_pid, 1, &chan).unwrap();
        assert!(wrong.died().load(Ordering::SeqCst));
        third.kill().unwrap();
        third.wait().unwrap();
        deaths.stop();
        assert!(deaths.watch(third_pid, 1, &chan).is_none());
    }
}
