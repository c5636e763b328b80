"""S1, new-user shape: load -> transform -> GPU actors, written as a new user writes it (issue 20).

The other S1 pipeline (``s1_scheduler.py``) is tuned: ``range(N, override_num_blocks=N)``
read tasks, ``batch_size=None`` everywhere, ``num_cpus=0`` on the GPU actors. This one
is the code a new user writes first, with no knobs, sleep-based stages that move real
bytes, on **logical** resources CPU=8, GPU=4 (no GPU needed; the "GPU" stage sleeps):

  ds = (from_items(list(range(N)))                      # N [32] input items
        .flat_map(load)                                 # per item: sleeps LOAD_S [0.5 s],
                                                        # returns R [8] rows of 1 MiB
        .map_batches(transform)                         # sleeps ROW_S [0.05 s] per row,
                                                        # new rows (every byte XOR 1)
        .map_batches(GpuModel, num_gpus=1, concurrency=4, batch_size=B))  # [8]: sleeps
                                                        # BATCH_S [0.25 s] per batch,
                                                        # small output per row
  rows = ds.take_all()

streambatch: ``sb.init(num_cpus=8, num_gpus=4, memory_budget=96 MiB)``. Ray Data 2.60 on
the same code: ``ray.init(num_cpus=8, num_gpus=4, object_store_memory=96 MiB)`` and
``DataContext.override_object_store_memory_limit_fraction = 1.0`` so that Ray Data's own
limit is the same 96 MiB (it uses 50% of the store by default).

Optimum. CPU-seconds C = N*LOAD_S + N*R*ROW_S = 16 + 12.8 = 28.8 s on S = 8 CPU slots,
GPU-seconds G = ceil(N*R/B) * BATCH_S = 8 s on 4 GPUs. (As written, the GPU stage names
no ``num_cpus``, and both engines then reserve 1 CPU per GPU actor: Ray Data 2.60 does
for GPU map tasks and actors, streambatch's default is num_cpus=1. While the 4 actors
live, 4 of the 8 slots are theirs, except that streambatch lends an idle actor's CPU.
The optimum, issue 20's, gives all 8 slots to the CPU stages; ``--gpu-num-cpus 0``
runs the pipeline that way.)

  optimum      C/S + LOAD_S + R*ROW_S + BATCH_S = 3.6 + 0.5 + 0.4 + 0.25 = 4.75 s
               (issue 20's figure, the target's reference: the CPU work spread over
               every slot, plus one item's path through the three stages at the
               granularity the user wrote: a load is one 0.5 s call, the
               transform gets an item's 8 rows as one batch, one GPU batch)
  lower bound  max(C/S + BATCH_S, LOAD_S + ROW_S + ceil(nb/4)*BATCH_S) = 3.85 s
               (S1's formula: no schedule at any granularity beats it)
  in budget    as S1's memory_optimum: every item's 8 MiB is held while it is loaded,
               transformed (input and output) and inferred, LOAD_S + 2*ROW_S + BATCH_S,
               so 96 MiB passes at most 96 / (8 x 0.85) items per second: 2.82 s with
               the head, below the lower bound (the budget does not bind)
  with working memory  the budget also counts each running task's working memory: a
               load + transform task holds the block the transform reads beside the
               transform's output (2 x 8 MiB), so 96 MiB fits 6 at once:
               C/6 + 1.15 = 5.95 s (printed for context; the target stays the optimum's)

Both efficiencies are printed (optimum / job and lower bound / job); the target is
**>= 90% of the optimum** (job <= 5.28 s). Every run is a fresh process
(``_util.run_python``); "job" is measured inside it, from building the dataset to the
last row of ``take_all`` (worker and actor start included; interpreter start-up and
``ray.init`` excluded). Medians over ``--runs`` [3] runs, engines interleaved per round.

Every run's rows are checked: N*R rows, each (item, j) once, each row's checksum equal
to 1 MiB x (value(item, j) XOR 1) (every byte went through load and transform), at most
4 actors; a wrong result aborts with FAILED (exit status 1).

    python benchmarks/s1_newuser.py [--runs 3] [--skip-ray] [--engines streambatch,ray]
           [--budget-mb 96] [--show-stats] [--json PATH] [-q]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _util import MiB, fmt_mb, fmt_s, machine_summary, median, print_table, run_python  # noqa: E402

NUM_CPUS = 8
NUM_GPUS = 4
RAY_MIN_STORE = 75 * MiB  # ray_constants.OBJECT_STORE_MINIMUM_MEMORY_BYTES
TARGET = 0.90
JOB_MARK = "__S1NU_JOB_S__"
DEFAULTS = dict(items=32, rows=8, row_bytes=1 * MiB, load_s=0.5, row_s=0.05,
                batch_rows=8, batch_s=0.25, budget_mb=96)

# The user's functions, shared verbatim by both engines.
UDF_SRC = '''
import os, time
import numpy as np

def value_of(item, j):
    return (int(item) * P["rows"] + int(j)) % 251

def load(row):
    """One input item -> R rows of 1 MiB each, after LOAD_S of 'loading'."""
    time.sleep(P["load_s"])
    item = row["item"]
    return [{"item": item, "j": j,
             "data": np.full(P["row_bytes"], value_of(item, j), dtype=np.uint8)}
            for j in range(P["rows"])]

def transform(batch):
    """ROW_S per row; new rows with every byte XOR 1."""
    time.sleep(P["row_s"] * len(batch["item"]))
    return {"item": batch["item"], "j": batch["j"], "data": batch["data"] ^ np.uint8(1)}

class GpuModel:
    """The 'model': built once per actor, BATCH_S per batch, a small output per row."""

    def __init__(self):
        self.pid = os.getpid()
        self.cuda = os.environ.get("CUDA_VISIBLE_DEVICES", "")

    def __call__(self, batch):
        time.sleep(P["batch_s"])
        n = len(batch["item"])
        return {"item": batch["item"], "j": batch["j"],
                "sum": batch["data"].sum(axis=1, dtype=np.uint64).astype(np.int64),
                "bsz": np.full(n, n, dtype=np.int64),
                "actor": np.full(n, self.pid, dtype=np.int64),
                "cuda": np.array([self.cuda] * n, dtype=object)}
'''

PIPELINE_SRC = '''
    ds = (E.from_items(list(range(P["items"])))
          .flat_map(load)
          .map_batches(transform{tb})
          .map_batches(GpuModel, num_gpus=1, concurrency=4, batch_size=P["batch_rows"]{gc}))
    rows = ds.take_all()
'''

SAVE_SRC = '''
    job = time.perf_counter() - t0
    sys.stdout.write("\\n{mark}%.6f\\n" % job)
    cols = {{k: [r[k].item() if hasattr(r[k], "item") else r[k] for r in rows]
            for k in ("item", "j", "sum", "bsz", "actor", "cuda")}}
    try:
        st = ds.stats()
        info = {{"stats": str(st), "peak_buffered_bytes": getattr(st, "peak_buffered_bytes", None)}}
    except Exception as e:  # informational only
        info = {{"stats_error": repr(e)}}
    with open(RESULT, "w") as f:
        json.dump({{"cols": cols, "info": info}}, f)
'''


def job_code(engine, p, result_path):
    head = f"import json, sys, time\nP = {p!r}\nRESULT = {result_path!r}\n" + UDF_SRC
    budget = p["budget_mb"] * MiB
    if engine == "streambatch":
        start = (f"    import streambatch as E\n"
                 f"    E.init(num_cpus={NUM_CPUS}, num_gpus={NUM_GPUS}, memory_budget={budget})\n")
        stop = ""
    elif engine == "ray":
        store = max(budget, RAY_MIN_STORE)
        start = (f"    import logging\n    import ray\n    E = ray.data\n"
                 f"    ray.init(address='local', num_cpus={NUM_CPUS}, num_gpus={NUM_GPUS}, "
                 f"object_store_memory={store}, include_dashboard=False, log_to_driver=False, "
                 f"logging_level=logging.WARNING)\n"
                 f"    ctx = ray.data.DataContext.get_current()\n"
                 f"    ctx.enable_progress_bars = False\n"
                 f"    ctx.override_object_store_memory_limit_fraction = {budget / store!r}\n")
        stop = "    ray.shutdown()\n"
    else:
        raise ValueError(engine)
    tb = "" if p.get("transform_batch") in (None, "default") else \
        f", batch_size={None if p['transform_batch'] == 'none' else int(p['transform_batch'])}"
    gc = "" if p.get("gpu_num_cpus") is None else f", num_cpus={p['gpu_num_cpus']}"
    return (head + "\ndef main():\n" + start + "    t0 = time.perf_counter()\n" + PIPELINE_SRC.format(tb=tb, gc=gc)
            + SAVE_SRC.format(mark=JOB_MARK) + stop + '\nif __name__ == "__main__":\n    main()\n')


def optimum(p):
    """The optimum, the lower bound and the bound within the budget (module docstring).

    >>> o = optimum(dict(DEFAULTS))
    >>> round(o["optimum"], 2), round(o["lower_bound"], 2), round(o["in_budget"], 2)
    (4.75, 3.85, 2.82)
    >>> o["tasks_in_budget"], round(o["with_working"], 2)
    (6, 5.95)
    """
    n, r = p["items"], p["rows"]
    cpu_s = n * p["load_s"] + n * r * p["row_s"]
    nb = math.ceil(n * r / p["batch_rows"])
    path = p["load_s"] + r * p["row_s"] + p["batch_s"]
    lower = max(cpu_s / NUM_CPUS + p["batch_s"],
                p["load_s"] + p["row_s"] + math.ceil(nb / NUM_GPUS) * p["batch_s"])
    item_bytes = r * p["row_bytes"]
    held_s = p["load_s"] + 2 * p["row_s"] + p["batch_s"]
    in_budget = n * item_bytes * held_s / (p["budget_mb"] * MiB) + p["load_s"] + p["row_s"]
    # counting working memory (the budget does): a load+transform task holds the block the
    # transform reads and the transform's output at once, two items' bytes
    tasks = max(1, min(NUM_CPUS, int(p["budget_mb"] * MiB // (2 * item_bytes))))
    return {"cpu_s": cpu_s, "gpu_s": nb * p["batch_s"], "batches": nb, "path_s": path,
            "optimum": cpu_s / NUM_CPUS + path, "lower_bound": lower, "in_budget": in_budget,
            "tasks_in_budget": tasks, "with_working": cpu_s / tasks + path}


def verify(engine, p, cols):
    """Abort unless every (item, j) arrived once with the right checksum."""
    import numpy as np

    n, r = p["items"], p["rows"]
    item = np.asarray(cols["item"], dtype=np.int64)
    j = np.asarray(cols["j"], dtype=np.int64)
    if len(item) != n * r:
        raise SystemExit(f"FAILED: {engine}: {len(item)} rows, expected {n * r}")
    key = item * r + j
    if not np.array_equal(np.sort(key), np.arange(n * r)):
        missing = sorted(set(range(n * r)) - set(key.tolist()))[:5]
        raise SystemExit(f"FAILED: {engine}: (item, j) not each exactly once (e.g. missing {missing})")
    expected = (((item * r + j) % 251) ^ 1) * p["row_bytes"]
    got = np.asarray(cols["sum"], dtype=np.int64)
    bad = np.nonzero(got != expected)[0]
    if len(bad):
        i = bad[0]
        raise SystemExit(f"FAILED: {engine}: row (item {item[i]}, j {j[i]}) checksum {got[i]} != "
                         f"{expected[i]} ({len(bad)} rows wrong)")
    actors = set(cols["actor"])
    if len(actors) > NUM_GPUS:
        raise SystemExit(f"FAILED: {engine}: {len(actors)} actors, at most {NUM_GPUS} asked for")
    bsz = np.asarray(cols["bsz"], dtype=np.int64)
    return {"actors": len(actors), "batches": round(float(np.sum(1.0 / bsz))),
            "short_batches": round(float(np.sum((bsz < p["batch_rows"]) / bsz)))}


def run_one(engine, p, verbose):
    with tempfile.TemporaryDirectory(prefix="sb-s1nu-") as td:
        res_p = os.path.join(td, "result.json")
        r = run_python(job_code(engine, p, res_p), timeout=900, interval=0.05,
                       scan_interval=0.25, as_file=True).check(engine)
        if not os.path.exists(res_p):
            raise SystemExit(f"FAILED: {engine}: the job wrote no result\n{r.stderr[-4000:]}")
        with open(res_p) as f:
            res = json.load(f)
    job_s = next((float(ln[len(JOB_MARK):]) for ln in r.stdout.splitlines()
                  if ln.startswith(JOB_MARK)), None)
    chk = verify(engine, p, res["cols"])
    rec = {"job_s": job_s, "wall_s": r.wall_s, "rss": r.mem.rss, "check": chk,
           "peak_buffered_bytes": res["info"].get("peak_buffered_bytes"),
           "stats": res["info"].get("stats") or res["info"].get("stats_error"),
           "lingering": r.lingering, "loadavg": os.getloadavg()[0]}
    if verbose:
        buf = rec["peak_buffered_bytes"]
        print(f"  {engine:11s} job {fmt_s(job_s, 2)} s (process {r.wall_s:.2f} s)  RSS "
              f"{fmt_mb(r.mem.rss)} MB  actors {chk['actors']}  batches {chk['batches']} "
              f"({chk['short_batches']} short)"
              + (f"  buffered peak {fmt_mb(buf)} MiB" if buf is not None else "")
              + (f"  LINGERING {r.lingering}" if r.lingering else "")
              + f"  loadavg {rec['loadavg']:.1f}", flush=True)
    return rec


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="runs per engine; medians (default 3)")
    ap.add_argument("--engines", default="streambatch,ray", help="comma list among streambatch,ray")
    ap.add_argument("--skip-ray", action="store_true", help="streambatch only")
    ap.add_argument("--items", type=int, default=DEFAULTS["items"], help="input items N (default 32)")
    ap.add_argument("--rows", type=int, default=DEFAULTS["rows"], help="rows per item R (default 8)")
    ap.add_argument("--load-s", type=float, default=DEFAULTS["load_s"], help="load sleep per item (0.5)")
    ap.add_argument("--row-s", type=float, default=DEFAULTS["row_s"], help="transform sleep per row (0.05)")
    ap.add_argument("--batch-rows", type=int, default=DEFAULTS["batch_rows"], help="GPU batch size B (8)")
    ap.add_argument("--batch-s", type=float, default=DEFAULTS["batch_s"], help="GPU sleep per batch (0.25)")
    ap.add_argument("--budget-mb", type=int, default=DEFAULTS["budget_mb"], help="memory budget MiB (96)")
    ap.add_argument("--transform-batch", default="default",
                    help="diagnostics: the transform's batch_size (default: not given, as a new user "
                         "writes it; 'none' or a number)")
    ap.add_argument("--gpu-num-cpus", type=float, default=None,
                    help="diagnostics: num_cpus of the GPU stage (default: not given; both engines then "
                         "reserve 1 CPU per GPU actor, so 4 of the 8 CPUs while the actors live)")
    ap.add_argument("--show-stats", action="store_true", help="print each engine's last stats report")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    ap.add_argument("-q", "--quiet", action="store_true", help="no per-run lines")
    args = ap.parse_args(argv)
    engines = [e for e in args.engines.split(",") if e and not (args.skip_ray and e == "ray")]
    if set(engines) - {"streambatch", "ray"}:
        ap.error(f"unknown engine(s) in {args.engines!r}")
    p = {"items": args.items, "rows": args.rows, "row_bytes": DEFAULTS["row_bytes"],
         "load_s": args.load_s, "row_s": args.row_s, "batch_rows": args.batch_rows,
         "batch_s": args.batch_s, "budget_mb": args.budget_mb,
         "transform_batch": args.transform_batch, "gpu_num_cpus": args.gpu_num_cpus}
    o = optimum(p)
    print(f"S1 new-user pipeline: logical CPU={NUM_CPUS}, GPU={NUM_GPUS}, budget {p['budget_mb']} MiB; "
          f"{machine_summary()}")
    print(f"  from_items({p['items']}) -> flat_map(load: {p['load_s']:g} s, {p['rows']} rows x 1 MiB) -> "
          f"map_batches(transform: {p['row_s']:g} s/row) -> map_batches(GpuModel, num_gpus=1, "
          f"concurrency={NUM_GPUS}, batch_size={p['batch_rows']}: {p['batch_s']:g} s/batch)")
    if args.gpu_num_cpus is not None:
        print(f"  (diagnostics: the GPU stage with num_cpus={args.gpu_num_cpus:g})")
    if args.transform_batch != "default":
        print(f"  (diagnostics: map_batches(transform, batch_size={args.transform_batch}))")
    print(f"  C = {o['cpu_s']:g} CPU-s, G = {o['gpu_s']:g} GPU-s in {o['batches']} batches")
    print(f"  optimum     = C/{NUM_CPUS} + LOAD_S + R*ROW_S + BATCH_S = {o['cpu_s'] / NUM_CPUS:.2f} + "
          f"{o['path_s']:.2f} = {o['optimum']:.2f} s (target: >= {TARGET:.0%}, job <= "
          f"{o['optimum'] / TARGET:.2f} s)")
    print(f"  lower bound = max(C/{NUM_CPUS} + BATCH_S, LOAD_S + ROW_S + ceil(nb/{NUM_GPUS})*BATCH_S) = "
          f"{o['lower_bound']:.2f} s; within the budget >= {o['in_budget']:.2f} s (does not bind)")
    print(f"  counting working memory (each load+transform task holds 2 x {p['rows']} rows), the "
          f"budget fits {o['tasks_in_budget']} tasks at once: >= C/{o['tasks_in_budget']} + "
          f"{o['path_s']:.2f} = {o['with_working']:.2f} s", flush=True)

    results = {e: [] for e in engines}
    for i in range(args.runs):
        if not args.quiet:
            print(f" round {i + 1}/{args.runs}", flush=True)
        for e in engines:
            results[e].append(run_one(e, p, not args.quiet))

    print()
    rows, summary = [], {}
    for e in engines:
        recs = results[e]
        job = median([r["job_s"] for r in recs])
        bb = [r["peak_buffered_bytes"] for r in recs if r["peak_buffered_bytes"] is not None]
        summary[e] = {"job_s": job, "wall_s": median([r["wall_s"] for r in recs]),
                      "efficiency": o["optimum"] / job, "vs_lower_bound": o["lower_bound"] / job}
        rows.append([e, " ".join(fmt_s(r["job_s"], 2) for r in recs), fmt_s(job, 2),
                     fmt_s(summary[e]["wall_s"], 2), f"{o['optimum']:.2f}",
                     f"{100 * summary[e]['efficiency']:.0f}%", f"{100 * summary[e]['vs_lower_bound']:.0f}%",
                     fmt_mb(max(bb)) if bb else "-", fmt_mb(median([r["rss"] for r in recs])),
                     f"{max(r['check']['batches'] for r in recs)} ({max(r['check']['short_batches'] for r in recs)})"])
        if args.show_stats:
            print(f"--- {e} stats (last run) ---\n{recs[-1]['stats']}\n")
    print_table(["engine", "job s per run", "job s (median)", "process s", "optimum s", "efficiency",
                 "vs lower bound", "buffered peak MiB", "peak RSS MB", "GPU batches (short)"], rows)
    met = None
    if "streambatch" in summary:
        met = summary["streambatch"]["efficiency"] >= TARGET
        print(f"\n  target streambatch >= {TARGET:.0%} of the optimum ({o['optimum']:.2f} s): "
              f"{'MET' if met else 'NOT MET'} ({100 * summary['streambatch']['efficiency']:.0f}%)")
    if "streambatch" in summary and "ray" in summary:
        print(f"  ray/streambatch (job): {summary['ray']['job_s'] / summary['streambatch']['job_s']:.2f}x")
    for e in engines:
        ling = [r["lingering"] for r in results[e] if r["lingering"]]
        if ling:
            print(f"note: {e}: processes alive after the job's process exited (terminated): {ling}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"params": p, "optimum": o, "results": results, "summary": summary,
                       "target_met": met}, f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
