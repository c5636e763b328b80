"""The lookup cache's per-key counters (``connectors/lookup/sketch.py`` KeyCounters: exact
counts for the hot keys, a count-min sketch for the rest): cost per counted read, by key
distribution, with FreshCache's defaults (1,024 hot keys, sketch 2,048 x 4).

Key streams (seeded): ``uniform`` over 1,000,000 keys (nearly every read is of a new key,
so the hot set churns), ``zipf`` (exponent 1.1 over 1,000,000 keys), ``hot500`` (500
keys, all of which fit in the hot set). Each stream is counted in a fresh process,
--runs times; the median microseconds per read is reported, with reads and writes
interleaved 10:1 as a lookup sees them.

    python benchmarks/lookup_counters.py [--reads 200000] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap

JOB = textwrap.dedent('''
    import json, sys, time
    import numpy as np
    from streambatch.connectors.lookup.sketch import KeyCounters
    kind, reads = sys.argv[1], int(sys.argv[2])
    rng = np.random.default_rng(7)
    if kind == "uniform":
        keys = rng.integers(0, 1_000_000, reads)
    elif kind == "zipf":
        keys = np.minimum(rng.zipf(1.1, reads), 1_000_000)
    else:
        keys = rng.integers(0, 500, reads)
    keys = keys.tolist()
    counters = KeyCounters(hot_keys=1024, width=2048, depth=4)
    t0 = time.perf_counter()
    for i, key in enumerate(keys):
        counters.read(key)
        if i % 10 == 0:
            counters.write(key)
    took = time.perf_counter() - t0
    print(json.dumps({"us_per_read": took / reads * 1e6, "hot": len(counters.hot)}))
''')


def run(kind: str, reads: int) -> dict:
    out = subprocess.run([sys.executable, "-c", JOB, kind, str(reads)], capture_output=True,
                         text=True, check=True, cwd=os.path.dirname(os.path.abspath(__file__)))
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"{'keys':8s} {'us/read':>8s} {'hot keys':>9s}  (median of {args.runs} fresh processes, "
          f"{args.reads:,} reads each)")
    for kind in ("uniform", "zipf", "hot500"):
        results = [run(kind, args.reads) for _ in range(args.runs)]
        cost = sorted(r["us_per_read"] for r in results)[len(results) // 2]
        print(f"{kind:8s} {cost:8.2f} {results[0]['hot']:9d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
