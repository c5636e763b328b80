"""Threads or processes for a UDF that did not say whether it releases the GIL.

A stage whose worker is ``"auto"`` starts on threads in the driver: no process to
start, no block copied between processes. Each of its thread tasks measures how long
its thread wanted a CPU (:func:`thread_clock`: time on a CPU, which counts C code that
runs without the GIL such as Pillow's decoder or a numpy kernel, plus time runnable but
waiting for a CPU that other processes held) against its wall time. A thread blocked
on the GIL wants no CPU: two pure-Python tasks on two cores each want about half of
their time. Once ``probes`` tasks that ran beside another task of the stage have
finished, the stage stays on threads when they wanted a CPU at least ``threshold`` of
their time, and moves to worker processes otherwise. Tasks that never overlap (one
CPU, or a stage that never has two tasks at once) cannot compete for the GIL among
themselves, and stay on threads. Tasks that started before the stage's first task
ended are not measured: they build the UDF and import what it needs, one at a time
under Python's import lock, whatever the UDF does later.

A UDF that waits (I/O, sleep) wants no CPU either and goes to processes, where such
UDFs ran before this choice existed.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

PROBES = 2  # overlapping tasks measured before choosing
THRESHOLD = 0.8  # two pure-Python tasks want a CPU about half their time (0.7 on a busy machine)


def thread_clock() -> float:
    """Seconds the calling thread has run on a CPU or waited runnable for one (Linux's
    /proc/thread-self/schedstat); elsewhere its CPU time alone.

    >>> a = thread_clock(); sum(range(10**5)) > 0 and thread_clock() >= a
    True
    """
    try:
        with open("/proc/thread-self/schedstat", "rb") as f:
            ran, waited = f.read().split()[:2]
        return (int(ran) + int(waited)) / 1e9
    except (OSError, ValueError):
        return time.thread_time()


@dataclass
class WorkerChoice:
    """The choice for one ``"auto"`` stage.

    >>> c = WorkerChoice()
    >>> c.finished(c.started(), cpu_s=0.2, wall_s=1.0)   # the first: builds the UDF
    >>> a, b = c.started(), c.started()        # two tasks at once
    >>> c.finished(a, cpu_s=0.50, wall_s=1.0); c.finished(b, cpu_s=0.52, wall_s=1.0)
    >>> c.where, c.describe()
    ('process', 'processes (auto: threads wanted a CPU 51% of the time)')
    """

    probes: int = PROBES
    threshold: float = THRESHOLD
    where: str = "thread"  # where the next task runs: "thread" until decided
    decided: bool = False
    cpu_s: float = 0.0
    wall_s: float = 0.0
    measured: int = 0
    note: str = ""  # why it was decided without measuring
    _running: dict[int, bool] = field(default_factory=dict)  # token -> overlapped
    _next: int = 0
    _warm_from: int | None = None  # tokens from here started after a task had ended
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def probe(self) -> Probe:
        """Measure the calling thread's task from now until :meth:`Probe.end`."""
        return Probe(self)

    def started(self) -> int:
        """A thread task of the stage starts; returns its token for :meth:`finished`."""
        with self._lock:
            token, self._next = self._next, self._next + 1
            overlapped = bool(self._running)
            for other in self._running:
                self._running[other] = True
            self._running[token] = overlapped
            return token

    def finished(self, token: int, cpu_s: float, wall_s: float) -> None:
        """The task ended after its thread wanted a CPU ``cpu_s`` of ``wall_s``."""
        with self._lock:
            overlapped = self._running.pop(token, False)
            warm = self._warm_from is not None and token >= self._warm_from
            if self._warm_from is None:
                self._warm_from = self._next
            if self.decided or not overlapped or not warm or wall_s <= 0:
                return
            self.cpu_s += cpu_s
            self.wall_s += wall_s
            self.measured += 1
            if self.measured >= self.probes:
                self.decided = True
                self.where = "thread" if self.ratio >= self.threshold else "process"

    @property
    def ratio(self) -> float:
        """The measured tasks' share of time wanting a CPU (1.0: none measured)."""
        return self.cpu_s / self.wall_s if self.wall_s else 1.0

    def describe(self) -> str:
        """Where the stage runs and why, for ``stats()``.

        >>> WorkerChoice().describe()
        'threads (auto: no two tasks ran at once)'
        """
        if self.note:
            return f"threads (auto: {self.note})"
        if not self.measured:
            return "threads (auto: no two tasks ran at once)"
        place = "threads" if self.where == "thread" else "processes"
        return f"{place} (auto: threads wanted a CPU {self.ratio:.0%} of the time)"


class Probe:
    """One thread task's measurement; :meth:`end` (once, on the task's thread) as the
    task hands back its last output, before the next task can start in its place.

    >>> c = WorkerChoice()
    >>> p = c.probe(); p.end(); p.end()
    >>> c.measured, c._running
    (0, {})
    """

    def __init__(self, choice: WorkerChoice) -> None:
        self.choice, self.token = choice, choice.started()
        self.clock, self.start, self.open = thread_clock(), time.perf_counter(), True

    def end(self) -> None:
        """Stop the clock (again: nothing)."""
        if self.open:
            self.open = False
            self.choice.finished(self.token, thread_clock() - self.clock,
                                 time.perf_counter() - self.start)
