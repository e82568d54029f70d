//! Named shared memory (`multiproc::shared_memory`) across processes that are
//! not parent and child, after SIGKILL, across users, and with Python.

mod util;

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};

use multiproc::shared_memory::{
    Item, NamedArray, ShareableList, SharedMemory, SharedMemoryManager, tracker_pid,
};
use multiproc::{Error, Process, StartMethod};
use util::{PROMPTLY, eventually, is_gone, proc_state};

multiproc::init_before_main!();

const METHODS: [StartMethod; 2] = [StartMethod::Spawn, StartMethod::Fork];

/// A name no other test (or test run) uses.
fn unique_name(tag: &str) -> String {
    let mut b = [0u8; 6];
    getrandom_bytes(&mut b);
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("mp_test_{tag}_{}_{hex}", std::process::id())
}

fn getrandom_bytes(buf: &mut [u8]) {
    let f = std::fs::File::open("/dev/urandom").unwrap();
    std::io::Read::read_exact(&mut &f, buf).unwrap();
}

fn exists(name: &str) -> bool {
    std::path::Path::new("/dev/shm").join(name).exists()
}

/// A separately started program: this test binary running `shm_helper` in
/// `role`, with stdin and stdout piped.
fn helper(role: &str, envs: &[(&str, &str)]) -> (Child, BufReader<ChildStdout>) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "shm_helper", "--ignored", "--nocapture"])
        .args(["--test-threads", "1"])
        .env("MP_SHM_ROLE", role)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    (child, out)
}

/// What follows `prefix` on the first line of `out` that holds it.
fn line_after(out: &mut BufReader<ChildStdout>, prefix: &str) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        let n = out.read_line(&mut line).unwrap();
        assert!(n > 0, "the helper ended before printing {prefix:?}");
        // libtest may print "test shm_helper ... " before it on the same line.
        if let Some(at) = line.find(prefix) {
            return line[at + prefix.len()..].trim_end().to_string();
        }
    }
}

