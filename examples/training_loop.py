"""Data-parallel training: two torch.distributed ranks (gloo) fed by ``streaming_split(2)``.

One streambatch pipeline (read parquet -> standardize features on CPU) runs in
this process and is split into two streams with ``ds.streaming_split(2,
equal=True)``: every rank gets the same number of batches per epoch, which
DistributedDataParallel needs (each step all-reduces gradients across ranks).
The two ranks are separate processes (``torch.multiprocessing``, spawn) joined
in a gloo process group; a feeder thread per rank here iterates that rank's
split and hands its batches to the rank process through a bounded queue, so a
slow rank backpressures the shared pipeline (Ray Data does the same through
its split coordinator actor).

Run: ``python examples/training_loop.py --rows 20000 --epochs 2``
"""

from __future__ import annotations

import argparse
import os
import queue
import socket
import sys
import tempfile
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import streambatch as sb

FEATURES = 8
WORLD_SIZE = 2
TRUE_WEIGHTS = np.linspace(-1.0, 1.0, FEATURES).astype(np.float32)


def generate(directory: str, rows: int, files: int = 4, seed: int = 0) -> str:
    """Parquet with ``id``, ``x`` (FEATURES floats, mean 3, std 2) and ``y = x_std @ w + noise``."""
    rng = np.random.default_rng(seed)
    os.makedirs(directory, exist_ok=True)
    bounds = np.linspace(0, rows, files + 1).astype(int)
    for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        z = rng.normal(size=(hi - lo, FEATURES)).astype(np.float32)
        y = z @ TRUE_WEIGHTS + 0.05 * rng.normal(size=hi - lo).astype(np.float32)
        pq.write_table(pa.table({"id": np.arange(lo, hi, dtype=np.int64),
                                 "x": pa.FixedShapeTensorArray.from_numpy_ndarray(3 + 2 * z),
                                 "y": y.astype(np.float32)}),
                       os.path.join(directory, f"train-{i:03d}.parquet"))
    return directory


def standardize(batch: dict) -> dict:
    """CPU preprocessing: undo the known offset and scale of the features."""
    return {"id": batch["id"], "x": ((batch["x"] - 3.0) / 2.0).astype(np.float32),
            "y": batch["y"]}


def build(input_dir: str) -> sb.Dataset:
    """The training-data pipeline (read -> standardize), before the split."""
    return (sb.read_parquet(input_dir)
            .map_batches(standardize, batch_format="numpy", releases_gil=True))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_rank(rank: int, port: int, epochs: int, lr: float, batches, results) -> None:
    """One rank: DDP over gloo; trains on the batches its feeder sends (None ends an epoch)."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}",
                            rank=rank, world_size=WORLD_SIZE)
    try:
        torch.manual_seed(0)  # same initial weights on both ranks (DDP also broadcasts them)
        model = DistributedDataParallel(torch.nn.Linear(FEATURES, 1))
        optimizer = torch.optim.SGD(model.parameters(), lr=lr)
        report = {"rank": rank, "steps": [], "ids": [], "loss": []}
        for _ in range(epochs):
            steps, ids, losses = 0, [], []
            while (batch := batches.get()) is not None:
                x, y = torch.from_numpy(batch["x"]), torch.from_numpy(batch["y"])
                loss = torch.nn.functional.mse_loss(model(x).squeeze(1), y)
                optimizer.zero_grad()
                loss.backward()  # gradients are all-reduced with the other rank here
                optimizer.step()
                steps += 1
                ids.append(batch["id"])
                losses.append(loss.item())
            report["steps"].append(steps)
            report["ids"].append(np.concatenate(ids) if ids else np.empty(0, np.int64))
            report["loss"].append(float(np.mean(losses)) if losses else float("nan"))
        report["weights"] = model.module.weight.detach().numpy().ravel().copy()
        results.put(report)
    finally:
        dist.destroy_process_group()


def _feed(split, epochs: int, batch_size: int, out, errors: list) -> None:
    try:
        for _ in range(epochs):
            for batch in split.iter_batches(batch_size=batch_size, batch_format="numpy"):
                out.put({k: np.ascontiguousarray(v) for k, v in batch.items()})
            out.put(None)
    except BaseException as exc:  # noqa: BLE001 - reported by main
        errors.append(exc)
        out.put(None)


def main(rows: int = 20_000, epochs: int = 2, batch_size: int = 128, lr: float = 0.1,
         workdir: str | None = None, quiet: bool = False, start_method: str | None = None) -> dict:
    """Generate data, train two DDP ranks on ``streaming_split(2)``; return a summary.

    The rank processes start with ``start_method``: by default ``fork`` on Linux
    (they are forked before the pipeline starts any thread, and each sets one
    torch thread; ~0.5 s) and ``spawn`` elsewhere (each re-imports torch).
    Use ``spawn`` when the ranks use CUDA.
    """
    import torch.multiprocessing as mp

    workdir = workdir or tempfile.mkdtemp(prefix="streambatch-train-")
    ds = build(generate(os.path.join(workdir, "train"), rows))
    splits = ds.streaming_split(WORLD_SIZE, equal=True)
    ctx = mp.get_context(start_method or ("fork" if sys.platform == "linux" else "spawn"))
    results = ctx.Queue()
    inboxes = [ctx.Queue(maxsize=4) for _ in range(WORLD_SIZE)]
    port = _free_port()
    start = time.perf_counter()
    ranks = [ctx.Process(target=train_rank, args=(r, port, epochs, lr, inboxes[r], results),
                         daemon=True) for r in range(WORLD_SIZE)]
    for p in ranks:
        p.start()
    errors: list = []
    feeders = [threading.Thread(target=_feed, args=(splits[r], epochs, batch_size,
                                                    inboxes[r], errors), daemon=True)
               for r in range(WORLD_SIZE)]
    for t in feeders:
        t.start()
    reports, failed = [], True
    try:
        while len(reports) < WORLD_SIZE:
            try:
                reports.append(results.get(timeout=1.0))
            except queue.Empty:
                if errors:
                    raise errors[0] from None
                dead = [r for r, p in enumerate(ranks) if p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"training rank(s) {dead} died (exit codes "
                                       f"{[ranks[r].exitcode for r in dead]}); see their "
                                       "traceback above") from None
        failed = False
    finally:
        for p in ranks:
            p.join(timeout=5 if failed else 60)
            if p.is_alive():  # a rank left waiting in an all-reduce for a dead peer
                p.kill()
    seconds = time.perf_counter() - start
    reports.sort(key=lambda r: r["rank"])
    summary = {"seconds": seconds, "epochs": epochs,
               "steps_per_rank": [r["steps"] for r in reports],
               "rows_per_rank": [[len(i) for i in r["ids"]] for r in reports],
               "ids": [r["ids"] for r in reports],
               "loss_per_epoch": [float(np.mean([r["loss"][e] for r in reports]))
                                  for e in range(epochs)],
               "weights": [r["weights"] for r in reports],
               "weight_error": float(np.abs(reports[0]["weights"] - TRUE_WEIGHTS).max())}
    if not quiet:
        print(f"Trained {WORLD_SIZE} ranks for {epochs} epochs on {rows:,} rows in "
              f"{seconds:.2f}s; steps per rank per epoch {summary['steps_per_rank']}")
        print(f"Mean loss per epoch {[round(x, 4) for x in summary['loss_per_epoch']]}; "
              f"largest weight error {summary['weight_error']:.4f}")
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--start-method", default=None, choices=["fork", "spawn", "forkserver"])
    args = parser.parse_args()
    main(args.rows, args.epochs, args.batch_size, workdir=args.workdir,
         start_method=args.start_method)
