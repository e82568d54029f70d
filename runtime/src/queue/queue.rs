//! `Queue<T>`: Python's `multiprocessing.Queue`.

use std::borrow::Borrow;
use std::marker::PhantomData;
use std::time::Duration;

use crate::codec::Shareable;
use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::handle::{FlavorRepr, FlavoredHandle, HandleRepr, ShareHandle};
use crate::manager::core::{ProxyCore, RemoteFlavor, TypeTag};
use crate::queue::DEFAULT_CAPACITY_BYTES;
use crate::queue::core::{QueueCore, queue_fingerprint};
use crate::queue::remote::{RemoteQueue, remote_queue_tag};
use crate::shm::ShmSpec;

/// A multi-producer, multi-consumer queue shared by any number of processes.
///
/// Messages are encoded (`T: Shareable`) into a ring buffer in a shared
/// segment. Handles are cheap to clone and can be passed to child processes
/// as arguments or inside messages. Unlike Python's queue there is no feeder
/// thread: when `put` returns, the message is in the queue, and stays there if
/// the producer exits or dies.
///
/// Two limits apply: `maxsize` messages (0, the default, means no limit, as
/// `maxsize <= 0` does in Python), and the ring's size in bytes (1 MiB by
/// default): a `put` also waits while the ring has no room for the message.
/// A message larger than the whole ring still goes through, streamed while a
/// consumer takes it (`try_put` refuses such a message with `Full`, since it
/// cannot be written without waiting).
///
/// After [`Queue::close`] (by any process) puts fail with
/// [`Error::Closed`](crate::Error::Closed); gets return what is left, then
/// `Closed`. A producer killed in the middle of a `put` loses that message
/// only; a consumer killed in the middle of a `get` loses at most the message
/// it was taking. Neither blocks the others.
///
/// ```
/// use multiproc::{Process, Queue};
///
/// fn produce(q: Queue<String>) {
///     for i in 0..3 {
///         q.put(format!("item {i}")).unwrap();
///     }
/// }
///
/// fn main() {
///     multiproc::init();
///     let q = Queue::new().unwrap();
///     let mut p = Process::new(produce, q.clone());
///     p.start().unwrap();
///     for i in 0..3 {
///         assert_eq!(q.get().unwrap(), format!("item {i}"));
///     }
///     p.join().unwrap();
/// }
/// ```
pub struct Queue<T> {
    flavor: QueueFlavor<T>,
}

/// A borrowed view of a [`Queue`]'s flavour.
pub(crate) enum QueueRef<'a, T> {
    Shm(&'a ShmQueue<T>),
    Remote(&'a RemoteQueue),
    #[cfg(feature = "redis")]
    Redis(&'a crate::redis::RedisQueue),
}

/// Where a [`Queue`] lives.
enum QueueFlavor<T> {
    /// A ring in a shared segment.
    Shm(ShmQueue<T>),
    /// An object of a TCP manager's server.
    Remote(RemoteQueue),
    /// A list in Redis.
    #[cfg(feature = "redis")]
    Redis(crate::redis::RedisQueue),
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            flavor: match &self.flavor {
                QueueFlavor::Shm(q) => QueueFlavor::Shm(q.clone()),
                QueueFlavor::Remote(r) => QueueFlavor::Remote(r.clone()),
                #[cfg(feature = "redis")]
                QueueFlavor::Redis(r) => QueueFlavor::Redis(r.clone()),
            },
        }
    }
}

impl<T> std::fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.flavor {
            QueueFlavor::Shm(q) => q.fmt(f),
            QueueFlavor::Remote(r) => f.debug_tuple("Queue").field(r.core()).finish(),
            #[cfg(feature = "redis")]
            QueueFlavor::Redis(r) => f.debug_tuple("Queue").field(r.object()).finish(),
        }
    }
}

