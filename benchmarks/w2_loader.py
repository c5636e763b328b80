"""W2 — training-data loader: parquet of JPEGs -> decode + random crop 224 -> torch
batches of 64 -> a fixed 5 ms training step, one epoch.

Input: the W1 data set (see w1_inference.py): N [4,000] 256x256 JPEGs (seeded
synthetic images, quality 90) in F [20] parquet files (id:int64, image:binary),
generated once under --data-dir (default ./bench-data) and reused.

Per row (the same UDF in every loader): decode (Pillow) -> RGB -> a random
224x224 crop whose offset comes from np.random.default_rng([SEED, id]) (seeded
per row, so every loader produces the same pixels) -> uint8 CHW (3, 224, 224).

Loaders (each run in a fresh process; the clock starts after imports and
sb.init/ray.init, before the dataset/loader is built):
  dataloader   torch.utils.data.DataLoader(map-style Dataset, batch_size=64,
               num_workers=2): the Dataset reads the JPEG bytes from the parquet
               files (each worker reads a file when it first needs it and keeps
               the last two), decodes + crops one row per __getitem__; default
               collate; prefetch_factor=2 (torch's default).
  streambatch  sb.init(num_cpus=2); read_parquet(IN) -> map_batches(decode_crop,
               batch_size=PRE_BATCH [64], batch_format="numpy", releases_gil=True)
               -> iter_torch_batches(batch_size=64); the library's defaults
               otherwise (one read task per file here, prefetch_batches=1).
               Pillow's decode and numpy release the GIL, so the UDF runs on
               threads in the trainer's process and blocks reach the loader
               without being copied between processes; UDF batches of 64 = one
               training batch (16 and 32 were slower here; the default 1024, i.e.
               a whole 200-row file, delays the first batch to ~1 s). Tune with
               --pre-batch, --read-blocks (override_num_blocks), --prefetch.
  ray          ray.init(num_cpus=2); ray.data.read_parquet -> map_batches(
               decode_crop, batch_format="numpy", batch_size=PRE_BATCH) ->
               iter_torch_batches(batch_size=64); Ray's defaults otherwise.

The training step: time.sleep(0.005) per batch (a GPU step that leaves the CPU
free), after recording the batch's ids. Reported per loader, median over --runs
[3] fresh-process runs:
  rows/s, batches/s   N / epoch time, batches / epoch time
  first batch         seconds from the start to the first batch in hand
  idle                time the loop spent waiting for the next batch / epoch time
                      (first batch included)
Every run must deliver every id exactly once, with images of shape (3, 224, 224)
uint8 whose pixel checksum equals the one computed in-process for a sample of ids;
a wrong result aborts with FAILED (exit status 1).

Targets (issue 7): streambatch >= DataLoader(num_workers=2) throughput, and its
first batch in < 0.5 s.

    python benchmarks/w2_loader.py [--runs 3] [--images 4000] [--skip-ray] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _util import fmt_s, machine_summary, median, print_table, run_python  # noqa: E402
from w1_inference import SEED, ensure_data, warm_page_cache  # noqa: E402

CORES = 2
BATCH = 64
PRE_BATCH = 64
PREFETCH = None  # streambatch prefetch_batches (None: the library default)
READ_BLOCKS = None  # streambatch override_num_blocks (None: the default, one task per file)
CROP = 224
STEP_S = 0.005
SAMPLE = 64  # ids whose pixel checksums every loader must reproduce
RESULT_MARK = "__W2_RESULT__"
ENGINES = ("dataloader", "streambatch", "ray")
TARGET_FIRST_S = 0.5

UDF_SRC = '''
import io
import numpy as np

def crop_one(jpeg, row_id):
    """JPEG bytes -> uint8 (3, CROP, CROP): a random crop seeded by (SEED, row_id)."""
    from PIL import Image
    im = Image.open(io.BytesIO(jpeg)).convert("RGB")
    w, h = im.size
    rng = np.random.default_rng([SEED, int(row_id)])
    x0, y0 = int(rng.integers(0, w - CROP + 1)), int(rng.integers(0, h - CROP + 1))
    a = np.asarray(im.crop((x0, y0, x0 + CROP, y0 + CROP)))
    return np.ascontiguousarray(a.transpose(2, 0, 1))

def decode_crop(batch):
    """A numpy batch {id, image: JPEG bytes} -> {id, image: uint8 (n, 3, CROP, CROP)}."""
    ids = np.asarray(batch["id"])
    out = np.empty((len(ids), 3, CROP, CROP), dtype=np.uint8)
    for i, (b, r) in enumerate(zip(batch["image"], ids)):
        out[i] = crop_one(b, r)
    return {"id": ids, "image": out}
'''

LOOP_SRC = '''
def train(batches, t0, n):
    """One epoch into a STEP_S step; returns the measurements and per-id checksums."""
    import time
    seen = np.zeros(n, dtype=np.int64)
    sums = {}
    wait = 0.0
    first = None
    nb = rows = 0
    it = iter(batches)
    while True:
        t = time.perf_counter()
        try:
            b = next(it)
        except StopIteration:
            wait += time.perf_counter() - t
            break
        now = time.perf_counter()
        wait += now - t
        if first is None:
            first = now - t0
        ids, img = b["id"], b["image"]
        if tuple(img.shape[1:]) != (3, CROP, CROP) or str(img.dtype) != "torch.uint8":
            raise SystemExit("FAILED: batch image has shape %s dtype %s" % (tuple(img.shape), img.dtype))
        ids_np = ids.numpy()
        np.add.at(seen, ids_np, 1)
        for j in np.nonzero(ids_np < SAMPLE)[0]:
            sums[int(ids_np[j])] = int(img[int(j)].to(dtype=__import__("torch").int64).sum())
        nb += 1
        rows += len(ids_np)
        time.sleep(STEP_S)  # the training step
    total = time.perf_counter() - t0
    return {"total_s": total, "first_s": first, "wait_s": wait, "batches": nb, "rows": rows,
            "exactly_once": int((seen == 1).sum()), "sums": sums}
'''


def job_code(engine, in_dir, n, pre_batch=PRE_BATCH, prefetch=PREFETCH, read_blocks=READ_BLOCKS,
             trace=None):
    head = (f"import sys, time, json\nIN, N, SEED, CROP = {in_dir!r}, {n}, {SEED}, {CROP}\n"
            f"CORES, BATCH, STEP_S, SAMPLE = {CORES}, {BATCH}, {STEP_S}, {SAMPLE}\n"
            f"PRE_BATCH, PREFETCH, READ_BLOCKS = {pre_batch}, {prefetch}, {read_blocks}\n"
            f"TRACE = {trace!r}\n"
            + UDF_SRC + LOOP_SRC)
    report = f'    sys.stdout.write("\\n{RESULT_MARK}" + json.dumps(res) + "\\n")\n'
    if engine == "streambatch":
        body = f'''
def main():
    import streambatch as sb
    import torch
    sb.init(num_cpus=CORES, trace=TRACE)
    t0 = time.perf_counter()
    read_kw = {{}} if READ_BLOCKS is None else {{"override_num_blocks": READ_BLOCKS}}
    iter_kw = {{}} if PREFETCH is None else {{"prefetch_batches": PREFETCH}}
    ds = (sb.read_parquet(IN, **read_kw)
          .map_batches(decode_crop, batch_size=PRE_BATCH, batch_format="numpy", releases_gil=True))
    res = train(ds.iter_torch_batches(batch_size=BATCH, **iter_kw), t0, N)
    try:
        res["stats"] = str(ds.stats())
    except Exception as e:  # informational only
        res["stats"] = "stats unavailable: %r" % (e,)
{report}'''
    elif engine == "dataloader":
        body = f'''
import glob, os
import pyarrow.parquet as pq

class JpegParquet:
    """Map-style dataset over the parquet files: row i -> {{id, image uint8 CHW}}."""

    def __init__(self, directory):
        self.paths = sorted(glob.glob(os.path.join(directory, "*.parquet")))
        counts = [pq.ParquetFile(p).metadata.num_rows for p in self.paths]
        self.starts = np.cumsum([0] + counts)
        self.cache = {{}}

    def __len__(self):
        return int(self.starts[-1])

    def _file(self, k):
        if k not in self.cache:
            if len(self.cache) >= 2:
                self.cache.pop(next(iter(self.cache)))
            t = pq.read_table(self.paths[k], columns=["id", "image"])
            self.cache[k] = (t["id"].to_numpy(), t["image"].to_numpy(zero_copy_only=False))
        return self.cache[k]

    def __getitem__(self, i):
        k = int(np.searchsorted(self.starts, i, side="right") - 1)
        ids, imgs = self._file(k)
        j = i - int(self.starts[k])
        return {{"id": int(ids[j]), "image": __import__("torch").from_numpy(crop_one(imgs[j], ids[j]))}}

def main():
    import torch
    from torch.utils.data import DataLoader
    t0 = time.perf_counter()
    loader = DataLoader(JpegParquet(IN), batch_size=BATCH, num_workers=CORES)
    res = train(loader, t0, N)
{report}'''
    elif engine == "ray":
        body = f'''
def main():
    import logging
    import ray
    import torch
    ray.init(address="local", num_cpus=CORES, include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING)
    ray.data.DataContext.get_current().enable_progress_bars = False
    t0 = time.perf_counter()
    ds = ray.data.read_parquet(IN).map_batches(decode_crop, batch_size=PRE_BATCH,
                                               batch_format="numpy")
    res = train(ds.iter_torch_batches(batch_size=BATCH), t0, N)
    try:
        res["stats"] = ds.stats()
    except Exception as e:
        res["stats"] = "stats unavailable: %r" % (e,)
    ray.shutdown()
{report}'''
    elif engine == "reference":
        body = f'''
def main():
    import glob, os
    import pyarrow as pa, pyarrow.parquet as pq
    t = pa.concat_tables([pq.read_table(p) for p in sorted(glob.glob(os.path.join(IN, "*.parquet")))])
    t = t.sort_by("id").slice(0, SAMPLE)
    ids, imgs = t["id"].to_numpy(), t["image"].to_numpy(zero_copy_only=False)
    res = {{"sums": {{int(r): int(crop_one(b, r).astype(np.int64).sum()) for b, r in zip(imgs, ids)}}}}
{report}'''
    else:
        raise ValueError(engine)
    return head + body + '\nif __name__ == "__main__":\n    main()\n'


def run_job(engine, in_dir, n, **knobs):
    return run_result(engine, job_code(engine, in_dir, n, **knobs))


def run_result(what, code):
    """Run a job's code in a fresh process; its result line, with the process's wall time."""
    r = run_python(code, as_file=True, interval=0.05).check(what)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith(RESULT_MARK)]
    if not lines:
        raise SystemExit(f"FAILED: {what}: no result line\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    res = json.loads(lines[-1][len(RESULT_MARK):])
    res["process_s"] = r.wall_s
    return res


def slot_idle(trace_path, slots=CORES):
    """Where the decode slots sat idle in one streambatch run, from its Chrome trace.

    ``starved_s``: slot-seconds with fewer than ``slots`` tasks running before the
    last task started (work was left but no task ran: the driver or the policy held
    it); ``tail_s``: slot-seconds idle after the last task started (nothing left to
    give an idle slot); ``busy_s``: task seconds; ``wall_s``: the executor's run.
    """
    from streambatch.executor.trace import load_trace

    with open(trace_path) as f:
        wall_s = json.load(f).get("otherData", {}).get("wall_s")
    tasks = sorted((e["ts"] / 1e6, (e["ts"] + e["dur"]) / 1e6) for e in load_trace(trace_path)
                   if e.get("ph") == "X")
    if not tasks:
        return None
    end = max(wall_s or 0.0, max(b for _, b in tasks))
    last_start = tasks[-1][0]
    edges = sorted({0.0, last_start, end, *(a for a, _ in tasks), *(b for _, b in tasks)})
    starved = tail = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        mid = (lo + hi) / 2
        idle = max(0, slots - sum(1 for a, b in tasks if a <= mid < b)) * (hi - lo)
        if hi <= last_start:
            starved += idle
        else:
            tail += idle
    return {"starved_s": starved, "tail_s": tail, "busy_s": sum(b - a for a, b in tasks),
            "wall_s": end, "first_task_s": tasks[0][0], "tasks": len(tasks)}


def check(engine, res, n, ref):
    if res["rows"] != n or res["exactly_once"] != n:
        raise SystemExit(f"FAILED: {engine}: {res['rows']} rows delivered, {res['exactly_once']} of "
                         f"{n} ids exactly once")
    got = {int(k): v for k, v in res["sums"].items()}
    bad = [k for k, v in ref.items() if got.get(k) != v]
    if bad:
        raise SystemExit(f"FAILED: {engine}: pixels of {len(bad)} sampled ids differ from the "
                         f"reference (e.g. id {bad[0]}: {got.get(bad[0])} vs {ref[bad[0]]})")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--images", type=int, default=4000)
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--data-dir", default="bench-data")
    ap.add_argument("--skip-ray", action="store_true")
    ap.add_argument("--json", help="write the measurements here")
    ap.add_argument("--pre-batch", type=int, default=PRE_BATCH, help="map_batches batch_size")
    ap.add_argument("--prefetch", type=int, default=PREFETCH,
                    help="streambatch prefetch_batches (default: the library's)")
    ap.add_argument("--read-blocks", type=int, default=READ_BLOCKS,
                    help="streambatch read_parquet override_num_blocks (default: the library's)")
    ap.add_argument("--engines", default=",".join(ENGINES), help="comma-separated subset")
    ap.add_argument("--show-stats", action="store_true", help="print streambatch's ds.stats()")
    ap.add_argument("--trace", metavar="DIR", help="write a Chrome trace of every streambatch run "
                    "under DIR and report where its decode slots sat idle")
    args = ap.parse_args(argv)

    in_dir, man = ensure_data(args.data_dir, args.images, args.files, SEED)
    n = man["images"]
    warm_page_cache(in_dir)
    print(f"W2 loader: {n} JPEGs in {args.files} files ({man['jpeg_bytes'] / 2**20:.0f} MiB), "
          f"batch {BATCH}, step {STEP_S * 1e3:.0f} ms, {args.runs} run(s) each; {machine_summary()}",
          flush=True)
    ref = {int(k): v for k, v in run_job("reference", in_dir, n)["sums"].items()}
    engines = [e for e in args.engines.split(",") if not (args.skip_ray and e == "ray")]
    knobs = {"pre_batch": args.pre_batch, "prefetch": args.prefetch, "read_blocks": args.read_blocks}
    runs = {e: [] for e in engines}
    for k in range(args.runs):  # interleave engines so drift in machine load hits all alike
        for e in engines:
            trace = None
            if args.trace and e == "streambatch":
                os.makedirs(args.trace, exist_ok=True)
                trace = os.path.abspath(os.path.join(args.trace, f"w2_streambatch_{k + 1}.json"))
            res = run_job(e, in_dir, n, **knobs, **({"trace": trace} if trace else {}))
            check(e, res, n, ref)
            runs[e].append(res)
            slots = slot_idle(trace) if trace else None
            extra = "" if slots is None else (
                f"  slots: busy {slots['busy_s']:.2f} s of 2x{slots['wall_s']:.2f} s, idle with "
                f"work left {slots['starved_s']:.2f} s (first task at {slots['first_task_s']:.3f}"
                f" s), tail {slots['tail_s']:.2f} s, {slots['tasks']} tasks")
            print(f"  run {k + 1} {e:<12} {n / res['total_s']:8.0f} rows/s  first "
                  f"{res['first_s']:.3f} s  idle {res['wait_s'] / res['total_s']:.2f}{extra}",
                  flush=True)

    summary = {}
    for e in engines:
        rs = runs[e]
        summary[e] = {
            "rows_per_s": median([n / r["total_s"] for r in rs]),
            "batches_per_s": median([r["batches"] / r["total_s"] for r in rs]),
            "first_s": median([r["first_s"] for r in rs]),
            "idle": median([r["wait_s"] / r["total_s"] for r in rs]),
            "epoch_s": median([r["total_s"] for r in rs]),
            "process_s": median([r["process_s"] for r in rs]),
        }
    base = summary["dataloader"]["rows_per_s"] if "dataloader" in summary else None
    rows = []
    for e in engines:
        s = summary[e]
        rows.append([e, f"{s['rows_per_s']:.0f}", f"{s['batches_per_s']:.1f}", fmt_s(s["first_s"]),
                     f"{s['idle']:.2f}", fmt_s(s["epoch_s"], 2), fmt_s(s["process_s"], 2),
                     f"{s['rows_per_s'] / base:.2f}x" if base else "-"])
    print()
    print_table(["loader", "rows/s", "batches/s", "first batch s", "idle", "epoch s", "process s",
                 "vs DataLoader"], rows)
    print(f"streambatch knobs: map_batches(batch_size={args.pre_batch}, releases_gil=True), "
          f"read_parquet(override_num_blocks={args.read_blocks or 'default'}), "
          f"iter_torch_batches(prefetch_batches={args.prefetch or 'default'})")
    sb_s = summary.get("streambatch")
    if sb_s is not None:
        print()
        if base:
            print(f"target streambatch >= DataLoader throughput: "
                  f"{'MET' if sb_s['rows_per_s'] >= base else 'NOT MET'} "
                  f"({sb_s['rows_per_s'] / base:.2f}x)")
        print(f"target streambatch first batch < {TARGET_FIRST_S} s: "
              f"{'MET' if sb_s['first_s'] < TARGET_FIRST_S else 'NOT MET'} ({sb_s['first_s']:.3f} s)")
        if args.show_stats:
            print("\nstreambatch ds.stats() of the last run:\n" + runs["streambatch"][-1]["stats"])
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"summary": summary, "runs": {e: [{k: v for k, v in r.items() if k != "sums"}
                                                        for r in rs] for e, rs in runs.items()}},
                      f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
