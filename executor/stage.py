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
        return split_blocks(blocks, target_bytes)


def split_blocks(blocks: Iterator[pa.Table], target_bytes: int) -> Iterator[pa.Table]:
    """Coalesce tiny blocks and split large ones so outputs are near ``target_bytes``
    (the first block of a task is passed on at once, for a fast pipeline start).

    >>> t = pa.table({"x": list(range(1000))})
    >>> [b.num_rows for b in split_blocks(iter([t]), target_bytes=2000)]
    [250, 250, 250, 250]
    >>> [b.num_rows for b in split_blocks(iter([t.slice(0, 3), t.slice(3, 4), t.slice(7, 2)]), 10**6)]
    [3, 6]
    """
    pending: list[pa.Table] = []
    pending_bytes = 0
    first = True
    for table in blocks:
        if first and table.num_rows:
            # The first block goes out at once: the next stage (or the consumer) can
            # start while this task works on the rest; later blocks are coalesced.
            first = False
            yield from _slices(table, target_bytes) if table.nbytes > target_bytes else [table]
            continue
        if table.nbytes > target_bytes and table.num_rows > 1:
            if pending:
                yield _concat(pending)
                pending, pending_bytes = [], 0
            yield from _slices(table, target_bytes)
            continue
        pending.append(table)
        pending_bytes += table.nbytes
        if pending_bytes >= target_bytes:
            yield _concat(pending)
            pending, pending_bytes = [], 0
    if pending:
        yield _concat(pending)


def _slices(table: pa.Table, target_bytes: int) -> Iterator[pa.Table]:
    pieces = min(table.num_rows, math.ceil(table.nbytes / target_bytes))
    step = math.ceil(table.num_rows / pieces)
    for start in range(0, table.num_rows, step):
        yield table.slice(start, step)


def _concat(tables: list[pa.Table]) -> pa.Table:
    non_empty = [t for t in tables if t.num_rows] or tables[:1]
    if len(non_empty) == 1:
        return non_empty[0]
    return pa.concat_tables(non_empty, promote_options="permissive")
