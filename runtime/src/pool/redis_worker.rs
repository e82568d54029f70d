//! A worker of a distributed Pool: takes chunks from the pool name's Redis
//! stream (in the consumer group `workers`), runs them, pushes the results
//! to the submitting pool and acknowledges the entry.
//!
//! A background thread renews the worker's heartbeat (`pool.workers()`)
//! and its claim on the entry it runs, so a pool reclaims an entry only
//! from a worker that stopped renewing (killed, frozen, cut off).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::fork_sync::Mutex;
use redis::Value;

use crate::error::{Error, Result};
use crate::pool::redis_backend::PACK_MAX;
use crate::pool::redis_wire::{
    self, GROUP, HEARTBEAT, HEARTBEAT_SCRIPT, Keys, POOL_LEASE, REPORT_SCRIPT, WORKER_END_SCRIPT,
    WORKER_ENV, WORKER_LEASE, WorkerReport,
};
use crate::pool::wire::ChunkEntryFn;
use crate::process::launch;
use crate::redis::RedisTarget;
use crate::redis::conn::RedisConn;

/// How long one blocking read for a task waits before the worker looks at
/// its stop flag again.
const READ_BLOCK: Duration = Duration::from_secs(1);
/// How long a worker waits before looking again when no pool of its name
/// exists, or the server cannot be reached.
const IDLE_RETRY: Duration = Duration::from_millis(250);
/// The most entries a worker takes in one read. It takes one at first and
/// doubles that while a batch runs in less than [`BATCH_WORK`] (small
/// tasks: two round trips a batch instead of two an entry), and goes back
/// to one after a longer batch, so a worker never holds more than about
/// that much work that another idle worker could have run.
const MAX_BATCH: usize = 64;
/// The work a batch may hold; also how long finished entries of a batch
/// wait before their results go back.
const BATCH_WORK: Duration = Duration::from_millis(2);

/// Splits a [`WORKER_ENV`] value, `redis://[:password@]host:port[/db]/name`,
/// into the server's URL and the pool name (always the last path segment).
pub(crate) fn split_worker_url(value: &str) -> Result<(&str, &str)> {
    let bad = || {
        Error::InvalidArgument(format!(
            "{WORKER_ENV}: expected redis://[:password@]host:port[/db]/name \
             (the value is not shown: it may hold a password)"
        ))
    };
    let (_, rest) = value.split_once("://").ok_or_else(bad)?;
    if !rest.contains('/') {
        return Err(bad());
    }
    let (url, name) = value.rsplit_once('/').ok_or_else(bad)?;
    redis_wire::check_name(name)?;
    Ok((url, name))
}

/// In a process started with [`WORKER_ENV`] set: runs the worker it names
/// and ends the process (exit code 0 once stopped, 1 with the error on
/// stderr if it could not start). Called by [`init`](crate::init).
pub(crate) fn run_from_env(value: String) -> ! {
    let result = split_worker_url(&value).and_then(|(url, name)| run(url, name));
    match result {
        Ok(()) => crate::sys::process::exit_now(0),
        Err(e) => {
            eprintln!("multiproc worker: {e}");
            crate::sys::process::exit_now(1)
        }
    }
}

/// Serves the distributed Pool named `name` on the Redis server at `url`
/// until the process is signalled (see [`run_until`]).
///
/// Meant for a process that is a worker and nothing else: it replaces the
/// process's panic hook, so that a task's panic travels back to the pool
/// (as in a local pool's workers) instead of being printed here.
pub fn run(url: &str, name: &str) -> Result<()> {
    run_until(url, name, &AtomicBool::new(false))
}

