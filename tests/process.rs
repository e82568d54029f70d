//! Processes under every start method: results, exit codes, signals,
//! names, daemons, sentinels, the parent seen from a child, the forkserver.

mod util;

use std::time::Duration;

use multiproc::{Error, Process, StartMethod, get_context};
use util::{PROMPTLY, assert_not_our_zombie, eventually, is_gone};

multiproc::init_before_main!();

const METHODS: [StartMethod; 3] = [
    StartMethod::Spawn,
    StartMethod::Fork,
    StartMethod::Forkserver,
];

fn square(x: u64) -> u64 {
    x * x
}

fn whoami(_: ()) -> (i32, Option<i32>, String, bool) {
    let me = multiproc::current_process();
    let parent = multiproc::parent_process();
    (
        me.pid,
        parent.as_ref().map(|p| p.pid),
        me.name,
        parent.is_some_and(|p| p.is_alive()),
    )
}

fn exit_with(code: i32) {
    std::process::exit(code)
}

fn boom(msg: String) -> u8 {
    panic!("{msg}")
}

fn sleep_secs(secs: u64) {
    std::thread::sleep(Duration::from_secs(secs))
}

fn start<R: multiproc::Shareable>(mut p: Process<R>) -> Process<R> {
    p.start().expect("start");
    p
}

#[test]
fn args_in_result_out() {
    for m in METHODS {
        let mut p = start(Process::new(square, 12).start_method(m));
        assert_eq!(p.join().unwrap(), 144, "{m:?}");
        assert_eq!(p.exitcode(), Some(0));
        assert!(!p.is_alive());
        assert_not_our_zombie(p.pid().unwrap());
    }
}

#[test]
fn pids_names_and_parent() {
    for m in METHODS {
        let mut a = start(Process::new(whoami, ()).start_method(m).name("alpha"));
        let mut b = start(Process::new(whoami, ()).start_method(m));
        let (pid_a, parent_a, name_a, parent_alive) = a.join().unwrap();
        let (pid_b, parent_b, name_b, _) = b.join().unwrap();
        let me = multiproc::current_process().pid;
        assert_eq!(Some(pid_a), a.pid());
        assert_ne!(pid_a, pid_b);
        assert_ne!(pid_a, me);
        assert_eq!(parent_a, Some(me), "{m:?}");
        assert_eq!(parent_b, Some(me));
        assert!(parent_alive);
        assert_eq!(name_a, "alpha");
        assert!(name_b.starts_with("Process-"), "{name_b}");
        assert_eq!(a.get_name(), "alpha");
    }
    assert!(multiproc::parent_process().is_none());
    assert_eq!(multiproc::current_process().name, "MainProcess");
}

fn no_arguments() -> (i32, String) {
    let me = multiproc::current_process();
    (me.pid, me.name)
}

#[test]
fn a_target_without_arguments_runs_under_both_methods() {
    for m in METHODS {
        let mut p = start(Process::from_fn(no_arguments).start_method(m).name("bare"));
        let (pid, name) = p.join_timeout(PROMPTLY).unwrap();
        assert_eq!(Some(pid), p.pid(), "{m:?}");
        assert_eq!(name, "bare", "{m:?}");
    }
}

fn wait_for(event: multiproc::Event) -> u64 {
    event.wait().unwrap();
    7
}

#[test]
fn try_join_never_waits() {
    for m in METHODS {
        let event = multiproc::Event::new().unwrap();
        let mut p = Process::new(wait_for, event.clone()).start_method(m);
        assert!(matches!(p.try_join(), Err(Error::InvalidState(_))), "{m:?}");
        p.start().unwrap();
        // The child waits for the event: it cannot have ended.
        assert!(matches!(p.try_join(), Err(Error::WouldBlock)), "{m:?}");
        assert!(p.is_alive());
        event.set().unwrap();
        assert!(eventually(PROMPTLY, || !p.is_alive()), "{m:?}");
        assert_eq!(p.try_join().unwrap(), 7, "{m:?}");
        assert!(matches!(p.try_join(), Err(Error::InvalidState(_))), "{m:?}");
        assert!(matches!(p.join(), Err(Error::InvalidState(_))), "{m:?}");
    }
}

fn pids_seen_by_a_child(event: multiproc::Event) -> (i32, Option<i32>) {
    event.wait().unwrap();
    let me: i32 = multiproc::current_process().pid;
    let parent: Option<i32> = multiproc::parent_process().map(|p| p.pid);
    (me, parent)
}

#[test]
fn pids_are_one_type_everywhere() {
    for m in METHODS {
        let event = multiproc::Event::new().unwrap();
        let mut p = start(Process::new(pids_seen_by_a_child, event.clone()).start_method(m));
        // Every way of naming a process gives an `i32`: no casts below.
        let pid: i32 = p.pid().unwrap();
        let listed: Vec<i32> = multiproc::active_children().iter().map(|c| c.pid).collect();
        assert!(listed.contains(&pid), "{m:?}: {pid} not in {listed:?}");
        event.set().unwrap();
        let (seen, parent) = p.join_timeout(PROMPTLY).unwrap();
        assert_eq!(seen, pid, "{m:?}");
        assert_eq!(parent, Some(multiproc::current_process().pid), "{m:?}");
        let e: Error = Error::ChildFailed {
            pid,
            exitcode: None,
            signal: None,
            panic: None,
        };
        assert!(e.to_string().contains(&pid.to_string()));
    }
}

