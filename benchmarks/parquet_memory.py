"""Parquet -> map_batches -> parquet under a memory budget: peak memory and throughput.

Input: ~1 GiB (in-memory Arrow size) of parquet, generated once, deterministically
(numpy seed), and cached under --data-dir (default ./bench-data): 8 files, columns
a:int64, b:float64, c:int32, d:float32, s:string, row groups of ~32 MiB in memory.

Each run is a fresh Python process; the benchmark times the whole subprocess and
samples its process tree (the process and all its descendants) with psutil:
  RSS sum  every ~10 ms (over-counts pages shared between processes: shared
           libraries, fork copy-on-write pages, /dev/shm blocks mapped by a
           producer and a consumer);
  PSS sum  and USS sum every ~50 ms (PSS counts each mapped page once overall; USS
           only pages private to one process);
  /dev/shm growth  (files in /dev/shm are RAM; one that no process maps at that
           instant is in nobody's RSS/PSS, so "PSS + shm" is also reported as an
           upper bound - it counts mapped shm pages twice).

Engines:
  streambatch  sb.init(memory_budget=BUDGET)
               sb.read_parquet(dir).map_batches(fn, batch_format="pyarrow").write_parquet(out)
  pyarrow      per file: ParquetFile.iter_batches -> fn -> ParquetWriter (one thread of
               Python, pyarrow's own threads for decoding)
  ray          (--ray) ray.data.read_parquet(dir).map_batches(fn, batch_format="pyarrow")
               .write_parquet(out), ray.init(num_cpus=2, object_store_memory=BUDGET)
with fn(t) = t.append_column("e", a * 2 + b) (pyarrow.compute).

Interpreter baseline: a fresh python that imports streambatch + pyarrow and does
nothing. "budget + baseline" = memory budget + (processes in the streambatch tree
at its peak) x (baseline of one interpreter).

Every run's output is checked: row count == input rows, sum(a) identical, and
sum(e) == 2*sum(a) + sum(b) (relative 1e-9); a mismatch aborts the benchmark.

Targets (issue): streambatch peak memory <= budget + baseline; streambatch
throughput within 20% of the pyarrow loop.

    python benchmarks/parquet_memory.py [--runs 3] [--data-dir bench-data] [--ray]
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _util import (  # noqa: E402
    GiB,
    MiB,
    cached_input,
    fmt_mb,
    fmt_s,
    machine_summary,
    median,
    print_table,
    run_python,
)

DATA_VERSION = 1
SEED = 20240501
N_FILES = 8
RG_BYTES = 32 * MiB
THROUGHPUT_TOLERANCE = 0.20  # streambatch within 20% of pyarrow
JOB_MARK = "__JOB_S__"
INFO_MARK = "__INFO__"

FN_SRC = '''
import pyarrow.compute as pc
def fn(t):
    return t.append_column("e", pc.add(pc.multiply(t["a"], 2), t["b"]))
'''


# --------------------------------------------------------------------------- data
def _gen_rowgroup(rng, n, vocab):
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    return pa.table({
        "a": pa.array(rng.integers(0, 1_000_000, n, dtype=np.int64)),
        "b": pa.array(rng.standard_normal(n)),
        "c": pa.array(rng.integers(-(2**31), 2**31 - 1, n, dtype=np.int32)),
        "d": pa.array(rng.random(n, dtype=np.float32)),
        "s": pc.take(vocab, pa.array(rng.integers(0, len(vocab), n, dtype=np.int32))),
    })


def ensure_data(data_dir, size_bytes):
    """Generate the input once; return its manifest (rows, bytes, sums)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    d = os.path.join(data_dir, f"parquet_{size_bytes // MiB}MiB_v{DATA_VERSION}")
    man = cached_input(d, SEED, DATA_VERSION)
    if man is not None:
        return d, man
    t0 = time.perf_counter()
    rng0 = np.random.default_rng(SEED)
    # 4096 words of 4..28 letters (avg ~16): dictionary-friendly strings.
    lens = rng0.integers(4, 29, 4096)
    letters = rng0.integers(97, 123, int(lens.sum()), dtype=np.uint8).tobytes().decode()
    offs = np.concatenate([[0], np.cumsum(lens)])
    vocab = pa.array([letters[offs[i]:offs[i + 1]] for i in range(len(lens))])
    pilot = _gen_rowgroup(np.random.default_rng(SEED), 100_000, vocab)
    rows_per_rg = max(1, int(RG_BYTES / (pilot.nbytes / pilot.num_rows)))
    rgs_per_file = max(1, round(size_bytes / N_FILES / RG_BYTES))
    rows = nbytes = sum_a = 0
    sum_b = 0.0
    for fi in range(N_FILES):
        rng = np.random.default_rng([SEED, fi])
        path = os.path.join(d, f"data-{fi:02d}.parquet")
        with pq.ParquetWriter(path, pilot.schema) as w:
            for _ in range(rgs_per_file):
                t = _gen_rowgroup(rng, rows_per_rg, vocab)
                w.write_table(t, row_group_size=t.num_rows)
                rows += t.num_rows
                nbytes += t.nbytes
                sum_a += pc.sum(t["a"]).as_py()
                sum_b += pc.sum(t["b"]).as_py()
    man = {
        "version": DATA_VERSION, "seed": SEED, "files": N_FILES, "rows": rows, "bytes": nbytes,
        "rows_per_row_group": rows_per_rg, "row_groups_per_file": rgs_per_file,
        "sum_a": sum_a, "sum_b": sum_b,
        "disk_bytes": sum(os.path.getsize(p) for p in glob.glob(os.path.join(d, "*.parquet"))),
    }
    with open(os.path.join(d, "_manifest.json"), "w") as f:
        json.dump(man, f, indent=2)
    print(f"generated {d} in {time.perf_counter() - t0:.1f} s", flush=True)
    return d, man