impl<T> Queue<T> {
    /// Which flavour this is, for the queues built on this one.
    pub(crate) fn flavor(&self) -> QueueRef<'_, T> {
        match &self.flavor {
            QueueFlavor::Shm(q) => QueueRef::Shm(q),
            QueueFlavor::Remote(r) => QueueRef::Remote(r),
            #[cfg(feature = "redis")]
            QueueFlavor::Redis(r) => QueueRef::Redis(r),
        }
    }

    /// A queue of the Redis flavour.
    #[cfg(feature = "redis")]
    pub(crate) fn from_redis(r: crate::redis::RedisQueue) -> Queue<T> {
        Queue {
            flavor: QueueFlavor::Redis(r),
        }
    }

    /// The same queue, whose consumers keep an item until `task_done`
    /// (a Redis queue's joinable form; the other flavours do not differ).
    pub(crate) fn into_joinable(self) -> Queue<T> {
        match self.flavor {
            #[cfg(feature = "redis")]
            QueueFlavor::Redis(r) => Queue::from_redis(r.with_joinable(true)),
            flavor => Queue { flavor },
        }
    }

    /// A queue of the remote flavour.
    pub(crate) fn from_remote_queue(r: RemoteQueue) -> Queue<T> {
        Queue {
            flavor: QueueFlavor::Remote(r),
        }
    }
}

impl<T: Shareable> Queue<T> {
    /// An unbounded queue (no message limit) with a 1 MiB ring.
    ///
    /// The ring holds the bytes in flight: a [`put`](Queue::put) into a
    /// full ring waits until a consumer makes room, and a message larger
    /// than the ring passes through it in pieces while a consumer reads
    /// (there is no feeder thread to buffer it, as Python has). A process
    /// that puts such a message and only then gets it waits for ever; give
    /// it a ring that holds it ([`Queue::with_capacity_bytes`]).
    pub fn new() -> Result<Self> {
        Self::with_maxsize_and_capacity(0, DEFAULT_CAPACITY_BYTES)
    }

    /// A queue holding at most `maxsize` messages (0: no limit), with a 1 MiB ring.
    pub fn with_maxsize(maxsize: usize) -> Result<Self> {
        Self::with_maxsize_and_capacity(maxsize, DEFAULT_CAPACITY_BYTES)
    }

    /// An unbounded queue whose ring holds `bytes` bytes (rounded up to a power of two, at least 256).
    pub fn with_capacity_bytes(bytes: usize) -> Result<Self> {
        Self::with_maxsize_and_capacity(0, bytes)
    }

    /// A queue with both limits: `maxsize` messages (0: none) and a ring of `bytes` bytes.
    pub fn with_maxsize_and_capacity(maxsize: usize, bytes: usize) -> Result<Self> {
        ShmQueue::with_maxsize_and_capacity(maxsize, bytes).map(|q| Queue {
            flavor: QueueFlavor::Shm(q),
        })
    }

    /// The layout of a new queue with both limits, for a manager server to
    /// create (see [`Value::spec`](crate::Value::spec)).
    #[doc(hidden)]
    pub fn spec(maxsize: usize, bytes: usize) -> Result<ShmSpec> {
        ShmQueue::<T>::spec(maxsize, bytes)
    }

    #[inline]
    fn put_deadline(&self, item: &T, deadline: Deadline) -> Result<()> {
        match &self.flavor {
            QueueFlavor::Shm(q) => q.core.put(item, deadline),
            QueueFlavor::Remote(r) => r.put(item, deadline),
            #[cfg(feature = "redis")]
            QueueFlavor::Redis(r) => r.put(item, deadline),
        }
    }

    #[inline]
    /// [`Queue::get_timeout`] for a consumer that expects nothing soon: it
    /// sleeps at once instead of spinning first (a shared-memory queue; the
    /// other flavours do not spin).
    pub(crate) fn get_timeout_without_spin(&self, timeout: Duration) -> Result<T> {
        match &self.flavor {
            QueueFlavor::Shm(q) => q.core.get_without_spin(Deadline::after(timeout)),
            _ => self.get_timeout(timeout),
        }
    }

    fn get_deadline(&self, deadline: Deadline) -> Result<T> {
        match &self.flavor {
            QueueFlavor::Shm(q) => q.core.get(deadline),
            QueueFlavor::Remote(r) => r.get(deadline),
            #[cfg(feature = "redis")]
            QueueFlavor::Redis(r) => r.get(deadline),
        }
    }

    /// Puts `item`, waiting while the queue is full.
    #[inline]
    pub fn put(&self, item: impl Borrow<T>) -> Result<()> {
        self.put_deadline(item.borrow(), Deadline::Never)
    }

    /// Puts `item` if there is room now; `Err(Full)` otherwise.
    pub fn try_put(&self, item: impl Borrow<T>) -> Result<()> {
        self.put_deadline(item.borrow(), Deadline::Now)
    }

