//! The pool machinery shared by process and thread pools.
//!
//! Users' threads submit jobs: the job's sink goes into the job table and its
//! chunks into `pending`, and the submitting thread dispatches what it can at
//! once. One result-handler thread receives workers' reports, hands results to
//! the jobs (running callbacks with no pool lock held), supervises workers
//! (the chunks a dead worker took fail with `WorkerDied`, those it never took
//! go to another, and it is replaced), keeps
//! lazy `imap` inputs flowing, and shuts the workers down on close or terminate.
//! It looks at the workers every [`SLICE`] while any holds work; an open pool
//! with nothing to do looks only every [`IDLE_SLICE`], since a sleeping
//! process pays for each wake-up, and is woken as work is dispatched (which
//! first looks for workers that ended meanwhile, so that no chunk goes to one).
//!
//! Each chunk is sent to one worker, which is recorded as holding it until
//! its report arrives: that is how a death is pinned on exactly the tasks it
//! took. The chunks a worker gets in one dispatch go to the backend together,
//! so that it can send them in one message.
//!
//! **Scheduling.** A worker holds at most a *window* of chunks: the one it
//! runs and a few queued behind it, so that it never waits for a round trip
//! through this process between chunks, yet a short chunk never waits long
//! behind a long one while another worker idles. The window is sized from how
//! long recent chunks of the same task function ran (as the workers measure
//! it, waits excluded): as many as make about
//! [`QUEUED_WORK`] of queued work, at least one, at most `Config::cap`. A
//! function not seen yet gets a window of one until its first report says how
//! long it takes. A user's fixed `prefetch` replaces the estimate. The
//! estimate can be wrong (a task much slower than those before it): chunks
//! queued at a worker that has not reported for [`STEAL_AFTER`] (or four
//! chunk times) while another worker is idle are taken back from its queue
//! and go to the idle one (`State::rebalance`); the one it runs stays.
//!
//! **Streaming.** Lazy inputs (`map`'s and `imap`'s) are encoded a chunk at a
//! time, only when a worker has room for one, so the chunks the parent holds
//! stay bounded by the windows, whatever the input's length.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use crate::fork_sync::{Condvar, Mutex};

use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::pool::async_result::pool_of_another_process;
use crate::pool::backend::{Backend, Chunk, Ended, Parts, Report, ReportSource};
use crate::pool::jobs::{ErrorMaker, Job, RawChunk};
use crate::process::launch;

/// How often the result handler looks at workers when no report arrives.
const SLICE: Duration = Duration::from_millis(50);
/// The least time a worker runs one chunk before the chunks queued behind
/// it may go to an idle worker (see [`State::rebalance`]).
const STEAL_AFTER: Duration = Duration::from_millis(20);
/// As [`SLICE`], while the pool is open and no worker holds work.
const IDLE_SLICE: Duration = Duration::from_secs(1);
/// Reports handled per lock round.
const BATCH: usize = 256;
/// How much estimated work may wait queued at a worker behind the chunk it
/// runs (see the module docs): the most a short chunk can wait behind a
/// long one that it did not know about.
pub(crate) const QUEUED_WORK: Duration = Duration::from_millis(2);
/// How long a worker that did not read an order it could have read (see
/// `Slot::stalled_at`) is sent nothing.
const STALL_BACKOFF: Duration = Duration::from_millis(200);
/// The most task functions whose chunk times are remembered.
const PACE_KEYS: usize = 1024;

/// The chunks one dispatch sends a worker, and their keys for `inflight`.
struct Share<T> {
    chunks: VecDeque<Chunk<T>>,
    keys: VecDeque<(u64, usize, usize)>,
}

impl<T> Default for Share<T> {
    fn default() -> Self {
        Share {
            chunks: VecDeque::new(),
            keys: VecDeque::new(),
        }
    }
}

/// Pool settings the core needs.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub processes: usize,
    pub maxtasks: Option<usize>,
    /// The most chunks a worker holds when the window adapts.
    pub cap: usize,
    /// A fixed window chosen by the user (`prefetch`), instead of adapting.
    pub prefetch: Option<usize>,
}

/// How long one chunk of a task function takes, as recently seen.
#[derive(Debug, Clone, Copy)]
struct Pace {
    per_chunk: Duration,
}

/// Which task function a job runs, to look its pace up by.
pub(crate) type PaceKey = usize;

