//! A test binary that lacks `multiproc::init_before_main!()` (on purpose:
//! this is the one file without it). A child started by spawn re-executes
//! the binary, whose test harness runs the tests again instead of the
//! target; the child notices when it reaches `Process::start` and tells
//! the parent, whose `join` says what to add. Fork needs no `init`.

use std::time::Duration;

use multiproc::{Error, Process, StartMethod};

fn double(x: u32) -> u32 {
    x * 2
}

#[test]
fn spawn_without_init_before_main_says_what_to_add() {
    let mut p = Process::new(double, 21).start_method(StartMethod::Spawn);
    p.start().unwrap();
    let pid = p.pid().unwrap();
    let e = p.join_timeout(Duration::from_secs(120)).unwrap_err();
    assert!(
        matches!(e, Error::InitMissing { pid: p } if p == pid),
        "expected InitMissing, got {e:?}"
    );
    let text = e.to_string();
    assert!(
        text.contains("multiproc::init_before_main!();"),
        "the message names the line to add: {text}"
    );
    assert!(!p.is_alive());
}

#[test]
fn fork_works_without_it() {
    let mut p = Process::new(double, 21).start_method(StartMethod::Fork);
    p.start().unwrap();
    assert_eq!(p.join_timeout(Duration::from_secs(120)).unwrap(), 42);
}

fn square(x: u64) -> u64 {
    x * x
}

/// The same mistake in a program that makes a spawn `Pool`: its workers run
/// the program instead of their work. The pool says why, not only that a
/// worker died.
#[test]
fn a_spawn_pool_without_init_says_what_to_add() {
    let pool = multiproc::Pool::builder()
        .processes(1)
        .start_method(StartMethod::Spawn)
        .build()
        .unwrap();
    let r = pool.apply_async(square, 3).unwrap();
    let e = r.get_timeout(Duration::from_secs(120)).unwrap_err();
    assert!(
        matches!(e, Error::InitMissing { .. }),
        "expected InitMissing, got {e:?}"
    );
    // Later calls are refused the same way, without starting more workers.
    let later = pool.apply(square, 4).unwrap_err();
    assert!(later.to_string().contains("init"), "{later}");
}

/// And in one that starts a `Manager` by spawn: its server process runs the
/// program instead of serving.
#[test]
fn a_spawn_manager_without_init_says_what_to_add() {
    let e = multiproc::Manager::start_with(StartMethod::Spawn).unwrap_err();
    assert!(
        matches!(e, Error::InitMissing { .. }),
        "expected InitMissing, got {e:?}"
    );
}
