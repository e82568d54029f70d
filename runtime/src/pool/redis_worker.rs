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

use parking_lot::Mutex;
use redis::Value;

use crate::error::{Error, Result};
use crate::pool::redis_wire::{
    self, GROUP, HEARTBEAT, HEARTBEAT_SCRIPT, Keys, POOL_LEASE, REPORT_SCRIPT, WORKER_END_SCRIPT,
    WORKER_ENV, WORKER_LEASE, WorkerReport,
};
use crate::pool::wire::ChunkEntryFn;
use crate::process::launch;
use crate::redis::RedisTarget;

/// How long one blocking read for a task waits before the worker looks at
/// its stop flag again.
const READ_BLOCK: Duration = Duration::from_secs(1);
/// How long a worker waits before looking again when no pool of its name
/// exists, or the server cannot be reached.
const IDLE_RETRY: Duration = Duration::from_millis(250);

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
        match read_one(c, &keys, &state.consumer) {
            Ok(Some((id, fields))) => {
                if let Err(e) = serve(c, &target, &keys, &state, &id, &fields) {
                    tracing::warn!("worker lost redis while reporting: {e}");
                    conn = None;
                }
            }
            Ok(None) => {}
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
    /// The entry being run ("" between tasks), whose claim the heartbeat renews.
    running: Mutex<String>,
    done: AtomicU64,
    stopping: AtomicBool,
}

/// The heartbeat thread: every [`HEARTBEAT`], the worker's entry in the
/// workers hash and the claim on the entry it runs.
fn heartbeat(state: &WorkerState, target: &RedisTarget, keys: &Keys) {
    let script = redis::Script::new(HEARTBEAT_SCRIPT);
    let mut conn: Option<redis::Connection> = None;
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

/// Waits up to [`READ_BLOCK`] for one new entry.
fn read_one(
    conn: &mut redis::Connection,
    keys: &Keys,
    consumer: &str,
) -> redis::RedisResult<Option<(String, Fields)>> {
    let reply: Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(GROUP)
        .arg(consumer)
        .arg("COUNT")
        .arg(1)
        .arg("BLOCK")
        .arg(redis_wire::millis(READ_BLOCK))
        .arg("STREAMS")
        .arg(&keys.tasks)
        .arg(">")
        .query(conn)?;
    Ok(first_entry(reply))
}

/// The first entry of an XREADGROUP reply (RESP2 arrays or RESP3 maps).
fn first_entry(reply: Value) -> Option<(String, Fields)> {
    let streams = match reply {
        Value::Array(streams) => streams
            .into_iter()
            .filter_map(|s| match s {
                Value::Array(mut pair) if pair.len() == 2 => pair.pop(),
                _ => None,
            })
            .collect::<Vec<_>>(),
        Value::Map(pairs) => pairs.into_iter().map(|(_, v)| v).collect(),
        _ => return None,
    };
    let Value::Array(entries) = streams.into_iter().next()? else {
        return None;
    };
    let Value::Array(mut entry) = entries.into_iter().next()? else {
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

/// Runs (or refuses) one entry and reports it. An error only when Redis
/// failed.
fn serve(
    conn: &mut redis::Connection,
    target: &RedisTarget,
    keys: &Keys,
    state: &WorkerState,
    id: &str,
    fields: &Fields,
) -> Result<()> {
    let head = (|| {
        let pool = std::str::from_utf8(field(fields, "p")?).ok()?;
        redis_wire::check_name(pool).ok()?;
        Some((
            pool.to_owned(),
            field(fields, "b")?,
            number::<u64>(fields, "j")?,
            number::<u64>(fields, "f")?,
            number::<u32>(fields, "a")?,
        ))
    })();
    let Some((pool, build, job, first, attempt)) = head else {
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
        return Ok(());
    };
    let report = if build != state.build.as_bytes() {
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
        *state.running.lock() = id.to_owned();
        let report = run_task(fields, job, first, attempt);
        state.running.lock().clear();
        report
    };
    let encoded = redis_wire::encode_report(&report)?;
    redis::Script::new(REPORT_SCRIPT)
        .key(&keys.tasks)
        .key(keys.results(&pool))
        .key(keys.alive(&pool))
        .arg(id)
        .arg(encoded)
        .arg(redis_wire::millis(POOL_LEASE))
        .invoke::<Value>(conn)
        .map_err(|e| target.error(e))?;
    state.done.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

/// Runs the chunk in an entry whose build matched this worker's.
fn run_task(fields: &Fields, job: u64, first: u64, attempt: u32) -> WorkerReport {
    let body = field(fields, "t")
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
    let started = std::time::Instant::now();
    // SAFETY: the entry names this build (checked above: a digest of this
    // binary's contents and its function layout), so the pool computed
    // these offsets from a `ChunkEntryFn` and a task function of this very
    // binary. Who can write to the Redis server can therefore make the
    // worker call any chunk entry of its binary: the server is part of
    // the trust boundary (see the crate docs on protecting it).
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
