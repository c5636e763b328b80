"""W2 — training-data ingest (issues 7, 17, 19): parquet of JPEGs -> decode + random crop
224 -> torch batches of 64 -> a fixed 5 ms training step, one epoch, against the torch
DataLoader a user would write instead.

Input: N [4,000] 256x256 JPEGs (the W1 images, seeded synthetic, quality 90; see
_jpeg_data.py) in F [20] parquet files of N/F rows, ONE row group per file, columns
id:int64 (the row's position in file order), image:binary (~17 KB) and label:int64
(= (id * 7919 + 13) % 1000). Written once under --data-dir (default ./bench-data,
folder w2_jpeg256_...: the W1 files plus the label column; W1's own files are untouched)
and reused. Every loader reads the columns ["id", "image", "label"].

Per row (the same UDF in every loader, _w2_engines.UDF_SRC): Pillow decode -> RGB -> a
224x224 crop at an offset drawn from np.random.default_rng([SEED, id]) (seeded per row, so
every loader produces the same pixels) -> uint8 CHW (3, 224, 224). The training step:
time.sleep(0.005) per batch of 64 (a GPU step that leaves the CPU free). Each run is one
epoch in a fresh process; the clock starts after the imports and sb.init/ray.init (and, for
the ranks, after both rank processes have imported torch/streambatch), before the
dataset/loader is built. Engines run interleaved: round k runs every engine once.

Section "main" (ratios vs `iterable`):
  iterable     the MAIN baseline. DataLoader(IterableDataset, batch_size=64,
               num_workers=2), default collate: the dataset lists every (file, row group);
               worker w of 2 (torch.utils.data.get_worker_info()) takes every 2nd from the
               w-th, reads it with pq.ParquetFile(f).read_row_group(g, columns=[id, image,
               label]), decodes + crops the whole row group in one loop into one uint8 array
               (n, 3, 224, 224) and yields its rows as dicts of torch.from_numpy views. Each
               worker batches its own rows (2 short batches at the end of the epoch).
  mapstyle     DataLoader(map-style Dataset, batch_size=64, num_workers=2), default collate:
               each worker reads a whole file (pq.read_table) when it first needs one of its
               rows and keeps the last 2 files; __getitem__ decodes + crops one row.
  streambatch  the plain code, no knobs: sb.init(num_cpus=2); ds = sb.read_parquet(dir,
               columns=[...]).map_batches(decode_crop, batch_size=64, batch_format="numpy");
               ds.iter_torch_batches(batch_size=64). The library decides where the UDF runs
               (no releases_gil), the read's parallelism and the prefetch.
  ray          Ray Data 2.x, the same code (ray.init(num_cpus=2), ray.data.read_parquet);
               --skip-ray leaves it out.
  streambatch-tuned  only when a knob is given: the same with --releases-gil
               (map_batches(releases_gil=True): the UDF on threads in the trainer's
               process), --pre-batch (map_batches batch_size), --read-blocks
               (override_num_blocks), --prefetch (prefetch_batches).
Section "shuffled" (one shuffled epoch; run k uses epoch/seed k-1; ratios vs
`dataloader-shuffle`):
  dataloader-shuffle  the map-style DataLoader with shuffle=True,
               generator=torch.Generator().manual_seed(epoch), num_workers=2; each worker
               keeps every file it read (with 2, random access re-reads a file per row).
  streambatch-shuffle  ds.random_shuffle(seed=epoch) between read_parquet and map_batches
               (a global shuffle of the small JPEG rows, before the decode).
  streambatch-localbuf  the plain pipeline, iter_torch_batches(batch_size=64,
               local_shuffle_buffer_size=--buffer [1000]).
  Reported: displacement (mean |output position - id| / N; 1/3 for a uniform
  permutation) and files/batch (distinct files among a batch's rows; uniform:
  F(1-(1-1/F)^64) = 19.2 of 20); a run whose files/batch is under half the uniform
  figure fails (the unshuffled pipelines give 1-4). w2_shuffled_epoch.py checks the
  orders more closely (same seed -> same order across processes, epochs differ) and
  compares with an unshuffled epoch.
Section "ranks" (data-parallel ranks; ratios vs `ddp-sampler`): the job's process starts
--ranks [2] rank processes (multiprocessing spawn) that train concurrently, each with the
5 ms step. No gradients are synchronised, so torch.distributed is not needed (and not
initialised): DistributedSampler takes num_replicas/rank explicitly.
  ddp-sampler  each rank: DataLoader(map-style Dataset, sampler=DistributedSampler(ds,
               num_replicas=2, rank=r, shuffle=False), num_workers=1, batch_size=64).
  streambatch-split  the job's process (the driver) builds ds as in `streambatch` and
               splits = ds.streaming_split(2, equal=True), then sends splits[r] pickled to
               rank r (splits pickle to a handle on the driver's split server, as in
               tests/loader/test_split_processes.py), which iterates
               splits[r].iter_torch_batches(batch_size=64).
  Reported: rows/s = N / the slowest rank's epoch time (its end - the driver's t0), each
  rank's rows/s (its rows / its epoch time), batch count per rank and whether they are
  equal; every id must arrive exactly once across the ranks.

Reported per engine, medians over --runs [3] rounds: rows/s (N / epoch time, first batch
included), first batch s (start -> first batch in hand; ranks: the later rank's), idle
(time the loop waited for the next batch / epoch time; ranks: mean over ranks), epoch s,
process s (the whole fresh process), and the ratio of median rows/s to the section's
baseline. Checks (a wrong result aborts with FAILED, exit status 1): every run delivers
every id exactly once, every row's label is right, and the pixel checksums of ids <
64 equal those one reference process computes with the same UDF.

Targets (issue 19; 2 cores, medians of >= 3 fresh-process runs in one invocation):
streambatch >= 1.2x iterable; streambatch first batch <= iterable's; streambatch-shuffle
>= 1.0x dataloader-shuffle; streambatch-split >= 1.0x ddp-sampler with equal batch counts.

    python benchmarks/w2_loader.py                    # all sections, 3 rounds (~5 min)
    python benchmarks/w2_loader.py --sections main --skip-ray --runs 5
    python benchmarks/w2_loader.py --images 400 --runs 1   # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _util import fmt_s, machine_summary, median, print_table  # noqa: E402
from _w2_engines import (  # noqa: E402, F401  (re-exported for other scripts)
    BASELINE,
    BATCH,
    BUFFER,
    CORES,
    CROP,
    LOOP_SRC,
    MAIN_ENGINES,
    PRE_BATCH,
    RANK_ENGINES,
    RESULT_MARK,
    SAMPLE,
    SECTION,
    SHUFFLE_ENGINES,
    STEP_S,
    UDF_SRC,
    check,
    ensure_w2_data,
    job_code,
    quality,
    run_result,
)
from w1_inference import SEED, warm_page_cache  # noqa: E402

SECTIONS = ("main", "shuffled", "ranks")
TARGETS = (  # (section, engine, minimum ratio of rows/s to the baseline)
    ("main", "streambatch", 1.2), ("shuffled", "streambatch-shuffle", 1.0),
    ("ranks", "streambatch-split", 1.0))


def slot_idle(trace_path, slots=CORES):
    """Where the decode slots sat idle in one streambatch run, from its Chrome trace.

    ``starved_s``: slot-seconds with fewer than ``slots`` tasks running before the
    last task started (work was left but no task ran); ``tail_s``: slot-seconds idle
    after the last task started; ``busy_s``: task seconds; ``wall_s``: the executor's run.
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


