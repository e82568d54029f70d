//! `Pool`'s backend: local worker processes, or (feature `redis`) workers
//! anywhere that take chunks from a Redis stream. One `Pool` type over a
//! private flavour, each method one `match`.

use std::collections::VecDeque;
use std::time::Duration;

use crate::codec::Shareable;
use crate::error::Result;
use crate::pool::backend::{Backend, Chunk, Ended, Report, ReportSource, Tasks};
use crate::pool::core::PaceKey;
use crate::pool::jobs::RawChunk;
use crate::pool::process_backend::{ProcReports, ProcTask, ProcWorker, Processes};
#[cfg(feature = "redis")]
use crate::pool::redis_backend::{RedisPool, RedisReports, RedisSlot};
use crate::pool::wire::TaskFn;

pub(crate) enum PoolBackend {
    Local(Processes),
    #[cfg(feature = "redis")]
    Redis(RedisPool),
}

// One per worker slot, never moved in a hot path: boxing the local worker
// would buy nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum PoolWorker {
    Local(ProcWorker),
    #[cfg(feature = "redis")]
    Redis(RedisSlot),
}

impl PoolWorker {
    /// The worker's pid, for a local one.
    pub fn pid(&self) -> Option<i32> {
        match self {
            PoolWorker::Local(w) => w.pid(),
            #[cfg(feature = "redis")]
            PoolWorker::Redis(_) => None,
        }
    }
}

pub(crate) enum PoolReports {
    Local(ProcReports),
    #[cfg(feature = "redis")]
    Redis(RedisReports),
}

impl ReportSource for PoolReports {
    fn recv(&mut self, timeout: Duration) -> Option<Report> {
        match self {
            PoolReports::Local(r) => r.recv(timeout),
            #[cfg(feature = "redis")]
            PoolReports::Redis(r) => r.recv(timeout),
        }
    }

    fn recv_idle(&mut self, timeout: Duration) -> Option<Report> {
        match self {
            PoolReports::Local(r) => r.recv_idle(timeout),
            #[cfg(feature = "redis")]
            PoolReports::Redis(r) => r.recv(timeout),
        }
    }

    fn try_recv(&mut self) -> Option<Report> {
        match self {
            PoolReports::Local(r) => r.try_recv(),
            #[cfg(feature = "redis")]
            PoolReports::Redis(r) => r.try_recv(),
        }
    }
}

impl Backend for PoolBackend {
    type Task = ProcTask;
    type Worker = PoolWorker;
    type Reports = PoolReports;
    const STREAMS: bool = true;

    fn spawn(&mut self, id: u64) -> Result<PoolWorker> {
        match self {
            PoolBackend::Local(b) => b.spawn(id).map(PoolWorker::Local),
            #[cfg(feature = "redis")]
            PoolBackend::Redis(b) => Ok(PoolWorker::Redis(b.spawn(id))),
        }
    }

    fn send(
        &mut self,
        worker: &PoolWorker,
        chunks: &mut VecDeque<Chunk<ProcTask>>,
        block: bool,
        kept: &mut Vec<Chunk<ProcTask>>,
    ) -> bool {
        match (self, worker) {
            (PoolBackend::Local(b), PoolWorker::Local(w)) => b.send(w, chunks, block, kept),
            #[cfg(feature = "redis")]
            (PoolBackend::Redis(b), PoolWorker::Redis(_)) => b.send(chunks),
            // A pool's workers are all of its flavour.
            #[cfg(feature = "redis")]
            _ => false,
        }
    }

    fn stop(&mut self, worker: &PoolWorker) {
        match (self, worker) {
            (PoolBackend::Local(b), PoolWorker::Local(w)) => b.stop(w),
            // The slot has nothing to finish: it ends at once.
            #[cfg(feature = "redis")]
            (_, PoolWorker::Redis(w)) => w.stop(),
            #[cfg(feature = "redis")]
            _ => {}
        }
    }

    fn ended(&mut self, worker: &mut PoolWorker) -> Option<Ended> {
        match (self, worker) {
            (PoolBackend::Local(b), PoolWorker::Local(w)) => b.ended(w),
            #[cfg(feature = "redis")]
            (_, PoolWorker::Redis(w)) => w.ended(),
            #[cfg(feature = "redis")]
            _ => None,
        }
    }

    fn kill(&mut self, worker: &mut PoolWorker) {
        match (self, worker) {
            (PoolBackend::Local(b), PoolWorker::Local(w)) => b.kill(w),
            #[cfg(feature = "redis")]
            (_, PoolWorker::Redis(w)) => w.stop(),
            #[cfg(feature = "redis")]
            _ => {}
        }
    }

    fn untaken(&mut self, worker: &PoolWorker) -> Vec<Chunk<ProcTask>> {
        match (self, worker) {
            (PoolBackend::Local(b), PoolWorker::Local(w)) => b.untaken(w),
            // A Redis slot's chunks are in a stream, reclaimed there.
            #[cfg(feature = "redis")]
            _ => Vec::new(),
        }
    }

    fn steal(&mut self, worker: &PoolWorker) -> Vec<Chunk<ProcTask>> {
        match (self, worker) {
            (PoolBackend::Local(b), PoolWorker::Local(w)) => b.steal(w),
            #[cfg(feature = "redis")]
            _ => Vec::new(),
        }
    }

    fn wake(&self) {
        match self {
            PoolBackend::Local(b) => b.wake(),
            // The reports source looks at its local reports every slice.
            #[cfg(feature = "redis")]
            PoolBackend::Redis(_) => {}
        }
    }
}

/// A process pool's task function, whichever flavour runs it: found again
/// by address in a worker of this binary, local or on another host.
impl<A, R, F> Tasks<PoolBackend, A, R> for F
where
    A: Shareable,
    R: Shareable,
    F: TaskFn<A, R>,
{
    fn make_task(&self, backend: &PoolBackend, items: Vec<A>) -> Result<ProcTask> {
        match backend {
            PoolBackend::Local(b) => <F as Tasks<Processes, A, R>>::make_task(self, b, items),
            #[cfg(feature = "redis")]
            PoolBackend::Redis(b) => b.make_task::<A, R, F>(*self, items),
        }
    }

    fn pace_key(&self) -> PaceKey {
        <F as Tasks<Processes, A, R>>::pace_key(self)
    }

    fn results(chunk: RawChunk) -> Vec<Result<R>> {
        <F as Tasks<Processes, A, R>>::results(chunk)
    }
}
