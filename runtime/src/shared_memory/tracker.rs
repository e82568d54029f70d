//! The tracker: a helper process that unlinks this program's segments once
//! the program is gone, however it ended (SIGKILL included).
//!
//! Python's `resource_tracker`, made quiet. The first tracked
//! [`SharedMemory::create`](super::SharedMemory::create) in a process starts
//! it; the process keeps one end of a `SOCK_SEQPACKET` socket pair and sends
//! one record per created or unlinked segment. The tracker holds the other
//! end. When every holder of the writing end is gone (the program, and the
//! children it forked, which inherit the socket and so share the tracker),
//! the tracker reads end-of-file, unlinks each name still registered,
//! provided it still names the very segment that was registered (same
//! inode: a later segment of the same name, made by someone else, is left
//! alone), and exits. It prints nothing.
//!
//! It is started as a grandchild that is orphaned at once, in its own session:
//! never a zombie of the program, never hit by a terminal's Ctrl-C, and with
//! only its socket open (it holds none of the program's pipes, sockets or
//! segments). It re-executes the program (`/proc/self/exe`), whose start-up
//! code (an `.init_array` entry of this crate, which runs before `main`)
//! recognises the tracker and runs it; when the runtime is not part of the
//! main executable (loaded as a shared library) the forked copy runs the
//! tracker itself.
//!
//! It ignores `SIGINT` and `SIGTERM` (a signal meant for the program's
//! process group or session must not take the cleanup with it), as Python's
//! does. One that dies anyway (SIGKILL) is replaced at this process's next
//! create or unlink, which finds its socket closed: the new tracker is told
//! again of every segment this process registered and has not unlinked, so
//! none of them leaks (Python relaunches its tracker too, but forgets them).
//!
//! What it decides: a segment is unlinked once its creator (with the
//! children it forked) is gone *and* so is the program: the first process of
//! the creator's tree, which no multiproc parent started (told to the
//! tracker as its first record; children learn it from their parent). So a
//! segment a `Process` target or a pool worker creates and hands back by
//! name outlives that child, as in Python, whose children share their
//! parent's resource tracker. After the end-of-file the tracker sleeps until
//! the program ends, and goes earlier if others unlinked all its names
//! (see `wait_for_program`). Processes that attached the segment keep
//! their mappings (unlinking removes the name only), but no new process can
//! attach it by name afterwards. A creator that wants the name to outlive
//! the program opts out with [`SharedMemory::create_untracked`](super::SharedMemory::create_untracked).

use crate::fork_sync::MutexGuard;
use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::fork_sync::Mutex;
use crate::process::{ForkHook, register_fork_hook};
use crate::sys;
use crate::sys::posix_shm::{self, Detached};

/// Set in the tracker's environment; with fd 0 a seqpacket socket it makes
/// the re-executed program run the tracker instead of `main`.
const TRACKER_ENV: &str = "MULTIPROC_SHM_TRACKER";
const TRACKER_ENV_ENTRY: &str = "MULTIPROC_SHM_TRACKER=1";

/// How long a new tracker may take to say hello (the machine may be loaded).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest record: op, inode, a name of at most 255 bytes.
const RECORD_MAX: usize = 1 + 8 + 255;

const OP_REGISTER: u8 = b'R';
const OP_UNREGISTER: u8 = b'U';
const OP_HELLO: u8 = b'H';
/// The program's first process, as a liveness word (8 bytes).
const OP_ROOT: u8 = b'P';

/// How often a tracker whose creators are gone looks whether its names
/// still name their segments (another process may have unlinked them all:
/// it then has nothing left to do), while it sleeps until the program ends.
const NAMES_POLL: Duration = Duration::from_secs(1);

/// How often it checks whether the program is gone where it cannot sleep
/// on a pidfd.
const ROOT_POLL: Duration = Duration::from_millis(200);

struct Tracker {
    channel: OwnedFd,
    pid: i32,
}

/// This process's tracker, and what was registered with it.
struct State {
    tracker: Option<Tracker>,
    /// Each segment registered and not unlinked since: its inode, and the
    /// process that registered it (a forked child inherits its parent's
    /// entries, but tells a new tracker of its own only: the new one ends
    /// with the child).
    names: BTreeMap<String, (u64, i32)>,
}

static TRACKER: Mutex<State> = Mutex::new(State {
    tracker: None,
    names: BTreeMap::new(),
});

/// Holds the tracker's lock across multiproc's forks, so a forked child never
/// inherits it locked by a thread that does not exist there.
struct TrackerForkHook;

