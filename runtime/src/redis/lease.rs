//! Leases: keys that live only while the process that holds them does.
//!
//! A Redis lock is a key with a time to live (its lease); a queue consumer
//! announces itself with such a key too. One background thread per process
//! renews every lease the process holds, a third of the lease before it
//! ends, only while the key still holds this holder's token. When the
//! process dies (or is cut off from Redis) nothing renews the key, and it
//! ends with its lease: that is how the others learn of the death.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use crate::fork_sync::Mutex;
use crate::process::ForkHook;
use crate::redis::RedisTarget;

/// Extends the key's time to live if it still holds our token.
static RENEW: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
",
    )
});

struct Held {
    target: RedisTarget,
    /// The key, on `target`'s server.
    key: String,
    token: String,
    /// When the key's time to live was last set to the whole lease (by the
    /// holder's own command or by a renewal); `None`: to renew at once.
    renewed: Option<Instant>,
}

impl Held {
    /// When this key is next to be renewed: a third of its lease after
    /// the last renewal (`None`: now).
    fn due(&self) -> Option<Instant> {
        self.renewed.map(|t| t + self.target.lease() / 3)
    }
}

#[derive(Default)]
struct Renewer {
    /// The process these leases (and this thread) belong to.
    pid: i32,
    /// Held leases by [`slot`].
    held: HashMap<String, Held>,
    /// This process's renewer thread, once started: woken by a lease due
    /// before it would wake by itself.
    thread: Option<std::thread::Thread>,
    /// When the thread wakes by itself next (`None`: it is awake).
    wakes_at: Option<Instant>,
    /// This process's token (see [`process_token`]).
    token: String,
}

/// Where the renewer keeps `key` of `target`'s server: two servers (or
/// databases) may each have a key of that name.
fn slot(target: &RedisTarget, key: &str) -> String {
    format!("{} {key}", target.shown_url())
}

static RENEWER: Mutex<Option<Renewer>> = Mutex::new(None);

/// Runs `f` on this process's renewer state (a forked child's starts empty).
fn with_renewer<R>(f: impl FnOnce(&mut Renewer) -> R) -> R {
    register_fork_hook_once();
    let pid = crate::sys::process::getpid();
    let mut guard = RENEWER.lock();
    let r = guard.get_or_insert_with(Renewer::default);
    if r.pid != pid {
        *r = Renewer {
            pid,
            token: format!("{pid}-{:016x}", crate::handle::fresh_id()),
            ..Renewer::default()
        };
    }
    f(r)
}

/// A token naming this process (its pid and a random part, so two hosts'
/// pids never meet): what a lock's key holds while this process holds it.
pub(crate) fn process_token() -> String {
    with_renewer(|r| r.token.clone())
}

/// The pid in a token made by [`process_token`] (0 if it has none).
pub(crate) fn token_pid(token: &[u8]) -> i32 {
    std::str::from_utf8(token)
        .ok()
        .and_then(|t| t.split('-').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

/// Keeps renewing `key` (which holds `token`, perhaps with little of its
/// lease left) while this process lives: the first renewal is at once.
pub(crate) fn hold(target: &RedisTarget, key: String, token: String) {
    hold_from(target, key, token, None);
}

/// As [`hold`], for a key whose time to live the caller has just set to
/// the whole lease: its first renewal is a third of the lease from now,
/// so holding it costs no round trip, and wakes the renewer thread only
/// if that comes before the thread would wake anyway.
pub(crate) fn hold_fresh(target: &RedisTarget, key: String, token: String) {
    hold_from(target, key, token, Some(Instant::now()));
}

fn hold_from(target: &RedisTarget, key: String, token: String, renewed: Option<Instant>) {
    with_renewer(|r| hold_in(r, target, key, token, renewed));
}

fn hold_in(
    r: &mut Renewer,
    target: &RedisTarget,
    key: String,
    token: String,
    renewed: Option<Instant>,
) {
    let slot = slot(target, &key);
    let held = Held {
        target: target.clone(),
        key,
        token,
        renewed,
    };
    let wake = match (held.due(), r.wakes_at) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(due), Some(at)) => due < at,
    };
    r.held.insert(slot, held);
    match &r.thread {
        Some(t) if wake => t.unpark(),
        Some(_) => {}
        None => {
            let spawned = std::thread::Builder::new()
                .name("multiproc-redis-lease".into())
                .spawn(renew_forever);
            match spawned {
                Ok(h) => r.thread = Some(h.thread().clone()),
                Err(e) => tracing::warn!("cannot start the redis lease thread: {e}"),
            }
        }
    }
}