/// What the helper processes do, chosen by `MP_SHM_ROLE` (run by the tests
/// below as separate programs; does nothing when run directly).
#[test]
#[ignore = "a helper program, started by the tests in this file"]
fn shm_helper() {
    let Ok(role) = std::env::var("MP_SHM_ROLE") else {
        return;
    };
    let name = std::env::var("MP_SHM_NAME").unwrap_or_default();
    match role.as_str() {
        // Creates a segment and a list, says so, then waits until its stdin
        // closes (or it is killed).
        "creator" => {
            let track = std::env::var("MP_SHM_TRACK").as_deref() != Ok("0");
            let (shm, list) = if track {
                (
                    SharedMemory::create(Some(&name), 4096).unwrap(),
                    ShareableList::create(
                        Some(&format!("{name}_list")),
                        &[7.into(), "seven".into()],
                    )
                    .unwrap(),
                )
            } else {
                (
                    SharedMemory::create_untracked(Some(&name), 4096).unwrap(),
                    ShareableList::create_untracked(
                        Some(&format!("{name}_list")),
                        &[7.into(), "seven".into()],
                    )
                    .unwrap(),
                )
            };
            shm.write(0, b"hello from the creator").unwrap();
            println!("CREATOR-READY {}", tracker_pid().unwrap_or(0));
            let mut rest = String::new();
            let _ = std::io::stdin().read_line(&mut rest);
            // Ends without unlinking: the tracker's job.
            drop((shm, list));
        }
        // Attaches the creator's segment and list by name, reads, answers.
        "attacher" => {
            let shm = SharedMemory::attach(&name).unwrap();
            let mut buf = [0u8; 22];
            shm.read(0, &mut buf).unwrap();
            println!("ATTACHER-READ {}", String::from_utf8_lossy(&buf));
            shm.write(100, b"hello from the attacher").unwrap();
            let list = ShareableList::attach(&format!("{name}_list")).unwrap();
            println!("ATTACHER-LIST {:?}", list.to_vec().unwrap());
            list.set(0, 8i64).unwrap();
            println!("ATTACHER-DONE");
        }
        // The first process of a program: a spawned child creates a segment
        // and returns its name; says whether it is still there, then waits
        // until its stdin closes.
        "spawner" => {
            let mut p = Process::new(create_and_return_name, ()).start_method(StartMethod::Spawn);
            p.start().unwrap();
            let made = p.join().unwrap();
            let attached = SharedMemory::attach(&made).map(|s| s.size());
            println!("SPAWNER-MADE {made} {}", attached.is_ok());
            let mut rest = String::new();
            let _ = std::io::stdin().read_line(&mut rest);
        }
        // Runs one of the tracker scenarios below as a program's first
        // process, prints what it returned, and ends.
        "outlive" => {
            let (names, tracker, replacement) = outlive_the_tracker(());
            println!("OUTLIVE {} {tracker} {replacement}", names.join(" "));
        }
        "fifo" => {
            let (fifo, second, tracker) = leave_a_fifo_for_the_tracker(());
            println!("FIFO {fifo} {second} {tracker}");
        }
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn two_separately_started_processes_share_a_segment_by_name() {
    let name = unique_name("pair");
    let (mut creator, mut creator_out) = helper("creator", &[("MP_SHM_NAME", &name)]);
    let tracker: i32 = line_after(&mut creator_out, "CREATOR-READY ")
        .parse()
        .unwrap();
    assert!(tracker > 0);

    let (mut attacher, mut attacher_out) = helper("attacher", &[("MP_SHM_NAME", &name)]);
    assert_eq!(
        line_after(&mut attacher_out, "ATTACHER-READ "),
        "hello from the creator"
    );
    assert_eq!(
        line_after(&mut attacher_out, "ATTACHER-LIST "),
        r#"[Int(7), Str("seven")]"#
    );
    line_after(&mut attacher_out, "ATTACHER-DONE");
    assert!(attacher.wait().unwrap().success());

    // What the attacher wrote is in the creator's segment, seen from here too.
    let shm = SharedMemory::attach(&name).unwrap();
    let mut buf = [0u8; 23];
    shm.read(100, &mut buf).unwrap();
    assert_eq!(&buf, b"hello from the attacher");
    let list = ShareableList::attach(&format!("{name}_list")).unwrap();
    assert_eq!(list.get(0).unwrap(), Item::Int(8));

    // The creator ends normally without unlinking: its tracker unlinks both
    // names, then exits.
    drop(creator.stdin.take());
    assert!(creator.wait().unwrap().success());
    assert!(
        eventually(PROMPTLY, || !exists(&name)
            && !exists(&format!("{name}_list"))),
        "the tracker did not unlink {name} after its creator ended"
    );
    assert!(
        eventually(PROMPTLY, || is_gone(tracker)),
        "the tracker {tracker} outlived its work"
    );
    // Our mappings stay valid after the unlink.
    shm.read(100, &mut buf).unwrap();
    assert_eq!(&buf, b"hello from the attacher");
}

#[test]
fn sigkill_of_the_creator_leaves_dev_shm_as_it_was() {
    let before: Vec<String> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let name = unique_name("kill");
    let (mut creator, mut out) = helper("creator", &[("MP_SHM_NAME", &name)]);
    let tracker: i32 = line_after(&mut out, "CREATOR-READY ").parse().unwrap();
    assert!(exists(&name) && exists(&format!("{name}_list")));
    creator.kill().unwrap(); // SIGKILL, by pid
    creator.wait().unwrap();
    assert!(
        eventually(PROMPTLY, || !exists(&name)
            && !exists(&format!("{name}_list"))),
        "{name} was left in /dev/shm after its creator was SIGKILLed"
    );
    let after: Vec<String> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(&name))
        .collect();
    assert!(after.is_empty() && !before.iter().any(|n| n.contains(&name)));
    assert!(
        eventually(PROMPTLY, || is_gone(tracker)),
        "the tracker {tracker} was left running"
    );
    assert!(matches!(
        SharedMemory::attach(&name),
        Err(Error::NotFound(_))
    ));
}

#[test]
fn an_untracked_segment_outlives_its_killed_creator() {
    let name = unique_name("untracked");
    let (mut creator, mut out) =
        helper("creator", &[("MP_SHM_NAME", &name), ("MP_SHM_TRACK", "0")]);
    assert_eq!(
        line_after(&mut out, "CREATOR-READY "),
        "0",
        "no tracker started"
    );
    creator.kill().unwrap();
    creator.wait().unwrap();
    let shm = SharedMemory::attach(&name).unwrap();
    let mut buf = [0u8; 22];
    shm.read(0, &mut buf).unwrap();
    assert_eq!(&buf, b"hello from the creator");
    shm.unlink().unwrap();
    multiproc::shared_memory::unlink(&format!("{name}_list")).unwrap();
    assert!(!exists(&name));
}

fn become_nobody() {
    // SAFETY: plain syscalls on this (single-threaded, just started) child.
    unsafe {
        assert_eq!(libc::setgroups(0, std::ptr::null()), 0);
        assert_eq!(libc::setresgid(65534, 65534, 65534), 0);
        assert_eq!(libc::setresuid(65534, 65534, 65534), 0);
    }
}

fn describe(r: multiproc::Result<()>) -> String {
    match r {
        Ok(()) => "opened".into(),
        Err(Error::PermissionDenied(_)) => "permission denied".into(),
        Err(e) => format!("{e:?}"),
    }
}

/// In a child turned into user `nobody`: try to attach and to unlink `name`.
fn attach_as_nobody(name: String) -> (String, String) {
    become_nobody();
    let attached = describe(SharedMemory::attach(&name).map(drop));
    let unlinked = describe(multiproc::shared_memory::unlink(&name));
    (attached, unlinked)
}

#[test]
fn another_user_cannot_open_or_unlink_a_0600_segment() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to switch to another user");
        return;
    }
    let shm = SharedMemory::create(None, 64).unwrap();
    for m in METHODS {
        let mut p = Process::new(attach_as_nobody, shm.name().to_string()).start_method(m);
        p.start().unwrap();
        let (attached, unlinked) = p.join().unwrap();
        assert_eq!(attached, "permission denied", "{m:?}");
        assert_eq!(unlinked, "permission denied", "{m:?}");
    }
    // Still there for its owner.
    SharedMemory::attach(shm.name()).unwrap();
    shm.unlink().unwrap();
}