impl ForkHook for TrackerForkHook {
    fn prepare(&self) -> Box<dyn Any> {
        Box::new(TRACKER.lock())
    }
    fn parent(&self, state: Box<dyn Any>) {
        drop(state);
    }
    fn child(&self, state: Box<dyn Any>) {
        drop(state);
    }
}

fn lock() -> MutexGuard<'static, State> {
    register_fork_hook(&TrackerForkHook);
    TRACKER.lock()
}

/// Registers segment `name` (inode `ino`) with this process's tracker,
/// starting the tracker first if there is none.
pub(crate) fn register(name: &str, ino: u64) -> Result<()> {
    let mut st = lock();
    st.names
        .insert(name.to_string(), (ino, sys::process::getpid()));
    let sent = match &st.tracker {
        Some(tracker) => {
            posix_shm::send_record(tracker.channel.as_fd(), &register_record(name, ino))
        }
        None => Err(std::io::ErrorKind::NotConnected.into()),
    };
    match sent {
        Ok(()) => Ok(()),
        // None yet, or it died: a new one is told of this segment with the rest.
        Err(_) => restart(&mut st),
    }
    .map_err(|e| {
        st.names.remove(name);
        Error::Io(std::io::Error::new(
            e.kind(),
            format!("cannot register shared memory segment {name:?} with its tracker: {e}"),
        ))
    })
}

/// Starts this process's tracker if it has none yet.
pub(crate) fn ensure_started() -> Result<()> {
    let mut st = lock();
    if st.tracker.is_none() {
        st.tracker = Some(start()?);
    }
    Ok(())
}

/// Tells this process's tracker, if it has one, that `name` needs no
/// cleanup any more (it was unlinked). A tracker found dead is replaced
/// (and told of the segments still registered); failing that, the error is
/// only logged: the unlink itself was done.
pub(crate) fn unregister(name: &str) {
    let mut st = lock();
    st.names.remove(name);
    let Some(tracker) = &st.tracker else {
        return;
    };
    let mut record = Vec::with_capacity(1 + name.len());
    record.push(OP_UNREGISTER);
    record.extend_from_slice(name.as_bytes());
    if posix_shm::send_record(tracker.channel.as_fd(), &record).is_err()
        && let Err(e) = restart(&mut st)
    {
        tracing::warn!("cannot start a new shared memory tracker: {e}");
    }
}

/// The process id of this process's tracker, if one was started (by this
/// process, or by the parent it was forked from). For tests and diagnostics.
#[doc(hidden)]
pub fn tracker_pid() -> Option<i32> {
    lock().tracker.as_ref().map(|t| t.pid)
}

fn register_record(name: &str, ino: u64) -> Vec<u8> {
    let mut record = Vec::with_capacity(RECORD_MAX);
    record.push(OP_REGISTER);
    record.extend_from_slice(&ino.to_le_bytes());
    record.extend_from_slice(name.as_bytes());
    record
}

/// Starts a tracker in place of none or of one that died, and tells it of
/// every segment this process registered and has not unlinked.
fn restart(st: &mut State) -> std::io::Result<()> {
    if let Some(old) = &st.tracker {
        tracing::warn!(
            pid = old.pid,
            "the shared memory tracker is gone; starting another"
        );
    }
    st.tracker = None;
    let tracker = start().map_err(|e| match e {
        Error::Io(e) => e,
        e => std::io::Error::other(e.to_string()),
    })?;
    // Kept even if telling it fails below: dropped, it would unlink what
    // it was told so far, which this process still uses.
    let tracker = st.tracker.insert(tracker);
    let me = sys::process::getpid();
    for (name, &(ino, _)) in st.names.iter().filter(|(_, (_, pid))| *pid == me) {
        posix_shm::send_record(tracker.channel.as_fd(), &register_record(name, ino))?;
    }
    Ok(())
}

fn start() -> Result<Tracker> {
    let entry: extern "C" fn() = tracker_entry;
    let root = crate::process::program_root();
    if posix_shm::in_main_executable(entry as usize) {
        let how = Detached::Exec {
            env: &[TRACKER_ENV_ENTRY],
            unset: &[crate::process::launch::CHILD_FD_ENV],
        };
        start_with(how, root)
    } else {
        start_with(Detached::Inline { run: serve }, root)
    }
}

