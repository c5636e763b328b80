"""Parquet scan with projection and a selective filter: streambatch vs Ray Data vs
plain ``pyarrow.dataset``; plus time-to-first-batch over 2,000 small files.

Dataset (generated once into ``bench-data/pushdown``): 40 files, 20 columns
(``id`` sorted int64, ``k`` int64 in 0..99, 18 float64), ~2 GB on disk at the
default ``--gb 2``. The query reads 2 of 20 columns (``id``, ``c0``) where
``k < 5`` (about 5% of the rows; ``k`` is sorted within each row group so
statistics can skip row groups).

Reported per engine: time to the first batch and total time (median of
``--repeat`` runs, the engines taking turns so that load changes hit all of them). Targets (issue 6): streambatch's first batch < 0.5 s and
total within 1.2x of plain pyarrow; 2,000 small files yield within 1 s.

    python benchmarks/parquet_pushdown.py [--gb 2] [--repeat 3] [--no-ray]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench-data")
COLUMNS = ["id", "c0"]


def generate(directory: str, gb: float, files: int = 40) -> None:
    marker = os.path.join(directory, "_DONE")
    if os.path.exists(marker) and json.load(open(marker)).get("gb") == gb:
        return
    os.makedirs(directory, exist_ok=True)
    rows_per_file = int(gb * 2**30 / files / (20 * 8))
    rng = np.random.default_rng(0)
    for f in range(files):
        start = f * rows_per_file
        cols = {"id": np.arange(start, start + rows_per_file, dtype=np.int64),
                "k": np.sort(rng.integers(0, 100, rows_per_file))}
        cols |= {f"c{i}": rng.random(rows_per_file) for i in range(18)}
        pq.write_table(pa.table(cols), os.path.join(directory, f"part-{f:03d}.parquet"),
                       row_group_size=rows_per_file // 8, compression="none")
    json.dump({"gb": gb}, open(marker, "w"))


def small_files(directory: str, n: int = 2000) -> None:
    if os.path.exists(os.path.join(directory, "_DONE")):
        return
    os.makedirs(directory, exist_ok=True)
    for i in range(n):
        pq.write_table(pa.table({"id": [i], "x": [float(i)]}), os.path.join(directory, f"f{i:05d}.parquet"))
    open(os.path.join(directory, "_DONE"), "w").close()


def timed(make_batches) -> tuple[float, float, int]:
    """(first batch s, total s, rows) of ``make_batches()``, timed from before the call:
    building the dataset (listing, the first footer) and starting its scan count too.
    (``pyarrow.dataset``'s ``to_batches`` starts scanning when called, so timing only the
    iteration would leave its discovery and first reads out.)"""
    t0 = time.perf_counter()
    first, rows = None, 0
    for b in make_batches():
        if first is None:
            first = time.perf_counter() - t0
        rows += b.num_rows if hasattr(b, "num_rows") else len(next(iter(b.values())))
    return first or 0.0, time.perf_counter() - t0, rows


def run_streambatch(directory: str):
    import streambatch as sb

    return timed(lambda: sb.read_parquet(directory, columns=COLUMNS, filter=pc.field("k") < 5)
                 .iter_batches(batch_size=None, batch_format="pyarrow"))


def run_pyarrow(directory: str):
    return timed(lambda: pads.dataset(directory, format="parquet").to_batches(
        columns=COLUMNS, filter=pc.field("k") < 5))


def run_ray(directory: str):
    import ray

    # Ray Data 2.60 takes projection and filter as operators, which it pushes into the read.
    return timed(lambda: ray.data.read_parquet(directory).filter(expr="k < 5")
                 .select_columns(COLUMNS).iter_batches(batch_size=None, batch_format="pyarrow"))


def assert_same_rows(directory: str) -> None:
    """Fail loudly if streambatch and pyarrow disagree on the query's result."""
    import streambatch as sb

    got = sb.read_parquet(directory, columns=COLUMNS, filter=pc.field("k") < 5).to_arrow()
    want = pads.dataset(directory, format="parquet").to_table(columns=COLUMNS,
                                                               filter=pc.field("k") < 5)
    if not got.sort_by("id").equals(want.sort_by("id")):
        raise SystemExit("FAILED: streambatch and pyarrow return different rows")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gb", type=float, default=2.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-ray", action="store_true")
    args = parser.parse_args()
    big = os.path.join(ROOT, "pushdown")
    generate(big, args.gb)
    engines = {"pyarrow.dataset": run_pyarrow, "streambatch": run_streambatch}
    if not args.no_ray:
        try:
            import ray

            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
            engines["ray.data"] = run_ray
        except ImportError:
            print("ray not installed: skipping Ray Data (pip install 'streambatch[bench]')")
    results = {}
    assert_same_rows(big)
    for fn in engines.values():
        fn(big)  # warm the page cache and imports
    runs = {name: [] for name in engines}
    for _ in range(args.repeat):  # interleaved: a load change on this machine hits all
        for name, fn in engines.items():
            runs[name].append(fn(big))
    for name, done in runs.items():
        results[name] = {"first_s": statistics.median(r[0] for r in done),
                         "total_s": statistics.median(r[1] for r in done), "rows": done[0][2]}
    base = results["pyarrow.dataset"]["total_s"]
    print(f"{args.gb:g} GB, 40 files, 2 of 20 columns, filter k < 5")
    for name, r in results.items():
        print(f"  {name:16s} first batch {r['first_s']:.3f} s   total {r['total_s']:.3f} s "
              f"({r['total_s'] / base:.2f}x pyarrow)   rows {r['rows']:,}")
    small = os.path.join(ROOT, "small-files")
    small_files(small)
    import streambatch as sb

    first, total, rows = timed(lambda: sb.read_parquet(small).iter_batches(batch_size=None, batch_format="pyarrow"))
    print(f"2,000 small files: first batch {first:.3f} s, all {rows:,} rows in {total:.3f} s")


if __name__ == "__main__":
    main()
