//! What the scheduler can tell a waiter: how many CPUs there are, how many
//! this process may use, and how many threads want to run right now.

use std::io;

/// The number of CPUs online (at least 1).
pub fn online_cpus() -> u32 {
    // SAFETY: sysconf takes no pointers; an unknown name returns -1.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n < 1 {
        1
    } else {
        n.min(u32::MAX as libc::c_long) as u32
    }
}

/// The number of CPUs the calling thread may run on.
pub fn allowed_cpus() -> io::Result<u32> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable cpu_set_t of the size passed; pid 0 is this thread.
    crate::sys::syscall!(unsafe {
        libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set)
    })?;
    // SAFETY: `set` was filled in by the kernel above.
    Ok(unsafe { libc::CPU_COUNT(&set) }.max(0) as u32)
}

/// A thread's CPU set, given back to it on drop (see [`pin_to_one_cpu`]).
pub struct Pinned {
    before: libc::cpu_set_t,
}

impl std::fmt::Debug for Pinned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pinned").finish_non_exhaustive()
    }
}

/// Restricts the calling thread, and the processes it starts while pinned,
/// to the CPU it runs on now, until the returned value is dropped (for
/// benchmarks that put two processes on one CPU).
pub fn pin_to_one_cpu() -> io::Result<Pinned> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut before: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `before` is a valid, writable cpu_set_t of the size passed; 0 is this thread.
    crate::sys::syscall!(unsafe {
        libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut before)
    })?;
    // SAFETY: sched_getcpu takes no arguments.
    let cpu = crate::sys::syscall!(unsafe { libc::sched_getcpu() })?;
    // SAFETY: as above.
    let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is a CPU number the kernel just gave, below CPU_SETSIZE.
    unsafe { libc::CPU_SET(cpu as usize, &mut one) };
    // SAFETY: `one` is a valid cpu_set_t of the size passed; 0 is this thread.
    crate::sys::syscall!(unsafe {
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &one)
    })?;
    Ok(Pinned { before })
}

impl Drop for Pinned {
    fn drop(&mut self) {
        // SAFETY: `before` is the valid set read in `pin_to_one_cpu`; 0 is this thread.
        let res = crate::sys::syscall!(unsafe {
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &self.before)
        });
        if let Err(e) = res {
            tracing::warn!("cannot give this thread its CPUs back: {e}");
        }
    }
}

/// The number of threads running or ready to run on the whole machine now
/// (the fourth field of `/proc/loadavg`, which counts the caller too).
pub fn runnable_threads() -> io::Result<u32> {
    let text = std::fs::read("/proc/loadavg")?;
    parse_runnable(&text)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unexpected /proc/loadavg"))
}

/// The `R` of the `R/T` field of a `/proc/loadavg` line.
fn parse_runnable(text: &[u8]) -> Option<u32> {
    let field = text.split(|b| b.is_ascii_whitespace()).nth(3)?;
    let running = field.split(|&b| b == b'/').next()?;
    std::str::from_utf8(running).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_runnable_count() {
        assert_eq!(parse_runnable(b"0.52 0.58 0.59 3/467 12345\n"), Some(3));
        assert_eq!(parse_runnable(b"0.52 0.58\n"), None);
        assert_eq!(parse_runnable(b"a b c x/1 2"), None);
        // The reader itself runs, so a real read is at least one.
        assert!(runnable_threads().unwrap() >= 1);
        assert!(online_cpus() >= 1);
        assert!(allowed_cpus().unwrap() >= 1);
    }

    #[test]
    fn pinning_is_undone_on_drop() {
        std::thread::spawn(|| {
            let all = allowed_cpus().unwrap();
            let pin = pin_to_one_cpu().unwrap();
            assert_eq!(allowed_cpus().unwrap(), 1);
            drop(pin);
            assert_eq!(allowed_cpus().unwrap(), all);
        })
        .join()
        .unwrap();
    }
}