/// What a lazy input source offers next.
pub(crate) enum Feed<T> {
    /// Another chunk.
    Chunk(Chunk<T>),
    /// Nothing now (too many results not yet consumed); ask again later.
    Later,
    /// These items cannot be sent (their encoding failed): they fail with
    /// this error, and the input goes on.
    Failed {
        job: u64,
        first: usize,
        len: usize,
        error: ErrorMaker,
    },
    /// The input is exhausted.
    Done,
}

/// A lazy input (the iterator of an `imap`).
pub(crate) trait Feeder<B: Backend>: Send {
    /// The next chunk of input, if any may go now.
    fn next(&mut self, backend: &B) -> Feed<B::Task>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Open,
    Closed,
    Terminated,
}

struct Slot<W, T> {
    id: u64,
    worker: W,
    /// Chunks this worker holds, in the order it got them: (job, first
    /// item, item count). A worker reports in that order, so the one
    /// reported is almost always at the front.
    inflight: VecDeque<(u64, usize, usize)>,
    /// Copies of the chunks in `inflight` that went behind a chunk of
    /// another job in one message (see `Backend::send`), to run elsewhere
    /// if the worker dies before it starts them.
    kept: Vec<Chunk<T>>,
    chunks_sent: usize,
    stopping: bool,
    /// Set once the worker was seen to end; removed after its last reports are in.
    ended: Option<Ended>,
    /// Since when the worker has run the chunk at the front of `inflight`
    /// at the latest: its last report, or when it was sent work while idle.
    busy_since: Instant,
    /// When a send that could wait for it (it was idle) gave up: it does
    /// not read its orders (stopped, or in a long initializer). It is sent
    /// nothing for [`STALL_BACKOFF`] after that.
    stalled_at: Option<Instant>,
}

impl<W, T> Slot<W, T> {
    /// Forgets the chunk of `job` from item `first` (reported, or taken
    /// back): true if this worker held it.
    fn forget(&mut self, (job, first, _): (u64, usize, usize)) -> bool {
        let Some(at) = self
            .inflight
            .iter()
            .position(|&(j, f, _)| j == job && f == first)
        else {
            return false;
        };
        self.inflight.remove(at);
        self.take_kept((job, first));
        true
    }

    /// The copy kept of the chunk of `job` from item `first`, if any.
    fn take_kept(&mut self, (job, first): (u64, usize)) -> Option<Chunk<T>> {
        let at = self
            .kept
            .iter()
            .position(|c| c.job == job && c.first == first)?;
        Some(self.kept.swap_remove(at))
    }
}

struct State<B: Backend> {
    backend: B,
    config: Config,
    workers: Vec<Slot<B::Worker, B::Task>>,
    jobs: HashMap<u64, Box<dyn Job>>,
    pending: VecDeque<Chunk<B::Task>>,
    feeders: VecDeque<Box<dyn Feeder<B>>>,
    next_job: u64,
    next_worker: u64,
    phase: Phase,
    broken: Option<String>,
    /// Each job's task function.
    job_keys: HashMap<u64, PaceKey>,
    /// Chunk times by task function.
    pace: HashMap<PaceKey, Pace>,
    /// Items failed before they were sent, for the handler to deliver.
    failed: Vec<(u64, Parts, RawChunk)>,
    /// The most chunks held at once (pending or at a worker).
    held_peak: usize,
    /// The result handler sleeps up to [`IDLE_SLICE`]: workers may have
    /// ended unseen since, and it is to be woken once work is sent.
    handler_idle: bool,
}

/// Why unfinished jobs are failed wholesale.
#[derive(Clone)]
enum Abandon {
    Terminated,
    Broken(String),
    /// A spawned worker (this pid) ran `main`: it lacks `multiproc::init()`.
    InitMissing(i32),
}

impl Abandon {
    fn error(&self) -> Error {
        match self {
            // As the docs say (`Pool::terminate`, a dropped pool): the work is closed.
            Abandon::Terminated => Error::Closed,
            Abandon::Broken(m) => Error::Remote(format!("the pool is broken: {m}")),
            Abandon::InitMissing(pid) => Error::InitMissing { pid: *pid },
        }
    }
}

/// Work for jobs that must happen once the pool lock is released, since it
/// runs user callbacks (which may submit more work).
#[derive(Default)]
struct Outbox {
    deliveries: Vec<(u64, Parts, RawChunk)>,
    abandoned: Vec<(Box<dyn Job>, Abandon)>,
}