#[test]
fn nonzero_exit_is_reported() {
    for m in METHODS {
        let mut p = start(Process::new(exit_with, 3).start_method(m));
        match p.join() {
            Err(Error::ChildFailed {
                exitcode: Some(3),
                signal: None,
                panic: None,
                ..
            }) => {}
            other => panic!("{m:?}: {other:?}"),
        }
        assert_eq!(p.exitcode(), Some(3));
    }
}

fn exit_0_instead_of_returning(_: ()) -> u8 {
    std::process::exit(0)
}

/// CPython's `sys.exit(0)` in a target: a clean end, `join` returns, under
/// every start method (a spawned child's exit handler tells the parent that
/// the target ran, which a `main` without `init()` would not).
#[test]
fn a_target_that_exits_with_code_0_ends_cleanly() {
    for m in METHODS {
        let mut p = start(Process::new(exit_with, 0).start_method(m));
        assert!(matches!(p.join(), Ok(())), "{m:?}");
        assert_eq!(p.exitcode(), Some(0));
        // A target owing a result has none to give: an error, not a panic.
        let mut p = start(Process::new(exit_0_instead_of_returning, ()).start_method(m));
        match p.join() {
            Err(
                e @ Error::ChildFailed {
                    exitcode: Some(0),
                    signal: None,
                    panic: None,
                    ..
                },
            ) => assert!(e.to_string().contains("without returning a result"), "{e}"),
            other => panic!("{m:?}: {other:?}"),
        }
    }
}

/// A child that exits with code 0 from a process its target forked: the
/// child's own report is not confused by it (the exit handler a forked
/// process inherits stays silent there).
fn fork_one_that_exits(_: ()) -> u32 {
    let mut p = Process::new(exit_with, 0).start_method(StartMethod::Fork);
    p.start().unwrap();
    p.join().unwrap();
    7
}

#[test]
fn an_exit_in_a_grandchild_is_not_taken_for_its_parents() {
    for m in METHODS {
        let mut p = start(Process::new(fork_one_that_exits, ()).start_method(m));
        assert_eq!(p.join().unwrap(), 7, "{m:?}");
    }
}

fn abort_here(_: ()) {
    std::process::abort();
}

/// A child killed by SIGABRT (a stack overflow looks the same) is told as
/// such, with its likely causes, not as a bare signal number (from a
/// newcomer, whose stack overflow read "killed by signal 6").
#[test]
fn an_aborted_child_is_described() {
    for m in METHODS {
        let mut p = start(Process::new(abort_here, ()).start_method(m));
        let e = p.join_timeout(PROMPTLY).unwrap_err();
        assert!(
            matches!(
                e,
                Error::ChildFailed {
                    signal: Some(6),
                    ..
                }
            ),
            "{m:?}: {e:?}"
        );
        assert!(e.to_string().contains("SIGABRT: a stack overflow"), "{e}");
    }
}

#[test]
fn panic_message_reaches_the_parent() {
    for m in METHODS {
        let mut p = start(Process::new(boom, "kaput".to_string()).start_method(m));
        match p.join() {
            Err(Error::ChildFailed {
                panic: Some(msg),
                exitcode: Some(1),
                ..
            }) => assert!(msg.contains("kaput"), "{msg}"),
            other => panic!("{m:?}: {other:?}"),
        }
        assert_eq!(p.exitcode(), Some(1));
    }
}

#[test]
fn terminate_and_kill_give_negative_signals() {
    for m in METHODS {
        let mut t = start(Process::new(sleep_secs, 60).start_method(m));
        let mut k = start(Process::new(sleep_secs, 60).start_method(m));
        assert!(t.is_alive());
        assert_eq!(t.exitcode(), None);
        t.terminate().unwrap();
        k.kill().unwrap();
        assert!(matches!(
            t.join_timeout(PROMPTLY),
            Err(Error::ChildFailed {
                signal: Some(15),
                ..
            })
        ));
        assert!(matches!(
            k.join_timeout(PROMPTLY),
            Err(Error::ChildFailed {
                signal: Some(9),
                ..
            })
        ));
        assert_eq!(t.exitcode(), Some(-15), "{m:?}");
        assert_eq!(k.exitcode(), Some(-9));
    }
}

#[test]
fn join_timeout_on_a_sleeper() {
    for m in METHODS {
        let mut p = start(Process::new(sleep_secs, 60).start_method(m));
        assert!(matches!(
            p.join_timeout(Duration::from_millis(100)),
            Err(Error::Timeout(_))
        ));
        assert!(p.is_alive());
        p.kill().unwrap();
        assert!(p.join_timeout(PROMPTLY).is_err());
        assert_eq!(p.exitcode(), Some(-9));
    }
}

fn start_daemon_grandchild(method: StartMethod) -> i32 {
    let mut d = Process::new(sleep_secs, 120)
        .start_method(method)
        .daemon(true);
    d.start().unwrap();
    let pid = d.pid().unwrap();
    std::mem::forget(d);
    pid
}

#[test]
fn daemon_children_end_with_their_parent() {
    for m in METHODS {
        let mut parent = start(Process::new(start_daemon_grandchild, m).start_method(m));
        let grandchild = parent.join().unwrap();
        assert!(
            eventually(PROMPTLY, || is_gone(grandchild)),
            "{m:?}: daemon grandchild {grandchild} outlived its parent"
        );
    }
}

