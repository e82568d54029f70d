//! Workers that are processes (for `Pool`), fed through shared-memory queues.
//!
//! Each worker has its own order queue, so the pool knows exactly which
//! chunks a worker holds; all workers report through one report queue. Workers
//! are daemon processes: they go when the pool's process goes.

use std::time::Duration;

use rkyv::{Archive, Deserialize, Serialize};

use crate::codec::Shareable;
use crate::error::Result;
use crate::pool::backend::{Backend, Chunk, Ended, Report, ReportSource};
use crate::pool::jobs::RawChunk;
use crate::pool::wire::{self, ChunkEntryFn, OrderMsg, ReportMsg, TaskFn, TaskMsg};
use crate::process::launch::{self, Outcome};
use crate::process::{Process, StartMethod};
use crate::queue::Queue;

/// A task ready to send: the function's offsets and each item encoded.
pub(crate) struct ProcTask {
    entry_offset: i64,
    target_offset: i64,
    args: Vec<u8>,
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
    method: StartMethod,
    reports: Queue<ReportMsg>,
    init: Option<InitSpec>,
    maxtasks: Option<usize>,
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
        method: StartMethod,
        init: Option<InitSpec>,
        maxtasks: Option<usize>,
    ) -> Result<(Processes, ProcReports)> {
        let reports = Queue::new()?;
        Ok((
            Processes {
                method,
                reports: reports.clone(),
                init,
                maxtasks,
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
            outcome,
        } => Report::Done {
            worker,
            job,
            first: first as usize,
            results: RawChunk::Encoded {
                len: count as usize,
                outcome,
            },
        },
        ReportMsg::InitFailed { worker, message } => Report::InitFailed { worker, message },
        ReportMsg::Wake => Report::Wake,
    }
}

impl ReportSource for ProcReports {
    fn recv(&mut self, timeout: Duration) -> Option<Report> {
        self.0.get_timeout(timeout).ok().map(to_report)
    }
    fn try_recv(&mut self) -> Option<Report> {
        self.0.try_get().ok().map(to_report)
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
    std::panic::set_hook(Box::new(|_| {}));
    if let Some(init) = init {
        // SAFETY: the offsets were computed by the pool from an `EntryFn` and
        // an `fn(A)` in this same binary (a spawned worker checked the binary's
        // identity before running this function; a forked one is a copy).
        let entry = unsafe {
            std::mem::transmute::<*const (), launch::EntryFn>(launch::addr_at(init.entry_offset))
        };
        match entry(launch::addr_at(init.target_offset), &init.arg) {
            Outcome::Returned(_) => {}
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
    while let Ok(OrderMsg::Run(task)) = orders.get() {
        // SAFETY: as above: the pool computed these offsets from functions of
        // this same binary.
        let entry = unsafe {
            std::mem::transmute::<*const (), ChunkEntryFn>(launch::addr_at(task.entry_offset))
        };
        let target = launch::addr_at(task.target_offset);
        let outcome = entry(target, &task.args, task.count as usize);
        let sent = reports.put(&ReportMsg::Done {
            worker: id,
            job: task.job,
            first: task.first,
            count: task.count,
            outcome,
        });
        done += 1;
        if sent.is_err() || maxtasks.is_some_and(|m| done >= m) {
            return;
        }
    }
}

impl Backend for Processes {
    type Task = ProcTask;
    type Worker = ProcWorker;
    type Reports = ProcReports;

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
            .start_method(self.method)
            .daemon(true)
            .name(format!("PoolWorker-{id}"));
        process.start()?;
        Ok(ProcWorker { process, orders })
    }

    fn send(
        &mut self,
        worker: &ProcWorker,
        chunk: Chunk<ProcTask>,
        block: bool,
    ) -> std::result::Result<(), Chunk<ProcTask>> {
        let Chunk {
            job,
            first,
            len,
            task,
        } = chunk;
        let msg = OrderMsg::Run(TaskMsg {
            job,
            first: first as u64,
            count: len as u64,
            entry_offset: task.entry_offset,
            target_offset: task.target_offset,
            args: task.args,
        });
        let sent = if block {
            worker.orders.put(&msg)
        } else {
            worker.orders.try_put(&msg)
        };
        match (sent, msg) {
            (Ok(()), _) => Ok(()),
            (Err(_), OrderMsg::Run(t)) => Err(Chunk {
                job,
                first,
                len,
                task: ProcTask {
                    entry_offset: t.entry_offset,
                    target_offset: t.target_offset,
                    args: t.args,
                },
            }),
            (Err(_), OrderMsg::Stop) => Ok(()),
        }
    }

    fn stop(&mut self, worker: &ProcWorker) {
        let _ = worker.orders.put(&OrderMsg::Stop);
    }

    fn ended(&mut self, worker: &mut ProcWorker) -> Option<Ended> {
        let code = worker.process.exitcode()?;
        let pid = worker.process.pid().unwrap_or(0);
        Some(match code {
            c if c < 0 => Ended {
                pid,
                exitcode: None,
                signal: Some(-c),
            },
            c => Ended {
                pid,
                exitcode: Some(c),
                signal: None,
            },
        })
    }

    fn kill(&mut self, worker: &mut ProcWorker) {
        let _ = worker.process.terminate();
        worker.orders.close();
        if worker.process.join_timeout(Duration::from_secs(5)).is_err()
            && worker.process.exitcode().is_none()
        {
            let _ = worker.process.kill();
            let _ = worker.process.join_timeout(Duration::from_secs(5));
        }
    }

    fn wake(&self) {
        let _ = self.reports.try_put(&ReportMsg::Wake);
    }

    fn make_task<A, R, F>(&self, f: F, items: Vec<A>) -> Result<ProcTask>
    where
        A: Shareable,
        R: Shareable,
        F: TaskFn<A, R>,
    {
        let entry: ChunkEntryFn = wire::chunk_entry::<A, R, F>;
        Ok(ProcTask {
            entry_offset: launch::offset_of(entry as *const ()),
            target_offset: launch::offset_of(f.to_ptr()),
            // Read only by the pool's own workers.
            args: crate::handle::for_own_child(|| A::encode_many(&items))?.into_vec(),
        })
    }
}
