//! `SimpleQueue<T>`: Python's `multiprocessing.SimpleQueue`.

use std::borrow::Borrow;
use std::time::Duration;

use crate::codec::Shareable;
use crate::error::Result;
use crate::handle::{HandleRepr, ShareHandle};
use crate::queue::queue::ShmQueue;

/// A plain queue: `put`, `get`, `empty`, `close`, without a message limit.
///
/// It is the same ring as [`Queue`](crate::Queue) (so it is as fast and as robust), with the
/// smaller interface of Python's `SimpleQueue`. `put` waits only while the
/// 1 MiB ring has no room.
///
/// ```
/// let q = multiproc::SimpleQueue::<String>::new().unwrap();
/// q.put("hello".to_string()).unwrap();
/// assert!(!q.empty());
/// assert_eq!(q.get().unwrap(), "hello");
/// ```
pub struct SimpleQueue<T> {
    queue: ShmQueue<T>,
}

impl<T> Clone for SimpleQueue<T> {
    fn clone(&self) -> Self {
        SimpleQueue {
            queue: self.queue.clone(),
        }
    }
}

impl<T> std::fmt::Debug for SimpleQueue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SimpleQueue").field(&self.queue).finish()
    }
}

impl<T: Shareable> SimpleQueue<T> {
    /// A new, empty queue.
    pub fn new() -> Result<Self> {
        ShmQueue::new().map(|queue| SimpleQueue { queue })
    }

    /// Puts `item`, waiting while the ring has no room.
    pub fn put(&self, item: impl Borrow<T>) -> Result<()> {
        self.queue.put(item)
    }

    /// Puts `item` if it fits now; `Err(Full)` otherwise.
    pub fn try_put(&self, item: impl Borrow<T>) -> Result<()> {
        self.queue.try_put(item)
    }

    /// Puts `item`, waiting at most `timeout` for room; `Err(Full)` if none came.
    pub fn put_timeout(&self, item: impl Borrow<T>, timeout: Duration) -> Result<()> {
        self.queue.put_timeout(item, timeout)
    }

    /// Takes the oldest message, waiting for one; `Err(Closed)` once closed and drained.
    pub fn get(&self) -> Result<T> {
        self.queue.get()
    }

    /// Takes a message if one is there now; `Err(Empty)` otherwise.
    pub fn try_get(&self) -> Result<T> {
        self.queue.try_get()
    }

    /// Takes a message, waiting at most `timeout`; `Err(Empty)` if none came.
    ///
    /// Once the first part of a message larger than the ring has been taken,
    /// the rest is awaited beyond the timeout while its producer is writing it.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.queue.get_timeout(timeout)
    }

    /// Whether the queue holds no message.
    pub fn empty(&self) -> bool {
        self.queue.empty()
    }

    /// Closes the queue for every process (see [`Queue::close`](crate::Queue::close)).
    pub fn close(&self) {
        self.queue.close()
    }

    /// Whether some process closed the queue (Python's `SimpleQueue._closed`,
    /// which Python only knows of in the process that closed it).
    pub fn is_closed(&self) -> bool {
        self.queue.is_closed()
    }
}

impl<T> crate::connection::Waitable for SimpleQueue<T> {
    /// Ready when a message is there to get or the queue is closed (see
    /// [`wait`](crate::connection::wait)).
    fn wait_source(&self) -> crate::connection::WaitSource<'_> {
        self.queue.core().wait_source()
    }
}

impl<T: Shareable> ShareHandle for SimpleQueue<T> {
    fn to_repr(&self) -> Result<HandleRepr> {
        self.queue.to_repr()
    }

    fn from_repr(repr: &HandleRepr) -> Result<Self> {
        ShmQueue::from_repr(repr).map(|queue| SimpleQueue { queue })
    }
}

crate::impl_share_handle!(impl<T: Shareable> for SimpleQueue<T>);
