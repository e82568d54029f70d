//! The distributed Pool's backend: chunks go on the pool name's Redis
//! stream, workers anywhere run them (see `redis_worker`), and their
//! reports come back on this pool's own results list.
//!
//! To the pool core this backend is one worker slot with a large window:
//! the chunks "at that worker" are the ones in Redis. Which remote worker
//! runs a chunk is Redis's business (the consumer group); a chunk whose
//! worker stopped renewing its claim for a lease is added again (a new
//! attempt) up to `max_retries` times, then fails with
//! [`Error::WorkerDied`] naming the last worker's pid. A report is taken
//! only for the attempt the pool holds, so a late report of an abandoned
//! attempt is dropped, never delivered twice.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::fork_sync::Mutex;
use redis::Value;

use crate::codec::Shareable;
use crate::error::{Error, Result};
use crate::pool::backend::{Chunk, Ended, Parts, Report};
use crate::pool::jobs::RawChunk;
use crate::pool::process_backend::ProcTask;
use crate::pool::redis_wire::{
    self, GROUP, Keys, POOL_BEAT_SCRIPT, POOL_END_SCRIPT, POOL_LEASE, TaskBody, WORKERS_SCRIPT,
    WorkerReport,
};
use crate::pool::redis_worker::{bytes, text};
use crate::pool::wire::{self, ChunkEntryFn, TaskFn};
use crate::process::launch;
use crate::redis::RedisTarget;
use crate::redis::conn::RedisConn;

/// How often the pool renews its lease.
const BEAT_EVERY: Duration = Duration::from_secs(5);
/// The most reports taken from the results list in one round trip.
const REPORT_BATCH: usize = 256;
/// The most chunks added to the stream in one round trip.
const SEND_BATCH: usize = 256;
/// The most chunks packed into one stream entry. Each entry costs Redis
/// several microseconds (add, read, acknowledge, delete), whatever it
/// holds: small chunks travel packed, so small tasks are not bound by it.
pub(crate) const PACK_MAX: usize = 16;
/// The work one entry may pack, by the chunks' measured run time: a
/// worker that takes an entry holds no more than about this much that
/// another worker could have run. Until a chunk has run, one a entry.
const PACK_WORK: Duration = Duration::from_millis(2);

/// What a distributed pool was built with.
#[derive(Debug, Clone)]
pub(crate) struct RedisSettings {
    pub url: String,
    pub name: String,
    pub max_retries: u32,
    pub lease: Duration,
}

/// A worker of a distributed pool, as `pool.workers()` lists it from its
/// heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerInfo {
    /// The host it runs on.
    pub host: String,
    /// Its process id on that host.
    pub pid: i32,
    /// The chunks it has finished (a chunk holds up to `chunksize` tasks),
    /// as of its last heartbeat (every 500 ms): not a count of
    /// single tasks.
    pub tasks_done: u64,
}

/// A chunk in Redis, as this pool holds it.
struct Held {
    len: usize,
    attempt: u32,
    /// Its stream entry, once added.
    entry: Option<String>,
    /// The entry's body, to add it again for another attempt.
    body: Arc<Vec<u8>>,
}

#[derive(Default)]
struct Table {
    chunks: HashMap<(u64, usize), Held>,
    /// The chunks each stream entry holds (and has not reported).
    by_entry: HashMap<String, Vec<(u64, usize)>>,
}

/// What the backend (submitting) and the reports source (receiving) share.
pub(crate) struct RedisShared {
    target: RedisTarget,
    keys: Keys,
    /// This pool's id: its results list and `alive` key carry it.
    id: String,
    results: String,
    alive: String,
    build: &'static str,
    max_retries: u32,
    lease: Duration,
    table: Mutex<Table>,
    /// Reports made here (a failed send, a reclaim that gave up).
    local: Mutex<VecDeque<Report>>,
    /// The core's id of the one worker slot.
    slot: AtomicU64,
    /// A moving average of a chunk's run time (ns) on a worker; 0 until
    /// one has run. How many chunks an entry packs follows it.
    chunk_busy_ns: AtomicU64,
    /// For `workers()`.
    side: Mutex<Option<RedisConn>>,
}

