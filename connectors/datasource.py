"""The datasource contract: a source splits itself into read tasks with estimates.

Each read task names what it reads as :class:`Piece` s (a file and a span of its
row groups, a span of a range's rows...). The names depend only on the data, never
on how many tasks the source was split into, so a resumed write can leave out,
through ``Pushdowns.done``, exactly what an earlier run of another layout committed.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from urllib.parse import unquote

import pyarrow as pa

HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"


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
    per_piece: bool = False  # a user function runs on the rows in the same task: one
    # piece (file, row group) per task where a source would group them, so the work
    # spreads over the CPUs and the first rows come out early


@dataclass
class BlockMetadata:
    """What a read task will produce, known before it runs (Ray Data's ``BlockMetadata``):
    ``num_rows`` and ``size_bytes`` (in memory) may be None when unknown; ``input_files``
    the files it reads. ``exec_stats`` and ``task_exec_stats`` are accepted for Ray's
    signature and not used.

    >>> BlockMetadata(num_rows=10, size_bytes=80, input_files=["a.csv"]).input_files
    ('a.csv',)
    """

    num_rows: int | None = None
    size_bytes: int | None = None
    exec_stats: object = None
    task_exec_stats: object = None
    input_files: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.input_files is not None and not isinstance(self.input_files, tuple):
            self.input_files = tuple(self.input_files)


@dataclass(init=False)
class ReadTask:
    """One unit of reading: a function yielding tables, with row and byte estimates.

    ``estimated_bytes`` is the in-memory (decoded) size, which the executor's
    memory budget uses before anything has been read. ``pieces`` name what it
    reads (see :class:`Piece`); a source that names them must leave out what
    ``Pushdowns.done`` covers. A task without pieces is named by its position,
    so a write over such a source resumes only with the same layout. ``filtered``
    is True when a filter runs in the read (``Pushdowns.filter``): ``estimated_rows``
    then counts the rows before it, an upper bound.

    Ray Data's form is accepted as well: ``ReadTask(read_fn, metadata)`` with a
    :class:`BlockMetadata` (and ``schema=``, ``per_task_row_limit=``). ``read_fn``
    returns an iterable of blocks: ``pyarrow.Table`` s, record batches, pandas
    DataFrames or dicts of columns (one block alone is taken as ``[block]``).

    >>> task = ReadTask(lambda: iter([pa.table({"x": [1, 2]})]), 2, 16, "rows 0-1")
    >>> [t.num_rows for t in task()]
    [2]
    >>> task = ReadTask(lambda: [{"x": [1, 2, 3]}], BlockMetadata(3, 24), per_task_row_limit=2)
    >>> task.metadata.num_rows, [t.to_pydict() for t in task()]
    (3, [{'x': [1, 2]}])
    """

    read_fn: Callable[[], Iterator[pa.Table]]
    estimated_rows: int | None = None
    estimated_bytes: int | None = None
    description: str = ""
    pieces: tuple[Piece, ...] | None = None
    filtered: bool = False
    schema: pa.Schema | None = None
    per_task_row_limit: int | None = None
    input_files: tuple[str, ...] | None = None

    def __init__(self, read_fn: Callable[[], object],
                 estimated_rows: int | BlockMetadata | None = None,
                 estimated_bytes: int | pa.Schema | None = None, description: str = "",
                 pieces: tuple[Piece, ...] | None = None, filtered: bool = False,
                 schema: pa.Schema | None = None, per_task_row_limit: int | None = None,
                 input_files: tuple[str, ...] | None = None, *,
                 metadata: BlockMetadata | None = None) -> None:
        if not callable(read_fn):
            raise TypeError(f"ReadTask: read_fn must be a function returning blocks, "
                            f"got {type(read_fn).__name__}")
        if isinstance(estimated_rows, BlockMetadata):  # Ray's ReadTask(read_fn, metadata, schema)
            metadata, estimated_rows = estimated_rows, None
            if isinstance(estimated_bytes, pa.Schema):
                schema, estimated_bytes = estimated_bytes, None
        if metadata is not None:
            if not isinstance(metadata, BlockMetadata):
                raise TypeError(f"ReadTask: metadata must be a BlockMetadata, got "
                                f"{type(metadata).__name__}")
            estimated_rows, estimated_bytes = metadata.num_rows, metadata.size_bytes
            input_files = metadata.input_files
        if per_task_row_limit is not None and (not isinstance(per_task_row_limit, int)
                                               or per_task_row_limit < 0):
            raise ValueError(f"ReadTask: per_task_row_limit={per_task_row_limit!r}; expected "
                             f"a non-negative int or None")
        self.read_fn, self.estimated_rows = read_fn, estimated_rows  # type: ignore[assignment]
        self.estimated_bytes, self.description = estimated_bytes, description
        self.pieces, self.filtered, self.schema = pieces, filtered, schema
        self.per_task_row_limit, self.input_files = per_task_row_limit, input_files

    @property
    def metadata(self) -> BlockMetadata:
        """The estimates as Ray Data's :class:`BlockMetadata`."""
        return BlockMetadata(self.estimated_rows, self.estimated_bytes,
                             input_files=self.input_files)

    def __call__(self) -> Iterator[pa.Table]:
        tables = _as_tables(self.read_fn(), self.description)
        if self.per_task_row_limit is not None:
            return limit_tables(tables, self.per_task_row_limit)
        return tables


def _as_tables(blocks, description: str) -> Iterator[pa.Table]:
    """The blocks a ``read_fn`` returned, as Arrow tables (a table passes as it is)."""
    if isinstance(blocks, (pa.Table, pa.RecordBatch, dict)) or _is_pandas(blocks):
        blocks = [blocks]
    for block in blocks:
        if isinstance(block, (pa.Table, SkippedInput)):
            yield block
        elif isinstance(block, pa.RecordBatch):
            yield pa.Table.from_batches([block])
        elif _is_pandas(block):
            yield pa.Table.from_pandas(block, preserve_index=False)
        elif isinstance(block, dict):
            try:
                yield pa.table(block)
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
                raise TypeError(f"ReadTask {description!r}: a dict block must map column names "
                                f"to equal-length 1-d columns ({exc}); build a pyarrow.Table "
                                f"for other data") from None
        else:
            raise TypeError(f"ReadTask {description!r}: read_fn yielded a "
                            f"{type(block).__name__}; a block is a pyarrow.Table (or a "
                            f"RecordBatch, pandas.DataFrame or dict of columns)")


def _is_pandas(obj) -> bool:
    return type(obj).__module__.startswith("pandas") and hasattr(obj, "columns")


class Datasource:
    """A source of rows: subclass it for a custom connector and read it with
    ``streambatch.read_datasource(source)`` (Ray Data's contract).

    A subclass implements :meth:`get_read_tasks` (split the data into about
    ``parallelism`` :class:`ReadTask` s, each a function returning blocks plus a
    :class:`BlockMetadata` estimate) and may implement
    :meth:`estimate_inmemory_data_size` and :meth:`get_name`. Read tasks run in worker
    processes, so what they hold must pickle (a module-level class does).

    Built-in sources implement :meth:`read_tasks` instead, which also receives the
    optimizer's pushdowns (columns, filter, limit) for the ``supports_*`` flags they set.

    >>> class Squares(Datasource):
    ...     def __init__(self, n: int):
    ...         self.n = n
    ...     def get_read_tasks(self, parallelism: int) -> list[ReadTask]:
    ...         cuts = [self.n * i // parallelism for i in range(parallelism + 1)]
    ...         return [ReadTask(lambda lo=lo, hi=hi: [{"x": [i * i for i in range(lo, hi)]}],
    ...                          BlockMetadata(num_rows=hi - lo, size_bytes=8 * (hi - lo)))
    ...                 for lo, hi in zip(cuts, cuts[1:])]
    ...     def estimate_inmemory_data_size(self) -> int:
    ...         return 8 * self.n
    >>> [t.metadata.num_rows for t in Squares(10).get_read_tasks(3)], Squares(1).get_name()
    ([3, 3, 4], 'Squares')
    """

    name = "Datasource"
    supports_projection = False
    supports_filter = False
    supports_limit = False
    parallelism: int | None = None  # override_num_blocks, when the user set it

    def get_name(self) -> str:
        """The name of the read stage: ``name`` when set, else the class name less a
        ``Datasource`` suffix (Ray Data's)."""
        if self.name != Datasource.name:
            return self.name
        name = type(self).__name__
        return name[:-len("Datasource")] if name.endswith("Datasource") and name != "Datasource" else name

    def estimate_inmemory_data_size(self) -> int | None:
        """The decoded size of all the data in bytes, or None when unknown."""
        return None

    def get_read_tasks(self, parallelism: int) -> list[ReadTask]:
        """Split the source into about ``parallelism`` read tasks (a user source's part)."""
        raise NotImplementedError(f"{type(self).__name__}: a Datasource implements "
                                  f"get_read_tasks(parallelism) -> list[ReadTask]")

    def read_tasks(self, parallelism: int, pushdowns: Pushdowns) -> list[ReadTask]:
        """Split the source into about ``parallelism`` read tasks (the engine's call:
        a user source's :meth:`get_read_tasks`, checked)."""
        tasks = self.get_read_tasks(parallelism)
        if not isinstance(tasks, (list, tuple)):
            raise TypeError(f"{type(self).__name__}.get_read_tasks must return a list of "
                            f"ReadTask, got {type(tasks).__name__}")
        for index, task in enumerate(tasks):
            if not isinstance(task, ReadTask):
                raise TypeError(f"{type(self).__name__}.get_read_tasks returned a "
                                f"{type(task).__name__} at [{index}]; expected ReadTask "
                                f"(streambatch.ReadTask(read_fn, BlockMetadata(...)))")
        return list(tasks)

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
        missing = [c for c in pushdowns.columns if c not in table.column_names]
        if missing:
            raise KeyError(f"column(s) {missing} not found; available columns: "
                           f"{table.column_names}")
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


PARTITION_TYPES = {int: "int64", float: "float64", str: "string", bool: "bool"}


@dataclass
class Partitioning:
    """How file paths hold column values, as Ray Data's ``Partitioning``.

    ``style="hive"``: directories ``key=value`` (``__HIVE_DEFAULT_PARTITION__`` reads as
    null); ``style="dir"``: the directories below ``base_dir`` hold the values of
    ``field_names`` in order. Only directories below ``base_dir`` count (``None``: every
    directory of the path, so ``read_csv("d/country=us/f.csv")`` yields ``country``).
    ``field_types`` maps a key to ``int``, ``float``, ``str`` or ``bool``; keys it leaves
    out are int64 when every value is an integer, float64 when every value is a number,
    else strings. ``filesystem`` is accepted for Ray's signature (the read's is used).

    >>> Partitioning("hive").parse("/data/country=us/year=2024/f.csv")
    {'country': 'us', 'year': '2024'}
    >>> Partitioning("dir", base_dir="/data", field_names=["country", "year"]).parse("/data/us/2024/f.csv")
    {'country': 'us', 'year': '2024'}
    >>> Partitioning("dir")
    Traceback (most recent call last):
    ...
    ValueError: Partitioning: style='dir' needs field_names=[...], the column each directory level below base_dir holds
    """

    style: str = "hive"
    base_dir: str | None = None
    field_names: list[str] | None = None
    field_types: dict[str, type] | None = None
    filesystem: object = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.style = str(getattr(self.style, "value", self.style))
        if self.style not in ("hive", "dir"):
            raise ValueError(f"Partitioning: style={self.style!r}; expected 'hive' or 'dir'")
        if self.style == "dir" and not self.field_names:
            raise ValueError("Partitioning: style='dir' needs field_names=[...], the column "
                             "each directory level below base_dir holds")
        for key, typ in (self.field_types or {}).items():
            if typ not in PARTITION_TYPES:
                raise TypeError(f"Partitioning: field_types[{key!r}] = {typ!r}; expected one "
                                f"of int, float, str, bool")
        if self.base_dir is not None:
            self.base_dir = os.fspath(self.base_dir)

    def parse(self, path: str) -> dict[str, str | None]:
        """The ``{key: value}`` a file's path holds (strings; nulls for hive's default)."""
        base = _strip(self.base_dir or "")
        if base:
            base = base.rstrip("/") + "/"
            if not path.startswith(base):
                return {}
            path = path[len(base):]
        dirs = [d for d in posixpath.dirname(path).split("/") if d]
        names = self.field_names
        if self.style == "dir":
            if not dirs:
                return {}
            if len(dirs) != len(names or []):
                raise ValueError(f"Partitioning('dir'): {path!r} has {len(dirs)} directory "
                                 f"level(s) below base_dir {self.base_dir!r}, field_names has "
                                 f"{len(names or [])}: {names}")
            return {k: unquote(v) for k, v in zip(names or [], dirs, strict=True) if k}
        pairs = [d.split("=") for d in dirs if d.count("=") == 1]
        if names and pairs and [k for k, _ in pairs] != list(names):
            raise ValueError(f"Partitioning('hive'): {path!r} has keys {[k for k, _ in pairs]}, "
                             f"expected field_names {list(names)}")
        return {k: None if v == HIVE_NULL else unquote(v) for k, v in pairs}


class PathPartitionFilter:
    """``partition_filter=`` of file reads (Ray Data's): keeps the files for which
    ``filter_fn(values)`` is true, ``values`` being what the file's path holds under
    the partitioning (strings, or ``field_types``' types; ``{}`` for a file outside any
    partition). Made with :meth:`of`; files are left out before anything is read.

    >>> keep = PathPartitionFilter.of(lambda d: d.get("year") == "2024")
    >>> keep(["/d/year=2023/a.csv", "/d/year=2024/b.csv", "/d/c.csv"])
    ['/d/year=2024/b.csv']
    >>> PathPartitionFilter.of(lambda d: d["y"] > 1, field_types={"y": int})(["/y=1/a", "/y=2/b"])
    ['/y=2/b']
    """

    def __init__(self, partitioning: Partitioning, filter_fn: Callable[[dict], bool] | None) -> None:
        if filter_fn is not None and not callable(filter_fn):
            raise TypeError(f"PathPartitionFilter: filter_fn must be a function of the "
                            f"partition values, got {type(filter_fn).__name__}")
        self.partitioning, self.filter_fn = partitioning, filter_fn

    @staticmethod
    def of(filter_fn: Callable[[dict], bool] | None = None, style: str = "hive",
           base_dir: str | None = None, field_names: list[str] | None = None,
           field_types: dict[str, type] | None = None,
           filesystem: object = None) -> PathPartitionFilter:
        """A filter of paths partitioned as ``Partitioning(style, base_dir, ...)``."""
        return PathPartitionFilter(Partitioning(style, base_dir, field_names, field_types,
                                                filesystem), filter_fn)

    def apply(self, path: str) -> bool:
        """True when the file at ``path`` is to be read."""
        if self.filter_fn is None:
            return True
        values: dict = self.partitioning.parse(path)
        for key, typ in (self.partitioning.field_types or {}).items():
            value = values.get(key)
            if value is not None:
                values[key] = cast_partition_value(value, typ)
        return bool(self.filter_fn(values))

    def __call__(self, paths: list[str]) -> list[str]:
        """The paths to read, in order."""
        return [path for path in paths if self.apply(path)]


def cast_partition_value(value: str, typ: type):
    """A partition value (a string from a path) as ``typ`` (int, float, str or bool:
    "true"/"1" are True).

    >>> cast_partition_value("7", int), cast_partition_value("True", bool)
    (7, True)
    """
    if typ is bool:
        return value.lower() in ("true", "1")
    return typ(value)


def _strip(path: str) -> str:
    """A local path or URL as the filesystem names it (no protocol)."""
    if not path or "://" not in path:
        return path
    from fsspec.core import url_to_fs

    return url_to_fs(path)[1]


@dataclass(frozen=True)
class FileShuffleConfig:
    """``shuffle=`` of file reads (Ray Data's): the files' order is shuffled each time a
    run makes its read tasks. ``seed=None`` shuffles differently each time; with a seed
    the order is reproducible: the same on every run when ``reseed_after_execution`` is
    False, else different on each run of the dataset (in a reproducible sequence).

    >>> FileShuffleConfig(seed=3, reseed_after_execution=False).get_seed(5)
    3
    """

    seed: int | None = None
    reseed_after_execution: bool = True

    def __post_init__(self) -> None:
        if self.seed is not None and (not isinstance(self.seed, int) or self.seed < 0):
            raise ValueError(f"FileShuffleConfig: seed={self.seed!r}; expected a "
                             f"non-negative int or None")

    def get_seed(self, execution_idx: int = 0) -> int | None:
        """The seed of run number ``execution_idx`` (None: not reproducible)."""
        if self.seed is None or not self.reseed_after_execution:
            return self.seed
        return hash((self.seed, execution_idx)) & 0x7FFFFFFF
