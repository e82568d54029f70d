//! `imap` and `imap_unordered`: lazy input, results as an iterator.

use std::marker::PhantomData;
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::codec::Shareable;
use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::pool::backend::{Backend, Chunk};
use crate::pool::core::{Core, Feed, Feeder};
use crate::pool::jobs::IMapShared;
use crate::pool::wire::TaskFn;

/// Pulls chunks from the user's iterator while few enough results wait unread.
pub(crate) struct IMapFeeder<I, A, R, F> {
    pub job: u64,
    pub input: I,
    pub f: F,
    pub chunksize: usize,
    /// Most items submitted but not yet taken by the iterator.
    pub window: usize,
    pub shared: Arc<IMapShared<R>>,
    pub _a: PhantomData<fn(A)>,
}

impl<B, I, A, R, F> Feeder<B> for IMapFeeder<I, A, R, F>
where
    B: Backend,
    I: Iterator<Item = A> + Send,
    A: Shareable,
    R: Shareable,
    F: TaskFn<A, R>,
{
    fn next(&mut self, backend: &B) -> Feed<B::Task> {
        let first = {
            let s = self.shared.state.lock();
            if s.total.is_some() {
                return Feed::Done;
            }
            if s.submitted.saturating_sub(s.next) >= self.window {
                return Feed::Later;
            }
            s.submitted
        };
        let items: Vec<A> = self.input.by_ref().take(self.chunksize).collect();
        let len = items.len();
        let task = if len == 0 {
            None
        } else {
            match backend.make_task(self.f, items) {
                Ok(t) => Some(t),
                Err(e) => {
                    // An item that cannot be encoded ends the input with an error.
                    let mut s = self.shared.state.lock();
                    let key = if s.ordered { s.submitted } else { s.arrived };
                    s.arrived += 1;
                    s.ready.insert(key, Err(e));
                    s.submitted += 1;
                    s.total = Some(s.submitted);
                    drop(s);
                    self.shared.changed.notify_all();
                    return Feed::Done;
                }
            }
        };
        let mut s = self.shared.state.lock();
        s.submitted += len;
        if len < self.chunksize {
            s.total = Some(s.submitted);
        }
        drop(s);
        self.shared.changed.notify_all();
        match task {
            Some(task) => Feed::Chunk(Chunk {
                job: self.job,
                first,
                len,
                task,
                together: false,
            }),
            None => Feed::Done,
        }
    }
}

/// Something that can be poked to keep a lazy input flowing.
pub(crate) trait Poke: Send + Sync {
    fn poke(&self);
    fn stopped(&self);
}

impl<B: Backend> Poke for Core<B> {
    fn poke(&self) {
        Core::poke(self)
    }
    fn stopped(&self) {
        Core::wake(self)
    }
}

/// The results of `imap` (in input order) or `imap_unordered` (as they finish).
///
/// Each item is the task's `Result`. The input is consumed lazily, a bounded
/// number of chunks ahead of what this iterator has yielded, so an endless
/// input works. Dropping the iterator early stops feeding the input.
pub struct IMapIterator<R> {
    shared: Arc<IMapShared<R>>,
    pool: Weak<dyn Poke>,
}

impl<R> IMapIterator<R> {
    pub(crate) fn new(shared: Arc<IMapShared<R>>, pool: Weak<dyn Poke>) -> Self {
        IMapIterator { shared, pool }
    }

    /// The next result, waiting at most `timeout`: `Ok(None)` at the end,
    /// `Err(Timeout)` if none arrived in time.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<Result<R>>> {
        self.next_deadline(Deadline::after(timeout))
    }

    fn next_deadline(&mut self, deadline: Deadline) -> Result<Option<Result<R>>> {
        let mut s = self.shared.state.lock();
        loop {
            let key = s.next;
            if let Some(r) = s.ready.remove(&key) {
                s.next += 1;
                drop(s);
                if let Some(pool) = self.pool.upgrade() {
                    pool.poke();
                }
                return Ok(Some(r));
            }
            if s.total.is_some_and(|t| s.next >= t) {
                return Ok(None);
            }
            match deadline.remaining() {
                None => self.shared.changed.wait(&mut s),
                Some(left) if left.is_zero() => return Err(deadline.timeout_error()),
                Some(left) => {
                    self.shared.changed.wait_for(&mut s, left);
                }
            }
            if self.pool.strong_count() == 0 && s.ready.is_empty() {
                return Err(Error::InvalidState("the pool was dropped".into()));
            }
        }
    }
}

impl<R> Iterator for IMapIterator<R> {
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        match self.next_deadline(Deadline::Never) {
            Ok(item) => item,
            Err(e) => Some(Err(e)),
        }
    }
}

impl<R> Drop for IMapIterator<R> {
    fn drop(&mut self) {
        // No one will read more: stop the input where it is, and let the pool
        // see that the job may be complete now.
        {
            let mut s = self.shared.state.lock();
            if s.total.is_none() {
                let submitted = s.submitted;
                s.total = Some(submitted);
            }
        }
        if let Some(pool) = self.pool.upgrade() {
            pool.stopped();
        }
    }
}
