#!/usr/bin/env python3
"""CPython's multiprocessing, measured on the same operations as `multiproc bench`.

Prints one JSON object: {"python": "3.11.7", "ops": {"<key>": {"median_ns": .., "p99_ns": ..}},
"memory": {"<key>": {"bytes": .., "items": ..}}}.
The keys match `multiproc bench`. Run by hand:

    python3 benches/python/baseline.py            # full run (about a minute)
    python3 benches/python/baseline.py --smoke    # tiny counts, seconds
    python3 benches/python/baseline.py --filter queue
"""
import argparse
import ctypes
import json
import os
import queue
import threading
import multiprocessing as mp
import statistics
import sys
import time
from multiprocessing.managers import BaseManager


def noop(*_):
    return None


def square(x):
    return x * x


def cpu_1ms(_):
    end = time.perf_counter() + 0.001
    x = 0
    while time.perf_counter() < end:
        x += 1
    return x


def summarize(per_op_ns):
    per_op_ns = sorted(per_op_ns)
    idx = lambda q: per_op_ns[min(len(per_op_ns) - 1, round((len(per_op_ns) - 1) * q))]
    return {"median_ns": idx(0.5), "p99_ns": idx(0.99), "samples": len(per_op_ns)}


def per_call(samples, batch, op):
    for _ in range(batch):
        op()
    out = []
    for _ in range(samples):
        t = time.perf_counter_ns()
        for _ in range(batch):
            op()
        out.append((time.perf_counter_ns() - t) / batch)
    return summarize(out)


def process_join(method, samples):
    ctx = mp.get_context(method)

    def once():
        p = ctx.Process(target=noop)
        p.start()
        p.join()

    # Not counted: the forkserver starts on first use (as ours does).
    once()
    return per_call(samples, 1, once)


def event_echo(ping, pong, n):
    for _ in range(n):
        ping.wait()
        ping.clear()
        pong.set()


def pipe_echo(conn, n):
    for _ in range(n):
        conn.send_bytes(conn.recv_bytes())


def barrier_party(b, n):
    for _ in range(n):
        b.wait()


def queue_producer(q, n, size):
    payload = b"x" * size
    for _ in range(n):
        q.put(payload)
    q.put(None)


def bench_event(samples, batch):
    ping, pong = mp.Event(), mp.Event()
    total = samples * batch + batch
    p = mp.Process(target=event_echo, args=(ping, pong, total))
    p.start()

    def once():
        ping.set()
        pong.wait()
        pong.clear()

    r = per_call(samples, batch, once)
    p.join()
    return r


def bench_pipe(samples, batch):
    a, b = mp.Pipe()
    total = samples * batch + batch
    p = mp.Process(target=pipe_echo, args=(b, total))
    p.start()

    def once():
        a.send_bytes(b"12345678")
        a.recv_bytes()

    r = per_call(samples, batch, once)
    p.join()
    return r


def bench_barrier(samples, batch):
    b = mp.Barrier(2)
    total = samples * batch + batch
    p = mp.Process(target=barrier_party, args=(b, total))
    p.start()
    r = per_call(samples, batch, b.wait)
    p.join()
    return r


def bench_queue(samples, n, size):
    out = []
    for _ in range(samples):
        q = mp.Queue()
        p = mp.Process(target=queue_producer, args=(q, n, size))
        p.start()
        t = time.perf_counter_ns()
        got = 0
        while q.get() is not None:
            got += 1
        out.append((time.perf_counter_ns() - t) / max(got, 1))
        p.join()
    r = summarize(out)
    r["bytes_per_op"] = size
    return r


def bench_pool(samples, n, chunksize, func):
    with mp.Pool(2) as pool:
        pool.map(func, range(4))
        out = []
        for _ in range(samples):
            t = time.perf_counter_ns()
            pool.map(func, range(n), chunksize=chunksize)
            out.append((time.perf_counter_ns() - t) / n)
    return summarize(out)


