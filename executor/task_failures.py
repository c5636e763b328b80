"""What happens to a failed task: run again (:func:`should_retry`: system failures by
default, user errors on request), or turned into the error the user sees
(:func:`to_error`). The error classes are in ``errors.py`` and ``contract.py``."""

from __future__ import annotations

from streambatch.executor.backends.base import FailureInfo
from streambatch.executor.contract import StreamBatchError, UDFReturnTypeError
from streambatch.executor.errors import BlockLostError, UserCodeError, WorkerDiedError


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
    err = UserCodeError(stage, partition, info.where, info.error, info.traceback_text)
    err.__cause__ = info.original
    return err


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
