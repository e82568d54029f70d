//! Waiting on several connections at once (Python's `multiprocessing.connection.wait`).

use std::os::fd::BorrowedFd;
use std::time::Duration;

use crate::connection::listener::Listener;
use crate::connection::socket::SocketConnection;
use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::sys::fd::{Interest, poll};

/// Something [`wait`] can wait on: it becomes ready when its descriptor is
/// readable, or earlier if it already holds what a reader wants.
pub trait Waitable {
    /// The descriptor to poll for reading; `None` if the object is closed
    /// (it then counts as ready: using it fails at once).
    fn wait_fd(&self) -> Option<BorrowedFd<'_>>;

    /// Whether the object is ready without polling (a message already buffered).
    fn ready_without_polling(&self) -> bool {
        false
    }
}

impl<T> Waitable for SocketConnection<T> {
    fn wait_fd(&self) -> Option<BorrowedFd<'_>> {
        self.fd()
    }

    fn ready_without_polling(&self) -> bool {
        self.has_buffered_message()
    }
}

impl Waitable for Listener {
    fn wait_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.fd())
    }
}

impl Waitable for BorrowedFd<'_> {
    fn wait_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(*self)
    }
}

/// Waits until at least one of `objects` is ready, or `timeout` passes
/// (`None`: no limit), and returns the indices of the ready ones, in order.
///
/// A connection is ready when [`SocketConnection::recv`] would not block
/// for long: a message (or the peer's end of stream) has arrived. A
/// [`Listener`] is ready when a client is waiting. An empty result means
/// the timeout passed. Waiting on nothing without a timeout is an
/// [`Error::InvalidArgument`].
///
/// ```
/// use multiproc::connection::{wait, SocketConnection};
/// use std::time::Duration;
///
/// let (mut a, b) = SocketConnection::<u32>::pair().unwrap();
/// let (c, d) = SocketConnection::<u32>::pair().unwrap();
/// assert!(wait(&[&b, &d], Some(Duration::ZERO)).unwrap().is_empty());
/// a.send(&1).unwrap();
/// assert_eq!(wait(&[&b, &d], None).unwrap(), [0]);
/// # drop(c);
/// ```
pub fn wait(objects: &[&dyn Waitable], timeout: Option<Duration>) -> Result<Vec<usize>> {
    if objects.is_empty() && timeout.is_none() {
        return Err(Error::InvalidArgument(
            "wait() on no objects and without a timeout would never return".into(),
        ));
    }
    let mut ready = Vec::new();
    let mut polled = Vec::new();
    let mut fds = Vec::new();
    for (i, object) in objects.iter().enumerate() {
        match object.wait_fd() {
            Some(fd) if !object.ready_without_polling() => {
                polled.push(i);
                fds.push(fd);
            }
            _ => ready.push(i),
        }
    }
    // With something ready already, only collect what else is ready now.
    let deadline = if ready.is_empty() {
        Deadline::from_timeout(timeout)
    } else {
        Deadline::Now
    };
    loop {
        let hits = poll(&fds, Interest::Read, deadline.remaining())?;
        if !hits.is_empty() || deadline.expired() {
            ready.extend(hits.into_iter().map(|h| polled[h]));
            break;
        }
        // Nothing and time left: the poll was interrupted; wait again.
    }
    ready.sort_unstable();
    Ok(ready)
}
