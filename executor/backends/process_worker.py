"""The loop a forked worker process runs: receive a task, stream its outputs back.

An actor is the same loop with an environment (CUDA_VISIBLE_DEVICES) and a
stage whose classes it builds once, before its first task.
"""

from __future__ import annotations

import ctypes
import os
import signal
import time

from streambatch.executor.backends.base import (
    ActorFailed,
    TaskDeadLetters,
    TaskDone,
    TaskFailed,
    TaskOutput,
    describe_failure,
    portable,
)
from streambatch.executor.backends.fast_start import defer_pandas_probe
from streambatch.executor.backends.task_runner import run_task, task_context
from streambatch.executor.partition import SharedStore


def _die_with_parent() -> None:
    try:  # Linux: SIGKILL this worker when the driver exits, however it exits
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):  # pragma: no cover - non-Linux
        pass


def _return_freed_memory() -> None:
    """Give freed blocks back to the OS at once, so a worker's memory follows what
    it holds now, not the largest batch it ever held: allocations of 256 KiB and
    more are mmapped by glibc (and unmapped when freed) and pyarrow allocates
    through the same malloc instead of keeping its own pool of freed pages."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 256 * 1024)  # M_MMAP_THRESHOLD (fixed: no dynamic growth)
        libc.mallopt(-1, 1024 * 1024)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # pragma: no cover - non-glibc
        return
    import pyarrow as pa

    pa.set_memory_pool(pa.system_memory_pool())


def worker_main(conn, stages: list, store_root: str, target_bytes: int, inherited: list,
                env: dict | None = None, actor: tuple | None = None) -> None:
    """Serve tasks from ``conn`` until it closes or sends ``None``.

    ``actor`` is ``(actor_id, stage_index)`` for an actor worker.
    """
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for other in inherited:
        other.close()
    os.environ.update(env or {})
    defer_pandas_probe()
    _return_freed_memory()
    store, state = SharedStore(store_root), {}
    if actor is not None and not _setup_actor(conn, stages[actor[1]], actor[0], state):
        return
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        _serve(conn, stages[task.stage_index], task, store, target_bytes, state)


def _setup_actor(conn, stage, actor_id: int, state: dict) -> bool:
    try:
        stage.setup(state)
        return True
    except Exception as exc:  # noqa: BLE001 - reported to the driver
        conn.send(ActorFailed(actor_id, portable(describe_failure(exc))))
        return False


def _serve(conn, stage, task, store: SharedStore, target_bytes: int, state: dict) -> None:
    start = time.perf_counter()
    ctx = task_context(stage, task, state)
    try:
        for table in run_task(stage, task, target_bytes, ctx):
            ref = store.put(table)
            conn.send(TaskOutput(task.task_id, ref, table.num_rows, table.nbytes))
        if ctx.dead_letters:
            conn.send(TaskDeadLetters(task.task_id, ctx.dead_letters))
        conn.send(TaskDone(task.task_id, time.perf_counter() - start))
    except Exception as exc:  # noqa: BLE001 - every failure goes back to the driver
        conn.send(TaskFailed(task.task_id, portable(describe_failure(exc))))
