"""The public datasink contract, Ray Data's ``Datasink``: a user connector subclasses
:class:`Datasink` and passes it to ``Dataset.write_datasink``.

A user sink implements ``write(blocks, ctx)`` (called once per partition, in a task)
and, on the driver, ``on_write_start()``, ``on_write_complete(write_result)`` and
``on_write_failed(error)``. The engine drives it through :class:`ContractJob`, the
same ``run_job`` / ``write`` / listener interface the file sinks
(``connectors/datasink.py``) give the executor: there is one write mechanism.

Exactly-once is the file sinks' (manifest, ``_SUCCESS``, resume); a user sink gets
Ray's at-least-once contract: a retried task calls ``write`` again for the same rows,
so ``write`` should be idempotent (keyed on ``ctx.key``, the same for every attempt).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import cloudpickle
import pyarrow as pa

T = TypeVar("T")


@dataclass
class WriteResult(Generic[T]):
    """What ``on_write_complete`` gets: the rows and bytes handed to ``write`` in all
    tasks, and each task's ``write`` return value (one per task).

    >>> WriteResult(num_rows=3, size_bytes=24, write_returns=["a"]).num_rows
    3
    """

    num_rows: int
    size_bytes: int
    write_returns: list[T] = field(default_factory=list)


class Datasink(Generic[T]):
    """A user-defined write target (Ray Data's ``ray.data.Datasink``).

    Subclass it and implement :meth:`write`; optionally the driver-side hooks. The
    object is pickled to the write tasks (as in Ray), so state set in ``write`` does
    not come back: return it from ``write`` and read it in ``on_write_complete``.

    >>> import streambatch as sb
    >>> class SumSink(sb.Datasink):
    ...     def write(self, blocks, ctx):
    ...         return sum(sum(b["id"].to_pylist()) for b in blocks)
    ...     def on_write_complete(self, write_result):
    ...         self.total = sum(write_result.write_returns)
    ...         self.rows = write_result.num_rows
    >>> sink = SumSink()
    >>> sb.range(10, override_num_blocks=3).write_datasink(sink)
    >>> sink.total, sink.rows
    (45, 10)
    """

    def on_write_start(self) -> None:
        """Called once on the driver before any ``write`` task runs."""

    def write(self, blocks: Iterable[pa.Table], ctx: Any) -> T:
        """Write one partition's blocks (``pyarrow.Table``s); return anything picklable
        (it reaches ``on_write_complete`` in ``write_result.write_returns``).

        ``ctx.task_idx`` (also ``ctx.task_index``) numbers the partition and ``ctx.key``
        is the same for every attempt of this task (for idempotent writes)."""
        raise NotImplementedError(f"{type(self).__name__} must implement write(blocks, ctx)")

    def on_write_complete(self, write_result: WriteResult[T]) -> None:
        """Called once on the driver after every ``write`` task succeeded."""

    def on_write_failed(self, error: Exception) -> None:
        """Called once on the driver when the write failed (the error is raised after)."""

    def get_name(self) -> str:
        """The name progress and stats show (``Write[<name>]``); the class name without a
        ``Datasink`` suffix by default.

        >>> class KafkaDatasink(Datasink): pass
        >>> KafkaDatasink().get_name()
        'Kafka'
        """
        name = type(self).__name__
        return name[: -len("Datasink")] if name.endswith("Datasink") and name != "Datasink" \
            else name

    @property
    def supports_distributed_writes(self) -> bool:
        """Ray's flag (False pins writes to the driver's node); every write here runs in
        the job's workers, which is the same on one machine."""
        return True

    @property
    def min_rows_per_write(self) -> int | None:
        """Ray's bundling hint; partitions are written as they come (see the README)."""
        return None

    def engine_sink(self) -> Any:
        """What the executor drives: the run_job/write/listener object for this sink."""
        return ContractJob(self)


class RayTaskContext:
    """The task context a user ``write`` sees: ours, plus Ray's ``task_idx``.

    >>> from streambatch.executor.contract import TaskContext
    >>> ctx = RayTaskContext(TaskContext("Write", 4, "partition 4", key="k4"))
    >>> ctx.task_idx, ctx.task_index, ctx.key
    (4, 4, 'k4')
    """

    def __init__(self, ctx: Any) -> None:
        self._ctx = ctx

    @property
    def task_idx(self) -> int:
        """Ray's name for the partition's index."""
        return int(self._ctx.task_index)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)


