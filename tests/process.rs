//! Processes under both start methods: results, exit codes, signals, names, daemons.

mod util;

use std::time::Duration;

use multiproc::{Error, Process, StartMethod, get_context};
use util::{PROMPTLY, assert_not_our_zombie, eventually, is_gone};

multiproc::init_before_main!();

const METHODS: [StartMethod; 2] = [StartMethod::Spawn, StartMethod::Fork];

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
        event.set();
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
        event.set();
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
        Err(Error::ChildFailed {
            panic: Some(msg), ..
        }) => assert!(msg.contains("init()"), "{msg}"),
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
