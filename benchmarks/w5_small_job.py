"""W5 — a small job end to end: 1000 dict rows -> map -> filter -> take_all.

Every run is a FRESH Python process (``sys.executable -c CODE``) and the number
reported is the wall time of that whole subprocess: interpreter start-up, imports,
engine start-up (worker pools, Ray's cluster), the job, and shutdown. Peak memory is
the peak of the summed RSS of the process and all its descendants (polled every
~10 ms with psutil). Every run's result rows are checked against the expected rows
(same count, same values after sorting); a mismatch aborts the benchmark.

Engines:
  plain        a Python list comprehension (the floor: interpreter start-up + the loop)
  streambatch  sb.from_items(rows).map(f).filter(g).take_all()
  sb-fork      the same with sb.init(worker_start_method="fork") (workers forked from
               the driver); sb-spawn: "spawn" (each worker a fresh interpreter)
  ray          ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False);
               ray.data.from_items(rows).map(f).filter(g).take_all(); ray.shutdown()

Targets (issue): streambatch median < 0.5 s, and >= 20x faster than Ray Data.

    python benchmarks/w5_small_job.py [--runs 5] [--ray-runs 3] [--skip-ray]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _util import fmt_mb, fmt_ratio, fmt_s, machine_summary, median, print_table, run_python  # noqa: E402

N_ROWS = 1000
TARGET_S = 0.5
TARGET_SPEEDUP_VS_RAY = 20.0
MARK = "__W5_RESULT__"

# Shared by every engine: the input rows, the two UDFs, and how the result is emitted
# (one JSON line on stdout, numpy scalars turned into Python values).
PRELUDE = f'''
import json, sys
ROWS = [{{"id": i, "name": "user%04d" % i, "score": (i * 37) % 101}} for i in range({N_ROWS})]

def f(r):
    return {{"id": r["id"], "name": r["name"].upper(), "score2": r["score"] * 2 + 1}}

def g(r):
    return r["score2"] % 3 != 0

def emit(rows):
    out = [{{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()}} for r in rows]
    sys.stdout.write("\\n{MARK}" + json.dumps(out) + "\\n")
'''

ENGINES = {
    "plain": PRELUDE
    + """
emit([r for r in map(f, ROWS) if g(r)])
""",
    "streambatch": PRELUDE
    + """
import streambatch as sb
emit(sb.from_items(ROWS).map(f).filter(g).take_all())
""",
    # the same job with the other worker start methods (the default starts workers from
    # a zygote; "fork" forks them from the driver, the default before issue 15)
    "sb-fork": PRELUDE
    + """
import streambatch as sb
sb.init(worker_start_method="fork")
emit(sb.from_items(ROWS).map(f).filter(g).take_all())
""",
    "sb-spawn": PRELUDE
    + """
import streambatch as sb
sb.init(worker_start_method="spawn")
emit(sb.from_items(ROWS).map(f).filter(g).take_all())
""",
    "ray": PRELUDE
    + """
