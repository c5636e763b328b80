"""In-memory sources: Arrow tables, Python items and integer ranges."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
from streambatch.connectors.datasource import (
    Datasource,
    Piece,
    Pushdowns,
    ReadTask,
    apply_pushdowns,
    limit_tables,
    split_spans,
)


def row_groups_of(item: str, num_rows: int, parts: int, pushdowns: Pushdowns) -> list[list[Piece]]:
    """The rows of ``item`` not yet done (``pushdowns.done``), cut into about ``parts``
    groups of spans. An empty item is one empty group (its task carries the schema).

    >>> [[(p.start, p.stop) for p in g] for g in row_groups_of("range", 10, 2, Pushdowns())]
    [[(0, 5)], [(5, 10)]]
    >>> from streambatch.connectors.datasource import PieceSet
    >>> done = PieceSet([Piece("range", 0, 4)])
    >>> [[(p.start, p.stop) for p in g] for g in row_groups_of("range", 10, 3, Pushdowns(done=done))]
    [[(4, 6)], [(6, 8)], [(8, 10)]]
    """
    whole = Piece(item, 0, num_rows)
    if not num_rows:
        return [] if pushdowns.done and pushdowns.done.covers(whole) else [[whole]]
    left = pushdowns.done.remaining(whole) if pushdowns.done else [whole]
    return split_spans(left, parts)


def describe_spans(what: str, pieces: list[Piece]) -> str:
    """``"ids 0-3, 8-9"``: the rows a task reads, for messages.

    >>> describe_spans("ids", [Piece("range", 0, 4), Piece("range", 8, 10)])
    'ids 0-3, 8-9'
    """
    return f"{what} " + ", ".join(f"{p.start}-{p.stop - 1}" for p in pieces)


class ArrowSource(Datasource):
    """Tables held in memory; each table is cut into zero-copy slices.

    With ``split=False`` every table is one read task (used by ``materialize``).

    >>> src = ArrowSource([pa.table({"x": list(range(10))})])
    >>> [sum(t.num_rows for t in task()) for task in src.read_tasks(3, Pushdowns())]
    [4, 3, 3]
    """

    name = "Arrow"
    supports_projection = supports_filter = supports_limit = True

    def __init__(self, tables: list[pa.Table], split: bool = True) -> None:
        self.tables = tables
        self.split = split

    def schema(self) -> pa.Schema | None:
        """Schema of the first table."""
        return self.tables[0].schema if self.tables else None

    def read_tasks(self, parallelism: int, pushdowns: Pushdowns) -> list[ReadTask]:
        """Slices of the tables, about ``parallelism`` in all."""
        total = sum(t.num_rows for t in self.tables) or 1
        tasks = []
        for index, table in enumerate(self.tables):
            parts = max(1, round(parallelism * table.num_rows / total)) if self.split else 1
            groups = row_groups_of(f"table {index}", table.num_rows, parts, pushdowns)
            if not self.split and len(groups) > 1:
                groups = [[p for g in groups for p in g]]
            for group in groups:
                slices = [table.slice(p.start, p.stop - p.start) for p in group]
                rows = sum(t.num_rows for t in slices)
                tasks.append(ReadTask(_reader(slices, pushdowns), rows,
                                      sum(t.nbytes for t in slices),
                                      describe_spans(f"table {index} rows", group), tuple(group)))
        return tasks


def _reader(tables: list[pa.Table], pushdowns: Pushdowns):
    def read():
        return limit_tables((apply_pushdowns(t, pushdowns) for t in tables), pushdowns.limit)

    return read


class ItemsSource(Datasource):
    """Python items (dicts become rows; other values a column ``item``), converted in the task.

    >>> src = ItemsSource([1, 2, 3])
    >>> [t.to_pylist() for task in src.read_tasks(1, Pushdowns()) for t in task()]
    [[{'item': 1}, {'item': 2}, {'item': 3}]]
    """

    name = "Items"
    supports_projection = supports_filter = supports_limit = True

    def __init__(self, items: list) -> None:
        self.items = items

    def read_tasks(self, parallelism: int, pushdowns: Pushdowns) -> list[ReadTask]:
        """About ``parallelism`` contiguous runs of items."""
        tasks = []
        for group in row_groups_of("items", len(self.items), parallelism, pushdowns):
            chunk = [item for p in group for item in self.items[p.start:p.stop]]
            tasks.append(ReadTask(_items_reader(chunk, pushdowns), len(chunk), 64 * len(chunk),
                                  describe_spans("items", group), tuple(group)))
        return tasks


def _items_reader(items: list, pushdowns: Pushdowns):
    """A read task over ``items``: converted like any rows (union of keys, unified types,
    tensors for arrays); a value that cannot be stored fails naming its row and key."""

    def read():
        from streambatch.connectors.row_conversion import rows_to_block

        rows = [i if isinstance(i, dict) else {"item": i} for i in items]
        table = rows_to_block(rows)
        return limit_tables(iter([apply_pushdowns(table, pushdowns)]), pushdowns.limit)

    return read


class RangeSource(Datasource):
    """Integers ``0..n-1`` in column ``id`` (int64), generated in the task.

    >>> [t["id"].to_pylist() for task in RangeSource(5).read_tasks(2, Pushdowns()) for t in task()]
    [[0, 1, 2], [3, 4]]
    """

    name = "Range"
    supports_projection = supports_filter = supports_limit = True

    def __init__(self, n: int) -> None:
        self.n = n

    def schema(self) -> pa.Schema:
        """``id: int64``."""
        return pa.schema([("id", pa.int64())])

    def read_tasks(self, parallelism: int, pushdowns: Pushdowns) -> list[ReadTask]:
        """Contiguous ranges, about ``parallelism`` of them."""
        tasks = []
        for group in row_groups_of("range", self.n, parallelism, pushdowns):
            rows = sum(p.stop - p.start for p in group)
            tasks.append(ReadTask(_range_reader([(p.start, p.stop) for p in group], pushdowns),
                                  rows, 8 * rows, describe_spans("ids", group), tuple(group)))
        return tasks


def _range_reader(spans: list[tuple[int, int]], pushdowns: Pushdowns):
    def read():
        step = 1 << 20
        chunks = (pa.table({"id": np.arange(s, min(s + step, stop), dtype=np.int64)})
                  for start, stop in spans for s in range(start, max(stop, start + 1), step))
        return limit_tables((apply_pushdowns(t, pushdowns) for t in chunks), pushdowns.limit)

    return read


def default_parallelism(num_cpus: int, estimated_bytes: int, target_bytes: int) -> int:
    """Read tasks for an in-memory source: two per CPU, more when the data is large.

    >>> default_parallelism(2, 10, 100)
    4
    """
    return max(2 * num_cpus, math.ceil(estimated_bytes / max(1, target_bytes)))
