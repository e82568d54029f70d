//! The child's side: `init()` for spawned children, and the common run loop.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::fork_sync::Mutex;
use crate::handle;
use crate::process::launch::{self, EntryFn, Outcome};
use crate::process::{current, forkserver, registry, start_method};
use crate::sys;

static INIT_RAN: AtomicBool = AtomicBool::new(false);

/// Call this first in `main`. In a child started by spawn it runs the target
/// and exits the process; anywhere else it returns at once.
///
/// The one thing to put before it: a `tracing` subscriber, so that spawned
/// children (which never get past `init`) log through one too.
///
/// ```
/// multiproc::init();
/// // … the program …
/// ```
pub fn init() {
    if INIT_RAN.swap(true, Ordering::SeqCst) {
        return;
    }
    // Read while descriptors are surely to be had: every lock word this
    // process writes names it by this start time (a forked child works its
    // own out from the clock).
    sys::process::own_start_ticks();
    let Some(raw) = std::env::var_os(launch::CHILD_FD_ENV) else {
        become_worker_if_asked();
        return;
    };
    // The variable goes, so that programs this child starts do not take
    // themselves for multiproc children. Changing the environment while
    // another thread may read it is undefined behaviour, so only a process
    // that runs one thread does it: `init` runs first in `main` (or before
    // it, through `init_before_main!`), but nothing forces a caller to.
    if sys::process::is_single_threaded() {
        // SAFETY: this process runs one thread (checked just above, and only
        // this thread could start another), so nothing reads the
        // environment meanwhile.
        unsafe { std::env::remove_var(launch::CHILD_FD_ENV) };
    } else {
        tracing::warn!(
            "multiproc::init() ran after other threads started: {} stays set",
            launch::CHILD_FD_ENV
        );
    }
    // The parent always passes the channel as stdin. A raw descriptor
    // number in the variable is not taken: this process cannot know that
    // nothing else owns it.
    let server = raw.to_str() == Some(forkserver::SERVER_STDIN);
    let named = raw.to_str() == Some(launch::CHILD_FD_STDIN) || server;
    // A parent sets the variable and passes a socket: with anything else as
    // stdin (a pipe, a file, a terminal), the variable was left in the
    // environment by someone else, and this is no child of ours.
    if named && !sys::process::stdin_is_unix_socket() {
        tracing::warn!(
            "{} is set but standard input is not a launch channel: running as a program",
            launch::CHILD_FD_ENV
        );
        become_worker_if_asked();
        return;
    }
    let sock = if named {
        sys::process::take_stdin_channel().ok()
    } else {
        None
    };
    let Some(sock) = sock else {
        eprintln!(
            "multiproc: {} does not name the launch channel",
            launch::CHILD_FD_ENV
        );
        sys::process::exit_now(70);
    };
    if sys::process::is_single_threaded() {
        // SAFETY: one thread runs, early in a process just executed by
        // its parent: what is open without close-on-exec was inherited
        // (the channel was just moved to a close-on-exec descriptor).
        unsafe { sys::fd::close_inherited() };
    }
    if server {
        forkserver::serve(sock)
    }
    run_launch(UnixStream::from(sock))
}

/// The environment variable that makes this process a distributed pool's
/// worker (`pool::WORKER_ENV`; named here too for builds without `redis`).
const WORKER_ENV: &str = "MULTIPROC_WORKER";

/// With [`WORKER_ENV`] set: serves the distributed pool it names, then
/// ends the process (see `multiproc::worker`).
fn become_worker_if_asked() {
    let Some(value) = std::env::var_os(WORKER_ENV) else {
        return;
    };
    // As for the launch variable: programs a task starts are not workers.
    if sys::process::is_single_threaded() {
        // SAFETY: this process runs one thread (checked just above), so
        // nothing reads the environment meanwhile.
        unsafe { std::env::remove_var(WORKER_ENV) };
    }
    let Some(value) = value.to_str().map(str::to_owned) else {
        eprintln!("multiproc: {WORKER_ENV} is not valid UTF-8");
        sys::process::exit_now(1);
    };
    #[cfg(feature = "redis")]
    crate::pool::redis_worker::run_from_env(value);
    #[cfg(not(feature = "redis"))]
    {
        let _ = value;
        eprintln!(
            "multiproc: {WORKER_ENV} is set, but this program was built without the `redis` feature"
        );
        sys::process::exit_now(1);
    }
}

/// Whether this process was spawned by multiproc but has not run `init()`.
pub(crate) fn missing_init() -> bool {
    !INIT_RAN.load(Ordering::SeqCst) && std::env::var_os(launch::CHILD_FD_ENV).is_some()
}

/// In a process spawned by multiproc whose `main` never ran `init()` (a
/// test binary without `init_before_main!`, whose harness ran the tests
/// again instead of the target): tells the parent why there is no result
/// (it reports [`Error::InitMissing`](crate::Error::InitMissing)) and ends
/// this process, before it starts processes of its own. Returns if
/// standard input is not a launch channel (a program this process's
/// target started, say, inherited the variable).
pub(crate) fn exit_missing_init() {
    // The first caller ends the process; another thread arriving meanwhile
    // waits here until it has.
    static REPORTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _first = REPORTING.lock();
    if !sys::process::stdin_is_unix_socket() {
        return;
    }
    let Ok(sock) = sys::process::take_stdin_channel() else {
        return;
    };
    finish(&UnixStream::from(sock), Outcome::InitMissing)
}

