//! Process-level calls: identity, fork, exec, wait, signals, pidfds.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;

use std::path::Path;
use std::sync::Once;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

use super::{retry_eintr, syscall};

static PID: AtomicI32 = AtomicI32::new(0);
/// This process's start time in clock ticks since boot (0: not read yet).
static START_TICKS: AtomicU64 = AtomicU64::new(0);
static ATFORK: Once = Once::new();
/// How many times this process has forked or tried to.
static FORKS: AtomicU64 = AtomicU64::new(0);

/// How many times this process has forked or tried to (it only grows).
pub fn fork_count() -> u64 {
    FORKS.load(Ordering::Acquire)
}

extern "C" fn reset_after_fork() {
    PID.store(0, Ordering::Relaxed);
    START_TICKS.store(0, Ordering::Relaxed);
}

fn install_atfork() {
    ATFORK.call_once(|| {
        // SAFETY: registering a handler that only stores to atomics, which is
        // async-signal-safe and valid in a freshly forked child.
        unsafe {
            libc::pthread_atfork(None, None, Some(reset_after_fork));
        }
    });
}

/// This process's id, cached (and refreshed after any fork).
#[inline]
pub fn getpid() -> i32 {
    let pid = PID.load(Ordering::Relaxed);
    if pid != 0 {
        return pid;
    }
    install_atfork();
    // SAFETY: getpid has no preconditions and cannot fail.
    let pid = unsafe { libc::getpid() };
    PID.store(pid, Ordering::Relaxed);
    pid
}

/// The parent process id as the kernel sees it now (1 or a subreaper once the parent died).
#[cfg(test)]
pub fn getppid() -> i32 {
    // SAFETY: getppid has no preconditions and cannot fail.
    unsafe { libc::getppid() }
}

/// The calling thread's id.
pub fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions and cannot fail.
    unsafe { libc::gettid() }
}

/// State letter and start time (clock ticks since boot) of process `pid`,
/// from `/proc/<pid>/stat`; `None` if there is no such process.
fn proc_stat(pid: i32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: skip to the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    // After the name, field 3 is the state; the start time is field 22.
    let ticks = fields.nth(18)?.parse().ok()?;
    Some((state, ticks))
}

/// Start time (clock ticks since boot) of process `pid`.
///
/// `None` if there is no such process. Together with the pid it names one
/// process even when pids are reused.
pub fn start_ticks(pid: i32) -> Option<u64> {
    proc_stat(pid).map(|(_, ticks)| ticks)
}

/// This process's own start time, cached.
#[inline]
pub fn own_start_ticks() -> u64 {
    let t = START_TICKS.load(Ordering::Relaxed);
    if t != 0 {
        return t;
    }
    install_atfork();
    let t = start_ticks(getpid()).unwrap_or(1).max(1);
    START_TICKS.store(t, Ordering::Relaxed);
    t
}

/// Whether process `pid` is running (not ended, not a zombie) and, if
/// `ticks` is given, is the process that started at that time rather than a
/// later one that reused the pid. Only the low 32 bits of `ticks` are compared.
pub fn is_alive(pid: i32, ticks: Option<u64>) -> bool {
    if pid <= 0 {
        return false;
    }
    match proc_stat(pid) {
        None => false,
        Some((state, _)) if state == 'Z' || state == 'X' => false,
        Some((_, actual)) => ticks.is_none_or(|t| t as u32 == actual as u32),
    }
}

/// The result of [`fork`] as seen by each side.
pub enum Forked {
    /// In the parent: the child's pid.
    Parent(i32),
    /// In the child.
    Child,
}

/// Forks the process.
///
/// # Safety
///
/// In the child only the calling thread exists, with every lock another
/// thread held still held: the caller must keep to work that is valid
/// after fork (glibc keeps malloc usable; the runtime's own tables are held
/// across the fork by their fork guards), and must not let the child touch
/// a resource whose owner is another thread of the parent. The child ends
/// with [`exit_now`].
pub unsafe fn fork() -> std::io::Result<Forked> {
    install_atfork();
    // Counted before the fork, so the child inherits the new count too and
    // the parent does not write the counter's page (a copy) after it.
    FORKS.fetch_add(1, Ordering::AcqRel);
    // SAFETY: fork takes no arguments; what the child may do afterwards is
    // this function's own contract, which the caller accepted.
    let pid = syscall!(unsafe { libc::fork() })?;
    Ok(if pid == 0 {
        Forked::Child
    } else {
        Forked::Parent(pid)
    })
}

/// Runs `f` when the process exits normally (C's `atexit`).
pub fn at_exit(f: extern "C" fn()) -> std::io::Result<()> {
    // SAFETY: registering a plain `extern "C" fn()` with the C runtime.
    let res = unsafe { libc::atexit(f) };
    if res == 0 {
        Ok(())
    } else {
        Err(std::io::Error::other("atexit refused the handler"))
    }
}

/// Ends the process at once with `code`, without running exit handlers.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit has no preconditions and does not return.
    unsafe { libc::_exit(code) }
}