/// In a child turned into user `nobody`: creates segment `name`, open to
/// every user (0666), of one page. Whether it could.
fn create_open_to_all_as_nobody(name: String) -> bool {
    become_nobody();
    let path = std::ffi::CString::new(format!("/{name}")).unwrap();
    // SAFETY: plain syscalls on a NUL-terminated name and the fd they return.
    unsafe {
        let fd = libc::shm_open(
            path.as_ptr(),
            libc::O_CREAT | libc::O_EXCL | libc::O_RDWR,
            0o666,
        );
        fd >= 0
            && libc::fchmod(fd, 0o666) == 0
            && libc::ftruncate(fd, 4096) == 0
            && libc::close(fd) == 0
    }
}

#[test]
fn a_segment_of_another_user_is_refused_even_when_it_could_be_opened() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to switch to another user");
        return;
    }
    let name = unique_name("squat");
    let mut p = Process::new(create_open_to_all_as_nobody, name.clone());
    p.start().unwrap();
    assert!(p.join().unwrap(), "nobody made its segment");
    // Root could open and map it, and its owner could then shrink it under
    // the mapping: each read past the new end would be a SIGBUS.
    let attached = SharedMemory::attach(&name).map(drop);
    assert!(
        matches!(attached, Err(Error::PermissionDenied(ref m)) if m.contains("another user")),
        "{attached:?}"
    );
    assert!(matches!(
        ShareableList::attach(&name).map(drop),
        Err(Error::PermissionDenied(_))
    ));
    multiproc::shared_memory::unlink(&name).unwrap();
    assert!(!exists(&name));
}

fn add_one_to_each(name: String) -> u64 {
    let a = NamedArray::<u64>::attach(&name).unwrap();
    for i in 0..a.len() {
        a.set(i, a.get(i).unwrap() + 1).unwrap();
    }
    a.to_vec().iter().sum()
}

#[test]
fn a_named_array_is_shared_with_children_by_name() {
    let a = NamedArray::<u64>::create(None, 8).unwrap();
    for i in 0..8 {
        a.set(i, i as u64).unwrap();
    }
    for m in METHODS {
        let mut p = Process::new(add_one_to_each, a.shm().name().to_string()).start_method(m);
        p.start().unwrap();
        p.join().unwrap();
    }
    assert_eq!(a.to_vec(), (2..10).collect::<Vec<u64>>());
    a.shm().unlink().unwrap();
}

fn use_handles((shm, list, array): (SharedMemory, ShareableList, NamedArray<u32>)) -> String {
    shm.write(0, b"child was here").unwrap();
    let Item::Int(n) = list.get(0).unwrap() else {
        panic!("item 0 is not an int")
    };
    list.set(0, n + 1).unwrap();
    array.set(1, array.get(1).unwrap() + 10).unwrap();
    shm.name().to_string()
}