def bench_imap(samples, n):
    with mp.Pool(2) as pool:
        pool.map(square, range(4))
        out = []
        for _ in range(samples):
            t = time.perf_counter_ns()
            for _ in pool.imap(square, range(n)):
                pass
            out.append((time.perf_counter_ns() - t) / n)
    return summarize(out)


def status_bytes(pid, field):
    """A field of /proc/<pid>/status given in kB (VmRSS:, VmHWM:), in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


MAP_PEAK = """
import multiprocessing as mp, sys
def square(x):
    return x * x
if __name__ == "__main__":
    n = int(sys.argv[1])
    with mp.Pool(2) as pool:
        out = pool.map(square, range(n), chunksize=1)
    assert len(out) == n
    with open("/proc/self/status") as f:
        print(next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM:")))
"""


def mem_pool_map_peak(n):
    """Peak resident set of a fresh interpreter that maps n items over Pool(2), chunksize 1."""
    import subprocess

    out = subprocess.run(
        [sys.executable, "-c", MAP_PEAK, str(n)], capture_output=True, check=True, text=True
    )
    return {"bytes": int(out.stdout.strip()), "items": n}


def mem_manager_dict(n):
    """The manager server's resident set once a dict holds n int keys (10k at a time)."""
    with mp.Manager() as m:
        d = m.dict()
        for start in range(0, n, 10_000):
            d.update({i: i for i in range(start, min(start + 10_000, n))})
        assert len(d) == n
        return {"bytes": status_bytes(m._process.pid, "VmRSS:"), "items": n}


def bench_manager(samples, batch):
    res = {}
    with mp.Manager() as m:
        d = m.dict()
        d["k"] = 1
        res["manager/dict_get"] = per_call(samples, batch, lambda: d["k"])
        d["big"] = b"\x07" * (1 << 20)
        res["manager/dict_get_1mib"] = per_call(samples, max(1, batch // 40), lambda: d["big"])
        res["manager/dict_set"] = per_call(samples, batch, lambda: d.__setitem__("k", 2))
        # Our manager hands out a Lock and a Queue that live in shared memory
        # (no server round trip), so they are compared with CPython's
        # shared-memory Lock and Queue; the rows that cross to a server are
        # manager/tcp_lock and manager/tcp_queue_put_get.
        lock = mp.Lock()

        def lock_round():
            lock.acquire()
            lock.release()

        res["lock/from_manager"] = per_call(samples, batch, lock_round)
        q = mp.Queue()

        def put_get():
            q.put(1)
            q.get()

        res["queue/from_manager_put_get"] = per_call(samples, batch, put_get)
        res["manager/create_object"] = per_call(samples, max(1, batch // 10), m.dict)
        v = m.Value("q", 0)

        def proxy_incr():
            v.value = v.value + 1

        res["proxy_vs_raw/counter_proxy"] = per_call(samples, batch, proxy_incr)
    raw = mp.RawValue("q", 0)

    def raw_incr():
        raw.value = raw.value + 1

    res["proxy_vs_raw/counter_raw"] = per_call(samples, batch * 10, raw_incr)
    return res


def pinned(run):
    """Runs `run()` with this process, and those it starts meanwhile, on one CPU."""
    before = os.sched_getaffinity(0)
    cpu = next(iter(before))
    os.sched_setaffinity(0, {cpu})
    try:
        return run()
    finally:
        os.sched_setaffinity(0, before)


def bench_dict_get(samples, batch):
    with mp.Manager() as m:
        d = m.dict()
        d["k"] = 1
        return per_call(samples, batch, lambda: d["k"])


def dict_reader(d, start, rounds, n):
    for _ in range(rounds):
        start.wait(120)
        for _ in range(n):
            d["k"]
        start.wait(120)


def bench_dict_get_2_clients(samples, n):
    """Two client processes getting from their own dicts at once: time per
    get of both together (ops/s is their total)."""
    with mp.Manager() as m:
        start = mp.Barrier(3)
        rounds = samples + 1
        clients, dicts = [], []
        for _ in range(2):
            # Kept here: a dict whose last proxy in this process goes is freed.
            d = m.dict()
            d["k"] = 1
            dicts.append(d)
            p = mp.Process(target=dict_reader, args=(d, start, rounds, n))
            p.start()
            clients.append(p)
        out = []
        for r in range(rounds):
            start.wait(120)
            t = time.perf_counter_ns()
            start.wait(120)
            if r > 0:
                out.append((time.perf_counter_ns() - t) / (2 * n))
        for p in clients:
            p.join()
        return summarize(out)


def cpu_consumer(q, out):
    t = time.process_time_ns()
    got = 0
    while q.get() is not None:
        got += 1
    out.put((time.process_time_ns() - t) / max(got, 1))


def bench_cpu_queue_consumer(samples, n):
    """CPU time per message of a Queue consumer fed 10k messages a second."""
    out = []
    for _ in range(samples):
        q, res = mp.Queue(), mp.Queue()
        p = mp.Process(target=cpu_consumer, args=(q, res))
        p.start()
        nxt = time.perf_counter()
        for i in range(n):
            nxt += 1e-4
            d = nxt - time.perf_counter()
            if d > 0:
                time.sleep(d)
            q.put(i)
        q.put(None)
        out.append(res.get())
        p.join()
    return summarize(out)


_libc = ctypes.CDLL(None, use_errno=True)


def cpu_ns_of(pid):
    """Another process's CPU time so far (utime + stime, all its threads) in
    ns, from its CPU clock, as `multiproc bench` reads it."""
    clock = ctypes.c_int()
    err = _libc.clock_getcpuclockid(pid, ctypes.byref(clock))
    if err:
        raise OSError(err, os.strerror(err))
    return time.clock_gettime_ns(clock.value)


def paced_10k(n, op):
    """Calls op(i) n times, one every 100 µs (10k/s), sleeping between."""
    nxt = time.perf_counter()
    for i in range(n):
        nxt += 1e-4
        d = nxt - time.perf_counter()
        if d > 0:
            time.sleep(d)
        op(i)


def bench_cpu_manager_server(samples, n):
    """CPU time of the manager server per request while one client gets a
    dict item 10k times a second."""
    with mp.Manager() as m:
        d = m.dict()
        d["k"] = 1
        for _ in range(100):
            d["k"]
        server = m._process.pid
        out = []
        for _ in range(samples):
            before = cpu_ns_of(server)
            paced_10k(n, lambda _: d["k"])
            out.append((cpu_ns_of(server) - before) / n)
        return summarize(out)


def quiet_cpu(samples, window, used):
    """CPU time used() reports across quiet windows, per second of quiet."""
    out = []
    for _ in range(samples):
        before = used()
        time.sleep(window)
        out.append((used() - before) / window)
    return summarize(out)


def bench_cpu_idle_manager(samples, window):
    """CPU a started manager server burns over a quiet second, with one
    connected client holding a dict, a list and a namespace it just used."""
    with mp.Manager() as m:
        d = m.dict()
        d["k"] = 1
        lst = m.list()
        lst.append(1)
        ns = m.Namespace()
        ns.x = 1
        for _ in range(100):
            d["k"]
        lst[:]
        server = m._process.pid
        return quiet_cpu(samples, window, lambda: cpu_ns_of(server))


def bench_cpu_idle_pool(samples, window):
    """CPU a Pool(2) burns over a quiet second: its workers and this
    process (the pool's helper threads; the measuring thread sleeps)."""
    with mp.Pool(2) as pool:
        pool.map(square, range(64), chunksize=1)
        workers = [p.pid for p in pool._pool]
        return quiet_cpu(
            samples,
            window,
            lambda: time.process_time_ns() + sum(cpu_ns_of(pid) for pid in workers),
        )


def get_counting_cpu(ready, q, out):
    ready.set()
    t = time.process_time_ns()
    q.get()
    out.put(time.process_time_ns() - t)


def bench_cpu_blocked_get(samples, window):
    """CPU a process blocked in Queue.get burns per second of waiting: its
    own CPU time from the start of the get until the message put after a
    quiet window arrives."""
    out = []
    for _ in range(samples):
        ready, q, res = mp.Event(), mp.Queue(), mp.Queue()
        p = mp.Process(target=get_counting_cpu, args=(ready, q, res))
        p.start()
        ready.wait(60)
        time.sleep(window)
        q.put(1)
        out.append(res.get(timeout=60) / window)
        p.join()
    return summarize(out)


class TcpManager(BaseManager):
    pass


_shared = {}


def _get_dict():
    return _shared


TcpManager.register("get_dict", callable=_get_dict, proxytype=None)


_tcp_lock = threading.Lock()
_tcp_queue = queue.Queue()


def _get_lock():
    return _tcp_lock


def _get_queue():
    return _tcp_queue


def bench_tcp(samples, batch):
    """manager/tcp_*: a BaseManager over TCP loopback, as in ours."""
    from multiprocessing.managers import AcquirerProxy, AutoProxy, DictProxy

    TcpManager.register("get_dict", callable=_get_dict, proxytype=DictProxy)
    TcpManager.register("get_lock", callable=_get_lock, proxytype=AcquirerProxy)
    TcpManager.register("get_queue", callable=_get_queue, proxytype=AutoProxy)
    m = TcpManager(address=("127.0.0.1", 0), authkey=b"bench")
    m.start()
    try:
        c = TcpManager(address=m.address, authkey=b"bench")
        c.connect()
        d = c.get_dict()
        d["k"] = 1
        lock = c.get_lock()
        q = c.get_queue()

        def lock_round():
            lock.acquire()
            lock.release()

        def queue_round():
            q.put(7)
            q.get()

        return {
            "manager/tcp_dict_get": per_call(samples, batch, lambda: d["k"]),
            "manager/tcp_lock": per_call(samples, batch, lock_round),
            "manager/tcp_queue_put_get": per_call(samples, batch, queue_round),
        }
    finally:
        m.shutdown()


_py_task_queue = queue.Queue()


def _get_task_queue():
    return _py_task_queue


class PyclientManager(BaseManager):
    pass


PyclientManager.register("get_task_queue", callable=_get_task_queue)


def bench_pyclient(smoke):
    """pyclient/*: CPython's BaseManager client against CPython's own
    server, measured by the same code (pyclient.py) that multiproc bench
    runs against `multiproc serve --python-address`, pinned the same way."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import pyclient

    m = PyclientManager(address=("127.0.0.1", 0), authkey=b"bench-key")
    m.start()
    try:
        return pyclient.measure(m.address, b"bench-key", m._process.pid, smoke)
    finally:
        m.shutdown()


_recipe_tasks = queue.Queue()
_recipe_results = queue.Queue()


def _get_recipe_tasks():
    return _recipe_tasks


def _get_recipe_results():
    return _recipe_results


class RecipeManager(BaseManager):
    """The distributed-managers recipe of CPython's docs (the one
    examples/distributed_master.rs and distributed_worker.rs mirror): a
    master serves a task queue and a result queue over TCP."""


RecipeManager.register("get_task_queue", callable=_get_recipe_tasks)
RecipeManager.register("get_result_queue", callable=_get_recipe_results)


def recipe_worker(address, authkey):
    """A worker of the recipe: connects, squares tasks until None."""
    m = RecipeManager(address=address, authkey=authkey)
    m.connect()
    tasks, results = m.get_task_queue(), m.get_result_queue()
    while True:
        n = tasks.get()
        if n is None:
            return
        results.put((n, n * n))


def bench_recipe_map(samples, n):
    """redis/pool_map_100k's CPython side: CPython's own recipe for the
    same job, a BaseManager task-queue master (tasks put one by one, as in
    the recipe) and two worker processes on this machine; per task."""
    authkey = b"bench-recipe"
    m = RecipeManager(address=("127.0.0.1", 0), authkey=authkey)
    m.start()
    ctx = mp.get_context("fork")
    workers = [ctx.Process(target=recipe_worker, args=(m.address, authkey)) for _ in range(2)]
    try:
        for w in workers:
            w.start()
        tasks, results = m.get_task_queue(), m.get_result_queue()

        def run(count):
            for i in range(count):
                tasks.put(i)
            for _ in range(count):
                results.get(timeout=300)

        run(64)
        out = []
        for _ in range(samples):
            t = time.perf_counter_ns()
            run(n)
            out.append((time.perf_counter_ns() - t) / n)
        for _ in workers:
            tasks.put(None)
        for w in workers:
            w.join(60)
    finally:
        for w in workers:
            if w.is_alive():
                w.kill()
                w.join()
        m.shutdown()
    return summarize(out)


def bench_shared_memory(s, k):
    """The shared_memory/* rows: named segments and ShareableList."""
    from multiprocessing import shared_memory

    def create_unlink():
        shm = shared_memory.SharedMemory(create=True, size=4096)
        shm.close()
        shm.unlink()

    target = shared_memory.SharedMemory(create=True, size=4096)

    def attach():
        shared_memory.SharedMemory(target.name).close()

    mib = 1 << 20
    big = shared_memory.SharedMemory(create=True, size=mib)
    data = bytearray(b"\x07" * mib)

    def write():
        big.buf[:] = data

    def read():
        data[:] = big.buf

    sl = shared_memory.ShareableList([1, "hello world"])

    def list_set():
        sl[0] = 5

    out = {
        "shared_memory/create_unlink_4k": per_call(s, 20 * k, create_unlink),
        "shared_memory/attach_4k": per_call(s, 20 * k, attach),
        "shared_memory/write_1mib": per_call(s, 5 * k, write),
        "shared_memory/read_1mib": per_call(s, 5 * k, read),
        "shared_memory/list_get_int": per_call(s, 1000 * k, lambda: sl[0]),
        "shared_memory/list_set_int": per_call(s, 1000 * k, list_set),
        "shared_memory/list_get_str": per_call(s, 1000 * k, lambda: sl[1]),
    }
    for shm in (target, big, sl.shm):
        shm.close()
        shm.unlink()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true", help="tiny iteration counts")
    ap.add_argument("--filter", default="", help="only keys containing this text")
    args = ap.parse_args()
    s = 2 if args.smoke else 15  # samples
    k = 1 if args.smoke else 10  # scale
    quiet = 0.1 if args.smoke else 1.0  # seconds of each idle cpu/* sample

    lock, rlock = mp.Lock(), mp.RLock()
    value = mp.Value("q", 0)
    raw = mp.RawValue("q", 0)

    def locked_incr():
        with value.get_lock():
            value.value += 1

    def lock_round():
        lock.acquire()
        lock.release()

    def rlock_round():
        rlock.acquire()
        rlock.release()

    ops = {
        "process/spawn_join": lambda: process_join("spawn", max(2, s // 3)),
        "process/fork_join": lambda: process_join("fork", s),
        "process/forkserver_join": lambda: process_join("forkserver", s),
        "value/locked_increment": lambda: per_call(s, 1000 * k, locked_incr),
        "value/raw_read": lambda: per_call(s, 1000 * k, lambda: raw.value),
        "lock/acquire_release": lambda: per_call(s, 1000 * k, lock_round),
        "rlock/acquire_release": lambda: per_call(s, 1000 * k, rlock_round),
        "event/ping_pong": lambda: bench_event(s, 20 * k),
        "barrier/wait_2": lambda: bench_barrier(s, 20 * k),
        "queue/throughput_8b": lambda: bench_queue(max(2, s // 3), 2000 * k, 8),
        "queue/throughput_1mib": lambda: bench_queue(max(2, s // 3), 5 * k, 1 << 20),
        "pipe/round_trip": lambda: bench_pipe(s, 50 * k),
        "pool/map_chunksize_1_batched": lambda: bench_pool(max(2, s // 3), 1000 * k, 1, square),
        # CPython's pool sends every chunk, and its result, in a message of
        # its own: the same call is both rows' baseline.
        "pool/map_chunksize_1_unbatched": lambda: bench_pool(
            max(2, s // 3), 1000 * k, 1, square
        ),
        "pool/map_default": lambda: bench_pool(max(2, s // 3), 10000 * k, None, square),
        "pool/imap_chunksize_1": lambda: bench_imap(max(2, s // 3), 1000 * k),
        "pool/cpu_1ms": lambda: bench_pool(max(2, s // 5), 20 * k, 1, cpu_1ms),
        "manager/dict_get_2_clients": lambda: bench_dict_get_2_clients(s, 20 * k),
        "cpu/queue_consumer_10k": lambda: bench_cpu_queue_consumer(
            min(5, s), 200 if args.smoke else 3000
        ),
        "cpu/manager_server_10k": lambda: bench_cpu_manager_server(
            min(5, s), 200 if args.smoke else 3000
        ),
        "cpu/idle_manager": lambda: bench_cpu_idle_manager(min(5, s), quiet),
        "cpu/idle_pool": lambda: bench_cpu_idle_pool(min(5, s), quiet),
        "cpu/blocked_get": lambda: bench_cpu_blocked_get(min(5, s), quiet),
        "contended/pipe_round_trip": lambda: pinned(lambda: bench_pipe(s, 50 * k)),
        "contended/queue_throughput_8b": lambda: pinned(
            lambda: bench_queue(max(2, s // 3), 2000 * k, 8)
        ),
        "contended/manager_dict_get": lambda: pinned(lambda: bench_dict_get(s, 20 * k)),
        "contended/event_ping_pong": lambda: pinned(lambda: bench_event(s, 20 * k)),
        "contended/pool_map_chunksize_1_batched": lambda: pinned(
            lambda: bench_pool(max(2, s // 3), 1000 * k, 1, square)
        ),
        # 100k tasks (10k with --smoke), one a queue item, as the row of
        # `multiproc bench --features cli,redis` (one task a chunk); the
        # recipe needs no Redis.
        "redis/pool_map_100k": lambda: bench_recipe_map(2, 10000 * k),
    }
    results = {}
    for key, run in ops.items():
        if args.filter in key:
            print(f"python: {key}", file=sys.stderr)
            results[key] = run()
    manager_keys = (
        "manager/dict_get_1mib",
        "lock/from_manager",
        "queue/from_manager_put_get",
        "proxy_vs_raw/counter_raw",
    )
    if any(args.filter in key for key in manager_keys):
        print("python: manager/*", file=sys.stderr)
        for key, r in bench_manager(s, 20 * k).items():
            if args.filter in key:
                results[key] = r
    tcp_keys = ("manager/tcp_dict_get", "manager/tcp_lock", "manager/tcp_queue_put_get")
    if any(args.filter in key for key in tcp_keys):
        print("python: manager/tcp_*", file=sys.stderr)
        for key, r in bench_tcp(s, 20 * k).items():
            if args.filter in key:
                results[key] = r
    if args.filter in "pyclient/" or "pyclient/" in args.filter:
        print("python: pyclient/*", file=sys.stderr)
        for key, r in bench_pyclient(args.smoke).items():
            if args.filter in key:
                results[key] = r
    shm_keys = (
        "shared_memory/create_unlink_4k",
        "shared_memory/attach_4k",
        "shared_memory/write_1mib",
        "shared_memory/read_1mib",
        "shared_memory/list_get_int",
        "shared_memory/list_set_int",
        "shared_memory/list_get_str",
    )
    if any(args.filter in key for key in shm_keys):
        print("python: shared_memory/*", file=sys.stderr)
        for key, r in bench_shared_memory(s, k).items():
            if args.filter in key:
                results[key] = r
    million = 10_000 if args.smoke else 1_000_000
    memory_ops = {
        "memory/pool_map_1m_items_parent_peak": lambda: mem_pool_map_peak(million),
        "memory/manager_dict_1m_keys_server": lambda: mem_manager_dict(million),
    }
    memory = {}
    for key, run in memory_ops.items():
        if args.filter in key:
            print(f"python: {key}", file=sys.stderr)
            memory[key] = run()
    json.dump(
        {"python": sys.version.split()[0], "ops": results, "memory": memory},
        sys.stdout,
        indent=1,
    )
    print()


if __name__ == "__main__":
    main()
