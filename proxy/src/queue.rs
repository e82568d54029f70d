//! `QueueProxy<T>`: a FIFO queue a manager server keeps, usable over TCP
//! (the proxy a master registers for tasks and results).

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use multiproc_runtime::deadline::Deadline;
use multiproc_runtime::manager::protocol::Method;
use multiproc_runtime::{Error, Result, Shareable};

use crate::core::{Args, Proxy, ProxyCore, TypeTag, impl_proxy, read_bool, read_len, read_unit};

/// A FIFO queue owned by a manager server (Python's `manager.Queue()`,
/// with `task_done`/`join` as in `queue.Queue`).
///
/// A `get` on an empty queue (or a `put` on a full one) waits in the
/// server, on a connection of its own, and returns as soon as another
/// client puts (or gets); the process's other proxies go on meanwhile.
///
/// ```
/// use std::time::Duration;
/// multiproc::init();
/// let m = multiproc::BaseManager::new().authkey(b"k").start().unwrap();
/// let q = m.queue::<String>().unwrap();
/// q.put("hello".to_string()).unwrap();
/// assert_eq!(q.get().unwrap(), "hello");
/// assert!(matches!(q.get_timeout(Duration::from_millis(10)), Err(multiproc::Error::Empty)));
/// m.shutdown().unwrap();
/// ```
pub struct QueueProxy<T> {
    core: Arc<ProxyCore>,
    _types: PhantomData<fn() -> T>,
}

impl<T> Clone for QueueProxy<T> {
    fn clone(&self) -> Self {
        QueueProxy {
            core: self.core.clone(),
            _types: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for QueueProxy<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.core.fmt(f)
    }
}

impl<T: Shareable> Proxy for QueueProxy<T> {
    fn core(&self) -> &ProxyCore {
        &self.core
    }
    fn from_core(core: ProxyCore) -> Self {
        QueueProxy {
            core: Arc::new(core),
            _types: PhantomData,
        }
    }
    fn tag() -> TypeTag {
        TypeTag::new(format!("QueueProxy<{}>", std::any::type_name::<T>()))
    }
}

impl_proxy!(impl<T> for QueueProxy<T>);

impl<T: Shareable> QueueProxy<T> {
    /// Adds `item` at the back, waiting for room in a bounded queue.
    pub fn put(&self, item: T) -> Result<()> {
        self.put_deadline(item, Deadline::Never)
    }

    /// Adds `item` if there is room now, else [`Error::Full`].
    pub fn try_put(&self, item: T) -> Result<()> {
        self.put_deadline(item, Deadline::Now)
    }

    /// Adds `item`, waiting at most `timeout` for room ([`Error::Full`] after).
    pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<()> {
        self.put_deadline(item, Deadline::after(timeout))
    }

    fn put_deadline(&self, item: T, deadline: Deadline) -> Result<()> {
        let v = self.core.encode(&item)?;
        loop {
            let args = Args {
                value: Some(v.blob()),
                ..Args::default()
            };
            match self.core.call(Method::QueuePut, args, read_unit) {
                Err(Error::Full) => {}
                other => return other,
            }
            if deadline.expired() {
                return Err(Error::Full);
            }
            self.core.call_waiting(
                Method::QueueWaitNotFull,
                Args::default(),
                deadline,
                read_bool,
            )?;
        }
    }

    /// Removes the front item, waiting until there is one.
    pub fn get(&self) -> Result<T> {
        self.get_deadline(Deadline::Never)
    }

    /// Removes the front item if there is one now, else [`Error::Empty`].
    pub fn try_get(&self) -> Result<T> {
        self.get_deadline(Deadline::Now)
    }

    /// Removes the front item, waiting at most `timeout` ([`Error::Empty`] after).
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.get_deadline(Deadline::after(timeout))
    }

    fn get_deadline(&self, deadline: Deadline) -> Result<T> {
        loop {
            // Taken on the shared connection, which then holds the
            // references of any proxies inside the item.
            let got = self
                .core
                .call(Method::QueueGet, Args::default(), crate::core::read_value);
            match got {
                Ok(Some(v)) => return Ok(v),
                Ok(None) => return Err(crate::client::unexpected()),
                Err(Error::Empty) => {}
                Err(e) => return Err(e),
            }
            if deadline.expired() {
                return Err(Error::Empty);
            }
            self.core.call_waiting(
                Method::QueueWaitNotEmpty,
                Args::default(),
                deadline,
                read_bool,
            )?;
        }
    }

    /// How many items are queued now.
    pub fn qsize(&self) -> Result<usize> {
        self.core.call(Method::QueueLen, Args::default(), read_len)
    }

    /// Whether the queue is empty now.
    pub fn is_empty(&self) -> Result<bool> {
        self.qsize().map(|n| n == 0)
    }

    /// Whether a bounded queue is full now.
    pub fn full(&self) -> Result<bool> {
        let max = self.maxsize()?;
        Ok(max != 0 && self.qsize()? >= max)
    }

    /// The most items the queue holds (0: no limit).
    pub fn maxsize(&self) -> Result<usize> {
        self.core
            .call(Method::QueueMaxsize, Args::default(), read_len)
    }

    /// Marks one item taken from the queue as processed. More calls than
    /// items taken is [`Error::InvalidState`].
    pub fn task_done(&self) -> Result<()> {
        self.core
            .call(Method::QueueTaskDone, Args::default(), read_unit)
    }

    /// The number of items put and not yet marked done.
    pub fn unfinished_tasks(&self) -> Result<usize> {
        self.core
            .call(Method::QueueUnfinished, Args::default(), read_len)
    }

    /// Waits until every item put has been marked done.
    pub fn join(&self) -> Result<()> {
        self.join_deadline(Deadline::Never)
    }

    /// `Ok` if no item is unfinished now, `Err(WouldBlock)` otherwise.
    pub fn try_join(&self) -> Result<()> {
        self.join_deadline(Deadline::Now)
    }

    /// Waits at most `timeout` for every item to be done; `Err(Timeout)` otherwise.
    pub fn join_timeout(&self, timeout: Duration) -> Result<()> {
        self.join_deadline(Deadline::after(timeout))
    }

    fn join_deadline(&self, deadline: Deadline) -> Result<()> {
        let done =
            self.core
                .call_waiting(Method::QueueJoin, Args::default(), deadline, read_bool)?;
        match (done, deadline) {
            (true, _) => Ok(()),
            (false, Deadline::Now) => Err(Error::WouldBlock),
            (false, d) => Err(d.timeout_error()),
        }
    }
}
