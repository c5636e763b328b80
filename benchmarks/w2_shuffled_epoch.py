"""W2 shuffled epoch — a global-shuffle training epoch beside the local-buffer shuffle,
no shuffle, and torch's shuffling DataLoader (issue 17), one epoch each.

Input: the W2 data set (see w2_loader.py): N [4,000] 256x256 JPEGs in F [20] parquet
files of one row group (id:int64 = the row's position in file order, image:binary,
label:int64), generated once under --data-dir (default ./bench-data) and reused; the
streambatch loaders read id and image. Per row, w2_loader's decode_crop UDF: Pillow decode -> RGB -> random 224 crop seeded by (SEED, id) -> uint8
CHW. Batches of 64 go into a 5 ms training step (time.sleep), as in w2_loader.py.

Loaders (the plain code a user writes, no tuning knobs; one fresh process per loader
per run, the clock starting after imports and sb.init, before the dataset is built):
  global      sb.init(num_cpus=2); sb.read_parquet(IN, columns=["id", "image"])
              .random_shuffle(seed=EPOCH).map_batches(decode_crop, batch_size=64,
              batch_format="numpy").iter_torch_batches(batch_size=64)
              The small JPEG rows (~17 KB) are shuffled before the decode, not the
              150 KB decoded crops: what a competent user writes. Run k uses EPOCH=k-1.
  local       the same without random_shuffle, iter_torch_batches(batch_size=64,
              local_shuffle_buffer_size=BUFFER [1000]) (the buffer also reads the files
              in a random order each epoch; no seed: a fresh order every epoch)
  noshuffle   the same without any shuffle (the baseline)
  dataloader  torch DataLoader(w2_loader's map-style Dataset, batch_size=64,
              shuffle=True, num_workers=2, generator seeded with the epoch): w2_loader's
              dataloader-shuffle engine. Its Dataset keeps the last 2 files per worker
              in w2_loader's mapstyle engine, which random access turns into a parquet
              file read per row; here each worker keeps every file it read
              (--dl-cache-files, default all; ~70 MB per worker), as a user who
              shuffles would.

Reported per loader, medians over --runs [3] interleaved rounds: rows/s (N / epoch
time, first batch included), first batch seconds, and ratios to the no-shuffle and
DataLoader runs of the same round (median of the per-round ratios). Shuffle quality of
each epoch's id order: "displacement", the mean |output position - input position| / N
(0 in file order, 1/3 for a uniform random permutation), and "files/batch", the mean
number of distinct source files among a batch's 64 rows (uniform: F(1-(1-1/F)^64)).

Checks (a wrong result aborts with FAILED, exit status 1): every run delivers every id
exactly once with w2_loader's pixel checksums for a sample of ids; one extra process
before the runs (not timed) runs the global shuffle with seeds 0, 1, 0 (seed 0 twice
gives the same order, seed 1 another), and two epochs each of the local buffer and the
DataLoader (they differ); each timed global run with seed 0 or 1 must give the order
that process got for that seed (the same seed in another process).

    python benchmarks/w2_shuffled_epoch.py [--runs 3] [--images 4000] [--buffer 1000] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _util import fmt_s, machine_summary, median, print_table  # noqa: E402
from _w2_engines import (  # noqa: E402
    BATCH,
    BUFFER,
    CORES,
    CROP,
    LABEL_MOD,
    LOOP_SRC,
    RESULT_MARK,
    SAMPLE,
    STEP_S,
    UDF_SRC,
    check_order,
    ensure_w2_data,
    quality,
)
from _w2_engines import check as check_pixels  # noqa: E402
from _w2_engines import job_code as w2_job_code  # noqa: E402
from _w2_engines import run_result as run_job  # noqa: E402
from w1_inference import SEED, warm_page_cache  # noqa: E402

LOADERS = ("global", "local", "noshuffle", "dataloader")

# the plain user code of each streambatch loader (after `ds = sb.read_parquet(...)`)
SB_EPOCH = {
    "global": ('ds.random_shuffle(seed=epoch).map_batches(decode_crop, batch_size=BATCH, '
               'batch_format="numpy").iter_torch_batches(batch_size=BATCH)'),
    "local": ('ds.map_batches(decode_crop, batch_size=BATCH, batch_format="numpy")'
              '.iter_torch_batches(batch_size=BATCH, local_shuffle_buffer_size=BUFFER)'),
    "noshuffle": ('ds.map_batches(decode_crop, batch_size=BATCH, batch_format="numpy")'
                  '.iter_torch_batches(batch_size=BATCH)'),
}


def head(in_dir, n, epoch, buffer):
    return (f"import sys, time, json\nIN, N, SEED, CROP = {in_dir!r}, {n}, {SEED}, {CROP}\n"
            f"CORES, BATCH, STEP_S, SAMPLE, LABEL_MOD = {CORES}, {BATCH}, {STEP_S}, {SAMPLE}, "
            f"{LABEL_MOD}\nEPOCH, BUFFER = {epoch}, {buffer}\n" + UDF_SRC + LOOP_SRC)


REPORT = f'    sys.stdout.write("\\n{RESULT_MARK}" + json.dumps(res) + "\\n")\n'
MAIN = '\nif __name__ == "__main__":\n    main()\n'


def dataloader_code(in_dir, n, cache_files, epoch=0, check=False):
    """w2_loader's dataloader-shuffle job with a per-worker cache of cache_files files;
    check: two untimed epochs, orders only."""
    src = w2_job_code("dataloader-shuffle", in_dir, n, epoch=epoch)
    edits = [("JpegParquet(IN, cache_files=10**9)", f"JpegParquet(IN, cache_files={cache_files})")]
    if check:
        edits.append(("    res = train(loader, t0)\n",
                      '    res = {"orders": [[int(i) for b in loader for i in b["id"]] '
                      "for _ in range(2)]}\n"))
    for old, new in edits:
        if src.count(old) != 1:
            raise SystemExit(f"FAILED: _w2_engines.job_code('dataloader-shuffle') changed: {old!r} not found "
                             "once; update w2_shuffled_epoch.py")
        src = src.replace(old, new)
    return src


def job_code(loader, in_dir, n, epoch=0, buffer=BUFFER, cache_files=10**9):
    if loader == "dataloader":
        return dataloader_code(in_dir, n, cache_files, epoch)
    if loader == "check":
        return head(in_dir, n, 0, buffer) + f'''
def ids_of(batches):
    return [int(i) for b in batches for i in b["id"]]

def main():
    import streambatch as sb
    import torch
    sb.init(num_cpus=CORES)
    ds = sb.read_parquet(IN, columns=["id", "image"])
    res = {{"global": [ids_of({SB_EPOCH["global"]}) for epoch in (0, 1, 0)]}}
    local = {SB_EPOCH["local"]}
    res["local"] = [ids_of(local) for _ in range(2)]  # each iter() is an epoch
{REPORT}''' + MAIN
    return head(in_dir, n, epoch, buffer) + f'''
def main():
    import streambatch as sb
    import torch
    sb.init(num_cpus=CORES)
    epoch = EPOCH
    t0 = time.perf_counter()
    ds = sb.read_parquet(IN, columns=["id", "image"])
    res = train({SB_EPOCH[loader]}, t0)
{REPORT}''' + MAIN


def check_epochs(res, n, bounds):
    """The untimed check process: global seeds 0, 1, 0; two local and two DataLoader epochs."""
    g0, g1, g0b = (check_order(f"global check seed {s}", o, n) for s, o in zip((0, 1, 0), res["global"],
                                                                                 strict=True))
    if not np.array_equal(g0, g0b):
        k = int(np.argmax(g0 != g0b))
        raise SystemExit(f"FAILED: global: random_shuffle(seed=0) gave two different orders in one "
                         f"process (first difference at position {k}: id {g0[k]} vs {g0b[k]})")
    if np.array_equal(g0, g1):
        raise SystemExit("FAILED: global: random_shuffle(seed=0) and (seed=1) gave the same order")
    lines = [f"global: seed 0 twice -> the same order; seed 1 -> another "
             f"({int((g0 != g1).sum())} of {n} positions differ)"]
    for name in ("local", "dataloader"):
        e0, e1 = (check_order(f"{name} check epoch {e}", o, n) for e, o in enumerate(res[name]))
        if np.array_equal(e0, e1):
            raise SystemExit(f"FAILED: {name}: two epochs gave the same order")
        lines.append(f"{name}: epochs 0 and 1 differ ({int((e0 != e1).sum())} of {n} positions)")
    return {0: g0, 1: g1}, lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--images", type=int, default=4000)
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--data-dir", default="bench-data")
    ap.add_argument("--buffer", type=int, default=None,
                    help=f"local_shuffle_buffer_size (default {BUFFER}; --quick: 100)")
    ap.add_argument("--dl-cache-files", type=int, default=10**9,
                    help="files each DataLoader worker keeps (w2_loader: 2; default: all)")
    ap.add_argument("--loaders", default=",".join(LOADERS), help="comma-separated subset "
                    "(the orders check always runs)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: --images 400 --runs 1 --buffer 100")
    ap.add_argument("--json", help="write the measurements here")
    args = ap.parse_args(argv)
    if args.quick:
        args.images, args.runs = 400, 1
        args.buffer = 100 if args.buffer is None else args.buffer
    args.buffer = BUFFER if args.buffer is None else args.buffer
    loaders = [x for x in args.loaders.split(",") if x]
    if any(x not in LOADERS for x in loaders):
        ap.error(f"--loaders: choose from {','.join(LOADERS)}")

    in_dir, man = ensure_w2_data(args.data_dir, args.images, args.files, SEED)
    n = man["images"]
    bounds = np.array([round(k * n / args.files) for k in range(args.files + 1)])
    warm_page_cache(in_dir)
    print(f"W2 shuffled epoch: {n} JPEGs in {args.files} files ({man['jpeg_bytes'] / 2**20:.0f} "
          f"MiB), batch {BATCH}, step {STEP_S * 1e3:.0f} ms, buffer {args.buffer}, {args.runs} "
          f"run(s) each; {machine_summary()}", flush=True)
    ref = {int(k): v for k, v in run_job("reference", w2_job_code("reference", in_dir, n))
           ["sums"].items()}
    chk = run_job("check", job_code("check", in_dir, n, buffer=args.buffer))
    chk["dataloader"] = run_job("dataloader check", dataloader_code(
        in_dir, n, args.dl_cache_files, check=True))["orders"]
    seeded, lines = check_epochs(chk, n, bounds)
    for ln in lines:
        print("  orders check: " + ln, flush=True)

    runs = {x: [] for x in loaders}
    for k in range(args.runs):  # interleaved rounds: drift in machine load hits all alike
        for x in loaders:
            res = run_job(x, job_code(x, in_dir, n, epoch=k, buffer=args.buffer,
                                      cache_files=args.dl_cache_files))
            order = check_pixels(x, res, n, ref)
            res.pop("order")
            res.pop("sizes", None)
            if x == "global" and k in seeded and not np.array_equal(order, seeded[k]):
                j = int(np.argmax(order != seeded[k]))
                raise SystemExit(f"FAILED: global: random_shuffle(seed={k}) gave another order than "
                                 f"in the check process (first difference at position {j}: id "
                                 f"{order[j]} vs {seeded[k][j]})")
            res["disp"], res["files_per_batch"] = quality(order, bounds)
            res["load"] = os.getloadavg()[0]
            res.pop("sums", None)
            runs[x].append(res)
            print(f"  run {k + 1} {x:<10} {n / res['total_s']:7.0f} rows/s  first "
                  f"{res['first_s']:.3f} s  displacement {res['disp']:.3f}  files/batch "
                  f"{res['files_per_batch']:.1f}  load {res['load']:.1f}", flush=True)

    def ratio(x, base):
        if base not in runs or x == base:
            return None
        return median([b["total_s"] / a["total_s"] for a, b in zip(runs[x], runs[base], strict=True)])

    summary = {}
    for x in loaders:
        rs = runs[x]
        summary[x] = {"rows_per_s": median([n / r["total_s"] for r in rs]),
                      "first_s": median([r["first_s"] for r in rs]),
                      "epoch_s": median([r["total_s"] for r in rs]),
                      "process_s": median([r["process_s"] for r in rs]),
                      "vs_noshuffle": ratio(x, "noshuffle"), "vs_dataloader": ratio(x, "dataloader"),
                      "disp": median([r["disp"] for r in rs]),
                      "files_per_batch": median([r["files_per_batch"] for r in rs])}
    f = args.files
    print()
    print_table(["loader", "rows/s", "vs no shuffle", "vs DataLoader", "first batch s", "epoch s",
                 "process s", "displacement", "files/batch"],
                [[x, f"{s['rows_per_s']:.0f}",
                  "-" if s["vs_noshuffle"] is None else f"{s['vs_noshuffle']:.2f}x",
                  "-" if s["vs_dataloader"] is None else f"{s['vs_dataloader']:.2f}x",
                  fmt_s(s["first_s"]), fmt_s(s["epoch_s"], 2), fmt_s(s["process_s"], 2),
                  f"{s['disp']:.3f}", f"{s['files_per_batch']:.1f}"] for x, s in summary.items()])
    print(f"displacement: mean |position - input position| / N (uniform shuffle: 0.333); "
          f"files/batch: distinct files of {f} among {BATCH} rows (uniform: "
          f"{f * (1 - (1 - 1 / f) ** BATCH):.1f}). Ratios: median of per-round rows/s ratios.")
    print("all checks passed: every id exactly once with the reference pixels in every run; "
          "orders as checked above")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"summary": summary, "checks": lines, "runs": runs}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