#[test]
fn handles_travel_to_children_by_name() {
    let shm = SharedMemory::create(None, 32).unwrap();
    let list = ShareableList::create(None, &[Item::Int(0)]).unwrap();
    let array = NamedArray::<u32>::create(None, 3).unwrap();
    for m in METHODS {
        let handles = (
            SharedMemory::attach(shm.name()).unwrap(),
            ShareableList::attach(list.shm().name()).unwrap(),
            NamedArray::<u32>::attach(array.shm().name()).unwrap(),
        );
        let mut p = Process::new(use_handles, handles).start_method(m);
        p.start().unwrap();
        assert_eq!(p.join().unwrap(), shm.name(), "{m:?}");
    }
    let mut buf = [0u8; 14];
    shm.read(0, &mut buf).unwrap();
    assert_eq!(&buf, b"child was here");
    assert_eq!(list.get(0).unwrap(), Item::Int(2));
    assert_eq!(array.to_vec(), vec![0, 20, 0]);
    // A handle whose name is gone cannot be decoded: a clear error, no panic.
    let gone = SharedMemory::create(None, 8).unwrap();
    gone.unlink().unwrap();
    let bytes = multiproc::Shareable::encode(&gone).unwrap();
    assert!(<SharedMemory as multiproc::Shareable>::decode(&bytes).is_err());
    shm.unlink().unwrap();
    list.shm().unlink().unwrap();
    array.shm().unlink().unwrap();
}

fn create_and_return_name(_: ()) -> String {
    let shm = SharedMemory::create(None, 128).unwrap();
    shm.name().to_string()
}

/// A segment a spawned child creates and hands back by name outlives the
/// child, and goes once the program (its first process) is gone, as in
/// Python, whose children share their parent's resource tracker (it went
/// with the child, and the parent's attach was `NotFound`; from a
/// newcomer's program).
#[test]
fn a_segment_a_child_creates_lasts_as_long_as_the_program() {
    let (mut program, mut out) = helper("spawner", &[]);
    let made = line_after(&mut out, "SPAWNER-MADE ");
    let (name, attached) = made.split_once(' ').unwrap();
    assert_eq!(attached, "true", "{name} went with its spawned creator");
    assert!(exists(name));
    drop(program.stdin.take());
    assert!(program.wait().unwrap().success());
    assert!(
        eventually(PROMPTLY, || !exists(name)),
        "{name} outlived the program"
    );
}

fn create_and_name_the_tracker(_: ()) -> (String, i32) {
    let shm = SharedMemory::create(None, 128).unwrap();
    (shm.name().to_string(), tracker_pid().unwrap())
}

/// A child's tracker that waits for the program goes as soon as every name
/// it was told of is unlinked by someone else (the parent, here): 300
/// children left 300 trackers polling until the program ended (from an
/// attack battery).
#[test]
fn a_childs_tracker_goes_once_its_segments_are_unlinked_elsewhere() {
    let mut p = Process::new(create_and_name_the_tracker, ()).start_method(StartMethod::Spawn);
    p.start().unwrap();
    let (name, tracker) = p.join().unwrap();
    assert!(!is_gone(tracker), "the tracker went with the child");
    let shm = SharedMemory::attach(&name).unwrap();
    shm.unlink().unwrap();
    assert!(
        eventually(PROMPTLY, || is_gone(tracker)),
        "the tracker of {name} stayed after its unlink"
    );
}

#[test]
fn the_tracker_is_detached_from_its_creator() {
    let shm = SharedMemory::create(None, 16).unwrap();
    let tracker = tracker_pid().unwrap();
    let (state, ppid) = proc_state(tracker).expect("the tracker runs while we live");
    assert_ne!(ppid, std::process::id() as i32, "the tracker is our child");
    assert_ne!(state, 'Z');
    shm.unlink().unwrap();
}

/// Whether `signal` is ignored by process `pid` (its `SigIgn` mask).
fn ignores(pid: i32, signal: i32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (signal - 1)) != 0)
}

/// In a program's first process (its own tracker): signals its tracker,
/// kills it, and creates again. Returns its segments' names and both trackers' pids.
fn outlive_the_tracker(_: ()) -> (Vec<String>, i32, i32) {
    let first = SharedMemory::create(None, 64).unwrap();
    let tracker = tracker_pid().unwrap();
    for signal in [libc::SIGINT, libc::SIGTERM] {
        assert!(
            ignores(tracker, signal),
            "the tracker takes signal {signal}"
        );
        // SAFETY: kill(2) sends a signal to our tracker.
        assert_eq!(unsafe { libc::kill(tracker, signal) }, 0);
    }
    let second = SharedMemory::create(None, 64).unwrap();
    assert_eq!(tracker_pid(), Some(tracker), "the tracker was replaced");
    assert!(!is_gone(tracker));
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(tracker, libc::SIGKILL) }, 0);
    assert!(eventually(PROMPTLY, || is_gone(tracker)));
    let third = SharedMemory::create(None, 64).unwrap();
    let replacement = tracker_pid().unwrap();
    let names = [first, second, third].map(|s| s.name().to_string());
    (names.to_vec(), tracker, replacement)
}

