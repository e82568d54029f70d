//! What a waiter does when it cannot tell whether the process it waits on lives.
//!
//! Liveness is three-valued ([`Liveness`]): alive, dead, or unknown (the
//! check failed, typically because this process ran out of descriptors and
//! cannot open `/proc`). Only `Dead` hands a lock over, breaks a barrier,
//! ends a pipe or frees a client's objects. `Unknown` is treated as alive,
//! with one limit: a wait without a deadline that has not been able to tell
//! for [`GIVE_UP_AFTER`] fails with [`Error::Io`] instead of waiting on a
//! process that may have died unseen. Timed waits end at their deadline with
//! their usual error; a wait that would lose data by giving up (a consumer
//! half-way through a message) keeps waiting.
//!
//! Who a process is in shared memory is here too: [`my_word`] is the word a
//! process writes to name itself (a lock's holder, a segment's creator, a
//! pipe end's owner): its pid, and the low 32 bits of its start time above
//! it, so a process that reuses the pid is not taken for it.
//! [`holder_liveness`] asks whether the process a word names still lives.

use std::time::{Duration, Instant};

use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::sys;
pub use crate::sys::process::Liveness;

/// How long an untimed wait keeps waiting on a process whose liveness it
/// cannot check before it fails with [`Error::Io`].
pub(crate) const GIVE_UP_AFTER: Duration = Duration::from_secs(10);

/// The pid in a process-identity word (the low 31 bits; a lock keeps its
/// waiters flag in bit 31).
pub(crate) const PID_MASK: u64 = 0x7FFF_FFFF;

/// The word this process writes to name itself in shared memory (a lock's
/// holder, a pipe end's owner, a segment's creator).
#[inline]
pub(crate) fn my_word() -> u64 {
    let ticks = sys::process::own_start_ticks() as u32 as u64;
    (ticks << 32) | sys::process::getpid() as u64
}

/// Whether the process `word` names (a [`my_word`] of some process) still lives.
pub(crate) fn holder_liveness(word: u64) -> Liveness {
    let pid = (word & PID_MASK) as i32;
    if pid == sys::process::getpid() {
        // The pid is ours now: the holder is this process, unless the word
        // names an earlier process that had our pid (another start time).
        let theirs = (word >> 32) as u32;
        let mine = sys::process::own_start_ticks() as u32;
        return if theirs == 0 || mine == 0 || theirs == mine {
            Liveness::Alive
        } else {
            Liveness::Dead
        };
    }
    sys::process::liveness(pid, Some(word >> 32))
}

/// A liveness check that failed: which process, and the OS error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CannotTell {
    pub(crate) pid: i32,
    pub(crate) errno: i32,
}

impl CannotTell {
    /// The answer of a check of `pid`, if it could not tell.
    pub(crate) fn from(pid: i32, liveness: Liveness) -> Option<CannotTell> {
        match liveness {
            Liveness::Unknown { errno } => Some(CannotTell { pid, errno }),
            _ => None,
        }
    }

    /// The error an untimed wait gives up with.
    pub(crate) fn error(&self, what: &str, waited: Duration) -> Error {
        Error::Io(std::io::Error::other(format!(
            "cannot tell whether {what} (pid {}) is alive after {:.1?}: {}",
            self.pid,
            waited,
            std::io::Error::from_raw_os_error(self.errno)
        )))
    }
}

/// How long one wait has been unable to tell whether its peer lives.
#[derive(Debug)]
pub(crate) struct Doubt {
    since: Option<Instant>,
    limit: Duration,
}

impl Default for Doubt {
    fn default() -> Self {
        Doubt::with_limit(GIVE_UP_AFTER)
    }
}

impl Doubt {
    /// A doubt that gives up after `limit` (tests use short ones).
    pub(crate) fn with_limit(limit: Duration) -> Doubt {
        Doubt { since: None, limit }
    }

    /// Notes the answer of one check (`None`: it could tell).
    ///
    /// `Err(Io)` once a wait with no deadline has had only `Unknown`
    /// answers for the limit; a wait with a deadline never gives up here.
    pub(crate) fn note(
        &mut self,
        answer: Option<CannotTell>,
        deadline: &Deadline,
        what: &str,
    ) -> Result<()> {
        let Some(answer) = answer else {
            self.since = None;
            return Ok(());
        };
        let since = *self.since.get_or_insert_with(Instant::now);
        if *deadline == Deadline::Never && since.elapsed() >= self.limit {
            tracing::warn!(
                pid = answer.pid,
                errno = answer.errno,
                "giving up a wait on {what}: its liveness cannot be checked"
            );
            return Err(answer.error(what, since.elapsed()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMFILE: Option<CannotTell> = Some(CannotTell {
        pid: 42,
        errno: libc::EMFILE,
    });

    #[test]
    fn an_untimed_wait_gives_up_only_after_the_limit_of_unbroken_doubt() {
        let mut d = Doubt::with_limit(Duration::from_millis(30));
        assert!(d.note(EMFILE, &Deadline::Never, "x").is_ok());
        // A clear answer in between starts the count again.
        std::thread::sleep(Duration::from_millis(40));
        assert!(d.note(None, &Deadline::Never, "x").is_ok());
        assert!(d.note(EMFILE, &Deadline::Never, "x").is_ok());
        std::thread::sleep(Duration::from_millis(40));
        match d.note(EMFILE, &Deadline::Never, "the lock's holder") {
            Err(Error::Io(e)) => {
                let msg = e.to_string();
                assert!(msg.contains("pid 42"), "{msg}");
                assert!(msg.contains("the lock's holder"), "{msg}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_timed_wait_never_gives_up_here() {
        let mut d = Doubt::with_limit(Duration::ZERO);
        let deadline = Deadline::after(Duration::from_secs(3600));
        assert!(d.note(EMFILE, &deadline, "x").is_ok());
        assert!(d.note(EMFILE, &deadline, "x").is_ok());
        assert!(d.note(EMFILE, &Deadline::Now, "x").is_ok());
    }
}
