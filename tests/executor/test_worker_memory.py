"""A task worker running tasks back to back keeps the heap its last task freed (the
next task works in those pages instead of faulting fresh ones in, and is charged
for them: test_kept_heap.py), but never more than one task's working memory: its
memory between tasks does not grow with the number of tasks it ran. An idle worker
gives the memory back (heap.trim_when_idle; S1 at a 64 MiB budget: 8 idle workers
held 20 MiB each before workers gave memory back)."""

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


def _growth_between_tasks(row_bytes: int, tasks: int = 16) -> list[float]:
    """Run ``tasks`` tasks in worker processes, each making ROWS_PER_TASK rows of
    ``row_bytes``; returns by how much (KiB) a worker's anonymous memory at the start
    of each of its tasks from the third on exceeds what it had at its first."""

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
    return [k - ks[0] for ks in by_worker.values() for k in ks[2:]]


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps_rollup"), reason="Linux only")
def test_a_worker_between_tasks_holds_at_most_one_tasks_working_memory():
    small = statistics.median(_growth_between_tasks(row_bytes=1 << 10))
    big = _growth_between_tasks(row_bytes=1 << 20, tasks=24)
    one_task = (ROWS_PER_TASK * 9 // 4) * 1024  # KiB: its temporary and its output
    assert max(big) - small < one_task + 4 * 1024, (small, big)
    assert big[-1] - statistics.median(big) < 4 * 1024, big  # no growth with tasks