/// The shared pool core; the public pools wrap it.
pub(crate) struct Core<B: Backend> {
    state: Arc<Mutex<State<B>>>,
    handler: Mutex<Option<JoinHandle<()>>>,
    /// The result handler's thread, which runs callbacks.
    handler_thread: ThreadId,
    /// Set (and signalled) when the result handler has returned or panicked.
    handler_ended: Arc<(Mutex<bool>, Condvar)>,
    /// The process that made the pool: only it has the pool's threads, and
    /// the workers are its children.
    owner: i32,
}

/// Marks the result handler's end, however it ends.
struct EndedOnDrop(Arc<(Mutex<bool>, Condvar)>);

impl Drop for EndedOnDrop {
    fn drop(&mut self) {
        *self.0.0.lock() = true;
        self.0.1.notify_all();
    }
}

impl<B: Backend> Core<B> {
    /// Starts `config.processes` workers and the result handler.
    pub fn start(backend: B, reports: B::Reports, config: Config) -> Result<Self> {
        let mut state = State {
            backend,
            config,
            workers: Vec::new(),
            jobs: HashMap::new(),
            pending: VecDeque::new(),
            feeders: VecDeque::new(),
            next_job: 1,
            next_worker: 1,
            phase: Phase::Open,
            broken: None,
            job_keys: HashMap::new(),
            pace: HashMap::new(),
            failed: Vec::new(),
            held_peak: 0,
            handler_idle: false,
        };
        for _ in 0..state.config.processes {
            if let Err(e) = state.add_worker() {
                for slot in &mut state.workers {
                    state.backend.kill(&mut slot.worker);
                }
                return Err(e);
            }
        }
        let state = Arc::new(Mutex::new(state));
        let for_handler = state.clone();
        let handler_ended = Arc::new((Mutex::new(false), Condvar::new()));
        let ended = EndedOnDrop(handler_ended.clone());
        let handler = std::thread::Builder::new()
            .name("multiproc-pool-results".into())
            .spawn(move || {
                let _ended = ended;
                handle_results(for_handler, reports)
            })?;
        Ok(Core {
            state,
            owner: crate::sys::process::getpid(),
            handler_thread: handler.thread().id(),
            handler: Mutex::new(Some(handler)),
            handler_ended,
        })
    }

    /// Registers a job and its chunks (or lazy input) and dispatches what it can.
    pub fn submit(&self, build: impl FnOnce(u64, &B) -> Result<Submission<B>>) -> Result<()> {
        self.in_its_process()?;
        let mut st = self.state.lock();
        st.check_open()?;
        let id = st.next_job;
        st.next_job += 1;
        let sub = build(id, &st.backend)?;
        if sub.job.complete() {
            return Ok(());
        }
        st.jobs.insert(id, sub.job);
        st.job_keys.insert(id, sub.pace_key);
        st.pending.extend(sub.chunks);
        if let Some(f) = sub.feeder {
            st.feeders.push_back(f);
        }
        st.dispatch();
        Ok(())
    }

    /// `InvalidState` in a process other than the pool's (a forked child
    /// of it), whose copy of the pool's lock another thread may have held
    /// at the fork, and which has none of the pool's threads.
    fn in_its_process(&self) -> Result<()> {
        if self.owner != crate::sys::process::getpid() {
            return Err(pool_of_another_process(self.owner));
        }
        Ok(())
    }

    /// The most chunks this pool has held at once (see `Pool::chunks_held_peak`).
    pub fn held_peak(&self) -> usize {
        if self.in_its_process().is_err() {
            return 0;
        }
        self.state.lock().held_peak
    }

    /// Lets a lazy input continue after its consumer took results.
    pub fn poke(&self) {
        if self.in_its_process().is_err() {
            return;
        }
        let mut st = self.state.lock();
        if st.phase != Phase::Terminated && !st.feeders.is_empty() {
            st.dispatch();
        }
    }

    /// Wakes the result handler to look at the jobs (one may have finished
    /// without a new result: an imap whose iterator was dropped).
    pub fn wake(&self) {
        if self.in_its_process().is_err() {
            return;
        }
        self.state.lock().backend.wake();
    }

    /// Stops accepting work; workers exit once everything submitted is done.
    pub fn close(&self) {
        if self.in_its_process().is_err() {
            return;
        }
        let mut st = self.state.lock();
        if st.phase == Phase::Open {
            st.phase = Phase::Closed;
        }
        st.backend.wake();
    }

