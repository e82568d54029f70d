//! The pool API's work, written once for process and thread pools.

use std::marker::PhantomData;
use std::sync::{Arc, Weak};

use crate::error::{Error, Result};
use crate::pool::async_result::{self, AsyncResult, Callbacks};
use crate::pool::backend::{Backend, Chunk, Tasks};
use crate::pool::core::{Core, Feed, Feeder, Submission};
use crate::pool::imap::{IMapFeeder, IMapIterator, InputThread, Intake, Poke, pull};
use crate::pool::jobs::{ApplyJob, IMapJob, IMapShared, MapJob};

/// Python's default chunk size: ceil(len / (4 × workers)).
pub(crate) fn default_chunksize(len: usize, workers: usize) -> usize {
    len.div_ceil(4 * workers.max(1)).max(1)
}

pub(crate) fn check_chunksize(chunksize: Option<usize>) -> Result<()> {
    if chunksize == Some(0) {
        return Err(Error::InvalidArgument(
            "chunksize must be at least 1".into(),
        ));
    }
    Ok(())
}

/// The whole input of a `map`, read in the caller's thread: a panic of the
/// iterator is [`Error::InputPanicked`], and its `size_hint` is not trusted
/// (a lying one must not make us allocate for items that never come).
pub(crate) fn collect_input<A>(items: impl IntoIterator<Item = A>) -> Result<Vec<A>> {
    let mut input = items.into_iter();
    let mut all = Vec::new();
    pull(&mut input, usize::MAX, &mut all)?;
    Ok(all)
}

/// Chunks per worker that an `imap` may run ahead of its reader...
const IMAP_AHEAD_PER_WORKER: usize = 8;

/// ...and items, whatever the chunk size: with small chunks, a window of
/// a few items drains before the next batch comes back, and the reader
/// waits on every batch. The feeder refills half a window at a time, so
/// this many items amortise one refill's hand-overs: `pool/imap_chunksize_1`
/// took 1.2-1.6 µs an item with 64 on a 2-core VM, 1.1-1.4 µs with 256.
const IMAP_AHEAD_ITEMS_PER_WORKER: usize = 256;

pub(crate) fn apply_async<B, A, R, F>(
    core: &Core<B>,
    f: F,
    arg: A,
    callbacks: Callbacks<R>,
) -> Result<AsyncResult<R>>
where
    B: Backend,
    A: Send + 'static,
    R: Send + 'static,
    F: Tasks<B, A, R>,
{
    let (result, promise) = async_result::pending(callbacks, Some(core.handler_thread()));
    core.submit(|id, backend| {
        let task = f.make_task(backend, vec![arg])?;
        Ok(Submission {
            job: Box::new(ApplyJob::new(promise, F::results)),
            pace_key: f.pace_key(),
            chunks: vec![Chunk {
                job: id,
                first: 0,
                len: 1,
                task,
                together: false,
            }],
            feeder: None,
        })
    })?;
    Ok(result)
}

pub(crate) fn map_async<B, A, R, F>(
    core: &Core<B>,
    workers: usize,
    f: F,
    items: Vec<A>,
    chunksize: Option<usize>,
    callbacks: Callbacks<Vec<R>>,
) -> Result<AsyncResult<Vec<R>>>
where
    B: Backend,
    A: Send + 'static,
    R: Send + 'static,
    F: Tasks<B, A, R>,
{
    check_chunksize(chunksize)?;
    let len = items.len();
    let chunksize = chunksize.unwrap_or_else(|| default_chunksize(len, workers));
    let (result, promise) = async_result::pending(callbacks, Some(core.handler_thread()));
    core.submit(|id, backend| {
        let mut feeder = MapFeeder::<B, A, R, F> {
            job: id,
            input: items.into_iter(),
            f,
            chunksize,
            first: 0,
            ready: None,
            _r: PhantomData,
        };
        // The first chunk is encoded now: an input that cannot be encoded at
        // all fails this call, not each of its chunks later.
        feeder.ready = feeder.encode_next(backend).map_err(|(_, _, e)| e)?;
        let pace_key = feeder.f.pace_key();
        let job = Box::new(MapJob::<R>::new(len, promise, F::results));
        if B::STREAMS {
            return Ok(Submission {
                job,
                pace_key,
                chunks: Vec::new(),
                feeder: Some(Box::new(feeder)),
            });
        }
        let mut chunks: Vec<Chunk<B::Task>> = feeder.ready.take().into_iter().collect();
        while let Some(chunk) = feeder.encode_next(backend).map_err(|(_, _, e)| e)? {
            chunks.push(chunk);
        }
        Ok(Submission {
            job,
            pace_key,
            chunks,
            feeder: None,
        })
    })?;
    Ok(result)
}

