#!/usr/bin/env python3
"""Writes BENCHMARKS.md from the JSON of two `multiproc bench` runs.

    cargo run --release --features cli,redis -- bench --json target/bench.json
    cargo run --release --features cli,redis -- bench --sleep --no-python --json target/bench-sleep.json
    python3 benches/python/plot.py target/bench.json benches/latency.png
    python3 benches/python/report.py target/bench.json target/bench-sleep.json > BENCHMARKS.md

Every figure in the page comes from those files; nothing is typed by hand.
"""
import json
import sys


def fmt_ns(ns):
    if ns is None:
        return "–"
    if ns < 1_000:
        return f"{ns:.1f} ns"
    if ns < 1_000_000:
        return f"{ns / 1_000:.2f} µs"
    return f"{ns / 1_000_000:.2f} ms"


def throughput(op):
    if "gb_per_sec" in op:
        return f"{op['gb_per_sec']:.2f} GB/s"
    rate = op.get("ops_per_sec", 0)
    if rate >= 1e6:
        return f"{rate / 1e6:.2f} M/s"
    if rate >= 1e3:
        return f"{rate / 1e3:.1f} k/s"
    return f"{rate:.0f}/s"


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        main_run = json.load(f)
    with open(sys.argv[2]) as f:
        sleep_run = json.load(f)
    ops, sleeping = main_run["ops"], sleep_run["ops"]
    out = []
    w = out.append
    w("# Benchmarks\n")
    w("Every number on this page comes from the JSON of two runs of the command below, on the")
    w("machine and date it names; `benches/python/report.py` writes the page from them. Medians")
    w("and 99th percentiles of per-operation time over repeated samples, never best runs.\n")
    w(f"- machine: {main_run.get('machine', '?')}")
    w(f"- date: {main_run.get('date', '?')}")
    w("- build: `--release` (thin LTO); CPython: the `python3` on the machine, running")
    w("  `benches/python/baseline.py` (the same operations in `multiprocessing`) in the same run\n")
    w("## Reproduce\n")
    w("```sh")
    w("cargo run --release --features cli,redis -- bench --json target/bench.json")
    w("cargo run --release --features cli,redis -- bench --sleep --no-python --json target/bench-sleep.json")
    w("pip install matplotlib   # for the plot")
    w("python3 benches/python/plot.py target/bench.json benches/latency.png")
    w("python3 benches/python/report.py target/bench.json target/bench-sleep.json > BENCHMARKS.md")
    w("```\n")
    w("The criterion benches in `benches/` measure the same operations under the same names")
    w("(`cargo bench`), and `benches/peer_ipc_channel.rs` puts servo's ipc-channel beside our")
    w("Pipe and Queue.\n")
    w("## Results\n")
    w("`speedup` is CPython's median divided by ours. `sleeping` is our median when every")
    w("waiter sleeps on its futex at once instead of spinning first (`--sleep`): on a 2-core")
    w("machine spinning wins only while both processes have a core each.\n")
    w("| operation | median | p99 | throughput | CPython median | speedup | sleeping median |")
    w("|---|---:|---:|---:|---:|---:|---:|")
    for key, op in ops.items():
        cp = op.get("cpython_median_ns")
        speed = f"{op['speedup']:.1f}×" if "speedup" in op else "–"
        sl = sleeping.get(key, {}).get("median_ns")
        w(
            f"| `{key}` | {fmt_ns(op['median_ns'])} | {fmt_ns(op['p99_ns'])} | {throughput(op)} "
            f"| {fmt_ns(cp)} | {speed} | {fmt_ns(sl)} |"
        )
    w("")
    w("![median latency per operation, multiproc vs CPython, log scale](benches/latency.png)\n")
    w("## Reading the table\n")
    w("- `proxy_vs_raw/*` is the design card's comparison: one counter incremented through a")
    w("  manager dict proxy (a round trip to the server per update) and in a raw shared `Value`.")
    w("- `pool/cpu_1ms` against `pool/cpu_1ms_one_process`: two workers on two cores.")
    w("- Throughput rows (`queue/*`) are per message from a producer process to a consumer.")
    w("- `redis/*` rows exist in a build with the `redis` feature (`--features cli,redis`; a")
    w("  `redis-server` on PATH, started for each row on a free port and stopped after it).")
    w("  `redis/ping` is one plain PING round trip, the floor of any Redis call;")
    w("  `redis/dict_get` is one call of a `RedisManager` dict, `redis/queue_put_get` and")
    w("  `redis/lock_acquire_release` two calls each (compare them with two PINGs);")
    w("  `redis/pool_map_100k` is a distributed `Pool.map` of 100k small tasks, one a chunk,")
    w("  with two worker processes, per task, beside CPython's own recipe for the job: a")
    w("  `BaseManager` task-queue master and two workers, one task per queue item.")
    w("  `redis/pool_map_100k_default` is the same map with the default chunk size.")
    print("\n".join(out))


if __name__ == "__main__":
    main()
