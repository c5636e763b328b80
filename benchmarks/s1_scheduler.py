"""S1 — scheduler microbenchmark: read -> CPU transform -> GPU-actor inference, sleep-based.

The three stages sleep instead of computing, but move real bytes, so the benchmark
measures scheduling (how the engine overlaps CPU and GPU stages, how it spends
its CPU slots, how it keeps memory within the budget) and runs the same on a
2-core machine as on a big one. The resources are logical: CPU=8, GPU=4 (no GPU
is needed; the "GPU" stage only sleeps).

Pipeline (identical in both engines, defaults in brackets):

  read       range(N, override_num_blocks=N).map_batches(produce, batch_size=None)
             one task per partition [N=80]: sleeps READ_S [1.0 s], then emits R rows
             [10] of ROW_BYTES [1 MiB] each (a uint8 tensor column, filled with a
             value derived from (part, row)) -> R MiB per partition, N*R MiB in all.
  transform  map_batches(transform, batch_size=None, num_cpus=1, concurrency=8)
             sleeps ROW_S [0.1 s] per row, returns the rows with every byte XOR 1
             (new 1 MiB rows). concurrency=8 caps nothing (CPU=8); it keeps the
             stage from being fused into the read in either engine (both refuse
             to fuse task stages with different concurrency), so there are three
             stages as in the paper's microbenchmark.
  inference  map_batches(Infer, batch_size=B [10], num_gpus=1, num_cpus=0,
             concurrency=4): an actor class, built once per actor; each call
             sleeps BATCH_S [1.25 s] (per batch, whatever its length: an engine
             that cuts batches short pays for it) and returns a small output per
             row: (part, row, checksum of the 1 MiB row, batch length, actor pid,
             CUDA_VISIBLE_DEVICES). num_cpus=0 so the GPU actors take no CPU slot
             (Ray's actors would otherwise hold 4 of the 8 CPUs).
  consumer   iter_batches(batch_size=None) in the driver, collecting the small rows.

Optimum (a lower bound on the job's wall time; efficiency = optimum / wall):

  CPU-seconds  C = N * READ_S + N * R * ROW_S
  GPU-seconds  G = nb * BATCH_S,  nb = ceil(N * R / B) full batches
  slots        S_cpu = 8 (CPU) - 4 actors * 0 CPUs,  S_gpu = 4
  head         READ_S + ROW_S: the first row cannot reach a GPU before it is read
               and transformed
  tail         BATCH_S: the last row's batch runs after the last CPU work ends
  optimum      max(C / S_cpu + BATCH_S, READ_S + ROW_S + ceil(nb / S_gpu) * BATCH_S)

With the defaults: C = 160 s (C/8 = 20 s), G = 100 s (80 batches / 4 GPUs x 1.25 s
= 25 s), optimum = max(21.25, 26.1) = 26.1 s: GPU-bound, with the CPU stages
needing ~80% of the CPU slots, so a scheduler that starves the GPUs (too few
reads admitted, slots stuck on the wrong stage) or that over-admits reads (memory
over the budget, or stalls when it is full) shows up directly in the efficiency.

Memory budgets [64, 128, 256, 2048 MiB], from "barely fits a few 10 MiB read
partitions" to "everything fits" (the read output and the transform output,
2 x 800 MiB, fit at once):
  streambatch  sb.init(num_cpus=8, num_gpus=4, memory_budget=BUDGET)
  ray          ray.init(num_cpus=8, num_gpus=4, object_store_memory=max(BUDGET, 75 MiB))
               and DataContext.override_object_store_memory_limit_fraction set so
               that Ray Data's own object-store limit is exactly BUDGET (by default
               Ray Data uses only 50% of the store; the store cannot be smaller
               than Ray's minimum of 75 MiB, so at a 64 MiB budget the store is
               75 MiB and Ray Data's limit 64 MiB).

Each run is a fresh Python process (``_util.run_python``), timed and its process
tree sampled: peak of the summed RSS (every 20 ms; new descendants looked for
every 250 ms), of the summed PSS (every 500 ms, --pss-interval; PSS counts
pages shared between processes once) and of what the tree holds ("held": the
summed PSS less its shared-memory pages, plus the growth of /dev/shm, so each
page counts once and a block in /dev/shm counts whether a process maps it or
not; PSS alone misses blocks no process maps). "job" is measured
inside the process, from building the dataset to the last output row consumed
(it includes starting workers and actors; it excludes interpreter start-up,
imports, and ray.init's cluster start). Efficiency uses the job time.

Every run's output is checked: exactly N*R rows, each (part, row) once, each
row's checksum equal to ROW_BYTES * (value(part, row) XOR 1) (so every byte went
through the read and the transform), at most 4 distinct actors, and, for
streambatch, each actor's CUDA_VISIBLE_DEVICES distinct. A wrong result aborts
with FAILED (exit status 1).

Targets (issue 3): >= 90% of optimum at every budget, never over budget (held by
the process tree <= budget + the engine's footprint, measured as the same job with
1 KiB rows: the same 13 processes without the data), ahead of Ray Data at every
budget. The table also shows the optimum within the budget (memory_optimum): at
the smallest budget no schedule can reach the plain optimum.

    python benchmarks/s1_scheduler.py [--quick] [--skip-ray] [--runs 1]
           [--budgets-mb 64,128,256,2048] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _util import (  # noqa: E402
    MiB,
    fmt_mb,
    fmt_s,
    machine_summary,
    median,
    print_table,
    run_python,
)

NUM_CPUS = 8
NUM_GPUS = 4
RAY_MIN_STORE = 75 * MiB  # ray_constants.OBJECT_STORE_MINIMUM_MEMORY_BYTES
EFFICIENCY_TARGET = 0.90
JOB_MARK = "__S1_JOB_S__"

DEFAULTS = dict(partitions=80, rows=10, row_bytes=1 * MiB, read_s=1.0, row_s=0.1,
                batch_rows=10, batch_s=1.25, budgets_mb=[64, 128, 256, 2048])
QUICK = dict(partitions=24, budgets_mb=[128])

# The UDFs, shared verbatim by both engines. Everything is a numpy batch.
UDF_SRC = '''
import os, time
import numpy as np

def value_of(part, row, rows):
    """The byte every position of row (part, row) holds after the read."""
    return (np.asarray(part, dtype=np.int64) * rows + np.asarray(row, dtype=np.int64)) % 251

def produce(batch):
    """Read stage: per input id, sleep READ_S and emit R rows of ROW_BYTES bytes."""
    R, W = P["rows"], P["row_bytes"]
    parts, rows, datas = [], [], []
    for pid in batch["id"]:
        time.sleep(P["read_s"])
        r = np.arange(R, dtype=np.int64)
        data = np.empty((R, W), dtype=np.uint8)
        data[:] = value_of(int(pid), r, R).astype(np.uint8)[:, None]
        parts.append(np.full(R, int(pid), dtype=np.int64))
        rows.append(r)
        datas.append(data)
    if not datas:
        return {"part": np.zeros(0, np.int64), "row": np.zeros(0, np.int64),
                "data": np.zeros((0, W), np.uint8)}
    return {"part": np.concatenate(parts), "row": np.concatenate(rows),
            "data": np.concatenate(datas)}

def transform(batch):
    """CPU stage: sleep ROW_S per row; new rows with every byte XOR 1."""
    n = len(batch["part"])
    time.sleep(n * P["row_s"])
    return {"part": batch["part"], "row": batch["row"],
            "data": np.bitwise_xor(batch["data"], np.uint8(1))}

class Infer:
    """GPU stage: built once per actor; sleeps BATCH_S per batch, small output."""

    def __init__(self, batch_s):
        self.batch_s = batch_s
        self.pid = os.getpid()
        self.cuda = os.environ.get("CUDA_VISIBLE_DEVICES", "")

    def __call__(self, batch):
        n = len(batch["part"])
        time.sleep(self.batch_s)
        data = batch["data"]
        return {"part": batch["part"], "row": batch["row"],
                "sum": data.sum(axis=1, dtype=np.uint64).astype(np.int64),
                "bsz": np.full(n, n, dtype=np.int64),
                "actor": np.full(n, self.pid, dtype=np.int64),
                "cuda": np.array([self.cuda] * n, dtype=object)}
'''

COLLECT_SRC = '''
def collect(batches):
    cols = {"part": [], "row": [], "sum": [], "bsz": [], "actor": [], "cuda": []}
    for b in batches:
        for k in cols:
            cols[k].extend(np.asarray(b[k]).tolist())
    return cols
'''


def job_code(engine, p, budget, result_path, trace=None, scheduler=None):
    head = (f"import json, sys, time\nP = {json.dumps(p)}\nBUDGET = {budget}\n"
            f"RESULT = {result_path!r}\n" + UDF_SRC + COLLECT_SRC)
    n_gpu_actors = NUM_GPUS
    if engine == "streambatch":
        tr = (f", trace={trace!r}" if trace else "") + (f", scheduler={scheduler!r}" if scheduler else "")
        body = f'''
def main():
    import streambatch as sb
    sb.init(num_cpus={NUM_CPUS}, num_gpus={NUM_GPUS}, memory_budget=BUDGET{tr})
    t0 = time.perf_counter()
    ds = (sb.range(P["partitions"], override_num_blocks=P["partitions"])
          .map_batches(produce, batch_size=None, batch_format="numpy")
          .map_batches(transform, batch_size=None, batch_format="numpy", num_cpus=1,
                       concurrency={NUM_CPUS})
          .map_batches(Infer, fn_constructor_args=(P["batch_s"],), batch_size=P["batch_rows"],
                       batch_format="numpy", num_gpus=1, num_cpus=0, concurrency={n_gpu_actors}))
    cols = collect(ds.iter_batches(batch_size=None, batch_format="numpy"))
    job = time.perf_counter() - t0
    sys.stdout.write("\\n{JOB_MARK}%.6f\\n" % job)
    info = {{}}
    try:
        st = ds.stats()
        info = {{"peak_buffered_bytes": st.peak_buffered_bytes, "memory_budget": st.memory_budget,
                 "stats": str(st)}}
    except Exception as e:  # stats are informational only
        info = {{"stats_error": repr(e)}}
    with open(RESULT, "w") as f:
        json.dump({{"cols": cols, "info": info}}, f)
'''
    elif engine == "ray":
        store = max(budget, RAY_MIN_STORE)
        body = f'''
def main():
    import logging
    import ray
    ray.init(address="local", num_cpus={NUM_CPUS}, num_gpus={NUM_GPUS}, object_store_memory={store},
             include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.override_object_store_memory_limit_fraction = BUDGET / {store}
    t0 = time.perf_counter()
    ds = (ray.data.range(P["partitions"], override_num_blocks=P["partitions"])
          .map_batches(produce, batch_size=None, batch_format="numpy")
          .map_batches(transform, batch_size=None, batch_format="numpy", num_cpus=1,
                       concurrency={NUM_CPUS})
          .map_batches(Infer, fn_constructor_args=(P["batch_s"],), batch_size=P["batch_rows"],
                       batch_format="numpy", num_gpus=1, num_cpus=0, concurrency={n_gpu_actors}))
    cols = collect(ds.iter_batches(batch_size=None, batch_format="numpy"))
    job = time.perf_counter() - t0
    sys.stdout.write("\\n{JOB_MARK}%.6f\\n" % job)
    info = {{}}
    try:
        info = {{"stats": ds.stats()}}
    except Exception as e:
        info = {{"stats_error": repr(e)}}
    with open(RESULT, "w") as f:
        json.dump({{"cols": cols, "info": info}}, f)
    ray.shutdown()
'''
    else:
        raise ValueError(engine)
    return head + body + '\nif __name__ == "__main__":\n    main()\n'


# --------------------------------------------------------------------------- model
def optimum(p):
    """The analytic lower bound on the job's wall time (see the module docstring)."""
    n, r = p["partitions"], p["rows"]
    cpu_s = n * p["read_s"] + n * r * p["row_s"]
    nb = math.ceil(n * r / p["batch_rows"])
    gpu_s = nb * p["batch_s"]
    s_cpu, s_gpu = NUM_CPUS, NUM_GPUS  # the GPU actors ask for num_cpus=0
    cpu_side = cpu_s / s_cpu + p["batch_s"]
    gpu_side = p["read_s"] + p["row_s"] + math.ceil(nb / s_gpu) * p["batch_s"]
    return {"cpu_s": cpu_s, "gpu_s": gpu_s, "batches": nb, "cpu_side": cpu_side,
            "gpu_side": gpu_side, "optimum": max(cpu_side, gpu_side),
            "bound_by": "GPU" if gpu_side >= cpu_side else "CPU"}


