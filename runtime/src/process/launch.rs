//! What crosses the launch socket: the parent's launch message, the child's outcome.
//!
//! Both are length-prefixed frames on a Unix stream socket. The launch
//! message carries the target as offsets from an anchor function in the
//! binary, checked against the binary's identity, so no function needs
//! registering: the child adds its own anchor address back.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::panic::AssertUnwindSafe;
use std::sync::OnceLock;

use rkyv::{Archive, Deserialize, Serialize};

use crate::codec::Shareable;
use crate::error::{Error, Result};
use crate::sys;

/// The environment variable that tells a spawned child where its launch socket is.
pub(crate) const CHILD_FD_ENV: &str = "MULTIPROC_CHILD_FD";
/// The value of [`CHILD_FD_ENV`] when the socket is the child's stdin.
pub(crate) const CHILD_FD_STDIN: &str = "stdin";

/// Everything a spawned child needs to run its target.
#[derive(Archive, Serialize, Deserialize, Debug)]
#[rkyv(crate = rkyv)]
pub(crate) struct Launch {
    pub identity: String,
    pub anchor_check: i64,
    pub entry_offset: i64,
    pub target_offset: i64,
    pub args: Vec<u8>,
    pub fd_ids: Vec<u64>,
    pub name: String,
    pub daemon: bool,
    pub parent_pid: i32,
    pub parent_ticks: u64,
    pub parent_name: String,
}

/// How a child's run ended, as sent back to the parent.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The target returned; its encoded result.
    Returned(Vec<u8>),
    /// The target panicked with this message.
    Panicked(String),
    /// The child could not run the target (bad arguments, result not encodable).
    Failed(String),
    /// The child runs a different binary than the parent.
    Mismatch(String),
}

const TAG_RETURNED: u8 = 0;
const TAG_PANICKED: u8 = 1;
const TAG_FAILED: u8 = 2;
const TAG_MISMATCH: u8 = 3;

/// The most a launch message may claim to be; anything larger is corrupt.
const MAX_LAUNCH: usize = 1 << 34;

impl Outcome {
    /// Writes the outcome frame: tag, length, payload.
    pub fn send(&self, sock: &mut UnixStream) -> std::io::Result<()> {
        let (tag, payload): (u8, &[u8]) = match self {
            Outcome::Returned(b) => (TAG_RETURNED, b),
            Outcome::Panicked(m) => (TAG_PANICKED, m.as_bytes()),
            Outcome::Failed(m) => (TAG_FAILED, m.as_bytes()),
            Outcome::Mismatch(m) => (TAG_MISMATCH, m.as_bytes()),
        };
        let mut head = [0u8; 9];
        head[0] = tag;
        head[1..].copy_from_slice(&(payload.len() as u64).to_le_bytes());
        sock.write_all(&head)?;
        sock.write_all(payload)?;
        sock.flush()
    }

    /// Parses a complete frame from `buf`; `None` if it is not complete yet.
    pub fn parse(buf: &[u8]) -> Option<Result<Outcome>> {
        if buf.len() < 9 {
            return None;
        }
        let mut len = [0u8; 8];
        len.copy_from_slice(&buf[1..9]);
        let len = u64::from_le_bytes(len) as usize;
        let payload = buf.get(9..9usize.checked_add(len)?)?;
        let text = || String::from_utf8_lossy(payload).into_owned();
        Some(match buf[0] {
            TAG_RETURNED => Ok(Outcome::Returned(payload.to_vec())),
            TAG_PANICKED => Ok(Outcome::Panicked(text())),
            TAG_FAILED => Ok(Outcome::Failed(text())),
            TAG_MISMATCH => Ok(Outcome::Mismatch(text())),
            tag => Err(Error::Protocol(format!("unknown outcome tag {tag}"))),
        })
    }
}

