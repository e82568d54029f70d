//! What a pool needs from its workers: processes or threads.

use std::collections::VecDeque;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::pool::core::PaceKey;
use crate::pool::jobs::RawChunk;

/// A chunk of consecutive items of one job.
pub(crate) struct Chunk<T> {
    pub job: u64,
    pub first: usize,
    pub len: usize,
    pub task: T,
    /// Its job is only done when all its items are (a `map`): a worker may
    /// hold its results a little to report them with the next chunks'.
    pub together: bool,
}

/// Chunks of one job, as (first item, item count) each, in the order their
/// results come. One chunk (the common case) needs no allocation.
pub(crate) enum Parts {
    One((usize, usize)),
    Many(Vec<(usize, usize)>),
}

impl Parts {
    pub fn as_slice(&self) -> &[(usize, usize)] {
        match self {
            Parts::One(part) => std::slice::from_ref(part),
            Parts::Many(parts) => parts,
        }
    }
}

/// What a worker reported.
pub(crate) enum Report {
    /// Results of one or more chunks of a job, in item order.
    Done {
        worker: u64,
        job: u64,
        parts: Parts,
        results: RawChunk,
        /// How long the worker spent running these chunks (not waiting).
        busy: Duration,
    },
    /// A worker's initializer failed.
    InitFailed { worker: u64, message: String },
    /// Someone wants the result handler to look at the pool state.
    Wake,
}

/// How a worker ended.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ended {
    pub pid: i32,
    pub exitcode: Option<i32>,
    pub signal: Option<i32>,
    /// A spawned worker that ran the program's `main` instead of its
    /// work: `main` does not call `multiproc::init()` first.
    pub init_missing: bool,
}

impl Ended {
    /// Whether it exited with code 0.
    pub fn clean(&self) -> bool {
        self.exitcode == Some(0)
    }

    /// The error for tasks it held.
    pub fn error(&self) -> Error {
        if self.init_missing {
            return Error::InitMissing { pid: self.pid };
        }
        Error::WorkerDied {
            pid: self.pid,
            exitcode: self.exitcode,
            signal: self.signal,
        }
    }
}

/// Results from all workers; owned by the result-handler thread.
pub(crate) trait ReportSource: Send + 'static {
    /// The next report, waiting at most `timeout`.
    fn recv(&mut self, timeout: Duration) -> Option<Report>;
    /// [`ReportSource::recv`] when no report is expected soon (the pool is
    /// idle): a source that spins before it sleeps sleeps at once.
    fn recv_idle(&mut self, timeout: Duration) -> Option<Report> {
        self.recv(timeout)
    }
    /// The next report if one is already there.
    fn try_recv(&mut self) -> Option<Report>;
}

/// Worker management for one kind of worker.
pub(crate) trait Backend: Send + 'static {
    /// One chunk's work, ready to send.
    type Task: Send + 'static;
    /// One worker.
    type Worker: Send + 'static;
    /// Where reports arrive.
    type Reports: ReportSource;
    /// Whether a task holds an encoded copy of its items. If so, a `map`'s
    /// chunks are made as workers take them (memory stays bounded); if not
    /// (threads: the items are moved into the task), they are all made at
    /// submission, in the caller's thread, sparing the result handler.
    const STREAMS: bool;

    /// Starts worker `id`.
    fn spawn(&mut self, id: u64) -> Result<Self::Worker>;
    /// Sends one or more chunks from the front of `chunks` to one worker (as
    /// many as one message takes); `block` may wait for room. False if the
    /// worker takes no more now; the chunks not sent stay in `chunks`.
    ///
    /// A backend whose worker takes several chunks at once (one message)
    /// adds to `kept` a copy of each chunk sent behind a chunk of another
    /// job: if the worker dies running that one, it never started this
    /// one, which then runs elsewhere (see `State::replace_ended`).
    fn send(
        &mut self,
        worker: &Self::Worker,
        chunks: &mut VecDeque<Chunk<Self::Task>>,
        block: bool,
        kept: &mut Vec<Chunk<Self::Task>>,
    ) -> bool;
    /// Tells a worker to exit once its current work is done.
    fn stop(&mut self, worker: &Self::Worker);
    /// `Some` once the worker has ended (reaping it).
    fn ended(&mut self, worker: &mut Self::Worker) -> Option<Ended>;
    /// Ends the worker now and reaps it.
    fn kill(&mut self, worker: &mut Self::Worker);
    /// Takes back, from a worker that ended, the chunks it was sent but
    /// never took (to run elsewhere: they did not kill it).
    fn untaken(&mut self, _worker: &Self::Worker) -> Vec<Chunk<Self::Task>> {
        Vec::new()
    }
    /// Takes back, from a live worker, the chunks it was sent and has not
    /// taken yet (it is busy with a long one; another worker is idle).
    /// Nothing if this backend cannot take them back.
    fn steal(&mut self, _worker: &Self::Worker) -> Vec<Chunk<Self::Task>> {
        Vec::new()
    }
    /// Wakes the result handler out of `recv`.
    fn wake(&self);
}

/// A task function as one kind of pool runs it: a process pool's is a plain
/// `fn` (found again by address in a worker, items and results encoded), a
/// thread pool's any `Fn` closure (shared with its threads, items and
/// results moved, never encoded).
pub(crate) trait Tasks<B: Backend, A, R>: Clone + Send + 'static {
    /// Prepares a chunk of this function over `items`.
    fn make_task(&self, backend: &B, items: Vec<A>) -> Result<B::Task>;
    /// Which function this is, to learn its chunk times under.
    fn pace_key(&self) -> PaceKey;
    /// A worker's report of a chunk, as one result per item.
    fn results(chunk: RawChunk) -> Vec<Result<R>>;
}