/// Serves the distributed Pool named `name` on the Redis server at `url`
/// until `stop` is set (looked at between tasks, and at least once a
/// second while idle).
///
/// Fails at once if the URL or name is malformed or the server cannot be
/// reached ([`Error::BackendUnavailable`]: unreachable, wrong password).
/// Once serving, a lost server is waited for: the worker reconnects and
/// carries on. Tasks of a pool that runs another build of the program are
/// refused (the pool gets [`Error::BinaryMismatch`]); a task that panics
/// reports the panic and the worker carries on.
pub fn run_until(url: &str, name: &str, stop: &AtomicBool) -> Result<()> {
    let target = RedisTarget::new(url)?;
    let keys = Keys::new(&target, name)?;
    let mut conn = Some(target.connect()?);
    // A task's panic travels back with its result: do not also print it.
    crate::pool::process_backend::silence_panics();
    let pid = crate::sys::process::getpid();
    let host = redis_wire::host_name();
    let state = Arc::new(WorkerState {
        consumer: redis_wire::consumer_name(&host, pid),
        host,
        pid,
        build: redis_wire::worker_build_id(),
        running: Mutex::new(String::new()),
        done: AtomicU64::new(0),
        stopping: AtomicBool::new(false),
    });
    let beat = {
        let (state, target, keys) = (state.clone(), target.clone(), keys.clone());
        std::thread::Builder::new()
            .name("multiproc-worker-heartbeat".into())
            .spawn(move || heartbeat(&state, &target, &keys))?
    };
    tracing::info!(consumer = %state.consumer, "serving pool {name} at {}", target.shown_url());
    let mut batch = 1;
    while !stop.load(Ordering::SeqCst) {
        let Some(c) = conn.as_mut() else {
            match target.connect() {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    tracing::warn!("worker cannot reach redis: {e}");
                    std::thread::sleep(IDLE_RETRY);
                }
            }
            continue;
        };
        match read_batch(c, &keys, &state.consumer, batch) {
            Ok(entries) if entries.is_empty() => {}
            Ok(entries) => {
                let full = entries.len() == batch;
                let started = std::time::Instant::now();
                if let Err(e) = serve(c, &target, &keys, &state, &entries) {
                    tracing::warn!("worker lost redis while reporting: {e}");
                    conn = None;
                }
                batch = if started.elapsed() >= BATCH_WORK {
                    1
                } else if full {
                    (batch * 2).min(MAX_BATCH)
                } else {
                    batch
                };
            }
            Err(e) if e.code() == Some("NOGROUP") || e.to_string().contains("no longer exists") => {
                // No pool of this name holds the stream now: wait for one.
                std::thread::sleep(IDLE_RETRY);
            }
            Err(e) => {
                tracing::warn!("worker lost redis: {}", target.error(e));
                conn = None;
                std::thread::sleep(IDLE_RETRY);
            }
        }
    }
    state.stopping.store(true, Ordering::SeqCst);
    beat.thread().unpark();
    let _ = beat.join();
    if let Some(c) = conn.as_mut() {
        let _ = redis::Script::new(WORKER_END_SCRIPT)
            .key(&keys.tasks)
            .key(&keys.workers)
            .arg(&state.consumer)
            .invoke::<Value>(c);
    }
    Ok(())
}

struct WorkerState {
    consumer: String,
    host: String,
    pid: i32,
    build: String,
    /// The entries taken and not yet reported, separated by spaces ("" between
    /// batches), whose claims the heartbeat renews.
    running: Mutex<String>,
    done: AtomicU64,
    stopping: AtomicBool,
}

/// The heartbeat thread: every [`HEARTBEAT`], the worker's entry in the
/// workers hash and the claim on the entry it runs.
fn heartbeat(state: &WorkerState, target: &RedisTarget, keys: &Keys) {
    let script = redis::Script::new(HEARTBEAT_SCRIPT);
    let mut conn: Option<RedisConn> = None;
    while !state.stopping.load(Ordering::SeqCst) {
        if conn.is_none() {
            conn = target.connect().ok();
        }
        if let Some(c) = conn.as_mut() {
            let info = format!(
                "{}\t{}\t{}",
                state.host,
                state.pid,
                state.done.load(Ordering::SeqCst)
            );
            let running = state.running.lock().clone();
            let beat = script
                .key(&keys.tasks)
                .key(&keys.workers)
                .arg(&state.consumer)
                .arg(info)
                .arg(redis_wire::millis(WORKER_LEASE))
                .arg(running)
                .invoke::<Value>(c);
            if beat.is_err() {
                conn = None;
            }
        }
        std::thread::park_timeout(HEARTBEAT);
    }
}

type Fields = Vec<(String, Vec<u8>)>;

/// Waits up to [`READ_BLOCK`] for new entries; takes at most `count`.
fn read_batch(
    conn: &mut RedisConn,
    keys: &Keys,
    consumer: &str,
    count: usize,
) -> redis::RedisResult<Vec<(String, Fields)>> {
    let reply: Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(GROUP)
        .arg(consumer)
        .arg("COUNT")
        .arg(count)
        .arg("BLOCK")
        .arg(redis_wire::millis(READ_BLOCK))
        .arg("STREAMS")
        .arg(&keys.tasks)
        .arg(">")
        .query(conn)?;
    Ok(entries(reply))
}

