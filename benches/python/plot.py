#!/usr/bin/env python3
"""Plots `multiproc bench --json FILE` output: median latency per operation,
multiproc beside CPython, on a log scale.

    pip install matplotlib
    python3 benches/python/plot.py bench.json benches/latency.png
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        doc = json.load(f)
    ops = doc["ops"]
    keys = list(ops)
    ours = [ops[k]["median_ns"] for k in keys]
    theirs = [ops[k].get("cpython_median_ns") for k in keys]
    fig, ax = plt.subplots(figsize=(10, 0.38 * len(keys) + 1.5))
    ys = range(len(keys))
    ax.barh([y - 0.2 for y in ys], ours, height=0.4, label="multiproc", color="#2b7bba")
    ax.barh(
        [y + 0.2 for y in ys],
        [t if t else 0 for t in theirs],
        height=0.4,
        label="CPython multiprocessing",
        color="#e08a2c",
    )
    ax.set_yticks(list(ys))
    ax.set_yticklabels(keys, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("median time per operation (ns, log scale; lower is better)")
    ax.set_title(f"multiproc vs CPython — {doc.get('machine', '')}, {doc.get('date', '')}", fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=110)


if __name__ == "__main__":
    main()
