"""A task's working memory, measured in the process that runs it.

Linux keeps a process's peak resident memory (``VmHWM``) and resets it to the
current value when ``5`` is written to ``/proc/self/clear_refs``. A worker resets
it as a task starts and reads it as the task ends: the task's working memory is
the rise of that peak above what the process held at the start (decoded reader
buffers, a UDF's temporaries, output blocks before they leave), less the input
blocks it mapped (the driver charges those as buffered partitions). Memory a task
worker's heap kept freed from earlier tasks counts as held by the task too.
"""

from __future__ import annotations

import os

from streambatch.executor.backends.heap import kept_free_bytes

_STATUS = "/proc/self/status"


def _status_kib(field: str) -> int | None:
    try:
        with open(_STATUS, "rb") as handle:
            for line in handle:
                if line.startswith(field.encode()):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


class PeakMeter:
    """Measures the rise of this process's peak resident memory over one task.

    >>> meter = PeakMeter()
    >>> meter.start()
    >>> block = bytearray(32 << 20)  # 32 MiB, touched
    >>> meter.peak_bytes() >= 30 << 20 or not meter.works
    True
    """

    def __init__(self, counts_kept: bool = False) -> None:
        self.works = _reset_peak()
        self._base = 0
        self._counts_kept = counts_kept

    def start(self) -> None:
        """A task begins: the peak starts again from the memory held now, less (with
        ``counts_kept``: a task worker that keeps its heap between tasks) what the heap
        holds freed from earlier tasks, which the next task works in without raising the
        peak. glibc counts freed memory it gave back to the OS as free too, so a worker
        that gives its memory back after each task leaves it out."""
        if self.works:
            self.works = _reset_peak()
            kept = kept_free_bytes() if self._counts_kept else 0
            self._base = (_status_kib("VmRSS:") or 0) * 1024 - kept

    def peak_bytes(self) -> int:
        """How far the peak rose above the start (0 when the kernel does not tell)."""
        if not self.works:
            return 0
        peak = _status_kib("VmHWM:")
        return max(0, peak * 1024 - self._base) if peak is not None else 0


def first_of_stage(state: dict, stage_index: int) -> bool:
    """True the first time a worker (its per-worker ``state``) runs a task of the stage:
    that task's measure also holds what the worker keeps once started (the UDF's
    imports, allocator arenas, a model), which later tasks reuse.

    >>> state = {}
    >>> first_of_stage(state, 1), first_of_stage(state, 1), first_of_stage(state, 2)
    (True, False, True)
    """
    seen = state.setdefault("measured_stages", set())
    if stage_index in seen:
        return False
    seen.add(stage_index)
    return True


def mapped_bytes(refs) -> int:
    """Bytes of the shared-memory input blocks a task maps (files; other refs: 0).

    >>> mapped_bytes([])
    0
    """
    total = 0
    for ref in refs:
        path = getattr(ref, "path", None)
        if path is not None:
            try:
                total += os.path.getsize(path)
            except OSError:
                pass
    return total


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


class ArrowGrowth:
    """For a task on a thread of a shared process (whose peak resident memory other
    tasks move too): how far the process's anonymous resident memory (``RssAnon``:
    not the shared-memory blocks it maps) and Arrow's allocations rose above their
    levels at the task's start, the larger of the two (the backend has the driver
    thread's allocator give back what it held freed as a job starts: purged later, while
    a task ran, it hid the task's 48 MiB), sampled as it takes each
    input block and as it hands out each output block (decoded reader buffers, a
    writer's pages, the UDF's output, and what the allocator keeps of them). Tasks
    running beside it count in it, less the blocks every task of the process handed
    out meanwhile (charged as buffered, by the stage that made them), and the rise is
    shared among the thread tasks measuring at the time: the tasks running at once are
    charged, together, what the process rose by (each charged the whole rise, eight
    reads building arrays at once were charged eight times over, and the budget ran
    them one at a time).

    >>> import pyarrow as pa
    >>> growth = ArrowGrowth()
    >>> block = pa.array(range(1 << 20))  # 8 MiB of int64
    >>> growth.sample() >= 8 << 20
    True
    >>> beside = ArrowGrowth()  # a task beside another that makes and hands out 8 MiB
    >>> out = pa.allocate_buffer(8 << 20); growth.handed_over(out.size)
    >>> beside.sample() < 1 << 20
    True
    >>> growth.finish() > 0, beside.finish() < 1 << 20
    (True, True)
    """

    _handed_by_all = [0]  # bytes every task of this process handed out (a list: shared)
    _measuring = [0]  # thread tasks of this process measuring now

    def __init__(self) -> None:
        import pyarrow as pa

        self._allocated = pa.total_allocated_bytes
        self._base, self._anon, self._peak = self._allocated(), _anon_bytes(), 0
        self._handed = -self._handed_by_all[0]
        self._measuring[0] += 1  # (a lost update between threads is undone by finish)
        self._open = True

    def handed_over(self, nbytes: int) -> None:
        """An output block stays in this process, charged as buffered: not working memory."""
        self._handed_by_all[0] += nbytes  # (a lost update between threads errs high)

    def sample(self) -> int:
        """Note the memory now; return the largest rise seen."""
        rise = self._allocated() - self._base
        if self._anon is not None:
            rise = max(rise, (_anon_bytes() or 0) - self._anon)
        share = (rise - self._handed - self._handed_by_all[0]) / max(1, self._measuring[0])
        self._peak = max(self._peak, int(share))
        return self._peak

    def finish(self) -> int:
        """The task ended (however): its last measure; it no longer shares the rise.

        >>> growth = ArrowGrowth(); growth.finish() >= 0, growth.finish() >= 0
        (True, True)
        """
        peak = self.sample()
        if self._open:
            self._open = False
            self._measuring[0] = max(0, self._measuring[0] - 1)
        return peak


def _anon_bytes() -> int | None:
    kib = _status_kib("RssAnon:")
    return None if kib is None else kib * 1024