    /// Puts `item`, waiting at most `timeout` for room; `Err(Full)` if none
    /// came (as Python's `put(timeout=…)` raises `Full`).
    ///
    /// A message larger than the ring that times out half-way is not
    /// delivered; the part already written is dropped by the next `get`
    /// (and counted by `qsize` until then).
    pub fn put_timeout(&self, item: impl Borrow<T>, timeout: Duration) -> Result<()> {
        self.put_deadline(item.borrow(), Deadline::after(timeout))
    }

    /// Takes the oldest message, waiting for one; `Err(Closed)` once the
    /// queue is closed and drained.
    #[inline]
    pub fn get(&self) -> Result<T> {
        self.get_deadline(Deadline::Never)
    }

    /// Takes a message if one is there now; `Err(Empty)` otherwise.
    ///
    /// It may also say `Empty` while another process is in the middle of a
    /// `get` (as Python's `get_nowait` may).
    pub fn try_get(&self) -> Result<T> {
        self.get_deadline(Deadline::Now)
    }

    /// Takes a message, waiting at most `timeout`; `Err(Empty)` if none came
    /// (as Python's `get(timeout=…)` raises `queue.Empty`).
    ///
    /// Once the first part of a message larger than the ring has been taken,
    /// the rest is awaited beyond the timeout while its producer is writing it.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.get_deadline(Deadline::after(timeout))
    }

    /// The number of messages in the queue (approximate while others use
    /// it). A remote queue asks its server, so this can fail with `ManagerGone`.
    pub fn qsize(&self) -> Result<usize> {
        match &self.flavor {
            QueueFlavor::Shm(q) => Ok(q.qsize()),
            QueueFlavor::Remote(r) => r.qsize(),
            #[cfg(feature = "redis")]
            QueueFlavor::Redis(r) => r.qsize(),
        }
    }

    /// Whether the queue holds no message (approximate while others use it).
    pub fn empty(&self) -> Result<bool> {
        match &self.flavor {
            QueueFlavor::Shm(q) => Ok(q.empty()),
            QueueFlavor::Remote(r) => r.qsize().map(|n| n == 0),
            #[cfg(feature = "redis")]
            QueueFlavor::Redis(r) => r.qsize().map(|n| n == 0),
        }
    }

    /// Whether the queue holds `maxsize` messages (never, without a limit).
    pub fn full(&self) -> Result<bool> {
        match &self.flavor {
            QueueFlavor::Shm(q) => Ok(q.full()),
            QueueFlavor::Remote(r) => r.full(),
            #[cfg(feature = "redis")]
            QueueFlavor::Redis(r) => r.full(),
        }
    }

    /// The message limit (0: none).
    pub fn maxsize(&self) -> Result<usize> {
        match &self.flavor {
            QueueFlavor::Shm(q) => Ok(q.maxsize()),
            QueueFlavor::Remote(r) => r.maxsize(),
            #[cfg(feature = "redis")]
            QueueFlavor::Redis(r) => r.maxsize(),
        }
    }

    /// The ring's size in bytes; `None` for a queue a remote manager keeps
    /// (its server holds the items, without a ring).
    pub fn capacity_bytes(&self) -> Option<usize> {
        match &self.flavor {
            QueueFlavor::Shm(q) => Some(q.capacity_bytes()),
            QueueFlavor::Remote(_) => None,
            #[cfg(feature = "redis")]
            QueueFlavor::Redis(_) => None,
        }
    }

    /// Closes the queue for every process: puts fail from now on, gets drain
    /// what is left and then fail with `Closed`. Blocked callers wake up.
    ///
    /// A queue a remote manager keeps cannot be closed (Python's manager
    /// queue has no `close` either): that is `Err(InvalidArgument)`, and
    /// the queue stays open.
    pub fn close(&self) -> Result<()> {
        match &self.flavor {
            QueueFlavor::Shm(q) => {
                q.close();
                Ok(())
            }
            QueueFlavor::Remote(_) => Err(Error::InvalidArgument(
                "a queue a remote manager keeps cannot be closed".into(),
            )),
            #[cfg(feature = "redis")]
            QueueFlavor::Redis(_) => Err(Error::InvalidArgument(
                "a queue kept in Redis cannot be closed (delete it by name instead)".into(),
            )),
        }
    }

    /// Whether some process closed the queue (never, for a remote one).
    pub fn is_closed(&self) -> bool {
        match &self.flavor {
            QueueFlavor::Shm(q) => q.is_closed(),
            QueueFlavor::Remote(_) => false,
            #[cfg(feature = "redis")]
            QueueFlavor::Redis(_) => false,
        }
    }
}

