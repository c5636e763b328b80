"""Turn a backend's FailureInfo into the error a user sees."""

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
