//! `JoinableQueue<T>`: a [`Queue`] whose consumers report finished tasks.

use std::ops::Deref;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::codec::Shareable;
use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::handle::{FlavorRepr, FlavoredHandle, HandleRepr, ShareHandle};
use crate::manager::core::{ProxyCore, RemoteFlavor, TypeTag};
use crate::queue::Queue;
use crate::queue::queue::QueueRef;
use crate::queue::remote::remote_queue_tag;
use crate::queue::ring::gave_up;
use crate::shm::ShmSpec;
use crate::sys::futex::WaitOutcome;

/// Python's `JoinableQueue`: a [`Queue`] (all of whose methods it has,
/// through `Deref`) plus [`task_done`](JoinableQueue::task_done) and
/// [`join`](JoinableQueue::join).
///
/// Every message put counts as an unfinished task once it is in the queue;
/// each `task_done` finishes one; `join` waits until none is unfinished. A
/// consumer that dies between taking a message and calling `task_done`
/// leaves that task unfinished for ever (as in Python): `join_timeout` is the
/// way to wait without trusting every consumer.
///
/// ```
/// let q = multiproc::JoinableQueue::<u32>::new().unwrap();
/// q.put(7).unwrap();
/// assert_eq!(q.get().unwrap(), 7);
/// q.task_done().unwrap();
/// q.join().unwrap();
/// assert!(q.task_done().is_err()); // more task_done calls than items
/// ```
pub struct JoinableQueue<T> {
    queue: Queue<T>,
}

impl<T> Clone for JoinableQueue<T> {
    fn clone(&self) -> Self {
        JoinableQueue {
            queue: self.queue.clone(),
        }
    }
}

impl<T> std::fmt::Debug for JoinableQueue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("JoinableQueue").field(&self.queue).finish()
    }
}

impl<T> Deref for JoinableQueue<T> {
    type Target = Queue<T>;
    fn deref(&self) -> &Queue<T> {
        &self.queue
    }
}

impl<T> crate::connection::Waitable for JoinableQueue<T> {
    /// As for [`Queue`]: ready when a message is there to get or the queue is closed.
    fn wait_source(&self) -> crate::connection::WaitSource<'_> {
        self.queue.wait_source()
    }
}

impl<T: Shareable> JoinableQueue<T> {
    /// The joinable form of `queue`.
    #[cfg(feature = "redis")]
    pub(crate) fn from_queue(queue: Queue<T>) -> Self {
        JoinableQueue {
            queue: queue.into_joinable(),
        }
    }

    /// An unbounded joinable queue with a 1 MiB ring.
    pub fn new() -> Result<Self> {
        Queue::new().map(|queue| JoinableQueue { queue })
    }

    /// A joinable queue holding at most `maxsize` messages (0: no limit).
    pub fn with_maxsize(maxsize: usize) -> Result<Self> {
        Queue::with_maxsize(maxsize).map(|queue| JoinableQueue { queue })
    }

    /// A joinable queue with both limits: `maxsize` messages and a ring of `bytes` bytes.
    pub fn with_maxsize_and_capacity(maxsize: usize, bytes: usize) -> Result<Self> {
        Queue::with_maxsize_and_capacity(maxsize, bytes).map(|queue| JoinableQueue { queue })
    }

    /// The layout of a new joinable queue with both limits, for a manager
    /// server to create (see [`Value::spec`](crate::Value::spec)).
    #[doc(hidden)]
    pub fn spec(maxsize: usize, bytes: usize) -> Result<ShmSpec> {
        Queue::<T>::spec(maxsize, bytes)
    }

