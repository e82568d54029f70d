//! Workers that are threads of this process (for `ThreadPool`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};

use crate::fork_sync::{Condvar, Mutex};
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

/// A worker thread's orders: put by the pool, taken in turn by the worker,
/// and taken back by the pool (the chunks the worker has not started) for
/// an idle worker while this one runs a long chunk.
#[derive(Default)]
struct Orders {
    /// The orders, and whether the queue is closed (the worker ended, or
    /// the pool let it go): a closed queue takes no order.
    queue: Mutex<(VecDeque<Order>, bool)>,
    ready: Condvar,
}

impl Orders {
    /// Queues `order`; gives it back if the queue is closed.
    fn put(&self, order: Order) -> std::result::Result<(), Order> {
        let mut q = self.queue.lock();
        if q.1 {
            return Err(order);
        }
        q.0.push_back(order);
        self.ready.notify_one();
        Ok(())
    }

    /// The next order, waiting for one; `None` once the queue is closed.
    fn take(&self) -> Option<Order> {
        let mut q = self.queue.lock();
        loop {
            if let Some(order) = q.0.pop_front() {
                return Some(order);
            }
            if q.1 {
                return None;
            }
            self.ready.wait(&mut q);
        }
    }

    /// Takes back every chunk not started (a stop order stays).
    fn take_back(&self) -> Vec<Chunk<ThreadTask>> {
        let mut q = self.queue.lock();
        let mut chunks = Vec::new();
        let orders = std::mem::take(&mut q.0);
        for order in orders {
            match order {
                Order::Run(chunk) => chunks.push(chunk),
                stop @ Order::Stop => q.0.push_back(stop),
            }
        }
        chunks
    }

    /// Closes the queue: the worker ends once it has taken what is queued.
    fn close(&self) {
        self.queue.lock().1 = true;
        self.ready.notify_all();
    }
}

/// Closes a worker's orders when its thread ends, however it ends.
struct CloseOnExit(Arc<Orders>);

impl Drop for CloseOnExit {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Runs once at the start of each worker thread.
pub(crate) type Initializer = Arc<dyn Fn() + Send + Sync>;

pub(crate) struct Threads {
    reports: Sender<Report>,
    init: Option<Initializer>,
    maxtasks: Option<usize>,
}

pub(crate) struct ThreadWorker {
    orders: Arc<Orders>,
    handle: Option<JoinHandle<()>>,
}

impl Drop for ThreadWorker {
    fn drop(&mut self) {
        // Let go by the pool: the thread ends after what is queued.
        self.orders.close();
    }
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
    orders: Arc<Orders>,
    reports: Sender<Report>,
    init: Option<Initializer>,
    maxtasks: Option<usize>,
) {
    let _close = CloseOnExit(orders.clone());
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
    while let Some(Order::Run(chunk)) = orders.take() {
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
        let orders = Arc::new(Orders::default());
        let theirs = orders.clone();
        let reports = self.reports.clone();
        let init = self.init.clone();
        let maxtasks = self.maxtasks;
        let handle = std::thread::Builder::new()
            .name(format!("ThreadPoolWorker-{id}"))
            .spawn(move || worker_loop(id, theirs, reports, init, maxtasks))?;
        Ok(ThreadWorker {
            orders,
            handle: Some(handle),
        })
    }

    fn send(
        &mut self,
        worker: &ThreadWorker,
        chunks: &mut VecDeque<Chunk<ThreadTask>>,
        _block: bool,
        // A thread worker takes one chunk at a time.
        _kept: &mut Vec<Chunk<ThreadTask>>,
    ) -> bool {
        while let Some(chunk) = chunks.pop_front() {
            if let Err(order) = worker.orders.put(Order::Run(chunk)) {
                if let Order::Run(chunk) = order {
                    chunks.push_front(chunk);
                }
                return false;
            }
        }
        true
    }

    fn stop(&mut self, worker: &ThreadWorker) {
        let _ = worker.orders.put(Order::Stop);
    }

    fn untaken(&mut self, worker: &ThreadWorker) -> Vec<Chunk<ThreadTask>> {
        worker.orders.take_back()
    }

    fn steal(&mut self, worker: &ThreadWorker) -> Vec<Chunk<ThreadTask>> {
        worker.orders.take_back()
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
        let _ = worker.orders.put(Order::Stop);
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
