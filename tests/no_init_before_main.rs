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
