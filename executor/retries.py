"""Which failed tasks are retried: system failures by default, user errors on request."""

from __future__ import annotations

from streambatch.executor.backends.base import FailureInfo


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
