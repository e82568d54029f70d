//! Workers that are processes (for `Pool`), fed through shared-memory queues.
//!
//! Each worker has its own order queue, so the pool knows exactly which
//! chunks a worker holds; all workers report through one report queue. Workers
//! are daemon processes: they go when the pool's process goes.
//!
//! Small chunks travel several to an order message: a queue hand-over
//! costs more than a trivial task. A worker holds a chunk until its report
//! is sent. It reports each chunk as soon as it is done, except that
//! consecutive chunks of one `map` in an order message run together and are
//! reported in one message with their results encoded together, as long as
//! the run has taken less than [`REPORT_DELAY`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;

use rkyv::{Archive, Deserialize, Serialize};

use crate::codec::Shareable;
use crate::error::{Error, Result};
use crate::pool::backend::{Backend, Chunk, Ended, Parts, Report, ReportSource, Tasks};
use crate::pool::core::PaceKey;
use crate::pool::jobs::RawChunk;
use crate::pool::wire::{self, ChunkEntryFn, OrderMsg, ReportMsg, TaskFn, TaskMsg};
use crate::process::launch::{self, Outcome};
use crate::process::{Context, Process, StartMethod};
use crate::queue::Queue;

/// The most chunks in one order message, unless the pool says otherwise
/// (`PoolBuilder::chunks_per_message`).
pub(crate) const ORDER_CHUNKS: usize = 16;
/// An order message takes more chunks only while their items fit in this.
const ORDER_BYTES: usize = 64 << 10;
/// A worker runs a `map`'s next chunk with the previous ones (holding their
/// results) only while the run has taken less than this.
const REPORT_DELAY: Duration = Duration::from_micros(100);

/// See `worker_main`: the size of the block a worker frees at start.
const HEAP_HINT: usize = 1 << 20;

/// How long a send to an idle worker may wait for it to read `bytes`:
/// 100 ms, and 10 ms more a MiB. A message larger than the order ring
/// streams through it only as the worker reads, and the send holds the
/// pool's lock: a worker that is stopped, or still in its initializer,
/// would hold the whole pool (results, `terminate`, every submit). The
/// send gives up instead (the ring drops what it had written) and the
/// chunks go back to be sent again.
fn send_patience(bytes: usize) -> Duration {
    Duration::from_millis(100 + 10 * (bytes >> 20) as u64)
}

/// A task ready to send: the function's offsets and each item encoded.
#[derive(Clone)]
pub(crate) struct ProcTask {
    pub(crate) entry_offset: i64,
    pub(crate) target_offset: i64,
    pub(crate) args: Vec<u8>,
}

/// The initializer as a worker receives it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone)]
#[rkyv(crate = rkyv)]
pub(crate) struct InitSpec {
    entry_offset: i64,
    target_offset: i64,
    arg: Vec<u8>,
}

impl InitSpec {
    pub fn new<A: Shareable>(f: fn(A), arg: &A) -> Result<InitSpec> {
        let entry: launch::EntryFn = launch::entry::<A, ()>;
        Ok(InitSpec {
            entry_offset: launch::offset_of(entry as *const ()),
            target_offset: launch::offset_of(f as *const ()),
            // Read only by the pool's own workers.
            arg: crate::handle::for_own_child(|| arg.encode())?.into_vec(),
        })
    }
}

/// Everything a worker process starts with.
#[derive(Archive, Serialize, Deserialize)]
#[rkyv(crate = rkyv)]
pub(crate) struct WorkerArgs {
    id: u64,
    orders: Queue<OrderMsg>,
    reports: Queue<ReportMsg>,
    init: Option<InitSpec>,
    maxtasks: Option<u64>,
}

pub(crate) struct Processes {
    /// How workers start: the method, and the executable a spawned one runs.
    context: Context,
    reports: Queue<ReportMsg>,
    init: Option<InitSpec>,
    /// The initializer's argument, which its handles need alive for every
    /// worker started (they open them through this process).
    _init_arg: Option<Box<dyn std::any::Any + Send>>,
    maxtasks: Option<usize>,
    /// The most chunks one order message carries (at least 1).
    chunks_per_message: usize,
}

