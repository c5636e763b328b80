"""Partitions: a block (pyarrow.Table) plus metadata, held in memory or in shared memory."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import pyarrow as pa
from streambatch.executor import clock


@dataclass
class InMemoryRef:
    """A block held by this process as a pyarrow.Table.

    Every block reference type has ``read() -> pyarrow.Table``; backends add
    their own (shared-memory files on the local backend, object references on Ray).
    """

    table: pa.Table

    def read(self) -> pa.Table:
        """The table itself."""
        return self.table


class BlockRef(Protocol):
    """What every block reference has (in-process tables here; shared-memory files and
    Ray object references are the backends' own, in ``executor/backends``)."""

    def read(self) -> pa.Table:
        """The block as a table."""


@dataclass
class Partition:
    """One block and what the executor knows about it. Where it came from, four ways:

    - ``made_from``: the ids of the partitions it was made from, or
      ``(("read", description),)`` for a read's output (for messages);
    - ``key``: a deterministic name of the task output it is, the same across attempts
      and runs (a sink names its file by it; the loader resumes by it);
    - ``origins``: the ``(source ordinal, read index)`` reads it descends from (which
      reads are settled, for exactly-once writes);
    - ``recipe``: how to make it again if its block is lost (``recovery.py``).

    >>> p = Partition.from_table(pa.table({"x": [1, 2]}), stage=0)
    >>> p.rows, p.get().column("x").to_pylist()
    (2, [1, 2])
    """

    ref: BlockRef
    rows: int
    nbytes: int
    stage: int
    made_from: tuple = ()
    pid: int = field(default_factory=lambda: next(_IDS))
    key: str = ""
    origins: frozenset = frozenset()
    recipe: object = None  # how to recompute it if its block is lost (executor/recovery.py)
    index: int = 0  # its number among its task's outputs (an exchange's bucket)
    first_row: int | None = None  # rows handed to a numbered stage before this one
    node: int = 0  # the node that holds its block (an index into the backend's nodes)
    row_offset: int | None = 0  # where its rows start among its read partition's rows at
    # this point of the pipeline (None: unknown, after a stage that changes row counts)
    created_at: float = field(default_factory=clock.now, compare=False, repr=False)

    @classmethod
    def from_table(cls, table: pa.Table, stage: int, made_from: tuple = ()) -> Partition:
        """Wrap an in-process table."""
        return cls(InMemoryRef(table), table.num_rows, table.nbytes, stage, made_from)

    def get(self) -> pa.Table:
        """The block as a table (zero-copy for shared-memory blocks)."""
        return read_ref(self.ref)

    @property
    def memory_bytes(self) -> int:
        """Bytes it holds in memory: none once spilled to disk (a ref ``on_disk``)."""
        return 0 if getattr(self.ref, "on_disk", False) else self.nbytes


def _counter() -> Iterator[int]:
    n = 0
    while True:
        yield n
        n += 1


_IDS: Iterator[int] = _counter()  # partition ids (Partition.pid)


def read_ref(ref: BlockRef) -> pa.Table:
    """Materialize a block reference as a pyarrow.Table.

    >>> read_ref(InMemoryRef(pa.table({"a": [1]}))).num_rows
    1
    """
    return ref.read()


def output_offset(task, changes_rows: bool) -> int | None:
    """``row_offset`` of the output block a running task makes next: after the rows it
    made so far, from its read partition's start (a read) or its first input's (a stage
    that keeps row counts, on inputs from one read); None when unknown.

    >>> from types import SimpleNamespace as T
    >>> part = Partition.from_table(pa.table({"x": [1, 2]}), 0)
    >>> part.row_offset = 30
    >>> task = T(read_index=None, rows_out=10, inputs=[part], origins={(0, 2)})
    >>> output_offset(task, False), output_offset(task, True)
    (40, None)
    """
    if task.read_index is not None:
        return task.rows_out
    base = input_offset(task.inputs, task.origins)
    return None if changes_rows or base is None else base + task.rows_out


def input_offset(inputs: list, origins) -> int | None:
    """Where a task's input starts among its read partition's rows (None: unknown, or
    inputs from several reads)."""
    if not inputs or len(origins) != 1:
        return None
    return inputs[0].row_offset


def first_row_of(inputs: list) -> int | None:
    """The first row number of a task's inputs (a numbered stage's), else None.

    >>> first_row_of([]), first_row_of([Partition.from_table(pa.table({"x": [1]}), 0)])
    (None, None)
    """
    return inputs[0].first_row if inputs else None