/// Starts `exe` with `env` added and `channel` as its standard input.
///
/// Passing the channel as stdin lets the C library start the child with
/// `posix_spawn` (a vfork: no copy of this process's page tables), which a
/// `pre_exec` hook would prevent. The child moves the channel off fd 0 and
/// puts `/dev/null` there ([`take_stdin_channel`]). stdout and stderr are
/// inherited, and the child stays in this process group, as in Python.
pub fn spawn_exec(
    exe: &Path,
    argv0: Option<&OsString>,
    env: &[(&str, String)],
    channel: OwnedFd,
) -> std::io::Result<i32> {
    let mut cmd = std::process::Command::new(exe);
    if let Some(argv0) = argv0 {
        cmd.arg0(argv0);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(std::process::Stdio::from(channel));
    let child = cmd.spawn()?;
    // The Child handle is dropped without waiting: the caller reaps by pid.
    Ok(child.id() as i32)
}

/// In a spawned child: moves the channel its parent passed as stdin to a new
/// close-on-exec descriptor and reopens stdin on `/dev/null`.
pub fn take_stdin_channel() -> std::io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC makes a new descriptor (numbered 3 or above)
    // for whatever fd 0 refers to; it closes nothing.
    let moved = syscall!(unsafe { libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 3) })?;
    // SAFETY: F_DUPFD_CLOEXEC just returned this new descriptor; we own it.
    let channel = unsafe { OwnedFd::from_raw_fd(moved) };
    let null = std::fs::File::open("/dev/null")?;
    // SAFETY: `null` is open; replacing fd 0 (standard input, which this
    // process owns and whose channel we just moved away) is the point.
    super::retry_eintr(|| syscall!(unsafe { libc::dup2(null.as_raw_fd(), 0) }))?;
    Ok(channel)
}

/// Whether standard input is a socket (the launch channel of a spawned
/// child is one; a terminal, a pipe or `/dev/null` is not).
pub fn stdin_is_socket() -> bool {
    std::fs::read_link("/proc/self/fd/0")
        .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"))
}

/// How a child process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this code.
    Exited(i32),
    /// A signal ended it.
    Signaled(i32),
}

impl ExitStatus {
    /// Python's `exitcode`: the exit code, or minus the signal number.
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Exited(c) => c,
            ExitStatus::Signaled(s) => -s,
        }
    }
}

/// Reaps child `pid` if it has ended; `Ok(None)` if it is still running.
pub fn try_wait(pid: i32) -> std::io::Result<Option<ExitStatus>> {
    wait_inner(pid, libc::WNOHANG)
}

/// Waits for child `pid` to end and reaps it.
pub fn wait(pid: i32) -> std::io::Result<ExitStatus> {
    loop {
        if let Some(status) = wait_inner(pid, 0)? {
            return Ok(status);
        }
    }
}

fn wait_inner(pid: i32, flags: libc::c_int) -> std::io::Result<Option<ExitStatus>> {
    let mut status: libc::c_int = 0;
    // SAFETY: `status` is a live int the kernel writes the status into.
    let res = retry_eintr(|| syscall!(unsafe { libc::waitpid(pid, &mut status, flags) }))?;
    if res == 0 {
        return Ok(None);
    }
    if libc::WIFEXITED(status) {
        Ok(Some(ExitStatus::Exited(libc::WEXITSTATUS(status))))
    } else if libc::WIFSIGNALED(status) {
        Ok(Some(ExitStatus::Signaled(libc::WTERMSIG(status))))
    } else {
        Ok(None)
    }
}

/// Blocks until child `pid` has ended, leaving it waitable (not reaped).
///
/// Also returns `Ok` when `pid` is not, or no longer, a child of this process.
pub fn wait_ended(pid: i32) -> std::io::Result<()> {
    // SAFETY: `siginfo_t` is plain old data; all-zero is a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let flags = libc::WEXITED | libc::WNOWAIT;
    let waited = retry_eintr(|| {
        // SAFETY: `info` is a live siginfo_t the kernel fills in.
        syscall!(unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) })
    });
    match waited {
        Err(e) if e.raw_os_error() == Some(libc::ECHILD) => Ok(()),
        other => other.map(drop),
    }
}

/// Sends `signal` to process `pid`.
pub fn kill(pid: i32, signal: i32) -> std::io::Result<()> {
    if pid <= 0 {
        return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
    }
    // SAFETY: kill takes plain integers and touches no memory of ours.
    syscall!(unsafe { libc::kill(pid, signal) })?;
    Ok(())
}

/// The signal numbers callers need by name.
pub mod signal {
    /// SIGTERM.
    pub const TERM: i32 = libc::SIGTERM;
    /// SIGKILL.
    pub const KILL: i32 = libc::SIGKILL;
}

/// A descriptor that becomes readable when process `pid` ends.
pub fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the syscall returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// The number of CPUs this process may run on.
pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Identity of the running executable: device, inode, size and modification time.
pub fn exe_identity(path: &Path) -> std::io::Result<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok(format!(
        "{}:{}:{}:{}.{}",
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec()
    ))
}

/// Whether this process runs exactly one thread (from `/proc/self/status`);
/// `false` when that cannot be read.
pub fn is_single_threaded() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .is_some_and(|n| n.trim() == "1")
    })
}
