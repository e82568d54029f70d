//! Turning timed samples into the figures the report shows.

use std::time::{Duration, Instant};

/// What one operation measured.
#[derive(Debug, Clone)]
pub struct Figure {
    /// The operation's key, e.g. `lock/acquire_release`.
    pub key: &'static str,
    /// Median and 99th percentile of the per-operation time, in nanoseconds.
    pub median_ns: f64,
    pub p99_ns: f64,
    /// For throughput operations: what one operation moves (bytes), to print GB/s.
    pub bytes_per_op: Option<f64>,
    /// How many samples the figures come from.
    pub samples: usize,
    /// For a row compared with a floor measured beside it (a Redis call
    /// and a plain PING, in alternate samples): the floor's median, ns.
    pub floor_ns: Option<f64>,
}

impl Figure {
    /// Operations per second at the median.
    pub fn ops_per_sec(&self) -> f64 {
        if self.median_ns > 0.0 {
            1e9 / self.median_ns
        } else {
            0.0
        }
    }
}

/// Times `batch` calls of `op` per sample for `samples` samples (after one
/// warm-up sample) and returns per-call median and p99.
pub fn per_call(key: &'static str, samples: usize, batch: usize, mut op: impl FnMut()) -> Figure {
    let batch = batch.max(1);
    for _ in 0..batch {
        op();
    }
    let mut per_op: Vec<f64> = (0..samples.max(1))
        .map(|_| {
            let start = Instant::now();
            for _ in 0..batch {
                op();
            }
            start.elapsed().as_nanos() as f64 / batch as f64
        })
        .collect();
    summarize(key, &mut per_op, None)
}

/// Builds a figure from per-operation times in nanoseconds.
pub fn summarize(key: &'static str, per_op: &mut [f64], bytes_per_op: Option<f64>) -> Figure {
    per_op.sort_by(|a, b| a.total_cmp(b));
    let pick = |q: f64| -> f64 {
        if per_op.is_empty() {
            return 0.0;
        }
        let i = ((per_op.len() - 1) as f64 * q).round() as usize;
        per_op[i.min(per_op.len() - 1)]
    };
    Figure {
        key,
        median_ns: pick(0.5),
        p99_ns: pick(0.99),
        bytes_per_op,
        samples: per_op.len(),
        floor_ns: None,
    }
}

/// Times one run of `f` that performs `ops` operations; per-op nanoseconds.
pub fn time_ops(ops: usize, f: impl FnOnce()) -> f64 {
    let start = Instant::now();
    f();
    start.elapsed().as_nanos() as f64 / ops.max(1) as f64
}

/// Formats nanoseconds for the table.
pub fn fmt_ns(ns: f64) -> String {
    let d = Duration::from_nanos(ns.max(0.0) as u64);
    if ns < 1_000.0 {
        format!("{ns:.1} ns")
    } else if ns < 1_000_000.0 {
        format!("{:.2} µs", ns / 1_000.0)
    } else {
        format!("{:.2} ms", d.as_secs_f64() * 1_000.0)
    }
}
