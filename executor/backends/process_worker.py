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


def _return_freed_memory(state: dict, every_s: float = 2.0) -> None:
    """Give memory freed by finished tasks back to the OS, at most every ``every_s``
    seconds, so a task worker's footprint follows what it holds, not the largest
    batch it ever held: pyarrow's pool releases its unused pages and glibc trims
    its heaps. Task workers only, and not after every task: memory trimmed away
    faults in again when the next task needs it (actors keep their heap, see
    _keep_heap_for_actor)."""
    now = time.monotonic()
    if now - state.get("trimmed_at", 0.0) < every_s:
        return
    state["trimmed_at"] = now
    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


try:
    _LIBC = ctypes.CDLL("libc.so.6")
except OSError:  # pragma: no cover - non-Linux
    _LIBC = None


def _keep_heap_for_actor() -> None:
    """An actor runs the same model batch after batch: keep its freed memory in the
    heap for the next batch instead of giving it back and faulting it in again.
    glibc's defaults mmap and unmap every allocation above 32 MiB and trim the heap
    above twice the last one, so a CNN's activations (tens of MiB per layer) were
    faulted in afresh every batch: a third of the model's CPU time was page faults
    (W1's CNN on one thread: 4.9 -> 3.2 ms per image with these settings)."""
    if _LIBC is None:  # pragma: no cover - non-glibc
        return
    _LIBC.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: trim only above 1 GiB free at the top
    _LIBC.mallopt(-3, 512 << 20)  # M_MMAP_THRESHOLD: heap up to 512 MiB per allocation


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
    store, state = SharedStore(store_root), {}
    if actor is not None:
        _keep_heap_for_actor()
        if not _setup_actor(conn, stages[actor[1]], actor[0], state):
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
        seconds = time.perf_counter() - start
        if task.actor_id is None:
            _return_freed_memory(state)
        conn.send(TaskDone(task.task_id, seconds))
    except Exception as exc:  # noqa: BLE001 - every failure goes back to the driver
        conn.send(TaskFailed(task.task_id, portable(describe_failure(exc))))