pub(crate) struct ProcWorker {
    process: Process<()>,
    orders: Queue<OrderMsg>,
}

impl ProcWorker {
    pub fn pid(&self) -> Option<i32> {
        self.process.pid()
    }
}

pub(crate) struct ProcReports(Queue<ReportMsg>);

impl Processes {
    pub fn new(
        context: Context,
        init: Option<(InitSpec, Option<Box<dyn std::any::Any + Send>>)>,
        maxtasks: Option<usize>,
        chunks_per_message: usize,
    ) -> Result<(Processes, ProcReports)> {
        let (init, init_arg) = match init {
            Some((spec, arg)) => (Some(spec), arg),
            None => (None, None),
        };
        if context.start_method() == StartMethod::Fork {
            install_quiet_switch();
        }
        let reports = Queue::new()?;
        Ok((
            Processes {
                context,
                reports: reports.clone(),
                init,
                _init_arg: init_arg,
                maxtasks,
                chunks_per_message: chunks_per_message.max(1),
            },
            ProcReports(reports),
        ))
    }
}

fn to_report(msg: ReportMsg) -> Report {
    match msg {
        ReportMsg::Done {
            worker,
            job,
            first,
            count,
            busy_ns,
            outcome,
        } => Report::Done {
            worker,
            job,
            busy: Duration::from_nanos(busy_ns),
            parts: Parts::One((first as usize, count as usize)),
            results: RawChunk::Encoded {
                len: count as usize,
                outcome,
            },
        },
        ReportMsg::DoneMany {
            worker,
            job,
            parts,
            busy_ns,
            outcome,
        } => {
            let parts: Vec<(usize, usize)> = parts
                .into_iter()
                .map(|(first, count)| (first as usize, count as usize))
                .collect();
            Report::Done {
                worker,
                job,
                busy: Duration::from_nanos(busy_ns),
                results: RawChunk::Encoded {
                    len: parts.iter().fold(0, |sum, &(_, n)| sum.saturating_add(n)),
                    outcome,
                },
                parts: Parts::Many(parts),
            }
        }
        ReportMsg::InitFailed { worker, message } => Report::InitFailed { worker, message },
        ReportMsg::Wake => Report::Wake,
    }
}

impl ReportSource for ProcReports {
    fn recv(&mut self, timeout: Duration) -> Option<Report> {
        self.0.get_timeout(timeout).ok().map(to_report)
    }
    fn recv_idle(&mut self, timeout: Duration) -> Option<Report> {
        self.0.get_timeout_without_spin(timeout).ok().map(to_report)
    }
    fn try_recv(&mut self) -> Option<Report> {
        self.0.try_get().ok().map(to_report)
    }
}

/// Whether this process's panic hook is [`install_quiet_switch`]'s:
/// 0 no, 1 being installed, 2 yes.
static QUIET_SWITCH: AtomicU8 = AtomicU8::new(0);
/// Set in a pool worker: its panics are not printed.
static QUIET: AtomicBool = AtomicBool::new(false);

/// Wraps this process's panic hook (once) in one that notes where each
/// panic happened (for a pool task's error: `wire::note_panic_location`)
/// and stays silent in pool workers, so that a worker forked from this
/// process silences its panics by setting a flag instead of replacing the
/// hook. A `ThreadPool` installs it too, for its tasks' locations.
///
/// A forked child must not replace the hook: that takes std's hook lock,
/// which another thread of the parent may have held (running a panic hook)
/// at the moment of the fork; the child would wait for it forever. Replacing
/// it here, in the pool's process, at most waits for that thread. Panics go
/// to the previous hook as before; a hook the user sets later replaces this
/// one (forked workers then print their tasks' panics, nothing worse).
pub(crate) fn install_quiet_switch() {
    // `set_hook` refuses to run in a panicking thread.
    if std::thread::panicking()
        || QUIET_SWITCH
            .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
    {
        return;
    }
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        wire::note_panic_location(info);
        if !QUIET.load(Ordering::Relaxed) {
            previous(info);
        }
    }));
    QUIET_SWITCH.store(2, Ordering::SeqCst);
}