/// Starts a tracker the way `how` says, and tells it the program's first
/// process, `root` (a liveness word).
fn start_with(how: Detached<'_>, root: u64) -> Result<Tracker> {
    let (client, server) = posix_shm::seqpacket_pair()?;
    posix_shm::spawn_detached(how, server.as_fd())?;
    drop(server);
    let mut hello = [0u8; 8];
    let n =
        posix_shm::recv_record(client.as_fd(), &mut hello, Some(START_TIMEOUT)).map_err(|e| {
            Error::Io(std::io::Error::new(
                e.kind(),
                format!("the shared memory tracker did not start: {e}"),
            ))
        })?;
    if n != 5 || hello[0] != OP_HELLO {
        return Err(Error::Io(std::io::Error::other(
            "the shared memory tracker did not start (no hello)",
        )));
    }
    let pid = i32::from_le_bytes([hello[1], hello[2], hello[3], hello[4]]);
    let mut record = vec![OP_ROOT];
    record.extend_from_slice(&root.to_le_bytes());
    posix_shm::send_record(client.as_fd(), &record).map_err(|e| {
        Error::Io(std::io::Error::new(
            e.kind(),
            format!("the shared memory tracker went as it started: {e}"),
        ))
    })?;
    Ok(Tracker {
        channel: client,
        pid,
    })
}

// The tracker's entry: an `.init_array` function, so it runs before `main` in
// every program that links this crate (a `#[used]` static is kept by rustc).
#[used]
#[unsafe(link_section = ".init_array")]
static TRACKER_ENTRY: extern "C" fn() = tracker_entry;

extern "C" fn tracker_entry() {
    if std::env::var_os(TRACKER_ENV).is_some_and(|v| v == "1") && posix_shm::is_seqpacket(0) {
        serve();
    }
    // In every other program: register the fork hook now, while one thread
    // runs, so no fork can come between its registration and a first use.
    register_fork_hook(&TrackerForkHook);
}

/// The tracker's main loop (in the helper process): collect registrations
/// until end-of-file, then unlink what is left and exit.
fn serve() -> ! {
    // SAFETY: this runs only in the helper started by `spawn_detached`
    // (checked by `tracker_entry`, or called directly there), where fd 0 is
    // the channel and nothing else owns it.
    let channel = unsafe { posix_shm::take_helper_channel() };
    // The program's Ctrl-C or a SIGTERM sent to its group must not end the
    // cleanup (Python's tracker ignores both too).
    for signal in [sys::signal::INT, sys::signal::TERM] {
        let _ = sys::signal::set_ignored(signal, true);
    }
    let pid = sys::process::getpid();
    let mut hello = [0u8; 5];
    hello[0] = OP_HELLO;
    hello[1..].copy_from_slice(&pid.to_le_bytes());
    if posix_shm::send_record(channel.as_fd(), &hello).is_err() {
        sys::process::exit_now(0);
    }
    let mut names: HashMap<String, u64> = HashMap::new();
    let mut root = None;
    let mut buf = [0u8; RECORD_MAX + 1];
    loop {
        match posix_shm::recv_record(channel.as_fd(), &mut buf, None) {
            Ok(0) | Err(_) => break,
            Ok(9) if buf[0] == OP_ROOT => {
                root = buf[1..9].try_into().ok().map(u64::from_le_bytes);
            }
            Ok(n) => apply(&mut names, &buf[..n]),
        }
    }
    drop(channel);
    // The creators are gone; the segments last as long as the program.
    if let Some(root) = root {
        wait_for_program(root, &mut names);
    }
    for (name, ino) in names {
        unlink_if_same(&name, ino);
    }
    sys::process::exit_now(0)
}

fn apply(names: &mut HashMap<String, u64>, record: &[u8]) {
    match record.split_first() {
        Some((&OP_REGISTER, rest)) if rest.len() > 8 => {
            let (ino, name) = rest.split_at(8);
            let ino = u64::from_le_bytes(ino.try_into().unwrap_or_default());
            if let Ok(name) = std::str::from_utf8(name) {
                names.insert(name.to_string(), ino);
            }
        }
        Some((&OP_UNREGISTER, name)) => {
            if let Ok(name) = std::str::from_utf8(name) {
                names.remove(name);
            }
        }
        _ => {}
    }
}

/// Waits until the program's first process (`root`, a liveness word) is
/// gone, or until none of `names` names its segment any more (others
/// unlinked them): a tracker of a child that ended holds nothing then, and
/// goes. Sleeps on a pidfd, looking at the names every [`NAMES_POLL`]. (A
/// program this tracker cannot check, out of descriptors, counts as alive.)
fn wait_for_program(root: u64, names: &mut HashMap<String, u64>) {
    let pidfd = sys::process::pidfd_open((root & 0x7FFF_FFFF) as i32).ok();
    loop {
        names.retain(|name, ino| still_names(name, *ino));
        if names.is_empty() || crate::liveness::holder_liveness(root).is_dead() {
            return;
        }
        match &pidfd {
            Some(fd) => {
                let _ = sys::fd::poll_one(fd.as_fd(), sys::fd::Interest::Read, Some(NAMES_POLL));
            }
            None => std::thread::sleep(ROOT_POLL),
        }
    }
}