    /// Stops the workers now; unfinished tasks fail with `Error::Closed`.
    pub fn terminate(&self) {
        if self.in_its_process().is_err() {
            return;
        }
        {
            let mut st = self.state.lock();
            st.phase = Phase::Terminated;
            st.backend.wake();
        }
        // From a callback the handler ends once it returns.
        let _ = self.wait_handler();
    }

    /// Waits for the workers to exit; the pool must be closed or terminated first.
    pub fn join(&self) -> Result<()> {
        self.check_joinable()?;
        self.wait_handler()
    }

    /// [`Core::join`], waiting at most `timeout` (`Error::Timeout` then).
    pub fn join_timeout(&self, timeout: Duration) -> Result<()> {
        self.check_joinable()?;
        let deadline = Deadline::after(timeout);
        let (ended, signal) = &*self.handler_ended;
        let mut done = ended.lock();
        while !*done {
            match deadline.remaining() {
                None => signal.wait(&mut done),
                Some(left) if left.is_zero() => break,
                Some(left) => {
                    signal.wait_for(&mut done, left);
                }
            }
        }
        if !*done {
            return Err(deadline.timeout_error());
        }
        drop(done);
        self.wait_handler()
    }

    fn check_joinable(&self) -> Result<()> {
        self.in_its_process()?;
        if self.state.lock().phase == Phase::Open {
            return Err(Error::InvalidState(
                "join of a pool that is still open: call close() or terminate() first".into(),
            ));
        }
        self.not_from_a_callback()
    }

    /// `InvalidState` on the result handler's thread (in a callback): a
    /// join there would wait for itself.
    fn not_from_a_callback(&self) -> Result<()> {
        if self.handler_thread == std::thread::current().id() {
            return Err(Error::InvalidState(
                "join from one of the pool's own callbacks: it would wait for itself".into(),
            ));
        }
        Ok(())
    }

    /// The thread that delivers this pool's results and runs its callbacks.
    pub fn handler_thread(&self) -> ThreadId {
        self.handler_thread
    }

    /// Waits for the result handler to end. Not from the handler itself (a
    /// callback that terminates, joins or drops its pool): it ends by itself
    /// once the callback returns, and cannot wait for itself.
    fn wait_handler(&self) -> Result<()> {
        self.not_from_a_callback()?;
        let Some(h) = self.handler.lock().take() else {
            return Ok(());
        };
        if h.join().is_err() {
            tracing::error!("the pool's result handler panicked");
        }
        Ok(())
    }

    /// Runs `f` on each current worker.
    pub fn with_workers<T>(&self, f: impl Fn(&B::Worker) -> T) -> Vec<T> {
        if self.in_its_process().is_err() {
            return Vec::new();
        }
        self.state
            .lock()
            .workers
            .iter()
            .map(|s| f(&s.worker))
            .collect()
    }
}

impl<B: Backend> Drop for Core<B> {
    fn drop(&mut self) {
        if self.in_its_process().is_err() {
            // A forked child's copy: the workers, their queues and the
            // threads are its parent's. Touch nothing (the handler's thread
            // does not exist here): leak the copy.
            std::mem::forget(self.state.clone());
            if let Some(handler) = self.handler.get_mut().take() {
                std::mem::forget(handler);
            }
            return;
        }
        self.terminate();
    }
}

/// A job being submitted: its sink, its ready chunks and an optional lazy input.
pub(crate) struct Submission<B: Backend> {
    pub job: Box<dyn Job>,
    /// The job's task function (its chunk times are learnt under this key).
    pub pace_key: PaceKey,
    pub chunks: Vec<Chunk<B::Task>>,
    pub feeder: Option<Box<dyn Feeder<B>>>,
}

impl<B: Backend> State<B> {
    fn check_open(&self) -> Result<()> {
        if let Some(msg) = &self.broken {
            return Err(Error::Remote(format!("the pool is broken: {msg}")));
        }
        match self.phase {
            Phase::Open => Ok(()),
            Phase::Closed => Err(Error::InvalidState("the pool is closed".into())),
            Phase::Terminated => Err(Error::InvalidState("the pool was terminated".into())),
        }
    }

    fn add_worker(&mut self) -> Result<()> {
        let id = self.next_worker;
        self.next_worker += 1;
        let worker = self.backend.spawn(id)?;
        self.workers.push(Slot {
            id,
            worker,
            inflight: VecDeque::new(),
            kept: Vec::new(),
            chunks_sent: 0,
            stopping: false,
            ended: None,
            busy_since: Instant::now(),
            stalled_at: None,
        });
        Ok(())
    }