def run_once(engine, k, args, in_dir, n, ref, bounds):
    """One fresh-process run of ``engine`` in round ``k``, checked; its measurements."""
    trace = None
    if args.trace and engine.startswith("streambatch") and SECTION[engine] != "ranks":
        os.makedirs(args.trace, exist_ok=True)
        trace = os.path.abspath(os.path.join(args.trace, f"w2_{engine}_{k + 1}.json"))
    knobs = {"pre_batch": args.pre_batch, "prefetch": args.prefetch,
             "read_blocks": args.read_blocks, "releases_gil": args.releases_gil}
    res = run_result(engine, job_code(engine, in_dir, n, epoch=k, nranks=args.ranks,
                                      buffer=args.buffer, trace=trace, **knobs))
    order = check(engine, res, n, ref)
    line = ""
    if SECTION[engine] == "shuffled":
        res["disp"], res["files_per_batch"] = quality(order, bounds)
        files = len(bounds) - 1
        if res["files_per_batch"] < 0.5 * files * (1 - (1 - 1 / files) ** BATCH):
            raise SystemExit(f"FAILED: {engine}: batches draw on {res['files_per_batch']:.1f} files "
                             "on average: less than half a uniform shuffle's (not shuffled)")
        line = f"  displacement {res['disp']:.3f}  files/batch {res['files_per_batch']:.1f}"
    if SECTION[engine] == "ranks":
        for r in res["ranks"]:
            r["rows_per_s"] = r["rows"] / r["total_s"]
            for key in ("order", "sums", "sizes"):
                r.pop(key, None)
        res["rank_batches"] = [r["batches"] for r in res["ranks"]]
        res["rank_rows"] = [r["rows"] for r in res["ranks"]]
        line = "  per rank: " + ", ".join(
            f"{r['rows']} rows {r['batches']} batches {r['rows_per_s']:.0f} rows/s "
            f"{r['total_s']:.2f} s" for r in res["ranks"])
    slots = slot_idle(trace) if trace else None
    if slots:
        res["slots"] = slots
        line += (f"  slots: busy {slots['busy_s']:.2f} s of {CORES}x{slots['wall_s']:.2f} s, idle "
                 f"with work left {slots['starved_s']:.2f} s, tail {slots['tail_s']:.2f} s")
    for key in ("order", "sums", "end"):
        res.pop(key, None)
    res["load"] = os.getloadavg()[0]
    print(f"  round {k + 1} {engine:<20} {n / res['total_s']:7.0f} rows/s  first "
          f"{res['first_s']:.3f} s  idle {res['wait_s'] / res['total_s']:.2f}  batches "
          f"{res['batches']}  load {res['load']:.1f}{line}", flush=True)
    return res


