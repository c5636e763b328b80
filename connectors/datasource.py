"""The datasource contract: a source splits itself into read tasks with estimates.

Each read task names what it reads as :class:`Piece` s (a file and a span of its
row groups, a span of a range's rows...). The names depend only on the data, never
on how many tasks the source was split into, so a resumed write can leave out,
through ``Pushdowns.done``, exactly what an earlier run of another layout committed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pyarrow as pa


@dataclass(frozen=True)
class Piece:
    """What (part of) a read task reads: ``item`` (a file path, ``"range"``, ``"table 2"``)
    and the half-open span ``[start, stop)`` of its units (rows, or row groups for
    parquet); ``stop=None`` runs to the item's end.

    >>> Piece("range", 0, 10).to_json(3)
    [3, 'range', 0, 10]
    >>> Piece.from_json([3, "a.csv", 0, None])
    (3, Piece(item='a.csv', start=0, stop=None))
    """

    item: str
    start: int = 0
    stop: int | None = None

    @property
    def end(self) -> int:
        """``stop`` of a finite piece (a span of rows); an open one (``stop=None``) has none.

        >>> Piece("range", 2, 5).end
        5
        """
        if self.stop is None:
            raise ValueError(f"{self} runs to its item's end: it has no row count")
        return self.stop

    def to_json(self, source: int) -> list:
        """``[source ordinal, item, start, stop]`` as recorded in a sink's manifest."""
        return [source, self.item, self.start, self.stop]

    @staticmethod
    def from_json(entry: list) -> tuple[int, Piece]:
        """The (source ordinal, piece) of a manifest entry."""
        source, item, start, stop = entry
        return int(source), Piece(str(item), int(start), None if stop is None else int(stop))


_END = float("inf")


@dataclass
class PieceSet:
    """Pieces already done (written by an earlier run), asked what of a piece is left.

    >>> done = PieceSet([Piece("range", 0, 4000)])
    >>> done.remaining(Piece("range", 2666, 5333))
    [Piece(item='range', start=4000, stop=5333)]
    >>> done.covers(Piece("range", 100, 200)), done.covers(Piece("range", 3999, 4001))
    (True, False)
    >>> PieceSet([Piece("a.parquet", 1, 2)]).remaining(Piece("a.parquet"))
    [Piece(item='a.parquet', start=0, stop=1), Piece(item='a.parquet', start=2, stop=None)]
    """

    pieces: list[Piece] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._spans: dict[str, list[tuple[float, float]]] = {}
        for piece in self.pieces:
            self._spans.setdefault(piece.item, []).append(
                (piece.start, _END if piece.stop is None else piece.stop))
        for item, spans in self._spans.items():
            self._spans[item] = _merged(spans)

    def __bool__(self) -> bool:
        return bool(self.pieces)

    @property
    def items(self) -> set[str]:
        """The items some piece of which is done."""
        return set(self._spans)

    def remaining(self, piece: Piece) -> list[Piece]:
        """The spans of ``piece`` not done, in order (empty when all of it is)."""
        start: float = piece.start
        stop = _END if piece.stop is None else piece.stop
        out = []
        for lo, hi in self._spans.get(piece.item, []):
            if hi <= start or lo >= stop:
                continue
            if lo > start:
                out.append(Piece(piece.item, int(start), int(lo)))
            start = max(start, hi)
        if start < stop:
            out.append(Piece(piece.item, int(start), None if stop == _END else int(stop)))
        return out

    def covers(self, piece: Piece) -> bool:
        """True when every unit of ``piece`` is done."""
        return not self.remaining(piece)

    def overlaps(self, piece: Piece) -> bool:
        """True when some unit of ``piece`` is done."""
        return self.remaining(piece) != [piece]


def _merged(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for lo, hi in sorted(spans):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def split_spans(pieces: list[Piece], parts: int) -> list[list[Piece]]:
    """Row spans (finite pieces) cut into about ``parts`` groups of equal rows, in order;
    a group may hold the ends of several spans.

    >>> [[(p.start, p.stop) for p in g] for g in split_spans([Piece("r", 0, 10)], 3)]
    [[(0, 4)], [(4, 7)], [(7, 10)]]
    >>> [[(p.start, p.stop) for p in g] for g in split_spans([Piece("r", 0, 3), Piece("r", 5, 8)], 2)]
    [[(0, 3)], [(5, 8)]]
    >>> split_spans([], 4)
    []
    """
    total = sum(p.end - p.start for p in pieces)
    if not total:
        return []
    parts = max(1, min(parts, total))
    base, extra = divmod(total, parts)
    sizes = [base + (1 if i < extra else 0) for i in range(parts)]
    groups: list[list[Piece]] = [[] for _ in sizes]
    index, left = 0, sizes[0]
    for piece in pieces:
        start = piece.start
        while start < piece.end:
            if left == 0:
                index += 1
                left = sizes[index]
            take = min(left, piece.end - start)
            groups[index].append(Piece(piece.item, start, start + take))
            start, left = start + take, left - take
    return groups


@dataclass(frozen=True)
class Pushdowns:
    """What the optimizer pushed into a read: columns, a row filter, a row limit.

    >>> Pushdowns(columns=("a",), limit=3).limit
    3
    """

    columns: tuple[str, ...] | None = None
    filter: object = None
    limit: int | None = None
    done: PieceSet | None = None  # resuming a write: leave out what these pieces cover


@dataclass
class ReadTask:
    """One unit of reading: a function yielding tables, with row and byte estimates.

    ``estimated_bytes`` is the in-memory (decoded) size, which the executor's
    memory budget uses before anything has been read. ``pieces`` name what it
    reads (see :class:`Piece`); a source that names them must leave out what
    ``Pushdowns.done`` covers. A task without pieces is named by its position,
    so a write over such a source resumes only with the same layout. ``filtered``
    is True when a filter runs in the read (``Pushdowns.filter``): ``estimated_rows``
    then counts the rows before it, an upper bound.

    >>> task = ReadTask(lambda: iter([pa.table({"x": [1, 2]})]), 2, 16, "rows 0-1")
    >>> [t.num_rows for t in task()]
    [2]
    """

    read_fn: Callable[[], Iterator[pa.Table]]
    estimated_rows: int | None = None
    estimated_bytes: int | None = None
    description: str = ""
    pieces: tuple[Piece, ...] | None = None
    filtered: bool = False

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
    >>> [x.num_rows for x in limit_tables(iter([pa.table({})]), 1)]  # no columns, no rows
    [0]
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
        # counted here, never read back from a slice: pyarrow does not clamp the slice
        # of a table with no columns (it reports as many rows as asked)
        rows = min(left, table.num_rows)
        yield table if rows == table.num_rows else table.slice(0, rows)
        left -= rows
