"""In-memory sources: Arrow tables, Python items and integer ranges."""

from __future__ import annotations

import copy
import pickle

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
    return f"{what} " + ", ".join(f"{p.start}-{p.end - 1}" for p in pieces)


class ArrowSource(Datasource):
    """Tables held in memory; each table is cut into zero-copy slices.

    With ``split=False`` every table is one read task, so one block (``from_arrow``,
    ``from_pandas``, ``from_numpy`` and ``from_blocks``, as Ray Data's; ``materialize``).

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
                slices = [table.slice(p.start, p.end - p.start) for p in group]
                rows = sum(t.num_rows for t in slices)
                tasks.append(ReadTask(_reader(slices, pushdowns), rows,
                                      sum(t.nbytes for t in slices),
                                      describe_spans(f"table {index} rows", group), tuple(group)))
        return tasks


def _reader(tables: list[pa.Table], pushdowns: Pushdowns):
    def read():
        return limit_tables((apply_pushdowns(t, pushdowns) for t in tables), pushdowns.limit)

    return read


class ItemSnapshot:
    """Items as they were when given to ``from_items`` (as Ray Data converts them then): a
    caller that changes its dicts afterwards (``row["v"] = -1``) does not change the
    dataset. Pickled in chunks, which costs less than copying the objects, and unpickled
    by the read task that reads them; items that do not pickle are deep-copied, or,
    failing that, kept as they are.

    >>> rows = [{"v": 1}, {"v": 2}]
    >>> snap = ItemSnapshot(rows); rows[0]["v"] = -1
    >>> len(snap), open_parts(snap.parts(0, 2))
    (2, [{'v': 1}, {'v': 2}])
    """

    CHUNK = 256  # items per pickled chunk (a read task unpickles the chunks it reads)

    def __init__(self, items: list) -> None:
        self._len, self._chunks, self._plain = len(items), None, None
        try:
            self._chunks = [pickle.dumps(items[i:i + self.CHUNK], protocol=5)
                            for i in range(0, len(items), self.CHUNK)]
        except Exception:  # noqa: BLE001 - any object that does not pickle
            try:
                self._plain = copy.deepcopy(list(items))
            except Exception:  # noqa: BLE001 - nor deep-copies: kept as given
                self._plain = list(items)

    def __len__(self) -> int:
        return self._len

    def parts(self, start: int, stop: int | None) -> list[tuple]:
        """What holds items ``start`` to ``stop`` (None: the last), unopened: (pickled
        chunk or list, first, end) triples for :func:`open_parts`.

        >>> snap = ItemSnapshot(list(range(600)))
        >>> [(lo, hi) for _, lo, hi in snap.parts(250, 520)]
        [(250, 256), (0, 256), (0, 8)]
        """
        stop = self._len if stop is None else min(stop, self._len)
        if self._chunks is None:
            return [(self._plain, start, stop)]
        return [(self._chunks[i], max(0, start - i * self.CHUNK),
                 min(self.CHUNK, stop - i * self.CHUNK))
                for i in range(start // self.CHUNK, -(-stop // self.CHUNK))]


def open_parts(parts: list[tuple]) -> list:
    """The items :meth:`ItemSnapshot.parts` names."""
    out: list = []
    for held, lo, hi in parts:
        out += (pickle.loads(held) if isinstance(held, bytes) else held)[lo:hi]
    return out


class ItemsSource(Datasource):
    """Python items (dicts become rows; other values a column ``item``), converted in the task.

    >>> src = ItemsSource([1, 2, 3])
    >>> [t.to_pylist() for task in src.read_tasks(1, Pushdowns()) for t in task()]
    [[{'item': 1}, {'item': 2}, {'item': 3}]]
    """

    name = "Items"
    supports_projection = supports_filter = supports_limit = True

    def __init__(self, items: list) -> None:
        self.items = ItemSnapshot(items)

    def read_tasks(self, parallelism: int, pushdowns: Pushdowns) -> list[ReadTask]:
        """About ``parallelism`` contiguous runs of items."""
        tasks = []
        for group in row_groups_of("items", len(self.items), parallelism, pushdowns):
            parts = [part for p in group for part in self.items.parts(p.start, p.stop)]
            spans = [(p.start, p.end) for p in group]
            rows = sum(end - start for start, end in spans)
            tasks.append(ReadTask(_items_reader(parts, spans, pushdowns), rows, 64 * rows,
                                  describe_spans("items", group), tuple(group)))
        return tasks


def _items_reader(parts: list, spans: list[tuple[int, int]], pushdowns: Pushdowns):
    """A read task over the items ``parts`` hold (:meth:`ItemSnapshot.parts`: those of
    ``spans`` of the whole list, in order), opened in the task: converted like any rows
    (union of keys, unified types, tensors for arrays); a value that cannot be stored
    fails naming the item's index in the list given to from_items, and its key.

    >>> read = _items_reader([([{"a": 1}, {"a": "x"}], 0, 2)], [(7, 9)], Pushdowns())
    >>> try:
    ...     read()
    ... except ItemsToBlockError as err:
    ...     print(err.problems[0].row, err.problems[0].detail.split(";")[0])
    8 'x' has no common type with int64, the type of this key in item 7
    """

    def read():
        rows = [i if isinstance(i, dict) else {"item": i} for i in open_parts(parts)]
        table = items_to_block(rows, spans, "from_items")
        return limit_tables(iter([apply_pushdowns(table, pushdowns)]), pushdowns.limit)

    return read


def items_to_block(rows: list, spans: list[tuple[int, int]], who: str) -> pa.Table:
    """``rows_to_block(rows)``, where ``rows`` are the items of ``spans`` (half-open index
    ranges of a whole collection, in order): a row that cannot be stored raises
    :class:`ItemsToBlockError` naming its index in the collection (``who`` is the
    function the collection was given to).

    >>> items_to_block([{"a": 1}], [(3, 4)], "from_items").num_rows
    1
    >>> try:
    ...     items_to_block([{"a": 1}, {"a": 2}, {"a": "x"}], [(0, 1), (5, 7)], "from_items")
    ... except ItemsToBlockError as err:
    ...     print(err)  # doctest: +ELLIPSIS
    from_items: item 6, key 'a': got str: 'x' has no common type with int64, the type of this key in item 0; ...
    """
    from streambatch.connectors.row_conversion import RowsToBlockError, rows_to_block

    try:
        return rows_to_block(rows)
    except RowsToBlockError as err:
        raise ItemsToBlockError(who, _relocated(err.problems, spans)) from None


class ItemsToBlockError(ValueError):
    """Items that cannot become a block; ``problems`` (``row_conversion.Problem``) name
    each by its index in the collection given to ``who`` (from_items, from_torch...).

    >>> from streambatch.connectors.row_conversion import Problem
    >>> print(ItemsToBlockError("from_items", [Problem(12, "a", "str", "no")]))
    from_items: item 12, key 'a': got str: no
    """

    def __init__(self, who: str, problems: list) -> None:
        self.who, self.problems = who, problems
        first = problems[0].describe()
        first = first.replace("row ", "item ", 1) if problems[0].row is not None else first
        more = len(problems) - 1
        suffix = f" (and {more} more item{'s' if more > 1 else ''} in this read task)" if more else ""
        super().__init__(f"{who}: {first}{suffix}")

    def __reduce__(self):
        return (type(self), (self.who, self.problems))


def _relocated(problems: list, spans: list[tuple[int, int]]) -> list:
    """The problems with their rows (and the rows their details name: ``in row 3``,
    ``from row 3 on``, ``row 3 holds``) as indices in the whole collection."""
    import dataclasses
    import re

    starts, offset = [], 0
    for start, stop in spans:
        starts.append((offset, start))
        offset += stop - start

    def index(row: int) -> int:
        base, start = next((o, s) for o, s in reversed(starts) if o <= row)
        return start + row - base

    def detail(text: str) -> str:
        return re.sub(r"(\b(?:in|from) |^)row (\d+)",
                      lambda m: f"{m.group(1)}item {index(int(m.group(2)))}", text)

    return [dataclasses.replace(p, row=None if p.row is None else index(p.row),
                                detail=detail(p.detail)) for p in problems]


class RangeSource(Datasource):
    """Integers ``0..n-1`` in column ``id`` (int64), generated in the task; with
    ``tensor_shape``, column ``data`` holds row ``i`` as ``np.full(tensor_shape, i)``
    (a fixed-shape tensor column, as Ray Data's ``range_tensor``).

    >>> [t["id"].to_pylist() for task in RangeSource(5).read_tasks(2, Pushdowns()) for t in task()]
    [[0, 1, 2], [3, 4]]
    >>> from streambatch.connectors.tensors import tensor_to_numpy
    >>> [tensor_to_numpy(t["data"]).tolist() for t in RangeSource(2, (2,)).read_tasks(1, Pushdowns())[0]()]
    [[[0, 0], [1, 1]]]
    """

    name = "Range"
    supports_projection = supports_filter = supports_limit = True

    def __init__(self, n: int, tensor_shape: tuple[int, ...] | None = None) -> None:
        self.n = n
        self.tensor_shape = tensor_shape

    def schema(self) -> pa.Schema:
        """``id: int64``, or ``data``: an int64 tensor of ``tensor_shape``."""
        if self.tensor_shape is None:
            return pa.schema([("id", pa.int64())])
        return pa.schema([("data", pa.fixed_shape_tensor(pa.int64(), list(self.tensor_shape)))])

    def read_tasks(self, parallelism: int, pushdowns: Pushdowns) -> list[ReadTask]:
        """Contiguous ranges, about ``parallelism`` of them."""
        tasks = []
        width = int(np.prod(self.tensor_shape)) if self.tensor_shape is not None else 1
        for group in row_groups_of("range", self.n, parallelism, pushdowns):
            rows = sum(p.end - p.start for p in group)
            tasks.append(ReadTask(_range_reader([(p.start, p.end) for p in group], pushdowns,
                                                self.tensor_shape),
                                  rows, 8 * rows * width, describe_spans("ids", group), tuple(group)))
        return tasks


def _range_reader(spans: list[tuple[int, int]], pushdowns: Pushdowns,
                  shape: tuple[int, ...] | None = None):
    def read():
        step = 1 << 20 if shape is None else max(1, (1 << 20) // int(np.prod(shape)))
        chunks = (_range_block(s, min(s + step, stop), shape)
                  for start, stop in spans for s in range(start, max(stop, start + 1), step))
        return limit_tables((apply_pushdowns(t, pushdowns) for t in chunks), pushdowns.limit)

    return read


def _range_block(start: int, stop: int, shape: tuple[int, ...] | None) -> pa.Table:
    ids = np.arange(start, stop, dtype=np.int64)
    if shape is None:
        return pa.table({"id": ids})
    from streambatch.connectors.tensors import tensor_array

    values = np.broadcast_to(ids.reshape((-1,) + (1,) * len(shape)), (len(ids), *shape))
    return pa.table({"data": tensor_array(np.ascontiguousarray(values))})