import ray
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
emit(ray.data.from_items(ROWS).map(f).filter(g).take_all())
ray.shutdown()
""",
}


def expected_rows():
    ns: dict = {}
    exec(PRELUDE, ns)
    rows = [ns["f"](r) for r in ns["ROWS"]]
    return [r for r in rows if ns["g"](r)]


def _key(r):
    return json.dumps(r, sort_keys=True)


def check_result(engine, stdout, expected):
    lines = [ln for ln in stdout.splitlines() if ln.startswith(MARK)]
    if len(lines) != 1:
        raise SystemExit(f"FAILED: {engine}: expected one result line on stdout, got {len(lines)}")
    got = json.loads(lines[0][len(MARK):])
    if len(got) != len(expected):
        raise SystemExit(f"FAILED: {engine}: {len(got)} rows returned, expected {len(expected)}")
    gs, es = sorted(got, key=_key), sorted(expected, key=_key)
    for i, (a, b) in enumerate(zip(gs, es, strict=True)):
        if a != b:
            raise SystemExit(
                f"FAILED: {engine}: wrong rows; first difference after sorting at #{i}:\n"
                f"  got      {a!r}\n  expected {b!r}"
            )


def bench(engine, runs, warmup, expected, as_file, verbose):
    code = ENGINES[engine]
    walls, rss, lingering = [], [], []
    for i in range(warmup + runs):
        res = run_python(code, timeout=600, as_file=as_file).check(f"{engine} run {i}")
        check_result(engine, res.stdout, expected)
        tag = "warm-up" if i < warmup else f"run {i - warmup + 1}/{runs}"
        if verbose:
            print(
                f"  {engine:12s} {tag:9s} {res.wall_s:7.3f} s  peak RSS {fmt_mb(res.mem.rss):>5s} MB"
                f"  procs {res.mem.max_nprocs}",
                flush=True,
            )
        if res.lingering:
            lingering.append(res.lingering)
        if i >= warmup:
            walls.append(res.wall_s)
            rss.append(res.mem.rss)
    return {
        "engine": engine,
        "runs": runs,
        "median_s": median(walls),
        "min_s": min(walls),
        "median_rss": median(rss),
        "walls": walls,
        "lingering": lingering,
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5, help="measured runs per engine (default 5)")
    ap.add_argument("--ray-runs", type=int, default=3, help="measured runs for Ray Data (default 3)")
    ap.add_argument("--warmup", type=int, default=1, help="unmeasured runs per engine first, to warm the OS file cache and .pyc files (default 1)")
    ap.add_argument("--skip-ray", action="store_true", help="do not run Ray Data")
    ap.add_argument("--engines", default="plain,streambatch,ray", help="comma list of engines to run (default all; plain and streambatch are needed for the ratios)")
    ap.add_argument("--as-file", action="store_true", help="run the job as `python job.py` instead of `python -c CODE`")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    ap.add_argument("-q", "--quiet", action="store_true", help="no per-run lines")
    args = ap.parse_args(argv)

    engines = [e for e in args.engines.split(",") if e and not (args.skip_ray and e == "ray")]
    unknown = set(engines) - set(ENGINES)
    if unknown:
        ap.error(f"unknown engine(s) {sorted(unknown)}; choose from {sorted(ENGINES)}")
    expected = expected_rows()
    print(f"W5 small job: {N_ROWS} dict rows -> map -> filter -> take_all ({len(expected)} rows out); "
          f"fresh process per run; {machine_summary()}", flush=True)
    results = {}
    for e in engines:
        runs = args.ray_runs if e == "ray" else args.runs
        results[e] = bench(e, runs, args.warmup, expected, args.as_file, not args.quiet)

    sb_m = results["streambatch"]["median_s"] if "streambatch" in results else None
    plain_m = results["plain"]["median_s"] if "plain" in results else None
    ray_m = results["ray"]["median_s"] if "ray" in results else None
    rows = []
    for e in engines:
        r = results[e]
        rows.append([
            e, str(r["runs"]), fmt_s(r["median_s"]), fmt_s(r["min_s"]), fmt_mb(r["median_rss"]),
            fmt_ratio(r["median_s"] / sb_m if sb_m else None),
            fmt_ratio(r["median_s"] / plain_m if plain_m else None),
        ])
    print()
    print_table(["engine", "runs", "median s", "min s", "median peak RSS MB", "vs streambatch", "vs plain"], rows)
    print()
    if sb_m is None:
        print("streambatch not run: no targets checked")
        return 0
    if plain_m:
        print(f"streambatch / plain : {sb_m / plain_m:.1f}x  (start-up + engine overhead over a bare interpreter loop)")
    ok_time = sb_m < TARGET_S
    print(f"target streambatch < {TARGET_S} s     : {'MET' if ok_time else 'NOT MET'} ({sb_m:.3f} s)")
    ok_ray = None
    if ray_m is not None:
        speedup = ray_m / sb_m
        ok_ray = speedup >= TARGET_SPEEDUP_VS_RAY
        print(f"ray / streambatch   : {speedup:.1f}x")
        print(f"target >= {TARGET_SPEEDUP_VS_RAY:.0f}x faster than Ray Data: {'MET' if ok_ray else 'NOT MET'} ({speedup:.1f}x)")
    else:
        print(f"target >= {TARGET_SPEEDUP_VS_RAY:.0f}x faster than Ray Data: not measured (--skip-ray)")
    for e in engines:
        if results[e]["lingering"]:
            print(f"note: {e}: processes still alive after the job's process exited "
                  f"(terminated by the benchmark): {results[e]['lingering']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "targets": {"time": ok_time, "vs_ray": ok_ray}}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