def memory_optimum(p, budget, opt):
    """The optimum when the buffered bytes must stay within ``budget`` (Little's law).

    Every GPU batch's bytes are held at least while its rows are read (a read
    task's output is reserved for its whole READ_S), transformed (input and output
    both, ROW_S) and inferred (BATCH_S), so the pipeline holds at least
    ``batch bytes x (READ_S + 2 ROW_S + BATCH_S)`` byte-seconds per batch, and a
    budget of M bytes passes at most M / that batches per second. At 64 MiB this is
    below what 4 GPU actors need; from about 80 MiB up the plain optimum holds.
    """
    batch_bytes = p["batch_rows"] * p["row_bytes"]
    held_s = p["read_s"] + 2 * p["row_s"] + p["batch_s"]
    drain = opt["batches"] * batch_bytes * held_s / budget + p["read_s"] + p["row_s"]
    return max(opt["optimum"], drain)


def verify(engine, p, cols):
    """Abort unless the output is exactly the expected rows."""
    import numpy as np

    n, r, w = p["partitions"], p["rows"], p["row_bytes"]
    part = np.asarray(cols["part"], dtype=np.int64)
    row = np.asarray(cols["row"], dtype=np.int64)
    if len(part) != n * r:
        raise SystemExit(f"FAILED: {engine}: {len(part)} output rows, expected {n * r}")
    key = part * r + row
    if not np.array_equal(np.sort(key), np.arange(n * r)):
        missing = sorted(set(range(n * r)) - set(key.tolist()))[:5]
        raise SystemExit(f"FAILED: {engine}: (part, row) pairs not each exactly once "
                         f"(e.g. missing {missing})")
    val = ((part * r + row) % 251) ^ 1
    exp_sum = val * w
    got = np.asarray(cols["sum"], dtype=np.int64)
    bad = np.nonzero(got != exp_sum)[0]
    if len(bad):
        i = bad[0]
        raise SystemExit(f"FAILED: {engine}: row (part {part[i]}, row {row[i]}) checksum {got[i]} "
                         f"!= expected {exp_sum[i]} ({len(bad)} rows wrong)")
    actors = sorted(set(cols["actor"]))
    if len(actors) > NUM_GPUS:
        raise SystemExit(f"FAILED: {engine}: {len(actors)} distinct inference actors, at most "
                         f"{NUM_GPUS} asked for")
    cuda_by_actor = {}
    for a, c in zip(cols["actor"], cols["cuda"], strict=True):
        cuda_by_actor.setdefault(a, set()).add(c)
    if any(len(v) != 1 for v in cuda_by_actor.values()):
        raise SystemExit(f"FAILED: {engine}: an actor saw several CUDA_VISIBLE_DEVICES: {cuda_by_actor}")
    devs = [next(iter(v)) for v in cuda_by_actor.values()]
    if engine == "streambatch" and (any(d == "" for d in devs) or len(set(devs)) != len(devs)):
        raise SystemExit(f"FAILED: {engine}: GPU actors' CUDA_VISIBLE_DEVICES not one distinct "
                         f"device each: {devs}")
    bsz = np.asarray(cols["bsz"], dtype=np.int64)
    batches = float(np.sum(1.0 / bsz))
    return {"actors": len(actors), "devices": sorted(devs), "batches": round(batches),
            "short_batches": round(float(np.sum((bsz < p["batch_rows"]) / bsz)))}


