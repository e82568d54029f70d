//! `Sentinel`: a descriptor that turns readable when a process ends
//! (Python's `Process.sentinel`).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;

use crate::connection::{WaitSource, Waitable};
use crate::deadline::Deadline;
use crate::error::Result;
use crate::sys;

/// A waitable that is ready once a process has ended (Python's
/// `Process.sentinel`), from [`Process::sentinel`](crate::Process::sentinel)
/// or [`ParentProcess::sentinel`](crate::ParentProcess::sentinel).
///
/// Give it to [`wait`](crate::connection::wait) beside connections and
/// queues, or poll its descriptor in an event loop of your own: it is a
/// pidfd (readable when the process ends), or, for a process that had
/// already ended and been reaped when the sentinel was made, a descriptor
/// that is readable at once. Each sentinel owns its descriptor, so it
/// outlives the `Process` it came from; making one costs a descriptor.
///
/// ```
/// use multiproc::{connection::wait, Process, StartMethod};
/// use std::time::Duration;
///
/// fn nap(ms: u64) { std::thread::sleep(Duration::from_millis(ms)) }
///
/// fn main() {
///     multiproc::init();
///     let mut p = Process::new(nap, 10).start_method(StartMethod::Fork);
///     p.start().unwrap();
///     let sentinel = p.sentinel().unwrap();
///     assert_eq!(wait(&[&sentinel], None).unwrap(), [0]);
///     assert!(sentinel.is_ready());
///     p.join().unwrap();
/// }
/// ```
#[derive(Debug)]
pub struct Sentinel {
    fd: OwnedFd,
}

impl Sentinel {
    /// A sentinel on `fd`, readable once the process ended.
    pub(crate) fn from_fd(fd: OwnedFd) -> Sentinel {
        Sentinel { fd }
    }

    /// A sentinel for a process known to have ended: readable at once.
    pub(crate) fn ended() -> Result<Sentinel> {
        Ok(Sentinel {
            fd: sys::fd::eventfd(1)?,
        })
    }

    /// Whether the process has ended, without waiting.
    pub fn is_ready(&self) -> bool {
        self.wait_deadline(Deadline::Now)
    }

    /// Waits until the process has ended or `timeout` passes; whether it ended.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.wait_deadline(Deadline::after(timeout))
    }

    pub(crate) fn wait_deadline(&self, deadline: Deadline) -> bool {
        loop {
            match sys::fd::poll_one(
                self.fd.as_fd(),
                sys::fd::Interest::Read,
                deadline.remaining(),
            ) {
                Ok(true) => return true,
                // A descriptor we own cannot be invalid: only EINTR (retried
                // as an empty answer) or ENOMEM reach here; look again.
                Ok(false) | Err(_) if !deadline.expired() => continue,
                _ => return false,
            }
        }
    }
}

impl AsFd for Sentinel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Sentinel {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Waitable for Sentinel {
    /// Ready once the process has ended.
    fn wait_source(&self) -> WaitSource<'_> {
        WaitSource::readable(self.fd.as_fd())
    }
}
