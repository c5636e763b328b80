"""Where should a UDF run on the local backend: worker processes or threads?

Runs two UDFs over the same in-memory data both ways and prints the times and
their ratio (median of --runs):
- a numpy UDF (releases the GIL): threads avoid copying blocks between processes;
- a pure-Python row UDF (holds the GIL): processes use every core.

    .venv/bin/python benchmarks/threads_vs_processes.py --runs 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import pyarrow as pa

import streambatch as sb


def numpy_udf(batch: dict) -> dict:
    x = batch["x"]
    for _ in range(20):
        x = np.sqrt(x * x + 1.0)
    return {"x": x}


def python_udf(batch: dict) -> dict:
    return {"x": np.array([sum(i % 7 for i in range(40)) + v for v in batch["x"].tolist()])}


def run(table: pa.Table, udf, releases_gil: bool) -> float:
    ds = sb.from_arrow(table).map_batches(udf, batch_format="numpy", batch_size=65536,
                                          releases_gil=releases_gil)
    start = time.perf_counter()
    rows = sum(b.num_rows for b in ds.iter_batches(batch_size=None, batch_format="pyarrow"))
    assert rows == table.num_rows, rows
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rows", type=int, default=4_000_000)
    args = parser.parse_args()
    sb.init()
    numeric = pa.table({"x": np.random.default_rng(0).random(args.rows)})
    small = numeric.slice(0, args.rows // 20)
    print(f"{'udf':<12} {'threads s':>10} {'processes s':>12} {'processes/threads':>18}")
    for name, udf, table in (("numpy", numpy_udf, numeric), ("python", python_udf, small)):
        threads = statistics.median(run(table, udf, True) for _ in range(args.runs))
        procs = statistics.median(run(table, udf, False) for _ in range(args.runs))
        print(f"{name:<12} {threads:>10.3f} {procs:>12.3f} {procs / threads:>18.2f}")


if __name__ == "__main__":
    main()