    /// How many chunks of `job` a worker may hold (see the module docs).
    fn window(&self, job: u64) -> usize {
        if let Some(n) = self.config.prefetch {
            return n.max(1);
        }
        let pace = self.job_keys.get(&job).and_then(|key| self.pace.get(key));
        match pace {
            None => 1,
            Some(p) => {
                let per = p.per_chunk.as_nanos().max(1);
                let queued = QUEUED_WORK.as_nanos() / per;
                (1 + queued.min(self.config.cap as u128) as usize).min(self.config.cap.max(1))
            }
        }
    }

    /// Whether a worker may take another chunk now, besides `planned` ones.
    fn eligible(&self, slot: &Slot<B::Worker, B::Task>, planned: usize, window: usize) -> bool {
        !slot.stopping
            && slot.ended.is_none()
            && slot.stalled_at.is_none_or(|t| t.elapsed() >= STALL_BACKOFF)
            && slot.inflight.len() + planned < window
            && self
                .config
                .maxtasks
                .is_none_or(|m| slot.chunks_sent + planned < m)
    }

    /// Sends pending chunks (and lazy input) to workers with room.
    fn dispatch(&mut self) {
        if self.handler_idle && (!self.pending.is_empty() || !self.feeders.is_empty()) {
            // The handler has not looked at the workers for up to a second:
            // look now, so that no chunk goes to one that ended, and wake it
            // to watch the workers that take these.
            self.handler_idle = false;
            self.notice_ended();
            self.backend.wake();
        }
        // Deal the chunks out one at a time to the worker holding the fewest,
        // then send each worker its share, a message to each in turn.
        let mut plan: Vec<Share<B::Task>> = Vec::new();
        plan.resize_with(self.workers.len(), Share::default);
        loop {
            if self.pending.is_empty() && !self.refill() {
                break;
            }
            let Some(job) = self.pending.front().map(|c| c.job) else {
                break;
            };
            let window = self.window(job);
            let Some(index) = self
                .workers
                .iter()
                .enumerate()
                .filter(|(i, s)| self.eligible(s, plan[*i].chunks.len(), window))
                .min_by_key(|(i, s)| s.inflight.len() + plan[*i].chunks.len())
                .map(|(i, _)| i)
            else {
                break;
            };
            let Some(chunk) = self.pending.pop_front() else {
                break;
            };
            plan[index]
                .keys
                .push_back((chunk.job, chunk.first, chunk.len));
            plan[index].chunks.push_back(chunk);
        }
        let mut unsent = VecDeque::new();
        while plan.iter().any(|share| !share.chunks.is_empty()) {
            for (slot, share) in self.workers.iter_mut().zip(&mut plan) {
                if share.chunks.is_empty() {
                    continue;
                }
                let before = share.chunks.len();
                let block = slot.inflight.is_empty();
                if block {
                    slot.busy_since = Instant::now();
                }
                let more =
                    self.backend
                        .send(&slot.worker, &mut share.chunks, block, &mut slot.kept);
                let sent = before - share.chunks.len();
                slot.stalled_at = (block && sent == 0).then(Instant::now);
                slot.inflight.extend(share.keys.drain(..sent));
                slot.chunks_sent += sent;
                if !more {
                    unsent.extend(share.chunks.drain(..));
                    share.keys.clear();
                }
            }
        }
        for chunk in unsent.into_iter().rev() {
            self.pending.push_front(chunk);
        }
        let held =
            self.pending.len() + self.workers.iter().map(|s| s.inflight.len()).sum::<usize>();
        self.held_peak = self.held_peak.max(held);
    }

    /// Takes back the chunks queued at a worker that has run one chunk for
    /// long (no report for [`STEAL_AFTER`], or four of its job's chunk
    /// times if longer) while another worker is idle, to go to the idle
    /// one: quick tasks do not wait behind a slow or stuck one (Python's
    /// workers take one task at a time). Called before [`State::dispatch`].
    fn rebalance(&mut self) {
        let usable = |s: &Slot<B::Worker, B::Task>| !s.stopping && s.ended.is_none();
        if !self.pending.is_empty()
            || !self
                .workers
                .iter()
                .any(|s| usable(s) && s.inflight.is_empty())
        {
            return;
        }
        let now = Instant::now();
        for i in 0..self.workers.len() {
            let slot = &self.workers[i];
            if !usable(slot) || slot.inflight.len() < 2 {
                continue;
            }
            let patience = self.patience(slot.inflight[0].0);
            if now.saturating_duration_since(slot.busy_since) < patience {
                continue;
            }
            let stolen = self.backend.steal(&self.workers[i].worker);
            let slot = &mut self.workers[i];
            for chunk in stolen.into_iter().rev() {
                let key = (chunk.job, chunk.first, chunk.len);
                if slot.forget(key) {
                    slot.chunks_sent = slot.chunks_sent.saturating_sub(1);
                }
                self.pending.push_front(chunk);
            }
        }
    }

