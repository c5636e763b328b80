"""Threads or processes for a UDF that did not say whether it releases the GIL.

A stage whose worker is ``"auto"`` starts on threads in the driver: no process to
start, no block copied between processes. Each of its thread tasks measures, between
consecutive output blocks, the share of its time on a CPU (:func:`thread_clock`: time
on a CPU, which counts C code that runs without the GIL such as Pillow's decoder or a
numpy kernel) of the time it could have been on one: its wall time less the time it
waited, runnable, for a CPU that other threads or processes held (the zygote importing
the workers' modules, the training loop, another job). A thread blocked on the GIL is
not runnable: two pure-Python tasks on two cores each run about half of their time.
When the stage's next task is placed, and once ``probes`` intervals that ran beside
another task of the stage have ended (``min_measured_s`` of their time in all), the
stage stays on threads when those intervals ran at least ``threshold`` of their time,
and moves to worker processes otherwise: a UDF that holds the GIL a seventh of its time
(Pillow's JPEG decode and crop, W2: 0.84-0.93) loses more than that on threads (W2: 12%
slower there than in processes), while a worker process's output costs one copy into
shared memory, over pages reused from released blocks (``block_recycling``). GIL-free
UDFs read 0.95-1.0 (hashlib; 0.90-1.0 beside a process that keeps both cores busy, where
2 runs in 20 moved to processes and paid that copy). Tasks
that never overlap (one CPU, or a stage that never has two tasks at once) cannot
compete for the GIL among themselves, and stay on threads. A task that started before
any task of the stage made an output is measured from its first output on: before it,
it builds the UDF and imports what it needs, one at a time under Python's import lock,
whatever the UDF does later. Intervals, not whole tasks, so that the choice comes
after a few batches rather than a few partitions; every interval measured until the
choice is needed counts.

A UDF that waits (I/O, sleep) does not run either and goes to processes, where such
UDFs ran before this choice existed.

A choice made is kept for the rest of the driver process (:func:`recall`): the same
UDFs in a later job (the next epoch of a training loop) start where the earlier job
chose, without measuring again on threads.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

_EARLIER: dict[tuple, tuple[str, float, float, int]] = {}  # udf_key -> a decided choice
KEPT = 256  # choices kept at most (the oldest go first)
PROBES = 2  # intervals measured beside another task before choosing
MIN_MEASURED_S = 0.08  # and at least this much of their time in all (short tasks: more)
MIN_INTERVAL_S = 0.002  # shorter intervals are not measured (the clock's steps)
THRESHOLD = 0.93  # GIL-free UDFs read 0.95-1.0, W2's decode 0.83-0.91, pure Python about 0.5
SURE = 0.02  # a ratio this close to the threshold is measured on, up to
MORE = 4  # this many times ``probes`` intervals


def thread_clock() -> tuple[float, float]:
    """Seconds the calling thread has run on a CPU (``time.thread_time``, exact) and
    waited runnable for one (Linux's /proc/thread-self/schedstat; elsewhere 0). The
    schedstat run time would do for both, but the kernel adds a running thread's up at
    scheduler ticks (4 ms steps here).

    >>> ran, _ = thread_clock(); sum(range(10**5)) > 0 and thread_clock()[0] > ran
    True
    """
    try:
        with open("/proc/thread-self/schedstat", "rb") as f:
            waited = int(f.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        waited = 0.0
    return time.thread_time(), waited


@dataclass
class WorkerChoice:
    """The choice for one ``"auto"`` stage, from the intervals its thread tasks measure
    (from a task's start, or from its first output when it started cold, to each next
    output and to its end).

    >>> c = WorkerChoice(probes=2)
    >>> a, b = c.started(), c.started()       # two cold tasks (importing, building)
    >>> c.warmed(a); c.warmed(b)              # each made its first output
    >>> valid = c.interval_valid(a)           # warm, beside another: measured
    >>> c.sample(valid, cpu_s=0.50, span_s=1.0); c.sample(valid, cpu_s=0.52, span_s=1.0)
    >>> c.place(), c.describe()               # the next task is placed: decided
    ('process', 'processes (auto: threads ran 51% of the time they could)')
    """

    probes: int = PROBES
    threshold: float = THRESHOLD
    min_measured_s: float = MIN_MEASURED_S
    where: str = "thread"  # where tasks run: "thread" until decided (:meth:`place`)
    decided: bool = False
    cpu_s: float = 0.0
    span_s: float = 0.0
    measured: int = 0
    note: str = ""  # why it was decided without measuring
    key: tuple | None = None  # the stage's UDFs (udf_key): the choice, once made, is kept
    recalled: bool = False  # made by an earlier job of this process
    on_lean: Callable[[], object] | None = None  # called once, when a measured interval
    # first reads below the threshold (the stage may be moving to processes)
    _running: dict[int, bool] = field(default_factory=dict)  # token -> warm
    _warm: bool = False  # a task made an output or ended: the UDF is built
    _next: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def probe(self) -> Probe:
        """Measure the calling thread's task from now until :meth:`Probe.end`."""
        return Probe(self)

    def started(self) -> int:
        """A thread task of the stage starts; returns its token."""
        with self._lock:
            token, self._next = self._next, self._next + 1
            self._running[token] = self._warm
            return token

    def warmed(self, token: int) -> None:
        """The task made an output: what it imports and builds is done."""
        with self._lock:
            self._warm = True
            if token in self._running:
                self._running[token] = True

    def finished(self, token: int) -> None:
        """The task ended."""
        with self._lock:
            self._warm = True
            self._running.pop(token, None)

    def interval_valid(self, token: int) -> bool:
        """Whether the task's interval starting now is measured: the task's UDF is built
        (before, it imports what it needs, one task at a time under Python's import
        lock, whatever the UDF does later) and another task runs beside it (else there
        is no GIL to compete for)."""
        with self._lock:
            return len(self._running) >= 2 and self._running.get(token, False)

    def sample(self, valid: bool, cpu_s: float, span_s: float) -> None:
        """An interval ended after its thread ran ``cpu_s`` of the ``span_s`` it could
        have run (its wall time less its waits for a CPU); ``valid``:
        :meth:`interval_valid` at its start. Intervals under ``MIN_INTERVAL_S`` are left
        out: the waiting part of :func:`thread_clock` moves in scheduler ticks."""
        with self._lock:
            if self.decided or not valid or span_s < MIN_INTERVAL_S:
                return
            self.cpu_s += cpu_s
            self.span_s += span_s
            self.measured += 1
            lean = None
            if cpu_s < self.threshold * span_s:  # this interval leans to processes
                lean, self.on_lean = self.on_lean, None
        if lean is not None:
            lean()

    def place(self) -> str:
        """Where the stage's next task runs: "thread" until enough intervals were
        measured, then the choice, made once from every interval measured so far. A
        ratio within ``SURE`` of the threshold waits for more intervals (up to ``MORE``
        times ``probes``): one interval reads a few points either way.

        >>> c = WorkerChoice(probes=2, min_measured_s=0.0)
        >>> c.sample(True, 0.98, 1.0); c.place(), c.decided
        ('thread', False)
        >>> c.sample(True, 0.90, 1.0); c.place(), c.decided  # 0.94: near 0.93, not sure
        ('thread', False)
        >>> c.sample(True, 0.99, 1.0); c.place(), c.decided
        ('thread', True)
        """
        with self._lock:
            enough = self.measured >= self.probes and self.span_s >= self.min_measured_s
            sure = abs(self.ratio - self.threshold) >= SURE \
                or self.measured >= MORE * self.probes
            if not self.decided and enough and sure:
                self.decided = True
                self.where = "thread" if self.ratio >= self.threshold else "process"
                if self.key is not None:
                    _keep(self.key, (self.where, self.cpu_s, self.span_s, self.measured))
            return self.where

    @property
    def ratio(self) -> float:
        """The measured intervals' share of their time on a CPU (1.0: none measured)."""
        return self.cpu_s / self.span_s if self.span_s else 1.0

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
        when = " in an earlier job of this process" if self.recalled else ""
        return f"{place} (auto: threads ran {self.ratio:.0%} of the time they could{when})"


def udf_key(ops) -> tuple | None:
    """What identifies a stage's UDFs from one job to the next of the same process:
    each op's kind and its function's code (a lambda or closure made again for the next
    epoch has the same code) or its class; None for a stage without a UDF.

    >>> from types import SimpleNamespace as NS
    >>> def op(fn): return NS(op=NS(fn=fn))
    >>> udf_key([op(lambda b: b)]) == udf_key([op(lambda b: b[:1])])  # two UDFs
    False
    >>> make = lambda: op(lambda b: b)  # the same lambda made twice: the same code
    >>> udf_key([make()]) == udf_key([make()]), udf_key([NS()])
    (True, None)
    """
    parts = []
    for op in ops:
        fn = getattr(getattr(op, "op", None), "fn", None)
        while isinstance(fn, functools.partial):
            fn = fn.func
        if fn is None:
            continue
        parts.append((type(op).__name__, getattr(fn, "__code__", None)
                      or (fn if isinstance(fn, type) else type(fn))))
    return tuple(parts) or None


def recall(key: tuple | None, **fields) -> WorkerChoice:
    """The stage's choice: the one an earlier job of this process made for the same UDFs
    (decided), or a new one that measures (``fields``: WorkerChoice's).

    >>> fresh = recall(("k",)); fresh.decided
    False
    >>> fresh.sample(True, 0.2, 1.0); fresh.sample(True, 0.2, 1.0); fresh.place()
    'process'
    >>> again = recall(("k",)); again.where, again.describe()
    ('process', 'processes (auto: threads ran 20% of the time they could in an earlier job of this process)')
    >>> forget(); recall(("k",)).decided
    False
    """
    if key in _EARLIER:
        where, cpu_s, span_s, measured = _EARLIER[key]
        return WorkerChoice(where=where, decided=True, cpu_s=cpu_s, span_s=span_s,
                            measured=measured, key=key, recalled=True)
    return WorkerChoice(key=key, **fields)


def _keep(key: tuple, choice: tuple[str, float, float, int]) -> None:
    """Keep a choice; the oldest goes once ``KEPT`` are kept (a driver that builds UDF
    classes in a loop does not grow this without bound)."""
    _EARLIER.pop(key, None)
    _EARLIER[key] = choice
    while len(_EARLIER) > KEPT:
        _EARLIER.pop(next(iter(_EARLIER)))


def forget() -> None:
    """Forget every choice made so far (the next jobs measure again)."""
    _EARLIER.clear()


class Probe:
    """One thread task's measurement: :meth:`output` after each output block,
    :meth:`end` (once, on the task's thread) as the task hands back its last output,
    before the next task can start in its place.

    >>> c = WorkerChoice()
    >>> p = c.probe(); p.output(); p.end(); p.end()
    >>> c.measured, c._running
    (0, {})
    """

    def __init__(self, choice: WorkerChoice) -> None:
        self.choice, self.token, self.open = choice, choice.started(), True
        self._begin()

    def _begin(self) -> None:
        self.valid = self.choice.interval_valid(self.token)
        (self.ran, self.waited), self.start = thread_clock(), time.perf_counter()

    def _sample(self) -> None:
        ran, waited = thread_clock()
        self.choice.sample(self.valid, ran - self.ran,
                           time.perf_counter() - self.start - (waited - self.waited))

    def output(self) -> None:
        """The task handed back an output block: an interval ends, the next begins."""
        if self.open:
            self.choice.warmed(self.token)
            self._sample()
            self._begin()

    def end(self) -> None:
        """Stop the clock (again: nothing)."""
        if self.open:
            self.open = False
            self._sample()
            self.choice.finished(self.token)
