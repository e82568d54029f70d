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


def target_rows(ops, memory):
    """(target, figure, met) for each target whose rows this run has."""
    rows = []

    def med(key):
        return ops.get(key, {}).get("median_ns")

    def cpy(key):
        return ops.get(key, {}).get("cpython_median_ns")

    def at_most(key, limit_ns, label):
        m = med(key)
        if m is not None:
            rows.append((f"`{key}` ≤ {label}", fmt_ns(m), m <= limit_ns))

    def not_above_cpython(key):
        m, c = med(key), cpy(key)
        if m is not None and c is not None:
            rows.append((f"`{key}` ≤ CPython's", f"{fmt_ns(m)} (CPython {fmt_ns(c)})", m <= c))

    m, floor = med("contended/pipe_round_trip"), med("floor/same_cpu_switch_round_trip")
    if m is not None:
        below = f"; this machine's floor, two context switches: {fmt_ns(floor)}" if floor else ""
        rows.append(("`contended/pipe_round_trip` ≤ 3 µs", f"{fmt_ns(m)}{below}", m <= 3_000))
    not_above_cpython("contended/pipe_round_trip")
    at_most("pipe/round_trip", 1_000, "1.0 µs")
    at_most("event/ping_pong", 2_000, "2 µs")
    at_most("barrier/wait_2", 2_000, "2 µs")
    not_above_cpython("cpu/queue_consumer_10k")
    not_above_cpython("cpu/manager_server_10k")
    at_most("manager/dict_get_1mib", 150_000, "150 µs")
    one, two = med("manager/dict_get"), med("manager/dict_get_2_clients")
    if one is not None and two is not None:
        rows.append((
            "manager gets/s, two clients together ≥ 1.5× one",
            f"{one / two:.2f}× ({fmt_ns(two)} a get of both together, {fmt_ns(one)} alone)",
            one / two >= 1.5,
        ))
    at_most("pool/imap_chunksize_1", 1_500, "1.5 µs an item")
    peak = memory.get("memory/pool_map_1m_items_parent_peak")
    if peak is not None:
        rows.append((
            "`memory/pool_map_1m_items_parent_peak` ≤ 60 MB",
            f"{peak['bytes'] / 1e6:.1f} MB",
            peak["bytes"] <= 60e6,
        ))
    server = memory.get("memory/manager_dict_1m_keys_server")
    if server is not None and "cpython_bytes" in server:
        rows.append((
            "`memory/manager_dict_1m_keys_server` ≤ CPython's",
            f"{server['bytes'] / 1e6:.1f} MB (CPython {server['cpython_bytes'] / 1e6:.1f} MB)",
            server["bytes"] <= server["cpython_bytes"],
        ))
    for key, calls in (("redis/dict_get", 1), ("redis/queue_put_get", 2),
                       ("redis/lock_acquire_release", 2)):
        m, floor = med(key), ops.get(key, {}).get("floor_ns")
        if m is not None and floor is not None:
            ratio = m / floor
            rows.append((
                f"`{key}` ≤ 1.5 PING round trips a call ({calls} call{'s' if calls > 1 else ''})",
                f"{ratio:.2f} PINGs a call ({fmt_ns(m)}; {calls} PING{'s' if calls > 1 else ''} "
                f"beside it {fmt_ns(floor)})",
                ratio <= 1.5,
            ))
    m = med("redis/pool_map_100k")
    if m is not None:
        rows.append(("`redis/pool_map_100k` ≥ 50k tasks/s", f"{1e9 / m / 1e3:.1f} k tasks/s", m <= 20_000))
        not_above_cpython("redis/pool_map_100k")
    return rows


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
    steal = main_run.get("cpu_steal_percent")
    if steal is not None:
        note = " (a busy host: every figure is slower than a quiet machine's)" if steal > 5 else ""
        w(f"- CPU time the hypervisor gave other guests during the run: {steal:.1f} %{note}")
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
    memory = main_run.get("memory", {})
    if memory:
        w("## Memory\n")
        w("Resident set in MB (10^6 bytes), read from `/proc/<pid>/status` at the end of the")
        w("work, beside CPython doing the same in the same run.\n")
        w("| row | items | ours | CPython | ours / CPython |")
        w("|---|---:|---:|---:|---:|")
        for key, m in memory.items():
            cp = m.get("cpython_bytes")
            ratio = f"{m['ratio']:.2f}" if "ratio" in m else "–"
            cps = f"{cp / 1e6:.1f} MB" if cp is not None else "–"
            w(f"| `{key}` | {m['items']:,} | {m['bytes'] / 1e6:.1f} MB | {cps} | {ratio} |")
        w("")
        w("- `memory/pool_map_1m_items_parent_peak`: the peak (`VmHWM`) of a process started")
        w("  afresh that maps a million items over a two-worker `Pool` with chunksize 1 and keeps")
        w("  the results.")
        w("- `memory/manager_dict_1m_keys_server`: the manager server's `VmRSS` once a dict holds")
        w("  a million integer keys and values (`DictProxy<u64, u64>` here), put 10k at a time.\n")
    targets = target_rows(ops, memory)
    if targets:
        w("## Targets\n")
        w("The figures the open issues ask for, checked against this run.\n")
        w("| target | figure in this run | met |")
        w("|---|---|---|")
        for what, figure, met in targets:
            w(f"| {what} | {figure} | {'yes' if met else '**no**'} |")
        w("")
    w("## Reading the table\n")
    w("- `proxy_vs_raw/*` is the design card's comparison: one counter incremented through a")
    w("  manager dict proxy (a round trip to the server per update) and in a raw shared `Value`.")
    w("- `pool/cpu_1ms` against `pool/cpu_1ms_one_process`: two workers on two cores.")
    w("- Throughput rows (`queue/*`) are per message from a producer process to a consumer.")
    w("- `redis/*` rows exist in a build with the `redis` feature (`--features cli,redis`; a")
    w("  `redis-server` on PATH, started for each row on a free port and stopped after it).")
    w("  `redis/ping` is one plain PING round trip, the floor of any Redis call;")
    w("  `redis/dict_get` is one call of a `RedisManager` dict, `redis/queue_put_get` and")
    w("  `redis/lock_acquire_release` two calls each; each of these three is measured in")
    w("  alternate samples with a PING on its own connection to the same server (its floor,")
    w("  in the JSON as `floor_ns`: one PING a call), so that both see the same machine;")
    w("  `redis/pool_map_100k` is a distributed `Pool.map` of 100k small tasks, one a chunk,")
    w("  with two worker processes, per task, beside CPython's own recipe for the job: a")
    w("  `BaseManager` task-queue master and two workers, one task per queue item.")
    w("  `redis/pool_map_100k_default` is the same map with the default chunk size.")
    w("- Rows are named for what they measure: `lock/from_manager` and `queue/from_manager_put_get`")
    w("  are the direct shared-memory handles a local `Manager` hands out, beside CPython's")
    w("  shared-memory `mp.Lock`/`mp.Queue`; `manager/tcp_*` cross to a server process through a")
    w("  TCP `BaseManager`, beside CPython's manager proxies; `pool/map_chunksize_1_batched` sends")
    w("  up to 16 chunks a message, `pool/map_chunksize_1_unbatched` one task and one result a")
    w("  message (`PoolBuilder::chunks_per_message(1)`), as CPython's pool does (the same CPython")
    w("  call is both rows' baseline). `pool/imap_chunksize_1` is per item, from the call to the")
    w("  last result read.")
    w("- `manager/dict_get_2_clients` is the time per get of two client processes on their own")
    w("  dicts, both together: the lower, the more the server does with two clients.")
    w("- `contended/*` pin the measuring process and everything it starts to one CPU (CPython")
    w("  pinned the same way): the regime where two processes share a core and no one may spin.")
    w("  `floor/same_cpu_switch_round_trip` is what the machine allows there: two processes pinned")
    w("  to one CPU pass a turn through a shared word, each yielding its CPU until the turn is its")
    w("  own, so a round trip is two context switches and nothing else (no futex, no message).")
    w("- `cpu/*` are CPU time (utime + stime, every thread, read in ns from the process's CPU")
    w("  clock), not elapsed time, on both sides. `cpu/queue_consumer_10k` is the consumer's CPU")
    w("  time per message at 10k msgs/s, `cpu/manager_server_10k` the manager server's per request")
    w("  while one client gets a dict item 10k times a second (paced the same way): their values")
    w("  in µs are also percentages of a core. The idle rows are CPU time per second of quiet")
    w("  (10 ms = 1 % of a core): `cpu/idle_manager` a server with one connected client holding a")
    w("  dict, a list and a namespace, and no requests; `cpu/idle_pool` a `Pool(2)`'s workers and")
    w("  the process that made it (its helper threads) with no tasks; `cpu/blocked_get` a process")
    w("  blocked in `Queue::get`, from the start of the wait until the message put after the quiet")
    w("  second arrives (one wake-up included).")
    w("- `process/forkserver_join` starts and joins a child that the forkserver forks (the server")
    w("  itself starts in an uncounted first sample, on both sides).")
    w("- `pyclient/*`: CPython's own `BaseManager` client (`benches/python/pyclient.py`) against")
    w("  `multiproc serve --python-address`; the CPython column is CPython's manager server with the")
    w("  same client. `1cpu` pins client and server to one CPU, `2cpu` puts them on one each. Most")
    w("  of a call's time is the Python client's own.")
    w("- `manager/tcp_dict_get` is bounded by this machine's TCP round trip (`tcp/round_trip_64b`).")
    print("\n".join(out))


if __name__ == "__main__":
    main()
