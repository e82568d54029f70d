//! `RedisManager`: manager objects kept in Redis (feature `redis`).

use std::time::Duration;

use multiproc_runtime::redis::{self as store, RedisTarget};
use multiproc_runtime::{
    Barrier, BoundedSemaphore, Condition, ConditionLock, Event, JoinableQueue, Lock, Queue, RLock,
    Result, Semaphore, Shareable,
};

use crate::{DictProxy, ListProxy, NamespaceProxy};

/// Manager objects kept in a Redis server, by name, so that processes on
/// any host that connect to the same server (and prefix) meet at the same
/// objects. It hands out the same types as `Manager` and `BaseManager`
/// (`DictProxy`, `Queue`, `Lock`…), so code written against them runs
/// unchanged.
///
/// Objects are named and persist in Redis until deleted, as Redis users
/// expect: [`RedisManager::delete`] deletes one name,
/// [`RedisManager::clear`] everything under the prefix. Values are stored
/// encoded (the crate's codec); each object records the types of the
/// handle that first opened it, and a handle of other types gets
/// [`Error::TypeMismatch`](multiproc_runtime::Error::TypeMismatch).
///
/// A Redis that is unreachable, refuses the password, or goes away in the
/// middle of a call is [`Error::BackendUnavailable`](multiproc_runtime::Error::BackendUnavailable)
/// for that call; every call has a deadline.
///
/// What each object is in Redis:
///
/// * `dict`: a hash; `update_with`, `setdefault`, `pop`, `popitem` are
///   each one atomic script, so counting from many hosts loses nothing.
/// * `list`: a list; an insert, removal or sort in the middle is a
///   `WATCH`/`MULTI` rewrite of the whole list (retried if another client
///   changed it meanwhile).
/// * `namespace`: a hash of values and one of their types.
/// * `queue` / `joinable_queue`: a list taken with `BLMOVE` into the
///   consumer's in-flight list. A [`JoinableQueue`]'s consumer keeps its
///   item there until `task_done`, so the item of a consumer that dies
///   first is put back for another one (once the dead consumer's lease
///   ends). Queues cannot be closed.
/// * `lock`: a key with a lease, renewed by a background thread while its
///   holder's process lives; a holder that dies (or is cut off from Redis)
///   loses it when the lease ends, and the next acquirer is told
///   ([`Acquired::OwnerDied`](multiproc_runtime::Acquired::OwnerDied)).
/// * `rlock`: the same, holding its owner thread and a recursion count;
///   only the owner thread re-enters or releases it.
/// * `condition`: over its own `rlock` or a given Redis `Lock`/`RLock`.
///   A waiter registers a ticket and releases the lock in one script (so
///   no notify falls in between) and blocks in Redis on its own wake-up
///   list; `notify(n)` wakes the first `n` waiters whose process lives
///   (a ticket has a lease like a lock's), a notified waiter that dies
///   first passes its wake-up on, and a lock holder's death wakes every
///   waiter; the one that takes the lock back is told.
/// * `semaphore`, `event`, `barrier`: counters and flags with wake-up
///   lists; waits block in Redis, never poll. A semaphore has no owner
///   (as the local one). Barrier waiters keep a heartbeat: a party that
///   dies while waiting breaks the barrier for the others once its
///   heartbeat ends (the lease, at least 3 s).
///
/// Handles pass to child processes (spawn and fork) and inside messages,
/// queues and dicts like any handle. The password in the URL travels only
/// to this process's own children, as a remote handle's authkey does: a
/// process that reads a handle from a message must have connected to that
/// server with its password first ([`RedisManager::connect`]).
///
/// ```no_run
/// use multiproc_proxy::RedisManager;
///
/// multiproc::init();
/// let redis = RedisManager::connect("redis://127.0.0.1:6379/0")
///     .unwrap()
///     .prefix("myapp")
///     .unwrap();
/// let hits = redis.dict::<String, u64>("hits").unwrap();
/// hits.update_with("home".into(), 0, |n| n + 1).unwrap();
/// let jobs = redis.queue::<u32>("jobs").unwrap();
/// jobs.put(7).unwrap();
/// assert_eq!(jobs.get().unwrap(), 7);
/// redis.clear().unwrap();
/// ```
#[derive(Clone, Debug)]
pub struct RedisManager {
    target: RedisTarget,
}

impl RedisManager {
    /// Connects to the Redis at `url` (`redis://[:password@]host:port[/db]`)
    /// and checks that it answers (`PING`): an unreachable server or a
    /// wrong password is [`Error::BackendUnavailable`](multiproc_runtime::Error::BackendUnavailable),
    /// a malformed URL [`Error::InvalidArgument`](multiproc_runtime::Error::InvalidArgument).
    pub fn connect(url: &str) -> Result<RedisManager> {
        let target = RedisTarget::new(url)?;
        target.ping()?;
        Ok(RedisManager { target })
    }

    /// The same server with keys under `prefix` (default `multiproc`):
    /// non-empty, without `:` or whitespace.
    pub fn prefix(self, prefix: &str) -> Result<RedisManager> {
        Ok(RedisManager {
            target: self.target.with_prefix(prefix)?,
        })
    }