    /// How long a worker may run one chunk of `job` before the chunks
    /// queued behind it go to an idle worker.
    fn patience(&self, job: u64) -> Duration {
        let per_chunk = self
            .job_keys
            .get(&job)
            .and_then(|key| self.pace.get(key))
            .map_or(Duration::ZERO, |p| p.per_chunk);
        per_chunk.saturating_mul(4).max(STEAL_AFTER)
    }

    /// Pulls one chunk from the lazy inputs; false if none has one now.
    fn refill(&mut self) -> bool {
        for _ in 0..self.feeders.len() {
            let Some(mut feeder) = self.feeders.pop_front() else {
                return false;
            };
            match feeder.next(&self.backend) {
                Feed::Chunk(c) => {
                    self.pending.push_back(c);
                    self.feeders.push_back(feeder);
                    return true;
                }
                Feed::Failed {
                    job,
                    first,
                    len,
                    error,
                } => {
                    self.failed.push((
                        job,
                        Parts::One((first, len)),
                        RawChunk::Failed { len, error },
                    ));
                    self.feeders.push_back(feeder);
                    self.backend.wake();
                }
                Feed::Later => self.feeders.push_back(feeder),
                Feed::Done => {}
            }
        }
        false
    }

    /// Records that the report of a job's chunks arrived, and how long the
    /// worker spent running them (its own measure: the time a chunk waited,
    /// in a queue or for a CPU before it started, is no part of it).
    fn record(&mut self, worker: u64, job: u64, parts: &[(usize, usize)], busy: Duration) {
        let Some(slot) = self.workers.iter_mut().find(|s| s.id == worker) else {
            return;
        };
        slot.busy_since = Instant::now();
        for &(first, len) in parts {
            slot.forget((job, first, len));
        }
        let Some(&key) = self.job_keys.get(&job) else {
            return;
        };
        let sample = busy / u32::try_from(parts.len().max(1)).unwrap_or(u32::MAX);
        if self.pace.len() >= PACE_KEYS && !self.pace.contains_key(&key) {
            self.pace.clear();
        }
        let pace = self.pace.entry(key).or_insert(Pace { per_chunk: sample });
        // A slower chunk counts for half (the next ones should not queue
        // behind its like); faster ones bring the estimate down over a few
        // reports.
        pace.per_chunk = if sample >= pace.per_chunk {
            (pace.per_chunk + sample) / 2
        } else {
            (pace.per_chunk * 3 + sample) / 4
        };
    }

    /// How long the result handler may wait for a report before it looks
    /// at the workers again: [`IDLE_SLICE`] while the pool is open and holds
    /// no work (then marked, for [`State::dispatch`] to wake it), else [`SLICE`].
    fn handler_slice(&mut self) -> Duration {
        self.handler_idle = self.phase == Phase::Open
            && self.jobs.is_empty()
            && self.pending.is_empty()
            && self.feeders.is_empty()
            && self.failed.is_empty()
            && self.workers.iter().all(|s| s.inflight.is_empty());
        if self.handler_idle { IDLE_SLICE } else { SLICE }
    }

    /// Notes workers that ended; true if any did.
    fn notice_ended(&mut self) -> bool {
        let mut any = false;
        for slot in &mut self.workers {
            if slot.ended.is_none() {
                slot.ended = self.backend.ended(&mut slot.worker);
            }
            any |= slot.ended.is_some();
        }
        any
    }

