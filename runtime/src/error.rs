//! The one error type of the crate.

use std::time::Duration;

/// Everything that can go wrong in multiproc, with variants a caller can match.
///
/// Blocking calls come in three forms (`x`, `try_x`, `x_timeout`); the
/// non-blocking and timed forms report [`Error::Empty`], [`Error::Full`],
/// [`Error::WouldBlock`] or [`Error::Timeout`] instead of waiting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A timed wait ran out.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// A non-blocking call found nothing to take.
    #[error("empty")]
    Empty,
    /// A non-blocking call found no room: a queue at its `maxsize`, or
    /// whose ring of bytes is full (even a `Queue::new()`, which has no
    /// `maxsize`, holds at most its ring's 1 MiB of messages until a
    /// consumer takes some: see `Queue::with_capacity_bytes`).
    #[error("full")]
    Full,
    /// A non-blocking call could not proceed at once (a lock was held, for example).
    #[error("would block")]
    WouldBlock,
    /// The object was closed (by this end, or the peer closed or died).
    #[error("closed")]
    Closed,
    /// A message was longer than the buffer given to receive it (Python's
    /// `BufferTooShort`). The message was taken from the connection: here
    /// it is, whole.
    #[error("buffer too short for a message of {} bytes", .0.len())]
    BufferTooShort(Vec<u8>),
    /// A barrier was aborted, reset, timed out, or lost a party.
    #[error("broken barrier")]
    BrokenBarrier,
    /// A pool worker died while it held tasks.
    #[error("worker {pid} died ({})", describe_death(*.exitcode, *.signal))]
    WorkerDied {
        /// The worker's process id.
        pid: i32,
        /// Its exit code, if it exited.
        exitcode: Option<i32>,
        /// The signal that killed it, if one did.
        signal: Option<i32>,
    },
    /// A child process failed instead of returning a result.
    #[error("child process {pid} failed: {}", match (.panic, .exitcode, .signal) {
        (Some(msg), _, _) => format!("panicked: {msg}"),
        (None, code, sig) => describe_death(*code, *sig),
    })]
    ChildFailed {
        /// The child's process id.
        pid: i32,
        /// Its exit code, if it exited normally.
        exitcode: Option<i32>,
        /// The signal that ended it, if one did.
        signal: Option<i32>,
        /// The panic message, if the target panicked.
        panic: Option<String>,
    },
    /// A task run elsewhere (a pool worker, a manager server) failed there.
    #[error("remote error: {0}")]
    Remote(String),
    /// The input iterator of a pool call (`map`, `imap`, …) panicked.
    ///
    /// `imap` yields the results of the items before the panic first, then
    /// this error, then ends; the pool goes on working.
    #[error("the input iterator panicked: {message}")]
    InputPanicked {
        /// The panic message.
        message: String,
    },
    /// The peer did not prove knowledge of the authkey, or refused ours.
    #[error("authentication failed: {0}")]
    Authentication(String),
    /// A proxy's types do not match the object it refers to.
    #[error("type mismatch: expected {expected}, found {found}")]
    TypeMismatch {
        /// What the caller asked for.
        expected: String,
        /// What the object is.
        found: String,
    },
    /// The manager server is gone (killed, shut down, or unreachable).
    #[error("manager is gone: {0}")]
    ManagerGone(String),
    /// A value could not be encoded or decoded.
    #[error("codec error: {0}")]
    Codec(String),
    /// A frame or message was malformed, truncated or too large.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// An argument was out of range or otherwise invalid.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The call is not valid in the object's current state.
    #[error("invalid state: {0}")]
    InvalidState(String),
    /// An index was out of bounds.
    #[error("index {index} out of range for length {len}")]
    IndexOutOfRange {
        /// The index asked for.
        index: usize,
        /// The length of the sequence.
        len: usize,
    },
    /// A key was not present: a dict's key (its `Debug` form, as Python's
    /// `KeyError` shows the key's repr), a namespace's attribute or a
    /// remote manager's registered name.
    #[error("key not found: {0}")]
    KeyNotFound(String),
    /// A message (a manager request or response) is larger than the limit
    /// that applies to it. Nothing was sent or changed for that call, and
    /// the connection stays usable.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    MessageTooLarge {
        /// The message's size in bytes.
        size: usize,
        /// The largest size allowed there.
        limit: usize,
    },
    /// A manager server refused a request that would take the connection
    /// (or one segment) past a limit it was configured with. Nothing was
    /// created or stored, and the connection stays usable.
    #[error("quota exceeded: at most {limit} {what}")]
    QuotaExceeded {
        /// Which limit.
        what: Quota,
        /// Its value.
        limit: u64,
    },
    /// A named object (a shared memory segment, for example) does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A named object could not be created because one of that name exists.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// The operating system refused access (another user's 0600 segment, for example).
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// An object is smaller or larger than the caller said it would be.
    #[error("size mismatch for {what}: expected {expected} bytes, found {found}")]
    SizeMismatch {
        /// What was measured (a segment's name, for example).
        what: String,
        /// The size the caller needs or gave.
        expected: usize,
        /// The size the object has.
        found: usize,
    },
    /// A child started by spawn ran its binary's `main` without calling
    /// [`init`](crate::init) first, so it could not run its target: a test
    /// binary without `multiproc::init_before_main!()`, most often (its
    /// harness ran the tests again in the child).
    #[error(
        "child process {pid} could not run its target: its binary does not call \
         multiproc::init() first. In a test file (tests/*.rs), add \
         `multiproc::init_before_main!();` at the top; for unit tests, add it inside \
         the `#[cfg(test)]` module; in a program, make `multiproc::init();` the first \
         line of main"
    )]
    InitMissing {
        /// The child's process id.
        pid: i32,
    },
    /// A spawned child runs a different binary than its parent.
    #[error("binary mismatch: {0}")]
    BinaryMismatch(String),
    /// A backend that keeps objects outside this machine's processes (a
    /// Redis server) could not be reached, refused the connection (a wrong
    /// password, say), or went away in the middle of a call. The call may
    /// or may not have taken effect when the connection broke mid-call.
    #[error("{backend} unavailable: {cause}")]
    BackendUnavailable {
        /// Which backend (`"redis"`).
        backend: &'static str,
        /// What went wrong, as the backend's client reported it.
        cause: String,
    },
    /// An operating-system call failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// The limits a manager server sets on what one connection may hold (see