def warm_page_cache(d):
    for p in sorted(glob.glob(os.path.join(d, "*.parquet"))):
        with open(p, "rb") as f:
            while f.read(16 * MiB):
                pass


def verify_output(engine, out_dir, man, require_success):
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    files = sorted(glob.glob(os.path.join(out_dir, "**", "*.parquet"), recursive=True))
    if not files:
        raise SystemExit(f"FAILED: {engine}: no parquet files written under {out_dir}")
    if require_success and not os.path.exists(os.path.join(out_dir, "_SUCCESS")):
        raise SystemExit(f"FAILED: {engine}: {out_dir}/_SUCCESS missing after a successful job")
    rows = sum_a = 0
    sum_e = 0.0
    for p in files:
        t = pq.read_table(p, columns=["a", "e"])
        rows += t.num_rows
        if t.num_rows:
            sum_a += pc.sum(t["a"]).as_py()
            sum_e += pc.sum(t["e"]).as_py()
    if rows != man["rows"]:
        raise SystemExit(f"FAILED: {engine}: output has {rows} rows, input has {man['rows']} "
                         f"({len(files)} files under {out_dir})")
    if sum_a != man["sum_a"]:
        raise SystemExit(f"FAILED: {engine}: sum(a) of output {sum_a} != input {man['sum_a']} "
                         "(rows lost/duplicated although the count matches)")
    exp_e = 2 * man["sum_a"] + man["sum_b"]
    if not math.isclose(sum_e, exp_e, rel_tol=1e-9):
        raise SystemExit(f"FAILED: {engine}: sum(e) of output {sum_e!r} != 2*sum(a)+sum(b) = {exp_e!r}")
    return len(files)


