"""Admission policies: may another source task start now?

Two policies share one small interface so they can be compared and tested alone:
- :class:`BudgetAdmission` (static, pessimistic): admit while the memory budget
  has room for the task's expected output.
- :class:`AdaptiveAdmission` (the streaming-batch paper's Algorithm 1/2): on top
  of the memory rule, the bytes of source partitions admitted may grow only by
  ``source_partition_bytes / P`` per second, where ``P = sum_i (T_i / E_i) * a_i``
  is the time the pipeline needs to process one source partition (``T_i``: task
  time of stage ``i``, ``E_i``: the slots it may use, ``a_i``: stage-``i`` tasks per
  source task). Stages that share a pool of slots (the CPUs) add up; stages on
  separate resources (a GPU actor pool) run beside them, so ``P`` is the largest
  of the per-pool sums. The source then runs only as fast as the pipeline drains, which
  leaves slots to the downstream stages instead of filling memory.
Non-source stages are admitted by :meth:`admit` alone (their net growth fits).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class MemoryView:
    """What a policy sees: bytes buffered, the budget, and whether anything runs."""

    used_bytes: int
    budget_bytes: int
    anything_running: bool
    in_pipeline: int | None = None  # source output made and not yet consumed downstream
    working_bytes: int = 0  # working memory the task needs while it runs (measured)
    batch_wanted: bool = False  # a stage after a source has room and waits for a batch


@dataclass
class StageRate:
    """Measurements of one stage for the adaptive policy."""

    task_time_s: float  # mean task time (0 when no task finished yet)
    slots: float  # tasks the stage may run in parallel (>= 1)
    tasks_per_source_task: float  # how many of its tasks one source task feeds
    pool: str = "cpu"  # stages in one pool share its slots; pools run side by side


def pipeline_seconds_per_source_task(stages: list[StageRate]) -> float:
    """``P``: seconds the pipeline needs per source partition at current parallelism.

    >>> pipeline_seconds_per_source_task([StageRate(1.0, 4, 1.0), StageRate(2.0, 2, 1.0)])
    1.25
    >>> pipeline_seconds_per_source_task([StageRate(1.0, 8, 1.0), StageRate(1.0, 8, 1.0),
    ...                                   StageRate(1.25, 4, 1.0, pool="gpu-actors")])
    0.3125
    """
    return max(_per_pool(stages).values(), default=0.0)


def _per_pool(stages: list[StageRate]) -> dict[str, float]:
    per_pool: dict[str, float] = {}
    for s in stages:
        share = s.task_time_s / max(1.0, s.slots) * s.tasks_per_source_task
        per_pool[s.pool] = per_pool.get(s.pool, 0.0) + share
    return per_pool


def busiest_pool(stages: list[StageRate]) -> str | None:
    """The pool of slots that needs the most time per source partition: the one that
    bounds the pipeline (None before any stage has a task time).

    >>> busiest_pool([StageRate(1.0, 8, 1.0), StageRate(1.0, 8, 1.0),
    ...               StageRate(1.25, 4, 1.0, pool="gpu-actors")])
    'gpu-actors'
    >>> busiest_pool([StageRate(5.0, 8, 1.0), StageRate(0.5, 8, 5.0),
    ...               StageRate(0.5, 4, 5.0, pool="gpu-actors")])
    'cpu'
    """
    per_pool = _per_pool(stages)
    if not per_pool or max(per_pool.values()) <= 0:
        return None
    return max(per_pool, key=lambda pool: per_pool[pool])


class BudgetAdmission:
    """Admit a task when its expected net memory growth fits in the budget.

    When nothing runs at all, one task is always admitted (liveness), so a tight
    budget slows a job down but never deadlocks it.

    >>> policy = BudgetAdmission()
    >>> policy.admit(MemoryView(90, 100, True), growth_bytes=20)
    False
    >>> policy.admit(MemoryView(90, 100, False), growth_bytes=20)
    True
    >>> policy.admit(MemoryView(120, 100, True), growth_bytes=0)  # drains: always
    True
    >>> policy.admit(MemoryView(90, 100, True, working_bytes=20), growth_bytes=-5)  # needs room
    False
    >>> policy.admit_source(MemoryView(50, 100, True), 20, now=0.0)
    True
    """

    name = "static"
    blocked_by = "memory budget"  # why the last refused task waits (for stats)

    def admit(self, view: MemoryView, growth_bytes: int) -> bool:
        """True when a task expected to add ``growth_bytes`` may start.

        A task that adds nothing (it consumes as many bytes as it makes) always
        may: it is how a full budget drains, and refusing it would stall the
        pipeline until some other task happened to finish.
        """
        self.blocked_by = "memory budget"
        need = growth_bytes + view.working_bytes
        if not view.anything_running or need <= 0:
            return True
        return view.used_bytes + need <= view.budget_bytes

    def admit_source(self, view: MemoryView, est_bytes: int, now: float) -> bool:
        """The same rule for source tasks."""
        return self.admit(view, est_bytes)

    def observe(self, rates: list[StageRate], source_bytes: float, now: float,
                burst_tasks: float | None = None, measured: bool = True) -> None:
        """Static: ignores measurements.

        >>> BudgetAdmission().observe([], 100.0, 0.0, burst_tasks=2, measured=False)
        """

    def source_started(self, est_bytes: int) -> None:
        """Static: nothing to account."""


class AdaptiveAdmission(BudgetAdmission):
    """The paper's adaptive admission: a source allowance that grows at the drain rate.

    >>> p = AdaptiveAdmission(initial_tasks=2)
    >>> view = MemoryView(0, 10**9, True)
    >>> p.observe([StageRate(1.0, 1, 1.0)], source_bytes=100, now=0.0)
    >>> [p.admit_source(view, 100, now=0.0) and p.source_started(100) is None for _ in range(3)]
    [True, True, False]
    >>> p.observe([StageRate(1.0, 1, 1.0)], source_bytes=100, now=1.0)  # P = 1 s
    >>> p.admit_source(view, 100, now=1.0)
    True
    >>> p.source_started(100); p.admit_source(view, 100, now=1.0), p.blocked_by
    (False, 'source rate (adaptive)')
    >>> p.admit_source(MemoryView(0, 10**9, True, in_pipeline=150), 100, now=1.0)  # starving
    True
    """

    name = "adaptive"

    def __init__(self, initial_tasks: int = 2) -> None:
        self.initial_tasks = initial_tasks
        self.allowance: float | None = None
        self.admitted = 0.0
        self.started = 0
        self.measured = False
        self.source_bytes = 0.0
        self.rate = 0.0
        self.last: float | None = None
        self.unmeasured_limit = initial_tasks  # source tasks started before a measurement

    def observe(self, rates: list[StageRate], source_bytes: float, now: float,
                burst_tasks: float | None = None, measured: bool = True) -> None:
        """Grow the allowance for the time since the last call at the measured drain rate.

        ``burst_tasks`` caps the unspent allowance at that many source partitions
        (the source's slots): time in which the source could not start a task
        (waiting for a CPU, a slow start) does not bank a burst for later.

        >>> p = AdaptiveAdmission(initial_tasks=1)
        >>> for now in (0.0, 100.0):
        ...     p.observe([StageRate(1.0, 1, 1.0)], 10, now, burst_tasks=3)
        >>> p.allowance - p.admitted
        30.0

        ``measured`` is False until a source task has made its first block: until
        then as many source tasks start as the source has slots (``burst_tasks``,
        at least ``initial_tasks``) and the memory rule lets in (it charges each
        ``UNMEASURED_FACTOR`` x its estimate for working memory: a read followed by
        a fused UDF may make far more bytes than estimated), and the allowance
        starts afresh from the first measurement, with room for ``burst_tasks``
        source partitions. (Two tasks at first, whatever the slots, cost a whole
        wave of reads on a machine of many CPUs whose reads make their first
        block late.)
        """
        self.source_bytes = source_bytes
        fresh = max(self.initial_tasks, burst_tasks or 0)
        self.unmeasured_limit = int(fresh)
        if measured and not self.measured:
            self.measured, self.allowance = True, self.admitted + fresh * source_bytes
        if self.allowance is None:
            self.allowance = self.admitted + self.initial_tasks * source_bytes
        seconds = pipeline_seconds_per_source_task(rates)
        self.rate = source_bytes / seconds if seconds > 0 else float("inf")
        if self.last is not None and self.rate != float("inf"):
            self.allowance += self.rate * (now - self.last)
        if burst_tasks is not None:
            cap = max(self.initial_tasks, burst_tasks) * source_bytes
            self.allowance = min(self.allowance, self.admitted + cap)
        self.last = now

    def admit_source(self, view: MemoryView, est_bytes: int, now: float) -> bool:
        """Memory rule, then the allowance (unlimited until a task time is measured).

        ``blocked_by`` names the rule that refused: "memory budget" or "source rate".
        """
        if not self.admit(view, est_bytes):
            return False
        if not view.anything_running:
            return True
        if not self.measured:
            self.blocked_by = "source output size not measured yet"
            return self.started < self.unmeasured_limit
        if self.allowance is None or self.rate == float("inf") or self._starving(view):
            return True
        self.blocked_by = "source rate (adaptive)"
        return self.admitted + est_bytes <= self.allowance

    def _starving(self, view: MemoryView) -> bool:
        """Fewer than ``initial_tasks`` source partitions are on their way through the
        pipeline: the rate estimate is behind (a stage sped up, the machine's load
        changed), and holding the source now would leave the slowest stage idle."""
        if view.batch_wanted:
            return True
        if view.in_pipeline is None:
            return False
        return view.in_pipeline < self.initial_tasks * self.source_bytes

    def source_started(self, est_bytes: int) -> None:
        """Charge a started source task to the allowance."""
        self.admitted += est_bytes
        self.started += 1


POLICIES = {"adaptive": AdaptiveAdmission, "static": BudgetAdmission}


def make_policy(name: str):
    """A policy by name.

    >>> make_policy("fifo")
    Traceback (most recent call last):
    ...
    ValueError: scheduler='fifo' is not supported; expected one of: adaptive, static
    """
    if name not in POLICIES:
        raise ValueError(f"scheduler={name!r} is not supported; expected one of: "
                         f"{', '.join(POLICIES)}")
    return POLICIES[name]()