/// Stops this process printing panic messages (a pool worker's).
pub(crate) fn silence_panics() {
    if QUIET_SWITCH.load(Ordering::SeqCst) == 2 {
        // Forked from a pool's process: the inherited hook listens to the flag.
        QUIET.store(true, Ordering::SeqCst);
    } else {
        // A spawned worker is a fresh process, with no other thread panicking.
        std::panic::set_hook(Box::new(wire::note_panic_location));
    }
}

/// The main loop of a pool worker process.
fn worker_main(args: WorkerArgs) {
    let WorkerArgs {
        id,
        orders,
        reports,
        init,
        maxtasks,
    } = args;
    // A task's panic message travels back to the pool with its result (as
    // Python's pool reports exceptions): do not also print it here.
    silence_panics();
    // A chunk allocates and frees the same large buffers (its items, its
    // results) again and again. Freeing one block above glibc's mmap
    // threshold raises that threshold and the trim threshold with it (its
    // "dynamic mmap threshold"), so those buffers stay in the heap instead of
    // being handed back to the kernel and faulted in anew for every chunk.
    // Elsewhere it is only an allocation.
    drop(std::hint::black_box(Vec::<u8>::with_capacity(HEAP_HINT)));
    if let Some(init) = init {
        // SAFETY: the offsets were computed by the pool from an `EntryFn` and
        // an `fn(A)` in this same binary (a spawned worker checked the binary's
        // identity before running this function; a forked one is a copy).
        let entry = unsafe {
            std::mem::transmute::<*const (), launch::EntryFn>(launch::addr_at(init.entry_offset))
        };
        match entry(launch::addr_at(init.target_offset), &init.arg) {
            // An entry never returns `InitMissing` or `Exited` (only a
            // spawned child, or its exit handler, sends them).
            Outcome::Returned(_) | Outcome::InitMissing | Outcome::Exited => {}
            Outcome::Panicked(m) | Outcome::Failed(m) | Outcome::Mismatch(m) => {
                let _ = reports.put(&ReportMsg::InitFailed {
                    worker: id,
                    message: format!("initializer panicked: {m}"),
                });
                return;
            }
        }
    }
    let mut done = 0u64;
    loop {
        let (one, many);
        let tasks: &[TaskMsg] = match orders.get() {
            Ok(OrderMsg::Run(task)) => {
                one = task;
                std::slice::from_ref(&one)
            }
            Ok(OrderMsg::RunMany(tasks)) => {
                many = tasks;
                &many
            }
            Ok(OrderMsg::Stop) | Err(_) => return,
        };
        let mut rest = tasks;
        while let Some(task) = rest.first() {
            // A run: this chunk and, for a map, the next ones of the same map.
            let same = |t: &&TaskMsg| {
                task.together
                    && t.together
                    && t.job == task.job
                    && t.entry_offset == task.entry_offset
                    && t.target_offset == task.target_offset
            };
            let mut run = 1 + rest[1..].iter().take_while(same).count();
            if let Some(m) = maxtasks {
                run = run.min(m.saturating_sub(done).max(1) as usize);
            }
            // SAFETY: as above: the pool computed these offsets from functions of
            // this same binary.
            let entry = unsafe {
                std::mem::transmute::<*const (), ChunkEntryFn>(launch::addr_at(task.entry_offset))
            };
            let target = launch::addr_at(task.target_offset);
            let started = std::time::Instant::now();
            let (ran, outcome) = if run == 1 {
                entry(target, &[(&task.args, task.count as usize)], REPORT_DELAY)
            } else {
                let parts: Vec<(&[u8], usize)> = rest[..run]
                    .iter()
                    .map(|t| (t.args.as_slice(), t.count as usize))
                    .collect();
                entry(target, &parts, REPORT_DELAY)
            };
            let busy_ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
            let ran = ran.clamp(1, run);
            let report = if ran == 1 {
                ReportMsg::Done {
                    worker: id,
                    job: task.job,
                    first: task.first,
                    count: task.count,
                    busy_ns,
                    outcome,
                }
            } else {
                ReportMsg::DoneMany {
                    worker: id,
                    job: task.job,
                    parts: rest[..ran].iter().map(|t| (t.first, t.count)).collect(),
                    busy_ns,
                    outcome,
                }
            };
            let sent = reports.put(&report);
            drop(report);
            done += ran as u64;
            if sent.is_err() || maxtasks.is_some_and(|m| done >= m) {
                return;
            }
            rest = &rest[ran..];
        }
    }
}