/// Runs the launch message that comes in on `sock`, as a spawned child
/// or a child the forkserver forked: reads it, checks the binary, becomes
/// the child it describes, runs the target and reports.
pub(crate) fn run_launch(mut sock: UnixStream) -> ! {
    let _ = sys::fd::set_cloexec(std::os::fd::AsFd::as_fd(&sock), true);
    let (launch, fds) = match launch::recv_launch(&mut sock) {
        Ok(x) => x,
        // A message this binary cannot read comes from another build (the
        // identity check below needs the message read first).
        Err(e @ crate::Error::Codec(_)) => finish(
            &sock,
            Outcome::Mismatch(format!(
                "the child cannot read its launch message ({e}): it runs a different \
                 binary than its parent (or one built with another version of multiproc); \
                 set the context's executable to the parent's own binary"
            )),
        ),
        Err(e) => finish(&sock, Outcome::Failed(format!("bad launch message: {e}"))),
    };
    if launch.identity != launch::identity() || launch.anchor_check != launch::anchor_check() {
        let msg = format!(
            "the child runs a different binary than its parent (parent {}, child {}): \
             set the context's executable to the parent's own binary",
            launch.identity,
            launch::identity()
        );
        finish(&sock, Outcome::Mismatch(msg));
    }
    if launch.fd_ids.len() != fds.len() {
        finish(
            &sock,
            Outcome::Failed("the launch message lost descriptors".into()),
        );
    }
    current::become_child(
        launch.name.clone(),
        launch.identity_numbers.clone(),
        launch.daemon,
        launch.parent_pid,
        launch.parent_ticks,
        launch.parent_name.clone(),
        launch.root,
    );
    match current::AuthKey::new(&launch.authkey) {
        Ok(key) => current::set_authkey(key),
        Err(_) => finish(
            &sock,
            Outcome::Failed("the launch message has no authkey".into()),
        ),
    }
    if let Some(method) = launch.start_method {
        start_method::started_with(method);
    }
    current::watch_parent_if_daemon();
    let received: HashMap<u64, _> = launch.fd_ids.iter().copied().zip(fds).collect();
    // SAFETY: the identity and anchor checks above establish that this binary
    // is the parent's, so the offset names the same `EntryFn` the parent chose.
    let entry =
        unsafe { std::mem::transmute::<*const (), EntryFn>(launch::addr_at(launch.entry_offset)) };
    let target = launch::addr_at(launch.target_offset);
    report_exit_on(&sock);
    let outcome = handle::with_received_fds(received, || entry(target, &launch.args));
    finish(&sock, outcome)
}

/// This process's launch channel and pid while its target runs, for
/// [`report_exit`] (a process forked from it inherits both, and is not it).
static TARGET_CHANNEL: OnceLock<(i32, UnixStream)> = OnceLock::new();

/// Makes an `exit` while the target runs (Python's `sys.exit`) tell the
/// parent so, which then knows the target ran and chose its exit status;
/// without it, a spawned child exiting with code 0 and no result looks like
/// a `main` without `init()`. [`finish`] ends the process without running
/// exit handlers, so the report comes only from an `exit` in the target.
fn report_exit_on(sock: &UnixStream) {
    // A copy of the descriptor (if one is to be had: else an exit reads as
    // it did without this).
    let Ok(copy) = sock.try_clone() else {
        return;
    };
    if TARGET_CHANNEL.set((sys::process::getpid(), copy)).is_ok()
        && let Err(e) = sys::process::at_exit(report_exit)
    {
        tracing::debug!("cannot register the handler that reports an exit: {e}");
    }
}

extern "C" fn report_exit() {
    if let Some((pid, sock)) = TARGET_CHANNEL.get()
        && *pid == sys::process::getpid()
    {
        // The parent may be gone; nothing else to tell.
        let _ = Outcome::Exited.send(sock);
    }
}

/// What the runtime lets go of when this process ends through it (a
/// target's end runs no destructors): see [`at_normal_end`].
static AT_NORMAL_END: Mutex<Vec<fn()>> = Mutex::new(Vec::new());

/// Has `f` run when this process ends normally through the runtime (its
/// target returned, failed or panicked), once however often it is asked.
/// An `exit` (`std::process::exit`, `main`'s return) runs the C library's
/// exit handlers instead: register there too.
pub(crate) fn at_normal_end(f: fn()) {
    let mut list = AT_NORMAL_END.lock();
    if !list.iter().any(|g| std::ptr::fn_addr_eq(*g, f)) {
        list.push(f);
    }
}

/// Runs what [`at_normal_end`] registered (nothing if another thread holds
/// the list, as one may have at a fork).
fn run_at_normal_end() {
    let list: Vec<fn()> = match AT_NORMAL_END.try_lock() {
        Some(list) => list.clone(),
        None => return,
    };
    for f in list {
        f();
    }
}

/// Reports `outcome` to the parent and ends the process.
pub(crate) fn finish(sock: &UnixStream, outcome: Outcome) -> ! {
    run_at_normal_end();
    let code = match outcome {
        Outcome::Returned(_) => 0,
        _ => 1,
    };
    // stderr is unbuffered: only stdout can hold output.
    let _ = std::io::stdout().flush();
    if let Err(e) = outcome.send(sock) {
        // The parent may be gone; nothing else to tell.
        tracing::debug!("cannot report to the parent: {e}");
    }
    // As Python's children do: daemon children go, the others are waited for.
    registry::shutdown_children();
    sys::process::exit_now(code)
}
