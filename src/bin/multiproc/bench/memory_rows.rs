//! The `memory/*` rows of `multiproc bench`: bytes, not time, each beside
//! CPython doing the same (the `memory` section of
//! `benches/python/baseline.py`).

use std::time::Duration;

use multiproc::{Manager, Pool, Process, StartMethod};

use super::{Scale, square};

/// One memory figure.
pub struct Memory {
    /// The row's key, e.g. `memory/manager_dict_1m_keys`.
    pub key: &'static str,
    /// The resident set measured, in bytes.
    pub bytes: u64,
    /// What it is measured over (items, keys), for the table.
    pub items: u64,
}

/// One memory row's measurement.
pub type MemFn = fn(&Scale) -> multiproc::Result<Memory>;

/// Every memory row, in report order.
pub fn operations() -> Vec<(&'static str, MemFn)> {
    vec![
        ("memory/pool_map_1m_items_parent_peak", pool_map_parent_peak),
        ("memory/manager_dict_1m_keys_server", manager_dict_server),
    ]
}

/// A million, or ten thousand in a smoke run.
fn million(scale: &Scale) -> u64 {
    if scale.smoke { 10_000 } else { 1_000_000 }
}

/// A field of `/proc/<pid>/status` given in kB (`VmRSS:`, `VmHWM:`), in bytes.
fn status_bytes(pid: &str, field: &str) -> multiproc::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| multiproc::Error::InvalidState(format!("no {field} in /proc/{pid}/status")))
}

/// In a fresh process: `Pool(2).chunksize(1).map(square, 0..n)`, then
/// that process's peak resident set (0: the map failed).
fn map_and_report_peak(n: u64) -> u64 {
    let mapped = Pool::builder().processes(2).build().and_then(|pool| {
        let out = pool.chunksize(1).map(square, 0..n)?;
        pool.close();
        pool.join()?;
        Ok(out.len() as u64)
    });
    match mapped {
        Ok(len) if len == n => status_bytes("self", "VmHWM:").unwrap_or(0),
        _ => 0,
    }
}

/// `memory/pool_map_1m_items_parent_peak`: the peak resident set of a
/// process (started afresh, so nothing before counts) that maps a million
/// items over a `Pool(2)` with chunksize 1, results included.
fn pool_map_parent_peak(scale: &Scale) -> multiproc::Result<Memory> {
    let n = million(scale);
    let mut p = Process::new(map_and_report_peak, n).start_method(StartMethod::Spawn);
    p.start()?;
    let bytes = p.join_timeout(Duration::from_secs(600))?;
    if bytes == 0 {
        return Err(multiproc::Error::InvalidState(
            "the measured process's map failed".into(),
        ));
    }
    Ok(Memory {
        key: "memory/pool_map_1m_items_parent_peak",
        bytes,
        items: n,
    })
}

/// `memory/manager_dict_1m_keys_server`: the manager server's resident set
/// once a `DictProxy<u64, u64>` holds a million keys (put in 10k at a time).
fn manager_dict_server(scale: &Scale) -> multiproc::Result<Memory> {
    let n = million(scale);
    let m = Manager::start()?;
    let d = m.dict::<u64, u64>()?;
    for start in (0..n).step_by(10_000) {
        d.update((start..(start + 10_000).min(n)).map(|i| (i, i)))?;
    }
    if d.len()? as u64 != n {
        return Err(multiproc::Error::InvalidState("the dict lost keys".into()));
    }
    let bytes = status_bytes(&m.pid().to_string(), "VmRSS:")?;
    m.shutdown()?;
    Ok(Memory {
        key: "memory/manager_dict_1m_keys_server",
        bytes,
        items: n,
    })
}