/// Whether `name` still names this user's segment with inode `ino`.
fn still_names(name: &str, ino: u64) -> bool {
    let Ok(fd) = posix_shm::shm_open_existing(name, false) else {
        return false;
    };
    // Only ours: an inode number can come back for another user's segment.
    posix_shm::stat(fd.as_fd())
        .is_ok_and(|st| st.ino == ino && st.uid == crate::sys::socket::effective_uid())
}

/// Unlinks `name` if it still names the segment with inode `ino`.
fn unlink_if_same(name: &str, ino: u64) {
    if still_names(name, ino) {
        let _ = posix_shm::shm_unlink(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared_memory::SharedMemory;

    fn send_register(tracker: &Tracker, name: &str, ino: u64) {
        let mut record = vec![OP_REGISTER];
        record.extend_from_slice(&ino.to_le_bytes());
        record.extend_from_slice(name.as_bytes());
        posix_shm::send_record(tracker.channel.as_fd(), &record).unwrap();
    }

    fn ino_of(shm: &SharedMemory) -> u64 {
        let fd = posix_shm::shm_open_existing(shm.name(), false).unwrap();
        posix_shm::stat(fd.as_fd()).unwrap().ino
    }

    fn gone_within(name: &str, limit: Duration) -> bool {
        let start = std::time::Instant::now();
        while start.elapsed() < limit {
            if posix_shm::shm_open_existing(name, false).is_err() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// The liveness word of a process that has ended (and was reaped), as
    /// the program's first process: these trackers unlink at end-of-file.
    fn an_ended_program() -> u64 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        u64::from(pid)
    }

    #[test]
    fn a_forked_inline_tracker_unlinks_at_end_of_file() {
        // The path taken when the runtime is not in the main executable.
        let tracker = start_with(Detached::Inline { run: serve }, an_ended_program()).unwrap();
        let shm = SharedMemory::create_untracked(None, 8).unwrap();
        send_register(&tracker, shm.name(), ino_of(&shm));
        let pid = tracker.pid;
        assert!(sys::process::is_alive(pid, None));
        drop(tracker);
        assert!(
            gone_within(shm.name(), Duration::from_secs(30)),
            "the inline tracker did not unlink {}",
            shm.name()
        );
    }

    #[test]
    fn the_tracker_spares_a_later_segment_of_the_same_name() {
        let how = Detached::Exec {
            env: &[TRACKER_ENV_ENTRY],
            unset: &[],
        };
        let tracker = start_with(how, an_ended_program()).unwrap();
        let first = SharedMemory::create_untracked(None, 8).unwrap();
        let name = first.name().to_string();
        let first_ino = ino_of(&first);
        send_register(&tracker, &name, first_ino);
        // Someone unlinks it and makes a new segment under the same name
        // (`first` stays mapped, so its inode cannot be reused).
        first.unlink().unwrap();
        let second = SharedMemory::create_untracked(Some(&name), 8).unwrap();
        assert_ne!(ino_of(&second), first_ino);
        // A marker registered with it shows the tracker did its cleanup.
        let marker = SharedMemory::create_untracked(None, 8).unwrap();
        send_register(&tracker, marker.name(), ino_of(&marker));
        let pid = tracker.pid;
        drop(tracker);
        assert!(gone_within(marker.name(), Duration::from_secs(30)));
        let start = std::time::Instant::now();
        while sys::process::is_alive(pid, None) && start.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            !sys::process::is_alive(pid, None),
            "the tracker did not exit"
        );
        assert!(
            posix_shm::shm_open_existing(&name, false).is_ok(),
            "the tracker unlinked a segment it did not register"
        );
        second.unlink().unwrap();
    }

    #[test]
    fn records_register_and_forget_names() {
        let mut names = HashMap::new();
        let mut reg = vec![OP_REGISTER];
        reg.extend_from_slice(&7u64.to_le_bytes());
        reg.extend_from_slice(b"psm_abc");
        apply(&mut names, &reg);
        assert_eq!(names.get("psm_abc"), Some(&7));
        apply(&mut names, b"Upsm_abc");
        assert!(names.is_empty());
    }

    #[test]
    fn malformed_records_are_ignored() {
        let mut names = HashMap::new();
        for bad in [
            &b""[..],
            b"R",
            b"R1234567",
            b"X whatever",
            b"R12345678\xff\xfe",
        ] {
            apply(&mut names, bad);
        }
        assert!(names.is_empty());
    }
}
