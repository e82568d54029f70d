//! Process-level calls: identity, fork, exec, wait, signals, pidfds.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;

use std::path::Path;
use std::sync::Once;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

use super::{retry_eintr, syscall};

static PID: AtomicI32 = AtomicI32::new(0);
/// This process's start time in clock ticks since boot (0: not read yet).
static START_TICKS: AtomicU64 = AtomicU64::new(0);
static ATFORK: Once = Once::new();

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
/// from `/proc/<pid>/stat`.
///
/// `Ok(None)` if the kernel says there is no such process (`ENOENT`,
/// `ESRCH`); any other failure (no descriptor left, no memory, no
/// permission, an unreadable line) is an error: it says nothing about the process.
fn proc_stat(pid: i32) -> std::io::Result<Option<(char, u64)>> {
    // Sleeping waiters call this every slice: one read into a buffer on the
    // stack, not `read_to_string`'s stat and reads of growing size.
    let mut buf = [0u8; 4096];
    let stat = match read_small(&format!("/proc/{pid}/stat"), &mut buf) {
        Ok(s) => s,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ESRCH)) => return Ok(None),
        Err(e) => return Err(e),
    };
    parse_stat(stat).map(Some).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("unreadable /proc/{pid}/stat"),
        )
    })
}

/// The text of a small file (a line of `/proc`) read into `buf`; a file
/// that does not fit is `InvalidData`, as one that is not UTF-8.
fn read_small<'b>(path: &str, buf: &'b mut [u8]) -> std::io::Result<&'b str> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut len = 0;
    loop {
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        if len == buf.len() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{path} is longer than {} bytes", buf.len()),
            ));
        }
    }
    std::str::from_utf8(&buf[..len])
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

fn parse_stat(stat: &str) -> Option<(char, u64)> {
    // The command name (field 2) may hold spaces and parentheses: skip to the last ')'.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    // After the name, field 3 is the state; the start time is field 22.
    let ticks = fields.nth(18)?.parse().ok()?;
    Some((state, ticks))
}

/// Start time (clock ticks since boot) of process `pid`.
///
/// `None` if there is no such process or `/proc` cannot be read. Together
/// with the pid it names one process even when pids are reused.
pub fn start_ticks(pid: i32) -> Option<u64> {
    proc_stat(pid).ok().flatten().map(|(_, ticks)| ticks)
}

/// [`START_TICKS`] once this process's start time could not be read: the
/// process then writes 0 in its words, which peers compare by pid alone.
const TICKS_UNKNOWN: u64 = u64::MAX;

/// This process's own start time, cached; 0 if it could not be read.
///
/// The value is read once per process (a forked child works it out from the
/// clock, without opening a file) and never changes after, so every word
/// this process writes names it the same way. 0 stands for "unknown": a
/// word with 0 in its start-time half is compared by pid alone (see [`liveness`]).
#[inline]
pub fn own_start_ticks() -> u64 {
    match START_TICKS.load(Ordering::Relaxed) {
        0 => read_own_start_ticks(),
        TICKS_UNKNOWN => 0,
        t => t,
    }
}

#[cold]
fn read_own_start_ticks() -> u64 {
    install_atfork();
    let t = match proc_stat(getpid()) {
        Ok(Some((_, t))) if t != 0 && t != TICKS_UNKNOWN => t,
        Ok(Some(_)) => TICKS_UNKNOWN,
        Ok(None) | Err(_) => {
            // Out of descriptors, most likely. Writing a made-up start time
            // would make every peer take this live process for a dead one.
            tracing::warn!(
                "cannot read this process's start time; its lock words name it by pid alone"
            );
            TICKS_UNKNOWN
        }
    };
    // Another thread may have got there first: keep the first value.
    let _ = START_TICKS.compare_exchange(0, t, Ordering::Relaxed, Ordering::Relaxed);
    own_start_ticks()
}

/// `CLOCK_BOOTTIME` in clock ticks (the unit of the start time in
/// `/proc/<pid>/stat`), as the kernel converts it; `None` if the tick does
/// not divide a second into whole nanoseconds or the clock cannot be read.
fn boottime_ticks() -> Option<u64> {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz <= 0 || 1_000_000_000 % hz != 0 {
        return None;
    }
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_BOOTTIME exists on Linux.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) } != 0 {
        return None;
    }
    let ns = (ts.tv_sec as u64)
        .checked_mul(1_000_000_000)?
        .checked_add(ts.tv_nsec as u64)?;
    Some(ns / (1_000_000_000 / hz as u64))
}