# --------------------------------------------------------------------------- runs
def run_one(engine, p, budget, trace, verbose, pss_interval, scheduler=None):
    with tempfile.TemporaryDirectory(prefix="sb-s1-") as td:
        res_p = os.path.join(td, "result.json")
        code = job_code(engine, p, budget, res_p, trace, scheduler)
        r = run_python(code, timeout=1800, interval=0.02, full_interval=pss_interval,
                       scan_interval=0.25, as_file=True).check(f"{engine} at budget {budget // MiB} MiB")
        if not os.path.exists(res_p):
            raise SystemExit(f"FAILED: {engine}: the job wrote no result\n{r.stderr[-4000:]}")
        with open(res_p) as f:
            res = json.load(f)
    job_s = None
    for ln in r.stdout.splitlines():
        if ln.startswith(JOB_MARK):
            job_s = float(ln[len(JOB_MARK):])
    chk = verify(engine, p, res["cols"])
    m = r.mem
    rec = {"wall_s": r.wall_s, "job_s": job_s, "rss": m.rss, "pss": m.pss, "uss": m.uss,
           "shm": m.shm, "pss_plus_shm": m.pss_plus_shm, "held": m.held, "nprocs_at_pss_peak": m.nprocs_at_pss_peak,
           "max_nprocs": m.max_nprocs, "check": chk, "lingering": r.lingering,
           "peak_buffered_bytes": res["info"].get("peak_buffered_bytes"),
           "stats": res["info"].get("stats"), "stats_error": res["info"].get("stats_error")}
    if verbose:
        print(f"  {engine:11s} budget {budget // MiB:5d} MiB: job {fmt_s(job_s, 2)} s (process "
              f"{r.wall_s:.2f} s)  PSS {fmt_mb(m.pss)} MB  RSS {fmt_mb(m.rss)} MB  shm+ {fmt_mb(m.shm)} MB"
              f"  held {fmt_mb(m.held)} MB  procs {m.max_nprocs}  actors {chk['actors']} {chk['devices']}  batches "
              f"{chk['batches']} ({chk['short_batches']} short)"
              + (f"  buffered peak {fmt_mb(rec['peak_buffered_bytes'])} MiB"
                 if rec["peak_buffered_bytes"] is not None else "")
              + (f"  LINGERING {r.lingering}" if r.lingering else "")
              + f"  loadavg {os.getloadavg()[0]:.1f}", flush=True)
        print("    PSS/USS MB per process at the PSS peak: " + ", ".join(
            f"{fmt_mb(ps)}/{fmt_mb(us)}" for ps, us, _ in m.pss_at_peak), flush=True)
    return rec


