//! What the pool does with results as they come back: one sink per submitted job.

use std::any::Any;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use crate::fork_sync::{Condvar, Mutex};

use crate::codec::Shareable;
use crate::error::{Error, Result};
use crate::pool::async_result::Promise;
use crate::pool::wire::{ChunkOutcome, ItemFailure};

/// Makes the error for each item of a failed chunk.
pub(crate) type ErrorMaker = Arc<dyn Fn() -> Error + Send + Sync>;

/// A chunk's results as a worker reports them, before they are typed.
pub(crate) enum RawChunk {
    /// From a process worker: encoded.
    Encoded { len: usize, outcome: ChunkOutcome },
    /// From a thread worker: a `Vec<Result<R>>`.
    Typed(Box<dyn Any + Send>),
    /// The pool failed every item (the worker died, for example).
    Failed { len: usize, error: ErrorMaker },
}

impl RawChunk {
    /// Decodes (or downcasts) into the job's result type, one per item.
    pub fn into_typed<R: Shareable>(self) -> Vec<Result<R>> {
        match self {
            RawChunk::Encoded { len, outcome } => merge::<R>(len, outcome),
            other => other.into_moved(),
        }
    }

    /// Downcasts a thread task's results (which were never encoded), one
    /// per item.
    pub fn into_moved<R: Send + 'static>(self) -> Vec<Result<R>> {
        match self {
            RawChunk::Typed(any) => match any.downcast::<Vec<Result<R>>>() {
                Ok(v) => *v,
                Err(_) => vec![Err(Error::Remote(
                    "a thread task returned an unexpected type".into(),
                ))],
            },
            RawChunk::Failed { len, error } => (0..len).map(|_| Err(error())).collect(),
            RawChunk::Encoded { len, .. } => (0..len)
                .map(|_| Err(Error::Protocol("encoded results for a thread task".into())))
                .collect(),
        }
    }
}

fn merge<R: Shareable>(len: usize, outcome: ChunkOutcome) -> Vec<Result<R>> {
    let ChunkOutcome { returned, failures } = outcome;
    let returned = if failures.len() < len {
        // A `Deserialize` of the user's may panic: that is this chunk's
        // failure, as a decoding error is, not the pool's result thread's.
        crate::process::launch::caught(|| R::decode_many(&returned)).unwrap_or_else(|message| {
            Err(Error::codec(format_args!(
                "decoding the task's results panicked: {message}"
            )))
        })
    } else {
        Ok(Vec::new())
    };
    let mut returned = match returned {
        Ok(v) => v.into_iter(),
        Err(e) => {
            let msg = e.to_string();
            return (0..len).map(|_| Err(Error::codec(&msg))).collect();
        }
    };
    let mut failures = failures.into_iter().peekable();
    (0..len)
        .map(|i| {
            if failures.peek().is_some_and(|(at, _)| *at as usize == i) {
                return Err(match failures.next() {
                    Some((_, ItemFailure::Panicked { message, location })) => {
                        crate::pool::wire::panic_error(&message, location.as_deref())
                    }
                    Some((_, ItemFailure::Failed(m))) => Error::Remote(m),
                    None => Error::Protocol("a failure vanished".into()),
                });
            }
            returned
                .next()
                .ok_or_else(|| Error::Protocol("a worker sent too few results".into()))
        })
        .collect()
}

/// Turns a worker's report of a chunk into one result per item (decoding
/// a process worker's, downcasting a thread's).
pub(crate) type Typer<R> = fn(RawChunk) -> Vec<Result<R>>;

/// Receives the results of one job, chunk by chunk.
pub(crate) trait Job: Send {
    /// Results for chunks given by (first item, item count), in that order.
    fn deliver(&mut self, parts: &[(usize, usize)], chunk: RawChunk);
    /// Whether every item has a result (the job can be dropped).
    fn complete(&self) -> bool;
    /// Fails every item that has no result yet (pool terminated or broken).
    fn abandon(&mut self, why: &dyn Fn() -> Error);
}

/// `apply_async`: one item.
pub(crate) struct ApplyJob<R> {
    promise: Option<Promise<R>>,
    typed: Typer<R>,
}

impl<R> ApplyJob<R> {
    pub fn new(promise: Promise<R>, typed: Typer<R>) -> Self {
        ApplyJob {
            promise: Some(promise),
            typed,
        }
    }
}