/// What can be said about whether a process runs.
///
/// Only the kernel's word makes a process dead: no such pid, a zombie, or a
/// different start time (its pid was reused). A check that failed (no
/// descriptor left to open `/proc` with, no memory, no permission) says
/// nothing either way, as iceoryx2's node state says "inaccessible".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// The process runs.
    Alive,
    /// The process has ended, or its pid now names another process.
    Dead,
    /// The check failed with this OS error number; the process may or may not run.
    Unknown {
        /// The `errno` of the failed check (`EMFILE`, `ENFILE`, `ENOMEM`, `EACCES`…).
        errno: i32,
    },
}

impl Liveness {
    /// Whether the process is known to have ended.
    pub fn is_dead(self) -> bool {
        self == Liveness::Dead
    }

    /// Whether the process is known to run.
    pub fn is_alive(self) -> bool {
        self == Liveness::Alive
    }
}

/// Whether process `pid` runs (not ended, not a zombie) and, if `ticks` is
/// given, is the process that started at that time rather than a later one
/// that reused the pid. Only the low 32 bits of `ticks` are compared, and
/// ticks whose low 32 bits are 0 (a process that could not read its own
/// start time) are not compared at all.
///
/// It opens no descriptor when the answer is "dead, and reaped": `kill(pid,
/// 0)` says so first. Otherwise it reads `/proc/<pid>/stat`; when that fails
/// (`EMFILE`…), a zombie or exiting process is still told apart, without a
/// descriptor, by its missing `/proc/<pid>/exe` link; the rest is
/// [`Liveness::Unknown`].
pub fn liveness(pid: i32, ticks: Option<u64>) -> Liveness {
    if pid <= 0 {
        return Liveness::Dead;
    }
    if no_such_pid(pid) {
        return Liveness::Dead;
    }
    let ticks = ticks.map(|t| t as u32).filter(|t| *t != 0);
    match proc_stat(pid) {
        Ok(Some((state, _))) if state == 'Z' || state == 'X' => Liveness::Dead,
        Ok(Some((_, actual))) if ticks.is_some_and(|t| t != actual as u32) => Liveness::Dead,
        Ok(Some(_)) => Liveness::Alive,
        // Gone between the two looks, or hidden from us (`hidepid`): ask again.
        Ok(None) if no_such_pid(pid) => Liveness::Dead,
        Ok(None) => Liveness::Unknown {
            errno: libc::ENOENT,
        },
        Err(e) => {
            if exe_link_gone(pid) {
                return Liveness::Dead;
            }
            Liveness::Unknown {
                errno: e.raw_os_error().unwrap_or(libc::EIO),
            }
        }
    }
}

/// Whether the kernel has no process `pid` at all (`kill(pid, 0)` says `ESRCH`).
/// Needs no descriptor. A zombie still exists for this test.
fn no_such_pid(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let res = unsafe { libc::kill(pid, 0) };
    res == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

/// Whether `/proc/<pid>/exe` is missing while `/proc/<pid>` is there, as
/// for a zombie or a process past releasing its memory on exit. `readlink`
/// and `access` need no descriptor.
fn exe_link_gone(pid: i32) -> bool {
    let exe = format!("/proc/{pid}/exe\0");
    let mut buf = [0u8; 1];
    // SAFETY: `exe` is NUL-terminated and `buf` is writable for its length.
    let res = unsafe {
        libc::readlink(
            exe.as_ptr().cast::<libc::c_char>(),
            buf.as_mut_ptr().cast::<libc::c_char>(),
            buf.len(),
        )
    };
    if res != -1 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ENOENT) {
        return false;
    }
    // With `/proc` mounted `hidepid`, another user's process has no entry at all.
    let dir = format!("/proc/{pid}\0");
    // SAFETY: `dir` is NUL-terminated; `access` only resolves the path.
    unsafe { libc::access(dir.as_ptr().cast::<libc::c_char>(), libc::F_OK) == 0 }
}