def summarize(recs):
    med = lambda k: median([r[k] for r in recs])  # noqa: E731
    s = {k: med(k) for k in ("wall_s", "job_s", "rss", "pss", "shm", "pss_plus_shm", "held")}
    s["max_held"] = max(r["held"] or 0 for r in recs)
    s["max_pss"] = max(r["pss"] or 0 for r in recs)
    s["max_rss"] = max(r["rss"] or 0 for r in recs)
    s["nprocs_at_pss_peak"] = max(r["nprocs_at_pss_peak"] for r in recs)
    s["max_nprocs"] = max(r["max_nprocs"] for r in recs)
    bb = [r["peak_buffered_bytes"] for r in recs if r["peak_buffered_bytes"] is not None]
    s["peak_buffered_bytes"] = max(bb) if bb else None
    s["batches"] = max(r["check"]["batches"] for r in recs)
    s["short_batches"] = max(r["check"]["short_batches"] for r in recs)
    s["actors"] = max(r["check"]["actors"] for r in recs)
    return s


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help=f"a ~10 s version: {QUICK['partitions']} partitions, one budget "
                         f"({QUICK['budgets_mb'][0]} MiB)")
    ap.add_argument("--skip-ray", action="store_true", help="streambatch only")
    ap.add_argument("--engines", default="streambatch,ray", help="comma list among streambatch,ray")
    ap.add_argument("--runs", type=int, default=1, help="runs per engine and budget; medians (default 1)")
    ap.add_argument("--budgets-mb", default=None,
                    help=f"comma list of memory budgets in MiB (default {','.join(map(str, DEFAULTS['budgets_mb']))})")
    ap.add_argument("--partitions", type=int, default=None, help=f"read tasks N (default {DEFAULTS['partitions']})")
    ap.add_argument("--rows", type=int, default=DEFAULTS["rows"], help="rows per read partition R (default 10)")
    ap.add_argument("--row-mb", type=float, default=DEFAULTS["row_bytes"] / MiB, help="MiB per row (default 1)")
    ap.add_argument("--read-s", type=float, default=DEFAULTS["read_s"], help="sleep per read task (default 1.0)")
    ap.add_argument("--row-s", type=float, default=DEFAULTS["row_s"], help="transform sleep per row (default 0.1)")
    ap.add_argument("--batch-rows", type=int, default=DEFAULTS["batch_rows"], help="inference batch size B (default 10)")
    ap.add_argument("--batch-s", type=float, default=DEFAULTS["batch_s"], help="inference sleep per batch (default 1.25)")
    ap.add_argument("--pss-interval", type=float, default=0.5,
                    help="seconds between PSS samples (default 0.5; one PSS sweep reads smaps_rollup of "
                         "every process, ~5 ms each for Ray's ~20 processes, so sampling faster takes "
                         "CPU from the job on a small machine)")
    ap.add_argument("--trace", metavar="DIR", help="streambatch: sb.init(trace=DIR/s1-<budget>.json)")
    ap.add_argument("--sb-scheduler", metavar="NAME",
                    help="streambatch: sb.init(scheduler=NAME), e.g. adaptive or static "
                         "(default: the engine's default)")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    ap.add_argument("--show-stats", action="store_true", help="print each engine's stats report")
    ap.add_argument("-q", "--quiet", action="store_true", help="no per-run lines")
    args = ap.parse_args(argv)

    engines = [e for e in args.engines.split(",") if e]
    if args.skip_ray:
        engines = [e for e in engines if e != "ray"]
    bad = set(engines) - {"streambatch", "ray"}
    if bad:
        ap.error(f"unknown engine(s): {sorted(bad)}")
    p = {"partitions": args.partitions or (QUICK if args.quick else DEFAULTS)["partitions"],
         "rows": args.rows, "row_bytes": int(args.row_mb * MiB), "read_s": args.read_s,
         "row_s": args.row_s, "batch_rows": args.batch_rows, "batch_s": args.batch_s}
    budgets_mb = ([int(x) for x in args.budgets_mb.split(",")] if args.budgets_mb
                  else (QUICK if args.quick else DEFAULTS)["budgets_mb"])
    opt = optimum(p)
    part_mb = p["rows"] * p["row_bytes"] / MiB
    total_mb = p["partitions"] * part_mb
    print(f"S1 scheduler microbenchmark: logical CPU={NUM_CPUS}, GPU={NUM_GPUS}; {machine_summary()}")
    print(f"  read: {p['partitions']} tasks x {p['read_s']:g} s, each {p['rows']} rows x "
          f"{p['row_bytes'] / MiB:g} MiB = {part_mb:g} MiB ({total_mb:.0f} MiB in all); transform: "
          f"{p['row_s']:g} s/row; inference: {NUM_GPUS} actors, {p['batch_s']:g} s per batch of "
          f"{p['batch_rows']} rows")
    print(f"  optimum = max(C/{NUM_CPUS} + BATCH_S, READ_S + ROW_S + ceil(nb/{NUM_GPUS}) x BATCH_S)"
          f" = max({opt['cpu_s']:g}/{NUM_CPUS} + {p['batch_s']:g}, {p['read_s']:g} + {p['row_s']:g} + "
          f"{math.ceil(opt['batches'] / NUM_GPUS)} x {p['batch_s']:g}) = max({opt['cpu_side']:.2f}, "
          f"{opt['gpu_side']:.2f}) = {opt['optimum']:.2f} s ({opt['bound_by']}-bound; "
          f"C = {opt['cpu_s']:g} CPU-s, G = {opt['gpu_s']:g} GPU-s in {opt['batches']} batches)")
    print(f"  budgets (MiB): {budgets_mb} (a read partition is {part_mb:g} MiB)"
          + (f"; streambatch scheduler={args.sb_scheduler}" if args.sb_scheduler else ""), flush=True)

    # The engine's own footprint for the memory verdict: the same job, the same
    # processes (8 workers, 4 actors, the driver), with 1 KiB rows instead of 1 MiB.
    base_pss = base_rss = base_held = None
    if "streambatch" in engines:
        tiny = dict(p, partitions=min(p["partitions"], 24), row_bytes=1024)
        bs = [run_one("streambatch", tiny, 2048 * MiB, None, False, args.pss_interval,
                      args.sb_scheduler) for _ in range(2)]
        base_pss, base_rss = max(b["pss"] for b in bs), max(b["rss"] for b in bs)
        base_held = max(b["held"] for b in bs)
        print(f"  engine footprint (the same job with 1 KiB rows, {bs[0]['max_nprocs']} processes): "
              f"held {fmt_mb(base_held)} MB, PSS {fmt_mb(base_pss)} MB, RSS {fmt_mb(base_rss)} MB",
              flush=True)

    results = {}
    for b_mb in budgets_mb:
        budget = b_mb * MiB
        for e in engines:
            trace = (os.path.join(os.path.abspath(args.trace), f"s1-{b_mb}MiB.json")
                     if args.trace and e == "streambatch" else None)
            if trace:
                os.makedirs(os.path.dirname(trace), exist_ok=True)
            recs = [run_one(e, p, budget, trace, not args.quiet, args.pss_interval, args.sb_scheduler)
                    for _ in range(args.runs)]
            results[(b_mb, e)] = {"runs": recs, "summary": summarize(recs)}
            if args.show_stats:
                st = recs[-1]["stats"] or recs[-1]["stats_error"]
                print(f"--- {e} stats at {b_mb} MiB ---\n{st}\n", flush=True)

    print()
    rows = []
    verdicts = {"efficiency": True, "memory": True, "vs_ray": True}
    for b_mb in budgets_mb:
        budget = b_mb * MiB
        for e in engines:
            s = results[(b_mb, e)]["summary"]
            eff = opt["optimum"] / s["job_s"] if s["job_s"] else None
            if e == "streambatch":
                lim = budget + base_held
                mem_ok = s["max_held"] <= lim
                memv = f"{'within' if mem_ok else 'OVER'} ({fmt_mb(lim)})"
                verdicts["memory"] &= mem_ok
                verdicts["efficiency"] &= eff is not None and eff >= EFFICIENCY_TARGET
            else:
                memv = "-"
            under = memory_optimum(p, budget, opt)
            rows.append([
                str(b_mb), e, fmt_s(s["job_s"], 2), fmt_s(s["wall_s"], 2), f"{opt['optimum']:.2f}",
                "-" if eff is None else f"{100 * eff:.0f}%", f"{under:.2f}",
                "-" if not s["job_s"] else f"{100 * under / s['job_s']:.0f}%",
                fmt_mb(s["held"]), fmt_mb(s["pss"]), fmt_mb(s["rss"]), memv,
                fmt_mb(s["peak_buffered_bytes"]), f"{s['batches']} ({s['short_batches']})",
                f"{s['actors']}", f"{s['max_nprocs']}",
            ])
    print_table(["budget MiB", "engine", "job s", "process s", "optimum s", "efficiency",
                 "optimum in budget s", "eff. in budget",
                 "peak held MB", "peak PSS MB", "peak RSS MB", "held vs budget+footprint (limit MB)",
                 "buffered peak MiB", "GPU batches (short)", "actors", "procs"], rows)
    print(f"  (job: inside the process, dataset built -> last row consumed; process: whole fresh "
          f"interpreter; efficiency = optimum / job; memory: peak of the process-tree sum, median "
          f"over runs; held = the tree's PSS less its shared-memory pages, plus /dev/shm growth: "
          f"every page once, blocks in /dev/shm whether mapped or not; footprint = the same job "
          f"with 1 KiB rows, held {fmt_mb(base_held)} MB; "
          f"'optimum in budget': no schedule that keeps every byte it holds within the budget "
          f"can beat it (see memory_optimum); 'buffered peak' is the engine's own accounting)")

    if "streambatch" in engines and "ray" in engines:
        print()
        rrows = []
        for b_mb in budgets_mb:
            s, r = results[(b_mb, "streambatch")]["summary"], results[(b_mb, "ray")]["summary"]
            ratio = r["job_s"] / s["job_s"] if s["job_s"] and r["job_s"] else None
            verdicts["vs_ray"] &= ratio is not None and ratio > 1.0
            rrows.append([str(b_mb), fmt_s(s["job_s"], 2), fmt_s(r["job_s"], 2),
                          "-" if ratio is None else f"{ratio:.2f}x",
                          f"{r['wall_s'] / s['wall_s']:.2f}x",
                          f"{r['pss'] / s['pss']:.2f}x" if s["pss"] and r["pss"] else "-"])
        print_table(["budget MiB", "streambatch job s", "ray job s", "ray/streambatch (job)",
                     "ray/streambatch (process)", "ray/streambatch (PSS)"], rrows)
    else:
        verdicts["vs_ray"] = None

    if "streambatch" in engines:
        print()
        print(f"target >= {EFFICIENCY_TARGET:.0%} of optimum at every budget : "
              f"{'MET' if verdicts['efficiency'] else 'NOT MET'}")
        print(f"target never over budget (held <= budget + footprint): "
              f"{'MET' if verdicts['memory'] else 'NOT MET'}")
        if verdicts["vs_ray"] is not None:
            print(f"target ahead of Ray Data at every budget             : "
                  f"{'MET' if verdicts['vs_ray'] else 'NOT MET'}")
    for (b_mb, e), v in results.items():
        ling = [r["lingering"] for r in v["runs"] if r["lingering"]]
        if ling:
            print(f"note: {e} at {b_mb} MiB: processes alive after the job's process exited "
                  f"(terminated by the benchmark): {ling}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"params": p, "optimum": opt, "budgets_mb": budgets_mb,
                       "baseline": {"pss": base_pss, "rss": base_rss, "held": base_held},
                       "results": {f"{e}@{b}": v for (b, e), v in results.items()},
                       "targets": verdicts}, f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