/// A chunk back from an order message that could not be sent.
/// Takes every order queued for `worker` now: the chunks, and whether a
/// stop order was among them.
fn take_orders(worker: &ProcWorker) -> (Vec<Chunk<ProcTask>>, bool) {
    let (mut chunks, mut stop) = (Vec::new(), false);
    while let Ok(order) = worker.orders.try_get() {
        match order {
            OrderMsg::Run(task) => chunks.push(unsent(task)),
            OrderMsg::RunMany(tasks) => chunks.extend(tasks.into_iter().map(unsent)),
            OrderMsg::Stop => stop = true,
        }
    }
    (chunks, stop)
}

fn unsent(t: TaskMsg) -> Chunk<ProcTask> {
    Chunk {
        together: t.together,
        job: t.job,
        first: t.first as usize,
        len: t.count as usize,
        task: ProcTask {
            entry_offset: t.entry_offset,
            target_offset: t.target_offset,
            args: t.args,
        },
    }
}

impl Backend for Processes {
    type Task = ProcTask;
    type Worker = ProcWorker;
    type Reports = ProcReports;
    const STREAMS: bool = true;

    fn spawn(&mut self, id: u64) -> Result<ProcWorker> {
        let orders = Queue::new()?;
        let args = WorkerArgs {
            id,
            orders: orders.clone(),
            reports: self.reports.clone(),
            init: self.init.clone(),
            maxtasks: self.maxtasks.map(|m| m as u64),
        };
        let mut process = Process::new(worker_main, args)
            .context(&self.context)
            .daemon(true)
            .name(format!("PoolWorker-{id}"));
        process.start()?;
        Ok(ProcWorker { process, orders })
    }

    fn send(
        &mut self,
        worker: &ProcWorker,
        chunks: &mut VecDeque<Chunk<ProcTask>>,
        block: bool,
        kept: &mut Vec<Chunk<ProcTask>>,
    ) -> bool {
        let mut tasks = Vec::new();
        let mut bytes = 0;
        // Copies of the chunks behind one of another job (see `Backend::send`),
        // and the one job of the chunks so far, if they have one.
        let mut copies = Vec::new();
        let mut one_job = None;
        while let Some(chunk) = chunks.front()
            && (tasks.is_empty()
                || (tasks.len() < self.chunks_per_message
                    && bytes + chunk.task.args.len() <= ORDER_BYTES))
        {
            let Some(chunk) = chunks.pop_front() else {
                break;
            };
            bytes += chunk.task.args.len();
            if !tasks.is_empty() && one_job != Some(chunk.job) {
                copies.push(Chunk {
                    job: chunk.job,
                    first: chunk.first,
                    len: chunk.len,
                    task: chunk.task.clone(),
                    together: chunk.together,
                });
            }
            one_job = match one_job {
                None if tasks.is_empty() => Some(chunk.job),
                Some(job) if job == chunk.job => Some(job),
                _ => None,
            };
            tasks.push(TaskMsg {
                job: chunk.job,
                first: chunk.first as u64,
                count: chunk.len as u64,
                entry_offset: chunk.task.entry_offset,
                target_offset: chunk.task.target_offset,
                args: chunk.task.args,
                together: chunk.together,
            });
        }
        // One chunk goes alone: a worker then allocates no list for it.
        let msg = if tasks.len() > 1 {
            OrderMsg::RunMany(tasks)
        } else if let Some(task) = tasks.pop() {
            OrderMsg::Run(task)
        } else {
            return true;
        };
        let sent = if block {
            worker.orders.put_timeout(&msg, send_patience(bytes))
        } else {
            worker.orders.try_put(&msg)
        };
        if sent.is_ok() {
            kept.append(&mut copies);
            return true;
        }
        let tasks = match msg {
            OrderMsg::Run(task) => vec![task],
            OrderMsg::RunMany(tasks) => tasks,
            OrderMsg::Stop => Vec::new(),
        };
        for t in tasks.into_iter().rev() {
            chunks.push_front(unsent(t));
        }
        false
    }