    /// Removes ended workers: fails what they held, replaces them if work remains.
    /// Call only after draining the reports they sent before ending.
    fn replace_ended(&mut self, out: &mut Outbox) {
        let mut i = 0;
        while i < self.workers.len() {
            let Some(ended) = self.workers[i].ended else {
                i += 1;
                continue;
            };
            let mut slot = self.workers.swap_remove(i);
            // Chunks still in its queue never ran there: they go to another
            // worker, ahead of the rest (only what it took fails).
            let untaken = self.backend.untaken(&slot.worker);
            for chunk in untaken.into_iter().rev() {
                if slot.forget((chunk.job, chunk.first, chunk.len)) {
                    self.pending.push_front(chunk);
                }
            }
            // It ran what it took in order, reporting as it went: the oldest
            // chunk it held is the one it was running when it ended, with
            // the next ones of that job (a map's, which it may have been
            // running together). Those fail; the chunks after them never
            // started there, and those with a copy go to another worker.
            let running = slot.inflight.front().map(|k| k.0);
            let started = slot
                .inflight
                .iter()
                .take_while(|k| Some(k.0) == running)
                .count();
            let never_started: Vec<_> = slot.inflight.iter().skip(started).copied().collect();
            for key in never_started.into_iter().rev() {
                if let Some(chunk) = slot.take_kept((key.0, key.1)) {
                    slot.forget(key);
                    self.pending.push_front(chunk);
                }
            }
            if !(ended.clean() && slot.inflight.is_empty()) {
                tracing::warn!(pid = ended.pid, "pool worker died: {}", ended.error());
            }
            for (job, first, len) in slot.inflight {
                let error = Arc::new(move || ended.error());
                out.deliveries.push((
                    job,
                    Parts::One((first, len)),
                    RawChunk::Failed { len, error },
                ));
            }
            if ended.init_missing && self.broken.is_none() {
                // Every replacement would do the same: the program's fault.
                self.broken = Some(ended.error().to_string());
                self.abandon_all(Abandon::InitMissing(ended.pid), out);
            }
            let work_left = !self.jobs.is_empty() || !self.pending.is_empty();
            let replace = self.broken.is_none()
                && (self.phase == Phase::Open || (self.phase == Phase::Closed && work_left));
            if replace && let Err(e) = self.add_worker() {
                tracing::error!("cannot replace a pool worker: {e}");
                self.break_pool(format!("cannot start a replacement worker: {e}"), out);
            }
        }
    }

    /// Marks the pool broken and fails everything it holds.
    fn break_pool(&mut self, message: String, out: &mut Outbox) {
        self.broken = Some(message.clone());
        self.abandon_all(Abandon::Broken(message), out);
    }

    fn abandon_all(&mut self, why: Abandon, out: &mut Outbox) {
        self.pending.clear();
        self.feeders.clear();
        self.failed.clear();
        self.job_keys.clear();
        for slot in &mut self.workers {
            slot.inflight.clear();
            slot.kept.clear();
        }
        out.abandoned
            .extend(self.jobs.drain().map(|(_, job)| (job, why.clone())));
    }

    /// Shuts workers down as the phase asks; true once the handler may exit.
    fn shutdown_step(&mut self, out: &mut Outbox) -> bool {
        match self.phase {
            Phase::Open => false,
            Phase::Terminated => {
                self.abandon_all(Abandon::Terminated, out);
                for slot in &mut self.workers {
                    self.backend.kill(&mut slot.worker);
                }
                self.workers.clear();
                true
            }
            Phase::Closed => {
                let idle =
                    self.jobs.is_empty() && self.pending.is_empty() && self.feeders.is_empty();
                if idle {
                    for slot in &mut self.workers {
                        if !slot.stopping {
                            self.backend.stop(&slot.worker);
                            slot.stopping = true;
                        }
                    }
                }
                idle && self.workers.is_empty()
            }
        }
    }
}