    /// Marks one task taken from the queue as finished.
    ///
    /// More calls than messages put is `Err(InvalidState)`.
    pub fn task_done(&self) -> Result<()> {
        let core = match self.queue.flavor() {
            QueueRef::Shm(q) => q.core(),
            QueueRef::Remote(r) => return r.task_done(),
            #[cfg(feature = "redis")]
            QueueRef::Redis(r) => return r.task_done(),
        };
        let join = &core.state().join.0;
        let ring = core.ring();
        let mut done = join.done.load(Ordering::Acquire);
        loop {
            let tasks = ring.tasks();
            if done >= tasks {
                return Err(Error::InvalidState(
                    "task_done() called more times than there were items in the queue".into(),
                ));
            }
            // SeqCst: a joiner registers, then reads `done`; we change `done`,
            // then read the joiner count. One of the two sees the other.
            match join.done.compare_exchange_weak(
                done,
                done + 1,
                Ordering::SeqCst,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    if done + 1 >= tasks {
                        join.wait.notify();
                    }
                    return Ok(());
                }
                Err(now) => done = now,
            }
        }
    }

    /// The number of tasks put and not yet marked done.
    pub fn unfinished_tasks(&self) -> Result<usize> {
        let core = match self.queue.flavor() {
            QueueRef::Shm(q) => q.core(),
            QueueRef::Remote(r) => return r.unfinished_tasks(),
            #[cfg(feature = "redis")]
            QueueRef::Redis(r) => return r.unfinished_tasks(),
        };
        let done = core.state().join.0.done.load(Ordering::Acquire);
        Ok(core.ring().tasks().saturating_sub(done) as usize)
    }

    /// Waits until every task put has been marked done. On a queue a manager
    /// created, fails with `Error::ManagerGone` soon after the manager died
    /// (a remote manager: as soon as its connection is lost).
    pub fn join(&self) -> Result<()> {
        self.join_deadline(Deadline::Never)
    }

    /// `Ok` if no task is unfinished now, `Err(WouldBlock)` otherwise.
    pub fn try_join(&self) -> Result<()> {
        self.join_deadline(Deadline::Now)
    }

    /// Waits at most `timeout` for every task to be done; `Err(Timeout)` otherwise.
    pub fn join_timeout(&self, timeout: Duration) -> Result<()> {
        crate::deadline::timed(self.join_deadline(Deadline::after(timeout)), timeout)
    }

    fn join_deadline(&self, deadline: Deadline) -> Result<()> {
        let core = match self.queue.flavor() {
            QueueRef::Shm(q) => q.core(),
            QueueRef::Remote(r) => return r.join(deadline),
            #[cfg(feature = "redis")]
            QueueRef::Redis(r) => return r.join(deadline),
        };
        let join = &core.state().join.0;
        let ring = core.ring();
        let finished = || join.done.load(Ordering::SeqCst) >= ring.tasks();
        loop {
            if finished() {
                return Ok(());
            }
            if deadline.expired() {
                return Err(gave_up(&deadline, Error::WouldBlock));
            }
            if join.wait.sleep(deadline, finished) == WaitOutcome::TimedOut {
                // A producer that died between counting a task and publishing it
                // is repaired by whoever takes over its lock.
                ring.recover_dead_producer();
                core.check_owner()?;
            }
        }
    }
}

impl<T: Shareable> ShareHandle for JoinableQueue<T> {
    fn to_repr(&self) -> Result<HandleRepr> {
        self.queue.to_repr()
    }

    fn from_repr(repr: &HandleRepr) -> Result<Self> {
        Queue::from_repr(repr).map(|queue| JoinableQueue { queue })
    }
}

impl<T: Shareable> FlavoredHandle for JoinableQueue<T> {
    fn to_flavor_repr(&self) -> Result<FlavorRepr> {
        self.queue.to_flavor_repr()
    }

    fn from_flavor_repr(repr: &FlavorRepr) -> Result<Self> {
        Queue::from_flavor_repr(repr).map(|queue| JoinableQueue {
            queue: queue.into_joinable(),
        })
    }
}

crate::impl_flavored_handle!(impl<T: Shareable> for JoinableQueue<T>);

/// A joinable queue a remote manager keeps is the same server object as a
/// plain one (every server queue counts tasks), under the same type tag.
impl<T: Shareable> RemoteFlavor for JoinableQueue<T> {
    fn remote_tag() -> TypeTag {
        remote_queue_tag::<T>()
    }
    fn from_remote(core: ProxyCore) -> Result<Self> {
        Ok(JoinableQueue {
            queue: Queue::from_remote(core)?,
        })
    }
}