impl<R: Send + 'static> Job for ApplyJob<R> {
    fn deliver(&mut self, _parts: &[(usize, usize)], chunk: RawChunk) {
        if let (Some(p), Some(r)) = (self.promise.take(), (self.typed)(chunk).into_iter().next()) {
            p.complete(r);
        }
    }
    fn complete(&self) -> bool {
        self.promise.is_none()
    }
    fn abandon(&mut self, why: &dyn Fn() -> Error) {
        if let Some(p) = self.promise.take() {
            p.complete(Err(why()));
        }
    }
}

/// `map_async` / `starmap_async`: all items, in order, or the first error
/// (by item index) once every item is done.
///
/// Results are kept as `Option<R>` and only the first error in full, so a
/// long map holds no `Result` per item.
pub(crate) struct MapJob<R> {
    results: Vec<Option<R>>,
    /// The error of the lowest-index item that failed so far.
    first_error: Option<(usize, Error)>,
    missing: usize,
    promise: Option<Promise<Vec<R>>>,
    typed: Typer<R>,
}

impl<R> MapJob<R> {
    pub fn new(len: usize, promise: Promise<Vec<R>>, typed: Typer<R>) -> Self {
        let mut job = MapJob {
            results: (0..len).map(|_| None).collect(),
            first_error: None,
            missing: len,
            promise: Some(promise),
            typed,
        };
        job.finish_if_done();
        job
    }

    fn finish_if_done(&mut self) {
        if self.missing > 0 {
            return;
        }
        if let Some(p) = self.promise.take() {
            let results = std::mem::take(&mut self.results);
            let all = match self.first_error.take() {
                Some((_, e)) => Err(e),
                None => results
                    .into_iter()
                    .map(|r| r.ok_or_else(|| Error::InvalidState("a result is missing".into())))
                    .collect(),
            };
            p.complete(all);
        }
    }

    fn fail(&mut self, index: usize, e: Error) {
        if self.first_error.as_ref().is_none_or(|(at, _)| index < *at) {
            self.first_error = Some((index, e));
        }
    }
}

impl<R: Send + 'static> Job for MapJob<R> {
    fn deliver(&mut self, parts: &[(usize, usize)], chunk: RawChunk) {
        let mut results = (self.typed)(chunk).into_iter();
        for &(first, len) in parts {
            for index in first..first.saturating_add(len) {
                let Some(r) = results.next() else { break };
                let Some(slot) = self.results.get_mut(index) else {
                    continue;
                };
                // Each item is reported once (a dead worker's chunks are
                // failed only after its last reports are in); a duplicate
                // must still not count twice.
                if slot.is_some()
                    || self
                        .first_error
                        .as_ref()
                        .is_some_and(|(at, _)| *at == index)
                {
                    continue;
                }
                self.missing = self.missing.saturating_sub(1);
                match r {
                    Ok(v) => *slot = Some(v),
                    Err(e) => self.fail(index, e),
                }
            }
        }
        self.finish_if_done();
    }
    fn complete(&self) -> bool {
        self.promise.is_none()
    }
    fn abandon(&mut self, why: &dyn Fn() -> Error) {
        if self.missing > 0 {
            let index = self.results.iter().position(Option::is_none).unwrap_or(0);
            self.fail(index, why());
            self.missing = 0;
        }
        self.finish_if_done();
    }
}

/// Results of an `imap` as the iterator sees them.
pub(crate) struct IMapState<R> {
    pub ordered: bool,
    /// Runs of results as they arrived (a report's part: consecutive items),
    /// keyed by their first item's index (ordered) or by the arrival count
    /// of their first result (unordered); never empty. The iterator takes a
    /// whole run under one lock and yields from it without the lock.
    pub ready: BTreeMap<usize, VecDeque<Result<R>>>,
    pub arrived: usize,
    /// The next index the iterator yields (ordered) or how many it yielded (unordered).
    pub next: usize,
    /// Items handed to workers so far.
    pub submitted: usize,
    /// Items its input thread pulled from the input so far.
    pub pulled: usize,
    /// Total items once the input is exhausted (or the job was abandoned).
    pub total: Option<usize>,
    /// Why the input ended early (it panicked, or an item could not be
    /// encoded): yielded once after the results of every item before it.
    pub input_error: Option<Error>,
    /// The most items submitted and not yet yielded.
    pub window: usize,
    /// The window was full, and the input thread waits until half of it has
    /// been yielded: the input then flows in batches, which the pool sends
    /// several chunks a message, not a chunk for each result read.
    pub paused: bool,
}

