//! `imap` and `imap_unordered`: lazy input, results as an iterator.

use std::marker::PhantomData;
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::pool::backend::{Backend, Chunk, Tasks};
use crate::pool::core::{Core, Feed, Feeder};
use crate::pool::jobs::IMapShared;

/// Pulls chunks from the user's iterator while few enough results wait unread.
///
/// The iterator is user code, run on whichever thread refills (the pool's
/// result handler, or a caller of the pool, under the pool's lock). A panic
/// in it, or in encoding an item, is caught here and ends the input: the
/// items pulled before it still run, and the results iterator yields their
/// results, then the error, then ends.
pub(crate) struct IMapFeeder<I, A, R, F> {
    pub job: u64,
    /// The user's iterator, until it ends (then it is dropped).
    pub input: Option<I>,
    pub f: F,
    pub chunksize: usize,
    /// Most items submitted but not yet taken by the iterator.
    pub window: usize,
    pub shared: Arc<IMapShared<R>>,
    pub _a: PhantomData<fn(A)>,
}

/// Pulls up to `n` items from `input` into `items`. A panic of the
/// iterator is `Error::InputPanicked`; the items pulled before it stay.
///
/// Never trusts `size_hint`: a lying one must not make us allocate.
pub(crate) fn pull<I: Iterator>(input: &mut I, n: usize, items: &mut Vec<I::Item>) -> Result<()> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        while items.len() < n {
            match input.next() {
                Some(item) => items.push(item),
                None => break,
            }
        }
    }))
    .map_err(|payload| Error::InputPanicked {
        message: crate::process::panic_text(payload.as_ref()),
    })
}

impl<I, A, R, F> IMapFeeder<I, A, R, F> {
    /// Drops the user's iterator, whose `Drop` must not unwind through the pool either.
    fn end_input(&mut self) {
        if let Some(input) = self.input.take()
            && let Err(payload) =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(input)))
        {
            tracing::warn!(
                "dropping an imap input panicked: {}",
                crate::process::panic_text(payload.as_ref())
            );
        }
    }
}

impl<I, A, R, F> Drop for IMapFeeder<I, A, R, F> {
    fn drop(&mut self) {
        self.end_input();
    }
}

impl<B, I, A, R, F> Feeder<B> for IMapFeeder<I, A, R, F>
where
    B: Backend,
    I: Iterator<Item = A> + Send,
    A: Send + 'static,
    R: Send + 'static,
    F: Tasks<B, A, R>,
{
    fn next(&mut self, backend: &B) -> Feed<B::Task> {
        let first = {
            let mut s = self.shared.state.lock();
            if s.total.is_some() {
                return Feed::Done;
            }
            if s.outstanding() >= self.window {
                s.paused = true;
                return Feed::Later;
            }
            if s.paused && !s.wants_input() {
                return Feed::Later;
            }
            s.paused = false;
            s.submitted
        };
        let Some(input) = self.input.as_mut() else {
            return Feed::Done;
        };
        let mut items = Vec::new();
        let failure = pull(input, self.chunksize, &mut items).err();
        let len = items.len();
        let mut ended = failure.is_some() || len < self.chunksize;
        let task = if len == 0 {
            Ok(None)
        } else {
            let f = &self.f;
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f.make_task(backend, items)))
                .unwrap_or_else(|payload| {
                    Err(Error::Codec(format!(
                        "encoding an input item panicked: {}",
                        crate::process::panic_text(payload.as_ref())
                    )))
                })
                .map(Some)
        };
        let mut s = self.shared.state.lock();
        let task = match task {
            Ok(task) => {
                s.submitted += len;
                task
            }
            Err(e) => {
                // The chunk is lost: the input ends before it, with the
                // error (it concerns items before any later panic).
                ended = true;
                if s.total.is_none() {
                    s.input_error = Some(e);
                }
                None
            }
        };
        if ended && s.total.is_none() {
            s.total = Some(s.submitted);
            if s.input_error.is_none() {
                s.input_error = failure;
            }
        }
        drop(s);
        self.shared.changed.notify_all();
        if ended {
            self.end_input();
        }
        match task {
            Some(task) => Feed::Chunk(Chunk {
                job: self.job,
                first,
                len,
                task,
                // Results that are ready together travel in one report
                // (the worker holds them at most `REPORT_DELAY`).
                together: true,
            }),
            None => Feed::Done,
        }
    }
}

/// Something that can be poked to keep a lazy input flowing.
pub(crate) trait Poke: Send + Sync {
    fn poke(&self);
    fn stopped(&self);
    /// The thread that delivers the pool's results (and runs its callbacks).
    fn handler_thread(&self) -> std::thread::ThreadId;
}

impl<B: Backend> Poke for Core<B> {
    fn poke(&self) {
        Core::poke(self)
    }
    fn handler_thread(&self) -> std::thread::ThreadId {
        Core::handler_thread(self)
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
///
/// An input that panics (or yields an item that cannot be encoded) ends
/// there: the iterator yields the results of the items before it, then
/// [`Error::InputPanicked`] (or the encoding error), then ends; the pool
/// goes on working.
pub struct IMapIterator<R> {
    shared: Arc<IMapShared<R>>,
    pool: Weak<dyn Poke>,
    /// An untimed `next` failed (its pool was dropped, or it was called
    /// from one of its pool's callbacks): the iteration is over.
    failed: bool,
}

impl<R> IMapIterator<R> {
    pub(crate) fn new(shared: Arc<IMapShared<R>>, pool: Weak<dyn Poke>) -> Self {
        IMapIterator {
            shared,
            pool,
            failed: false,
        }
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
                // The input is pulled again once half the window has been
                // read, not at every result.
                let refill = s.wants_input();
                drop(s);
                if refill && let Some(pool) = self.pool.upgrade() {
                    pool.poke();
                }
                return Ok(Some(r));
            }
            if s.total.is_some_and(|t| s.next >= t) {
                // Every result is out: the input's error, if it ended in one, then the end.
                return Ok(s.input_error.take().map(Err));
            }
            if deadline != Deadline::Now
                && self
                    .pool
                    .upgrade()
                    .is_some_and(|p| p.handler_thread() == std::thread::current().id())
            {
                return Err(crate::pool::async_result::waits_for_itself());
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

impl<R> std::fmt::Debug for IMapIterator<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.shared.state.lock();
        f.debug_struct("IMapIterator")
            .field("ordered", &s.ordered)
            .field("yielded", &s.next)
            .field("submitted", &s.submitted)
            .field("ready", &s.ready.len())
            .field("total", &s.total)
            .finish()
    }
}

impl<R> Iterator for IMapIterator<R> {
    type Item = Result<R>;

    /// An error that ends the iteration (not an item's own) comes once,
    /// then the iterator ends: a `for` loop or `collect` stops.
    fn next(&mut self) -> Option<Result<R>> {
        if self.failed {
            return None;
        }
        match self.next_deadline(Deadline::Never) {
            Ok(item) => item,
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
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
