//! Logs from child processes: install the `tracing` subscriber *before*
//! `multiproc::init()`.
//!
//! A child started by spawn runs this program again from the top, and
//! `init()` is where it runs its target and exits. So a subscriber set up
//! before `init()` exists in the parent and in every spawned child (a
//! process, a pool worker, a manager server), while one set up after it
//! exists only in the parent, and the children's events go nowhere. A
//! child started by fork is a copy of the parent: it has whatever
//! subscriber the parent had when it forked.
//!
//! This is the one thing to put before `init()`: keep it to building the
//! subscriber (no work, no threads).
//!
//! Run: `cargo run --example logging` (RUST_LOG=debug shows more)

use multiproc::{Pool, Process, StartMethod};

fn work((how, n): (String, u64)) -> u64 {
    tracing::info!(pid = std::process::id(), how = %how, n, "child at work");
    n * 2
}

fn main() -> multiproc::Result<()> {
    // Before init(): spawned children run this line too.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    multiproc::init();

    println!("parent pid {}", std::process::id());
    tracing::info!("the parent logs");
    for method in [StartMethod::Spawn, StartMethod::Fork] {
        let mut p = Process::new(work, (format!("{method:?}"), 21)).start_method(method);
        p.start()?;
        println!("[{method:?}] the child returned {}", p.join()?);
    }
    let pool = Pool::new(2)?;
    println!(
        "[pool] a worker returned {}",
        pool.apply(work, ("Pool".into(), 4))?
    );
    println!("the children's lines are on stderr, beside the parent's");
    Ok(())
}
