//! The remote flavour of [`Queue`](crate::Queue) and
//! [`JoinableQueue`](crate::JoinableQueue): a FIFO queue a manager server
//! keeps, reached over TCP (Python's `manager.Queue()`).
//!
//! A `get` on an empty queue (or a `put` on a full one) waits in the
//! server, on a connection of its own, and returns as soon as another
//! client puts (or gets); the process's other proxies go on meanwhile.

use std::sync::Arc;

use crate::codec::Shareable;
use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::manager::client::unexpected;
use crate::manager::core::{Args, ProxyCore, TypeTag, read_bool, read_len, read_unit, read_value};
use crate::manager::protocol::Method;

/// A queue a manager server keeps; the item type lives in the handle above.
#[derive(Clone, Debug)]
pub(crate) struct RemoteQueue {
    core: Arc<ProxyCore>,
}

/// The type tag of a remote queue of `T`: the name the proxies of earlier
/// releases used, so servers and clients agree. A joinable queue is the
/// same server object, so both handles share it.
pub(crate) fn remote_queue_tag<T>() -> TypeTag {
    TypeTag::new(format!("QueueProxy<{}>", std::any::type_name::<T>()))
}

impl RemoteQueue {
    pub(crate) fn new(core: ProxyCore) -> RemoteQueue {
        RemoteQueue {
            core: Arc::new(core),
        }
    }

    pub(crate) fn core(&self) -> &ProxyCore {
        &self.core
    }

    /// Adds `item` by `deadline`; [`Error::Full`] when there is no room by then.
    pub(crate) fn put<T: Shareable>(&self, item: &T, deadline: Deadline) -> Result<()> {
        let v = self.core.encode_item(item)?;
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

    /// Removes the front item by `deadline`; [`Error::Empty`] when there is none by then.
    pub(crate) fn get<T: Shareable>(&self, deadline: Deadline) -> Result<T> {
        loop {
            // Taken on the shared connection, which then holds the
            // references of any proxies inside the item.
            let got = self
                .core
                .call(Method::QueueGet, Args::default(), read_value);
            match got {
                Ok(Some(v)) => return Ok(v),
                Ok(None) => return Err(unexpected()),
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
    pub(crate) fn qsize(&self) -> Result<usize> {
        self.core.call(Method::QueueLen, Args::default(), read_len)
    }

    /// The most items the queue holds (0: no limit).
    pub(crate) fn maxsize(&self) -> Result<usize> {
        self.core
            .call(Method::QueueMaxsize, Args::default(), read_len)
    }

    /// Whether a bounded queue is full now.
    pub(crate) fn full(&self) -> Result<bool> {
        let max = self.maxsize()?;
        Ok(max != 0 && self.qsize()? >= max)
    }

    /// Marks one item taken as processed; more calls than items is `InvalidState`.
    pub(crate) fn task_done(&self) -> Result<()> {
        self.core
            .call(Method::QueueTaskDone, Args::default(), read_unit)
    }

    /// The number of items put and not yet marked done.
    pub(crate) fn unfinished_tasks(&self) -> Result<usize> {
        self.core
            .call(Method::QueueUnfinished, Args::default(), read_len)
    }

    /// Waits by `deadline` until every item put is done (`WouldBlock` for a
    /// try, `Timeout` after a wait).
    pub(crate) fn join(&self, deadline: Deadline) -> Result<()> {
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