# --------------------------------------------------------------------------- jobs
def job_code(engine, in_dir, out_dir, budget, batch_size):
    bs = "" if batch_size is None else f", batch_size={batch_size}"
    head = FN_SRC + f"\nimport sys, time\nIN, OUT, BUDGET = {in_dir!r}, {out_dir!r}, {budget}\n"
    tail = f'\nsys.stdout.write("\\n{JOB_MARK}%.6f\\n" % (time.perf_counter() - _t0))\n'
    if engine == "streambatch":
        body = f'''
import streambatch as sb
sb.init(memory_budget=BUDGET)
_t0 = time.perf_counter()
ds = sb.read_parquet(IN).map_batches(fn, batch_format="pyarrow"{bs})
ds.write_parquet(OUT)
''' + tail + f'''
try:
    st = ds.stats()
    sys.stdout.write("\\n{INFO_MARK}" + repr({{"peak_buffered_bytes": st.peak_buffered_bytes, "memory_budget": st.memory_budget}}) + "\\n")
except Exception as e:  # stats are informational only
    sys.stdout.write("\\n{INFO_MARK}" + repr({{"stats_error": repr(e)}}) + "\\n")
'''
    elif engine == "pyarrow":
        kw = "" if batch_size is None else f"batch_size={batch_size}"
        body = f'''
import glob, os
import pyarrow as pa, pyarrow.parquet as pq
_t0 = time.perf_counter()
os.makedirs(OUT, exist_ok=True)
for i, path in enumerate(sorted(glob.glob(os.path.join(IN, "*.parquet")))):
    pf = pq.ParquetFile(path)
    w = None
    for batch in pf.iter_batches({kw}):
        t = fn(pa.Table.from_batches([batch]))
        if w is None:
            w = pq.ParquetWriter(os.path.join(OUT, "part-%05d.parquet" % i), t.schema)
        w.write_table(t)
    if w is not None:
        w.close()
''' + tail
    elif engine == "ray":
        body = f'''
import ray
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
         object_store_memory=max(BUDGET, 80 * 2**20))
ctx = ray.data.DataContext.get_current()
ctx.enable_progress_bars = False
_t0 = time.perf_counter()
ray.data.read_parquet(IN).map_batches(fn, batch_format="pyarrow"{bs}).write_parquet(OUT)
''' + tail + "\nray.shutdown()\n"
    elif engine == "baseline":
        body = '''
import streambatch, pyarrow, pyarrow.parquet, pyarrow.compute
time.sleep(0.5)  # let the sampler see the settled interpreter
'''
    else:
        raise ValueError(engine)
    return head + body


def _parse(stdout, mark, conv):
    for ln in stdout.splitlines():
        if ln.startswith(mark):
            return conv(ln[len(mark):])
    return None


def run_engine(engine, runs, in_dir, out_root, man, budget, batch_size, verbose):
    out_dir = os.path.join(out_root, engine)
    res_list = []
    for i in range(runs):
        if os.path.exists(out_dir):
            shutil.rmtree(out_dir)
        code = job_code(engine, in_dir, out_dir, budget, batch_size)
        r = run_python(code, timeout=1800, full_interval=0.05).check(f"{engine} run {i + 1}")
        nfiles = verify_output(engine, out_dir, man, require_success=(engine == "streambatch"))
        job_s = _parse(r.stdout, JOB_MARK, float)
        info = _parse(r.stdout, INFO_MARK, lambda s: s)
        m = r.mem
        rec = {
            "wall_s": r.wall_s, "job_s": job_s, "rss": m.rss, "pss": m.pss, "uss": m.uss,
            "shm": m.shm, "pss_plus_shm": m.pss_plus_shm, "nprocs_at_rss_peak": m.nprocs_at_rss_peak,
            "nprocs_at_pss_peak": m.nprocs_at_pss_peak, "max_nprocs": m.max_nprocs,
            "out_files": nfiles, "info": info, "lingering": r.lingering,
        }
        res_list.append(rec)
        if verbose:
            print(f"  {engine:11s} run {i + 1}/{runs}: wall {r.wall_s:6.2f} s (job {fmt_s(job_s, 2)} s)"
                  f"  RSS {fmt_mb(m.rss)} MB  PSS {fmt_mb(m.pss)} MB  USS {fmt_mb(m.uss)} MB"
                  f"  shm+{fmt_mb(m.shm)} MB  procs@peak {m.nprocs_at_rss_peak} (max {m.max_nprocs})"
                  f"  files {nfiles}" + (f"  {info}" if info else "")
                  + (f"  LINGERING {r.lingering}" if r.lingering else ""), flush=True)
    shutil.rmtree(out_dir, ignore_errors=True)
    return res_list