/// Hands results to their jobs without holding the pool lock.
///
/// Each job receiving results is taken out of the table once for all of
/// them (two lock rounds per flush, not per chunk).
fn flush<B: Backend>(state: &Mutex<State<B>>, out: &mut Outbox) {
    if !out.deliveries.is_empty() {
        let mut taken: Vec<(u64, Option<Box<dyn Job>>)> = Vec::new();
        {
            let mut st = state.lock();
            for &(job_id, _, _) in &out.deliveries {
                if taken.last().is_none_or(|(id, _)| *id != job_id)
                    && !taken.iter().any(|(id, _)| *id == job_id)
                {
                    taken.push((job_id, st.jobs.remove(&job_id)));
                }
            }
        }
        let mut at = 0;
        for (job_id, parts, results) in out.deliveries.drain(..) {
            if taken[at].0 != job_id {
                match taken.iter().position(|(id, _)| *id == job_id) {
                    Some(i) => at = i,
                    None => continue,
                }
            }
            if let Some(job) = &mut taken[at].1 {
                deliver_caught(job.as_mut(), parts.as_slice(), results);
            }
        }
        // Finished jobs are dropped after the lock is released (a result's
        // `Drop` is user code: a panic in it is logged, not let through).
        let (finished, unfinished): (Vec<_>, Vec<_>) = taken
            .into_iter()
            .partition(|(_, job)| job.as_ref().is_none_or(|j| j.complete()));
        drop_caught("a finished pool job", finished);
        taken = unfinished;
        let mut st = state.lock();
        let gone = match (&st.broken, st.phase) {
            (Some(m), _) => Some(Abandon::Broken(m.clone())),
            (None, Phase::Terminated) => Some(Abandon::Terminated),
            _ => None,
        };
        for (job_id, job) in taken {
            let Some(job) = job else { continue };
            match &gone {
                Some(why) => out.abandoned.push((job, why.clone())),
                None => {
                    st.jobs.insert(job_id, job);
                }
            }
        }
    }
    for (mut job, why) in out.abandoned.drain(..) {
        job.abandon(&|| why.error());
    }
}

/// Hands `results` to `job`. Decoding and dropping results run user code
/// (a `Deserialize` or a `Drop` of the user's) on this, the pool's result
/// thread: a panic there fails what the job still waits for instead of
/// ending the thread, which every later call of the pool needs.
fn deliver_caught(job: &mut dyn Job, parts: &[(usize, usize)], results: RawChunk) {
    if let Err(message) = launch::caught(|| job.deliver(parts, results)) {
        tracing::error!("delivering a pool result panicked: {message}");
        let why = || Error::Remote(format!("delivering a result panicked: {message}"));
        let _ = launch::caught(|| job.abandon(&why));
    }
}

/// Drops `value`, whose `Drop` may run user code, logging a panic instead
/// of letting it end the pool's thread.
fn drop_caught<T>(what: &str, value: T) {
    if let Err(message) = launch::caught(move || drop(value)) {
        tracing::error!("dropping {what} panicked: {message}");
    }
}

fn record_report<B: Backend>(st: &mut State<B>, report: Report, out: &mut Outbox) {
    match report {
        Report::Done {
            worker,
            job,
            parts,
            results,
            busy,
        } => {
            st.record(worker, job, parts.as_slice(), busy);
            out.deliveries.push((job, parts, results));
        }
        Report::InitFailed { worker, message } => {
            tracing::error!(worker, "pool initializer failed: {message}");
            st.break_pool(format!("the initializer failed: {message}"), out);
        }
        Report::Wake => {}
    }
}

/// The result-handler thread.
fn handle_results<B: Backend>(state: Arc<Mutex<State<B>>>, mut reports: B::Reports) {
    let mut out = Outbox::default();
    let mut batch: Vec<Report> = Vec::with_capacity(BATCH);
    let mut slice = SLICE;
    loop {
        let report = if slice == IDLE_SLICE {
            reports.recv_idle(slice)
        } else {
            reports.recv(slice)
        };
        if let Some(r) = report {
            batch.push(r);
            while batch.len() < BATCH {
                match reports.try_recv() {
                    Some(r) => batch.push(r),
                    None => break,
                }
            }
        }
        let drained = batch.len() < BATCH;
        {
            let mut st = state.lock();
            for report in batch.drain(..) {
                record_report(&mut st, report, &mut out);
            }
        }
        flush(&state, &mut out);
        if drained && state.lock().notice_ended() {
            // Everything an ended worker reported is queued by now: take it
            // before pinning its remaining chunks on its death.
            while let Some(r) = reports.try_recv() {
                record_report(&mut state.lock(), r, &mut out);
            }
            flush(&state, &mut out);
            state.lock().replace_ended(&mut out);
            flush(&state, &mut out);
        }
        let done = {
            let mut st = state.lock();
            // A job can finish without a new result: an imap whose iterator
            // was dropped after every submitted item had arrived.
            st.jobs.retain(|_, job| !job.complete());
            let State { jobs, job_keys, .. } = &mut *st;
            job_keys.retain(|id, _| jobs.contains_key(id));
            st.rebalance();
            st.dispatch();
            let failed = std::mem::take(&mut st.failed);
            out.deliveries.extend(failed);
            let done = st.shutdown_step(&mut out);
            slice = st.handler_slice();
            done
        };
        flush(&state, &mut out);
        if done {
            return;
        }
    }
}
