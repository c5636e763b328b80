"""The loop a forked worker process runs: receive a task, stream its outputs back."""

from __future__ import annotations

import ctypes
import signal
import time

from streambatch.executor.backends.base import (
    TaskDone,
    TaskFailed,
    TaskOutput,
    describe_failure,
    portable,
)
from streambatch.executor.backends.fast_start import defer_pandas_probe
from streambatch.executor.backends.task_runner import run_task
from streambatch.executor.partition import SharedStore


def _die_with_parent() -> None:
    try:  # Linux: SIGKILL this worker when the driver exits, however it exits
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):  # pragma: no cover - non-Linux
        pass


def worker_main(conn, stages: list, store_root: str, target_bytes: int, inherited: list) -> None:
    """Serve tasks from ``conn`` until it closes or sends ``None``."""
    _die_with_parent()
    defer_pandas_probe()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for other in inherited:
        other.close()
    store, state = SharedStore(store_root), {}
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        _serve(conn, stages[task.stage_index], task, store, target_bytes, state)


def _serve(conn, stage, task, store: SharedStore, target_bytes: int, state: dict) -> None:
    start = time.perf_counter()
    try:
        for table in run_task(stage, task, target_bytes, state):
            ref = store.put(table)
            conn.send(TaskOutput(task.task_id, ref, table.num_rows, table.nbytes))
        conn.send(TaskDone(task.task_id, time.perf_counter() - start))
    except Exception as exc:  # noqa: BLE001 - every failure goes back to the driver
        conn.send(TaskFailed(task.task_id, portable(describe_failure(exc))))
