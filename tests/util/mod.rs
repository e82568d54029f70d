//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::time::{Duration, Instant};

/// Generous bound for anything that should happen "promptly" on a loaded 2-core machine.
pub const PROMPTLY: Duration = Duration::from_secs(20);

/// Polls `cond` until it holds or `limit` passes; returns whether it held.
///
/// For conditions no one can signal us about (a process we do not own
/// ending, for example); never used to order our own steps.
pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Asserts that the server's object count, read by `count`, is `want`,
/// waiting up to [`PROMPTLY`] for it to get there.
///
/// The count is not read once: a child that another test of the same binary
/// forks meanwhile holds a reference to every managed object this process
/// has a proxy for, until it ends (as in Python, a forked child inherits its
/// parent's proxies). A count read at one moment may be higher for a while.
#[track_caller]
pub fn assert_objects(mut count: impl FnMut() -> usize, want: usize, what: &str) {
    let mut last = count();
    eventually(PROMPTLY, || {
        last = count();
        last == want
    });
    assert_eq!(last, want, "the number of managed objects: {what}");
}

/// The state letter of process `pid` and its parent pid, if it exists.
pub fn proc_state(pid: i32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Whether `pid` is gone (or a zombie that is not ours to reap).
pub fn is_gone(pid: i32) -> bool {
    match proc_state(pid) {
        None => true,
        Some((state, _)) => state == 'Z' || state == 'X',
    }
}

/// Asserts `pid` is not a zombie child of this process.
pub fn assert_not_our_zombie(pid: i32) {
    if let Some((state, ppid)) = proc_state(pid) {
        assert!(
            !(state == 'Z' && ppid == std::process::id() as i32),
            "process {pid} was left as a zombie"
        );
    }
}

/// Entries in /dev/shm that look like ours (there should never be any).
pub fn shm_leaks() -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains("multiproc"))
                .collect()
        })
        .unwrap_or_default()
}
pub mod chaos;
#[cfg(feature = "redis")]
pub mod redis;

/// Starts one process per argument with `method`, then joins them all
/// (generous bound) and returns their results in order.
pub fn run_each<A: multiproc::Shareable, R: multiproc::Shareable>(
    method: multiproc::StartMethod,
    f: fn(A) -> R,
    args: impl IntoIterator<Item = A>,
) -> Vec<R> {
    let mut ps: Vec<_> = args
        .into_iter()
        .map(|a| multiproc::Process::new(f, a).start_method(method))
        .collect();
    for p in &mut ps {
        p.start().unwrap();
    }
    ps.iter_mut()
        .map(|p| p.join_timeout(PROMPTLY * 6).unwrap())
        .collect()
}

/// A string a callback writes and the test reads.
#[derive(Default)]
pub struct TextSlot(std::sync::Mutex<String>);

impl TextSlot {
    pub fn set(&self, s: String) {
        *self.0.lock().unwrap() = s;
    }
    pub fn get(&self) -> String {
        self.0.lock().unwrap().clone()
    }
}

/// Puts the calling process at its descriptor limit, as a process that ran
/// out of descriptors is: lowers `RLIMIT_NOFILE` to a few above the highest
/// descriptor open and fills the rest with `dup(0)`, so every later open
/// fails with `EMFILE` (the descriptors go when the process exits). For a
/// child's target, never the test process. Panics if `/proc` can still be read.
pub fn exhaust_descriptors() {
    std::mem::forget(exhaust_descriptors_for_now());
}

/// As [`exhaust_descriptors`], returning the copies that fill the table:
/// dropping them gives the room back.
pub fn exhaust_descriptors_for_now() -> Vec<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let highest = std::fs::read_dir("/proc/self/fd")
        .expect("list /proc/self/fd")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .max()
        .unwrap_or(2);
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    assert_eq!(got, 0);
    limit.rlim_cur = (highest + 1 + 4).min(limit.rlim_max);
    // SAFETY: `limit` is a valid rlimit; only the soft limit is lowered.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
    let mut copies = Vec::new();
    loop {
        // SAFETY: dup(0) has no memory-safety preconditions.
        let fd = unsafe { libc::dup(0) };
        if fd < 0 {
            break;
        }
        // SAFETY: `fd` was just made by dup and is owned by nothing else.
        copies.push(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
    }
    let err = std::fs::File::open("/proc/self/stat").expect_err("the table is full");
    assert_eq!(err.raw_os_error(), Some(libc::EMFILE), "{err}");
    copies
}