pub(crate) struct RedisPool {
    shared: Arc<RedisShared>,
    conn: Option<RedisConn>,
}

/// The one worker slot.
pub(crate) struct RedisSlot {
    stopped: std::sync::atomic::AtomicBool,
}

pub(crate) struct RedisReports {
    shared: Arc<RedisShared>,
    conn: Option<RedisConn>,
    buffer: VecDeque<Report>,
    last_beat: Instant,
    last_reclaim: Instant,
}

impl RedisPool {
    /// Connects, creates the stream and group if needed and takes a lease.
    pub fn new(settings: &RedisSettings) -> Result<(RedisPool, RedisReports, Arc<RedisShared>)> {
        let target = RedisTarget::new(&settings.url)?;
        let keys = Keys::new(&target, &settings.name)?;
        let mut r = [0u8; 8];
        getrandom::fill(&mut r).map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?;
        let id = format!("{:016x}", u64::from_le_bytes(r));
        let shared = Arc::new(RedisShared {
            results: keys.results(&id),
            alive: keys.alive(&id),
            target,
            keys,
            id,
            build: redis_wire::build_id(),
            max_retries: settings.max_retries,
            lease: settings.lease,
            table: Mutex::new(Table::default()),
            local: Mutex::new(VecDeque::new()),
            slot: AtomicU64::new(0),
            chunk_busy_ns: AtomicU64::new(0),
            side: Mutex::new(None),
        });
        let mut conn = shared.target.connect()?;
        shared.beat(&mut conn)?;
        let reports = RedisReports {
            shared: shared.clone(),
            conn: Some(shared.target.connect()?),
            buffer: VecDeque::new(),
            last_beat: Instant::now(),
            last_reclaim: Instant::now(),
        };
        Ok((
            RedisPool {
                shared: shared.clone(),
                conn: Some(conn),
            },
            reports,
            shared,
        ))
    }

