//! The door of a manager server: how many connections may be in their
//! handshake at once, from one source and in all, and which sources are
//! refused for a while because they kept failing it.
//!
//! A connection that has not proved it knows the authkey costs the server a
//! thread; unbounded, a few thousand idle sockets would cost thousands of
//! threads and hold up everyone. So each server has a gate per transport
//! (local and TCP): a connection gets a [`Ticket`] before its thread starts
//! and gives it back when its handshake ends (passed, failed, or cut off at
//! the handshake deadline). Over a cap the connection is told `#BUSY#` and
//! closed at once (a real client tries again shortly), so a source that
//! holds many idle handshakes fills its own share and no more: other
//! sources still get in.
//!
//! A source (an IP address over TCP, a process locally) whose handshakes
//! fail [`GateLimits::max_failures`] times within [`GateLimits::failure_window`]
//! is refused without a handshake for [`GateLimits::block_for`]. Failures
//! are logged at warn with the source, never with a key or a socket name,
//! and the log is rate limited so a flood of guesses cannot flood it too.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::fork_sync::Mutex;

use crate::error::Error;

/// Who a connection comes from, for the caps and the failure count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Source {
    /// A local client process (from the socket's peer credentials).
    Process {
        /// Its pid.
        pid: i32,
        /// Its user id.
        uid: u32,
    },
    /// A TCP client's address.
    Ip(IpAddr),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Process { pid, uid } => write!(f, "local process {pid} (uid {uid})"),
            Source::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// The limits of one gate.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GateLimits {
    /// Handshakes in flight at most, over all sources.
    pub max_in_flight: usize,
    /// Handshakes in flight at most from one source.
    pub per_source: usize,
    /// Failed handshakes from one source within `failure_window` after
    /// which it is refused for `block_for`.
    pub max_failures: u32,
    /// See `max_failures`.
    pub failure_window: Duration,
    /// How long a source that failed too often is refused.
    pub block_for: Duration,
}

impl GateLimits {
    /// The limits of a server's TCP gate: 64 handshakes in flight, 16 from
    /// one address; 20 failures within a minute block an address for a minute.
    pub const TCP: GateLimits = GateLimits {
        max_in_flight: 64,
        per_source: 16,
        max_failures: 20,
        failure_window: Duration::from_secs(60),
        block_for: Duration::from_secs(60),
    };

    /// The limits of a server's local gate (only processes of the server's
    /// user get this far): as for TCP, one process being one source.
    pub const LOCAL: GateLimits = GateLimits::TCP;
}

/// Whether a new connection may start its handshake.
#[derive(Debug)]
pub(crate) enum Admission {
    /// Yes: hold the ticket until the handshake ends.
    Go(Ticket),
    /// Too many handshakes in flight (from this source or in all): answer
    /// `#BUSY#` and close.
    Busy,
    /// The source failed too often lately: answer `#FAILURE#` and close.
    Blocked,
}

/// The most sources whose failures a gate remembers (older, expired
/// entries are forgotten first; past this, new sources are not tracked).
const MAX_TRACKED: usize = 4096;
/// Warn lines about failures and refusals per [`LOG_PERIOD`], at most.
const LOG_BUDGET: u32 = 10;
/// See [`LOG_BUDGET`].
const LOG_PERIOD: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    since: Instant,
    blocked_until: Option<Instant>,
}

/// A budget of log lines per period; what is over it is counted and
/// reported with the next line that fits.
#[derive(Debug)]
struct LogBudget {
    period_start: Instant,
    used: u32,
    suppressed: u64,
}

impl LogBudget {
    fn new() -> LogBudget {
        LogBudget {
            period_start: Instant::now(),
            used: 0,
            suppressed: 0,
        }
    }