/// Lowers the descriptor limit of process `pid` (a manager server, say) to
/// `soft`, returning the limit it had (for [`restore_descriptor_limit`]).
pub fn lower_descriptor_limit(pid: i32, soft: u64) -> libc::rlimit {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `old` is a valid, writable rlimit; no new limit is set.
    let res = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) };
    assert_eq!(res, 0, "{}", std::io::Error::last_os_error());
    let new = libc::rlimit {
        rlim_cur: soft,
        rlim_max: old.rlim_max,
    };
    // SAFETY: `new` is a valid rlimit with the hard limit unchanged.
    let res = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) };
    assert_eq!(res, 0, "{}", std::io::Error::last_os_error());
    old
}

/// Gives process `pid` back the descriptor limit `old`.
pub fn restore_descriptor_limit(pid: i32, old: libc::rlimit) {
    // SAFETY: `old` is a valid rlimit read from the same process.
    let res = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &old, std::ptr::null_mut()) };
    assert_eq!(res, 0, "{}", std::io::Error::last_os_error());
}

/// Runs `f` on a thread and waits at most `limit` for its result: `None`
/// if it did not finish (the thread is left behind), so a test fails
/// instead of hanging when `f` would block for ever.
pub fn within<T: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).ok()
}

/// Writes `key` to a fresh file only its owner may read (what `multiproc
/// serve --authkey-file` wants), named after `tag` and this process.
pub fn serve_key_file(tag: &str, key: &[u8]) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("multiproc-{tag}-{}.key", std::process::id()));
    std::fs::write(&path, key).unwrap();
    let perms = std::os::unix::fs::PermissionsExt::from_mode(0o600);
    std::fs::set_permissions(&path, perms).unwrap();
    path
}

/// Starts `multiproc serve` on `address` with the key in `key` and `extra`
/// options (its stderr discarded); returns it and the address it printed.
pub fn start_serve(
    key: &std::path::Path,
    address: &str,
    extra: &[&str],
) -> (std::process::Child, String) {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_multiproc"))
        .args(["serve", "--address", address, "--authkey-file"])
        .arg(key)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let printed = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    (child, printed)
}

/// Restricts the calling thread (and the processes it starts from now on)
/// to the one CPU it runs on now; returns that CPU.
pub fn pin_this_thread_to_one_cpu() -> usize {
    // SAFETY: sched_getcpu takes no arguments.
    let cpu = unsafe { libc::sched_getcpu() };
    assert!(cpu >= 0, "{}", std::io::Error::last_os_error());
    // SAFETY: an all-zero cpu_set_t is a valid empty set; CPU_SET writes one
    // bit of it, for a CPU number the kernel just gave us.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::CPU_SET(cpu as usize, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is this thread.
    let res = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    assert_eq!(res, 0, "{}", std::io::Error::last_os_error());
    cpu as usize
}

/// The number of CPUs the calling thread may run on.
pub fn allowed_cpus() -> usize {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable cpu_set_t of the size passed.
    let res =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    assert_eq!(res, 0, "{}", std::io::Error::last_os_error());
    // SAFETY: `set` was filled in by the kernel above.
    unsafe { libc::CPU_COUNT(&set) as usize }
}

/// Runs `ip` with `args` (the network-namespace tests' setup and
/// teardown); its stderr on failure.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A TCP connection to `to` from the local address `from` (a second
/// loopback address plays another host).
pub fn connect_from(from: std::net::Ipv4Addr, to: std::net::SocketAddr) -> std::net::TcpStream {
    use std::os::fd::FromRawFd;
    let std::net::SocketAddr::V4(to) = to else {
        panic!("an IPv4 server")
    };
    let sockaddr = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: a new socket descriptor, owned by the TcpStream made from it.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` is ours and nothing else owns it.
    let stream = unsafe { std::net::TcpStream::from_raw_fd(fd) };
    let local = sockaddr(from, 0);
    let remote = sockaddr(*to.ip(), to.port());
    // SAFETY: `local` and `remote` are valid sockaddr_in values of `len` bytes.
    unsafe {
        assert_eq!(
            libc::bind(fd, (&raw const local).cast(), len),
            0,
            "bind: {}",
            std::io::Error::last_os_error()
        );
        assert_eq!(
            libc::connect(fd, (&raw const remote).cast(), len),
            0,
            "connect: {}",
            std::io::Error::last_os_error()
        );
    }
    stream
}

/// Limits this process's address space to what it maps now plus `extra`
/// bytes (`None`: lifts the limit again).
pub fn limit_memory(extra: Option<u64>) {
    let now = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmSize:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .expect("VmSize in /proc/self/status")
        * 1024;
    let lim = libc::rlimit {
        rlim_cur: extra.map_or(libc::RLIM_INFINITY, |e| now + e),
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads the struct it is given.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &lim) }, 0);
}