impl<T> crate::connection::Waitable for Queue<T> {
    /// Ready when a message is there to get or the queue is closed (see
    /// [`wait`](crate::connection::wait)). A queue a remote manager keeps
    /// cannot be watched from here: `wait` refuses it with
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) (use
    /// `get_timeout` on it instead).
    fn wait_source(&self) -> crate::connection::WaitSource<'_> {
        match &self.flavor {
            QueueFlavor::Shm(q) => q.core.wait_source(),
            QueueFlavor::Remote(_) => crate::connection::WaitSource::unwatchable(
                "a queue a remote manager keeps (use get_timeout on it)",
            ),
            #[cfg(feature = "redis")]
            QueueFlavor::Redis(_) => crate::connection::WaitSource::unwatchable(
                "a queue kept in Redis (use get_timeout on it)",
            ),
        }
    }
}

/// The shared-memory form only: a local manager creates queues as segments.
impl<T: Shareable> ShareHandle for Queue<T> {
    fn to_repr(&self) -> Result<HandleRepr> {
        match &self.flavor {
            QueueFlavor::Shm(q) => q.to_repr(),
            QueueFlavor::Remote(_) => Err(Error::InvalidArgument(
                "a queue a remote manager keeps has no shared segment".into(),
            )),
            #[cfg(feature = "redis")]
            QueueFlavor::Redis(_) => Err(Error::InvalidArgument(
                "a queue kept in Redis has no shared segment".into(),
            )),
        }
    }

    fn from_repr(repr: &HandleRepr) -> Result<Self> {
        ShmQueue::from_repr(repr).map(|q| Queue {
            flavor: QueueFlavor::Shm(q),
        })
    }
}

impl<T: Shareable> FlavoredHandle for Queue<T> {
    fn to_flavor_repr(&self) -> Result<FlavorRepr> {
        match &self.flavor {
            QueueFlavor::Shm(q) => q.to_repr().map(FlavorRepr::Shm),
            QueueFlavor::Remote(r) => r.core().to_repr().map(FlavorRepr::Remote),
            #[cfg(feature = "redis")]
            QueueFlavor::Redis(r) => Ok(FlavorRepr::Redis(r.object().to_repr())),
        }
    }

    fn from_flavor_repr(repr: &FlavorRepr) -> Result<Self> {
        match repr {
            FlavorRepr::Shm(h) => <Queue<T> as ShareHandle>::from_repr(h),
            FlavorRepr::Remote(p) => ProxyCore::from_repr(p, remote_queue_tag::<T>())
                .map(|core| Queue::from_remote_queue(RemoteQueue::new(core))),
            #[cfg(feature = "redis")]
            FlavorRepr::Redis(r) => {
                crate::redis::RedisObject::from_repr(r, "queue", crate::redis::queue_type::<T>())
                    .map(|o| Queue::from_redis(crate::redis::RedisQueue::new(o, false)))
            }
            #[cfg(not(feature = "redis"))]
            FlavorRepr::Redis(_) => Err(crate::handle::without_redis()),
        }
    }
}

crate::impl_flavored_handle!(impl<T: Shareable> for Queue<T>);

impl<T: Shareable> RemoteFlavor for Queue<T> {
    fn remote_tag() -> TypeTag {
        remote_queue_tag::<T>()
    }
    fn from_remote(core: ProxyCore) -> Result<Self> {
        Ok(Queue::from_remote_queue(RemoteQueue::new(core)))
    }
}

/// The shared-memory flavour of a [`Queue`]: a ring in a segment.
pub(crate) struct ShmQueue<T> {
    core: QueueCore,
    _t: PhantomData<fn(T) -> T>,
}

impl<T> Clone for ShmQueue<T> {
    fn clone(&self) -> Self {
        ShmQueue {
            core: self.core.clone(),
            _t: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for ShmQueue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.core.fmt(f)
    }
}

impl<T> ShmQueue<T> {
    pub(crate) fn core(&self) -> &QueueCore {
        &self.core
    }
}

impl<T: Shareable> ShmQueue<T> {
    /// An unbounded queue (no message limit) with a 1 MiB ring.
    ///
    /// The ring holds the bytes in flight: a [`put`](Queue::put) into a
    /// full ring waits until a consumer makes room, and a message larger
    /// than the ring passes through it in pieces while a consumer reads
    /// (there is no feeder thread to buffer it, as Python has). A process
    /// that puts such a message and only then gets it waits for ever; give
    /// it a ring that holds it ([`Queue::with_capacity_bytes`]).
    pub fn new() -> Result<Self> {
        Self::with_maxsize_and_capacity(0, DEFAULT_CAPACITY_BYTES)
    }