fn daemon_flags_of_a_new_handle(_: ()) -> (bool, bool) {
    let default = Process::new(square, 1).is_daemon();
    let told = Process::new(square, 1).daemon(false).is_daemon();
    (default, told)
}

/// CPython's `test_daemon_argument`: a handle made in a daemon process is a
/// daemon by default (Python copies the current process's flag), in the
/// main process not; `daemon(false)` still says otherwise.
#[test]
fn a_new_handle_takes_its_makers_daemon_flag() {
    assert!(!Process::new(square, 1).is_daemon());
    for m in METHODS {
        let mut d = Process::new(daemon_flags_of_a_new_handle, ())
            .start_method(m)
            .daemon(true);
        d.start().unwrap();
        assert_eq!(d.join_timeout(PROMPTLY).unwrap(), (true, false), "{m:?}");
    }
}

fn closure_target_is_fork_only() -> multiproc::Result<()> {
    let mut p = Process::from_closure(|| 1u8).start_method(StartMethod::Spawn);
    p.start()
}

#[test]
fn fork_runs_capturing_closures() {
    let words = ["a".to_string(), "bc".to_string()];
    let mut p = Process::from_closure(move || words.iter().map(String::len).sum::<usize>());
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), 3);
    assert!(matches!(
        closure_target_is_fork_only(),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn misuse_is_a_clear_error() {
    let mut p = Process::new(square, 2);
    assert!(matches!(p.join(), Err(Error::InvalidState(_))));
    assert!(matches!(p.terminate(), Err(Error::InvalidState(_))));
    p.start().unwrap();
    assert!(matches!(p.start(), Err(Error::InvalidState(_))));
    assert_eq!(p.join().unwrap(), 4);
    assert!(matches!(p.join(), Err(Error::InvalidState(_))));
}

#[test]
fn context_does_not_touch_the_default() {
    let ctx = get_context(StartMethod::Fork);
    let mut p = ctx.process(square, 5);
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), 25);
    assert_eq!(ctx.start_method(), StartMethod::Fork);
    // The default was used by other tests (or not): either way setting it now
    // must give a clear answer, and a second set must fail.
    let first = multiproc::set_start_method(StartMethod::Spawn);
    assert!(matches!(
        multiproc::set_start_method(StartMethod::Spawn),
        Err(Error::InvalidState(_))
    ));
    if let Err(e) = first {
        assert!(matches!(e, Error::InvalidState(_)));
    }
}