/// The entries of an XREADGROUP reply (RESP2 arrays or RESP3 maps).
fn entries(reply: Value) -> Vec<(String, Fields)> {
    let streams = match reply {
        Value::Array(streams) => streams
            .into_iter()
            .filter_map(|s| match s {
                Value::Array(mut pair) if pair.len() == 2 => pair.pop(),
                _ => None,
            })
            .collect::<Vec<_>>(),
        Value::Map(pairs) => pairs.into_iter().map(|(_, v)| v).collect(),
        _ => return Vec::new(),
    };
    let Some(Value::Array(entries)) = streams.into_iter().next() else {
        return Vec::new();
    };
    entries.into_iter().filter_map(entry).collect()
}

/// One entry of an XREADGROUP reply: its id and fields.
fn entry(entry: Value) -> Option<(String, Fields)> {
    let Value::Array(mut entry) = entry else {
        return None;
    };
    if entry.len() != 2 {
        return None;
    }
    let body = entry.pop()?;
    let id = text(entry.pop()?)?;
    let flat = match body {
        Value::Array(flat) => flat,
        Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        // A deleted entry: its id with no fields.
        _ => Vec::new(),
    };
    let mut fields = Vec::with_capacity(flat.len() / 2);
    let mut it = flat.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        if let (Some(k), Some(v)) = (text(k), bytes(v)) {
            fields.push((k, v));
        }
    }
    Some((id, fields))
}

pub(crate) fn bytes(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        _ => None,
    }
}

pub(crate) fn text(v: Value) -> Option<String> {
    bytes(v).and_then(|b| String::from_utf8(b).ok())
}

fn field<'a>(fields: &'a Fields, name: &str) -> Option<&'a [u8]> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_slice())
}

fn number<T: std::str::FromStr>(fields: &Fields, name: &str) -> Option<T> {
    std::str::from_utf8(field(fields, name)?).ok()?.parse().ok()
}