    pub fn spawn(&mut self, id: u64) -> RedisSlot {
        self.shared.slot.store(id, Ordering::SeqCst);
        RedisSlot {
            stopped: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Adds chunks to the stream, several per round trip, packed several
    /// to an entry when they are known to be small (see [`PACK_WORK`]). A
    /// chunk that cannot be added fails with the connection's error.
    pub fn send(&mut self, chunks: &mut VecDeque<Chunk<ProcTask>>) -> bool {
        let shared = &self.shared;
        let pack = shared.pack();
        while !chunks.is_empty() {
            let batch: Vec<Chunk<ProcTask>> =
                chunks.drain(..chunks.len().min(SEND_BATCH)).collect();
            let mut pipe = redis::pipe();
            // Each entry's chunks, as (job, first, len).
            let mut entries: Vec<Vec<(u64, usize, usize)>> = Vec::new();
            {
                let mut table = shared.table.lock();
                let mut batch = batch.into_iter().peekable();
                while batch.peek().is_some() {
                    let mut packed = Vec::with_capacity(pack);
                    let mut keys = Vec::with_capacity(pack);
                    for chunk in batch.by_ref().take(pack) {
                        let body = Arc::new(chunk.task.args);
                        packed.push((chunk.job, chunk.first, 0, body.clone()));
                        keys.push((chunk.job, chunk.first, chunk.len));
                        table.chunks.insert(
                            (chunk.job, chunk.first),
                            Held {
                                len: chunk.len,
                                attempt: 0,
                                entry: None,
                                body,
                            },
                        );
                    }
                    shared.add_cmd(&mut pipe, &packed);
                    entries.push(keys);
                }
            }
            let added = match self.conn.as_mut() {
                Some(c) => pipe
                    .query::<Vec<String>>(c)
                    .map_err(|e| shared.target.error(e)),
                None => shared.target.connect().and_then(|mut c| {
                    let r = pipe.query::<Vec<String>>(&mut c);
                    self.conn = Some(c);
                    r.map_err(|e| shared.target.error(e))
                }),
            };
            let mut table = shared.table.lock();
            match added {
                Ok(ids) => {
                    for (keys, id) in entries.into_iter().zip(ids) {
                        // A chunk's report may be in already (then it is gone).
                        let mut held_keys = Vec::with_capacity(keys.len());
                        for (job, first, _) in keys {
                            if let Some(held) = table.chunks.get_mut(&(job, first)) {
                                held.entry = Some(id.clone());
                                held_keys.push((job, first));
                            }
                        }
                        if !held_keys.is_empty() {
                            table.by_entry.insert(id, held_keys);
                        }
                    }
                }
                Err(e) => {
                    if matches!(e, Error::BackendUnavailable { .. }) {
                        self.conn = None;
                    }
                    let mut local = shared.local.lock();
                    for (job, first, len) in entries.into_iter().flatten() {
                        table.chunks.remove(&(job, first));
                        local.push_back(shared.failed(job, first, len, e.duplicate()));
                    }
                }
            }
        }
        true
    }

    pub fn make_task<A, R, F>(&self, f: F, items: Vec<A>) -> Result<ProcTask>
    where
        A: Shareable,
        R: Shareable,
        F: TaskFn<A, R>,
    {
        let entry: ChunkEntryFn = wire::chunk_entry::<A, R, F>;
        let count = items.len() as u64;
        let body = TaskBody {
            entry_offset: launch::offset_of(entry as *const ()),
            target_offset: launch::offset_of(f.to_ptr()),
            count,
            args: A::encode_many(&items)?.into_vec(),
        };
        // The task's body is sent as it is: the chunk's `args` carry it.
        Ok(ProcTask {
            entry_offset: body.entry_offset,
            target_offset: body.target_offset,
            args: redis_wire::encode_body(&body)?,
        })
    }
}

impl RedisSlot {
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
    }

    pub fn ended(&self) -> Option<Ended> {
        self.stopped.load(Ordering::SeqCst).then_some(Ended {
            pid: 0,
            exitcode: Some(0),
            signal: None,
            init_missing: false,
        })
    }
}

impl RedisShared {
    /// Takes or renews this pool's lease (and creates the stream and group
    /// if no pool of this name holds them).
    fn beat(&self, conn: &mut RedisConn) -> Result<()> {
        redis::Script::new(POOL_BEAT_SCRIPT)
            .key(&self.keys.tasks)
            .key(&self.keys.pools)
            .key(&self.alive)
            .arg(&self.id)
            .arg(redis_wire::millis(POOL_LEASE))
            .invoke::<Value>(conn)
            .map_err(|e| self.target.error(e))?;
        Ok(())
    }

    /// How many chunks one entry packs now (see [`PACK_WORK`]).
    fn pack(&self) -> usize {
        match self.chunk_busy_ns.load(Ordering::Relaxed) {
            0 => 1,
            ns => usize::try_from(u64::try_from(PACK_WORK.as_nanos()).unwrap_or(u64::MAX) / ns)
                .unwrap_or(PACK_MAX)
                .clamp(1, PACK_MAX),
        }
    }

    /// Folds one chunk's run time into the moving average.
    fn note_busy(&self, busy_ns: u64) {
        let busy_ns = busy_ns.max(1);
        let old = self.chunk_busy_ns.load(Ordering::Relaxed);
        let new = if old == 0 {
            busy_ns
        } else {
            (old.saturating_mul(7) / 8)
                .saturating_add(busy_ns / 8)
                .max(1)
        };
        self.chunk_busy_ns.store(new, Ordering::Relaxed);
    }