    /// The same server with locks leased for `lease` (default 10 s, at
    /// least 100 ms): how long after its holder died a lock (or a dead
    /// consumer's queue item) passes on. A holder renews a third of the
    /// way through, so a shorter lease costs more renewals.
    pub fn lease(self, lease: Duration) -> Result<RedisManager> {
        Ok(RedisManager {
            target: self.target.with_lease(lease)?,
        })
    }

    /// The key prefix.
    pub fn key_prefix(&self) -> &str {
        self.target.prefix()
    }

    /// The server's URL, its password hidden.
    pub fn url(&self) -> &str {
        self.target.shown_url()
    }

    /// The dict `name` (a Redis hash), created empty if new.
    pub fn dict<K: Shareable, V: Shareable>(&self, name: &str) -> Result<DictProxy<K, V>> {
        DictProxy::redis(&self.target, name)
    }

    /// The list `name` (a Redis list), created empty if new.
    pub fn list<T: Shareable>(&self, name: &str) -> Result<ListProxy<T>> {
        ListProxy::redis(&self.target, name)
    }

    /// The namespace `name`, created empty if new.
    pub fn namespace(&self, name: &str) -> Result<NamespaceProxy> {
        NamespaceProxy::redis(&self.target, name)
    }

    /// The queue `name`, without a size limit if new.
    pub fn queue<T: Shareable>(&self, name: &str) -> Result<Queue<T>> {
        store::queue(&self.target, name, 0)
    }

    /// The queue `name`, holding at most `maxsize` items if new (a queue
    /// that exists keeps its limit).
    pub fn queue_with_maxsize<T: Shareable>(&self, name: &str, maxsize: usize) -> Result<Queue<T>> {
        store::queue(&self.target, name, maxsize)
    }

    /// The queue `name` as a joinable queue (the same object as
    /// [`RedisManager::queue`] of that name).
    pub fn joinable_queue<T: Shareable>(&self, name: &str) -> Result<JoinableQueue<T>> {
        store::joinable_queue(&self.target, name, 0)
    }

    /// As [`RedisManager::joinable_queue`], holding at most `maxsize` items if new.
    pub fn joinable_queue_with_maxsize<T: Shareable>(
        &self,
        name: &str,
        maxsize: usize,
    ) -> Result<JoinableQueue<T>> {
        store::joinable_queue(&self.target, name, maxsize)
    }

    /// The lock `name`, unlocked if new.
    pub fn lock(&self, name: &str) -> Result<Lock> {
        store::lock(&self.target, name)
    }

    /// The recursive lock `name`, unlocked if new: owned by one thread of
    /// one process, which may enter it again; a release by another is
    /// [`Error::InvalidState`](multiproc_runtime::Error::InvalidState).
    pub fn rlock(&self, name: &str) -> Result<RLock> {
        store::rlock(&self.target, name)
    }

    /// The condition `name` over a recursive lock of its own (Python's
    /// `manager.Condition()`).
    pub fn condition(&self, name: &str) -> Result<Condition> {
        store::condition(&self.target, name)
    }

    /// The condition `name` over `lock`, a [`Lock`] or [`RLock`] kept in
    /// this manager's Redis server under its prefix (Python's
    /// `manager.Condition(lock)`);
    /// [`Error::InvalidArgument`](multiproc_runtime::Error::InvalidArgument)
    /// for any other lock. A condition keeps the lock it was made with:
    /// asking for `name` over another lock (or with none) is
    /// [`Error::TypeMismatch`](multiproc_runtime::Error::TypeMismatch).
    pub fn condition_with(&self, name: &str, lock: impl Into<ConditionLock>) -> Result<Condition> {
        store::condition_with(&self.target, name, lock.into())
    }

    /// The semaphore `name`, at `value` if new.
    pub fn semaphore(&self, name: &str, value: u32) -> Result<Semaphore> {
        store::semaphore(&self.target, name, value)
    }

    /// The bounded semaphore `name`, at (and capped at) `value` if new.
    pub fn bounded_semaphore(&self, name: &str, value: u32) -> Result<BoundedSemaphore> {
        store::bounded_semaphore(&self.target, name, value)
    }

    /// The event `name`, clear if new.
    pub fn event(&self, name: &str) -> Result<Event> {
        store::event(&self.target, name)
    }

    /// The barrier `name`, for `parties` parties if new.
    pub fn barrier(&self, name: &str, parties: usize) -> Result<Barrier> {
        store::barrier(&self.target, name, parties)
    }

    /// Deletes every object named `name` (of any kind) with its records;
    /// the number of Redis keys deleted (0: there was none). Handles still
    /// open see the object afresh (empty, unlocked) if used again.
    pub fn delete(&self, name: &str) -> Result<usize> {
        store::delete_objects(&self.target, name)
    }

    /// Deletes every key under this manager's prefix: all its objects.
    /// The number of keys deleted.
    pub fn clear(&self) -> Result<usize> {
        store::remove_prefix(&self.target)
    }
}