/// A `map`'s input, encoded a chunk at a time as workers have room for it
/// (the items are in memory already; their encoded copies need not all be).
struct MapFeeder<B: Backend, A, R, F> {
    job: u64,
    input: std::vec::IntoIter<A>,
    f: F,
    chunksize: usize,
    /// The index of the next item to encode.
    first: usize,
    /// A chunk encoded ahead (the first one, at submission).
    ready: Option<Chunk<B::Task>>,
    _r: PhantomData<fn() -> R>,
}

impl<B, A, R, F> MapFeeder<B, A, R, F>
where
    B: Backend,
    A: Send + 'static,
    R: Send + 'static,
    F: Tasks<B, A, R>,
{
    /// Takes the next chunk's items and encodes them: `Ok(None)` at the end.
    /// On an error the chunk's items are used up, as (first, len, error).
    #[allow(clippy::type_complexity)]
    fn encode_next(
        &mut self,
        backend: &B,
    ) -> Result<Option<Chunk<B::Task>>, (usize, usize, Error)> {
        let part: Vec<A> = self.input.by_ref().take(self.chunksize).collect();
        let first = self.first;
        let len = part.len();
        self.first += len;
        if len == 0 {
            return Ok(None);
        }
        let f = &self.f;
        let task =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f.make_task(backend, part)))
                .unwrap_or_else(|payload| {
                    Err(Error::Codec(format!(
                        "encoding an input item panicked: {}",
                        crate::process::panic_text(payload.as_ref())
                    )))
                });
        match task {
            Ok(task) => Ok(Some(Chunk {
                job: self.job,
                first,
                len,
                task,
                together: true,
            })),
            Err(e) => Err((first, len, e)),
        }
    }
}

impl<B, A, R, F> Feeder<B> for MapFeeder<B, A, R, F>
where
    B: Backend,
    A: Send + 'static,
    R: Send + 'static,
    F: Tasks<B, A, R>,
{
    fn next(&mut self, backend: &B) -> Feed<B::Task> {
        if let Some(chunk) = self.ready.take() {
            return Feed::Chunk(chunk);
        }
        match self.encode_next(backend) {
            Ok(Some(chunk)) => Feed::Chunk(chunk),
            Ok(None) => Feed::Done,
            Err((first, len, e)) => {
                let message = e.to_string();
                Feed::Failed {
                    job: self.job,
                    first,
                    len,
                    error: Arc::new(move || Error::codec(&message)),
                }
            }
        }
    }
}

pub(crate) fn imap<B, A, R, F, I>(
    core: &Arc<Core<B>>,
    workers: usize,
    f: F,
    items: I,
    chunksize: Option<usize>,
    ordered: bool,
) -> Result<IMapIterator<R>>
where
    B: Backend,
    A: Send + 'static,
    R: Send + 'static,
    F: Tasks<B, A, R>,
    I: Iterator<Item = A> + Send + 'static,
{
    check_chunksize(chunksize)?;
    let chunksize = chunksize.unwrap_or(1);
    let window = workers.max(1).saturating_mul(
        chunksize
            .saturating_mul(IMAP_AHEAD_PER_WORKER)
            .max(IMAP_AHEAD_ITEMS_PER_WORKER),
    );
    let shared = IMapShared::<R>::new(ordered, window);
    let intake = Intake::<A>::new();
    let (for_job, for_feeder) = (shared.clone(), intake.clone());
    core.submit(move |id, _backend| {
        Ok(Submission {
            job: Box::new(IMapJob::new(for_job.clone(), F::results)),
            pace_key: f.pace_key(),
            chunks: Vec::new(),
            feeder: Some(Box::new(IMapFeeder {
                job: id,
                f,
                intake: for_feeder,
                shared: for_job,
            })),
        })
    })?;
    let poke: Arc<dyn Poke> = core.clone();
    let weak: Weak<dyn Poke> = Arc::downgrade(&poke);
    let input = InputThread {
        input: items,
        chunksize,
        window,
        shared: shared.clone(),
        intake: intake.clone(),
        pool: weak.clone(),
    };
    if let Err(e) = input.start() {
        // No thread, no input: the job ends at once, with the error.
        intake.end(Some(Error::Io(std::io::Error::other(format!(
            "cannot start an imap input thread: {e}"
        )))));
        core.poke();
    }
    Ok(IMapIterator::new(shared, weak))
}
