"""All-to-all operators side by side: groupby(key) sum/mean/count, sort(val) and a global
random shuffle, in streambatch, Polars, Ray Data, DuckDB and Daft (issue 17).

Input: N rows (default 10 M; --quick: 1 M) generated once, deterministically (numpy
seed), in 8 parquet files cached under --data-dir (default ./bench-data):
  key  int64, 200,000 possible values, Zipf-skewed (exponent 1.0: the hottest key
       holds ~7.8% of the rows), the ranks permuted so that key order is not rank order
  val  float64, standard normal
  s    string, "user-<key>" (a function of the key, so a row that came apart shows)
(10 M rows: ~153 MB on disk, ~300 MB in memory.)

One fresh Python process per engine per op per run (interpreter start-up, imports and
engine start-up included in the wall time); the runs are interleaved (round 1: every
op, every engine; then round 2...), and each figure is the median over --runs rounds.
Memory: the peak of the process tree's summed RSS (every 10 ms) and PSS (every 0.1 s),
sampled from outside with psutil (see _util.py and README.md).

What each engine runs (what a user writes first, no tuning):
  streambatch     ds = sb.read_parquet(dir)
                  ds.groupby("key").aggregate(sb.Sum("val"), sb.Mean("val"), sb.Count())
                  ds.sort("val") / ds.random_shuffle(seed=0)
                  consumed with .iter_batches(batch_size=None)
  streambatch-256 the sort only, after sb.init(memory_budget=256 MiB)
  polars          pl.scan_parquet(glob).group_by("key").agg(sum, mean, len).collect()
                  .sort("val").collect(); shuffle: .collect().sample(fraction=1, shuffle=True, seed=0)
  ray             ray.init(num_cpus=<cores>); ray.data.read_parquet(dir).groupby("key")
                  .aggregate(Sum, Mean, Count) / .sort("val") / .random_shuffle(seed=0),
                  consumed with .iter_batches(batch_size=None, batch_format="pyarrow")
  duckdb          SELECT key, sum(val), avg(val), count(*) ... GROUP BY key /
                  ORDER BY val / ORDER BY random() (after setseed), fetched as Arrow
  daft            daft.read_parquet(glob).groupby("key").agg(...) / .sort("val") /
                  .shuffle(seed=0), .to_arrow()
DuckDB and Daft are optional (pip install duckdb daft); an engine that does not import
is skipped and named.

Every run's result is checked: inside its process, each output batch goes through the
same few vectorised numpy passes for every engine (inside the timed region: they are
part of "consuming" the output), and the totals are compared with the input's manifest
in the parent: groupby: one row per distinct key, counts
summing to N, sum(sum) and sum(mean*count) equal to sum(val), the hottest key's count
and sum exact; sort: N rows, val non-decreasing across the whole output, sum(val) and
sum(key*val) (rows kept whole) equal to the input's; shuffle: N rows, sum(key) exact,
sum(val) and sum(key*val) equal, and the first 1,000 keys not the input's first 1,000.
A wrong result is reported as FAILED (no number is printed for it) and the script exits 1.

Targets (issue 17): streambatch groupby and sort <= 2x Polars and >= 5x faster than
Ray Data; shuffle <= Polars; sort at memory_budget=256 MiB <= 3x Polars with peak
memory <= (budget + baseline) x 1.25, baseline = processes in the tree at the peak x
the PSS of an idle interpreter that imported streambatch and pyarrow.
Judged on the wall time of the fresh process; the job time (after imports and engine
init, to the last row consumed) is printed too. Ratios are the median over the rounds
of the ratio between two engines within one round (machines here are shared: a busy
spell then hits both sides of a ratio alike); each run's line shows the load average.
A run that fails or times out (--timeout) is reported with its error and the script
exits 1; the other engines go on.

Profiling (--profile DIR): each streambatch op in a fresh process under
`py-spy record --subprocesses --function` (every thread of every process; py-spy is
not a dependency: `pip install py-spy`, pass --py-spy PATH if it is not on PATH), the
top functions by self and inclusive CPU seconds, imports left out; the speedscope
files stay in DIR. Without py-spy, cProfile of the driver's main thread only (the
exchange's work runs on threads and in workers, so that shows little).

    python benchmarks/all_to_all.py [--quick] [--runs 3] [--engines ...] [--ops ...]
    python benchmarks/all_to_all.py --quick --profile DIR   # streambatch under py-spy
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _util  # noqa: E402
from _util import (  # noqa: E402
    MiB,
    cached_input,
    clean_env,
    fmt_mb,
    fmt_s,
    machine_summary,
    median,
    print_table,
    run_python,
)

DATA_VERSION = 1
SEED = 20250317
N_FILES = 8
N_KEYS = 200_000
ZIPF_A = 1.0
OPS = ("groupby", "sort", "shuffle")
ENGINES = ("streambatch", "streambatch-256", "polars", "ray", "duckdb", "daft")
OPTIONAL = {"duckdb": "duckdb", "daft": "daft", "ray": "ray", "polars": "polars"}


from _all_to_all_jobs import BUDGET, FIRST_KEYS, JOB_MARK, RES_MARK, job_code  # noqa: E402


# ------------------------------------------------------------------ own shared memory
def own_store_bytes():
    """Bytes in the shared-memory stores of the streambatch drivers this benchmark started
    (``/dev/shm/streambatch-<pid>-...``, <pid> a child of this process), in place of
    _util's machine-wide /dev/shm usage: other jobs on this machine (tests of other
    sessions) write /dev/shm too and would count as ours. Ray's object store shows in
    the PSS of the processes that map it (Pss_Shmem), not here."""
    import psutil

    mine = {str(c.pid) for c in psutil.Process().children()}
    total = 0
    try:
        entries = list(os.scandir(_util.SHM_DIR))
    except OSError:
        return None
    for d in entries:
        if d.name.startswith("streambatch-") and d.name.split("-")[1] in mine:
            try:
                total += sum(f.stat().st_blocks * 512 for f in os.scandir(d.path))
            except OSError:
                pass
    return total


# --------------------------------------------------------------------------- data
def ensure_data(data_dir, rows):
    """Generate the input once; return (dir, manifest with the reference sums)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    d = os.path.join(data_dir, f"all_to_all_{rows}_v{DATA_VERSION}")
    man = cached_input(d, SEED, DATA_VERSION)
    if man is not None:
        return d, man
    t0 = time.perf_counter()
    p = 1.0 / np.arange(1, N_KEYS + 1) ** ZIPF_A
    p /= p.sum()
    key_of_rank = np.random.default_rng([SEED, 999]).permutation(N_KEYS).astype(np.int64)
    counts = np.zeros(N_KEYS, dtype=np.int64)
    sums = np.zeros(N_KEYS)
    sum_key, sum_val, sum_kv = 0, 0.0, 0.0
    first_keys = None
    per_file = [rows // N_FILES + (1 if i < rows % N_FILES else 0) for i in range(N_FILES)]
    for fi, n in enumerate(per_file):
        rng = np.random.default_rng([SEED, fi])
        keys = key_of_rank[rng.choice(N_KEYS, n, p=p)]
        val = rng.standard_normal(n)
        s = pc.binary_join_element_wise("user-", pc.cast(pa.array(keys), pa.string()), "")
        t = pa.table({"key": keys, "val": val, "s": s})
        pq.write_table(t, os.path.join(d, f"data-{fi:02d}.parquet"))
        np.add.at(counts, keys, 1)
        np.add.at(sums, keys, val)
        sum_key += int(keys.sum())
        sum_val += float(val.sum())
        sum_kv += float((keys.astype(np.float64) * val).sum())
        if first_keys is None:
            first_keys = keys[:FIRST_KEYS].tolist()
    hot = int(np.argmax(counts))
    man = {
        "version": DATA_VERSION, "seed": SEED, "files": N_FILES, "rows": rows,
        "distinct_keys": int((counts > 0).sum()), "hot_key": hot, "hot_count": int(counts[hot]),
        "hot_sum": float(sums[hot]), "sum_key": sum_key, "sum_val": sum_val, "sum_kv": sum_kv,
        "first_keys": first_keys,
        "disk_bytes": sum(os.path.getsize(q) for q in glob.glob(os.path.join(d, "*.parquet"))),
        "mem_bytes": pq.read_table(d).nbytes,
    }
    with open(os.path.join(d, "_manifest.json"), "w") as f:
        json.dump(man, f)
    print(f"generated {d} in {time.perf_counter() - t0:.1f} s", flush=True)
    return d, man


def warm_page_cache(d):
    for q in sorted(glob.glob(os.path.join(d, "*.parquet"))):
        with open(q, "rb") as f:
            while f.read(16 * MiB):
                pass


def _parse(stdout, mark, conv):
    for ln in stdout.splitlines():
        if ln.startswith(mark):
            return conv(ln[len(mark):])
    return None


def verify(op, r, man):
    """None when the result matches the input's manifest, else what is wrong."""
    if r is None:
        return "no result line printed"
    n = man["rows"]
    close = lambda a, b: math.isclose(a, b, rel_tol=1e-7, abs_tol=1e-6 * math.sqrt(n))  # noqa: E731
    if op == "groupby":
        if r["rows"] != man["distinct_keys"]:
            return f"{r['rows']} groups, {man['distinct_keys']} distinct keys"
        if r["unique_keys"] != r["rows"]:
            return f"{r['rows']} groups but {r['unique_keys']} distinct keys among them"
        if r["sum_count"] != n:
            return f"counts sum to {r['sum_count']}, {n} rows"
        if not close(r["sum_sum"], man["sum_val"]):
            return f"sum of sum(val) {r['sum_sum']!r} != sum(val) {man['sum_val']!r}"
        if not close(r["sum_meancount"], man["sum_val"]):
            return f"sum of mean*count {r['sum_meancount']!r} != sum(val) {man['sum_val']!r}"
        if r["hot_count"] != man["hot_count"] or not close(r["hot_sum"] or 0.0, man["hot_sum"]):
            return (f"hot key {man['hot_key']}: count {r['hot_count']} sum {r['hot_sum']}, "
                    f"expected {man['hot_count']} / {man['hot_sum']}")
        return None
    if r["rows"] != n:
        return f"{r['rows']} rows, input has {n}"
    if r["sum_key"] != man["sum_key"]:
        return f"sum(key) {r['sum_key']} != {man['sum_key']}"
    if not close(r["sum_val"], man["sum_val"]):
        return f"sum(val) {r['sum_val']!r} != {man['sum_val']!r}"
    if not close(r["sum_kv"], man["sum_kv"]):
        return f"sum(key*val) {r['sum_kv']!r} != {man['sum_kv']!r} (rows came apart)"
    if op == "sort" and not r["sorted"]:
        return "output not sorted by val"
    if op == "shuffle":
        same = sum(a == b for a, b in zip(r["first_keys"], man["first_keys"], strict=False))
        if same > len(man["first_keys"]) // 2:
            return f"not shuffled: {same} of the first {len(man['first_keys'])} keys in input order"
    return None


def available(engine):
    mod = OPTIONAL.get(engine)
    if mod is None:
        return True
    r = subprocess.run([sys.executable, "-c", f"import {mod}"], capture_output=True, env=clean_env(),
                       cwd=os.path.dirname(sys.executable))
    return r.returncode == 0


# --------------------------------------------------------------------------- profile
def profile(args, in_dir, man, cores):
    """streambatch's ops in a fresh process each under py-spy (all processes of the tree,
    samples aggregated by function); cProfile of the driver process without py-spy."""
    os.makedirs(args.profile, exist_ok=True)
    spy = args.py_spy or shutil.which("py-spy")
    cells = [(op, e) for e in ("streambatch", "streambatch-256") if e in args.engines
             for op in args.ops if e == "streambatch" or op == "sort"]
    for op, engine in cells:
        code = job_code(engine, op, in_dir, man, cores)
        script = os.path.join(args.profile, f"job_{engine}_{op}.py")
        with open(script, "w") as f:
            f.write(code)
        t0 = time.perf_counter()
        if spy:
            raw = os.path.join(args.profile, f"{engine}_{op}_{man['rows']}.speedscope.json")
            argv = [spy, "record", "--subprocesses", "--function", "--nonblocking", "--rate",
                    str(args.rate), "--format", "speedscope", "-o", raw, "--", sys.executable, script]
        else:
            raw = os.path.join(args.profile, f"{engine}_{op}_{man['rows']}.prof")
            argv = [sys.executable, "-m", "cProfile", "-o", raw, script]
        p = subprocess.run(argv, capture_output=True, text=True, env=clean_env(), timeout=args.timeout,
                           cwd=in_dir)
        wall = time.perf_counter() - t0
        r = _parse(p.stdout, RES_MARK, json.loads)
        # py-spy exits 0 whatever its child did: a missing result line is the failure
        err = None if r is not None else "\n   ".join(p.stderr.strip().splitlines()[-6:])
        bad = err or verify(op, r, man)
        print(f"\n== profile {engine} {op} ({man['rows']:,} rows): wall {wall:.1f} s (under the profiler)"
              + (f"\n   FAILED: {bad}" if bad else ""), flush=True)
        if spy and os.path.exists(raw):
            _report_spy(raw, args.top)
        elif os.path.exists(raw):
            import pstats

            pstats.Stats(raw).sort_stats("tottime").print_stats(args.top)


def _report_spy(path, top):
    """Top functions by own (self) and inclusive CPU seconds over every thread of every
    process, from py-spy's speedscope output; stacks under an import are summed apart."""
    with open(path) as f:
        doc = json.load(f)
    frames = doc["shared"]["frames"]
    self_s, incl_s, threads = {}, {}, {}
    imports = total = 0.0
    for prof in doc["profiles"]:
        name = " ".join(prof["name"].replace("Thread ", "").split()[1:3])  # pid tid "name"
        for stack, w in zip(prof["samples"], prof["weights"], strict=True):
            total += w
            threads[name] = threads.get(name, 0.0) + w
            if any(frames[i]["name"] == "_find_and_load" for i in stack):
                imports += w
                continue
            stack = [i for i in stack if not frames[i]["name"].startswith("process ")]
            if stack:
                self_s[stack[-1]] = self_s.get(stack[-1], 0.0) + w
            for i in set(stack):
                incl_s[i] = incl_s.get(i, 0.0) + w
    print(f"   {total:.1f} CPU-active s sampled ({imports:.1f} s importing); per thread: "
          + ", ".join(f"{k} {v:.1f} s" for k, v in sorted(threads.items(), key=lambda kv: -kv[1])[:8]))
    for title, d in (("self", self_s), ("inclusive", incl_s)):
        print(f"   top by {title} time (imports left out):")
        for i, sec in sorted(d.items(), key=lambda kv: -kv[1])[:top]:
            fr = frames[i]
            print(f"     {sec:7.2f} s  {fr['name']}  {_short_path(fr['file'])}:{fr['line']}")


def _short_path(path):
    for marker in ("site-packages/", os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + "/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


# --------------------------------------------------------------------------- main
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000_000, help="input rows (default 10,000,000)")
    ap.add_argument("--quick", action="store_true", help="1,000,000 rows, 1 run")
    ap.add_argument("--runs", type=int, default=None, help="rounds; medians reported (default 3; --quick: 1)")
    ap.add_argument("--engines", default=",".join(ENGINES), help=f"comma list among {','.join(ENGINES)}")
    ap.add_argument("--ops", default=",".join(OPS), help=f"comma list among {','.join(OPS)}")
    ap.add_argument("--skip-ray", action="store_true", help="leave Ray Data out")
    ap.add_argument("--cores", type=int, default=os.cpu_count(), help="Ray's num_cpus (default: all)")
    ap.add_argument("--data-dir", default="bench-data", help="where the input is cached (default ./bench-data)")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per run before it counts as failed")
    ap.add_argument("--profile", metavar="DIR", help="instead of the benchmark: profile streambatch's ops "
                    "(py-spy over the process tree if found, else cProfile of the driver), outputs in DIR")
    ap.add_argument("--py-spy", metavar="PATH", help="py-spy executable (default: on PATH)")
    ap.add_argument("--rate", type=int, default=100, help="py-spy samples per second (default 100)")
    ap.add_argument("--top", type=int, default=15, help="profile: functions listed (default 15)")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    ap.add_argument("-q", "--quiet", action="store_true", help="no per-run lines")
    args = ap.parse_args(argv)
    rows = 1_000_000 if args.quick and args.rows == 10_000_000 else args.rows
    runs = args.runs or (1 if args.quick else 3)
    engines = [e for e in args.engines.split(",") if e and not (args.skip_ray and e == "ray")]
    args.ops = [o for o in args.ops.split(",") if o]
    bad = (set(engines) - set(ENGINES)) | (set(args.ops) - set(OPS))
    if bad:
        ap.error(f"unknown engine(s)/op(s): {sorted(bad)}")

    _util.shm_used_bytes = own_store_bytes  # the "shm" and "held" columns: our stores only
    os.makedirs(args.data_dir, exist_ok=True)
    in_dir, man = ensure_data(os.path.abspath(args.data_dir), rows)
    warm_page_cache(in_dir)
    print(f"all-to-all: {man['files']} files, {man['rows']:,} rows, {man['distinct_keys']:,} distinct keys "
          f"(hottest {man['hot_count']:,} rows), {man['disk_bytes'] / 1e6:.0f} MB on disk, "
          f"{man['mem_bytes'] / 1e6:.0f} MB in memory; {machine_summary()}; page cache warm", flush=True)
    # The jobs run in the data directory (a `python -c` puts its working directory first on
    # sys.path), so they import the streambatch installed for sys.executable, never a
    # source tree that happens to be the working directory.
    where = subprocess.run([sys.executable, "-c", "import streambatch.operators as o; print(o.__file__)"],
                           capture_output=True, text=True, env=clean_env(), cwd=in_dir).stdout.strip()
    print(f"python {sys.executable}; streambatch from {os.path.dirname(os.path.dirname(where))}", flush=True)
    if args.profile:
        args.engines = engines
        profile(args, in_dir, man, args.cores)
        return 0

    missing = [e for e in engines if not available(e)]
    if missing:
        print(f"not installed, left out: {', '.join(missing)}", flush=True)
    engines = [e for e in engines if e not in missing]
    cells = [(op, e) for op in args.ops for e in engines if not (e == "streambatch-256" and op != "sort")]

    base = []
    if "streambatch-256" in engines and "sort" in args.ops:
        for _ in range(3):
            base.append(run_python(job_code("baseline", "", in_dir, man, args.cores), full_interval=0.05,
                                   cwd=in_dir)
                        .check("baseline").mem)
    base_pss = median([m.pss for m in base])
    base_rss = median([m.rss for m in base])
    if base:
        print(f"  interpreter baseline (import streambatch, pyarrow): RSS {fmt_mb(base_rss)} MB, "
              f"PSS {fmt_mb(base_pss)} MB", flush=True)

    res = {c: [] for c in cells}
    failures = {}
    for rnd in range(runs):
        for op, e in cells:
            if (op, e) in failures:
                continue
            r = run_python(job_code(e, op, in_dir, man, args.cores), timeout=args.timeout,
                           full_interval=0.1, scan_interval=0.25, cwd=in_dir)
            result = _parse(r.stdout, RES_MARK, json.loads)
            if r.rc != 0:
                tail = (r.stderr.strip().splitlines() or ["(no stderr)"])[-12:]
                why = f"exit {r.rc}" + (" (timed out)" if r.wall_s >= args.timeout else "") + ": " + "\n    ".join(tail)
            else:
                why = verify(op, result, man)
            m = r.mem
            if why:
                failures[(op, e)] = f"run {rnd + 1}: {why}"
            else:
                res[(op, e)].append({"round": rnd, "loadavg": os.getloadavg()[0], "wall_s": r.wall_s, "job_s": _parse(r.stdout, JOB_MARK, float),
                                     "rss": m.rss, "pss": m.pss, "held": m.held, "shm": m.shm,
                                     "nprocs_at_pss_peak": m.nprocs_at_pss_peak, "max_nprocs": m.max_nprocs})
            if not args.quiet:
                print(f"  round {rnd + 1}/{runs} {op:8s} {e:16s} wall {r.wall_s:7.2f} s"
                      + (f"  FAILED: {why}" if why else
                         f" (job {fmt_s(res[(op, e)][-1]['job_s'], 2)} s)  RSS {fmt_mb(m.rss)} MB"
                         f"  PSS {fmt_mb(m.pss)} MB  held {fmt_mb(m.held)} MB  procs {m.nprocs_at_pss_peak}/{m.max_nprocs}")
                      + f"  loadavg {os.getloadavg()[0]:.1f}"
                      + (f"  LINGERING {r.lingering}" if r.lingering else ""), flush=True)

    summ = {}
    for c, recs in res.items():
        if recs and c not in failures:
            summ[c] = {k: median([x[k] for x in recs]) for k in ("wall_s", "job_s", "rss", "pss", "held")}
            summ[c]["max_pss"] = max(x["pss"] or 0 for x in recs)
            summ[c]["max_rss"] = max(x["rss"] or 0 for x in recs)
            summ[c]["nprocs"] = max(x["nprocs_at_pss_peak"] for x in recs)
            summ[c]["n"] = len(recs)

    def ratio(op, e, other, key="wall_s"):
        """Median over the rounds of this engine's time / the other's in the same round
        (the two ran minutes apart at most, so a busy spell of the machine hits both)."""
        if (op, e) not in summ or (op, other) not in summ:
            return None
        theirs = {x["round"]: x[key] for x in res[(op, other)]}
        return median([x[key] / theirs[x["round"]] for x in res[(op, e)]
                       if x[key] and theirs.get(x["round"])])

    print()
    print(f"{man['rows']:,} rows, medians of {runs} fresh-process run(s) per engine and op "
          f"(x Polars: time / Polars time; Ray / x: Ray time / this time; ratios: medians over the rounds"
          f" of the ratio within a round)")
    table = []
    for op, e in cells:
        s = summ.get((op, e))
        if s is None:
            table.append([op, e, "FAILED"] + ["-"] * 8)
            continue
        xp, xpj = ratio(op, e, "polars"), ratio(op, e, "polars", "job_s")
        rr, rrj = ratio(op, "ray", e), ratio(op, "ray", e, "job_s")
        held = fmt_mb(s["held"]) if e.startswith("streambatch") else "-"
        table.append([op, e, fmt_s(s["wall_s"], 2), fmt_s(s["job_s"], 2), fmt_mb(s["rss"]), fmt_mb(s["pss"]), held,
                      "-" if xp is None else f"{xp:.2f}", "-" if xpj is None else f"{xpj:.2f}",
                      "-" if rr is None else f"{rr:.1f}", "-" if rrj is None else f"{rrj:.1f}"])
    print_table(["op", "engine", "wall s", "job s", "peak RSS MB", "peak PSS MB", "held MB", "x Polars (wall)",
                 "x Polars (job)", "Ray / x (wall)", "Ray / x (job)"], table)
    print("  (wall: the whole fresh process; job: after imports and engine init, to the last row consumed;"
          " memory: peak of the process tree's sum; held: PSS less shared-memory pages plus the bytes in"
          " streambatch's /dev/shm store, each page once)")

    print()
    verdicts = {}

    def verdict(name, ok, detail):
        verdicts[name] = ok
        print(f"target {name:40s}: {'-' if ok is None else 'MET' if ok else 'NOT MET'} ({detail})")

    for op in ("groupby", "sort"):
        if op in args.ops:
            x, xj = ratio(op, "streambatch", "polars"), ratio(op, "streambatch", "polars", "job_s")
            verdict(f"{op} <= 2x Polars", None if x is None else x <= 2,
                    f"streambatch/polars = {fmt_s(x, 2)} wall, {fmt_s(xj, 2)} job")
            y, yj = ratio(op, "ray", "streambatch"), ratio(op, "ray", "streambatch", "job_s")
            verdict(f"{op} >= 5x faster than Ray Data", None if y is None else y >= 5,
                    f"ray/streambatch = {fmt_s(y, 1)} wall, {fmt_s(yj, 1)} job")
    if "shuffle" in args.ops:
        x, xj = ratio("shuffle", "streambatch", "polars"), ratio("shuffle", "streambatch", "polars", "job_s")
        verdict("shuffle <= Polars", None if x is None else x <= 1,
                f"streambatch/polars = {fmt_s(x, 2)} wall, {fmt_s(xj, 2)} job")
    if "sort" in args.ops and "streambatch-256" in engines:
        x, xj = ratio("sort", "streambatch-256", "polars"), ratio("sort", "streambatch-256", "polars", "job_s")
        verdict("sort at 256 MiB <= 3x Polars", None if x is None else x <= 3,
                f"streambatch-256/polars = {fmt_s(x, 2)} wall, {fmt_s(xj, 2)} job")
        s = summ.get(("sort", "streambatch-256"))
        if s and base_pss:
            lim = 1.25 * (BUDGET + s["nprocs"] * base_pss)
            verdict("sort at 256 MiB peak <= (budget+base)x1.25", s["max_pss"] <= lim,
                    f"worst PSS {fmt_mb(s['max_pss'])} MB (RSS {fmt_mb(s['max_rss'])}, held "
                    f"{fmt_mb(s['held'])}) vs 1.25 x (256 + {s['nprocs']} x {fmt_mb(base_pss)}) = {fmt_mb(lim)} MB")
        else:
            verdict("sort at 256 MiB peak <= (budget+base)x1.25", None, "no successful run")
    if failures:
        print()
        for (op, e), why in failures.items():
            print(f"FAILED: {op} {e}: {why}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"manifest": {k: v for k, v in man.items() if k != "first_keys"},
                       "runs": {f"{op}/{e}": v for (op, e), v in res.items()},
                       "summary": {f"{op}/{e}": v for (op, e), v in summ.items()},
                       "failures": {f"{op}/{e}": v for (op, e), v in failures.items()},
                       "baseline_pss": base_pss, "verdicts": verdicts}, f, indent=2)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