def summarize(runs, n):
    summary = {}
    for e, rs in runs.items():
        s = summary[e] = {
            "section": SECTION[e],
            "rows_per_s": median([n / r["total_s"] for r in rs]),
            "batches_per_s": median([r["batches"] / r["total_s"] for r in rs]),
            "first_s": median([r["first_s"] for r in rs]),
            "idle": median([r["wait_s"] / r["total_s"] for r in rs]),
            "epoch_s": median([r["total_s"] for r in rs]),
            "process_s": median([r["process_s"] for r in rs]),
            "batches": median([r["batches"] for r in rs]),
        }
        if SECTION[e] == "shuffled":
            s["disp"] = median([r["disp"] for r in rs])
            s["files_per_batch"] = median([r["files_per_batch"] for r in rs])
        if SECTION[e] == "ranks":
            nr = len(rs[0]["ranks"])
            s["rank_rows_per_s"] = [median([r["ranks"][j]["rows_per_s"] for r in rs]) for j in range(nr)]
            s["rank_batches"] = sorted({tuple(r["rank_batches"]) for r in rs})
            s["rank_rows"] = sorted({tuple(r["rank_rows"]) for r in rs})
            s["equal_batches"] = all(len(set(r["rank_batches"])) == 1 for r in rs)
    for e, s in summary.items():
        base = BASELINE[s["section"]]
        b = summary.get(base)
        s["vs_base"] = s["rows_per_s"] / b["rows_per_s"] if b else None
        s["round_ratios"] = ([runs[base][k]["total_s"] / r["total_s"] for k, r in enumerate(runs[e])]
                             if b else None)
    return summary


def print_section(section, summary, files):
    names = [e for e, s in summary.items() if s["section"] == section]
    if not names:
        return
    base = BASELINE[section]
    head = ["engine", "rows/s", f"vs {base}", "first batch s", "idle", "epoch s", "process s",
            "batches"]
    extra = {"shuffled": ["displacement", "files/batch"],
             "ranks": ["rows/s per rank", "rows per rank", "batches per rank", "equal"]}.get(section, [])
    rows = []
    for e in names:
        s = summary[e]
        row = [e, f"{s['rows_per_s']:.0f}", "-" if s["vs_base"] is None else f"{s['vs_base']:.2f}x",
               fmt_s(s["first_s"]), f"{s['idle']:.2f}", fmt_s(s["epoch_s"], 2),
               fmt_s(s["process_s"], 2), f"{s['batches']:g}"]
        if section == "shuffled":
            row += [f"{s['disp']:.3f}", f"{s['files_per_batch']:.1f}"]
        if section == "ranks":
            row += ["/".join(f"{x:.0f}" for x in s["rank_rows_per_s"]),
                    " ".join("/".join(map(str, b)) for b in s["rank_rows"]),
                    " ".join("/".join(map(str, b)) for b in s["rank_batches"]),
                    "yes" if s["equal_batches"] else "NO"]
        rows.append(row)
    print(f"\n[{section}]")
    print_table(head + extra, rows)
    if section == "ranks":
        print("rows/s, epoch s: the slowest rank's (N / its end - the driver's start); first "
              "batch: the later rank's; idle: the ranks' mean; per rank: its rows / its epoch")
    if section == "shuffled":
        print(f"displacement: uniform shuffle 0.333; files/batch: uniform "
              f"{files * (1 - (1 - 1 / files) ** BATCH):.1f} of {files}")