class ContractJob:
    """Runs a user :class:`Datasink` as the executor's sink: ``run_job`` calls the
    driver hooks around the job; ``write`` (in a task) calls the user's ``write`` and
    returns one result row (rows, bytes, the pickled return value)."""

    def __init__(self, sink: Datasink) -> None:
        self.sink = sink
        self.name = sink.get_name()
        self.dead: list[dict] = []

    def __getstate__(self) -> dict:
        return {"sink": self.sink, "name": self.name, "dead": []}

    def run_job(self, execute: Callable, fingerprint: str = "", resume: bool = False) -> None:
        """``on_write_start``, the job, then ``on_write_complete``; ``on_write_failed``
        and re-raise when the job (or ``on_write_complete``) fails."""
        if resume:
            raise ValueError("write_datasink: resume=True is only for file outputs "
                             "(write_parquet); a user Datasink makes its own writes idempotent")
        _call_start(self.sink)
        try:
            tables = execute(self, {})
            self.sink.on_write_complete(result_of(tables))
        except Exception as error:
            self.sink.on_write_failed(error)
            raise

    def write(self, blocks: Iterable[pa.Table], ctx: Any) -> pa.Table:
        """Call the user's ``write`` on this partition's blocks; count what it was given
        (blocks it left unread are drained and counted, as Ray hands it them all)."""
        counted = _Counted(blocks)
        returned = self.sink.write(counted, RayTaskContext(ctx))
        for _ in counted:
            pass
        return pa.table({"rows": pa.array([counted.rows], pa.int64()),
                         "bytes": pa.array([counted.bytes], pa.int64()),
                         "result": pa.array([cloudpickle.dumps(returned)], pa.binary())})

    # the executor's OutputListener: nothing to record for a user sink but dead letters
    def attach(self, identify) -> None:
        """Unused: a user sink keeps no manifest."""

    def on_final_output(self, part, origins) -> None:
        """Unused: results come back from the job."""

    def on_settled(self, origin) -> None:
        """Unused: no resume for a user sink."""

    def on_dead_letters(self, rows: list[dict], origins) -> None:
        """Keep dead letters (``on_error="skip"``) for ``Dataset.dead_letters()``."""
        self.dead.append({"dead": rows})

    def dead_letter_rows(self) -> list[dict]:
        """Every dead letter of this write."""
        return [row for entry in self.dead for row in entry["dead"]]


def _call_start(sink: Datasink) -> None:
    """``on_write_start()``; newer Ray declares ``on_write_start(self, schema)``: such a
    hook gets ``None`` (the schema is not known before the job runs here)."""
    try:
        wants_schema = bool(inspect.signature(sink.on_write_start).parameters)
    except (TypeError, ValueError):
        wants_schema = False
    if wants_schema:
        sink.on_write_start(None)  # type: ignore[call-arg]
    else:
        sink.on_write_start()


def result_of(tables: list[pa.Table]) -> WriteResult:
    """The ``WriteResult`` of the write tasks' result rows.

    >>> t = pa.table({"rows": [2], "bytes": [16], "result": [cloudpickle.dumps("ok")]})
    >>> result_of([t, t])
    WriteResult(num_rows=4, size_bytes=32, write_returns=['ok', 'ok'])
    """
    rows = [r for t in tables for r in t.to_pylist()]
    return WriteResult(num_rows=sum(r["rows"] for r in rows),
                       size_bytes=sum(r["bytes"] for r in rows),
                       write_returns=[cloudpickle.loads(r["result"]) for r in rows])


class _Counted:
    """Iterates blocks once, counting rows and bytes."""

    def __init__(self, blocks: Iterable[pa.Table]) -> None:
        self._it: Iterator[pa.Table] = iter(blocks)
        self.rows = self.bytes = 0

    def __iter__(self) -> Iterator[pa.Table]:
        return self

    def __next__(self) -> pa.Table:
        block = next(self._it)
        self.rows += block.num_rows
        self.bytes += block.nbytes
        return block
