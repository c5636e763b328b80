"""What happens to a failed task: run again (:func:`should_retry`: system failures by
default, user errors on request; a user error's retry waits out an exponential backoff
with jitter, :class:`RetryBackoff`), or turned into the error the user sees
(:func:`to_error`). The error classes are in ``errors.py`` and ``contract.py``."""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from typing import Any

from streambatch.executor import clock
from streambatch.executor.backends.base import FailureInfo
from streambatch.executor.contract import StreamBatchError, UDFReturnTypeError
from streambatch.executor.errors import (
    BlockLostError,
    WorkerDiedError,
    user_code_error,
)


def to_error(info: FailureInfo, stage: str, partition: str) -> BaseException:
    """The user-facing exception for a failed task, chained to the original.

    >>> info = FailureInfo("user", "Map(f)", "row 3: {'x': 3}", "ValueError: no", "Traceback ...")
    >>> err = to_error(info, "Read->Map(f)", "partition 1")
    >>> str(err).splitlines()[0]
    "stage 'Read->Map(f)' failed on partition 1, row 3: {'x': 3}: ValueError: no"
    """
    if info.kind == "return_type" and isinstance(info.original, UDFReturnTypeError):
        return info.original
    if info.kind == "died":
        return WorkerDiedError(stage, partition, info.exitcode)
    if info.kind == "lost":  # an input block was lost and the retries are used up
        return BlockLostError(stage, partition, f"retries are used up ({info.error})")
    if info.kind == "system" and isinstance(info.original, StreamBatchError):
        return info.original
    return user_code_error(stage, partition, info.where, info.error, info.traceback_text,
                           info.original)


def should_retry(info: FailureInfo, attempts: int, stage, max_system_retries: int) -> bool:
    """True when a task that failed with ``info`` after ``attempts`` tries runs again.

    A worker that died (killed, out of memory), or an input block that was lost
    (its node left; the executor recomputes it first), is a system failure:
    retried up to ``max_system_retries`` times. A user exception is retried only when an op of
    the stage allows it (``max_retries`` > 0 and, if given, the exception is one of
    ``retry_exceptions``).

    >>> from streambatch.executor.contract import TaskStage
    >>> died = FailureInfo("died", None, None, "exit -9", "")
    >>> should_retry(died, 1, TaskStage("S"), 3), should_retry(died, 4, TaskStage("S"), 3)
    (True, False)
    >>> should_retry(FailureInfo("user", "Map(f)", "row 1", "ValueError: x", ""), 1,
    ...              TaskStage("S"), 3)
    False
    """
    if info.kind in ("died", "lost"):
        return attempts <= max_system_retries
    if info.kind != "user":
        return False
    for op in stage.ops:
        limit = getattr(op.op, "max_retries", 0) if hasattr(op, "op") else 0
        if op.name == info.op and limit and attempts <= limit:
            return _matches(info, getattr(op.op, "retry_exceptions", None))
    return False


def _matches(info: FailureInfo, allowed) -> bool:
    if not allowed:
        return True
    if info.original is not None:
        return isinstance(info.original, tuple(allowed))
    return any(info.error.startswith(f"{cls.__name__}:") for cls in allowed)


RETRY_BASE_S = 0.1  # the first user retry waits 0.05-0.1 s, then 2x per retry...
RETRY_CAP_S = 5.0   # ...up to 2.5-5 s


def retry_delay(failures: int, rng: Callable[[], float] = random.random,
                base_s: float = RETRY_BASE_S, cap_s: float = RETRY_CAP_S) -> float:
    """Seconds a task waits before its next try after ``failures`` failed tries:
    exponential backoff (``base_s * 2 ** (failures - 1)``, at most ``cap_s``) with
    "equal jitter" (a random point in the upper half), so retries of tasks that failed
    together spread out and a retry never follows its failure at once.

    >>> [retry_delay(n, rng=lambda: 1.0) for n in (1, 2, 3, 7, 8)]
    [0.1, 0.2, 0.4, 5.0, 5.0]
    >>> [retry_delay(n, rng=lambda: 0.0) for n in (1, 2, 3)]
    [0.05, 0.1, 0.2]
    """
    ceiling = min(cap_s, base_s * 2 ** max(0, failures - 1))
    return ceiling * (0.5 + 0.5 * rng())


class RetryBackoff:
    """Failed tasks waiting out their backoff before they rejoin their stage's retry
    queue. Nothing sleeps: the driver loop calls :meth:`release` on each turn and goes
    on with other work meanwhile. A user error's retry waits :func:`retry_delay`; a
    system failure (a worker died) is retried at once, on a fresh worker.

    >>> from types import SimpleNamespace
    >>> from collections import deque
    >>> now = [0.0]
    >>> backoff = RetryBackoff(clock=lambda: now[0], rng=lambda: 1.0)
    >>> st, task = SimpleNamespace(index=1, retries=deque()), SimpleNamespace(attempts=2)
    >>> backoff.later(st, task, "user")
    0.1
    >>> backoff.release(), list(st.retries), backoff.holds(1)
    (0, [], True)
    >>> now[0] = 0.1
    >>> backoff.release(), len(st.retries), backoff.holds(1)
    (1, 1, False)
    """

    def __init__(self, clock: Callable[[], float] = clock.now,
                 rng: Callable[[], float] = random.random) -> None:
        self.clock, self.rng = clock, rng
        self._waiting: list[tuple[float, int, Any, Any]] = []  # a heap by due time: (due,
        # order, stage state, running task)
        self._order = itertools.count()
        self._held: dict[int, int] = {}  # stage index -> tasks waiting

    def later(self, st, task, kind: str) -> float:
        """Queue ``task`` (its ``attempts`` already counts the coming try) for a retry on
        stage ``st``; returns the seconds it waits."""
        if kind != "user":
            st.retries.append(task)
            return 0.0
        delay = retry_delay(task.attempts - 1, self.rng, RETRY_BASE_S, RETRY_CAP_S)
        heapq.heappush(self._waiting, (self.clock() + delay, next(self._order), st, task))
        self._held[st.index] = self._held.get(st.index, 0) + 1
        return delay

    def release(self) -> int:
        """Move the tasks whose wait is over onto their stages' retry queues."""
        now, moved = self.clock(), 0
        while self._waiting and self._waiting[0][0] <= now:
            _, _, st, task = heapq.heappop(self._waiting)
            self._held[st.index] -= 1
            st.retries.append(task)
            moved += 1
        return moved

    def holds(self, stage_index: int) -> bool:
        """Whether a task of the stage still waits (the stage is not finished)."""
        return self._held.get(stage_index, 0) > 0
