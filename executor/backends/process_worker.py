"""The loop a forked worker process runs: receive a task, stream its outputs back.

An actor is the same loop with an environment (CUDA_VISIBLE_DEVICES) and a
stage whose classes it builds once, before its first task.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import time

from streambatch.executor.backends.base import (
    ActorFailed,
    ActorReady,
    TaskDeadLetters,
    TaskDone,
    TaskFailed,
    TaskOutput,
    describe_failure,
    portable,
)
from streambatch.executor.backends.fast_start import defer_pandas_probe
from streambatch.executor.backends.fork_hygiene import (
    forget_imports_in_progress,
    release_pyarrow_pandas_lock,
    reseed_generators,
)
from streambatch.executor.backends.heap import (
    ACTOR_HEAP_BYTES,
    HEAP_BYTES,
    keep_heap,
    release_arrow_pool,
    return_freed_memory,
    trim_when_idle,
)
from streambatch.executor.backends.shared_store import SharedStore
from streambatch.executor.backends.task_memory import PeakMeter, first_of_stage, mapped_bytes
from streambatch.executor.backends.task_runner import run_task, task_context


def _die_with_parent() -> None:
    try:  # Linux: SIGKILL this worker when the driver exits, however it exits
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):  # pragma: no cover - non-Linux
        pass
    parent = multiprocessing.parent_process()
    if parent is not None and not parent.is_alive():  # it died before prctl took effect
        os._exit(1)


def worker_main(conn, stages: list, store_root: str, target_bytes: int, inherited: list,
                env: dict | None = None, actor: tuple | None = None,
                heap_bytes: int = HEAP_BYTES) -> None:
    """Serve tasks from ``conn`` until it closes or sends ``None``.

    ``actor`` is ``(actor_id, stage_index)`` for an actor worker.
    """
    forget_imports_in_progress()  # (another driver thread may have been importing)
    release_pyarrow_pandas_lock()
    reseed_generators()
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the driver's cleaning handler
    for other in inherited:
        other.close()
    os.environ.update(env or {})
    defer_pandas_probe()
    state: dict = {}
    keeps = actor is None and heap_bytes > HEAP_BYTES  # its heap between tasks
    store, meter = SharedStore(store_root), PeakMeter(counts_kept=keeps)
    keep_heap(heap_bytes if actor is None else ACTOR_HEAP_BYTES)
    if actor is not None and not _setup_actor(conn, stages[actor[1]], actor[0], state):
        return
    while True:
        try:
            if keeps:
                trim_when_idle(conn, state)
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        made = _serve(conn, stages[task.stage_index], task, store, target_bytes, state, meter)
        del task  # its input blocks, before trimming
        if actor is None and not keeps:
            return_freed_memory(state, max(made, meter.peak_bytes()))
        elif actor is not None:
            release_arrow_pool()


def _setup_actor(conn, stage, actor_id: int, state: dict) -> bool:
    try:
        stage.setup(state)
        conn.send(ActorReady(actor_id))
        return True
    except Exception as exc:  # noqa: BLE001 - reported to the driver
        conn.send(ActorFailed(actor_id, portable(describe_failure(exc))))
        return False


def _serve(conn, stage, task, store: SharedStore, target_bytes: int, state: dict,
           meter: PeakMeter) -> int:
    """Run one task, sending its outputs and its end (with its measured working
    memory); returns the bytes it made. Its tables are gone when this returns, so
    the caller may trim the heap."""
    meter.start()
    start, made = time.perf_counter(), 0
    try:
        warmup = first_of_stage(state, task.stage_index)
        ctx = task_context(stage, task, state)
        for table in run_task(stage, task, target_bytes, ctx):
            ref = store.put(table)
            so_far = 0 if made else _working(meter, task, table.nbytes)  # the first block
            made += table.nbytes  # tells the working memory so far
            conn.send(TaskOutput(task.task_id, ref, table.num_rows, table.nbytes, so_far,
                                 warmup))
            del table
        if ctx.dead_letters:
            conn.send(TaskDeadLetters(task.task_id, ctx.dead_letters))
        # the inputs are charged as buffered, the outputs as the task's expected output
        working = _working(meter, task, made)
        conn.send(TaskDone(task.task_id, time.perf_counter() - start, working, warmup))
    except Exception as exc:  # noqa: BLE001 - every failure goes back to the driver
        conn.send(TaskFailed(task.task_id, portable(describe_failure(exc))))
    return made


def _working(meter: PeakMeter, task, made: int) -> int:
    """The task's working memory so far: the rise of the worker's peak, less its mapped
    inputs (charged as buffered) and the ``made`` bytes of its outputs (charged as the
    task's expected output); at least 1 (0 means "not measured")."""
    return max(1, meter.peak_bytes() - mapped_bytes(task.input_refs) - made) \
        if meter.works else 0
