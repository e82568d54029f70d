//! Clocks.

use std::time::Duration;

/// The coarse monotonic clock (a few milliseconds of resolution, but read
/// from the vDSO without touching the time-stamp counter: the cheapest clock).
pub fn coarse_monotonic() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC_COARSE exists on Linux.
    let res = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    if res != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The CPU time (user and system) this process used so far, all threads.
pub fn process_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock exists on Linux.
    let res = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if res != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The CPU time (user and system, all threads, including those that have
/// ended) process `pid` used so far: what `/proc/<pid>/stat` reports as
/// utime + stime, read in nanoseconds instead of 10 ms clock ticks. Linux
/// lets any process read another's CPU clock.
pub fn process_cpu_time_of(pid: i32) -> std::io::Result<Duration> {
    // The kernel's PID_MAX_LIMIT: no process has a larger pid, and the clock
    // id of a much larger one would wrap round to another clock.
    const PID_MAX_LIMIT: i32 = 1 << 22;
    if !(0..=PID_MAX_LIMIT).contains(&pid) {
        return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
    }
    let mut clock: libc::clockid_t = 0;
    // SAFETY: `clock` is a valid, writable clockid_t; any pid value is allowed
    // (an unknown one is reported as an error number).
    let err = unsafe { libc::clock_getcpuclockid(pid, &mut clock) };
    if err != 0 {
        return Err(std::io::Error::from_raw_os_error(err));
    }
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; `clock` came from the kernel above.
    crate::sys::syscall!(unsafe { libc::clock_gettime(clock, &mut ts) })?;
    Ok(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_and_another_process_cpu_time() {
        let me = std::process::id() as i32;
        let mine = process_cpu_time_of(me).unwrap();
        assert!(mine > Duration::ZERO);
        // Our own clock read both ways: the later read is not behind.
        assert!(process_cpu_time() >= mine);
        // pid 1 always exists; a pid above the kernel's limit never does
        // (and must not wrap round to another clock).
        assert!(process_cpu_time_of(1).is_ok());
        assert!(process_cpu_time_of((1 << 22) + 1).is_err());
        assert!(process_cpu_time_of(i32::MAX).is_err());
        assert!(process_cpu_time_of(-5).is_err());
    }
}