    /// Adds to `pipe` one entry holding `chunks`, each (job, first
    /// item, attempt, body): the first chunk's fields are `j`, `f`, `a`
    /// and `t`, the `i`th one's carry `i` after the letter.
    fn add_cmd(&self, pipe: &mut redis::Pipeline, chunks: &[(u64, usize, u32, Arc<Vec<u8>>)]) {
        let cmd = pipe
            .cmd("XADD")
            .arg(&self.keys.tasks)
            .arg("*")
            .arg("p")
            .arg(&self.id)
            .arg("b")
            .arg(self.build);
        for (i, (job, first, attempt, body)) in chunks.iter().enumerate() {
            let suffix = if i == 0 { String::new() } else { i.to_string() };
            cmd.arg(format!("j{suffix}"))
                .arg(*job)
                .arg(format!("f{suffix}"))
                .arg(*first as u64)
                .arg(format!("a{suffix}"))
                .arg(*attempt)
                .arg(format!("t{suffix}"))
                .arg(body.as_slice());
        }
    }

    fn failed(&self, job: u64, first: usize, len: usize, error: Error) -> Report {
        // Each item gets its own copy of the error (`Error` is not `Clone`).
        let error: crate::pool::jobs::ErrorMaker = match error {
            Error::BackendUnavailable { backend, cause } => {
                Arc::new(move || Error::BackendUnavailable {
                    backend,
                    cause: cause.clone(),
                })
            }
            Error::WorkerDied {
                pid,
                exitcode,
                signal,
            } => Arc::new(move || Error::WorkerDied {
                pid,
                exitcode,
                signal,
            }),
            Error::BinaryMismatch(m) => Arc::new(move || Error::BinaryMismatch(m.clone())),
            Error::Protocol(m) => Arc::new(move || Error::Protocol(m.clone())),
            other => {
                let m = other.to_string();
                Arc::new(move || Error::Remote(m.clone()))
            }
        };
        Report::Done {
            worker: self.slot.load(Ordering::SeqCst),
            job,
            parts: Parts::One((first, len)),
            results: RawChunk::Failed { len, error },
            busy: Duration::ZERO,
        }
    }

