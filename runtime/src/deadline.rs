//! One deadline-based core for every `x` / `try_x` / `x_timeout` triple.

use std::time::{Duration, Instant};

/// When a blocking call must give up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// Never: block until done.
    Never,
    /// Do not wait at all.
    Now,
    /// Wait until this instant.
    At(Instant, Duration),
}

/// The result of a wait of `timeout`: a zero timeout is a try underneath
/// ([`Deadline::after`]), whose `WouldBlock` the caller of a timed wait is
/// told as the `Timeout` it asked for, on every flavour alike.
pub(crate) fn timed<T>(result: crate::Result<T>, timeout: Duration) -> crate::Result<T> {
    match result {
        Err(crate::Error::WouldBlock) => Err(crate::Error::Timeout(timeout)),
        other => other,
    }
}

impl Deadline {
    /// A deadline `timeout` from now (`Duration::ZERO` means [`Deadline::Now`]).
    pub fn after(timeout: Duration) -> Deadline {
        if timeout.is_zero() {
            return Deadline::Now;
        }
        match Instant::now().checked_add(timeout) {
            Some(at) => Deadline::At(at, timeout),
            None => Deadline::Never,
        }
    }

    /// From Python's optional timeout.
    pub fn from_timeout(timeout: Option<Duration>) -> Deadline {
        timeout.map_or(Deadline::Never, Deadline::after)
    }

    /// Time left: `None` for no limit, `Some(ZERO)` once passed.
    pub fn remaining(&self) -> Option<Duration> {
        match self {
            Deadline::Never => None,
            Deadline::Now => Some(Duration::ZERO),
            Deadline::At(at, _) => Some(at.saturating_duration_since(Instant::now())),
        }
    }

    /// Whether the deadline has passed.
    pub fn expired(&self) -> bool {
        self.remaining().is_some_and(|d| d.is_zero())
    }

    /// The time left, capped at `slice` (for waits that wake up to check for dead peers).
    pub fn slice(&self, slice: Duration) -> Duration {
        self.remaining().map_or(slice, |r| r.min(slice))
    }

    /// The earlier of two deadlines.
    pub fn min(self, other: Deadline) -> Deadline {
        match (self, other) {
            (Deadline::Never, d) | (d, Deadline::Never) => d,
            (Deadline::Now, _) | (_, Deadline::Now) => Deadline::Now,
            (Deadline::At(a, _), Deadline::At(b, _)) => {
                if a <= b {
                    self
                } else {
                    other
                }
            }
        }
    }

    /// The error to return when this deadline ran out.
    pub fn timeout_error(&self) -> crate::Error {
        match self {
            Deadline::At(_, total) => crate::Error::Timeout(*total),
            _ => crate::Error::Timeout(Duration::ZERO),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_earlier_deadline_wins() {
        use super::Deadline;
        use std::time::Duration;
        let soon = Deadline::after(Duration::from_secs(1));
        let late = Deadline::after(Duration::from_secs(60));
        assert_eq!(soon.min(late), soon);
        assert_eq!(late.min(soon), soon);
        assert_eq!(Deadline::Never.min(late), late);
        assert_eq!(late.min(Deadline::Never), late);
        assert_eq!(Deadline::Now.min(late), Deadline::Now);
        assert_eq!(Deadline::Never.min(Deadline::Never), Deadline::Never);
    }
}