/// The tracker ignores SIGINT and SIGTERM (a signal to the program's group
/// must not end the cleanup), and one killed anyway is replaced at the next
/// create, told again of the segments made before: none of them leaks.
/// From a port of CPython's `TestResourceTracker` (every create failed with
/// `BrokenPipe` once the tracker had died, and its segments were left).
#[test]
fn the_tracker_ignores_termination_and_a_killed_one_is_replaced() {
    let (mut program, mut out) = helper("outlive", &[]);
    let line = line_after(&mut out, "OUTLIVE ");
    assert!(program.wait().unwrap().success());
    let words: Vec<&str> = line.split(' ').collect();
    let [names @ .., tracker, replacement] = &words[..] else {
        panic!("{line}");
    };
    assert_ne!(tracker, replacement);
    assert_eq!(names.len(), 3);
    for name in names {
        assert!(
            eventually(PROMPTLY, || !exists(name)),
            "{name} outlived its creator and its killed tracker"
        );
    }
    assert!(eventually(PROMPTLY, || is_gone(
        replacement.parse().unwrap()
    )));
}

/// Makes a FIFO under shared memory name `name`.
fn fifo_at(name: &str) {
    let path =
        std::ffi::CString::new(format!("/dev/shm/{}", name.trim_start_matches('/'))).unwrap();
    // SAFETY: `path` is NUL-terminated.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
}

fn remove_fifo(name: &str) {
    let _ = std::fs::remove_file(format!("/dev/shm/{}", name.trim_start_matches('/')));
}

/// In a program's first process (its own tracker): two tracked segments; the first
/// is unlinked behind the tracker's back (as another process's `unlink`
/// does) and a FIFO made under its name. Returns both names and the tracker.
fn leave_a_fifo_for_the_tracker(_: ()) -> (String, String, i32) {
    let first = SharedMemory::create(None, 64).unwrap();
    let second = SharedMemory::create(None, 64).unwrap();
    let path = std::ffi::CString::new(first.name()).unwrap();
    // SAFETY: `path` is NUL-terminated.
    assert_eq!(unsafe { libc::shm_unlink(path.as_ptr()) }, 0);
    fifo_at(first.name());
    let names = (first.name().to_string(), second.name().to_string());
    (names.0, names.1, tracker_pid().unwrap())
}

/// A FIFO under a segment's name (another user can make one once the name
/// is free) holds neither `attach` nor the tracker: opening it blocked
/// for ever, and the tracker then never unlinked the segments after it nor
/// exited. From an attack battery.
#[test]
fn a_fifo_under_a_segments_name_holds_nothing_up() {
    let name = unique_name("fifo");
    fifo_at(&name);
    let attached = SharedMemory::attach(&name);
    remove_fifo(&name);
    assert!(matches!(attached, Err(Error::Io(_))), "{attached:?}");

    let (mut program, mut out) = helper("fifo", &[]);
    let line = line_after(&mut out, "FIFO ");
    assert!(program.wait().unwrap().success());
    let words: Vec<&str> = line.split(' ').collect();
    let [fifo, second, tracker] = words[..] else {
        panic!("{line}");
    };
    let tracker: i32 = tracker.parse().unwrap();
    let cleaned = eventually(PROMPTLY, || !exists(second) && is_gone(tracker));
    remove_fifo(fifo);
    assert!(cleaned, "the tracker did not unlink {second} and exit");
}

