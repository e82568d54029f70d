//! Workers that are threads of this process (for `ThreadPool`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::Result;
use crate::pool::backend::{Backend, Chunk, Ended, Parts, Report, ReportSource, Tasks};
use crate::pool::core::PaceKey;
use crate::pool::jobs::RawChunk;
use crate::process::launch::panic_message;

/// One chunk's work on a thread: runs every item, catching panics.
pub(crate) type ThreadTask = Box<dyn FnOnce() -> RawChunk + Send>;

enum Order {
    Run(Chunk<ThreadTask>),
    Stop,
}

/// Runs once at the start of each worker thread.
pub(crate) type Initializer = Arc<dyn Fn() + Send + Sync>;

pub(crate) struct Threads {
    reports: Sender<Report>,
    init: Option<Initializer>,
    maxtasks: Option<usize>,
}

pub(crate) struct ThreadWorker {
    orders: Sender<Order>,
    handle: Option<JoinHandle<()>>,
}

pub(crate) struct ThreadReports(Receiver<Report>);

impl Threads {
    pub fn new(init: Option<Initializer>, maxtasks: Option<usize>) -> (Threads, ThreadReports) {
        // Notes where tasks panic (still printing as before).
        crate::pool::process_backend::install_quiet_switch();
        let (tx, rx) = mpsc::channel();
        (
            Threads {
                reports: tx,
                init,
                maxtasks,
            },
            ThreadReports(rx),
        )
    }
}

impl ReportSource for ThreadReports {
    fn recv(&mut self, timeout: Duration) -> Option<Report> {
        self.0.recv_timeout(timeout).ok()
    }
    fn try_recv(&mut self) -> Option<Report> {
        self.0.try_recv().ok()
    }
}

fn worker_loop(
    id: u64,
    orders: Receiver<Order>,
    reports: Sender<Report>,
    init: Option<Initializer>,
    maxtasks: Option<usize>,
) {
    if let Some(init) = init
        && let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| init()))
    {
        let message = format!("initializer panicked: {}", panic_message(p.as_ref()));
        let _ = reports.send(Report::InitFailed {
            worker: id,
            message,
        });
        return;
    }
    let mut done = 0usize;
    while let Ok(Order::Run(chunk)) = orders.recv() {
        let started = std::time::Instant::now();
        let results = (chunk.task)();
        let sent = reports.send(Report::Done {
            busy: started.elapsed(),
            worker: id,
            job: chunk.job,
            parts: Parts::One((chunk.first, chunk.len)),
            results,
        });
        done += 1;
        if sent.is_err() || maxtasks.is_some_and(|m| done >= m) {
            return;
        }
    }
}

impl Backend for Threads {
    type Task = ThreadTask;
    type Worker = ThreadWorker;
    type Reports = ThreadReports;
    const STREAMS: bool = false;

    fn spawn(&mut self, id: u64) -> Result<ThreadWorker> {
        let (tx, rx) = mpsc::channel();
        let reports = self.reports.clone();
        let init = self.init.clone();
        let maxtasks = self.maxtasks;
        let handle = std::thread::Builder::new()
            .name(format!("ThreadPoolWorker-{id}"))
            .spawn(move || worker_loop(id, rx, reports, init, maxtasks))?;
        Ok(ThreadWorker {
            orders: tx,
            handle: Some(handle),
        })
    }

    fn send(
        &mut self,
        worker: &ThreadWorker,
        chunks: &mut VecDeque<Chunk<ThreadTask>>,
        _block: bool,
    ) -> bool {
        while let Some(chunk) = chunks.pop_front() {
            if let Err(mpsc::SendError(order)) = worker.orders.send(Order::Run(chunk)) {
                if let Order::Run(chunk) = order {
                    chunks.push_front(chunk);
                }
                return false;
            }
        }
        true
    }

    fn stop(&mut self, worker: &ThreadWorker) {
        let _ = worker.orders.send(Order::Stop);
    }

    fn ended(&mut self, worker: &mut ThreadWorker) -> Option<Ended> {
        if !worker.handle.as_ref().is_some_and(|h| h.is_finished()) {
            return None;
        }
        let clean = worker
            .handle
            .take()
            .map(|h| h.join().is_ok())
            .unwrap_or(true);
        Some(Ended {
            pid: crate::sys::process::getpid(),
            exitcode: Some(if clean { 0 } else { 1 }),
            signal: None,
            init_missing: false,
        })
    }

    fn kill(&mut self, worker: &mut ThreadWorker) {
        // Threads cannot be killed: ask it to stop and let it finish its chunk.
        let _ = worker.orders.send(Order::Stop);
        worker.handle.take();
    }

    fn wake(&self) {
        let _ = self.reports.send(Report::Wake);
    }
}

/// A thread pool's task function: any closure, shared with the worker
/// threads. Its items are moved into the task and its results moved back:
/// nothing is encoded, so they need only be `Send + 'static`.
pub(crate) struct ThreadFn<F>(Arc<F>);

impl<F> ThreadFn<F> {
    pub fn new(f: F) -> ThreadFn<F> {
        ThreadFn(Arc::new(f))
    }
}

impl<F> Clone for ThreadFn<F> {
    fn clone(&self) -> Self {
        ThreadFn(self.0.clone())
    }
}

impl<A, R, F> Tasks<Threads, A, R> for ThreadFn<F>
where
    A: Send + 'static,
    R: Send + 'static,
    F: Fn(A) -> R + Send + Sync + 'static,
{
    fn make_task(&self, _backend: &Threads, items: Vec<A>) -> Result<ThreadTask> {
        let f = self.0.clone();
        Ok(Box::new(move || {
            let results: Vec<Result<R>> = items
                .into_iter()
                .map(|item| {
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(item))).map_err(
                        |p| {
                            let at = crate::pool::wire::take_panic_location();
                            crate::pool::wire::panic_error(
                                &panic_message(p.as_ref()),
                                at.as_deref(),
                            )
                        },
                    )
                })
                .collect();
            RawChunk::Typed(Box::new(results))
        }))
    }

    /// The closure's type: each fn item and closure has its own (only
    /// functions cast to one `fn` pointer type share their pace).
    fn pace_key(&self) -> PaceKey {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        std::any::TypeId::of::<F>().hash(&mut hasher);
        hasher.finish() as PaceKey
    }

    fn results(chunk: RawChunk) -> Vec<Result<R>> {
        chunk.into_moved()
    }
}