def summarize(recs):
    med = lambda k: median([r[k] for r in recs])  # noqa: E731
    return {k: med(k) for k in ("wall_s", "job_s", "rss", "pss", "uss", "shm", "pss_plus_shm")} | {
        "max_rss": max(r["rss"] or 0 for r in recs),
        "max_pss": max(r["pss"] or 0 for r in recs),
        "nprocs_at_rss_peak": max(r["nprocs_at_rss_peak"] for r in recs),
        "nprocs_at_pss_peak": max(r["nprocs_at_pss_peak"] for r in recs),
        "max_nprocs": max(r["max_nprocs"] for r in recs),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="runs per engine; medians reported (default 3)")
    ap.add_argument("--data-dir", default="bench-data", help="where input is cached and output written (default ./bench-data)")
    ap.add_argument("--size-mb", type=int, default=1024, help="in-memory size of the input in MiB (default 1024)")
    ap.add_argument("--budget-mb", type=int, default=256, help="streambatch memory_budget in MiB (default 256)")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="batch size for map_batches / iter_batches (default: each engine's own default)")
    ap.add_argument("--engines", default="streambatch,pyarrow", help="comma list among streambatch,pyarrow,ray")
    ap.add_argument("--ray", action="store_true", help="also run Ray Data with the same pipeline")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    ap.add_argument("-q", "--quiet", action="store_true", help="no per-run lines")
    args = ap.parse_args(argv)
    engines = [e for e in args.engines.split(",") if e]
    if args.ray and "ray" not in engines:
        engines.append("ray")
    bad = set(engines) - {"streambatch", "pyarrow", "ray"}
    if bad:
        ap.error(f"unknown engine(s): {sorted(bad)}")

    budget = args.budget_mb * MiB
    os.makedirs(args.data_dir, exist_ok=True)
    in_dir, man = ensure_data(os.path.abspath(args.data_dir), args.size_mb * MiB)
    out_root = os.path.join(os.path.abspath(args.data_dir), "out")
    warm_page_cache(in_dir)
    in_bytes = man["bytes"]
    print(f"parquet memory: {man['files']} files, {man['rows']:,} rows, {in_bytes / GiB:.2f} GiB in memory, "
          f"{man['disk_bytes'] / GiB:.2f} GiB on disk, row groups of {man['rows_per_row_group']:,} rows "
          f"(~{RG_BYTES // MiB} MiB); budget {args.budget_mb} MiB; {machine_summary()}; page cache warm",
          flush=True)

    # Interpreter baseline: fresh python importing streambatch + pyarrow, doing nothing.
    base = []
    if "streambatch" in engines:
        for _ in range(3):
            r = run_python(job_code("baseline", in_dir, "", budget, None), full_interval=0.05).check("baseline")
            base.append(r.mem)
    base_rss = median([m.rss for m in base]) if base else None
    base_pss = median([m.pss for m in base]) if base else None
    base_uss = median([m.uss for m in base]) if base else None
    if base:
        print(f"  interpreter baseline (import streambatch, pyarrow): RSS {fmt_mb(base_rss)} MB, "
              f"PSS {fmt_mb(base_pss)} MB, USS {fmt_mb(base_uss)} MB", flush=True)

    results = {}
    for e in engines:
        recs = run_engine(e, args.runs, in_dir, out_root, man, budget, args.batch_size, not args.quiet)
        results[e] = {"runs": recs, "summary": summarize(recs)}

    print()
    rows = []
    pa_wall = results.get("pyarrow", {}).get("summary", {}).get("wall_s")
    for e in engines:
        s = results[e]["summary"]
        thr = in_bytes / s["wall_s"] / GiB
        thr_job = in_bytes / s["job_s"] / GiB if s["job_s"] else None
        rows.append([
            e, str(args.runs), fmt_s(s["wall_s"], 2), f"{thr:.3f}", "-" if thr_job is None else f"{thr_job:.3f}",
            "-" if not pa_wall else f"{pa_wall / s['wall_s']:.2f}",
            fmt_mb(s["rss"]), fmt_mb(s["pss"]), fmt_mb(s["uss"]), fmt_mb(s["shm"]), fmt_mb(s["pss_plus_shm"]),
            f"{s['nprocs_at_rss_peak']}/{s['max_nprocs']}",
        ])
    print_table(["engine", "runs", "median wall s", "GiB/s (wall)", "GiB/s (job)", "thr vs pyarrow",
                 "peak RSS MB", "peak PSS MB", "peak USS MB", "peak shm+ MB", "PSS+shm MB",
                 "procs@peak/max"], rows)
    print("  (memory columns: medians over runs of each run's peak of the process-tree sum;"
          " GiB/s (job) excludes interpreter start-up and imports)")

    ok_mem = ok_thr = None
    if "streambatch" in results:
        s = results["streambatch"]["summary"]
        n_rss, n_pss = s["nprocs_at_rss_peak"], s["nprocs_at_pss_peak"]
        lim_rss = budget + n_rss * base_rss
        lim_pss = budget + n_pss * base_pss
        print()
        print(f"streambatch peak memory vs budget + baseline (worst run; budget {args.budget_mb} MiB):")
        print(f"  RSS sum    : {fmt_mb(s['max_rss'])} MB vs {fmt_mb(budget)} + {n_rss} x {fmt_mb(base_rss)}"
              f" = {fmt_mb(lim_rss)} MB -> {'within' if s['max_rss'] <= lim_rss else 'OVER'}")
        print(f"  PSS sum    : {fmt_mb(s['max_pss'])} MB vs {fmt_mb(budget)} + {n_pss} x {fmt_mb(base_pss)}"
              f" = {fmt_mb(lim_pss)} MB -> {'within' if s['max_pss'] <= lim_pss else 'OVER'}")
        worst_ps = max(r["pss_plus_shm"] or 0 for r in results["streambatch"]["runs"])
        print(f"  PSS + shm  : {fmt_mb(worst_ps)} MB (upper bound) vs {fmt_mb(lim_pss)} MB -> "
              f"{'within' if worst_ps <= lim_pss else 'over'}")
        infos = [r["info"] for r in results["streambatch"]["runs"] if r["info"]]
        if infos:
            print(f"  engine-reported stats: {infos[-1]}")
        ok_mem = s["max_pss"] <= lim_pss
        print(f"target peak <= budget + baseline (PSS)     : {'MET' if ok_mem else 'NOT MET'}"
              f" (RSS: {'met' if s['max_rss'] <= lim_rss else 'not met'})")
        if pa_wall:
            ratio = pa_wall / s["wall_s"]  # streambatch throughput / pyarrow throughput
            ok_thr = ratio >= 1 - THROUGHPUT_TOLERANCE
            print(f"target throughput within 20% of pyarrow    : {'MET' if ok_thr else 'NOT MET'}"
                  f" (streambatch/pyarrow = {ratio:.2f})")
            if s["job_s"] and results["pyarrow"]["summary"]["job_s"]:
                print(f"  excluding start-up and imports: streambatch/pyarrow = "
                      f"{results['pyarrow']['summary']['job_s'] / s['job_s']:.2f}")
    for e in engines:
        ling = [r["lingering"] for r in results[e]["runs"] if r["lingering"]]
        if ling:
            print(f"note: {e}: processes alive after the job's process exited (terminated by the benchmark): {ling}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"manifest": man, "budget": budget,
                       "baseline": {"rss": base_rss, "pss": base_pss, "uss": base_uss},
                       "results": results, "targets": {"memory": ok_mem, "throughput": ok_thr}},
                      f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
