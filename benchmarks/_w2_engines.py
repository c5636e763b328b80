"""The W2 loaders' job code (see w2_loader.py's docstring), the W2 data set and the checks.

Each job is a Python script run in a fresh process (``run_result``); it prints one
result line (``RESULT_MARK`` + JSON). The script is assembled from HEAD (constants),
UDF_SRC (decode + seeded crop, the same in every loader), LOOP_SRC (the training loop),
MAPSTYLE_SRC (the map-style Dataset) and one engine's body.
"""

from __future__ import annotations

import json
import os

import numpy as np
from _jpeg_data import IMAGE_SIZE, ensure_data
from _util import run_python
from w1_inference import SEED

CORES = 2
BATCH = 64
PRE_BATCH = 64
CROP = 224
STEP_S = 0.005
SAMPLE = 64  # ids whose pixel checksums every loader must reproduce
# SAMPLE_CHECK: the loop sums a sampled image with numpy. It used torch
# (`img.to(torch.int64).sum()`), a parallel op on torch's OpenMP threads that holds the
# trainer's GIL while it waits for them; on 2 busy cores it waited milliseconds each
# time. In a shuffled epoch the 64 sampled ids come in ~60 batches (in order, all in
# the first), so the check stalled the decode threads of an in-process loader during
# the whole epoch: +0.6-0.9 s of process CPU for streambatch-shuffle, +0.3-0.5 s for
# the shuffling DataLoader (perf: libgomp 14% and 10% of samples). The sums are equal.
BUFFER = 1000  # local_shuffle_buffer_size of streambatch-localbuf
RESULT_MARK = "__W2_RESULT__"
LABEL_MOD = 1000  # label = (id * 7919 + 13) % LABEL_MOD, checked for every row
W2_DATA_VERSION = 1

MAIN_ENGINES = ("iterable", "mapstyle", "streambatch", "ray")
SHUFFLE_ENGINES = ("dataloader-shuffle", "streambatch-shuffle", "streambatch-localbuf")
RANK_ENGINES = ("ddp-sampler", "streambatch-split")
BASELINE = {"main": "iterable", "shuffled": "dataloader-shuffle", "ranks": "ddp-sampler"}
SECTION = {**{e: "main" for e in (*MAIN_ENGINES, "streambatch-tuned")},
           **{e: "shuffled" for e in SHUFFLE_ENGINES}, **{e: "ranks" for e in RANK_ENGINES}}


def label_of(ids):
    return (np.asarray(ids, dtype=np.int64) * 7919 + 13) % LABEL_MOD