    /// The report for a worker's message, if this pool still holds that
    /// attempt of the chunk.
    fn take_report(&self, bytes: &[u8]) -> Option<Report> {
        let report = match redis_wire::decode_report(bytes) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("dropped an unreadable report: {e}");
                return None;
            }
        };
        let (job, first, attempt) = match &report {
            WorkerReport::Done {
                job,
                first,
                attempt,
                ..
            }
            | WorkerReport::Unreadable {
                job,
                first,
                attempt,
                ..
            }
            | WorkerReport::Refused {
                job,
                first,
                attempt,
                ..
            } => (*job, usize::try_from(*first).ok()?, *attempt),
        };
        let held = {
            let mut table = self.table.lock();
            if table.chunks.get(&(job, first))?.attempt != attempt {
                return None;
            }
            let held = table.chunks.remove(&(job, first))?;
            if let Some(entry) = &held.entry
                && let Some(keys) = table.by_entry.get_mut(entry)
            {
                keys.retain(|k| *k != (job, first));
                if keys.is_empty() {
                    table.by_entry.remove(entry);
                }
            }
            held
        };
        let worker = self.slot.load(Ordering::SeqCst);
        Some(match report {
            WorkerReport::Done {
                busy_ns, outcome, ..
            } => {
                self.note_busy(busy_ns);
                Report::Done {
                    worker,
                    job,
                    parts: Parts::One((first, held.len)),
                    results: RawChunk::Encoded {
                        len: held.len,
                        outcome,
                    },
                    busy: Duration::from_nanos(busy_ns),
                }
            }
            WorkerReport::Unreadable { message, .. } => {
                self.failed(job, first, held.len, Error::Protocol(message))
            }
            WorkerReport::Refused { message, .. } => {
                self.failed(job, first, held.len, Error::BinaryMismatch(message))
            }
        })
    }

    /// Adds again the chunks whose worker stopped renewing its claim for a
    /// lease, or fails them once their retries are spent.
    fn reclaim(&self, conn: &mut RedisConn) -> Result<()> {
        if self.table.lock().by_entry.is_empty() {
            return Ok(());
        }
        let pending: Value = redis::cmd("XPENDING")
            .arg(&self.keys.tasks)
            .arg(GROUP)
            .arg("IDLE")
            .arg(redis_wire::millis(self.lease))
            .arg("-")
            .arg("+")
            .arg(1000)
            .query(conn)
            .map_err(|e| self.target.error(e))?;
        let Value::Array(pending) = pending else {
            return Ok(());
        };
        let mut pipe = redis::pipe();
        pipe.atomic();
        let mut readded: Vec<(u64, usize)> = Vec::new();
        let mut gone: Vec<String> = Vec::new();
        {
            let mut table = self.table.lock();
            for item in pending {
                let Value::Array(item) = item else { continue };
                let mut item = item.into_iter();
                let (Some(id), Some(consumer)) =
                    (item.next().and_then(text), item.next().and_then(text))
                else {
                    continue;
                };
                let Some(keys) = table.by_entry.remove(&id) else {
                    continue;
                };
                gone.push(id);
                for key in keys {
                    let Some(held) = table.chunks.get_mut(&key) else {
                        continue;
                    };
                    held.entry = None;
                    if held.attempt >= self.max_retries {
                        let pid = redis_wire::pid_of_consumer(&consumer);
                        let len = held.len;
                        table.chunks.remove(&key);
                        tracing::warn!(
                            pid,
                            "a distributed pool task's workers died; retries spent"
                        );
                        let died = Error::WorkerDied {
                            pid,
                            exitcode: None,
                            signal: None,
                        };
                        self.local
                            .lock()
                            .push_back(self.failed(key.0, key.1, len, died));
                    } else {
                        held.attempt += 1;
                        tracing::info!(
                            attempt = held.attempt,
                            "re-adding a task whose worker stopped renewing its claim"
                        );
                        // Again in an entry of its own.
                        let chunk = [(key.0, key.1, held.attempt, held.body.clone())];
                        self.add_cmd(&mut pipe, &chunk);
                        readded.push(key);
                    }
                }
            }
        }
        if gone.is_empty() {
            return Ok(());
        }
        pipe.cmd("XACK")
            .arg(&self.keys.tasks)
            .arg(GROUP)
            .arg(&gone)
            .ignore();
        pipe.cmd("XDEL").arg(&self.keys.tasks).arg(&gone).ignore();
        let ids: Vec<String> = pipe.query(conn).map_err(|e| self.target.error(e))?;
        let mut table = self.table.lock();
        for (key, id) in readded.into_iter().zip(ids) {
            if let Some(held) = table.chunks.get_mut(&key) {
                held.entry = Some(id.clone());
                table.by_entry.insert(id, vec![key]);
            }
        }
        Ok(())
    }

    /// Fails every chunk this pool holds (the server is gone for good).
    fn fail_all(&self, error: &Error) {
        let mut table = self.table.lock();
        table.by_entry.clear();
        let mut local = self.local.lock();
        for ((job, first), held) in table.chunks.drain() {
            local.push_back(self.failed(job, first, held.len, error.duplicate()));
        }
    }

    /// The live workers of this pool's name.
    pub fn workers(&self) -> Result<Vec<WorkerInfo>> {
        let mut side = self.side.lock();
        if side.is_none() {
            *side = Some(self.target.connect()?);
        }
        let Some(conn) = side.as_mut() else {
            return Ok(Vec::new());
        };
        let live = redis::Script::new(WORKERS_SCRIPT)
            .key(&self.keys.workers)
            .invoke::<Vec<String>>(conn);
        let live = match live {
            Ok(live) => live,
            Err(e) => {
                *side = None;
                return Err(self.target.error(e));
            }
        };
        Ok(live
            .iter()
            .filter_map(|entry| {
                let mut parts = entry.split('\t');
                Some(WorkerInfo {
                    host: parts.next()?.to_owned(),
                    pid: parts.next()?.parse().ok()?,
                    tasks_done: parts.next()?.parse().ok()?,
                })
            })
            .collect())
    }
}

