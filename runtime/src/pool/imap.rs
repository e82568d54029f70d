//! `imap` and `imap_unordered`: lazy input, results as an iterator.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::fork_sync::Mutex;

use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::pool::backend::{Backend, Chunk, Tasks};
use crate::pool::core::{Core, Feed, Feeder};
use crate::pool::jobs::IMapShared;

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

/// Items an imap's input thread pulled, for the pool to encode and send.
pub(crate) struct Intake<A> {
    state: Mutex<IntakeState<A>>,
}

struct IntakeState<A> {
    /// Chunks of items, each with the index of its first item.
    parts: VecDeque<(usize, Vec<A>)>,
    /// The input ended (after the parts above): with this error, if it
    /// ended in one.
    ended: Option<Option<Error>>,
}

impl<A> Intake<A> {
    pub fn new() -> Arc<Self> {
        Arc::new(Intake {
            state: Mutex::new(IntakeState {
                parts: VecDeque::new(),
                ended: None,
            }),
        })
    }

    /// Adds a part; true if there was none (the pool may be idle: poke it).
    fn push(&self, first: usize, items: Vec<A>) -> bool {
        let mut st = self.state.lock();
        st.parts.push_back((first, items));
        st.parts.len() == 1
    }

    pub fn end(&self, failure: Option<Error>) {
        self.state.lock().ended = Some(failure);
    }
}

/// How long an input thread waits for room before it looks whether its
/// pool is still there (a dropped pool abandons the job, which wakes it).
const ROOM_SLICE: Duration = Duration::from_secs(1);

/// An imap's input: the user's iterator, pulled on a thread of its own
/// (`multiproc-imap-input`), never on the pool's threads or under its lock.
/// An input that is slow, or that blocks for ever, delays this job's
/// items only: the pool's other work, its results, timeouts, `close`,
/// `join_timeout` and `terminate` go on. The thread pulls while few
/// enough results wait unread (the job's window) and ends with the input,
/// when the results iterator is dropped, or when the pool is gone (after
/// the iterator's `next` returns, if it was blocked in it).
///
/// A panic of the iterator ends the input there: the items pulled before
/// it still run, and the results iterator yields their results, then the
/// error, then ends. The iterator is dropped on this thread.
pub(crate) struct InputThread<P: ?Sized, I, A, R> {
    pub input: I,
    pub chunksize: usize,
    /// Most items pulled but not yet taken by the results iterator.
    pub window: usize,
    pub shared: Arc<IMapShared<R>>,
    pub intake: Arc<Intake<A>>,
    pub pool: Weak<P>,
}

impl<P, I, A, R> InputThread<P, I, A, R>
where
    P: Poke + ?Sized + 'static,
    I: Iterator<Item = A> + Send + 'static,
    A: Send + 'static,
    R: Send + 'static,
{
    /// Starts the thread.
    pub fn start(self) -> Result<()> {
        std::thread::Builder::new()
            .name("multiproc-imap-input".into())
            .spawn(move || self.run())?;
        Ok(())
    }

    fn run(mut self) {
        let mut first = 0;
        while let Some(room) = self.wait_for_room() {
            let asked = self.chunksize.min(room);
            let mut items = Vec::new();
            let failure = pull(&mut self.input, asked, &mut items).err();
            let len = items.len();
            let ended = failure.is_some() || len < asked;
            self.shared.state.lock().pulled += len;
            let poke = len > 0 && self.intake.push(first, items);
            first += len;
            if ended {
                self.intake.end(failure);
            }
            if (poke || ended)
                && let Some(pool) = self.pool.upgrade()
            {
                pool.poke();
            }
            if ended {
                break;
            }
        }
        let input = self.input;
        if let Err(payload) =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(input)))
        {
            tracing::warn!(
                "dropping an imap input panicked: {}",
                crate::process::panic_text(payload.as_ref())
            );
        }
    }

    /// Waits until the job may take more input: how many items it may
    /// take, or `None` once it takes no more (or its pool is gone).
    fn wait_for_room(&self) -> Option<usize> {
        let mut s = self.shared.state.lock();
        loop {
            if s.total.is_some() || self.pool.strong_count() == 0 {
                return None;
            }
            let unread = s.pulled.saturating_sub(s.next);
            if unread >= self.window {
                s.paused = true;
            } else if !s.paused || unread <= self.window / 2 {
                // Once full, it waits until half the window was read: the
                // input then flows in batches, which the pool sends several
                // chunks a message, not a chunk for each result read.
                s.paused = false;
                return Some(self.window - unread);
            }
            self.shared.room.wait_for(&mut s, ROOM_SLICE);
        }
    }
}