def ensure_w2_data(data_dir, n_images, n_files, seed):
    """The W1 JPEGs (_jpeg_data.ensure_data) plus a label column, one row group per file,
    written once under data_dir and reused; returns (dir, manifest)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    src, man = ensure_data(data_dir, n_images, n_files, seed)
    d = os.path.join(data_dir, f"w2_jpeg{IMAGE_SIZE}_{n_images}img_{n_files}f_s{seed}_v{W2_DATA_VERSION}")
    man_p = os.path.join(d, "_manifest.json")
    if os.path.exists(man_p):
        with open(man_p) as f:
            return d, json.load(f)
    os.makedirs(d, exist_ok=True)
    for name in sorted(p for p in os.listdir(src) if p.endswith(".parquet")):
        t = pq.read_table(os.path.join(src, name), columns=["id", "image"])
        t = t.append_column("label", pa.array(label_of(t["id"].to_numpy()), pa.int64()))
        pq.write_table(t, os.path.join(d, name), row_group_size=max(1, t.num_rows))
        if pq.ParquetFile(os.path.join(d, name)).metadata.num_row_groups != 1:
            raise SystemExit(f"FAILED: {name}: more than one row group written")
    man = {**man, "source": src, "columns": ["id", "image", "label"], "row_groups_per_file": 1}
    with open(man_p, "w") as f:
        json.dump(man, f, indent=2)
    return d, man


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
    """A numpy batch {id, image: JPEG bytes[, label]} -> {id, image: uint8 (n, 3, CROP, CROP)[, label]}."""
    ids = np.asarray(batch["id"])
    out = np.empty((len(ids), 3, CROP, CROP), dtype=np.uint8)
    for i, (b, r) in enumerate(zip(batch["image"], ids)):
        out[i] = crop_one(b, r)
    res = {"id": ids, "image": out}
    if "label" in batch:
        res["label"] = np.asarray(batch["label"])
    return res
'''

LOOP_SRC = '''
def train(batches, t0):
    """One epoch into a STEP_S step; the measurements, the id order and sample checksums."""
    import time
    import torch
    order, sums, sizes = [], {}, []
    wait = 0.0
    first = None
    bad_labels = 0
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
        if tuple(img.shape[1:]) != (3, CROP, CROP) or img.dtype != torch.uint8:
            raise SystemExit("FAILED: batch image has shape %s dtype %s" % (tuple(img.shape), img.dtype))
        ids_np = ids.numpy()
        if "label" in b:
            bad_labels += int((b["label"].numpy() != (ids_np * 7919 + 13) % LABEL_MOD).sum())
        order.extend(ids_np.tolist())
        sizes.append(len(ids_np))
        for j in np.nonzero(ids_np < SAMPLE)[0]:  # numpy: a torch op here would run
            # on torch's OpenMP threads holding the GIL (see SAMPLE_CHECK above)
            sums[int(ids_np[j])] = int(img[int(j)].numpy().sum(dtype=np.int64))
        time.sleep(STEP_S)  # the training step
    end = time.perf_counter()
    return {"total_s": end - t0, "end": end, "first_s": first, "wait_s": wait, "batches": len(sizes),
            "rows": len(order), "sizes": sizes, "order": order, "sums": sums, "bad_labels": bad_labels}
'''

MAPSTYLE_SRC = '''
import glob, os
import pyarrow.parquet as pq

class JpegParquet:
    """Map-style dataset over the parquet files: row i -> {id, image uint8 CHW, label}.

    Each worker reads a whole file (pq.read_table) when it first needs one of its rows
    and keeps the last cache_files files it read."""

    def __init__(self, directory, cache_files=2):
        self.paths = sorted(glob.glob(os.path.join(directory, "*.parquet")))
        counts = [pq.ParquetFile(p).metadata.num_rows for p in self.paths]
        self.starts = np.cumsum([0] + counts)
        self.cache = {}
        self.cache_files = cache_files

    def __len__(self):
        return int(self.starts[-1])

    def _file(self, k):
        if k not in self.cache:
            if len(self.cache) >= self.cache_files:
                self.cache.pop(next(iter(self.cache)))
            t = pq.read_table(self.paths[k], columns=COLUMNS)
            self.cache[k] = (t["id"].to_numpy(), t["image"].to_numpy(zero_copy_only=False),
                             t["label"].to_numpy())
        return self.cache[k]

    def __getitem__(self, i):
        import torch
        k = int(np.searchsorted(self.starts, i, side="right") - 1)
        ids, imgs, labels = self._file(k)
        j = i - int(self.starts[k])
        return {"id": int(ids[j]), "image": torch.from_numpy(crop_one(imgs[j], ids[j])),
                "label": int(labels[j])}
'''

ITERABLE_SRC = '''
import glob, os
import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset, get_worker_info

class RowGroups(IterableDataset):
    """Every (file, row group); worker w of k takes every k-th one from the w-th, reads it
    (read_row_group), decodes it in one loop into one uint8 array and yields its rows."""

    def __init__(self, directory):
        self.units = [(p, g) for p in sorted(glob.glob(os.path.join(directory, "*.parquet")))
                      for g in range(pq.ParquetFile(p).metadata.num_row_groups)]

    def __iter__(self):
        info = get_worker_info()
        w, k = (0, 1) if info is None else (info.id, info.num_workers)
        for path, g in self.units[w::k]:
            t = pq.ParquetFile(path).read_row_group(g, columns=COLUMNS)
            ids, labels = np.array(t["id"]), np.array(t["label"])  # writable, for from_numpy
            imgs = np.empty((len(ids), 3, CROP, CROP), dtype=np.uint8)
            for i, (b, r) in enumerate(zip(t["image"].to_numpy(zero_copy_only=False), ids)):
                imgs[i] = crop_one(b, r)
            ids_t, imgs_t, labels_t = torch.from_numpy(ids), torch.from_numpy(imgs), torch.from_numpy(labels)
            for i in range(len(ids)):
                yield {"id": ids_t[i], "image": imgs_t[i], "label": labels_t[i]}
'''

# the plain streambatch / Ray Data pipelines: `ds = <READ>` then these
SB_PIPE = 'sb.read_parquet(IN, columns=COLUMNS){shuffle}.map_batches(decode_crop, batch_size=BATCH, batch_format="numpy")'
REPORT = f'    sys.stdout.write("\\n{RESULT_MARK}" + json.dumps(res) + "\\n")\n'

SB_STATS = '''    try:
        res["stats"] = str(ds.stats())
    except Exception as e:  # informational only
        res["stats"] = "stats unavailable: %r" % (e,)
'''

BODIES = {
    "iterable": ITERABLE_SRC + '''
def main():
    from torch.utils.data import DataLoader
    t0 = time.perf_counter()
    res = train(DataLoader(RowGroups(IN), batch_size=BATCH, num_workers=CORES), t0)
''',
    "mapstyle": MAPSTYLE_SRC + '''
def main():
    import torch
    from torch.utils.data import DataLoader
    t0 = time.perf_counter()
    res = train(DataLoader(JpegParquet(IN), batch_size=BATCH, num_workers=CORES), t0)
''',
    "dataloader-shuffle": MAPSTYLE_SRC + '''
def main():
    import torch
    from torch.utils.data import DataLoader
    t0 = time.perf_counter()
    loader = DataLoader(JpegParquet(IN, cache_files=10**9), batch_size=BATCH, num_workers=CORES,
                        shuffle=True, generator=torch.Generator().manual_seed(EPOCH))
    res = train(loader, t0)
''',
    "streambatch": f'''
def main():
    import streambatch as sb
    import torch
    sb.init(num_cpus=CORES)
    t0 = time.perf_counter()
    ds = {SB_PIPE.format(shuffle="")}
    res = train(ds.iter_torch_batches(batch_size=BATCH), t0)
''' + SB_STATS,
    "streambatch-tuned": '''
def main():
    import streambatch as sb
    import torch
    sb.init(num_cpus=CORES)
    t0 = time.perf_counter()
    read_kw = {} if READ_BLOCKS is None else {"override_num_blocks": READ_BLOCKS}
    iter_kw = {} if PREFETCH is None else {"prefetch_batches": PREFETCH}
    map_kw = {"releases_gil": True} if RELEASES_GIL else {}
    ds = (sb.read_parquet(IN, columns=COLUMNS, **read_kw)
          .map_batches(decode_crop, batch_size=PRE_BATCH, batch_format="numpy", **map_kw))
    res = train(ds.iter_torch_batches(batch_size=BATCH, **iter_kw), t0)
''' + SB_STATS,
    "streambatch-shuffle": f'''
def main():
    import streambatch as sb
    import torch
    sb.init(num_cpus=CORES)
    t0 = time.perf_counter()
    ds = {SB_PIPE.format(shuffle=".random_shuffle(seed=EPOCH)")}
    res = train(ds.iter_torch_batches(batch_size=BATCH), t0)
''',
    "streambatch-localbuf": f'''
def main():
    import streambatch as sb
    import torch
    sb.init(num_cpus=CORES)
    t0 = time.perf_counter()
    ds = {SB_PIPE.format(shuffle="")}
    res = train(ds.iter_torch_batches(batch_size=BATCH, local_shuffle_buffer_size=BUFFER), t0)
''',
    "ray": '''
def main():
    import logging
    import ray
    import torch
    ray.init(address="local", num_cpus=CORES, include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING)
    ray.data.DataContext.get_current().enable_progress_bars = False
    t0 = time.perf_counter()
    ds = ray.data.read_parquet(IN, columns=COLUMNS).map_batches(decode_crop, batch_size=BATCH,
                                                               batch_format="numpy")
    res = train(ds.iter_torch_batches(batch_size=BATCH), t0)
    try:
        res["stats"] = ds.stats()
    except Exception as e:
        res["stats"] = "stats unavailable: %r" % (e,)
    ray.shutdown()
''',
    "reference": '''
def main():
    import glob, os
    import pyarrow as pa, pyarrow.parquet as pq
    t = pa.concat_tables([pq.read_table(p, columns=["id", "image"])
                          for p in sorted(glob.glob(os.path.join(IN, "*.parquet")))])
    t = t.sort_by("id").slice(0, SAMPLE)
    ids, imgs = t["id"].to_numpy(), t["image"].to_numpy(zero_copy_only=False)
    res = {"sums": {int(r): int(crop_one(b, r).astype(np.int64).sum()) for b, r in zip(imgs, ids)}}
''',
}

# 2 ranks: the job's process is the driver; it starts NRANKS rank processes (spawn), waits
# until each has imported torch (and streambatch), starts the clock, then hands each rank
# what it iterates: the DistributedSampler ranks build their DataLoader themselves, the
# streambatch ranks get their pickled split of the driver's pipeline.
RANKS_SRC = MAPSTYLE_SRC + f'''
def rank_main(r, inbox, results):
    import multiprocessing as mp
    # a spawned child inherits "spawn" as its default start method; a rank torchrun
    # launches has the platform's default (fork on Linux), which its DataLoader uses
    mp.set_start_method(None, force=True)
    try:
        import torch
        from torch.utils.data import DataLoader, DistributedSampler
        if ENGINE == "streambatch-split":
            import streambatch  # noqa: F401 (what unpickling the split imports)
        results.put(("ready", r, None))
        t0, split = inbox.get()
        if split is None:
            data = JpegParquet(IN)
            loader = DataLoader(data, batch_size=BATCH, num_workers=1, sampler=DistributedSampler(
                data, num_replicas=NRANKS, rank=r, shuffle=False))
        else:
            loader = split.iter_torch_batches(batch_size=BATCH)
        results.put(("done", r, train(loader, t0)))
    except BaseException:
        import traceback
        results.put(("error", r, traceback.format_exc()))

def main():
    import multiprocessing as mp
    import torch
    ctx = mp.get_context("spawn")
    if ENGINE == "streambatch-split":
        import streambatch as sb
        sb.init(num_cpus=CORES)
    results, inboxes = ctx.Queue(), [ctx.Queue() for _ in range(NRANKS)]
    procs = [ctx.Process(target=rank_main, args=(r, inboxes[r], results)) for r in range(NRANKS)]
    for p in procs:
        p.start()
    got = {{}}
    def collect(kind):
        while sum(1 for k, _ in got.values() if k == kind) < NRANKS:
            k, r, v = results.get(timeout=900)
            if k == "error":
                raise SystemExit("FAILED: rank %d: %s" % (r, v))
            got[r] = (k, v)
    collect("ready")
    t0 = time.perf_counter()
    if ENGINE == "streambatch-split":
        ds = {SB_PIPE.format(shuffle="")}
        splits = ds.streaming_split(NRANKS, equal=True)
    else:
        splits = [None] * NRANKS
    for q, s in zip(inboxes, splits):
        q.put((t0, s))
    collect("done")
    for p in procs:
        p.join(60)
    ranks = [got[r][1] for r in range(NRANKS)]
    res = {{"ranks": ranks, "total_s": max(x["total_s"] for x in ranks),
           "first_s": max(x["first_s"] or 0.0 for x in ranks),
           # so that wait_s / total_s is the ranks' mean idle fraction
           "wait_s": max(x["total_s"] for x in ranks) * sum(x["wait_s"] / x["total_s"] for x in ranks) / NRANKS,
           "batches": sum(x["batches"] for x in ranks), "rows": sum(x["rows"] for x in ranks),
           "order": [i for x in ranks for i in x["order"]], "bad_labels": sum(x["bad_labels"] for x in ranks),
           "sums": {{k: v for x in ranks for k, v in x["sums"].items()}}}}
'''


def job_code(engine, in_dir, n, *, epoch=0, nranks=2, buffer=BUFFER, pre_batch=PRE_BATCH,
             prefetch=None, read_blocks=None, releases_gil=False, trace=None):
    """The script of one fresh-process run of ``engine``."""
    head = (f"import sys, time, json\nIN, N, SEED, CROP = {in_dir!r}, {n}, {SEED}, {CROP}\n"
            f"CORES, BATCH, STEP_S, SAMPLE, LABEL_MOD = {CORES}, {BATCH}, {STEP_S}, {SAMPLE}, {LABEL_MOD}\n"
            f"COLUMNS = ['id', 'image', 'label']\nENGINE, EPOCH, NRANKS, BUFFER = {engine!r}, {epoch}, "
            f"{nranks}, {buffer}\nPRE_BATCH, PREFETCH, READ_BLOCKS, RELEASES_GIL = {pre_batch}, "
            f"{prefetch}, {read_blocks}, {releases_gil}\n" + UDF_SRC + LOOP_SRC)
    body = RANKS_SRC if engine in RANK_ENGINES else BODIES[engine]
    if trace:  # a Chrome trace of the run (diagnostics; w2_loader --trace)
        body = body.replace("sb.init(num_cpus=CORES)", f"sb.init(num_cpus=CORES, trace={trace!r})")
    return head + body + REPORT + '\nif __name__ == "__main__":\n    main()\n'


def run_result(what, code):
    """Run a job's code in a fresh process; its result line, with the process's wall time."""
    r = run_python(code, as_file=True, interval=0.05).check(what)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith(RESULT_MARK)]
    if not lines:
        raise SystemExit(f"FAILED: {what}: no result line\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    res = json.loads(lines[-1][len(RESULT_MARK):])
    res["process_s"] = r.wall_s
    return res


def check_order(what, order, n):
    """Every id 0..n-1 exactly once in ``order``; the order as an array."""
    a = np.asarray(order, dtype=np.int64)
    if len(a) != n or not np.array_equal(np.sort(a), np.arange(n)):
        u = np.unique(a[(a >= 0) & (a < n)])
        raise SystemExit(f"FAILED: {what}: {len(a)} ids delivered for {n}, {len(a) - len(np.unique(a))} "
                         f"repeated, {n - len(u)} missing")
    return a


def check(what, res, n, ref):
    """Every id exactly once, every label right, the sampled ids' pixel checksums as in ``ref``."""
    order = check_order(what, res["order"], n)
    if res.get("bad_labels"):
        raise SystemExit(f"FAILED: {what}: {res['bad_labels']} rows with a wrong label")
    got = {int(k): v for k, v in res["sums"].items()}
    bad = [k for k, v in ref.items() if got.get(k) != v]
    if bad:
        raise SystemExit(f"FAILED: {what}: pixels of {len(bad)} sampled ids differ from the "
                         f"reference (e.g. id {bad[0]}: {got.get(bad[0])} vs {ref[bad[0]]})")
    return order


def quality(order, bounds, batch=BATCH):
    """(mean |position - id| / N, mean distinct source files per batch) of an id order
    (ids numbered in file order; ``bounds``: the first id of each file, then N)."""
    a = np.asarray(order, dtype=np.int64)
    n = len(a)
    disp = float(np.abs(np.arange(n) - a).mean() / n)
    files = np.searchsorted(bounds, a, side="right") - 1
    return disp, float(np.mean([len(np.unique(files[i:i + batch])) for i in range(0, n, batch)]))