#[test]
fn missing_names_and_bad_names_are_typed_errors() {
    assert!(matches!(
        SharedMemory::attach(&unique_name("missing")),
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        ShareableList::attach(&unique_name("missing")),
        Err(Error::NotFound(_))
    ));
    // (One leading slash is Python's form of a name, and is taken.)
    for bad in ["", "a/b", "//lead", "/a/b"] {
        assert!(matches!(
            SharedMemory::attach(bad),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            SharedMemory::create(Some(bad), 8),
            Err(Error::InvalidArgument(_))
        ));
    }
    assert!(matches!(
        SharedMemory::create(None, 0),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn the_manager_unlinks_its_segments_on_shutdown_and_drop() {
    let smm = SharedMemoryManager::start().unwrap();
    let shm = smm.shared_memory(256).unwrap();
    let list = smm.shareable_list(&[Item::Int(1), Item::None]).unwrap();
    let names = smm.segment_names();
    assert_eq!(
        names,
        vec![shm.name().to_string(), list.shm().name().to_string()]
    );
    // One already unlinked by hand is skipped.
    shm.unlink().unwrap();
    smm.shutdown().unwrap();
    assert!(names.iter().all(|n| !exists(n)));
    assert!(matches!(smm.shared_memory(8), Err(Error::InvalidState(_))));
    // The mapping outlives the name.
    assert_eq!(list.get(0).unwrap(), Item::Int(1));

    let name = {
        let smm = SharedMemoryManager::start().unwrap();
        smm.shared_memory(8).unwrap().name().to_string()
    };
    assert!(!exists(&name), "dropping the manager left {name}");
}

const PY_READ_RUST: &str = r#"
import sys
from multiprocessing import resource_tracker, shared_memory
shm = shared_memory.SharedMemory(sys.argv[1])
# Python 3.11 registers attached segments with its own tracker; we own these.
resource_tracker.unregister(shm._name, "shared_memory")
print("PY-BYTES", bytes(shm.buf[:9]).decode())
shm.buf[9:14] = b"+py!!"
sl = shared_memory.ShareableList(name=sys.argv[2])
resource_tracker.unregister(sl.shm._name, "shared_memory")
print("PY-LIST", repr(list(sl)))
sl[0] = 99
sl[3] = "from py"
shm.close()
sl.shm.close()
"#;

const PY_CREATE: &str = r#"
import sys
from multiprocessing import resource_tracker, shared_memory
sl = shared_memory.ShareableList([1, 2.5, True, "héllo", b"by\x00tes", None, -7], name=sys.argv[1])
resource_tracker.unregister(sl.shm._name, "shared_memory")
sl.shm.close()
print("PY-CREATED")
"#;

fn python() -> Option<Command> {
    let ok = Command::new("python3")
        .arg("-c")
        .arg("import multiprocessing.shared_memory")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipped: no python3 with multiprocessing.shared_memory");
        return None;
    }
    Some(Command::new("python3"))
}

#[test]
fn python_reads_and_writes_a_rust_segment_and_shareable_list() {
    let Some(mut py) = python() else { return };
    let shm = SharedMemory::create(None, 64).unwrap();
    shm.write(0, b"from rust").unwrap();
    let items = vec![
        Item::Int(1),
        Item::Float(2.5),
        Item::Bool(true),
        Item::Str("héllo wörld".into()),
        Item::Bytes(b"raw".to_vec()),
        Item::None,
    ];
    let list = ShareableList::create(None, &items).unwrap();
    let out = py
        .arg("-c")
        .arg(PY_READ_RUST)
        .arg(shm.name())
        .arg(list.shm().name())
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "python failed:\n{text}");
    assert!(text.contains("PY-BYTES from rust"), "{text}");
    assert!(
        text.contains("PY-LIST [1, 2.5, True, 'héllo wörld', b'raw', None]"),
        "{text}"
    );
    let mut buf = [0u8; 14];
    shm.read(0, &mut buf).unwrap();
    assert_eq!(&buf, b"from rust+py!!");
    assert_eq!(list.get(0).unwrap(), Item::Int(99));
    assert_eq!(list.get(3).unwrap(), Item::Str("from py".into()));
    assert_eq!(list.get(5).unwrap(), Item::None);
    shm.unlink().unwrap();
    list.shm().unlink().unwrap();
}

#[test]
fn rust_reads_a_python_shareable_list() {
    let Some(mut py) = python() else { return };
    let name = unique_name("py");
    let out = py
        .arg("-c")
        .arg(PY_CREATE)
        .arg(&name)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("PY-CREATED"));
    let list = ShareableList::attach(&name).unwrap();
    assert_eq!(
        list.to_vec().unwrap(),
        vec![
            Item::Int(1),
            Item::Float(2.5),
            Item::Bool(true),
            Item::Str("héllo".into()),
            Item::Bytes(b"by\x00tes".to_vec()),
            Item::None,
            Item::Int(-7),
        ]
    );
    list.set(3, "hi").unwrap();
    assert_eq!(list.get(3).unwrap(), Item::Str("hi".into()));
    list.shm().unlink().unwrap();
}