/// Whether process `pid` may still run: false only when it is known to
/// have ended (see [`liveness`]); a check that failed counts as running.
#[cfg(test)]
pub fn is_alive(pid: i32, ticks: Option<u64>) -> bool {
    !liveness(pid, ticks).is_dead()
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
    let before = boottime_ticks();
    // SAFETY: fork takes no arguments; what the child may do afterwards is
    // this function's own contract, which the caller accepted.
    let pid = syscall!(unsafe { libc::fork() })?;
    Ok(if pid == 0 {
        // The kernel stamped the child's start between the two clock reads:
        // when both fall in one tick, that tick is the start time, known
        // without opening `/proc` (which a process out of descriptors cannot).
        if let Some(t) = before
            && boottime_ticks() == Some(t)
            && t != 0
            && t != TICKS_UNKNOWN
        {
            START_TICKS.store(t, Ordering::Relaxed);
        }
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

/// Starts `exe` with this process's arguments (`argv0` in place of the
/// first), `env` added and `channel` as its standard input.
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
    cmd.args(std::env::args_os().skip(1));
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
    stdin_from_null()?;
    Ok(channel)
}

/// Reopens standard input on `/dev/null` (a child must not take its
/// parent's input: Python's children read end-of-file too).
pub fn stdin_from_null() -> std::io::Result<()> {
    let null = std::fs::File::open("/dev/null")?;
    // SAFETY: `null` is open; replacing fd 0 (standard input, which this
    // process owns) is the point.
    super::retry_eintr(|| syscall!(unsafe { libc::dup2(null.as_raw_fd(), 0) }))?;
    Ok(())
}

/// Whether standard input is a Unix socket (the launch channel of a
/// spawned child is one; a terminal, a pipe, `/dev/null` or a TCP
/// connection is not).
pub fn stdin_is_unix_socket() -> bool {
    // fstat needs no descriptor of its own (reading /proc would).
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a `stat` into the buffer it is given, or fails
    // (a closed fd 0: EBADF) and writes nothing we read.
    let ok = unsafe { libc::fstat(0, st.as_mut_ptr()) } == 0;
    // SAFETY: fstat succeeded, so it initialised `st`.
    if !ok || (unsafe { st.assume_init() }.st_mode & libc::S_IFMT) != libc::S_IFSOCK {
        return false;
    }
    // A launch channel is a Unix socket (a TCP one, as under inetd, is not).
    let mut domain: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `domain`.
    let res = unsafe {
        libc::getsockopt(
            0,
            libc::SOL_SOCKET,
            libc::SO_DOMAIN,
            (&raw mut domain).cast(),
            &mut len,
        )
    };
    res == 0 && domain == libc::AF_UNIX
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
    /// SIGCONT.
    pub const CONT: i32 = libc::SIGCONT;
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

/// Sends `signal` to the process a pidfd refers to (never to a later
/// process that reused its pid). A process that ended already is `ESRCH`.
pub fn pidfd_send_signal(pidfd: BorrowedFd<'_>, signal: i32) -> std::io::Result<()> {
    // SAFETY: pidfd_send_signal takes a borrowed (so open) descriptor, a
    // signal number, a null siginfo (the kernel fills in a default) and flags.
    let res = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if res < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The number of CPUs this process may run on.
pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The address ranges (start, end) that `maps` (a `/proc/<pid>/maps`
/// text) maps executable from the file `exe`.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub fn executable_ranges(maps: &str, exe: &Path) -> Vec<(u64, u64)> {
    let exe = exe.to_string_lossy();
    maps.lines()
        .filter_map(|line| {
            // range, perms, offset, device, inode, then (after padding) the
            // path, which may hold spaces.
            let mut fields = line.splitn(6, ' ');
            let range = fields.next()?;
            let perms = fields.next()?;
            let name = fields.nth(3)?.trim_start();
            if !perms.contains('x') || name != exe {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            Some((
                u64::from_str_radix(start, 16).ok()?,
                u64::from_str_radix(end, 16).ok()?,
            ))
        })
        .collect()
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn executable_ranges_are_read_from_maps() {
        let maps = "\
55d0a0000000-55d0a0010000 r--p 00000000 08:01 42 /usr/bin/my prog
55d0a0010000-55d0a0050000 r-xp 00010000 08:01 42 /usr/bin/my prog
55d0a0050000-55d0a0060000 r--p 00050000 08:01 42 /usr/bin/my prog
7f0000000000-7f0000100000 r-xp 00000000 08:01 43 /usr/lib/libc.so.6
7ffd00000000-7ffd00001000 r-xp 00000000 00:00 0                  [vdso]
";
        let got = executable_ranges(maps, Path::new("/usr/bin/my prog"));
        assert_eq!(got, vec![(0x55d0a0010000, 0x55d0a0050000)]);
        // The running test binary has code of its own.
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        assert!(!executable_ranges(&maps, &exe).is_empty());
    }

    /// A pid above any pid_max: no process has it.
    const NO_SUCH_PID: i32 = 0x7FFF_FFF0;

    /// Runs `f` in a forked child and returns its exit code.
    pub(crate) fn in_child(f: impl FnOnce() -> i32) -> i32 {
        // SAFETY: a test child: it runs the closure's plain code and exits.
        match unsafe { fork() }.unwrap() {
            Forked::Child => exit_now(f()),
            Forked::Parent(pid) => wait(pid).unwrap().code(),
        }
    }

    /// Lowers this process's descriptor limit to zero: every open now fails with EMFILE.
    pub(crate) fn run_out_of_descriptors() {
        let mut hard = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `hard` is a valid, writable rlimit.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut hard) };
        let lowered = libc::rlimit {
            rlim_cur: 0,
            rlim_max: hard.rlim_max,
        };
        // SAFETY: `lowered` is a valid rlimit with the hard limit unchanged.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lowered) }, 0);
    }

    #[test]
    fn liveness_of_the_living_the_dead_and_the_reused() {
        let me = getpid();
        assert_eq!(liveness(me, Some(own_start_ticks())), Liveness::Alive);
        assert_eq!(liveness(NO_SUCH_PID, None), Liveness::Dead);
        assert_eq!(liveness(0, None), Liveness::Dead);
        let parent = getppid();
        let ticks = start_ticks(parent).unwrap();
        assert_eq!(liveness(parent, Some(ticks)), Liveness::Alive);
        // Another start time: the pid names another process now.
        assert_eq!(liveness(parent, Some(ticks + 1)), Liveness::Dead);
        // Unknown start time (0 in the low half): compared by pid alone.
        assert_eq!(
            liveness(parent, Some(ticks & !0xFFFF_FFFF)),
            Liveness::Alive
        );
        // A zombie is dead.
        // SAFETY: a test child that exits at once.
        let pid = match unsafe { fork() }.unwrap() {
            Forked::Child => exit_now(0),
            Forked::Parent(pid) => pid,
        };
        wait_ended(pid).unwrap();
        assert_eq!(liveness(pid, None), Liveness::Dead, "zombie");
        wait(pid).unwrap();
        assert_eq!(liveness(pid, None), Liveness::Dead, "reaped");
    }

    #[test]
    fn a_process_out_of_descriptors_cannot_tell_but_sees_deaths() {
        // SAFETY: a test child that exits at once.
        let zombie = match unsafe { fork() }.unwrap() {
            Forked::Child => exit_now(0),
            Forked::Parent(pid) => pid,
        };
        wait_ended(zombie).unwrap();
        let parent = getpid();
        let parent_ticks = own_start_ticks();
        let code = in_child(|| {
            run_out_of_descriptors();
            if std::fs::File::open("/proc/self/stat").is_ok() {
                return 10;
            }
            match liveness(parent, Some(parent_ticks)) {
                Liveness::Unknown { errno } if errno == libc::EMFILE => {}
                _ => return 11,
            }
            // What needs no descriptor still answers.
            if liveness(NO_SUCH_PID, None) != Liveness::Dead {
                return 12;
            }
            // The zombie is our sibling: its missing exe link tells.
            if liveness(zombie, None) != Liveness::Dead {
                return 13;
            }
            if is_alive(parent, Some(parent_ticks)) {
                0
            } else {
                14
            }
        });
        wait(zombie).unwrap();
        assert_eq!(code, 0);
    }

    #[test]
    fn a_forked_child_knows_its_start_time_without_reading_proc() {
        let mut worked_out = 0;
        for _ in 0..20 {
            let code = in_child(|| {
                // What fork worked out from the clock matches /proc.
                let known = START_TICKS.load(Ordering::Relaxed);
                let read = start_ticks(getpid()).unwrap_or(0);
                match known {
                    0 => 2, // straddled a tick: read lazily instead
                    t if t == read => 0,
                    _ => 1,
                }
            });
            assert!(code == 0 || code == 2, "{code}");
            worked_out += u32::from(code == 0);
        }
        // A fork takes well under the 10 ms of a tick, mostly.
        assert!(worked_out > 0);
        // And a child out of descriptors still names itself right.
        let code = in_child(|| {
            let read = start_ticks(getpid()).unwrap_or(0);
            run_out_of_descriptors();
            match own_start_ticks() {
                t if t == read => 0,
                // It straddled a tick and could not read: it says "unknown".
                0 => 0,
                _ => 1,
            }
        });
        assert_eq!(code, 0);
    }

    #[test]
    fn stat_lines_parse_with_odd_command_names() {
        let line = "42 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 777 19 20";
        assert_eq!(parse_stat(line), Some(('S', 777)));
        assert_eq!(parse_stat("42 (x"), None);
        assert_eq!(parse_stat(""), None);
    }

    #[test]
    fn a_small_file_is_read_whole_and_a_larger_one_refused() {
        let mut buf = [0u8; 4096];
        let own = read_small("/proc/self/stat", &mut buf).unwrap();
        let (_, ticks) = parse_stat(own).unwrap();
        assert_eq!(Some(ticks), start_ticks(getpid()));
        let path = std::env::temp_dir().join(format!("multiproc-read-small-{}", getpid()));
        std::fs::write(&path, [b'x'; 40]).unwrap();
        let mut exact = [0u8; 41];
        assert_eq!(
            read_small(path.to_str().unwrap(), &mut exact)
                .unwrap()
                .len(),
            40
        );
        let mut short = [0u8; 40];
        let e = read_small(path.to_str().unwrap(), &mut short).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        let mut any = [0u8; 64];
        let gone = read_small("/proc/0/stat", &mut any).unwrap_err();
        assert_eq!(gone.raw_os_error(), Some(libc::ENOENT));
    }
}
