//! A test binary without `multiproc::init_before_main!()` (on purpose) and
//! with one test, so that a spawned child, which runs the test harness
//! again instead of its target, runs only this test: its copy returns at
//! once, without starting a process of its own, and the child exits with
//! code 0 saying nothing. A spawned child that ran its target always
//! reports (its result, or its `exit` from an exit handler), so the parent
//! still names the mistake.

use std::time::Duration;

use multiproc::{Error, Process, StartMethod};

fn double(x: u32) -> u32 {
    x * 2
}

#[test]
fn spawn_without_init_is_named_even_when_main_just_returns() {
    if std::env::var_os("MULTIPROC_CHILD_FD").is_some() {
        // The spawned copy: this program's `main` ran instead of `double`.
        return;
    }
    let mut p = Process::new(double, 21).start_method(StartMethod::Spawn);
    p.start().unwrap();
    let pid = p.pid().unwrap();
    let e = p.join_timeout(Duration::from_secs(120)).unwrap_err();
    assert!(
        matches!(e, Error::InitMissing { pid: p } if p == pid),
        "expected InitMissing, got {e:?}"
    );
    assert_eq!(p.exitcode(), Some(0), "the copy of main returned");
    assert!(e.to_string().contains("init"), "{e}");
}
