//! What a front end other than the native transports uses of a server: its
//! queues, by object id. The Python listener ([`crate::py`]) is one; it
//! shares each queue with the Rust clients of the same server.
//!
//! A front end waits first and takes an item only for a client that is
//! still there; if the item then cannot be handed on, it goes back to the
//! front of the queue ([`FrontQueue::put_back`]), so a client that dies
//! while waiting never swallows an item.

use std::sync::Arc;

use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::manager::protocol::{ObjectId, ObjectKind, RemoteError};
use crate::manager::server::ServerState;
use crate::manager::table::{Data, Stored};
use crate::manager::waitable::{Peer, Waitable};

/// A queue of the server's table, held by a front end.
pub(crate) struct FrontQueue {
    state: Arc<ServerState>,
    waitable: Arc<Waitable>,
}

/// An item taken from a [`FrontQueue`]: hand it on, then call
/// [`FrontQueue::delivered`], or give it back with [`FrontQueue::put_back`].
pub(crate) struct Taken(Stored);

impl Taken {
    /// The item's encoded bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0.bytes
    }
}

/// What a wait waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QueueWait {
    /// An item to take.
    NotEmpty,
    /// Room to put one.
    NotFull,
    /// Every item put marked done.
    AllDone,
}

impl FrontQueue {
    /// The queue with id `id` ([`Error::InvalidArgument`] if there is no
    /// such object or it is not a queue).
    pub fn open(state: &Arc<ServerState>, id: ObjectId) -> Result<FrontQueue> {
        let mut table = state.table.lock();
        let object = table
            .get_mut(id)
            .map_err(|_| Error::InvalidArgument(format!("the server has no object {id}")))?;
        match (&object.kind, &object.data) {
            (ObjectKind::Queue, Data::Waitable(w)) => Ok(FrontQueue {
                state: state.clone(),
                waitable: w.clone(),
            }),
            _ => Err(Error::InvalidArgument(format!(
                "object {id} is a {:?}, not a queue",
                object.kind
            ))),
        }
    }

    /// Adds `bytes` (an encoded value that refers to no other object) at
    /// the back, unless the queue is full: then gives them back.
    pub fn put(&self, bytes: Box<[u8]>) -> Result<Result<(), Box<[u8]>>, RemoteError> {
        // Charged to nobody: the per-connection quotas count native clients.
        let item = Stored {
            bytes,
            refs: Box::from(&[][..]),
            owner: 0,
            charge: 0,
        };
        Ok(self.waitable.queue_put(item)?.map_err(|s| s.bytes))
    }

    /// Takes the front item, if any.
    pub fn take(&self) -> Result<Option<Taken>, RemoteError> {
        Ok(self.waitable.queue_get(|_| Ok(()))?.map(Taken))
    }

    /// Puts a taken item back at the front.
    pub fn put_back(&self, item: Taken) -> Result<(), RemoteError> {
        self.waitable.queue_unget(item.0)
    }

    /// A taken item was handed on: the references it held (none for the
    /// values a front end puts; a Rust client's item may hold some) go.
    pub fn delivered(&self, item: Taken) {
        if !item.0.refs.is_empty() {
            self.state
                .table
                .lock()
                .decref_all(item.0.refs.iter().copied());
        }
    }

    /// Waits until `what` holds (`Ok(true)`), `deadline` passes
    /// (`Ok(false)`), or the client goes or the server stops (`Err`).
    /// `gone` is polled every 50 ms while waiting.
    pub fn wait(
        &self,
        what: QueueWait,
        deadline: Deadline,
        connection: u64,
        gone: &dyn Fn() -> bool,
    ) -> Result<bool, RemoteError> {
        let stopping_or_gone = || self.state.stopping() || gone();
        let peer = Peer {
            id: connection,
            gone: &stopping_or_gone,
            pid: None,
        };
        match what {
            QueueWait::NotEmpty => self.waitable.queue_wait(false, deadline, &peer),
            QueueWait::NotFull => self.waitable.queue_wait(true, deadline, &peer),
            QueueWait::AllDone => self.waitable.queue_join(deadline, &peer),
        }
    }

    /// (length, maxsize, unfinished tasks).
    pub fn status(&self) -> Result<(u64, u64, u64), RemoteError> {
        self.waitable.queue_status()
    }

    /// Clients (Rust or Python) asleep in a wait on the queue now.
    pub fn sleepers(&self) -> u32 {
        self.waitable.sleepers()
    }

    /// Marks one task done (`InvalidState` if none is unfinished).
    pub fn task_done(&self) -> Result<(), RemoteError> {
        self.waitable.queue_task_done()
    }
}
