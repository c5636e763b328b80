"""Heap settings of worker processes: task workers give freed memory back to the OS,
actors keep theirs for the next batch (shared by the local and Ray backends)."""

from __future__ import annotations

import ctypes
import time


def return_freed_memory(state: dict, every_s: float = 2.0) -> None:
    """Give memory freed by finished tasks back to the OS, at most every ``every_s``
    seconds, so a task worker's footprint follows what it holds, not the largest
    batch it ever held: pyarrow's pool releases its unused pages and glibc trims
    its heaps. Task workers only, and not after every task: memory trimmed away
    faults in again when the next task needs it (actors keep their heap, see
    keep_heap_for_actor).

    >>> state = {}
    >>> return_freed_memory(state); return_freed_memory(state)  # the second is skipped
    >>> "trimmed_at" in state
    True
    """
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


def keep_heap_for_actor() -> None:
    """An actor runs the same model batch after batch: keep its freed memory in the
    heap for the next batch instead of giving it back and faulting it in again.
    glibc's defaults mmap and unmap every allocation above 32 MiB and trim the heap
    above twice the last one, so a CNN's activations (tens of MiB per layer) were
    faulted in afresh every batch: a third of the model's CPU time was page faults
    (W1's CNN on one thread: 4.9 -> 3.2 ms per image with these settings).

    Call it in the process that runs the model, before building it:

    >>> import os
    >>> pid = os.fork()
    >>> if pid == 0:
    ...     keep_heap_for_actor(); os._exit(0)
    >>> os.waitpid(pid, 0)[1]
    0
    """
    if _LIBC is None:  # pragma: no cover - non-glibc
        return
    _LIBC.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: trim only above 1 GiB free at the top
    _LIBC.mallopt(-3, 512 << 20)  # M_MMAP_THRESHOLD: heap up to 512 MiB per allocation
