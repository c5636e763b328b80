"""Task workers give a task's buffers back when it ends: a worker's memory between
tasks does not grow with the size of the outputs it made (S1 at a 64 MiB budget:
8 idle workers held 20 MiB each before glibc's thresholds were fixed)."""

from __future__ import annotations

import os
import statistics

import numpy as np
import pytest

import streambatch as sb

ROWS_PER_TASK = 10


def _anonymous_kib() -> int:
    with open(f"/proc/{os.getpid()}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Anonymous:"):
                return int(line.split()[1])
    raise AssertionError("no Anonymous line in smaps_rollup")


def _growth_between_tasks(row_bytes: int, tasks: int = 16) -> float:
    """Run ``tasks`` tasks in worker processes, each making ROWS_PER_TASK rows of
    ``row_bytes``; returns by how much (KiB, median) a worker's anonymous memory
    at the start of a task exceeds what it had at the start of its first task."""

    def make(batch):
        before = _anonymous_kib()
        n = len(batch["id"])
        scratch = np.full((n + n // 4, row_bytes), 7, dtype=np.uint8)  # a larger temporary
        data = np.bitwise_xor(scratch[:n], np.uint8(1))
        del scratch
        return {"id": batch["id"], "pid": np.full(n, os.getpid()),
                "before_kib": np.full(n, before), "data": data}

    ds = (sb.range(tasks * ROWS_PER_TASK, override_num_blocks=tasks)
          .map_batches(make, batch_size=None, batch_format="numpy", num_cpus=1, concurrency=1, releases_gil=False))
    rows = ds.select_columns(["id", "pid", "before_kib"]).take_all()
    by_worker: dict[int, list] = {}
    for _task, pid, kib in sorted({(r["id"] // ROWS_PER_TASK, r["pid"], r["before_kib"]) for r in rows}):
        by_worker.setdefault(pid, []).append(kib)
    assert os.getpid() not in by_worker  # the tasks ran in worker processes
    return statistics.median(k - ks[0] for ks in by_worker.values() for k in ks[2:])


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps_rollup"), reason="Linux only")
def test_a_worker_between_tasks_holds_no_more_after_10_mib_outputs_than_after_10_kib():
    small = _growth_between_tasks(row_bytes=1 << 10)
    big = _growth_between_tasks(row_bytes=1 << 20)
    assert big - small < 4 * 1024, (small, big)