/// The pool's side of an imap input: encodes the items its input thread
/// pulled, a chunk at a time, as workers have room (under the pool's lock;
/// no user code but the items' encoding runs here).
pub(crate) struct IMapFeeder<A, R, F> {
    pub job: u64,
    pub f: F,
    pub intake: Arc<Intake<A>>,
    pub shared: Arc<IMapShared<R>>,
}

impl<B, A, R, F> Feeder<B> for IMapFeeder<A, R, F>
where
    B: Backend,
    A: Send + 'static,
    R: Send + 'static,
    F: Tasks<B, A, R>,
{
    fn next(&mut self, backend: &B) -> Feed<B::Task> {
        if self.shared.state.lock().total.is_some() {
            // Its iterator was dropped, or the job abandoned: no more input.
            return Feed::Done;
        }
        let (first, items) = {
            let mut st = self.intake.state.lock();
            match st.parts.pop_front() {
                Some(part) => part,
                None => {
                    let Some(failure) = st.ended.take() else {
                        return Feed::Later;
                    };
                    drop(st);
                    let mut s = self.shared.state.lock();
                    if s.total.is_none() {
                        s.total = Some(s.submitted);
                        if s.input_error.is_none() {
                            s.input_error = failure;
                        }
                    }
                    drop(s);
                    self.shared.changed.notify_all();
                    return Feed::Done;
                }
            }
        };
        let len = items.len();
        let f = &self.f;
        let task =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f.make_task(backend, items)))
                .unwrap_or_else(|payload| {
                    Err(Error::Codec(format!(
                        "encoding an input item panicked: {}",
                        crate::process::panic_text(payload.as_ref())
                    )))
                });
        let mut s = self.shared.state.lock();
        if s.total.is_some() {
            // The job ended meanwhile (its iterator dropped, or abandoned).
            return Feed::Done;
        }
        match task {
            Ok(task) => {
                s.submitted += len;
                Feed::Chunk(Chunk {
                    job: self.job,
                    first,
                    len,
                    task,
                    // Results that are ready together travel in one report
                    // (the worker holds them at most `REPORT_DELAY`).
                    together: true,
                })
            }
            Err(e) => {
                // The chunk is lost: the input ends before it, with the
                // error (it concerns items before any later panic). Its
                // input thread sees the end and stops.
                s.total = Some(s.submitted);
                s.input_error = Some(e);
                drop(s);
                self.shared.changed.notify_all();
                self.shared.room.notify_all();
                Feed::Done
            }
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
    /// The process whose pool delivers the results.
    owner: i32,
    /// The rest of the run of results taken last (yielded without the lock).
    taken: VecDeque<Result<R>>,
}

impl<R> IMapIterator<R> {
    pub(crate) fn new(shared: Arc<IMapShared<R>>, pool: Weak<dyn Poke>) -> Self {
        IMapIterator {
            shared,
            pool,
            failed: false,
            owner: crate::sys::process::getpid(),
            taken: VecDeque::new(),
        }
    }

    /// The next result, waiting at most `timeout`: `Ok(None)` at the end,
    /// `Err(Timeout)` if none arrived in time.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<Result<R>>> {
        self.next_deadline(Deadline::after(timeout))
    }

    fn next_deadline(&mut self, deadline: Deadline) -> Result<Option<Result<R>>> {
        if let Some(r) = self.taken.pop_front() {
            return Ok(Some(r));
        }
        let mut s = self.shared.state.lock();
        loop {
            let key = s.next;
            if let Some(run) = s.ready.first_entry().filter(|run| *run.key() == key) {
                let mut run = run.remove();
                s.next += run.len();
                // The input is pulled again once half the window has been
                // read, not at every result.
                let refill = s.wants_input();
                drop(s);
                if refill {
                    self.shared.room.notify_one();
                }
                let first = run.pop_front();
                self.taken = run;
                return Ok(first);
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
            if self.owner != crate::sys::process::getpid() {
                return Err(crate::pool::async_result::pool_of_another_process(
                    self.owner,
                ));
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
            .field("yielded", &s.next.saturating_sub(self.taken.len()))
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
        self.shared.room.notify_all();
        if let Some(pool) = self.pool.upgrade() {
            pool.stopped();
        }
    }
}