impl Drop for RedisShared {
    /// Removes this pool's keys and entries (and the name's stream, if no
    /// other pool uses it).
    fn drop(&mut self) {
        let ids: Vec<String> = self.table.get_mut().by_entry.keys().cloned().collect();
        let conn = match self.side.get_mut().take() {
            Some(c) => Ok(c),
            None => self.target.connect(),
        };
        let ended = conn.and_then(|mut c| {
            redis::Script::new(POOL_END_SCRIPT)
                .key(&self.keys.tasks)
                .key(&self.keys.workers)
                .key(&self.keys.pools)
                .key(&self.alive)
                .key(&self.results)
                .arg(&self.id)
                .arg(format!("pool-{}", self.id))
                .arg(ids)
                .invoke::<Value>(&mut c)
                .map_err(|e| self.target.error(e))
        });
        if let Err(e) = ended {
            tracing::warn!("cannot remove a distributed pool's keys: {e}");
        }
    }
}

impl RedisReports {
    pub fn recv(&mut self, timeout: Duration) -> Option<Report> {
        if let Some(r) = self.try_recv() {
            return Some(r);
        }
        let start = Instant::now();
        if let Err(e) = self.round(timeout) {
            // The server went away (or broke this pool's keys): what it held
            // may be lost, so every task in flight fails now rather than
            // waiting for reports that may never come. Later calls work
            // again once it is back.
            if self.conn.take().is_some() {
                tracing::warn!("a distributed pool lost its server: {e}");
            }
            self.shared.fail_all(&e);
            // Nothing to wait on while the server is away: let the slice pass.
            std::thread::sleep(timeout.saturating_sub(start.elapsed()));
        }
        self.try_recv()
    }

    pub fn try_recv(&mut self) -> Option<Report> {
        if let Some(r) = self.shared.local.lock().pop_front() {
            return Some(r);
        }
        self.buffer.pop_front()
    }

    /// Renews the lease and reclaims when due, then waits up to `timeout`
    /// for reports.
    fn round(&mut self, timeout: Duration) -> Result<()> {
        let shared = self.shared.clone();
        let fresh = self.conn.is_none();
        if fresh {
            self.conn = Some(shared.target.connect()?);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        // Back from an outage: a restarted server lost the stream, its
        // group and this pool's lease; they come back before anything else.
        if fresh || self.last_beat.elapsed() >= BEAT_EVERY {
            shared.beat(conn)?;
            self.last_beat = Instant::now();
        }
        if self.last_reclaim.elapsed() >= (shared.lease / 4).min(Duration::from_secs(1)) {
            shared.reclaim(conn)?;
            self.last_reclaim = Instant::now();
        }
        // BLPOP takes seconds; 0 would wait forever.
        let secs = timeout.as_secs_f64().max(0.01);
        let first: Option<(String, Vec<u8>)> = redis::cmd("BLPOP")
            .arg(&shared.results)
            .arg(format!("{secs:.3}"))
            .query(conn)
            .map_err(|e| shared.target.error(e))?;
        let Some((_, first)) = first else {
            return Ok(());
        };
        let more: Value = redis::cmd("LPOP")
            .arg(&shared.results)
            .arg(REPORT_BATCH)
            .query(conn)
            .map_err(|e| shared.target.error(e))?;
        let more = match more {
            Value::Array(more) => more,
            _ => Vec::new(),
        };
        for bytes in std::iter::once(first).chain(more.into_iter().filter_map(bytes)) {
            if let Some(r) = shared.take_report(&bytes) {
                self.buffer.push_back(r);
            }
        }
        Ok(())
    }
}

/// A copy of an error for several chunks (`Error` is not `Clone`): the
/// variants this backend makes keep their kind, others become `Remote`.
trait Duplicate {
    fn duplicate(&self) -> Error;
}

impl Duplicate for Error {
    fn duplicate(&self) -> Error {
        match self {
            Error::BackendUnavailable { backend, cause } => Error::BackendUnavailable {
                backend,
                cause: cause.clone(),
            },
            Error::Protocol(m) => Error::Protocol(m.clone()),
            other => Error::Remote(other.to_string()),
        }
    }
}