#[test]
fn a_different_binary_is_refused() {
    let ctx = get_context(StartMethod::Spawn).with_executable(env!("CARGO_BIN_EXE_multiproc"));
    let mut p = ctx.process(square, 3);
    p.start().unwrap();
    match p.join_timeout(PROMPTLY) {
        Err(Error::BinaryMismatch(msg)) => assert!(msg.contains("different binary"), "{msg}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_child_that_never_calls_init_is_reported() {
    let ctx = get_context(StartMethod::Spawn).with_executable("/bin/true");
    let mut p = ctx.process(square, 3);
    p.start().unwrap();
    match p.join_timeout(PROMPTLY) {
        Err(e @ Error::InitMissing { .. }) => {
            assert!(e.to_string().contains("init()"), "{e}")
        }
        other => panic!("{other:?}"),
    }
}

/// A handle that refuses to be decoded, standing in for arguments the child cannot read.
struct Undecodable;

impl multiproc::handle::ShareHandle for Undecodable {
    fn to_repr(&self) -> multiproc::Result<multiproc::handle::HandleRepr> {
        Ok(multiproc::handle::HandleRepr {
            id: 1,
            pid: 0,
            fd: -1,
            offset: 0,
            extra: 0,
        })
    }
    fn from_repr(_: &multiproc::handle::HandleRepr) -> multiproc::Result<Self> {
        Err(Error::Protocol("this argument refuses to decode".into()))
    }
}
multiproc::impl_share_handle!(impl<> for Undecodable);

fn take_undecodable(_: Undecodable) -> u8 {
    1
}

#[test]
fn undecodable_arguments_fail_in_the_parent() {
    let mut p = Process::new(take_undecodable, Undecodable).start_method(StartMethod::Spawn);
    p.start().unwrap();
    match p.join_timeout(PROMPTLY) {
        Err(Error::Remote(msg)) => assert!(msg.contains("refuses"), "{msg}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn active_children_lists_and_reaps() {
    let mut p = start(Process::new(sleep_secs, 60).name("listed"));
    let pid = p.pid().unwrap();
    assert!(
        multiproc::active_children()
            .iter()
            .any(|c| c.pid == pid && c.name == "listed")
    );
    p.kill().unwrap();
    let _ = p.join_timeout(PROMPTLY);
    assert!(!multiproc::active_children().iter().any(|c| c.pid == pid));
    drop(p);
    // A dropped handle of a finished child leaves no zombie behind.
    let q = start(Process::new(square, 1).start_method(StartMethod::Fork));
    let qpid = q.pid().unwrap();
    drop(q);
    assert!(eventually(PROMPTLY, || {
        multiproc::active_children();
        util::proc_state(qpid).is_none_or(|(s, ppid)| s != 'Z' || ppid != std::process::id() as i32)
    }));
    assert!(multiproc::cpu_count() >= 1);
}

/// Waits (bounded) until this process's parent is gone, then raises the flag.
fn notice_orphaning(flag: multiproc::RawValue<u32>) {
    let parent = multiproc::parent_process().expect("a child has a parent");
    let start = std::time::Instant::now();
    while parent.is_alive() && start.elapsed() < PROMPTLY {
        std::thread::sleep(Duration::from_millis(5));
    }
    if !parent.is_alive() {
        flag.store(1);
    }
}

/// Starts a non-daemon grandchild and returns without joining it (the
/// process then waits for it at exit, as Python's children do).
fn leave_a_grandchild((method, flag): (StartMethod, multiproc::RawValue<u32>)) -> i32 {
    let mut g = Process::new(notice_orphaning, flag).start_method(method);
    g.start().unwrap();
    g.pid().unwrap()
}

#[test]
fn a_child_can_tell_its_parent_is_gone() {
    for m in METHODS {
        let flag = multiproc::RawValue::new(0u32).unwrap();
        let mut middle = Process::new(leave_a_grandchild, (m, flag.clone())).start_method(m);
        middle.start().unwrap();
        // The middle process waits for its non-daemon grandchild at exit (as
        // Python does), so kill it: the grandchild must notice and not die with it.
        assert!(matches!(
            middle.join_timeout(Duration::from_millis(50)),
            Err(Error::Timeout(_))
        ));
        middle.kill().unwrap();
        // Its target had returned (the result may arrive); it still died by SIGKILL.
        let _ = middle.join_timeout(PROMPTLY);
        assert_eq!(middle.exitcode(), Some(-9));
        assert!(
            eventually(PROMPTLY, || flag.load() == 1),
            "{m:?}: the grandchild did not notice its parent died"
        );
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn long_panic(len: usize) -> u8 {
    // Keep the long message out of the test output.
    std::panic::set_hook(Box::new(|_| {}));
    panic!("{}", "x".repeat(len))
}

#[test]
fn results_and_panic_messages_of_every_size_come_back() {
    // Small frames go inline on the socket, large ones in a memory file.
    for m in METHODS {
        for len in [0, 100, 2_100, 20_000, 40_000, 300_000, 5 << 20] {
            let mut p = start(Process::new(pattern, len).start_method(m));
            let got = p.join().unwrap_or_else(|e| panic!("{m:?} {len}: {e}"));
            assert!(got == pattern(len), "{m:?} {len}: wrong bytes");
            assert_eq!(p.exitcode(), Some(0));
            assert_not_our_zombie(p.pid().unwrap());
        }
        for len in [3_000, 100_000] {
            let mut p = start(Process::new(long_panic, len).start_method(m));
            match p.join() {
                Err(Error::ChildFailed {
                    panic: Some(msg),
                    exitcode: Some(1),
                    ..
                }) => assert!(msg == "x".repeat(len), "{m:?} {len}: wrong message"),
                other => panic!("{m:?} {len}: {other:?}"),
            }
        }
    }
}

/// Regression: a descriptor number in `MULTIPROC_CHILD_FD` was taken as
/// this process's own (and closed later) by `init`, whatever else owned it.
/// Only the launch channel on stdin, as the parent passes it, is taken.
#[test]
fn init_takes_no_raw_descriptor_number_from_the_environment() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env("MULTIPROC_CHILD_FD", "0")
        .arg("--list")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(70), "{stderr}");
    assert!(
        stderr.contains("does not name the launch channel"),
        "{stderr}"
    );
}

/// `MULTIPROC_CHILD_FD=stdin` left in the environment of a program whose
/// stdin is no launch channel (a pipe, a TCP connection): the program runs as itself,
/// and its stdin is left alone (it exited 1 before `main`, silently, having
/// read what was piped in). From an attack battery.
#[test]
fn a_stray_launch_variable_with_a_pipe_as_stdin_runs_the_program() {
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .env("MULTIPROC_CHILD_FD", "stdin")
        .args(["--list", "--format", "terse"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        // The harness does not read it; a broken pipe is fine.
        let _ = stdin.write_all(b"input for the program\n");
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains(": test"), "{listed}");

    // A TCP connection as stdin (as under inetd) is no launch channel either.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (mut server_side, _) = listener.accept().unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env("MULTIPROC_CHILD_FD", "stdin")
        .args(["--list", "--format", "terse"])
        .stdin(std::process::Stdio::from(std::os::fd::OwnedFd::from(
            client,
        )))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains(": test"));
    // Nothing was written to the network peer.
    server_side.set_nonblocking(true).unwrap();
    let mut sent = Vec::new();
    let _ = std::io::Read::read_to_end(&mut server_side, &mut sent);
    assert!(sent.is_empty(), "{sent:?}");
}

// ----- names (CPython's test_current, test_recursion) -----

/// The names of this process and of the children it makes, recursively
/// (`depth` levels), each child with `method`: (own name, children's reports).
fn name_tree((method, depth): (StartMethod, u32)) -> Vec<String> {
    let mut names = vec![multiproc::current_process().name];
    if depth == 0 {
        return names;
    }
    for _ in 0..2 {
        let mut p = Process::new(name_tree, (method, depth - 1)).start_method(method);
        // Named when made, before it starts.
        names.push(format!("made {}", p.get_name()));
        p.start().unwrap();
        names.extend(p.join_timeout(PROMPTLY * 3).unwrap());
    }
    names
}

#[test]
fn test_recursion_names_children_after_their_parents_identity() {
    for m in METHODS {
        let mut root = Process::new(name_tree, (m, 2)).start_method(m);
        // This process's n-th handle: its children are n:1 and n:2, theirs n:1:1 …
        let n = root
            .get_name()
            .strip_prefix("Process-")
            .unwrap()
            .to_string();
        root.start().unwrap();
        let names = root.join_timeout(PROMPTLY * 6).unwrap();
        let expected: Vec<String> = [
            "",
            "made :1",
            ":1",
            "made :1:1",
            ":1:1",
            "made :1:2",
            ":1:2",
            "made :2",
            ":2",
            "made :2:1",
            ":2:1",
            "made :2:2",
            ":2:2",
        ]
        .iter()
        .map(|suffix| match suffix.strip_prefix("made ") {
            Some(rest) => format!("made Process-{n}{rest}"),
            None => format!("Process-{n}{suffix}"),
        })
        .collect();
        assert_eq!(names, expected, "{m:?}");
    }
}

fn identity_of_children(_: ()) -> (String, String, String) {
    // A forked child inherits its parent's count: it must start again at 1.
    let a = Process::new(square, 1);
    let b = Process::new(square, 1).name("explicit");
    let c = Process::new(square, 1);
    (
        a.get_name().into(),
        b.get_name().into(),
        c.get_name().into(),
    )
}

#[test]
fn test_current_names_a_process_when_it_is_made() {
    let p = Process::new(square, 1);
    let name = p.get_name().to_string();
    assert!(name.starts_with("Process-"), "{name}");
    assert!(name["Process-".len()..].parse::<u32>().is_ok(), "{name}");
    let q = Process::new(square, 1);
    assert_ne!(q.get_name(), name, "each handle takes the next number");
    assert_eq!(Process::new(square, 1).name("given").get_name(), "given");
    for m in METHODS {
        let mut parent = Process::new(identity_of_children, ()).start_method(m);
        parent.start().unwrap();
        let (a, b, c) = parent.join_timeout(PROMPTLY).unwrap();
        // The parent is this process's n-th handle: its children are n:1, n:2, n:3.
        let n = parent
            .get_name()
            .strip_prefix("Process-")
            .unwrap()
            .to_string();
        assert_eq!(a, format!("Process-{n}:1"), "{m:?}");
        assert_eq!(b, "explicit");
        assert_eq!(c, format!("Process-{n}:3"), "{m:?}");
    }
}

// ----- sentinels (CPython's test_sentinel) -----

fn wait_for_event(e: multiproc::Event) -> bool {
    e.wait_timeout(PROMPTLY).unwrap_or(false)
}

#[test]
fn test_sentinel_is_ready_once_the_process_ends() {
    for m in METHODS {
        let event = multiproc::Event::new().unwrap();
        let mut p = Process::new(wait_for_event, event.clone()).start_method(m);
        assert!(matches!(p.sentinel(), Err(Error::InvalidState(_))));
        p.start().unwrap();
        let sentinel = p.sentinel().unwrap();
        assert!(!sentinel.is_ready(), "{m:?}");
        assert!(
            multiproc::wait(&[&sentinel], Some(Duration::ZERO))
                .unwrap()
                .is_empty()
        );
        event.set().unwrap();
        assert_eq!(
            multiproc::wait(&[&sentinel], Some(PROMPTLY)).unwrap(),
            [0],
            "{m:?}"
        );
        assert!(p.join_timeout(PROMPTLY).unwrap());
        assert!(sentinel.is_ready());
        // A sentinel made after the child was reaped is ready at once.
        assert!(p.sentinel().unwrap().is_ready(), "{m:?}");
        assert!(std::os::fd::AsRawFd::as_raw_fd(&sentinel) >= 0);
    }
}

#[test]
fn sentinels_tell_which_of_several_processes_ended() {
    for m in METHODS {
        let mut sleeper = start(Process::new(sleep_secs, 60).start_method(m));
        let mut quick = start(Process::new(square, 3).start_method(m));
        let sentinels = [sleeper.sentinel().unwrap(), quick.sentinel().unwrap()];
        let objects: Vec<&dyn multiproc::connection::Waitable> =
            sentinels.iter().map(|s| s as _).collect();
        assert_eq!(
            multiproc::wait(&objects, Some(PROMPTLY)).unwrap(),
            [1],
            "{m:?}"
        );
        assert_eq!(quick.join().unwrap(), 9);
        sleeper.kill().unwrap();
        assert_eq!(multiproc::wait(&objects[..1], None).unwrap(), [0]);
        assert!(sleeper.join_timeout(PROMPTLY).is_err());
        assert_eq!(sleeper.exitcode(), Some(-9));
    }
}

// ----- the parent from inside a child (CPython's test_parent_process*) -----

fn report_parent(_: ()) -> (i32, String) {
    let parent = multiproc::parent_process().unwrap();
    (parent.pid, parent.name)
}

#[test]
fn test_parent_process_attributes() {
    assert!(multiproc::parent_process().is_none());
    for m in METHODS {
        let mut p = start(Process::new(report_parent, ()).start_method(m));
        let (pid, name) = p.join_timeout(PROMPTLY).unwrap();
        assert_eq!(pid, std::process::id() as i32, "{m:?}");
        assert_eq!(name, multiproc::current_process().name);
    }
}

/// In a grandchild: reports whether its parent lives, joins it (bounded),
/// and reports again.
fn report_parent_status(conn: multiproc::Connection<String>) {
    let parent = multiproc::parent_process().unwrap();
    let alive = |p: &multiproc::ParentProcess| if p.is_alive() { "alive" } else { "not alive" };
    conn.send(alive(&parent).to_string()).unwrap();
    let joined = parent.join_timeout(PROMPTLY * 3);
    conn.send(format!("{} {}", alive(&parent), joined.is_ok()))
        .unwrap();
}

fn create_grandchild((method, conn): (StartMethod, multiproc::Connection<String>)) {
    let mut p = Process::new(report_parent_status, conn).start_method(method);
    p.start().unwrap();
    std::thread::sleep(Duration::from_secs(300));
}

#[test]
fn test_parent_process_join_and_is_alive_from_a_grandchild() {
    for m in METHODS {
        let (here, there) = multiproc::Pipe::new::<String>().unwrap();
        let mut p = start(Process::new(create_grandchild, (m, there)).start_method(m));
        assert_eq!(here.recv_timeout(PROMPTLY).unwrap(), "alive", "{m:?}");
        p.terminate().unwrap();
        assert!(p.join_timeout(PROMPTLY).is_err());
        assert_eq!(
            here.recv_timeout(PROMPTLY).unwrap(),
            "not alive true",
            "{m:?}"
        );
    }
}

#[test]
fn a_parent_join_times_out_while_the_parent_lives() {
    fn join_briefly(_: ()) -> (bool, bool) {
        let parent = multiproc::parent_process().unwrap();
        let timed_out = matches!(
            parent.join_timeout(Duration::from_millis(20)),
            Err(Error::Timeout(_))
        );
        (timed_out, parent.sentinel().unwrap().is_ready())
    }
    for m in METHODS {
        let mut p = start(Process::new(join_briefly, ()).start_method(m));
        assert_eq!(p.join_timeout(PROMPTLY).unwrap(), (true, false), "{m:?}");
    }
}

/// What descriptor `fd` is in this process (`pipe:[inode]`), if open.
fn fd_target(fd: i32) -> Option<String> {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .ok()
        .map(|t| t.to_string_lossy().into_owned())
}

/// CPython's `TestCloseFds.test_closefd`: a spawned (or forkserver) child
/// holds none of its parent's descriptors, even one left without
/// close-on-exec (a pipe's write end there would keep the reader from ever
/// seeing end-of-file). A fork child has them all, as in Python.
#[test]
fn a_spawned_child_holds_no_descriptor_it_was_not_given() {
    let mut ends = [0i32; 2];
    // SAFETY: pipe(2) fills two descriptors, without O_CLOEXEC on purpose.
    assert_eq!(unsafe { libc::pipe(ends.as_mut_ptr()) }, 0);
    let pipe = fd_target(ends[1]).unwrap();
    for m in METHODS {
        let mut p = Process::new(fd_target, ends[1]).start_method(m);
        p.start().unwrap();
        // The number may name another descriptor there: compare what it is.
        let there = p.join_timeout(PROMPTLY).unwrap();
        assert_eq!(
            there.as_ref() == Some(&pipe),
            m == StartMethod::Fork,
            "{m:?}: {there:?}"
        );
    }
    for fd in ends {
        // SAFETY: both are ours, made above.
        unsafe { libc::close(fd) };
    }
}

/// A child reads end-of-file from stdin, whatever the method (Python's
/// children too): a forked one took its parent's input, eating what the
/// parent's user typed. From a newcomer's port.
#[test]
fn a_child_does_not_read_its_parents_stdin() {
    for m in METHODS {
        // The test harness's stdin is /dev/null already: a spawned child
        // with a pipe as its stdin starts the child under test.
        let mut p =
            Process::new(stdin_of_a_child_of_a_piped_parent, m).start_method(StartMethod::Spawn);
        p.start().unwrap();
        let (parents, childs) = p.join_timeout(PROMPTLY).unwrap();
        assert!(parents.is_some_and(|t| t.starts_with("pipe:")));
        assert_eq!(childs.as_deref(), Some("/dev/null"), "{m:?}");
    }
}

fn stdin_of_a_child_of_a_piped_parent(m: StartMethod) -> (Option<String>, Option<String>) {
    let mut ends = [0i32; 2];
    // SAFETY: pipe(2) fills two descriptors; this process runs one thread,
    // and replacing its stdin with the read end is the point.
    unsafe {
        assert_eq!(libc::pipe(ends.as_mut_ptr()), 0);
        assert_eq!(libc::dup2(ends[0], 0), 0);
    }
    let mut p = Process::new(fd_target, 0).start_method(m);
    p.start().unwrap();
    (fd_target(0), p.join_timeout(PROMPTLY).unwrap())
}

fn own_args(_: ()) -> Vec<String> {
    std::env::args().skip(1).collect()
}

/// A child sees its parent's command-line arguments (Python's spawn passes
/// `sys.argv`), so code that reads them (a pool task's settings, say)
/// behaves as in the parent. Spawned children had only the program name.
/// From a newcomer's port.
#[test]
fn a_child_has_its_parents_arguments() {
    let mine = own_args(());
    for m in METHODS {
        let mut p = Process::new(own_args, ()).start_method(m);
        p.start().unwrap();
        assert_eq!(p.join_timeout(PROMPTLY).unwrap(), mine, "{m:?}");
    }
}

// ----- start methods (CPython's TestStartMethod) -----

#[test]
fn test_get_all_lists_every_method_default_first() {
    let all = multiproc::get_all_start_methods();
    assert_eq!(all, METHODS);
    assert_eq!(all[0], StartMethod::default());
    for m in all {
        assert_eq!(m.name().parse::<StartMethod>().unwrap(), m);
    }
    assert!(matches!(
        "threads".parse::<StartMethod>(),
        Err(Error::InvalidArgument(_))
    ));
}

fn method_in_child(_: ()) -> (StartMethod, String) {
    (
        multiproc::get_start_method(),
        multiproc::current_process().name,
    )
}

#[test]
fn test_set_get_with_force() {
    // Other tests here use the default method too: each of these works for
    // them, and the default is never left unset (see
    // context_does_not_touch_the_default).
    let before = multiproc::get_start_method();
    for m in METHODS {
        multiproc::force_start_method(Some(m));
        assert_eq!(multiproc::get_start_method(), m);
        assert!(matches!(
            multiproc::set_start_method(m),
            Err(Error::InvalidState(_))
        ));
        let mut p = Process::new(method_in_child, ());
        p.start().unwrap();
        let (inherited, name) = p.join_timeout(PROMPTLY).unwrap();
        assert_eq!(name, p.get_name());
        // CPython's test_context: the child has its parent's default.
        assert_eq!(inherited, m, "the child's default");
    }
    multiproc::force_start_method(Some(before));
}

/// CPython's `TestStartMethod.test_context`: a child started through a
/// context has that context's method as its default, whatever its parent's
/// (Python's `_bootstrap` forces it), so its own children start the same
/// way. A child of `get_context(Fork)` said `Spawn`.
#[test]
fn test_context_gives_the_child_its_method() {
    for m in METHODS {
        let mut p = get_context(m).process(method_in_child, ());
        p.start().unwrap();
        let (default, _) = p.join_timeout(PROMPTLY).unwrap();
        assert_eq!(default, m, "the default of a child started by {m:?}");
    }
}

// ----- the forkserver (CPython's test_forkserver_sigkill / sigint) -----

fn nap_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// A running forkserver child outlives a server killed with `signal`; the
/// next start gets a new server. Run in a spawned child, which has a
/// forkserver of its own: the other tests' server is left alone.
fn check_forkserver_death(signal: i32) {
    let mut first = start(Process::new(nap_ms, 500).start_method(StartMethod::Forkserver));
    let server = multiproc::__internal::forkserver_pid().expect("a forkserver runs");
    // SAFETY: kill takes plain integers; `server` is our child (not reaped yet).
    assert_eq!(unsafe { libc::kill(server, signal) }, 0);
    let mut second = start(Process::new(nap_ms, 0).start_method(StartMethod::Forkserver));
    assert_eq!(second.join_timeout(PROMPTLY).unwrap(), 0);
    assert_eq!(second.exitcode(), Some(0));
    // The first child ran on; whether its status survived depends on when
    // the old server died (Python says 0 or 255 too).
    let _ = first.join_timeout(PROMPTLY);
    assert!(
        matches!(first.exitcode(), Some(0 | 255)),
        "{:?}",
        first.exitcode()
    );
    if signal == libc::SIGKILL {
        assert_ne!(multiproc::__internal::forkserver_pid(), Some(server));
        assert_not_our_zombie(server);
    } else {
        // Ctrl-C's signal does not end the server.
        assert_eq!(multiproc::__internal::forkserver_pid(), Some(server));
    }
}

#[test]
fn test_forkserver_sigkill_starts_a_new_server() {
    let mut p =
        start(Process::new(check_forkserver_death, libc::SIGKILL).start_method(StartMethod::Spawn));
    p.join_timeout(PROMPTLY * 3).unwrap();
}

#[test]
fn test_forkserver_sigint_is_ignored_by_the_server() {
    let mut p =
        start(Process::new(check_forkserver_death, libc::SIGINT).start_method(StartMethod::Spawn));
    p.join_timeout(PROMPTLY * 3).unwrap();
}

fn write_to_stderr(n: u32) -> u32 {
    use std::io::Write;
    // Through std's stderr lock (not the test harness's capture).
    let _ = writeln!(std::io::stderr().lock(), "a forked child writes {n}");
    n + 1
}

/// A fork while another thread holds std's stderr lock: the child, which
/// has only the forking thread, must not find that lock held by a thread
/// that does not exist there (it would wait for ever the first time it
/// writes). Another thread holds the lock while the children are started;
/// each child must still run, write and end.
#[test]
fn a_fork_while_another_thread_holds_stderr_does_not_wedge_the_child() {
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let err = std::io::stderr().lock();
        held_tx.send(()).unwrap();
        let _ = go_rx.recv_timeout(PROMPTLY);
        drop(err);
    });
    held_rx.recv_timeout(PROMPTLY).unwrap();
    let mut children: Vec<Process<u32>> = (0..3)
        .map(|n| Process::new(write_to_stderr, n).start_method(StartMethod::Fork))
        .collect();
    let starter = std::thread::spawn(move || {
        for p in &mut children {
            p.start().unwrap();
        }
        children
    });
    // Not a synchronisation: the starts are given time to fork while the
    // lock is held (the fork now waits for it, so that the child finds it
    // free). Were they slower, the test would pass without proving much.
    std::thread::sleep(Duration::from_millis(100));
    go_tx.send(()).unwrap();
    holder.join().unwrap();
    let mut children = starter.join().unwrap();
    for (n, p) in children.iter_mut().enumerate() {
        assert_eq!(p.join_timeout(PROMPTLY).unwrap(), n as u32 + 1);
    }
}

fn my_name(_: ()) -> String {
    multiproc::current_process().name
}

/// A forked child records who it is (and its authkey) before its target
/// runs: another thread of the parent reading those at the moment of the
/// fork (any `current_process()`, any start) left them read-locked for
/// ever in the child, which hung there. They are no locks now.
#[test]
fn a_fork_while_another_thread_reads_who_it_is_does_not_hang_the_child() {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let me = multiproc::current_process();
                    std::hint::black_box((me.name.len(), me.authkey()));
                }
            })
        })
        .collect();
    for i in 0..30 {
        let mut p = Process::new(my_name, ()).start_method(StartMethod::Fork);
        p.start().unwrap();
        let name = p.join_timeout(PROMPTLY).unwrap();
        assert!(name.starts_with("Process-"), "fork {i}: {name}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
}

/// A fork hook that does nothing, registered over and over by a thread.
struct IdleHook;

impl multiproc::__internal::ForkHook for IdleHook {
    fn prepare(&self) -> Box<dyn std::any::Any> {
        Box::new(())
    }
    fn parent(&self, _: Box<dyn std::any::Any>) {}
    fn child(&self, _: Box<dyn std::any::Any>) {}
}

static IDLE_HOOK: IdleHook = IdleHook;

/// Starts a grandchild by fork and says whether it ran and ended in time.
fn fork_a_grandchild(_: ()) -> bool {
    let mut p = Process::new(exit_with, 0).start_method(StartMethod::Fork);
    p.start().is_ok() && p.join_timeout(PROMPTLY).is_ok()
}

/// The list of fork hooks is read by every fork: another thread of the
/// parent registering a hook at the moment of a fork left it locked for
/// ever in the child, whose own forks then hung. The list takes no lock now.
#[test]
fn a_fork_while_another_thread_registers_a_hook_does_not_hang_the_childs_forks() {
    use std::sync::atomic::Ordering::Relaxed;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let started = std::sync::Arc::new(std::sync::Barrier::new(2));
    let registrar = {
        let (stop, started) = (stop.clone(), started.clone());
        std::thread::spawn(move || {
            started.wait();
            // Bounded: the list this replaced grew by one per call.
            for _ in 0..3_000_000 {
                if stop.load(Relaxed) {
                    return;
                }
                multiproc::__internal::register_fork_hook(&IDLE_HOOK);
            }
        })
    };
    started.wait();
    for i in 0..30 {
        let mut p = Process::new(fork_a_grandchild, ()).start_method(StartMethod::Fork);
        p.start().unwrap();
        let joined = p.join_timeout(PROMPTLY);
        if joined.is_err() {
            let _ = p.kill();
            let _ = p.join();
        }
        assert!(matches!(joined, Ok(true)), "fork {i}: {joined:?}");
    }
    stop.store(true, Relaxed);
    registrar.join().unwrap();
}

/// A hook that holds its lock across every fork, as the runtime's own do.
struct GuardHook {
    lock: &'static multiproc::__internal::fork_sync::Mutex<()>,
}

impl multiproc::__internal::ForkHook for GuardHook {
    fn prepare(&self) -> Box<dyn std::any::Any> {
        Box::new(self.lock.lock())
    }
    fn parent(&self, _: Box<dyn std::any::Any>) {}
    fn child(&self, _: Box<dyn std::any::Any>) {}
}

/// A hook whose `prepare` is slow: the time between a fork's read of the
/// hook list and the fork itself grows.
struct SlowHook;

impl multiproc::__internal::ForkHook for SlowHook {
    fn prepare(&self) -> Box<dyn std::any::Any> {
        std::thread::sleep(Duration::from_millis(2));
        Box::new(())
    }
    fn parent(&self, _: Box<dyn std::any::Any>) {}
    fn child(&self, _: Box<dyn std::any::Any>) {}
}

static SLOW_HOOK: SlowHook = SlowHook;

/// A module registers its hook, then takes the lock the hook guards. A fork
/// that read the hook list just before the registration did not run the
/// hook, and forked while the lock was held: the child waited for it for
/// ever (the manager client's first connection, from an attack battery).
/// A registration now returns only once every fork that may have missed it
/// has ended.
#[test]
fn a_hook_registered_during_a_fork_guards_its_lock_from_then_on() {
    multiproc::__internal::register_fork_hook(&SLOW_HOOK);
    for round in 0..8u64 {
        let lock: &'static multiproc::__internal::fork_sync::Mutex<()> =
            Box::leak(Box::new(multiproc::__internal::fork_sync::Mutex::new(())));
        let hook: &'static GuardHook = Box::leak(Box::new(GuardHook { lock }));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let forker = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut hung = None;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let mut p = Process::from_closure(move || drop(lock.lock()));
                    p.start().unwrap();
                    if p.join_timeout(PROMPTLY).is_err() {
                        let _ = p.kill();
                        let _ = p.join();
                        hung = Some(round);
                        break;
                    }
                }
                hung
            })
        };
        // Somewhere in the middle of a fork's 2 ms prepare.
        std::thread::sleep(Duration::from_micros(500 + 300 * round));
        multiproc::__internal::register_fork_hook(hook);
        let held = lock.lock();
        std::thread::sleep(Duration::from_millis(20));
        drop(held);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(
            forker.join().unwrap(),
            None,
            "a child inherited the lock held"
        );
    }
}