/// [`Error::QuotaExceeded`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Quota {
    /// Objects created through one connection and still alive.
    Objects,
    /// Bytes of values stored through one connection (keys and values
    /// still stored, and segments the server holds for it).
    Bytes,
    /// Bytes of one shared segment.
    SegmentBytes,
}

impl std::fmt::Display for Quota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Quota::Objects => "objects per connection",
            Quota::Bytes => "bytes stored per connection",
            Quota::SegmentBytes => "bytes per shared segment",
        })
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn describe_death(exitcode: Option<i32>, signal: Option<i32>) -> String {
    match (exitcode, signal) {
        (_, Some(sig)) if sig == crate::sys::signal::ABRT => format!(
            "killed by signal {sig} (SIGABRT: a stack overflow, a panic under panic = \
             \"abort\", or abort(); the child's stderr says which)"
        ),
        (_, Some(sig)) if crate::sys::signal::MEMORY_FAULTS.contains(&sig) => format!(
            "killed by signal {sig} (a memory fault: unsafe code, or a named shared \
             segment shrunk under its mapping)"
        ),
        (_, Some(sig)) => format!("killed by signal {sig}"),
        (Some(0), None) => {
            "exited with code 0 without returning a result (its target ended the process \
             with exit)"
                .to_string()
        }
        (Some(code), None) => format!("exited with code {code}"),
        (None, None) => "ended for an unknown reason".to_string(),
    }
}

impl Error {
    pub(crate) fn codec(e: impl std::fmt::Display) -> Self {
        // A codec error carried through the codec (a handle inside a value
        // that failed to open, say) is not wrapped twice.
        let text = e.to_string();
        match text.strip_prefix("codec error: ") {
            Some(inner) => Error::Codec(inner.to_owned()),
            None => Error::Codec(text),
        }
    }

    /// A failed bind, saying where: the io error keeps its kind (`AddrInUse`
    /// for a port in use) and gains the address in its text.
    pub(crate) fn cannot_listen(address: &dyn std::fmt::Display, e: std::io::Error) -> Self {
        Error::Io(std::io::Error::new(
            e.kind(),
            format!("cannot listen on {address}: {e}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_codec_error_carried_through_the_codec_says_so_once() {
        let inner = Error::codec("i/o error: segment gone");
        let outer = Error::codec(&inner);
        assert_eq!(outer.to_string(), "codec error: i/o error: segment gone");
    }
}