/// Whether this process holds `key` with `token` and set its time to live
/// to the whole lease (itself or by a renewal) less than `within` ago.
pub(crate) fn renewed_within(
    target: &RedisTarget,
    key: &str,
    token: &str,
    within: Duration,
) -> bool {
    with_renewer(|r| {
        r.held
            .get(&slot(target, key))
            .is_some_and(|h| h.token == token && h.renewed.is_some_and(|t| t.elapsed() < within))
    })
}

/// Stops renewing `key`.
pub(crate) fn release(target: &RedisTarget, key: &str) {
    with_renewer(|r| {
        r.held.remove(&slot(target, key));
    });
}

/// Stops renewing `key` if it is held with `token`: another thread of
/// this process that took the key since (with its own token) keeps its
/// lease.
pub(crate) fn release_if(target: &RedisTarget, key: &str, token: &str) {
    with_renewer(|r| {
        let key = slot(target, key);
        if r.held.get(&key).is_some_and(|h| h.token == token) {
            r.held.remove(&key);
        }
    });
}

/// The longest the renewer thread sleeps: a bound, so that a thread that
/// missed nothing still looks again now and then.
const NAP_MAX: Duration = Duration::from_secs(1);

/// The shortest: after a renewal failed (Redis out of reach), the next
/// try waits at least this long.
const NAP_MIN: Duration = Duration::from_millis(30);

/// The renewer thread: renews each held key a third of its lease after
/// its last renewal (a key held with [`hold`], at once), forgets the keys
/// that are no longer ours, and sleeps until the next is due.
fn renew_forever() {
    let pid = crate::sys::process::getpid();
    loop {
        let started = Instant::now();
        let due: Vec<(String, Held)> = {
            let mut guard = RENEWER.lock();
            match guard.as_mut() {
                Some(r) if r.pid == pid => {
                    r.wakes_at = None;
                    r.held
                        .iter()
                        .filter(|(_, h)| h.due().is_none_or(|d| d <= started))
                        .map(|(slot, h)| {
                            let held = Held {
                                target: h.target.clone(),
                                key: h.key.clone(),
                                token: h.token.clone(),
                                renewed: h.renewed,
                            };
                            (slot.clone(), held)
                        })
                        .collect()
                }
                _ => return,
            }
        };
        for (
            slot,
            Held {
                target, key, token, ..
            },
        ) in due
        {
            let ms = u64::try_from(target.lease().as_millis()).unwrap_or(u64::MAX);
            let sent = Instant::now();
            let renewed =
                target.with_conn(|c| RENEW.key(&key).arg(&token).arg(ms).invoke::<i64>(c));
            match renewed {
                Ok(1) => with_renewer(|r| {
                    if let Some(h) = r.held.get_mut(&slot).filter(|h| h.token == token) {
                        h.renewed = Some(h.renewed.map_or(sent, |t| t.max(sent)));
                    }
                }),
                // Released, deleted, or expired and taken by another.
                Ok(_) => with_renewer(|r| {
                    if r.held.get(&slot).is_some_and(|h| h.token == token) {
                        r.held.remove(&slot);
                    }
                }),
                // Redis unreachable: try again after a nap; if it stays
                // away beyond the lease, the lease ends there as it should.
                Err(e) => tracing::debug!("cannot renew the redis lease {key}: {e}"),
            }
        }
        // Sleeping is this thread's whole job: until the next key is due
        // (a holder wakes it for a key due sooner).
        let nap = {
            let mut guard = RENEWER.lock();
            let Some(r) = guard.as_mut().filter(|r| r.pid == pid) else {
                return;
            };
            let now = Instant::now();
            let next = r
                .held
                .values()
                .map(|h| {
                    h.due()
                        .map_or(Duration::ZERO, |d| d.saturating_duration_since(now))
                })
                .min()
                .unwrap_or(NAP_MAX);
            let nap = next.clamp(NAP_MIN, NAP_MAX);
            r.wakes_at = Some(now + nap);
            nap
        };
        std::thread::park_timeout(nap);
    }
}

/// Holds the redis module's locks across a fork, so that a forked child
/// never finds one taken by a thread that does not exist there.
struct RedisForkHook;

impl ForkHook for RedisForkHook {
    fn prepare(&self) -> Box<dyn std::any::Any> {
        Box::new((super::POOL.lock(), super::KNOWN_URLS.lock(), RENEWER.lock()))
    }
    fn parent(&self, state: Box<dyn std::any::Any>) {
        drop(state);
    }
    fn child(&self, state: Box<dyn std::any::Any>) {
        drop(state);
    }
}

pub(crate) fn register_fork_hook_once() {
    crate::process::register_fork_hook(&RedisForkHook);
}
