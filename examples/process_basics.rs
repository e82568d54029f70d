//! Two workers under each start method (spawn, fork, forkserver): pids,
//! parent pid, names, exit codes; waiting for whichever ends first.
//!
//! Run: `cargo run --example process_basics`

use std::time::Duration;

use multiproc::{Error, Process, StartMethod, current_process, parent_process};

fn describe(label: String) -> String {
    let me = current_process();
    let parent = parent_process().map_or(0, |p| p.pid);
    format!(
        "{label}: I am {} (pid {}), my parent is pid {parent}",
        me.name, me.pid
    )
}

fn fail(code: i32) {
    std::process::exit(code)
}

fn panics(_: ()) {
    panic!("something went wrong in the child")
}

fn sleeps(secs: u64) {
    std::thread::sleep(Duration::from_secs(secs))
}

fn main() -> multiproc::Result<()> {
    multiproc::init();
    println!("main process: pid {}", current_process().pid);
    for method in multiproc::get_all_start_methods() {
        let mut workers: Vec<_> = (1..=2)
            .map(|i| Process::new(describe, format!("worker {i}")).start_method(method))
            .collect();
        for w in &mut workers {
            w.start()?;
        }
        for w in &mut workers {
            println!("[{method:?}] {}", w.join()?);
            println!("[{method:?}] exit code {:?}", w.exitcode());
        }
    }

    let mut bad = Process::new(fail, 3);
    bad.start()?;
    if let Err(e) = bad.join() {
        println!(
            "a child that exits with 3: {e}; exitcode {:?}",
            bad.exitcode()
        );
    }

    let mut p = Process::new(panics, ());
    p.start()?;
    if let Err(Error::ChildFailed { panic, .. }) = p.join() {
        println!(
            "a child that panics: {panic:?}; exitcode {:?}",
            p.exitcode()
        );
    }

    // Python's connection.wait over process sentinels: whichever ends first.
    let mut slow = Process::new(sleeps, 60).start_method(StartMethod::Forkserver);
    let mut quick = Process::new(sleeps, 0).start_method(StartMethod::Forkserver);
    slow.start()?;
    quick.start()?;
    let ended = multiproc::wait(&[&slow.sentinel()?, &quick.sentinel()?], None)?;
    println!("of a slow and a quick child, ended first: {ended:?} (1 is the quick one)");
    slow.kill()?;
    let _ = (slow.join(), quick.join());

    let mut s = Process::new(sleeps, 60);
    s.start()?;
    let timed_out = s.join_timeout(Duration::from_millis(50)).is_err();
    s.terminate()?;
    let _ = s.join();
    println!(
        "a sleeper: join_timeout gave up = {timed_out}; after terminate exitcode {:?}",
        s.exitcode()
    );
    Ok(())
}
