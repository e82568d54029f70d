//! What crosses the launch socket: the parent's launch message, the child's outcome.
//!
//! Both are length-prefixed frames on a Unix stream socket. The launch
//! message carries the target as offsets from an anchor function in the
//! binary, checked against the binary's identity, so no function needs
//! registering: the child adds its own anchor address back.
//!
//! The outcome is queued whole by one write that never waits for the
//! parent: a payload too large for that travels in a memory file sent
//! with the frame's head. So the parent reads nothing while the child
//! runs; it waits for the exit alone, and wakes once.

use std::io::{IoSlice, Read};
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
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
///
/// No `Debug`: it carries the child's authkey.
#[derive(Archive, Serialize, Deserialize)]
#[rkyv(crate = rkyv)]
pub(crate) struct Launch {
    pub identity: String,
    pub anchor_check: i64,
    pub entry_offset: i64,
    pub target_offset: i64,
    pub args: Vec<u8>,
    pub fd_ids: Vec<u64>,
    pub name: String,
    /// The child's identity (Python's `_identity`), for its children's names.
    pub identity_numbers: Vec<u32>,
    pub daemon: bool,
    pub parent_pid: i32,
    pub parent_ticks: u64,
    pub parent_name: String,
    /// The first process of the program's tree (`current::program_root`).
    pub root: u64,
    /// The child's authkey (see [`crate::process::AuthKey`]).
    pub authkey: Vec<u8>,
    /// The method that started the child, which becomes its default start
    /// method (as in Python).
    pub start_method: Option<crate::process::StartMethod>,
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
    /// The child's `main` never ran `init()`, so it could not run the target.
    InitMissing,
    /// The target ended its process with `exit` (Python's `sys.exit`): its
    /// exit status is the outcome. Sent from the exit handler, never
    /// returned by an entry.
    Exited,
}

const TAG_RETURNED: u8 = 0;
const TAG_PANICKED: u8 = 1;
const TAG_FAILED: u8 = 2;
const TAG_MISMATCH: u8 = 3;
const TAG_INIT_MISSING: u8 = 4;
const TAG_EXITED: u8 = 5;
/// Set in the tag when the payload travels in the memory file sent with the head.
const IN_FILE: u8 = 0x80;
/// The outcome frame's head: tag, then the payload length.
const HEAD: usize = 9;

/// Frames up to this size always go inline: a Unix stream socket queues its
/// first write whole, without blocking, when it is at most half the send
/// buffer less 64 bytes, and no send buffer is smaller than about 4.5 KiB.
const ALWAYS_INLINE: usize = 2048;
/// The largest write Linux queues as one piece on a Unix stream socket
/// (32 KiB of pages plus a head), so the most that can go inline.
const MAX_INLINE: usize = 32 * 1024;

/// The most a launch message may claim to be; anything larger is corrupt.
const MAX_LAUNCH: usize = 1 << 34;

/// Whether a frame of `len` bytes is queued whole by the first write to `sock`.
fn fits_inline(sock: &UnixStream, len: usize) -> bool {
    if len <= ALWAYS_INLINE {
        return true;
    }
    len <= MAX_INLINE
        && sys::socket::send_buffer_size(sock.as_fd())
            .is_ok_and(|buf| len <= (buf / 2).saturating_sub(64))
}