    /// `Some(lines suppressed since the last one)` if a line may be logged now.
    fn take(&mut self, now: Instant) -> Option<u64> {
        if now.duration_since(self.period_start) >= LOG_PERIOD {
            self.period_start = now;
            self.used = 0;
        }
        if self.used < LOG_BUDGET {
            self.used += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

#[derive(Debug)]
struct GateState {
    in_flight: usize,
    per_source: HashMap<Source, usize>,
    failures: HashMap<Source, Failures>,
    log: LogBudget,
}

/// One transport's gate (see the module docs).
#[derive(Debug)]
pub(crate) struct Gate {
    /// "local" or "TCP", for log lines.
    transport: &'static str,
    limits: GateLimits,
    state: Mutex<GateState>,
}

impl Gate {
    pub fn new(transport: &'static str, limits: GateLimits) -> Arc<Gate> {
        Arc::new(Gate {
            transport,
            limits,
            state: Mutex::new(GateState {
                in_flight: 0,
                per_source: HashMap::new(),
                failures: HashMap::new(),
                log: LogBudget::new(),
            }),
        })
    }

    /// Decides whether a new connection from `source` may start its handshake.
    pub fn admit(self: &Arc<Self>, source: Source) -> Admission {
        let now = Instant::now();
        let mut st = self.state.lock();
        match st.failures.get(&source).and_then(|f| f.blocked_until) {
            Some(until) if now < until => {
                if let Some(suppressed) = st.log.take(now) {
                    tracing::warn!(
                        transport = self.transport,
                        %source,
                        suppressed,
                        "manager refused a connection from a source that failed the \
                         authkey handshake too often"
                    );
                }
                return Admission::Blocked;
            }
            // The block is over: the source starts afresh.
            Some(_) => {
                st.failures.remove(&source);
            }
            None => {}
        }
        let from_source = st.per_source.get(&source).copied().unwrap_or(0);
        if st.in_flight >= self.limits.max_in_flight || from_source >= self.limits.per_source {
            if let Some(suppressed) = st.log.take(now) {
                tracing::warn!(
                    transport = self.transport,
                    %source,
                    in_flight = st.in_flight,
                    from_source,
                    suppressed,
                    "manager has too many handshakes in flight: told a new connection to retry"
                );
            }
            return Admission::Busy;
        }
        st.in_flight += 1;
        *st.per_source.entry(source).or_insert(0) += 1;
        Admission::Go(Ticket {
            gate: self.clone(),
            source,
        })
    }

    /// Records a failed handshake from `source` (a wrong key or garbage):
    /// logs it, and blocks the source once it failed too often.
    pub fn failed(&self, source: Source, error: &Error) {
        let now = Instant::now();
        let limits = self.limits;
        let mut st = self.state.lock();
        if !st.failures.contains_key(&source) && st.failures.len() >= MAX_TRACKED {
            st.failures.retain(|_, f| match f.blocked_until {
                Some(until) => now < until,
                None => now.duration_since(f.since) < limits.failure_window,
            });
        }
        let tracked = st.failures.len() < MAX_TRACKED || st.failures.contains_key(&source);
        let mut blocked_now = false;
        let mut count = 1;
        if tracked {
            let f = st.failures.entry(source).or_insert(Failures {
                count: 0,
                since: now,
                blocked_until: None,
            });
            if now.duration_since(f.since) >= limits.failure_window {
                *f = Failures {
                    count: 0,
                    since: now,
                    blocked_until: None,
                };
            }
            f.count += 1;
            count = f.count;
            if f.count >= limits.max_failures && f.blocked_until.is_none() {
                f.blocked_until = Some(now + limits.block_for);
                blocked_now = true;
            }
        }
        if blocked_now {
            // Always logged: once per source and block.
            tracing::warn!(
                transport = self.transport,
                %source,
                failures = count,
                blocked_secs = limits.block_for.as_secs(),
                "manager blocks a source that keeps failing the authkey handshake"
            );
        } else if let Some(suppressed) = st.log.take(now) {
            tracing::warn!(
                transport = self.transport,
                %source,
                failures = count,
                suppressed,
                error = %error,
                "manager refused a client that failed the authkey handshake"
            );
        }
    }

    /// Logs (rate limited) a connection refused before its handshake for a
    /// reason the caller names (another user, for example).
    pub fn log_refused(&self, source: Source, reason: &str) {
        let mut st = self.state.lock();
        if let Some(suppressed) = st.log.take(Instant::now()) {
            tracing::warn!(
                transport = self.transport,
                %source,
                suppressed,
                "manager refused a connection: {reason}"
            );
        }
    }

    /// Handshakes in flight now (for tests).
    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.state.lock().in_flight
    }

    fn release(&self, source: Source) {
        let mut st = self.state.lock();
        st.in_flight = st.in_flight.saturating_sub(1);
        if let Some(n) = st.per_source.get_mut(&source) {
            *n -= 1;
            if *n == 0 {
                st.per_source.remove(&source);
            }
        }
    }
}

/// A handshake's place at the gate, given back on drop.
#[derive(Debug)]
pub(crate) struct Ticket {
    gate: Arc<Gate>,
    source: Source,
}

impl Ticket {
    /// Where the connection comes from.
    pub fn source(&self) -> Source {
        self.source
    }

    /// The handshake failed with `error`: count it against the source if it
    /// says something about the source (a wrong key, garbage), and give the
    /// place back.
    pub fn handshake_failed(self, error: &Error) {
        match error {
            Error::Authentication(_) | Error::Protocol(_) => self.gate.failed(self.source, error),
            // A peer that left or went quiet tried nothing; the deadline
            // and the caps deal with it.
            _ => tracing::debug!(
                transport = self.gate.transport,
                source = %self.source,
                %error,
                "manager handshake ended early"
            ),
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.gate.release(self.source);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIGHT: GateLimits = GateLimits {
        max_in_flight: 4,
        per_source: 2,
        max_failures: 3,
        failure_window: Duration::from_secs(600),
        block_for: Duration::from_secs(600),
    };

    fn ip(last: u8) -> Source {
        Source::Ip(IpAddr::from([10, 0, 0, last]))
    }

    #[test]
    fn one_source_fills_its_share_and_others_still_get_in() {
        let gate = Gate::new("test", TIGHT);
        let a1 = gate.admit(ip(1));
        let a2 = gate.admit(ip(1));
        assert!(matches!(a1, Admission::Go(_)) && matches!(a2, Admission::Go(_)));
        assert!(matches!(gate.admit(ip(1)), Admission::Busy));
        let b1 = gate.admit(ip(2));
        let b2 = gate.admit(ip(2));
        assert!(matches!(b1, Admission::Go(_)) && matches!(b2, Admission::Go(_)));
        // The global cap.
        assert!(matches!(gate.admit(ip(3)), Admission::Busy));
        assert_eq!(gate.in_flight(), 4);
        drop(a1);
        assert_eq!(gate.in_flight(), 3);
        assert!(matches!(gate.admit(ip(3)), Admission::Go(_)));
        drop((a2, b1, b2));
        assert_eq!(gate.in_flight(), 0);
    }

    #[test]
    fn a_source_that_keeps_failing_is_blocked_and_no_other() {
        let gate = Gate::new("test", TIGHT);
        let wrong = Error::Authentication("wrong key".into());
        for _ in 0..TIGHT.max_failures {
            let Admission::Go(t) = gate.admit(ip(1)) else {
                panic!("refused before failing enough")
            };
            t.handshake_failed(&wrong);
        }
        assert!(matches!(gate.admit(ip(1)), Admission::Blocked));
        assert!(matches!(gate.admit(ip(2)), Admission::Go(_)));
        assert_eq!(gate.in_flight(), 0);
    }

    #[test]
    fn quiet_peers_are_not_counted_as_failures() {
        let gate = Gate::new("test", TIGHT);
        for _ in 0..10 {
            let Admission::Go(t) = gate.admit(ip(1)) else {
                panic!("a quiet peer was blocked")
            };
            t.handshake_failed(&Error::Closed);
        }
        assert!(matches!(gate.admit(ip(1)), Admission::Go(_)));
    }

    #[test]
    fn a_block_ends_and_old_failures_expire() {
        let limits = GateLimits {
            failure_window: Duration::ZERO,
            block_for: Duration::ZERO,
            ..TIGHT
        };
        let gate = Gate::new("test", limits);
        let wrong = Error::Authentication("wrong key".into());
        for _ in 0..10 {
            let Admission::Go(t) = gate.admit(ip(1)) else {
                panic!("an expired block still refused")
            };
            t.handshake_failed(&wrong);
        }
    }

    #[test]
    fn the_log_budget_counts_what_it_drops() {
        let mut log = LogBudget::new();
        let now = Instant::now();
        for _ in 0..LOG_BUDGET {
            assert_eq!(log.take(now), Some(0));
        }
        assert_eq!(log.take(now), None);
        assert_eq!(log.take(now), None);
        assert_eq!(log.take(now + LOG_PERIOD), Some(2));
    }
}
