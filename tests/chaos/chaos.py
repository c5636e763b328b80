"""Chaos harness: run a W1-shaped pipeline while a killer SIGKILLs worker processes.

Used by tests/chaos/test_chaos.py (a short version in CI) and
benchmarks/chaos.py (20 seeded runs, with the time overhead).
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time

import numpy as np
import psutil
import pyarrow as pa
from streambatch.executor.backends.zygote import zygote_pid

import streambatch as sb


def decode(batch: dict) -> dict:
    """CPU stage (stands in for JPEG decode + resize): deterministic per row."""
    time.sleep(0.01)
    ids = batch["id"]
    pixels = np.stack([np.full(64, i % 251, dtype=np.uint8) for i in ids])
    return {"id": ids, "pixels": pixels}


class Model:
    """Actor stage (stands in for the CNN): deterministic output per row."""

    def __init__(self) -> None:
        self.weights = np.arange(64, dtype=np.int64)

    def __call__(self, batch: dict) -> dict:
        time.sleep(0.01)
        scores = batch["pixels"].astype(np.int64) @ self.weights
        return {"id": batch["id"], "score": scores}


def pipeline(rows: int, blocks: int) -> sb.Dataset:
    return (sb.range(rows, override_num_blocks=blocks)
            .map_batches(decode, batch_size=None, batch_format="numpy", releases_gil=False)
            .map_batches(Model, batch_size=None, batch_format="numpy", concurrency=(1, 2), releases_gil=False))


class Killer:
    """SIGKILLs ``kills`` random worker processes of this driver at random times."""

    def __init__(self, seed: int, kills: int, window_s: tuple[float, float]) -> None:
        self.rng = random.Random(seed)
        self.kills, self.window = kills, window_s
        self.killed: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Killer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        for _ in range(self.kills):
            if self._stop.wait(self.rng.uniform(*self.window)):
                return
            workers = [c for c in psutil.Process().children(recursive=True)
                       if c.pid != zygote_pid()]  # the job's workers and actors
            if workers:
                victim = self.rng.choice(workers)
                try:
                    os.kill(victim.pid, signal.SIGKILL)
                    self.killed.append(victim.pid)
                except ProcessLookupError:
                    pass


def run(rows: int, blocks: int, seed: int | None, kills: int = 1,
        window_s: tuple[float, float] = (0.2, 1.0)) -> tuple[pa.Table, float, list[int], object]:
    """Run the pipeline (with a killer when ``seed`` is given); return output, seconds, kills."""
    ds = pipeline(rows, blocks)
    start = time.perf_counter()
    if seed is None:
        table, killed = ds.to_arrow(), []
    else:
        with Killer(seed, kills, window_s) as killer:
            table = ds.to_arrow()
        killed = killer.killed
    return table.sort_by("id"), time.perf_counter() - start, killed, ds.stats()
