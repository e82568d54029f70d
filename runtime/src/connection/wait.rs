//! Waiting on several objects at once (Python's `multiprocessing.connection.wait`).
//!
//! Objects are of two kinds. Some have a descriptor that turns readable
//! when they are ready (socket connections, listeners, process sentinels):
//! those are polled. The others live in shared memory (pipe ends made by
//! [`Pipe`](crate::Pipe), queues): they are ready when their ring holds
//! data, and a waiter sleeps on the futex word their producers bump (all
//! such words at once, with `futex_waitv`), waking every 100 ms to look
//! for a peer that died. When both kinds are mixed, a helper thread sleeps
//! on the words while this thread polls the descriptors; whichever wakes
//! first wakes the other.

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::connection::listener::Listener;
use crate::connection::socket::SocketConnection;
use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::queue::ring::WaitWord;
use crate::sys;
use crate::sys::fd::{Interest, poll};
use crate::sys::futex::{self, WaitvOutcome};

/// How often a waiter on shared-memory objects wakes to check for dead peers.
const SLICE: Duration = Duration::from_millis(100);
/// Without `futex_waitv`, how long a waiter on several shared-memory
/// objects sleeps on the first one before looking at the others.
const FALLBACK_SLICE: Duration = Duration::from_millis(1);

/// Something [`wait`] can wait on.
///
/// Implemented by the crate's connections, listeners, queues and process
/// [`Sentinel`](crate::Sentinel)s, and by any borrowed descriptor. A type
/// of yours with a descriptor implements it with
/// [`WaitSource::readable`]:
///
/// ```
/// use multiproc::connection::{wait, WaitSource, Waitable};
/// use std::os::fd::AsFd;
/// use std::os::unix::net::UnixStream;
///
/// struct Doorbell(UnixStream);
///
/// impl Waitable for Doorbell {
///     fn wait_source(&self) -> WaitSource<'_> {
///         WaitSource::readable(self.0.as_fd())
///     }
/// }
///
/// let (a, b) = UnixStream::pair().unwrap();
/// let bell = Doorbell(b);
/// assert!(wait(&[&bell], Some(std::time::Duration::ZERO)).unwrap().is_empty());
/// drop(a); // the peer hung up: readable
/// assert_eq!(wait(&[&bell], None).unwrap(), [0]);
/// ```
pub trait Waitable {
    /// How [`wait`] finds out that this object is ready.
    fn wait_source(&self) -> WaitSource<'_>;
}

/// How [`wait`] watches one object: a descriptor to poll, a state that is
/// ready at once, or (for the crate's shared-memory objects) a ring.
pub struct WaitSource<'a>(Source<'a>);

/// Whether a shared-memory object is ready; `true` asks for the thorough
/// check too (is the peer's process dead?), which costs a system call.
type ReadyCheck<'a> = Box<dyn Fn(bool) -> bool + 'a>;

enum Source<'a> {
    Fd(BorrowedFd<'a>),
    Ready,
    Ring {
        word: &'a WaitWord,
        ready: ReadyCheck<'a>,
    },
    /// Cannot be watched from this process (why, for the error).
    Unwatchable(&'static str),
}

impl<'a> WaitSource<'a> {
    /// Ready when `fd` is readable, hung up or in error.
    pub fn readable(fd: BorrowedFd<'a>) -> WaitSource<'a> {
        WaitSource(Source::Fd(fd))
    }

    /// Ready now: using the object will not wait (a message is buffered
    /// already, or the object is closed and using it fails at once).
    pub fn ready() -> WaitSource<'a> {
        WaitSource(Source::Ready)
    }

    /// An object this process cannot watch (it lives in another process,
    /// say): [`wait`] refuses it with [`Error::InvalidArgument`] saying
    /// `why`, as Python's `wait` refuses an object without a `fileno`,
    /// rather than count it ready and leave the caller spinning.
    pub fn unwatchable(why: &'static str) -> WaitSource<'a> {
        WaitSource(Source::Unwatchable(why))
    }

    /// Ready when `ready` says so; producers bump `word` whenever that may
    /// have changed.
    pub(crate) fn ring(word: &'a WaitWord, ready: impl Fn(bool) -> bool + 'a) -> WaitSource<'a> {
        WaitSource(Source::Ring {
            word,
            ready: Box::new(ready),
        })
    }
}

impl std::fmt::Debug for WaitSource<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Source::Fd(fd) => f.debug_tuple("Readable").field(fd).finish(),
            Source::Ready => f.write_str("Ready"),
            Source::Ring { .. } => f.write_str("SharedMemory"),
            Source::Unwatchable(why) => f.debug_tuple("Unwatchable").field(why).finish(),
        }
    }
}

