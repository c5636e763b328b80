"""Physical stages: what the executor runs. Built by the planner, opaque to backends."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import pyarrow as pa


@dataclass(frozen=True)
class Resources:
    """What one task (or actor) of a stage asks for.

    >>> Resources(num_cpus=1) == Resources()
    True
    >>> Resources(num_gpus=0.5).describe()
    'cpu=1, gpu=0.5'
    """

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    memory: int = 0
    custom: tuple = ()

    def describe(self) -> str:
        """Short text for plans and stats."""
        parts = [f"cpu={self.num_cpus:g}"]
        if self.num_gpus:
            parts.append(f"gpu={self.num_gpus:g}")
        if self.memory:
            parts.append(f"mem={self.memory}")
        parts += [f"{k}={v:g}" for k, v in self.custom]
        return ", ".join(parts)


def _never() -> bool:
    return False


@dataclass
class TaskContext:
    """Where a task runs: used by operators for error messages and per-worker state.

    >>> TaskContext("Map(f)", 3, "partition 3").partition
    'partition 3'
    """

    stage: str
    task_index: int
    partition: str
    worker_state: dict = field(default_factory=dict)
    key: str = ""  # deterministic lineage key: the same for every attempt of the task
    dead_letters: list = field(default_factory=list)  # rows sent aside by on_error="skip"
    cancelled: Callable[[], bool] = field(default=_never)  # the job stopped: a
    # thread task (which nothing can kill) checks it before it commits anything lasting

    def check_running(self) -> None:
        """Raise TaskAbandoned when the job has stopped (a sink calls it before each
        commit, so an abandoned thread task never adds a file after the job's cleanup).

        >>> TaskContext("Write", 0, "partition 0").check_running()
        """
        if self.cancelled():
            raise TaskAbandoned(f"{self.stage}: {self.partition} abandoned: the job stopped")


class TaskAbandoned(RuntimeError):
    """A task of a stopped job ends without committing anything."""


class BlockOp(Protocol):
    """One operator's transform of a stream of blocks, run inside a task."""

    name: str
    holds_gil: bool
    min_rows: int | None
    changes_row_count: bool
    is_actor: bool
    stays_in_driver: bool  # state the user reads in the driver: never in a worker process

    def apply(self, blocks: Iterator[pa.Table], ctx: TaskContext) -> Iterator[pa.Table]:
        """Transform the blocks of one task."""


@dataclass
class PhysicalStage:
    """A chain of block ops run as tasks, or a driver-side step (limit, union, repartition).

    ``kind`` is one of "task", "limit", "union", "repartition". Source stages
    have ``read_tasks_fn`` set; the executor calls it once at start.
    """

    name: str
    kind: str = "task"
    upstream: tuple[int, ...] = ()
    ops: list = field(default_factory=list)
    read_tasks_fn: Callable[[], list] | None = None
    resources: Resources = Resources()
    concurrency: tuple[int, int] | None = None
    worker: str = "thread"
    limit: int | None = None
    num_partitions: int | None = None
    read_tasks: list | None = None
    block_rows: int | None = None  # output blocks hold multiples of this many rows

    @property
    def is_source(self) -> bool:
        """True when the stage reads from a datasource."""
        return self.read_tasks_fn is not None

    @property
    def uses_actors(self) -> bool:
        """True when tasks run in a pool of long-lived actors (a class UDF, or GPUs)."""
        return self.kind == "task" and (any(op.is_actor for op in self.ops)
                                        or self.resources.num_gpus > 0)

    def setup(self, worker_state: dict) -> None:
        """Build the stage's per-actor objects (model loading) before any task arrives."""
        for op in self.ops:
            if getattr(op, "is_actor", False):
                op.instance(worker_state)

    @property
    def min_rows_per_task(self) -> int | None:
        """Rows the first op wants per task (its fixed batch size), if any."""
        return self.ops[0].min_rows if self.ops and not self.is_source else None

    def run(self, blocks: Iterator[pa.Table], ctx: TaskContext,
            target_bytes: int) -> Iterator[pa.Table]:
        """Run the op chain over one task's input and split outputs to ``target_bytes``."""
        for op in self.ops:
            blocks = op.apply(blocks, ctx)
        return split_blocks(blocks, target_bytes, self.block_rows)


def split_blocks(blocks: Iterator[pa.Table], target_bytes: int,
                 block_rows: int | None = None) -> Iterator[pa.Table]:
    """Coalesce tiny blocks and split large ones so outputs are near ``target_bytes``
    (the first block of a task is passed on at once, for a fast pipeline start).
    With ``block_rows`` (the next stage's batch size), blocks are cut at multiples
    of it, in one piece of memory each, so that stage's batches are read in place.

    >>> t = pa.table({"x": list(range(1000))})
    >>> [b.num_rows for b in split_blocks(iter([t]), target_bytes=2000)]
    [250, 250, 250, 250]
    >>> [b.num_rows for b in split_blocks(iter([t]), target_bytes=2000, block_rows=300)]
    [300, 300, 300, 100]
    >>> [b.num_rows for b in split_blocks(iter([t.slice(0, 3), t.slice(3, 4), t.slice(7, 2)]), 10**6)]
    [3, 6]
    >>> ones = [t.slice(i, 1) for i in range(7)]
    >>> [(b.num_rows, b.column(0).num_chunks) for b in split_blocks(iter(ones), 8, block_rows=2)]
    [(1, 1), (2, 1), (2, 1), (2, 1)]
    """
    pending: list[pa.Table] = []
    pending_bytes = 0
    first = True
    for table in blocks:
        if first and table.num_rows:
            # The first block goes out at once: the next stage (or the consumer) can
            # start while this task works on the rest; later blocks are coalesced.
            first = False
            yield from _slices(table, target_bytes, block_rows) if table.nbytes > target_bytes else [table]
            continue
        if table.nbytes > target_bytes and table.num_rows > 1:
            if pending:
                yield _concat(pending, block_rows)
                pending, pending_bytes = [], 0
            yield from _slices(table, target_bytes, block_rows)
            continue
        pending.append(table)
        pending_bytes += table.nbytes
        if pending_bytes >= target_bytes:
            ready, rest = _aligned_prefix(_concat(pending, block_rows), block_rows)
            if ready is not None:
                yield ready
            pending = [rest] if rest is not None else []
            pending_bytes = rest.nbytes if rest is not None else 0
    if pending:
        yield _concat(pending, block_rows)


def _slices(table: pa.Table, target_bytes: int, block_rows: int | None) -> Iterator[pa.Table]:
    pieces = min(table.num_rows, math.ceil(table.nbytes / target_bytes))
    step = math.ceil(table.num_rows / pieces)
    if block_rows:
        step = aligned_step(step, block_rows, table.num_rows)
    for start in range(0, table.num_rows, step):
        yield table.slice(start, step)


def aligned_step(step: int, block_rows: int, total_rows: int = 0) -> int:
    """Rows per block near ``step`` that line up with batches of ``block_rows``: a
    multiple of it, or below it a divisor (whole blocks fill a batch), preferring,
    within a factor of two of ``step``, one that also divides ``total_rows`` (no
    short last block).

    >>> aligned_step(4, 10), aligned_step(1, 10), aligned_step(2, 10), aligned_step(25, 10)
    (5, 1, 2, 30)
    >>> aligned_step(3, 10, total_rows=5), aligned_step(3, 10, total_rows=10)
    (5, 2)
    """
    if step >= block_rows:
        return math.ceil(step / block_rows) * block_rows
    small = [d for d in range(1, math.isqrt(block_rows) + 1) if block_rows % d == 0]
    divisors = small + [block_rows // d for d in small]
    near = [d for d in divisors if step / 2 <= d <= 2 * step] or divisors
    return min(near, key=lambda d: (bool(total_rows) and total_rows % d != 0,
                                    abs(d - step), -d))


def _aligned_prefix(table: pa.Table, block_rows: int | None):
    """(the rows up to the last multiple of ``block_rows``, the rest); None for empty."""
    cut = table.num_rows if not block_rows else table.num_rows // block_rows * block_rows
    head = table.slice(0, cut) if cut else None
    rest = table.slice(cut) if cut < table.num_rows else None
    return head, rest


def _concat(tables: list[pa.Table], block_rows: int | None = None) -> pa.Table:
    """A task's output blocks as one: zero-copy when their schemas agree, else unified
    by ``concat_blocks`` (e.g. tensor shapes that differ between blocks become one
    variable-shape column); rows of blocks with no columns are kept.

    >>> import numpy as np
    >>> from streambatch.connectors.tensors import tensor_array
    >>> a = pa.table({"v": tensor_array(np.zeros((2, 2)))})
    >>> _concat([a, pa.table({"v": tensor_array(np.zeros((1, 3)))})]).schema.field("v").type.extension_name
    'arrow.variable_shape_tensor'
    >>> _concat([a.select([]), a.select([])]).num_rows
    4
    """
    non_empty = [t for t in tables if t.num_rows] or tables[:1]
    if len(non_empty) == 1:
        return non_empty[0]
    # (imported here: this module is the executor's contract and imports none of ours)
    from streambatch.connectors.block_joins import concat_blocks

    try:
        joined = concat_blocks(non_empty)
    except ValueError as err:
        raise ValueError(f"this task's output blocks cannot be joined: {err}") from err
    if block_rows and any(t.num_rows % block_rows for t in non_empty[:-1]):
        return joined.combine_chunks()  # a batch would span pieces: one copy here
    return joined