impl Outcome {
    /// Sends the outcome frame: tag, length, payload.
    ///
    /// Nothing here waits for the parent to read, so the parent only has to
    /// wait for this process to exit: the frame goes in one write the socket
    /// queues whole, or its payload goes in a memory file sent with the head.
    /// If even that would block (it cannot on the fresh socket each child
    /// has), the outcome is given up: the parent reports a missing result.
    pub fn send(&self, sock: &UnixStream) -> std::io::Result<()> {
        let (tag, payload): (u8, &[u8]) = match self {
            Outcome::Returned(b) => (TAG_RETURNED, b),
            Outcome::Panicked(m) => (TAG_PANICKED, m.as_bytes()),
            Outcome::Failed(m) => (TAG_FAILED, m.as_bytes()),
            Outcome::Mismatch(m) => (TAG_MISMATCH, m.as_bytes()),
            Outcome::InitMissing => (TAG_INIT_MISSING, &[]),
            Outcome::Exited => (TAG_EXITED, &[]),
        };
        let mut head = [0u8; HEAD];
        head[1..].copy_from_slice(&(payload.len() as u64).to_le_bytes());
        let whole = HEAD + payload.len();
        if fits_inline(sock, whole) {
            head[0] = tag;
            let parts = [IoSlice::new(&head), IoSlice::new(payload)];
            // A frame that fits one queued piece goes whole or not at all.
            match sys::socket::send_nowait(sock.as_fd(), &parts, &[]) {
                Ok(n) if n == whole => return Ok(()),
                Ok(_) => return Err(std::io::Error::other("the outcome was cut short")),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        let file = std::fs::File::from(sys::memfd::memfd_create(
            "multiproc-outcome",
            payload.len() as u64,
        )?);
        file.write_all_at(payload, 0)?;
        head[0] = tag | IN_FILE;
        match sys::socket::send_nowait(sock.as_fd(), &[IoSlice::new(&head)], &[file.as_fd()])? {
            HEAD => Ok(()),
            _ => Err(std::io::Error::other("the outcome was cut short")),
        }
    }

    /// Whether `buf` (with `file`, the descriptor that came with it) holds a whole frame.
    pub fn is_complete(buf: &[u8], file: Option<&std::fs::File>) -> bool {
        match Self::head(buf) {
            None => false,
            Some((tag, _)) if tag & IN_FILE != 0 => file.is_some(),
            Some((_, len)) => (buf.len() - HEAD) as u64 >= len,
        }
    }

    /// How many more bytes the inline frame begun in `buf` needs (at most
    /// the largest inline frame), or `None` before its head arrived.
    pub fn missing(buf: &[u8]) -> Option<usize> {
        match Self::head(buf)? {
            (tag, _) if tag & IN_FILE != 0 => Some(0),
            (_, len) => {
                let len = len.min(MAX_INLINE as u64) as usize;
                Some((HEAD + len).saturating_sub(buf.len()))
            }
        }
    }

    fn head(buf: &[u8]) -> Option<(u8, u64)> {
        let mut len = [0u8; 8];
        len.copy_from_slice(buf.get(1..HEAD)?);
        Some((buf[0], u64::from_le_bytes(len)))
    }

    /// Parses a complete frame from `buf` and `file`; `None` if it is not complete.
    pub fn parse(buf: &[u8], file: Option<&std::fs::File>) -> Option<Result<Outcome>> {
        if !Self::is_complete(buf, file) {
            return None;
        }
        let (tag, len) = Self::head(buf)?;
        let payload = match file {
            Some(file) if tag & IN_FILE != 0 => match read_file(file, len) {
                Ok(payload) => payload,
                Err(e) => return Some(Err(e)),
            },
            _ => buf[HEAD..HEAD + len as usize].to_vec(),
        };
        let text = || String::from_utf8_lossy(&payload).into_owned();
        Some(match tag & !IN_FILE {
            TAG_RETURNED => Ok(Outcome::Returned(payload)),
            TAG_PANICKED => Ok(Outcome::Panicked(text())),
            TAG_FAILED => Ok(Outcome::Failed(text())),
            TAG_MISMATCH => Ok(Outcome::Mismatch(text())),
            TAG_INIT_MISSING => Ok(Outcome::InitMissing),
            TAG_EXITED => Ok(Outcome::Exited),
            tag => Err(Error::Protocol(format!("unknown outcome tag {tag}"))),
        })
    }
}

/// The first `len` bytes of the memory file a child sent its payload in.
fn read_file(file: &std::fs::File, len: u64) -> Result<Vec<u8>> {
    if file.metadata()?.len() < len {
        return Err(Error::Protocol(
            "the outcome file is shorter than its frame says".into(),
        ));
    }
    let mut payload = vec![0u8; len as usize];
    file.read_exact_at(&mut payload, 0)?;
    Ok(payload)
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

/// Whether `offset` (from the anchor) lands in this binary's own code: a
/// check on offsets that came from outside the program (a distributed
/// pool's task entry), so that a wild one is refused instead of jumped to.
/// It cannot tell a function's start from the middle of one. `true` when
/// the maps cannot be read or do not name the binary (no descriptor left;
/// the file replaced on disk): the check is then skipped, not failed. Only
/// a successful read is kept: a process out of descriptors once checks
/// again next time.
#[cfg(feature = "redis")]
pub(crate) fn in_own_code(offset: i64) -> bool {
    static CODE: OnceLock<Vec<(i64, i64)>> = OnceLock::new();
    let ranges = match CODE.get() {
        Some(r) => r,
        None => {
            let (Ok(exe), Ok(maps)) = (
                std::fs::read_link("/proc/self/exe"),
                std::fs::read_to_string("/proc/self/maps"),
            ) else {
                return true;
            };
            let anchor = anchor as *const () as i64;
            CODE.get_or_init(|| {
                sys::process::executable_ranges(&maps, &exe)
                    .into_iter()
                    .map(|(start, end)| (start as i64 - anchor, end as i64 - anchor))
                    .collect()
            })
        }
    };
    ranges.is_empty() || ranges.iter().any(|&(lo, hi)| (lo..hi).contains(&offset))
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

/// The entry point for targets of type `fn() -> R` (no argument).
pub(crate) fn entry_no_arg<R: Shareable>(target: *const (), _args: &[u8]) -> Outcome {
    // SAFETY: as in `entry`: `target` is the parent's `fn() -> R`, found at
    // the same offset in this same binary, and this entry was instantiated
    // for the same R.
    let f = unsafe { std::mem::transmute::<*const (), fn() -> R>(target) };
    run_caught(f)
}

/// Sets up the calling thread's encoder (rkyv's thread-local arena).
///
/// A forked child's first encode would otherwise build the arena and
/// register its destructor, which resolves a symbol lazily in the C
/// library: about ten page faults in every child. Done before the fork,
/// it happens once and the children inherit it.
pub(crate) fn prepare_encoder() {
    let _ = ().encode();
}

/// Runs `f`, catching a panic, and encodes what it returned.
#[inline]
pub(crate) fn run_caught<R: Shareable>(f: impl FnOnce() -> R) -> Outcome {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => match r.encode() {
            Ok(bytes) => Outcome::Returned(bytes.into_vec()),
            Err(e) => Outcome::Failed(format!("cannot encode the target's result: {e}")),
        },
        Err(payload) => Outcome::Panicked(panic_message(payload.as_ref())),
    }
}

/// Runs `f` (user code: a codec, a `Drop`, a callback), catching a panic:
/// its message instead. The payload is leaked, since its own `Drop` may
/// panic too.
pub(crate) fn caught<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        let message = panic_message(payload.as_ref());
        std::mem::forget(payload);
        message
    })
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

#[cfg(all(test, feature = "redis"))]
mod tests {
    use super::*;

    fn a_task(x: u32) -> u32 {
        x + 1
    }

    #[test]
    fn offsets_into_this_binarys_code_pass_and_wild_ones_do_not() {
        let real = offset_of(a_task as *const ());
        assert!(in_own_code(real));
        assert!(in_own_code(offset_of(anchor as *const ())));
        assert!(!in_own_code(real.wrapping_add(1 << 40)));
        assert!(!in_own_code(real.wrapping_sub(1 << 40)));
        assert!(!in_own_code(i64::MAX));
    }
}
