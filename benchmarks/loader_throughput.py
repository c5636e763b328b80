"""Training-loader throughput on in-memory data: streambatch ``iter_torch_batches``
with and without a local shuffle buffer, against ``torch.utils.data.DataLoader``.

The data: N rows of a uint8 image tensor (3 x H x W) and a float32 label, held in
memory once (an Arrow table for streambatch, the same numpy buffers wrapped as
torch tensors for the DataLoader). Each run is one full epoch of batches of
``--batch-size`` rows into an empty training step; the first epoch of each
loader is a warm-up. Reports the median rows/s over ``--repeats`` epochs, the
median time to the first batch, and the ratios the issue asks about:

* shuffle buffer vs none (target: within 20%, i.e. ratio >= 0.8);
* streambatch vs DataLoader.

Every epoch is checked to deliver every row exactly once; a wrong result aborts
with ``FAILED`` (exit status 1).

    .venv/bin/python benchmarks/loader_throughput.py            # defaults
    .venv/bin/python benchmarks/loader_throughput.py --rows 20000 --repeats 5 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np
import pyarrow as pa


def make_data(rows: int, size: int):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, size=(rows, 3, size, size), dtype=np.uint8)
    ids = np.arange(rows, dtype=np.int64)
    label = rng.random(rows, dtype=np.float32)
    table = pa.table({"id": ids, "label": label,
                      "img": pa.FixedShapeTensorArray.from_numpy_ndarray(img)})
    return table, img, ids, label


def run_epoch(batches, rows: int) -> tuple[float, float]:
    """Time one epoch; returns (rows/s, seconds to the first batch). Checks coverage."""
    seen = np.zeros(rows, dtype=np.int64)
    t0 = time.perf_counter()
    first = None
    n = 0
    for batch in batches:
        if first is None:
            first = time.perf_counter() - t0
        ids = batch["id"] if isinstance(batch, dict) else batch[0]
        img = batch["img"] if isinstance(batch, dict) else batch[1]
        _ = img.sum()  # touch the batch like a training step would read it
        np.add.at(seen, ids.numpy(), 1)
        n += len(ids)
    wall = time.perf_counter() - t0
    if n != rows or not (seen == 1).all():
        print(f"FAILED: an epoch delivered {n} rows, {int((seen != 1).sum())} rows not exactly "
              f"once", file=sys.stderr)
        sys.exit(1)
    return rows / wall, first


def bench(name, make_iter, rows, repeats, results):
    run_epoch(make_iter(), rows)  # warm-up (imports, worker start-up, page faults)
    runs = [run_epoch(make_iter(), rows) for _ in range(repeats)]
    rate = statistics.median(r for r, _ in runs)
    first = statistics.median(f for _, f in runs)
    results[name] = {"rows_per_s": rate, "first_batch_s": first,
                     "runs_rows_per_s": [r for r, _ in runs]}
    print(f"{name:<44} {rate:>12,.0f} rows/s   first batch {first * 1e3:7.1f} ms", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--buffer", type=int, default=2_000, help="local shuffle buffer rows")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)

    import torch
    from torch.utils.data import DataLoader, TensorDataset

    import streambatch as sb

    sb.init()
    table, img, ids, label = make_data(args.rows, args.image_size)
    ds = sb.from_arrow(table).materialize()
    bs, rows = args.batch_size, args.rows
    print(f"{rows:,} rows of uint8[3x{args.image_size}x{args.image_size}] + label, "
          f"batch {bs}, median of {args.repeats} epochs\n")
    results: dict = {}
    plain = ds.iter_torch_batches(batch_size=bs, device="cpu")
    bench("streambatch iter_torch_batches", lambda: iter(plain), rows, args.repeats, results)
    shuffled = ds.iter_torch_batches(batch_size=bs, device="cpu",
                                     local_shuffle_buffer_size=args.buffer, local_shuffle_seed=0)
    bench(f"streambatch + shuffle buffer {args.buffer}", lambda: iter(shuffled), rows,
          args.repeats, results)
    tensors = TensorDataset(torch.from_numpy(ids), torch.from_numpy(img), torch.from_numpy(label))
    for workers in (0, 2):
        loader = DataLoader(tensors, batch_size=bs, shuffle=True, num_workers=workers,
                            persistent_workers=workers > 0)
        bench(f"DataLoader(shuffle=True, num_workers={workers})", lambda lo=loader: iter(lo),
              rows, args.repeats, results)

    base = results["streambatch iter_torch_batches"]["rows_per_s"]
    shuf = results[f"streambatch + shuffle buffer {args.buffer}"]["rows_per_s"]
    dl = max(results[k]["rows_per_s"] for k in results if k.startswith("DataLoader"))
    ratios = {"shuffle_vs_plain": shuf / base, "streambatch_vs_best_dataloader": base / dl,
              "shuffled_streambatch_vs_best_dataloader": shuf / dl}
    print()
    print(f"shuffle buffer / no shuffle:            {ratios['shuffle_vs_plain']:.2f}  "
          f"(target >= 0.80: {'met' if ratios['shuffle_vs_plain'] >= 0.8 else 'NOT met'})")
    print(f"streambatch / best DataLoader:          "
          f"{ratios['streambatch_vs_best_dataloader']:.2f}")
    print(f"streambatch shuffled / best DataLoader: "
          f"{ratios['shuffled_streambatch_vs_best_dataloader']:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results, "ratios": ratios}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
