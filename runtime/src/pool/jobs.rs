//! What the pool does with results as they come back: one sink per submitted job.

use std::any::Any;
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use crate::codec::Shareable;
use crate::error::{Error, Result};
use crate::pool::async_result::Promise;
use crate::pool::wire::ItemOutcome;

/// One item's result as a worker reports it, before it is typed.
pub(crate) enum RawResult {
    /// From a process worker: encoded.
    Encoded(ItemOutcome),
    /// From a thread worker: the value itself.
    Value(Box<dyn Any + Send>),
    /// The pool failed the item (its worker died, the pool was terminated…).
    Failed(Error),
}

impl RawResult {
    /// Decodes or downcasts into the job's result type.
    pub fn into_typed<R: Shareable>(self) -> Result<R> {
        match self {
            RawResult::Encoded(ItemOutcome::Returned(bytes)) => R::decode(&bytes),
            RawResult::Encoded(ItemOutcome::Panicked(msg)) => {
                Err(Error::Remote(format!("task panicked: {msg}")))
            }
            RawResult::Encoded(ItemOutcome::Failed(msg)) => Err(Error::Remote(msg)),
            RawResult::Value(v) => v.downcast::<Result<R>>().map_or_else(
                |_| {
                    Err(Error::Remote(
                        "a thread task returned an unexpected type".into(),
                    ))
                },
                |r| *r,
            ),
            RawResult::Failed(e) => Err(e),
        }
    }
}

/// Receives the results of one job, chunk by chunk.
pub(crate) trait Job: Send {
    /// Results for items `first..first + results.len()`.
    fn deliver(&mut self, first: usize, results: Vec<RawResult>);
    /// Whether every item has a result (the job can be dropped).
    fn complete(&self) -> bool;
    /// Fails every item that has no result yet (pool terminated or broken).
    fn abandon(&mut self, why: &dyn Fn() -> Error);
}

/// `apply_async`: one item.
pub(crate) struct ApplyJob<R> {
    promise: Option<Promise<R>>,
}

impl<R> ApplyJob<R> {
    pub fn new(promise: Promise<R>) -> Self {
        ApplyJob {
            promise: Some(promise),
        }
    }
}

impl<R: Shareable> Job for ApplyJob<R> {
    fn deliver(&mut self, _first: usize, results: Vec<RawResult>) {
        if let (Some(p), Some(r)) = (self.promise.take(), results.into_iter().next()) {
            p.complete(r.into_typed());
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

/// `map_async` / `starmap_async`: all items, in order, or the first error.
pub(crate) struct MapJob<R> {
    results: Vec<Option<Result<R>>>,
    missing: usize,
    promise: Option<Promise<Vec<R>>>,
}

impl<R> MapJob<R> {
    pub fn new(len: usize, promise: Promise<Vec<R>>) -> Self {
        let mut job = MapJob {
            results: (0..len).map(|_| None).collect(),
            missing: len,
            promise: Some(promise),
        };
        job.finish_if_done();
        job
    }

    fn finish_if_done(&mut self) {
        if self.missing > 0 {
            return;
        }
        if let Some(p) = self.promise.take() {
            let all: Result<Vec<R>> = std::mem::take(&mut self.results)
                .into_iter()
                .map(|r| {
                    r.unwrap_or_else(|| Err(Error::InvalidState("a result is missing".into())))
                })
                .collect();
            p.complete(all);
        }
    }
}

impl<R: Shareable> Job for MapJob<R> {
    fn deliver(&mut self, first: usize, results: Vec<RawResult>) {
        for (i, r) in results.into_iter().enumerate() {
            if let Some(slot) = self.results.get_mut(first + i)
                && slot.is_none()
            {
                *slot = Some(r.into_typed());
                self.missing -= 1;
            }
        }
        self.finish_if_done();
    }
    fn complete(&self) -> bool {
        self.promise.is_none()
    }
    fn abandon(&mut self, why: &dyn Fn() -> Error) {
        for slot in &mut self.results {
            if slot.is_none() {
                *slot = Some(Err(why()));
                self.missing -= 1;
            }
        }
        self.finish_if_done();
    }
}

/// Results of an `imap` as the iterator sees them.
pub(crate) struct IMapState<R> {
    pub ordered: bool,
    /// Ordered: results by item index. Unordered: arrival order (key = arrival count).
    pub ready: BTreeMap<usize, Result<R>>,
    pub arrived: usize,
    /// The next index the iterator yields (ordered) or how many it yielded (unordered).
    pub next: usize,
    /// Items handed to workers so far.
    pub submitted: usize,
    /// Total items once the input is exhausted (or the job was abandoned).
    pub total: Option<usize>,
}

/// Shared between an imap job (the pool side) and its iterator.
pub(crate) struct IMapShared<R> {
    pub state: Mutex<IMapState<R>>,
    pub changed: Condvar,
}

impl<R> IMapShared<R> {
    pub fn new(ordered: bool) -> Arc<Self> {
        Arc::new(IMapShared {
            state: Mutex::new(IMapState {
                ordered,
                ready: BTreeMap::new(),
                arrived: 0,
                next: 0,
                submitted: 0,
                total: None,
            }),
            changed: Condvar::new(),
        })
    }

    fn push(&self, index: usize, r: Result<R>) {
        let mut s = self.state.lock();
        let key = if s.ordered { index } else { s.arrived };
        s.arrived += 1;
        s.ready.insert(key, r);
        drop(s);
        self.changed.notify_all();
    }
}

/// `imap` / `imap_unordered`: results flow to an iterator as they come.
pub(crate) struct IMapJob<R> {
    shared: Arc<IMapShared<R>>,
    delivered: usize,
    _r: PhantomData<R>,
}

impl<R> IMapJob<R> {
    pub fn new(shared: Arc<IMapShared<R>>) -> Self {
        IMapJob {
            shared,
            delivered: 0,
            _r: PhantomData,
        }
    }
}

impl<R: Shareable> Job for IMapJob<R> {
    fn deliver(&mut self, first: usize, results: Vec<RawResult>) {
        for (i, r) in results.into_iter().enumerate() {
            self.delivered += 1;
            self.shared.push(first + i, r.into_typed());
        }
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
        if s.ordered {
            let missing: Vec<usize> = (s.next..total)
                .filter(|i| !s.ready.contains_key(i))
                .collect();
            for i in missing {
                s.ready.insert(i, Err(why()));
            }
        } else {
            for _ in self.delivered..total {
                let key = s.arrived;
                s.arrived += 1;
                s.ready.insert(key, Err(why()));
            }
        }
        s.total = Some(total);
        self.delivered = total;
        drop(s);
        self.shared.changed.notify_all();
    }
}
