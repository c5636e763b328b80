"""Fresh-lookup cache benchmark: adaptive vs TTL = bound vs no cache.

Workload (issue 9): keys drawn from Zipf(1.3) over 10k keys, read fractions 0.9
and 0.5 (the rest are writes to the table), staleness bounds 0.1 / 0.3 / 1 / 3 s.
The table is the in-process ``SimulatedTable`` on a simulated clock (20k
operations per simulated second, reads in micro-batches of 100 records), with
a change feed that carries rows and delivers each message after up to 10 ms;
its version log is the staleness oracle, so every served value is checked.
An in-process fetch costs microseconds, unlike a real backend, so the cost
model is fixed to a remote store's: c_miss = 1 ms per key, c_update = 5 us
(apply a carried row), c_invalidate = 1 us. records/s is wall time spent
inside the cache per record (oracle excluded).

Prints one line per run and the targets: 0 violations everywhere, and adaptive
backend reads < 0.5x TTL = bound on the read-heavy mix. Writes a JSON file and
a PNG of backend load against the bound.

    .venv/bin/python benchmarks/lookup_cache.py [--ops 600000] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
from streambatch.connectors.lookup import FreshCache
from streambatch.connectors.lookup.simulated import SimClock, SimulatedTable

KEYS, ZIPF, RATE, BATCH = 10_000, 1.3, 20_000.0, 100
BOUNDS = (0.1, 0.3, 1.0, 3.0)
MIXES = (0.9, 0.5)
POLICIES = ("adaptive", "ttl", "none")
COSTS = {"miss": 1e-3, "update": 5e-6, "invalidate": 1e-6}


def workload(ops: int, read_fraction: float, seed: int):
    """Keys (Zipf over KEYS) and whether each operation is a read."""
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, KEYS + 1, dtype=float)
    p = ranks ** -ZIPF
    keys = rng.choice(KEYS, size=ops, p=p / p.sum())
    return keys.tolist(), (rng.random(ops) < read_fraction).tolist()


def run(policy: str, bound: float, read_fraction: float, ops: int, seed: int = 0) -> dict:
    clock = SimClock()
    table = SimulatedTable(clock, keys=range(KEYS), max_delay=0.01, seed=seed)
    cache = FreshCache(bound, policy, capacity=100_000, clock=clock, costs=COSTS).attach(table)
    keys, is_read = workload(ops, read_fraction, seed)
    staleness, batch, busy, records = [], [], 0.0, 0
    step = 1.0 / RATE
    for key, read in zip(keys, is_read, strict=True):
        clock.advance(step)
        if not read:
            table.write(key)
            continue
        batch.append(key)
        if len(batch) == BATCH:
            t0 = time.perf_counter()
            found = cache.get_many(batch)
            busy += time.perf_counter() - t0
            now = clock()
            staleness += [table.staleness(k, found.get(k), now) for k in batch]
            records += len(batch)
            batch = []
    s = cache.stats()
    arr = np.array(staleness)
    return {
        "policy": policy, "bound_s": bound, "read_fraction": read_fraction, "records": records,
        "backend_reads_per_1k": 1000 * s["backend_keys"] / records,
        "backend_queries_per_1k": 1000 * s["backend_reads"] / records,
        "hit_ratio": s["hit_ratio"], "max_staleness_s": float(arr.max()),
        "p99_staleness_s": float(np.quantile(arr, 0.99)),
        "violations": int((arr > bound + 1e-9).sum()), "updates": s["updates"],
        "invalidations": s["invalidations"], "records_per_s": records / busy if busy else 0.0,
    }


def plot(results: list[dict], path: str) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib missing: pip install matplotlib — no plot written)")
        return False
    fig, axes = plt.subplots(1, len(MIXES), figsize=(10, 4), sharey=True)
    for ax, mix in zip(axes, MIXES, strict=True):
        for policy in POLICIES:
            rows = [r for r in results if r["policy"] == policy and r["read_fraction"] == mix]
            ax.plot([r["bound_s"] for r in rows], [r["backend_reads_per_1k"] for r in rows],
                    marker="o", label="TTL = bound" if policy == "ttl" else policy)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("staleness bound (s)")
        ax.set_title(f"read fraction {mix}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("backend reads per 1k records")
    axes[0].legend()
    fig.suptitle(f"Fresh lookups: Zipf {ZIPF} over {KEYS} keys")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=600_000, help="operations per run")
    parser.add_argument("--out", default="benchmarks/results", help="folder for JSON and PNG")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    results = []
    header = (f"{'mix':>4} {'bound':>5} {'policy':>8} {'reads/1k':>9} {'q/1k':>6} {'hit':>5} "
              f"{'max_st':>7} {'p99_st':>7} {'viol':>5} {'upd':>6} {'inv':>6} {'rec/s':>9}")
    print(header)
    for mix in MIXES:
        for bound in BOUNDS:
            for policy in POLICIES:
                r = run(policy, bound, mix, args.ops)
                results.append(r)
                print(f"{mix:>4} {bound:>5} {policy:>8} {r['backend_reads_per_1k']:>9.1f} "
                      f"{r['backend_queries_per_1k']:>6.1f} {r['hit_ratio']:>5.2f} "
                      f"{r['max_staleness_s']:>7.3f} {r['p99_staleness_s']:>7.3f} "
                      f"{r['violations']:>5} {r['updates']:>6} {r['invalidations']:>6} "
                      f"{r['records_per_s']:>9.0f}", flush=True)
    with open(os.path.join(args.out, "lookup_cache.json"), "w") as f:
        json.dump(results, f, indent=1)
    plot(results, os.path.join(args.out, "lookup_cache.png"))
    ok = True
    bad = [r for r in results if r["violations"]]
    if bad:
        ok = False
        print(f"FAILED: {len(bad)} runs served values beyond the bound")
    for bound in BOUNDS:
        a, t = (next(r for r in results if r["policy"] == p and r["bound_s"] == bound
                     and r["read_fraction"] == 0.9) for p in ("adaptive", "ttl"))
        ratio = a["backend_reads_per_1k"] / t["backend_reads_per_1k"]
        met = ratio < 0.5
        ok &= met
        print(f"read-heavy, bound {bound} s: adaptive/TTL backend reads = {ratio:.2f} "
              f"({'target met' if met else 'TARGET MISSED'}: < 0.5)")
    print("all targets met" if ok else "some targets missed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