    fn stop(&mut self, worker: &ProcWorker) {
        let _ = worker.orders.put(&OrderMsg::Stop);
    }

    fn ended(&mut self, worker: &mut ProcWorker) -> Option<Ended> {
        let code = worker.process.exitcode()?;
        let pid = worker.process.pid().unwrap_or(0);
        // What it reported, if anything (a worker is joined only here).
        let init_missing = matches!(worker.process.try_join(), Err(Error::InitMissing { .. }));
        Some(match code {
            c if c < 0 => Ended {
                pid,
                exitcode: None,
                signal: Some(-c),
                init_missing,
            },
            c => Ended {
                pid,
                exitcode: Some(c),
                signal: None,
                init_missing,
            },
        })
    }

    fn kill(&mut self, worker: &mut ProcWorker) {
        let _ = worker.process.terminate();
        // A stopped worker holds the SIGTERM until it runs again: without
        // this, each would cost the whole grace below before its SIGKILL.
        let _ = worker.process.resume();
        if let Err(e) = worker.orders.close() {
            tracing::warn!("cannot close a worker's order queue: {e}");
        }
        if worker.process.join_timeout(Duration::from_secs(5)).is_err()
            && worker.process.exitcode().is_none()
        {
            let _ = worker.process.kill();
            let _ = worker.process.join_timeout(Duration::from_secs(5));
        }
    }

    fn untaken(&mut self, worker: &ProcWorker) -> Vec<Chunk<ProcTask>> {
        // Only this process reads the queue now (the worker is reaped). A
        // message the worker was taking when it died is lost, and its chunks
        // stay charged to it; what follows is whole.
        take_orders(worker).0
    }

    fn steal(&mut self, worker: &ProcWorker) -> Vec<Chunk<ProcTask>> {
        // The worker reads the queue too: each message goes whole to one
        // of us, so what is taken here never runs there.
        let (chunks, stop) = take_orders(worker);
        if stop && worker.orders.try_put(&OrderMsg::Stop).is_err() {
            tracing::warn!("a pool worker's stop order could not be put back");
        }
        chunks
    }

    fn wake(&self) {
        let _ = self.reports.try_put(&ReportMsg::Wake);
    }
}

/// A process pool's task function: a plain `fn` (or a `Star` wrapper of
/// one), found in a worker by its offset in this binary.
impl<A, R, F> Tasks<Processes, A, R> for F
where
    A: Shareable,
    R: Shareable,
    F: TaskFn<A, R>,
{
    fn make_task(&self, _backend: &Processes, items: Vec<A>) -> Result<ProcTask> {
        let entry: ChunkEntryFn = wire::chunk_entry::<A, R, F>;
        Ok(ProcTask {
            entry_offset: launch::offset_of(entry as *const ()),
            target_offset: launch::offset_of(self.to_ptr()),
            // Read only by the pool's own workers.
            args: crate::handle::for_own_child(|| A::encode_many(&items))?.into_vec(),
        })
    }

    fn pace_key(&self) -> PaceKey {
        self.to_ptr() as PaceKey
    }

    fn results(chunk: RawChunk) -> Vec<Result<R>> {
        chunk.into_typed()
    }
}