impl<T> Waitable for SocketConnection<T> {
    /// Ready when a message (or the peer's end of stream) has arrived; a
    /// closed connection is ready (receiving fails at once).
    fn wait_source(&self) -> WaitSource<'_> {
        match self.fd() {
            Some(fd) if !self.has_buffered_message() => WaitSource::readable(fd),
            _ => WaitSource::ready(),
        }
    }
}

impl Waitable for Listener {
    /// Ready when a client is waiting to be accepted.
    fn wait_source(&self) -> WaitSource<'_> {
        WaitSource::readable(self.fd())
    }
}

impl Waitable for BorrowedFd<'_> {
    fn wait_source(&self) -> WaitSource<'_> {
        WaitSource::readable(self.as_fd())
    }
}

/// Undoes the registrations on shared-memory words when a round ends.
struct Registered<'a>(Vec<&'a WaitWord>);

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        for word in &self.0 {
            word.leave();
        }
    }
}

/// Waits until at least one of `objects` is ready, or `timeout` passes
/// (`None`: no limit), and returns the indices of the ready ones, in order
/// (Python's `multiprocessing.connection.wait`).
///
/// Ready means that using the object would not wait:
/// - a [`Connection`](crate::Connection) or [`SocketConnection`]: a
///   message is there to receive, or the peer is gone (`recv` then says
///   `Closed`), or this end is closed or cannot receive;
/// - a [`Queue`](crate::Queue), [`JoinableQueue`](crate::JoinableQueue)
///   or [`SimpleQueue`](crate::SimpleQueue): a message is there to get, or
///   the queue was closed (another process may take the message first, as
///   in Python);
/// - a process [`Sentinel`](crate::Sentinel): the process has ended;
/// - a [`Listener`]: a client is waiting;
/// - a borrowed descriptor, or a [`WaitSource::readable`]: readable.
///
/// A peer of a pipe end that dies is noticed within about 100 ms. An
/// empty result means the timeout passed. Waiting on nothing without a
/// timeout is an [`Error::InvalidArgument`].
///
/// ```
/// use multiproc::connection::{wait, SocketConnection};
/// use multiproc::{Pipe, Queue};
/// use std::time::Duration;
///
/// let (mut a, b) = SocketConnection::<u32>::pair().unwrap();
/// let (here, there) = Pipe::new::<u32>().unwrap();
/// let q = Queue::<u32>::new().unwrap();
/// assert!(wait(&[&b, &there, &q], Some(Duration::ZERO)).unwrap().is_empty());
/// a.send(&1).unwrap();
/// here.send(2).unwrap();
/// assert_eq!(wait(&[&b, &there, &q], None).unwrap(), [0, 1]);
/// ```
pub fn wait(objects: &[&dyn Waitable], timeout: Option<Duration>) -> Result<Vec<usize>> {
    if objects.is_empty() && timeout.is_none() {
        return Err(Error::InvalidArgument(
            "wait() on no objects and without a timeout would never return".into(),
        ));
    }
    let deadline = Deadline::from_timeout(timeout);
    let sources: Vec<WaitSource<'_>> = objects.iter().map(|o| o.wait_source()).collect();
    if let Some(why) = sources.iter().find_map(|s| match s.0 {
        Source::Unwatchable(why) => Some(why),
        _ => None,
    }) {
        return Err(Error::InvalidArgument(format!("wait() cannot watch {why}")));
    }
    let (fd_index, fds): (Vec<usize>, Vec<BorrowedFd<'_>>) = sources
        .iter()
        .enumerate()
        .filter_map(|(i, s)| match s.0 {
            Source::Fd(fd) => Some((i, fd)),
            _ => None,
        })
        .unzip();
    let rings: Vec<usize> = (0..sources.len())
        .filter(|&i| matches!(sources[i].0, Source::Ring { .. }))
        .collect();
    // The first look is thorough: a peer that died before the call counts.
    let mut thorough = true;
    loop {
        // Registered before looking, so that a producer that publishes
        // after the look wakes the sleep below.
        let mut registered = Registered(Vec::with_capacity(rings.len()));
        let mut words = Vec::with_capacity(rings.len());
        for &i in &rings {
            if let Source::Ring { word, .. } = &sources[i].0 {
                let (seq, value) = word.enter();
                registered.0.push(*word);
                words.push((seq, value));
            }
        }
        let mut ready: Vec<usize> = (0..sources.len())
            .filter(|&i| match &sources[i].0 {
                Source::Ready => true,
                Source::Ring { ready, .. } => ready(thorough),
                Source::Fd(_) | Source::Unwatchable(_) => false,
            })
            .collect();
        let wait_for = if ready.is_empty() {
            deadline.remaining()
        } else {
            Some(Duration::ZERO)
        };
        let timed_out = if words.is_empty() {
            let hits = poll(&fds, Interest::Read, wait_for)?;
            ready.extend(hits.into_iter().map(|h| fd_index[h]));
            false
        } else {
            let slice = wait_for.map_or(SLICE, |w| w.min(SLICE));
            let (hits, timed_out) = if fds.is_empty() {
                (Vec::new(), sleep_on_words(&words, slice))
            } else {
                sleep_on_both(&words, &fds, slice)?
            };
            ready.extend(hits.into_iter().map(|h| fd_index[h]));
            timed_out
        };
        drop(registered);
        if !ready.is_empty() || deadline.expired() {
            // Whatever else is ready now counts too.
            for &i in &rings {
                if let Source::Ring { ready: check, .. } = &sources[i].0
                    && !ready.contains(&i)
                    && check(false)
                {
                    ready.push(i);
                }
            }
            ready.sort_unstable();
            ready.dedup();
            return Ok(ready);
        }
        // After a whole slice asleep, look for dead peers again.
        thorough = timed_out;
    }
}

/// Sleeps until one of `words` changes or `slice` passes; true if it passed.
fn sleep_on_words(words: &[(&AtomicU32, u32)], slice: Duration) -> bool {
    if slice.is_zero() {
        return false;
    }
    match futex::futex_waitv(words, Some(slice)) {
        WaitvOutcome::Woken => false,
        WaitvOutcome::TimedOut => true,
        WaitvOutcome::Unsupported => {
            // Old kernel: sleep on the first word, look at all of them often.
            let (word, value) = words[0];
            let short = slice.min(FALLBACK_SLICE);
            futex::futex_wait(word, value, Some(short)) == futex::WaitOutcome::TimedOut
                && short == slice
        }
    }
}

/// Sleeps until one of `words` changes, one of `fds` is readable, or
/// `slice` passes: a helper thread sleeps on the words while this one
/// polls. Returns the indices of the readable descriptors and whether the
/// slice passed.
fn sleep_on_both(
    words: &[(&AtomicU32, u32)],
    fds: &[BorrowedFd<'_>],
    slice: Duration,
) -> Result<(Vec<usize>, bool)> {
    if slice.is_zero() {
        return Ok((poll(fds, Interest::Read, Some(Duration::ZERO))?, false));
    }
    // The helper signals `kick` when a word changed; this thread sets
    // `stop` (another word the helper sleeps on) when a descriptor did.
    let kick = sys::fd::eventfd(0)?;
    let stop = AtomicU32::new(0);
    let mut polled = fds.to_vec();
    polled.push(kick.as_fd());
    let (hits, helper_timed_out) = std::thread::scope(|scope| {
        let helper = scope.spawn(|| {
            let mut all = words.to_vec();
            all.push((&stop, 0));
            let timed_out = sleep_on_words(&all, slice);
            if stop.load(Ordering::SeqCst) == 0 {
                let _ = sys::fd::eventfd_signal(kick.as_fd());
            }
            timed_out
        });
        let hits = poll(&polled, Interest::Read, Some(slice));
        stop.store(1, Ordering::SeqCst);
        futex::futex_wake(&stop, u32::MAX);
        let helper_timed_out = helper.join().unwrap_or(false);
        (hits, helper_timed_out)
    });
    let hits: Vec<usize> = hits?.into_iter().filter(|&h| h < fds.len()).collect();
    Ok((hits.clone(), hits.is_empty() && helper_timed_out))
}