/// Runs (or refuses) a batch of entries in order and reports them, in
/// one round trip per pool the batch holds entries of, once a batch's
/// work passes [`BATCH_WORK`] and at its end. An error only when Redis
/// failed.
fn serve(
    conn: &mut RedisConn,
    target: &RedisTarget,
    keys: &Keys,
    state: &WorkerState,
    entries: &[(String, Fields)],
) -> Result<()> {
    *state.running.lock() = entries
        .iter()
        .map(|(id, _)| id.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    let mut unsent: Vec<Unsent<'_>> = Vec::new();
    let mut since = std::time::Instant::now();
    let mut result = Ok(());
    for (id, fields) in entries {
        if let Some((pool, reports)) = run_entry(conn, keys, state, id, fields) {
            match reports.iter().map(redis_wire::encode_report).collect() {
                Ok(reports) => unsent.push(Unsent { pool, id, reports }),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if since.elapsed() >= BATCH_WORK {
            result = report(conn, target, keys, state, &mut unsent);
            if result.is_err() {
                break;
            }
            since = std::time::Instant::now();
        }
    }
    if result.is_ok() {
        result = report(conn, target, keys, state, &mut unsent);
    }
    state.running.lock().clear();
    result
}

/// An entry run and not yet reported: its pool, its id, a report per chunk.
struct Unsent<'a> {
    pool: String,
    id: &'a str,
    reports: Vec<Vec<u8>>,
}

/// Sends the reports in `unsent` (one script call per pool) and empties it.
fn report(
    conn: &mut RedisConn,
    target: &RedisTarget,
    keys: &Keys,
    state: &WorkerState,
    unsent: &mut Vec<Unsent<'_>>,
) -> Result<()> {
    let script = redis::Script::new(REPORT_SCRIPT);
    while let Some(first) = unsent.first() {
        let pool = first.pool.clone();
        let (mine, rest): (Vec<Unsent<'_>>, Vec<Unsent<'_>>) = std::mem::take(unsent)
            .into_iter()
            .partition(|u| u.pool == pool);
        *unsent = rest;
        let mut call = script.prepare_invoke();
        call.key(&keys.tasks)
            .key(keys.results(&pool))
            .key(keys.alive(&pool))
            .arg(redis_wire::millis(POOL_LEASE))
            .arg(mine.len());
        for u in &mine {
            call.arg(u.id);
        }
        let mut chunks = 0u64;
        for report in mine.iter().flat_map(|u| &u.reports) {
            call.arg(report.as_slice());
            chunks += 1;
        }
        call.invoke::<Value>(conn).map_err(|e| target.error(e))?;
        state.done.fetch_add(chunks, Ordering::SeqCst);
    }
    Ok(())
}

/// Runs (or refuses) the chunks of one entry: its pool and a report per
/// chunk, or `None` for an entry that is not a pool's (dropped here).
fn run_entry(
    conn: &mut RedisConn,
    keys: &Keys,
    state: &WorkerState,
    id: &str,
    fields: &Fields,
) -> Option<(String, Vec<WorkerReport>)> {
    let head = (|| {
        let pool = std::str::from_utf8(field(fields, "p")?).ok()?;
        redis_wire::check_name(pool).ok()?;
        Some((pool.to_owned(), field(fields, "b")?))
    })();
    // The chunks: `j`, `f`, `a`, `t` for the first, with `1`, `2`… after
    // the letter for the next ones. No pool packs more than `PACK_MAX`: an
    // entry claiming more is not read past them (each is a scan of the
    // entry's fields).
    let chunks: Vec<(u64, u64, u32, Option<&[u8]>)> = (0..PACK_MAX)
        .map_while(|i: usize| {
            let s = if i == 0 { String::new() } else { i.to_string() };
            Some((
                number::<u64>(fields, &format!("j{s}"))?,
                number::<u64>(fields, &format!("f{s}"))?,
                number::<u32>(fields, &format!("a{s}"))?,
                field(fields, &format!("t{s}")),
            ))
        })
        .collect();
    let Some((pool, build)) = head.filter(|_| !chunks.is_empty()) else {
        // Not a pool's entry (or a deleted one): drop it.
        tracing::warn!("worker dropped a malformed task entry {id}");
        let _ = redis::pipe()
            .cmd("XACK")
            .arg(&keys.tasks)
            .arg(GROUP)
            .arg(id)
            .cmd("XDEL")
            .arg(&keys.tasks)
            .arg(id)
            .query::<Value>(conn);
        return None;
    };
    let reports = chunks
        .into_iter()
        .map(|(job, first, attempt, body)| {
            if build != state.build.as_bytes() {
                WorkerReport::Refused {
                    job,
                    first,
                    attempt,
                    message: format!(
                        "worker {} (pid {}) runs build {}, the pool's task comes from build {}: \
                         start workers from the same binary as the submitting program",
                        state.host,
                        state.pid,
                        state.build,
                        String::from_utf8_lossy(build)
                    ),
                }
            } else {
                run_task(body, job, first, attempt)
            }
        })
        .collect();
    Some((pool, reports))
}

/// Runs the chunk in an entry whose build matched this worker's.
fn run_task(body: Option<&[u8]>, job: u64, first: u64, attempt: u32) -> WorkerReport {
    let body = body
        .ok_or_else(|| Error::Protocol("the task entry has no body".into()))
        .and_then(redis_wire::decode_body);
    let body = match body {
        Ok(body) => body,
        Err(e) => {
            return WorkerReport::Unreadable {
                job,
                first,
                attempt,
                message: format!("the worker cannot read the task: {e}"),
            };
        }
    };
    // Offsets from outside this program: at least in its own code.
    if !launch::in_own_code(body.entry_offset) || !launch::in_own_code(body.target_offset) {
        return WorkerReport::Unreadable {
            job,
            first,
            attempt,
            message: "the task names code outside the worker's binary".into(),
        };
    }
    let started = std::time::Instant::now();
    // SAFETY: the entry names this build (checked above: a digest of this
    // binary's contents and its function layout), so the pool computed
    // these offsets from a `ChunkEntryFn` and a task function of this very
    // binary, and they land in its code (checked just above). Who can
    // write to the Redis server can still make the worker call any address
    // of its binary's code: the server is part of the trust boundary (see
    // the README on protecting it).
    let entry = unsafe {
        std::mem::transmute::<*const (), ChunkEntryFn>(launch::addr_at(body.entry_offset))
    };
    let target = launch::addr_at(body.target_offset);
    let count = usize::try_from(body.count).unwrap_or(usize::MAX);
    let (_, outcome) = entry(target, &[(&body.args, count)], Duration::ZERO);
    WorkerReport::Done {
        job,
        first,
        attempt,
        busy_ns: u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX),
        outcome,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worker_variable_names_server_and_pool() {
        assert_eq!(
            split_worker_url("redis://h:6379/0/jobs").unwrap(),
            ("redis://h:6379/0", "jobs")
        );
        assert_eq!(
            split_worker_url("redis://:pw@h:6379/jobs").unwrap(),
            ("redis://:pw@h:6379", "jobs")
        );
        for bad in [
            "redis://h:6379",
            "jobs",
            "redis://h:6379/0/",
            "redis://h/a:b",
        ] {
            assert!(
                matches!(split_worker_url(bad), Err(Error::InvalidArgument(_))),
                "{bad}"
            );
        }
        let hidden = split_worker_url("redis://:s3cret@h:6379").unwrap_err();
        assert!(!hidden.to_string().contains("s3cret"));
    }
}
