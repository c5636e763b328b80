"""The main demo: batch inference on generated data with the embedded local backend.

Generates a parquet dataset of feature vectors, then streams it through a
CPU preprocessing stage and a small seeded PyTorch classifier (constructed once
per worker), and writes predictions to parquet. Run: ``make demo``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import streambatch as sb

FEATURES = 32
CLASSES = 4


def generate(directory: str, rows: int, files: int = 4, seed: int = 0) -> str:
    """Write ``rows`` rows of random feature vectors as ``files`` parquet files."""
    rng = np.random.default_rng(seed)
    os.makedirs(directory, exist_ok=True)
    per_file = rows // files
    for i in range(files):
        n = per_file if i < files - 1 else rows - per_file * (files - 1)
        start = i * per_file
        features = rng.normal(size=(n, FEATURES)).astype(np.float32)
        table = pa.table({
            "id": np.arange(start, start + n, dtype=np.int64),
            "features": pa.FixedShapeTensorArray.from_numpy_ndarray(features),
        })
        pq.write_table(table, os.path.join(directory, f"input-{i}.parquet"), row_group_size=2048)
    return directory


def standardize(batch: dict) -> dict:
    """CPU preprocessing: zero mean, unit variance per row (numpy releases the GIL)."""
    x = batch["features"]
    mean, std = x.mean(axis=1, keepdims=True), x.std(axis=1, keepdims=True) + 1e-6
    return {"id": batch["id"], "features": ((x - mean) / std).astype(np.float32)}


class Classifier:
    """A small seeded MLP; built once per worker, like a model loaded onto a GPU."""

    def __init__(self, seed: int = 7) -> None:
        import torch

        torch.manual_seed(seed)
        torch.set_num_threads(1)
        self.torch = torch
        self.model = torch.nn.Sequential(
            torch.nn.Linear(FEATURES, 64), torch.nn.ReLU(), torch.nn.Linear(64, CLASSES)
        ).eval()

    def __call__(self, batch: dict) -> dict:
        with self.torch.inference_mode():
            logits = self.model(self.torch.tensor(batch["features"]))
            probs = self.torch.softmax(logits, dim=1)
        score, label = probs.max(dim=1)
        return {"id": batch["id"], "label": label.numpy().astype(np.int64),
                "score": score.numpy()}


def build(input_dir: str) -> sb.Dataset:
    """The pipeline: read -> standardize -> classify."""
    return (sb.read_parquet(input_dir)
            .map_batches(standardize, batch_format="numpy", releases_gil=True)
            .map_batches(Classifier, batch_format="numpy", batch_size=1024, concurrency=2))


def main(rows: int = 200_000, workdir: str | None = None, quiet: bool = False) -> dict:
    """Generate data, run the pipeline, write predictions; return a summary."""
    workdir = workdir or tempfile.mkdtemp(prefix="streambatch-demo-")
    input_dir = generate(os.path.join(workdir, "input"), rows)
    out_dir = os.path.join(workdir, "predictions")
    ds = build(input_dir)
    start = time.perf_counter()
    files = ds.write_parquet(out_dir)
    seconds = time.perf_counter() - start
    result = pq.read_table(out_dir)
    counts = np.bincount(result["label"].to_numpy(), minlength=CLASSES).tolist()
    summary = {"rows": result.num_rows, "files": len(files), "seconds": seconds,
               "label_counts": counts, "output": out_dir}
    if not quiet:
        ds.explain()
        print(f"\n{ds.stats()}\n")
        print(f"Wrote {summary['rows']:,} predictions in {summary['files']} files to {out_dir} "
              f"in {seconds:.2f}s ({summary['rows'] / seconds:,.0f} rows/s)")
        print(f"Label counts: {counts}")
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    main(args.rows, args.workdir)
