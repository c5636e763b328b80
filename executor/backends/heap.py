"""Heap settings of worker processes (shared by the local and Ray backends): an actor
keeps its freed memory for the next batch; a task worker under a loose budget keeps it
while tasks keep coming and gives it back once idle, under a tight one after each task
(:func:`heap_bytes_for`)."""

from __future__ import annotations

import ctypes
import os
import sys
import time

BIG_TASK_BYTES = 4 << 20  # a task that made (or worked with) this much trims right away
REUSE_BYTES = 64 << 20  # released block files the local store keeps for reuse, at most
HEAP_BYTES = 1 << 20  # freed memory a task worker keeps at least (larger buffers: mapped)
ACTOR_HEAP_BYTES = 1 << 30  # an actor's: its model's buffers, batch after batch
IDLE_TRIM_S = 0.05  # a task worker with no task for this long gives its freed memory back


def trim_when_idle(conn, state: dict, idle_s: float = IDLE_TRIM_S) -> None:
    """Wait up to ``idle_s`` for the next task on ``conn``; none came: give the memory
    freed by finished tasks back to the OS (pyarrow's pool releases its unused pages,
    glibc trims its heaps) before waiting on. A worker running tasks back to back keeps
    its heap, so the next batch reuses the pages the last one faulted in: faulting
    memory in afresh costs ~0.2 ms per 150 KB on a virtual machine (W2's 224x224 crops:
    a third of the decode). An idle worker's footprint is what it holds.

    >>> import multiprocessing
    >>> here, there = multiprocessing.Pipe()
    >>> state = {}
    >>> trim_when_idle(here, state, idle_s=0.0); state["trims"]
    1
    >>> there.send("task"); trim_when_idle(here, state, idle_s=0.0); state["trims"]
    1
    """
    if not conn.poll(idle_s):
        _give_back(state)


def return_freed_memory(state: dict, made_bytes: int = 0, every_s: float = 2.0) -> None:
    """Give memory freed by finished tasks back to the OS, so a task worker's
    footprint follows what it holds, not the largest batch it ever held:
    pyarrow's pool releases its unused pages and glibc trims its heaps (glibc
    keeps a freed buffer of up to 32 MiB in the heap once one that size was
    freed).
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
    _give_back(state)


def _give_back(state: dict) -> None:
    """Arrow's pool releases its unused pages, glibc trims its heaps; counted in
    ``state["trims"]``."""
    state["trims"] = state.get("trims", 0) + 1
    release_arrow_pool()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


_LIBC: ctypes.CDLL | None
try:
    _LIBC = ctypes.CDLL("libc.so.6")
except OSError:  # pragma: no cover - non-Linux
    _LIBC = None


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def kept_free_bytes() -> int:
    """Bytes glibc holds freed in this process's heaps (reused before the process's
    resident memory grows again); 0 where the C library does not tell.

    >>> kept_free_bytes() >= 0
    True
    """
    info = getattr(_LIBC, "mallinfo2", None)
    if info is None:  # pragma: no cover - glibc < 2.33 or non-glibc
        return 0
    info.restype = _MallInfo2
    return int(info().fordblks)


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
    model's buffers live, stays as keep_heap set it. ~0.1 ms.

    >>> release_arrow_pool()
    """
    import pyarrow as pa

    pa.default_memory_pool().release_unused()


def keep_heap(limit_bytes: int = ACTOR_HEAP_BYTES) -> None:
    """A worker runs the same work batch after batch: keep up to ``limit_bytes`` of
    freed memory in the heap for the next batch instead of giving it back and faulting
    it in again (task workers give it back when idle, :func:`trim_when_idle`).
    glibc's defaults mmap and unmap every allocation above 32 MiB and trim the heap
    above twice the last one, so a CNN's activations (tens of MiB per layer) were
    faulted in afresh every batch: a third of the model's CPU time was page faults
    (W1's CNN on one thread: 4.9 -> 3.2 ms per image with these settings). Below
    ``limit_bytes`` allocations come from the heap; above it they are mapped and
    unmapped with their array. A small limit (a tight memory budget: HEAP_BYTES)
    gives buffers back with their task.

    Call it in the process that runs the model, before building it:

    >>> import os
    >>> pid = os.fork()
    >>> if pid == 0:
    ...     keep_heap(); os._exit(0)
    >>> os.waitpid(pid, 0)[1]
    0
    """
    if _LIBC is None:  # pragma: no cover - non-glibc
        return
    _LIBC.mallopt(-1, max(limit_bytes, 8 << 20))  # M_TRIM_THRESHOLD: free top kept
    _LIBC.mallopt(-3, min(limit_bytes, 512 << 20))  # M_MMAP_THRESHOLD: fixed, no raise


def heap_bytes_for(budget_bytes: int, num_cpus: int) -> int:
    """The freed memory a task worker keeps for its next task: a sixteenth of the
    budget shared by the CPU slots, at least HEAP_BYTES (glibc's own first threshold,
    rounded up), at most ACTOR_HEAP_BYTES.

    >>> heap_bytes_for(96 << 20, 8) == HEAP_BYTES, heap_bytes_for(12 << 30, 2) >> 20
    (True, 384)
    """
    share = budget_bytes // (16 * max(1, num_cpus))
    return max(HEAP_BYTES, min(ACTOR_HEAP_BYTES, share))
