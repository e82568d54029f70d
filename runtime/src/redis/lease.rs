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

use crate::fork_mutex::ForkMutex;
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
    token: String,
}

#[derive(Default)]
struct Renewer {
    /// The process these leases (and this thread) belong to.
    pid: i32,
    /// Held leases by key.
    held: HashMap<String, Held>,
    /// This process's renewer thread, once started: woken by a new lease,
    /// which it renews next (it may be asleep for longer than that lease).
    thread: Option<std::thread::Thread>,
    /// This process's token (see [`process_token`]).
    token: String,
}

static RENEWER: ForkMutex<Option<Renewer>> = ForkMutex::new(None);

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

/// Keeps renewing `key` (which holds `token`) while this process lives.
pub(crate) fn hold(target: &RedisTarget, key: String, token: String) {
    with_renewer(|r| {
        let renewed_already = r.held.get(&key).is_some_and(|h| h.token == token);
        r.held.insert(
            key,
            Held {
                target: target.clone(),
                token,
            },
        );
        match &r.thread {
            // A lease the thread renews already needs no wake-up (a queue
            // consumer holds its presence again at every get).
            Some(_) if renewed_already => {}
            Some(t) => t.unpark(),
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
    });
}

/// Stops renewing `key`.
pub(crate) fn release(key: &str) {
    with_renewer(|r| {
        r.held.remove(key);
    });
}

/// Stops renewing `key` if it is held with `token`: another thread of
/// this process that took the key since (with its own token) keeps its
/// lease.
pub(crate) fn release_if(key: &str, token: &str) {
    with_renewer(|r| {
        if r.held.get(key).is_some_and(|h| h.token == token) {
            r.held.remove(key);
        }
    });
}

/// The renewer thread: renews each held key a third of its lease after
/// the last renewal (a new key at once), and forgets the keys that are no
/// longer ours.
fn renew_forever() {
    let pid = crate::sys::process::getpid();
    let mut last: HashMap<String, Instant> = HashMap::new();
    loop {
        let due: Vec<(String, RedisTarget, String)> = {
            let guard = RENEWER.lock();
            match guard.as_ref() {
                Some(r) if r.pid == pid => r
                    .held
                    .iter()
                    .map(|(k, h)| (k.clone(), h.target.clone(), h.token.clone()))
                    .collect(),
                _ => return,
            }
        };
        let mut shortest = Duration::from_secs(1);
        for (key, target, token) in due {
            let lease = target.lease();
            shortest = shortest.min(lease / 3);
            if last.get(&key).is_some_and(|t| t.elapsed() < lease / 3) {
                continue;
            }
            let ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
            let renewed =
                target.with_conn(|c| RENEW.key(&key).arg(&token).arg(ms).invoke::<i64>(c));
            match renewed {
                Ok(1) => {
                    last.insert(key, Instant::now());
                }
                Ok(_) => {
                    // Released, deleted, or expired and taken by another.
                    last.remove(&key);
                    with_renewer(|r| {
                        if r.held.get(&key).is_some_and(|h| h.token == token) {
                            r.held.remove(&key);
                        }
                    });
                }
                // Redis unreachable: try again next round; if it stays
                // away beyond the lease, the lease ends there as it should.
                Err(e) => tracing::debug!("cannot renew the redis lease {key}: {e}"),
            }
        }
        last.retain(|k, _| {
            RENEWER
                .lock()
                .as_ref()
                .is_some_and(|r| r.held.contains_key(k))
        });
        // Sleeping is this thread's whole job: it wakes only to renew, or
        // when a new lease (perhaps shorter than this sleep) comes.
        std::thread::park_timeout(shortest.max(Duration::from_millis(30)));
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
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| crate::process::register_fork_hook(&RedisForkHook));
}