impl<R> IMapState<R> {
    /// Files the results of the items from `first` on, in order, for the
    /// iterator.
    fn put_run(&mut self, first: usize, run: VecDeque<Result<R>>) {
        if run.is_empty() {
            return;
        }
        let key = if self.ordered { first } else { self.arrived };
        self.arrived += run.len();
        self.ready.insert(key, run);
    }

    /// Whether the result of item `index` has arrived (ordered).
    fn has(&self, index: usize) -> bool {
        self.ready
            .range(..=index)
            .next_back()
            .is_some_and(|(first, run)| index < first.saturating_add(run.len()))
    }

    /// Whether the input thread would take more input now.
    pub fn wants_input(&self) -> bool {
        self.total.is_none() && self.pulled.saturating_sub(self.next) <= self.window / 2
    }
}

/// Shared between an imap job (the pool side) and its iterator.
pub(crate) struct IMapShared<R> {
    pub state: Mutex<IMapState<R>>,
    /// Signalled as results arrive (and the job ends): its iterator waits.
    pub changed: Condvar,
    /// Signalled as the iterator reads (and the job ends): its input thread waits.
    pub room: Condvar,
}

impl<R> IMapShared<R> {
    pub fn new(ordered: bool, window: usize) -> Arc<Self> {
        Arc::new(IMapShared {
            state: Mutex::new(IMapState {
                ordered,
                ready: BTreeMap::new(),
                arrived: 0,
                next: 0,
                submitted: 0,
                total: None,
                input_error: None,
                window: window.max(1),
                paused: false,
                pulled: 0,
            }),
            changed: Condvar::new(),
            room: Condvar::new(),
        })
    }
}

/// `imap` / `imap_unordered`: results flow to an iterator as they come.
pub(crate) struct IMapJob<R> {
    shared: Arc<IMapShared<R>>,
    delivered: usize,
    typed: Typer<R>,
}

impl<R> IMapJob<R> {
    pub fn new(shared: Arc<IMapShared<R>>, typed: Typer<R>) -> Self {
        IMapJob {
            shared,
            delivered: 0,
            typed,
        }
    }
}

impl<R: Send + 'static> Job for IMapJob<R> {
    fn deliver(&mut self, parts: &[(usize, usize)], chunk: RawChunk) {
        let mut results = (self.typed)(chunk).into_iter();
        // The results of a report go in under one lock, with one wake-up
        // for the iterator.
        // Parts that follow one another (chunks of one message, often) make
        // one run.
        let mut runs: Vec<(usize, VecDeque<Result<R>>)> = Vec::with_capacity(parts.len());
        for &(first, len) in parts {
            match runs.last_mut() {
                Some((start, run)) if start.saturating_add(run.len()) == first => {
                    run.extend(results.by_ref().take(len));
                }
                _ => runs.push((first, results.by_ref().take(len).collect())),
            }
        }
        let mut s = self.shared.state.lock();
        for (first, run) in runs {
            self.delivered += run.len();
            s.put_run(first, run);
        }
        drop(s);
        self.shared.changed.notify_all();
    }
    fn complete(&self) -> bool {
        self.shared
            .state
            .lock()
            .total
            .is_some_and(|total| self.delivered >= total)
    }
    fn abandon(&mut self, why: &dyn Fn() -> Error) {
        let mut s = self.shared.state.lock();
        // Everything submitted but not delivered fails; the input stops here.
        let total = s.submitted;
        let failed = if s.ordered {
            let missing: Vec<usize> = (s.next..total).filter(|&i| !s.has(i)).collect();
            for &i in &missing {
                s.put_run(i, VecDeque::from([Err(why())]));
            }
            missing.len()
        } else {
            let failed: VecDeque<_> = (self.delivered..total).map(|_| Err(why())).collect();
            let n = failed.len();
            s.put_run(0, failed);
            n
        };
        // Input left unread with no item failed for it: the iterator must
        // still say it was cut short, not end as if the input had.
        if s.total.is_none() && failed == 0 && s.input_error.is_none() {
            s.input_error = Some(why());
        }
        s.total = Some(total);
        self.delivered = total;
        drop(s);
        self.shared.changed.notify_all();
        self.shared.room.notify_all();
    }
}
