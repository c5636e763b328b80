"""W1 — heterogeneous batch inference on CPU: parquet of JPEGs -> preprocess -> CNN -> parquet.

Input: N [4,000] 256x256 JPEG images (synthetic: a smooth colour field, a few
ellipses/rectangles, mild noise; quality 90, ~17 KB each) in F [20] parquet
files (columns id:int64, image:binary; one row group per file), generated once,
deterministically from a seed, and cached under --data-dir (default ./bench-data).

Pipeline (the same UDFs in every engine):
  preprocess  decode (Pillow) -> RGB -> resize 224x224 (bilinear) -> normalize
              (ImageNet mean/std) -> float32 CHW; numpy batches of PRE_BATCH [32]
              rows; ~3.5 ms per image on one core here. CPU tasks.
  model       a small CNN (5 conv layers, ReLU, global pool, linear 128->10),
              weights from torch.manual_seed(SEED), on ONE torch thread
              (torch.set_num_threads(1)) standing in for a GPU: an actor class
              built once, map_batches(Model, num_gpus=1, concurrency=1) on one
              logical GPU; batches of MODEL_BATCH [32]; ~4 ms per image here.
  write       parquet: id, pred (argmax), l0..l9 (the logits).

Engines (each run a fresh process, see _util.run_python):
  loop                 one process, one thread: per file, per MODEL_BATCH rows:
                       preprocess -> model; one parquet file per input file
  batch                stage-at-a-time in plain Python: preprocess everything
                       (a thread pool of `cores` threads; Pillow and numpy release
                       the GIL), then run the model over everything, then write
  streambatch          sb.init(num_cpus=cores, num_gpus=1[, memory_budget]);
                       read_parquet -> map_batches(preprocess, batch_format="numpy")
                       -> map_batches(Model, num_gpus=1, concurrency=1) -> write_parquet
                       (preprocess where the engine chooses at run time: threads,
                       or worker processes when threads would wait on the GIL)
  streambatch-threads  the same with map_batches(preprocess, releases_gil=True):
                       preprocess on threads in the driver process, no copies
  streambatch-processes  the same with releases_gil=False: preprocess in worker
                       processes whatever the run-time choice would be (the decoded
                       tensors wait in shared memory)
  ray                  ray.init(num_cpus=cores, num_gpus=1); the same structure with
                       ray.data (read_parquet, map_batches(fn), map_batches(Model,
                       num_gpus=1, concurrency=1), write_parquet), Ray's defaults
                       otherwise (object store, block sizes)

The pipelined bound is measured in-process before the runs, in a fresh process:
preprocess time per image and model time per image on a sample of 256 images
(after a warm-up batch; the fastest of 5 timings each, since other load on the
machine can only add time), extrapolated to N; measured again after the runs
and the faster of the two measurements kept. The model is timed twice each time:
with glibc's default heap and with the heap settings streambatch's actors use
(freed memory kept for the next batch; a third less CPU for this CNN, whose
activations otherwise fault in afresh every batch); the faster counts, so the
bound does not credit the engine for the allocator:
  pre_s   = N x preprocess s/image,  model_s = N x model s/image
  bound   = max((pre_s + model_s) / cores, model_s)
Here the "GPU" is a CPU core, so the model's seconds count among the CPU-seconds
that the cores share; with a real GPU the first term would be pre_s / cores.
Efficiency = bound / job time; rows/s = N / job time. "job" is timed inside the
process from building the dataset to the last file written (it includes starting
workers and actors; it excludes interpreter start-up, imports, sb.init/ray.init);
"process" is the whole fresh interpreter.

Memory: the process tree is sampled from outside: peak of the summed RSS every
20 ms (new descendants looked for every 250 ms) and of the summed PSS every
--pss-interval [1.0] s (a PSS sweep reads smaps_rollup of every process, ~5 ms
each for a torch-importing process, and W1 is CPU-bound on 2 cores).

Every run's output is checked: N rows, each id once; the logits of a sample of
ids equal (to 1e-4) those the bound measurement computed in-process; and every
engine's logits match the first engine's (the single-process loop when it runs)
for every id, to 1e-4, with equal predictions except where the top-2 logits are
within 1e-4. A wrong result aborts with FAILED (exit status 1).

Targets (issue 3): streambatch >= 95% of the bound (>= 1.5x Ray Data) with peak RSS
under 1 GB.

    python benchmarks/w1_inference.py [--runs 3] [--quick] [--images 4000] [--skip-ray]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _jpeg_data import DATA_VERSION, IMAGE_SIZE, ensure_data, warm_page_cache  # noqa: E402, F401
from _util import (  # noqa: E402
    GiB,
    MiB,
    fmt_mb,
    fmt_s,
    machine_summary,
    median,
    print_table,
    run_python,
)

SEED = 20250107
PRE_BATCH = 32
MODEL_BATCH = 32
SAMPLE = 256  # images timed for the bound, and whose logits every engine must reproduce
ATOL = 1e-4
MEASURE_REPS = 5  # per stage, the bound uses the fastest of 5 timings of the sample (noise only adds)
TARGET_EFF = 0.95
TARGET_VS_RAY = 1.5
TARGET_RSS = 1 * GiB
JOB_MARK = "__W1_JOB_S__"
INFO_MARK = "__W1_INFO__"
ENGINES = ("loop", "batch", "streambatch", "streambatch-threads", "streambatch-processes", "ray")

# The UDFs, shared verbatim by every engine and by the bound measurement.
UDF_SRC = '''
import io, os, time
import numpy as np

_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32) * 255
_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32) * 255
_SCALE = (1 / _STD).astype(np.float32)[:, None, None]
_BIAS = (-_MEAN / _STD).astype(np.float32)[:, None, None]

def preprocess(batch):
    """JPEG bytes -> float32 (n, 3, 224, 224), ImageNet-normalized."""
    from PIL import Image
    imgs = batch["image"]
    out = np.empty((len(imgs), 3, 224, 224), dtype=np.float32)
    for i, b in enumerate(imgs):
        im = Image.open(io.BytesIO(b)).convert("RGB").resize((224, 224), Image.BILINEAR)
        np.multiply(np.asarray(im).transpose(2, 0, 1), _SCALE, out=out[i])
        out[i] += _BIAS
    return {"id": np.asarray(batch["id"]), "image": out}

def build_net(seed):
    import torch
    nn = torch.nn
    torch.manual_seed(seed)
    layers, c = [], 3
    for o in (16, 32, 64, 128):
        layers += [nn.Conv2d(c, o, 3, 2, 1), nn.ReLU()]
        c = o
    layers += [nn.Conv2d(c, c, 3, 1, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
               nn.Linear(c, 10)]
    net = nn.Sequential(*layers)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)
    return net.eval()

class Model:
    """The "GPU" stage: built once per actor; one torch thread."""

    def __init__(self, seed):
        import torch
        torch.set_num_threads(1)
        self.torch = torch
        self.net = build_net(seed)

    def __call__(self, batch):
        import warnings
        torch = self.torch
        x = batch["image"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # read-only arrays from Arrow: we only read them
            xt = torch.from_numpy(np.asarray(x))
        with torch.inference_mode():
            logits = self.net(xt).numpy()
        out = {"id": np.asarray(batch["id"]), "pred": logits.argmax(axis=1).astype(np.int64)}
        for k in range(logits.shape[1]):
            out["l%d" % k] = np.ascontiguousarray(logits[:, k])
        return out
'''


# The data set lives in _jpeg_data.py (shared with w2_loader.py).


def job_code(engine, in_dir, out_dir, cores, budget, extra=None):
    head = (f"import sys, time, json\nIN, OUT, CORES, SEED = {in_dir!r}, {out_dir!r}, {cores}, {SEED}\n"
            f"PRE_BATCH, MODEL_BATCH, BUDGET = {PRE_BATCH}, {MODEL_BATCH}, {budget!r}\n" + UDF_SRC)
    done = f'    sys.stdout.write("\\n{JOB_MARK}%.6f\\n" % (time.perf_counter() - t0))\n'
    if engine.startswith("streambatch"):
        gil = {"streambatch-threads": ", releases_gil=True",
               "streambatch-processes": ", releases_gil=False"}.get(engine, "")
        body = f'''
def main():
    import streambatch as sb
    kw = {{"memory_budget": BUDGET}} if BUDGET else {{}}
    sb.init(num_cpus=CORES, num_gpus=1, **kw)
    t0 = time.perf_counter()
    ds = (sb.read_parquet(IN)
          .map_batches(preprocess, batch_size=PRE_BATCH, batch_format="numpy"{gil})
          .map_batches(Model, fn_constructor_args=(SEED,), batch_size=MODEL_BATCH,
                       batch_format="numpy", num_gpus=1, concurrency=1))
    ds.write_parquet(OUT)
{done}    try:
        st = ds.stats()
        info = {{"peak_buffered_bytes": st.peak_buffered_bytes, "memory_budget": st.memory_budget,
                 "stats": str(st)}}
    except Exception as e:  # stats are informational only
        info = {{"stats_error": repr(e)}}
    sys.stdout.write("\\n{INFO_MARK}" + json.dumps(info) + "\\n")
'''
    elif engine == "ray":
        body = f'''
def main():
    import logging
    import ray
    ray.init(address="local", num_cpus=CORES, num_gpus=1, include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING)
    ray.data.DataContext.get_current().enable_progress_bars = False
    t0 = time.perf_counter()
    ds = (ray.data.read_parquet(IN)
          .map_batches(preprocess, batch_size=PRE_BATCH, batch_format="numpy")
          .map_batches(Model, fn_constructor_args=(SEED,), batch_size=MODEL_BATCH,
                       batch_format="numpy", num_gpus=1, concurrency=1))
    ds.write_parquet(OUT)
{done}    try:
        info = {{"stats": ds.stats()}}
    except Exception as e:
        info = {{"stats_error": repr(e)}}
    sys.stdout.write("\\n{INFO_MARK}" + json.dumps(info) + "\\n")
    ray.shutdown()
'''
    elif engine == "loop":
        body = f'''
def main():
    import glob, os
    import pyarrow as pa, pyarrow.parquet as pq
    t0 = time.perf_counter()
    model = Model(SEED)
    os.makedirs(OUT, exist_ok=True)
    for k, path in enumerate(sorted(glob.glob(os.path.join(IN, "*.parquet")))):
        t = pq.read_table(path)
        ids, imgs = t["id"].to_numpy(), t["image"].to_numpy(zero_copy_only=False)
        outs = [model(preprocess({{"id": ids[s:s + MODEL_BATCH], "image": imgs[s:s + MODEL_BATCH]}}))
                for s in range(0, len(ids), MODEL_BATCH)]
        cols = {{c: np.concatenate([o[c] for o in outs]) for c in outs[0]}}
        pq.write_table(pa.table(cols), os.path.join(OUT, "part-%05d.parquet" % k))
{done}'''
    elif engine == "batch":
        body = f'''
def main():
    import glob, os
    from concurrent.futures import ThreadPoolExecutor
    import pyarrow as pa, pyarrow.parquet as pq
    t0 = time.perf_counter()
    os.makedirs(OUT, exist_ok=True)
    # stage 1: read + preprocess everything (threads: Pillow and numpy release the GIL)
    paths = sorted(glob.glob(os.path.join(IN, "*.parquet")))
    tables = [pq.read_table(p) for p in paths]
    chunks = []
    for t in tables:
        ids, imgs = t["id"].to_numpy(), t["image"].to_numpy(zero_copy_only=False)
        chunks += [{{"id": ids[s:s + PRE_BATCH], "image": imgs[s:s + PRE_BATCH]}}
                   for s in range(0, len(ids), PRE_BATCH)]
    del tables
    with ThreadPoolExecutor(CORES) as ex:
        pre = list(ex.map(preprocess, chunks))
    del chunks
    # stage 2: the model over everything (PRE_BATCH == MODEL_BATCH: no re-batching copy)
    assert PRE_BATCH == MODEL_BATCH
    model = Model(SEED)
    outs = [model(b) for b in pre]
    del pre
    # stage 3: write
    cols = {{c: np.concatenate([o[c] for o in outs]) for c in outs[0]}}
    t = pa.table(cols)
    per = -(-t.num_rows // len(paths))
    for k in range(len(paths)):
        pq.write_table(t.slice(k * per, per), os.path.join(OUT, "part-%05d.parquet" % k))
{done}'''
    elif engine == "measure":
        body = f'''
def main():
    import glob, os
    import pyarrow as pa, pyarrow.parquet as pq
    import pyarrow.compute as pc
    ex = {extra!r}
    n = ex["sample"]
    t = pa.concat_tables([pq.read_table(p) for p in sorted(glob.glob(os.path.join(IN, "*.parquet")))])
    t = t.sort_by("id").slice(0, n + PRE_BATCH)
    ids, imgs = t["id"].to_numpy(), t["image"].to_numpy(zero_copy_only=False)
    warm = {{"id": ids[n:], "image": imgs[n:]}}
    preprocess(warm)
    pre_ts = []
    for _ in range(ex["reps"]):
        t0 = time.perf_counter()
        pre = [preprocess({{"id": ids[s:min(n, s + PRE_BATCH)], "image": imgs[s:min(n, s + PRE_BATCH)]}})
               for s in range(0, n, PRE_BATCH)]
        pre_ts.append(time.perf_counter() - t0)
    pre_s = float(np.min(pre_ts))
    x = np.concatenate([b["image"] for b in pre])
    if ex.get("kept_heap"):  # the heap settings of streambatch's actors
        from streambatch.executor.backends.heap import keep_heap
        keep_heap()
    model = Model(SEED)
    model({{"id": ids[:MODEL_BATCH], "image": x[:MODEL_BATCH]}})
    model_ts = []
    for _ in range(ex["reps"]):
        t0 = time.perf_counter()
        outs = [model({{"id": ids[s:min(n, s + MODEL_BATCH)], "image": x[s:min(n, s + MODEL_BATCH)]}})
                for s in range(0, n, MODEL_BATCH)]
        model_ts.append(time.perf_counter() - t0)
    model_s = float(np.min(model_ts))
    logits = np.stack([np.concatenate([o["l%d" % k] for o in outs]) for k in range(10)], axis=1)
    with open(ex["result"], "w") as f:
        json.dump({{"pre_s_per_image": pre_s / n, "model_s_per_image": model_s / n,
                   "pre_runs_s": pre_ts, "model_runs_s": model_ts,
                   "ids": ids[:n].tolist(), "logits": logits.tolist()}}, f)
'''
    else:
        raise ValueError(engine)
    return head + body + '\nif __name__ == "__main__":\n    main()\n'


# --------------------------------------------------------------------------- checks
def read_output(engine, out_dir, n):
    import numpy as np
    import pyarrow.parquet as pq

    files = sorted(glob.glob(os.path.join(out_dir, "**", "*.parquet"), recursive=True))
    if not files:
        raise SystemExit(f"FAILED: {engine}: no parquet files written under {out_dir}")
    cols = ["id", "pred"] + [f"l{k}" for k in range(10)]
    tabs = [pq.read_table(p, columns=cols) for p in files]
    ids = np.concatenate([t["id"].to_numpy() for t in tabs])
    if len(ids) != n:
        raise SystemExit(f"FAILED: {engine}: {len(ids)} output rows, expected {n} ({len(files)} files)")
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    if not np.array_equal(ids, np.arange(n)):
        dup = int(len(ids) - len(np.unique(ids)))
        raise SystemExit(f"FAILED: {engine}: ids are not 0..{n - 1} each once ({dup} duplicates)")
    pred = np.concatenate([t["pred"].to_numpy() for t in tabs])[order]
    logits = np.stack([np.concatenate([t[f"l{k}"].to_numpy() for t in tabs]) for k in range(10)],
                      axis=1)[order]
    if not np.array_equal(pred, logits.argmax(axis=1)):
        raise SystemExit(f"FAILED: {engine}: pred is not argmax(logits)")
    return {"pred": pred, "logits": logits, "files": len(files)}


def compare(engine, got, ref_ids, ref_logits, what):
    """Logits within ATOL, predictions equal except where the top-2 logits are within ATOL."""
    import numpy as np

    g = got["logits"][ref_ids]
    diff = float(np.max(np.abs(g - ref_logits))) if len(ref_ids) else 0.0
    if not diff <= ATOL:
        i = int(np.argmax(np.max(np.abs(g - ref_logits), axis=1)))
        raise SystemExit(f"FAILED: {engine}: logits differ from {what} by {diff:.3g} > {ATOL} "
                         f"(id {ref_ids[i]}: {g[i].tolist()} vs {ref_logits[i].tolist()})")
    top2 = np.sort(ref_logits, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > ATOL
    bad = np.nonzero(clear & (g.argmax(axis=1) != ref_logits.argmax(axis=1)))[0]
    if len(bad):
        raise SystemExit(f"FAILED: {engine}: {len(bad)} predictions differ from {what} "
                         f"(e.g. id {ref_ids[bad[0]]})")
    return diff


# --------------------------------------------------------------------------- runs
def _parse(stdout, mark, conv):
    val = None
    for ln in stdout.splitlines():
        if ln.startswith(mark):
            val = conv(ln[len(mark):])
    return val


def measure_bound(in_dir, n, cores, sample):
    """Per-image times measured in a fresh process; the model twice, with glibc's
    default heap and with the kept heap streambatch's actors use (a third faster
    for this CNN: fewer page faults), and the faster kept, so the bound is what
    the model can do at best, not what the default allocator lets it do."""
    runs = [_measure_once(in_dir, cores, sample, kept) for kept in (False, True)]
    m = runs[0]
    m["model_s_per_image_default_heap"] = runs[0]["model_s_per_image"]
    m["model_s_per_image"] = min(r["model_s_per_image"] for r in runs)
    return bound_from(m, n, cores)


def _measure_once(in_dir, cores, sample, kept_heap):
    with tempfile.TemporaryDirectory(prefix="sb-w1-") as td:
        res_p = os.path.join(td, "m.json")
        code = job_code("measure", in_dir, "", cores, None, {"sample": sample, "result": res_p,
                                                                "reps": MEASURE_REPS,
                                                                "kept_heap": kept_heap})
        run_python(code, timeout=900, as_file=True).check("bound measurement")
        with open(res_p) as f:
            return json.load(f)


def bound_from(m, n, cores):
    """The pipelined bound from per-image times (see the module docstring)."""
    pre_s = n * m["pre_s_per_image"]
    model_s = n * m["model_s_per_image"]
    m.update(pre_s=pre_s, model_s=model_s, cpu_s=pre_s + model_s,
             bound_s=max((pre_s + model_s) / cores, model_s),
             bound_by="model" if model_s >= (pre_s + model_s) / cores else "CPU")
    return m


def run_engine(engine, runs, warmup, in_dir, out_root, n, cores, budget, refs, verbose,
               pss_interval):
    out_dir = os.path.join(out_root, engine)
    recs = []
    for i in range(warmup + runs):
        shutil.rmtree(out_dir, ignore_errors=True)
        code = job_code(engine, in_dir, out_dir, cores, budget)
        r = run_python(code, timeout=1800, interval=0.02, full_interval=pss_interval,
                       scan_interval=0.25, as_file=True).check(f"{engine} run {i + 1}")
        out = read_output(engine, out_dir, n)
        d_sample = compare(engine, out, refs["sample_ids"], refs["sample_logits"],
                           "the in-process reference sample")
        if "full" not in refs:
            refs["full"], refs["full_from"] = out["logits"], engine
            d_full = 0.0
        else:
            import numpy as np
            d_full = compare(engine, out, np.arange(n), refs["full"], f"the {refs['full_from']} run")
        shutil.rmtree(out_dir, ignore_errors=True)
        job_s = _parse(r.stdout, JOB_MARK, float)
        info = _parse(r.stdout, INFO_MARK, json.loads) or {}
        m = r.mem
        rec = {"wall_s": r.wall_s, "job_s": job_s, "rss": m.rss, "pss": m.pss, "uss": m.uss,
               "shm": m.shm, "pss_plus_shm": m.pss_plus_shm, "max_nprocs": m.max_nprocs, "files": out["files"],
               "max_diff_sample": d_sample, "max_diff_full": d_full, "lingering": r.lingering,
               "peak_buffered_bytes": info.get("peak_buffered_bytes"),
               "memory_budget": info.get("memory_budget"), "stats": info.get("stats"),
               "stats_error": info.get("stats_error")}
        tag = "warm-up" if i < warmup else f"run {i - warmup + 1}/{runs}"
        if verbose:
            print(f"  {engine:19s} {tag}: job {fmt_s(job_s, 2)} s ({n / job_s:.0f} rows/s; process "
                  f"{r.wall_s:.2f} s)  RSS {fmt_mb(m.rss)} MB  PSS {fmt_mb(m.pss)} MB  shm+ "
                  f"{fmt_mb(m.shm)} MB  procs {m.max_nprocs}  files {out['files']}  max |dlogit| "
                  f"{max(d_sample, d_full):.1e}"
                  + (f"  buffered peak {fmt_mb(rec['peak_buffered_bytes'])} of "
                     f"{fmt_mb(rec['memory_budget'])} MiB" if rec["peak_buffered_bytes"] is not None else "")
                  + (f"  stats error {rec['stats_error']}" if rec["stats_error"] else "")
                  + (f"  LINGERING {r.lingering}" if r.lingering else "")
                  + f"  loadavg {os.getloadavg()[0]:.1f}", flush=True)
        if i >= warmup:
            recs.append(rec)
    return recs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="measured runs per engine; medians (default 3)")
    ap.add_argument("--warmup", type=int, default=0, help="unmeasured runs per engine first (default 0)")
    ap.add_argument("--quick", action="store_true", help="800 images (in 20 files), 1 run per engine (~2 min in all)")
    ap.add_argument("--images", type=int, default=None, help="number of images (default 4000)")
    ap.add_argument("--files", type=int, default=None, help="parquet files (default 20)")
    ap.add_argument("--data-dir", default="bench-data", help="input cache and output (default ./bench-data)")
    ap.add_argument("--engines", default=",".join(ENGINES), help=f"comma list among {','.join(ENGINES)}")
    ap.add_argument("--skip-ray", action="store_true", help="leave Ray Data out")
    ap.add_argument("--budget-mb", type=int, default=None,
                    help="streambatch memory_budget in MiB (default: the engine's default)")
    ap.add_argument("--cores", type=int, default=None, help="num_cpus for the engines (default: detected)")
    ap.add_argument("--pss-interval", type=float, default=1.0, help="seconds between PSS samples (default 1.0)")
    ap.add_argument("--show-stats", action="store_true", help="print each engine's stats report (last run)")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    ap.add_argument("-q", "--quiet", action="store_true", help="no per-run lines")
    args = ap.parse_args(argv)

    engines = [e for e in args.engines.split(",") if e]
    if args.skip_ray:
        engines = [e for e in engines if e != "ray"]
    bad = set(engines) - set(ENGINES)
    if bad:
        ap.error(f"unknown engine(s): {sorted(bad)}")
    n = args.images or (800 if args.quick else 4000)
    n_files = args.files or 20
    runs = 1 if args.quick and args.runs == 3 else args.runs
    try:
        cores = args.cores or len(os.sched_getaffinity(0))
    except AttributeError:
        cores = args.cores or os.cpu_count() or 1
    budget = args.budget_mb * MiB if args.budget_mb else None

    data_dir = os.path.abspath(args.data_dir)
    os.makedirs(data_dir, exist_ok=True)
    in_dir, man = ensure_data(data_dir, n, n_files, SEED)
    warm_page_cache(in_dir)
    out_root = os.path.join(data_dir, "out", "w1")
    print(f"W1 batch inference: {man['images']:,} {IMAGE_SIZE}x{IMAGE_SIZE} JPEGs in {man['files']} files "
          f"({man['jpeg_bytes'] / man['images'] / 1024:.1f} KB each, {man['disk_bytes'] / MiB:.0f} MiB on "
          f"disk); preprocess batch {PRE_BATCH}, model batch {MODEL_BATCH}; cores {cores}; "
          f"{machine_summary()}", flush=True)

    import numpy as np

    m = measure_bound(in_dir, n, cores, min(SAMPLE, n))
    refs = {"sample_ids": np.asarray(m["ids"]), "sample_logits": np.asarray(m["logits"], dtype=np.float32)}
    print(f"  in-process: preprocess {1e3 * m['pre_s_per_image']:.2f} ms/image, model "
          f"{1e3 * m['model_s_per_image']:.2f} ms/image (default heap "
          f"{1e3 * m['model_s_per_image_default_heap']:.2f}; sample of {len(m['ids'])})")
    print(f"  bound = max((pre {m['pre_s']:.1f} s + model {m['model_s']:.1f} s) / {cores} cores, model "
          f"{m['model_s']:.1f} s) = {m['bound_s']:.2f} s = {n / m['bound_s']:.0f} rows/s "
          f"({m['bound_by']}-bound)", flush=True)

    order = sorted(engines, key=lambda e: ENGINES.index(e))  # loop first: the full reference
    results = {}
    for e in order:
        recs = run_engine(e, runs, args.warmup, in_dir, out_root, n, cores, budget, refs,
                          not args.quiet, args.pss_interval)
        results[e] = recs
        if args.show_stats:
            st = recs[-1]["stats"] or recs[-1]["stats_error"]
            if st:
                print(f"--- {e} stats (last run) ---\n{st}\n", flush=True)
    shutil.rmtree(out_root, ignore_errors=True)

    m2 = measure_bound(in_dir, n, cores, min(SAMPLE, n))
    d2 = float(np.max(np.abs(np.asarray(m2["logits"], dtype=np.float32) - refs["sample_logits"])))
    if not d2 <= ATOL:
        raise SystemExit(f"FAILED: the in-process reference is not reproducible: logits differ by {d2:.3g}")
    print(f"  measured again after the runs: preprocess {1e3 * m2['pre_s_per_image']:.2f} ms/image, model "
          f"{1e3 * m2['model_s_per_image']:.2f} ms/image (default heap "
          f"{1e3 * m2['model_s_per_image_default_heap']:.2f})")
    for k in ("pre_s_per_image", "model_s_per_image"):
        m[k] = min(m[k], m2[k])
    m = bound_from(m, n, cores)
    print(f"  bound (faster of the two measurements) = max((pre {m['pre_s']:.1f} s + model "
          f"{m['model_s']:.1f} s) / {cores} cores, model {m['model_s']:.1f} s) = {m['bound_s']:.2f} s = "
          f"{n / m['bound_s']:.0f} rows/s ({m['bound_by']}-bound)")
    if "loop" in results:
        lj = median([r["job_s"] for r in results["loop"]])
        print(f"  sanity: the single-process loop took {lj:.2f} s; pre + model = "
              f"{m['pre_s'] + m['model_s']:.2f} s (+ torch import, parquet I/O)")

    print()
    summ = {}
    rows = []
    for e in order:
        recs = results[e]
        s = {k: median([r[k] for r in recs]) for k in ("job_s", "wall_s", "rss", "pss", "shm",
                                                          "pss_plus_shm")}
        s["max_rss"] = max(r["rss"] or 0 for r in recs)
        s["max_pss"] = max(r["pss"] or 0 for r in recs)
        s["max_nprocs"] = max(r["max_nprocs"] for r in recs)
        s["eff"] = m["bound_s"] / s["job_s"]
        summ[e] = s
        rows.append([e, str(len(recs)), fmt_s(s["job_s"], 2), f"{n / s['job_s']:.0f}",
                     f"{100 * s['eff']:.0f}%", fmt_s(s["wall_s"], 2), f"{n / s['wall_s']:.0f}",
                     fmt_mb(s["rss"]), fmt_mb(s["pss"]), fmt_mb(s["shm"]), fmt_mb(s["pss_plus_shm"]),
                     fmt_mb(s["max_rss"]), str(s["max_nprocs"])])
    print_table(["engine", "runs", "job s", "rows/s", "eff (bound/job)", "process s", "rows/s (process)",
                 "peak RSS MB", "peak PSS MB", "peak shm+ MB", "PSS+shm MB", "worst RSS MB", "procs"], rows)
    print(f"  (medians over runs; bound {m['bound_s']:.2f} s = {n / m['bound_s']:.0f} rows/s; job: "
          f"dataset built -> output written, inside the process; process: the whole fresh "
          f"interpreter; memory: peak of the process-tree sum; shm+: growth of /dev/shm, RAM that "
          f"no process's RSS/PSS shows while unmapped; PSS+shm: an upper bound)")
    if "ray" in summ:
        print()
        print_table(["engine", "speed-up vs ray (job)", "speed-up vs ray (process)", "RSS vs ray"],
                    [[e, f"{summ['ray']['job_s'] / summ[e]['job_s']:.2f}x",
                      f"{summ['ray']['wall_s'] / summ[e]['wall_s']:.2f}x",
                      f"{summ[e]['rss'] / summ['ray']['rss']:.2f}x"] for e in order if e != "ray"])

    targets = {}
    for e in ("streambatch", "streambatch-threads", "streambatch-processes"):
        if e not in summ:
            continue
        s = summ[e]
        ok_eff = s["eff"] >= TARGET_EFF
        ok_rss = s["max_rss"] < TARGET_RSS
        vs = summ["ray"]["job_s"] / s["job_s"] if "ray" in summ else None
        targets[e] = {"efficiency": ok_eff, "rss": ok_rss,
                      "vs_ray": None if vs is None else vs >= TARGET_VS_RAY}
        print()
        print(f"{e}: target >= {TARGET_EFF:.0%} of the bound : {'MET' if ok_eff else 'NOT MET'} "
              f"({100 * s['eff']:.0f}%)")
        if vs is not None:
            print(f"{e}: target >= {TARGET_VS_RAY}x Ray Data     : {'MET' if vs >= TARGET_VS_RAY else 'NOT MET'} "
                  f"({vs:.2f}x)")
        print(f"{e}: target peak RSS < 1 GB     : {'MET' if ok_rss else 'NOT MET'} "
              f"(worst run {fmt_mb(s['max_rss'])} MB; PSS {fmt_mb(s['max_pss'])} MB; /dev/shm growth "
              f"{fmt_mb(s['shm'])} MB, PSS+shm {fmt_mb(s['pss_plus_shm'])} MB)")
    for e in order:
        ling = [r["lingering"] for r in results[e] if r["lingering"]]
        if ling:
            print(f"note: {e}: processes alive after the job's process exited (terminated by the "
                  f"benchmark): {ling}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"manifest": man, "cores": cores, "budget": budget,
                       "bound": {k: m[k] for k in ("pre_s_per_image", "model_s_per_image", "pre_s",
                                                   "model_s", "bound_s", "bound_by")},
                       "results": results, "summary": summ, "targets": targets},
                      f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
