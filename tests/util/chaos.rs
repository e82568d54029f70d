//! What the chaos and soak tests share: a seeded PRNG, the iteration count,
//! and the leak check each of those files runs at its end.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{PROMPTLY, eventually, proc_state, shm_leaks};

/// SplitMix64: small, seedable, good enough to pick kill delays.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// A delay in `0..max_us` microseconds.
    pub fn delay(&mut self, max_us: u64) -> Duration {
        Duration::from_micros(self.below(max_us))
    }
}

/// The run's base seed: `CHAOS_SEED` if set, otherwise the clock.
pub fn base_seed() -> u64 {
    std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
}

/// Iterations per scenario: `CHAOS_ITERATIONS` if set, else `default`.
pub fn iterations(default: u64) -> u64 {
    std::env::var("CHAOS_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Runs `scenario` `n` times, each with its own seed derived from `base`;
/// the seed is printed first so a failure (whose output the harness shows)
/// names it: rerun with `CHAOS_SEED=<base> CHAOS_ITERATIONS=<i+1>`.
pub fn repeat(name: &str, base: u64, n: u64, mut scenario: impl FnMut(&mut Rng, u64)) {
    for i in 0..n {
        let seed = base ^ (i.wrapping_mul(0x2545_f491_4f6c_dd1d)) ^ fxhash(name);
        println!("chaos {name}: iteration {i}, base seed {base}, seed {seed}");
        let mut rng = Rng::new(seed);
        scenario(&mut rng, i);
    }
}

fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// Sends SIGKILL to `pid` (a process this test started).
pub fn sigkill(pid: i32) {
    // SAFETY: kill(2) has no memory effects on us; `pid` is a process this
    // test started and has not reaped yet.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

/// Live children of this process (zombies included), by pid.
pub fn children() -> Vec<(i32, char)> {
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let (state, ppid) = proc_state(pid)?;
            (ppid == me).then_some((pid, state))
        })
        .collect()
}

/// Open fds of this process and what they point to.
pub fn open_fds() -> BTreeMap<i32, String> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return BTreeMap::new();
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let fd = e.file_name().to_str()?.parse().ok()?;
        let target = std::fs::read_link(e.path()).ok()?;
        Some((fd, target.to_string_lossy().into_owned()))
    })
    .collect()
}

/// What a test file holds before its work, to compare with after.
pub struct Snapshot {
    fds: BTreeMap<i32, String>,
}

impl Snapshot {
    pub fn take() -> Snapshot {
        Snapshot { fds: open_fds() }
    }

    /// Asserts nothing of ours is left: no /dev/shm entry, no child (zombie
    /// or alive), no fd beyond those open at the snapshot (an fd the
    /// harness or `read_dir` itself has open counts as noise: the set may
    /// shrink, and at most `slack` fds may be new).
    pub fn assert_no_leaks(&self, slack: usize) {
        assert!(shm_leaks().is_empty(), "/dev/shm: {:?}", shm_leaks());
        assert!(
            eventually(PROMPTLY, || children().is_empty()),
            "children left: {:?}",
            children()
        );
        let mut new: Vec<(i32, String)> = Vec::new();
        let settled = eventually(PROMPTLY, || {
            let now = open_fds();
            new = now
                .into_iter()
                .filter(|(fd, target)| self.fds.get(fd) != Some(target))
                .collect();
            new.len() <= slack
        });
        assert!(settled, "fds opened and not closed: {new:?}");
    }
}