    /// A queue with both limits: `maxsize` messages (0: none) and a ring of `bytes` bytes.
    pub fn with_maxsize_and_capacity(maxsize: usize, bytes: usize) -> Result<Self> {
        let (fp, _) = queue_fingerprint::<T>("Queue");
        Ok(ShmQueue {
            core: QueueCore::create(fp, maxsize, bytes)?,
            _t: PhantomData,
        })
    }

    /// The layout of a new queue with both limits, for a manager server to
    /// create (see [`Value::spec`](crate::Value::spec)).
    #[doc(hidden)]
    pub fn spec(maxsize: usize, bytes: usize) -> Result<ShmSpec> {
        let (fp, _) = queue_fingerprint::<T>("Queue");
        QueueCore::spec(fp, maxsize, bytes)
    }

    /// Puts `item`, waiting while the queue is full.
    pub fn put(&self, item: impl Borrow<T>) -> Result<()> {
        self.core.put(item.borrow(), Deadline::Never)
    }

    /// Puts `item` if there is room now; `Err(Full)` otherwise.
    pub fn try_put(&self, item: impl Borrow<T>) -> Result<()> {
        self.core.put(item.borrow(), Deadline::Now)
    }

    /// Puts `item`, waiting at most `timeout` for room; `Err(Full)` if none
    /// came (as Python's `put(timeout=…)` raises `Full`).
    ///
    /// A message larger than the ring that times out half-way is not
    /// delivered; the part already written is dropped by the next `get`
    /// (and counted by `qsize` until then).
    pub fn put_timeout(&self, item: impl Borrow<T>, timeout: Duration) -> Result<()> {
        self.core.put(item.borrow(), Deadline::after(timeout))
    }

    /// Takes the oldest message, waiting for one; `Err(Closed)` once the
    /// queue is closed and drained.
    pub fn get(&self) -> Result<T> {
        self.core.get(Deadline::Never)
    }

    /// Takes a message if one is there now; `Err(Empty)` otherwise.
    ///
    /// It may also say `Empty` while another process is in the middle of a
    /// `get` (as Python's `get_nowait` may).
    pub fn try_get(&self) -> Result<T> {
        self.core.get(Deadline::Now)
    }

    /// Takes a message, waiting at most `timeout`; `Err(Empty)` if none came
    /// (as Python's `get(timeout=…)` raises `queue.Empty`).
    ///
    /// Once the first part of a message larger than the ring has been taken,
    /// the rest is awaited beyond the timeout while its producer is writing it.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.core.get(Deadline::after(timeout))
    }

    /// The number of messages in the queue (approximate while others use it).
    pub fn qsize(&self) -> usize {
        self.core.qsize()
    }

    /// Whether the queue holds no message (approximate while others use it).
    pub fn empty(&self) -> bool {
        self.core.empty()
    }

    /// Whether the queue holds `maxsize` messages (never, without a limit).
    pub fn full(&self) -> bool {
        self.core.full()
    }

    /// The message limit (0: none).
    pub fn maxsize(&self) -> usize {
        self.core.maxsize()
    }

    /// The ring's size in bytes.
    pub fn capacity_bytes(&self) -> usize {
        self.core.capacity_bytes()
    }

    /// Closes the queue for every process: puts fail from now on, gets drain
    /// what is left and then fail with `Closed`. Blocked callers wake up.
    pub fn close(&self) {
        self.core.close()
    }

    /// Whether some process closed the queue.
    pub fn is_closed(&self) -> bool {
        self.core.is_closed()
    }
}

impl<T> crate::connection::Waitable for ShmQueue<T> {
    fn wait_source(&self) -> crate::connection::WaitSource<'_> {
        self.core.wait_source()
    }
}

impl<T: Shareable> ShareHandle for ShmQueue<T> {
    fn to_repr(&self) -> Result<HandleRepr> {
        self.core.to_repr()
    }

    fn from_repr(repr: &HandleRepr) -> Result<Self> {
        let (fp, name) = queue_fingerprint::<T>("Queue");
        Ok(ShmQueue {
            core: QueueCore::open(repr, fp, &name)?,
            _t: PhantomData,
        })
    }
}
