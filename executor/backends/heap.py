"""Heap settings of worker processes: task workers give freed memory back to the OS,
actors keep theirs for the next batch (shared by the local and Ray backends)."""

from __future__ import annotations

import ctypes
import os
import sys
import time

BIG_TASK_BYTES = 4 << 20  # a task that made this much output trims right away


def return_freed_memory(state: dict, made_bytes: int = 0, every_s: float = 2.0) -> None:
    """Give memory freed by finished tasks back to the OS, so a task worker's
    footprint follows what it holds, not the largest batch it ever held:
    pyarrow's pool releases its unused pages and glibc trims its heaps (glibc
    keeps a freed buffer of up to 32 MiB in the heap once one that size was
    freed). Task workers only (actors keep their heap, see keep_heap_for_actor).
    After a task that made ``made_bytes >= BIG_TASK_BYTES`` of output it trims at
    once: faulting that much in again costs far less than making it did. After
    small tasks, at most every ``every_s`` seconds: they come fast, and each trim
    costs a system call or two.

    >>> state = {}
    >>> return_freed_memory(state); return_freed_memory(state)  # the second is skipped
    >>> state["trims"]
    1
    >>> return_freed_memory(state, made_bytes=BIG_TASK_BYTES); state["trims"]
    2
    """
    now = time.monotonic()
    if made_bytes < BIG_TASK_BYTES and now - state.get("trimmed_at", -every_s) < every_s:
        return
    state["trimmed_at"] = now
    state["trims"] = state.get("trims", 0) + 1
    release_arrow_pool()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


_LIBC: ctypes.CDLL | None
try:
    _LIBC = ctypes.CDLL("libc.so.6")
except OSError:  # pragma: no cover - non-Linux
    _LIBC = None


def return_heap_for_task_worker() -> None:
    """A task worker's buffers should leave with its task. glibc raises its mmap
    threshold to the size of the largest buffer freed (up to 32 MiB), so a worker
    that made a 10 MiB array once keeps later ones in its heap; and a worker forked
    from one of the driver's threads allocates from a thread arena, whose free top
    ``malloc_trim`` never gives back. Fixed thresholds keep it small: buffers of
    1 MiB and more are mapped and unmapped with their array, and a heap shrinks
    once 8 MiB at its top are free (S1 at 64 MiB: idle workers held 20 MiB each).

    >>> import os
    >>> pid = os.fork()
    >>> if pid == 0:
    ...     return_heap_for_task_worker(); os._exit(0)
    >>> os.waitpid(pid, 0)[1]
    0
    """
    if _LIBC is None:  # pragma: no cover - non-glibc
        return
    _LIBC.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD (fixed: no dynamic raise)
    _LIBC.mallopt(-1, 8 << 20)  # M_TRIM_THRESHOLD


_EAGER = {"commit": False}  # mimalloc in this process commits its arenas eagerly


def commit_arrow_memory_on_demand() -> None:
    """Called by ``import streambatch`` before pyarrow loads. Arrow's default allocator,
    mimalloc, commits its memory arenas eagerly, and with transparent huge pages in
    ``madvise`` mode a job's first large buffers then took 2-3x longer to fault in (a
    10 M-row shuffle: 2.3-3.3 s against 1.5-1.7 s). ``MIMALLOC_ARENA_EAGER_COMMIT=0``
    commits on demand; worker processes inherit it; a value the user set is kept.
    Where pyarrow was imported first, mimalloc has read its options already (see
    :func:`arrow_pool_for_driver`).

    >>> commit_arrow_memory_on_demand(); "MIMALLOC_ARENA_EAGER_COMMIT" in os.environ
    True
    """
    if "MIMALLOC_ARENA_EAGER_COMMIT" not in os.environ:
        _EAGER["commit"] = "pyarrow" in sys.modules
    os.environ.setdefault("MIMALLOC_ARENA_EAGER_COMMIT", "0")


def arrow_pool_for_driver() -> str:
    """Where this process's mimalloc commits eagerly (pyarrow was imported before
    streambatch), allocate Arrow buffers with glibc's malloc instead, unless
    ``ARROW_DEFAULT_MEMORY_POOL`` names a pool; return the pool's name.

    >>> arrow_pool_for_driver() in ("mimalloc", "system", "jemalloc")
    True
    """
    import pyarrow as pa

    if _EAGER["commit"] and not os.environ.get("ARROW_DEFAULT_MEMORY_POOL") \
            and pa.default_memory_pool().backend_name == "mimalloc":
        pa.set_memory_pool(pa.system_memory_pool())
    return pa.default_memory_pool().backend_name


def release_arrow_pool() -> None:
    """Give back what Arrow's pool no longer uses. Actors call it after each task (a
    batch joined from several blocks is copied there) while glibc's heap, where the
    model's buffers live, stays as keep_heap_for_actor set it. ~0.1 ms.

    >>> release_arrow_pool()
    """
    import pyarrow as pa

    pa.default_memory_pool().release_unused()


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
