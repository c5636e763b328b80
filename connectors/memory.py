"""In-memory sources: Arrow tables, Python items and integer ranges."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
from streambatch.connectors.datasource import (
    Datasource,
    Pushdowns,
    ReadTask,
    apply_pushdowns,
    limit_tables,
)


def split_rows(num_rows: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous (start, length) ranges covering ``num_rows`` rows.

    >>> split_rows(10, 3)
    [(0, 4), (4, 3), (7, 3)]
    """
    parts = max(1, min(parts, num_rows)) if num_rows else 1
    base, extra = divmod(num_rows, parts)
    out, start = [], 0
    for i in range(parts):
        size = base + (1 if i < extra else 0)
        out.append((start, size))
        start += size
    return out


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
            for start, length in split_rows(table.num_rows, parts):
                piece = table.slice(start, length)
                tasks.append(ReadTask(_reader(piece, pushdowns), length, piece.nbytes,
                                      f"table {index} rows {start}-{start + length - 1}"))
        return tasks


def _reader(table: pa.Table, pushdowns: Pushdowns):
    def read():
        return limit_tables(iter([apply_pushdowns(table, pushdowns)]), pushdowns.limit)

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
        for start, length in split_rows(len(self.items), parallelism):
            chunk = self.items[start:start + length]
            tasks.append(ReadTask(_items_reader(chunk, pushdowns), length, 64 * length,
                                  f"items {start}-{start + length - 1}"))
        return tasks


def _items_reader(items: list, pushdowns: Pushdowns):
    def read():
        rows = [i if isinstance(i, dict) else {"item": i} for i in items]
        table = pa.Table.from_pylist(rows)
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
        return [ReadTask(_range_reader(start, length, pushdowns), length, 8 * length,
                         f"ids {start}-{start + length - 1}")
                for start, length in split_rows(self.n, parallelism)]


def _range_reader(start: int, length: int, pushdowns: Pushdowns):
    def read():
        step = 1 << 20
        chunks = (pa.table({"id": np.arange(s, min(s + step, start + length), dtype=np.int64)})
                  for s in range(start, start + length, step))
        return limit_tables((apply_pushdowns(t, pushdowns) for t in chunks), pushdowns.limit)

    return read


def default_parallelism(num_cpus: int, estimated_bytes: int, target_bytes: int) -> int:
    """Read tasks for an in-memory source: two per CPU, more when the data is large.

    >>> default_parallelism(2, 10, 100)
    4
    """
    return max(2 * num_cpus, math.ceil(estimated_bytes / max(1, target_bytes)))