def print_targets(summary):
    print()
    for section, e, need in TARGETS:
        s = summary.get(e)
        if s is None or s["vs_base"] is None:
            continue
        ok = s["vs_base"] >= need and (section != "ranks" or s["equal_batches"])
        cond = " with equal batch counts" if section == "ranks" else ""
        print(f"target {e} >= {need:.1f}x {BASELINE[section]}{cond}: {'MET' if ok else 'NOT MET'} "
              f"({s['vs_base']:.2f}x; per-round ratios "
              f"{', '.join(f'{x:.2f}' for x in s['round_ratios'])})")
    s, b = summary.get("streambatch"), summary.get("iterable")
    if s and b:
        print(f"target streambatch first batch <= iterable's: "
              f"{'MET' if s['first_s'] <= b['first_s'] else 'NOT MET'} "
              f"({s['first_s']:.3f} s vs {b['first_s']:.3f} s)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="rounds (fresh-process runs per engine)")
    ap.add_argument("--images", type=int, default=4000)
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--data-dir", default="bench-data")
    ap.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset of "
                    + ",".join(SECTIONS))
    ap.add_argument("--shuffled", action="store_true", help="only the shuffled section")
    ap.add_argument("--ranks", type=int, default=2, help="ranks of the ranks section")
    ap.add_argument("--engines", help="comma-separated subset of the sections' engines")
    ap.add_argument("--skip-ray", action="store_true")
    ap.add_argument("--buffer", type=int, default=BUFFER, help="streambatch-localbuf's "
                    "local_shuffle_buffer_size")
    ap.add_argument("--json", help="write every measurement here")
    tuned = ap.add_argument_group("streambatch-tuned (run only when one of these is given)")
    tuned.add_argument("--releases-gil", action="store_true", help="map_batches(releases_gil=True)")
    tuned.add_argument("--pre-batch", type=int, help=f"map_batches batch_size (else {PRE_BATCH})")
    tuned.add_argument("--read-blocks", type=int, help="read_parquet override_num_blocks")
    tuned.add_argument("--prefetch", type=int, help="iter_torch_batches prefetch_batches")
    ap.add_argument("--show-stats", action="store_true", help="print streambatch's ds.stats()")
    ap.add_argument("--trace", metavar="DIR", help="write a Chrome trace of every streambatch run "
                    "of the main and shuffled sections under DIR and report where its task slots "
                    "sat idle")
    args = ap.parse_args(argv)

    sections = ["shuffled"] if args.shuffled else [x for x in args.sections.split(",") if x]
    if any(x not in SECTIONS for x in sections):
        ap.error(f"--sections: choose from {','.join(SECTIONS)}")
    is_tuned = (args.releases_gil or args.pre_batch is not None or args.read_blocks is not None
                or args.prefetch is not None)
    args.pre_batch = PRE_BATCH if args.pre_batch is None else args.pre_batch
    engines = [e for sec, es in (("main", MAIN_ENGINES + (("streambatch-tuned",) if is_tuned else ())),
                                 ("shuffled", SHUFFLE_ENGINES), ("ranks", RANK_ENGINES))
               if sec in sections for e in es if not (args.skip_ray and e == "ray")]
    if args.engines:
        want = args.engines.split(",")
        if any(e not in SECTION for e in want):
            ap.error(f"--engines: choose from {','.join(SECTION)}")
        engines = [e for e in engines if e in want] + [e for e in want if e not in engines]

    in_dir, man = ensure_w2_data(args.data_dir, args.images, args.files, SEED)
    n = man["images"]
    bounds = [round(k * n / args.files) for k in range(args.files + 1)]
    warm_page_cache(in_dir)
    print(f"W2 loader: {n} JPEGs in {args.files} files of one row group "
          f"({man['jpeg_bytes'] / 2**20:.0f} MiB), batch {BATCH}, step {STEP_S * 1e3:.0f} ms, "
          f"{args.runs} round(s) of {', '.join(engines)}; {machine_summary()}; load "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    ref = {int(k): v for k, v in run_result("reference", job_code("reference", in_dir, n))
           ["sums"].items()}
    runs = {e: [] for e in engines}
    for k in range(args.runs):  # interleaved rounds: drift in machine load hits all alike
        for e in engines:
            runs[e].append(run_once(e, k, args, in_dir, n, ref, bounds))

    summary = summarize(runs, n)
    for section in SECTIONS:
        print_section(section, summary, args.files)
    if "streambatch-tuned" in summary:
        print(f"streambatch-tuned: map_batches(batch_size={args.pre_batch}, releases_gil="
              f"{args.releases_gil}), read_parquet(override_num_blocks={args.read_blocks}), "
              f"iter_torch_batches(prefetch_batches={args.prefetch}) (None: the default)")
    print_targets(summary)
    print("checks passed: every id exactly once with its label in every run, the reference "
          f"pixels for ids < {SAMPLE}" + ("; every shuffled epoch mixing files (files/batch)"
                                          if "shuffled" in sections else ""))
    if args.show_stats:
        for e in ("streambatch", "streambatch-tuned"):
            if e in runs:
                print(f"\n{e} ds.stats() of the last run:\n" + runs[e][-1].get("stats", "-"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"summary": summary, "runs": runs, "args": vars(args)}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
