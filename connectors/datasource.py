"""The datasource contract: a source splits itself into read tasks with estimates."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pyarrow as pa


@dataclass(frozen=True)
class Pushdowns:
    """What the optimizer pushed into a read: columns, a row filter, a row limit.

    >>> Pushdowns(columns=("a",), limit=3).limit
    3
    """

    columns: tuple[str, ...] | None = None
    filter: object = None
    limit: int | None = None


@dataclass
class ReadTask:
    """One unit of reading: a function yielding tables, with row and byte estimates.

    ``estimated_bytes`` is the in-memory (decoded) size, which the executor's
    memory budget uses before anything has been read.

    >>> task = ReadTask(lambda: iter([pa.table({"x": [1, 2]})]), 2, 16, "rows 0-1")
    >>> [t.num_rows for t in task()]
    [2]
    """

    read_fn: Callable[[], Iterator[pa.Table]]
    estimated_rows: int | None = None
    estimated_bytes: int | None = None
    description: str = ""

    def __call__(self) -> Iterator[pa.Table]:
        return self.read_fn()


class Datasource:
    """Base class for sources. Subclasses set the ``supports_*`` flags they honour."""

    name = "Datasource"
    supports_projection = False
    supports_filter = False
    supports_limit = False
    parallelism: int | None = None  # override_num_blocks, when the user set it

    def read_tasks(self, parallelism: int, pushdowns: Pushdowns) -> list[ReadTask]:
        """Split the source into about ``parallelism`` read tasks."""
        raise NotImplementedError

    def schema(self) -> pa.Schema | None:
        """The schema when known without reading data (else None)."""
        return None


def apply_pushdowns(table: pa.Table, pushdowns: Pushdowns) -> pa.Table:
    """Apply filter, then projection, to an in-memory table (limit is per task).

    >>> import pyarrow.compute as pc
    >>> t = pa.table({"a": [1, 5, 7], "b": [0, 0, 0]})
    >>> apply_pushdowns(t, Pushdowns(columns=("a",), filter=pc.field("a") > 2)).to_pydict()
    {'a': [5, 7]}
    """
    if pushdowns.filter is not None:
        table = table.filter(pushdowns.filter)
    if pushdowns.columns is not None:
        table = table.select(list(pushdowns.columns))
    return table


@dataclass(frozen=True)
class SkippedInput:
    """What a read yields in place of a file it could not read under
    ``on_error="skip"``: the file and the error. The read stage's first op moves
    it to the dead letters (it never reaches a UDF).

    >>> SkippedInput("/d/a.csv", "FileReadError: bad row").path
    '/d/a.csv'
    """

    path: str
    error: str


def limit_tables(tables: Iterator[pa.Table], limit: int | None) -> Iterator[pa.Table]:
    """Stop after ``limit`` rows in total (a :class:`SkippedInput` passes through).

    >>> t = pa.table({"a": [1, 2, 3]})
    >>> [x.num_rows for x in limit_tables(iter([t, t]), 4)]
    [3, 1]
    """
    if limit is None:
        yield from tables
        return
    left = limit
    for table in tables:
        if isinstance(table, SkippedInput):
            yield table
            continue
        if left <= 0:
            return
        yield table.slice(0, left)
        left -= min(left, table.num_rows)