/// Sends the launch message with `fds` attached.
pub(crate) fn send_launch(
    sock: &UnixStream,
    launch: &Launch,
    fds: &[std::os::fd::BorrowedFd<'_>],
) -> Result<()> {
    let body = rkyv::to_bytes::<rkyv::rancor::Error>(launch).map_err(Error::codec)?;
    let mut frame = Vec::with_capacity(8 + body.len());
    frame.extend_from_slice(&(body.len() as u64).to_le_bytes());
    frame.extend_from_slice(&body);
    sys::socket::send_with_fds(sock.as_fd(), &frame, fds)?;
    Ok(())
}

/// Receives the launch message and the descriptors sent with it.
pub(crate) fn recv_launch(sock: &mut UnixStream) -> Result<(Launch, Vec<std::os::fd::OwnedFd>)> {
    let mut head = [0u8; 8];
    let mut got = 0;
    let mut fds = Vec::new();
    while got < head.len() {
        let (n, more) = sys::socket::recv_with_fds(sock.as_fd(), &mut head[got..])?;
        if n == 0 {
            return Err(Error::Closed);
        }
        got += n;
        fds.extend(more);
    }
    let len = u64::from_le_bytes(head) as usize;
    if len > MAX_LAUNCH {
        return Err(Error::Protocol("launch message too large".into()));
    }
    let mut body = rkyv::util::AlignedVec::<16>::with_capacity(len);
    body.resize(len, 0);
    sock.read_exact(&mut body)?;
    let launch = rkyv::from_bytes::<Launch, rkyv::rancor::Error>(&body).map_err(Error::codec)?;
    Ok((launch, fds))
}

/// The function whose address every target offset is measured from.
#[inline(never)]
pub(crate) fn anchor() -> u32 {
    std::hint::black_box(0x6d70_7263)
}

#[inline(never)]
fn anchor_check_fn() -> u32 {
    std::hint::black_box(0x6368_6b31)
}

/// The distance between two functions: equal in parent and child iff they run one layout.
pub(crate) fn anchor_check() -> i64 {
    (anchor_check_fn as *const () as i64).wrapping_sub(anchor as *const () as i64)
}

/// The offset of a function address from the anchor.
pub(crate) fn offset_of(addr: *const ()) -> i64 {
    (addr as i64).wrapping_sub(anchor as *const () as i64)
}

/// The function address at `offset` from the anchor in this process.
pub(crate) fn addr_at(offset: i64) -> *const () {
    (anchor as *const () as i64).wrapping_add(offset) as *const ()
}

/// Identity of the running binary (device, inode, size, mtime), computed once.
pub(crate) fn identity() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        sys::process::exe_identity(std::path::Path::new("/proc/self/exe"))
            .unwrap_or_else(|e| format!("unknown ({e})"))
    })
}

/// The shape of every spawn entry point: decode the argument, run, encode the result.
pub(crate) type EntryFn = fn(*const (), &[u8]) -> Outcome;

/// The entry point for targets of type `fn(A) -> R`.
pub(crate) fn entry<A: Shareable, R: Shareable>(target: *const (), args: &[u8]) -> Outcome {
    let arg = match A::decode(args) {
        Ok(a) => a,
        Err(e) => return Outcome::Failed(format!("cannot decode the target's argument: {e}")),
    };
    // SAFETY: `target` was computed from the parent's `fn(A) -> R` as an
    // offset from the anchor; the child checked that it runs the same binary
    // (identity and anchor distance), so the address is that same function,
    // and this entry was instantiated for the same A and R.
    let f = unsafe { std::mem::transmute::<*const (), fn(A) -> R>(target) };
    run_caught(move || f(arg))
}

/// Runs `f`, catching a panic, and encodes what it returned.
pub(crate) fn run_caught<R: Shareable>(f: impl FnOnce() -> R) -> Outcome {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => match r.encode() {
            Ok(bytes) => Outcome::Returned(bytes.into_vec()),
            Err(e) => Outcome::Failed(format!("cannot encode the target's result: {e}")),
        },
        Err(payload) => Outcome::Panicked(panic_message(payload.as_ref())),
    }
}

/// The text of a panic payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_string()
    }
}
