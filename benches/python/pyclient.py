#!/usr/bin/env python3
"""A CPython BaseManager client measured against a manager server: ours
(`multiproc serve --python-address`) or CPython's own.

Rows (per operation; the bench prints them as rates too):
  pyclient/put_*           q.put(7) on a queue proxy
  pyclient/get_*           q.get() on a queue holding items
  pyclient/connect_*       a new connection: handshake, one call, close
  pyclient/worker_start_*  m.connect() + m.get_task_queue(), as a worker starts
each in two placements: `1cpu` (client and every server thread on CPU 0)
and `2cpu` (client on CPU 0, server on CPU 1).

Usage: pyclient.py HOST PORT AUTHKEY_FILE SERVER_PID [--smoke]
       (prints {"python": version, "ops": {key: {median_ns, p99_ns, samples}}})
or imported by baseline.py, which runs the same rows against CPython's server.
"""
import json
import os
import sys
import time
from multiprocessing.connection import Client
from multiprocessing.managers import BaseManager, dispatch


class QueueManager(BaseManager):
    pass


QueueManager.register('get_task_queue')


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


def pin(pid, cpu):
    """Pins every thread of `pid` (new threads inherit it) to `cpu`."""
    for tid in os.listdir(f'/proc/{pid}/task'):
        try:
            os.sched_setaffinity(int(tid), {cpu})
        except OSError:
            pass


def measure(address, authkey, server_pid, smoke=False):
    samples = 3 if smoke else 15
    k = 1 if smoke else 10
    cpus = sorted(os.sched_getaffinity(0))
    placements = [('1cpu', cpus[0], cpus[0])]
    if len(cpus) > 1:
        placements.append(('2cpu', cpus[0], cpus[1]))
    saved = os.sched_getaffinity(0)
    results = {}
    try:
        for name, client_cpu, server_cpu in placements:
            pin(os.getpid(), client_cpu)
            pin(server_pid, server_cpu)
            m = QueueManager(address=address, authkey=authkey)
            m.connect()
            q = m.get_task_queue()
            results[f'pyclient/put_{name}'] = per_call(samples, 100 * k, lambda: q.put(7))
            for _ in range((samples + 1) * 100 * k):
                q.put(7)
            results[f'pyclient/get_{name}'] = per_call(samples, 100 * k, q.get)
            while not q.empty():
                q.get()

            def connect():
                c = Client(address, authkey=authkey)
                dispatch(c, None, 'dummy')
                c.close()

            results[f'pyclient/connect_{name}'] = per_call(samples, 2 * k, connect)
            starts = []
            for _ in range(samples * 2):
                t = time.perf_counter_ns()
                w = QueueManager(address=address, authkey=authkey)
                w.connect()
                wq = w.get_task_queue()
                starts.append(time.perf_counter_ns() - t)
                del wq, w
            results[f'pyclient/worker_start_{name}'] = summarize(starts)
            del q, m
    finally:
        os.sched_setaffinity(0, saved)
    return results


def main():
    host, port, key_file, server_pid = sys.argv[1:5]
    with open(key_file, 'rb') as f:
        authkey = f.read().rstrip(b'\r\n')
    smoke = '--smoke' in sys.argv[5:]
    ops = measure((host, int(port)), authkey, int(server_pid), smoke)
    json.dump({"python": sys.version.split()[0], "ops": ops}, sys.stdout, indent=1)
    print()


if __name__ == '__main__':
    main()
