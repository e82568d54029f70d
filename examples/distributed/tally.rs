//! The user type both distributed examples share: the master's server owns
//! one, and each worker counts the tasks it did in it.

use std::collections::BTreeMap;

/// How many tasks each worker did.
#[derive(Default)]
pub struct Tally {
    by_worker: BTreeMap<i32, u64>,
}

// Both examples include this file, but under different module paths
// (`distributed_master::tally`, `distributed_worker::tally`), so the type
// name both sides check is given here.
#[multiproc::remote(proxy = TallyProxy, name = "distributed::Tally")]
impl Tally {
    /// Counts one task done by `worker`; returns its count so far.
    #[remote(1)]
    fn record(&mut self, worker: i32) -> u64 {
        let n = self.by_worker.entry(worker).or_default();
        *n += 1;
        *n
    }

    /// Each worker's pid and how many tasks it did.
    #[remote(2)]
    fn by_worker(&self) -> Vec<(i32, u64)> {
        self.by_worker.iter().map(|(w, n)| (*w, *n)).collect()
    }
}
