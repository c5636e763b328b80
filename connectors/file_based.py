"""The shared machinery of file sources: listing, grouping files into read tasks,
hive partition columns, ``include_paths``, pushdowns and per-file error messages.

A format subclasses :class:`FileSource` and implements ``read_file``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from functools import partial

import pyarrow as pa
from streambatch.connectors.datasource import (
    PARTITION_TYPES,
    Datasource,
    FileShuffleConfig,
    Partitioning,
    PathPartitionFilter,
    Piece,
    Pushdowns,
    ReadTask,
    SkippedInput,
    apply_pushdowns,
    cast_partition_value,
    limit_tables,
)
from streambatch.connectors.empty_output import committed_empty
from streambatch.connectors.paths import (
    FileEntry,
    as_fsspec,
    check_first_path,
    check_paths,
    expand_files,
    has_extension,
    in_background,
    infer_partition_value,
    usable_fs,
)

TARGET_TASK_BYTES = 128 * 2**20
MAX_FILES_PER_TASK = 64


class FileReadError(OSError):
    """A file could not be read or decoded; the message names the file and the cause.

    >>> str(FileReadError("read_csv", "/d/a.csv", ValueError("bad row 3")))
    "read_csv: cannot read '/d/a.csv': ValueError: bad row 3"
    """

    def __init__(self, who: str, path: str, cause: BaseException, hint: str = "") -> None:
        self.path = path
        msg = f"{who}: cannot read {path!r}: {type(cause).__name__}: {cause}"
        super().__init__(msg + (f"; {hint}" if hint else ""))

    def __reduce__(self):
        return (_rebuild_error, (str(self), self.path))


def _rebuild_error(message: str, path: str) -> FileReadError:
    err = FileReadError.__new__(FileReadError)
    OSError.__init__(err, message)
    err.path = path
    return err


class FileSource(Datasource):
    """Files of one format, grouped into read tasks of about ``TARGET_TASK_BYTES``
    (decoded) and at most ``MAX_FILES_PER_TASK`` files, so thousands of small
    files start producing output after the first few are read.

    Subclasses set ``who`` (the function name in messages), ``suffixes`` (what a
    directory listing keeps), ``in_memory_factor`` (decoded size / file size)
    and implement :meth:`read_file`.
    """

    name = "Files"
    who = "read_files"
    suffixes: tuple[str, ...] | None = None
    in_memory_factor = 1.0
    supports_projection = supports_filter = supports_limit = True

    def __init__(self, paths, *, filesystem=None, include_paths: bool = False,
                 partitioning: str | Partitioning | None = "hive", on_error: str = "raise",
                 ignore_missing_paths: bool = False, file_extensions: list[str] | None = None,
                 shuffle: str | FileShuffleConfig | None = None,
                 partition_filter: PathPartitionFilter | None = None) -> None:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"{self.who}: on_error={on_error!r}; expected 'raise' or 'skip'")
        self.on_error = on_error
        self.partitioning = _partitioning(partitioning, self.who)
        self.shuffle = _shuffle(shuffle, self.who)
        self._runs = 0  # read_tasks calls so far: a reseeding shuffle's execution index
        self.file_extensions = _extensions(file_extensions, self.who)
        if partition_filter is not None and not isinstance(partition_filter, PathPartitionFilter):
            raise TypeError(f"{self.who}: partition_filter must be a streambatch.PathPartitionFilter"
                            f" (PathPartitionFilter.of(lambda values: ...)), got "
                            f"{type(partition_filter).__name__}")
        self.partition_filter = partition_filter
        self._paths = check_paths(paths, self.who)
        self._filesystem = as_fsspec(filesystem, self.who)
        self.include_paths, self.ignore_missing_paths = include_paths, bool(ignore_missing_paths)
        self._listing: tuple | None = None
        if not self.ignore_missing_paths:
            check_first_path(self._paths, self._filesystem, self.who)
        # Listed in the background from here on, while the pipeline is being built;
        # the first use waits for it (a missing path raises there, naming itself).
        self._pending = in_background(self._list)

    def _list(self) -> tuple:
        """``(fs, files)``: the paths expanded, then kept by ``partition_filter`` and
        ``file_extensions`` (which, as Ray Data's, apply to files named explicitly too)."""
        exts = self.file_extensions
        try:
            fs, files = expand_files(self._paths, None if exts else self.suffixes,
                                     self._filesystem, self.who, self.ignore_missing_paths)
        except FileNotFoundError:
            empty = committed_empty(self._paths, self._filesystem)
            if empty is None:
                raise
            return empty, []  # the output of a write of no rows: no rows to read
        if self.partition_filter is not None:
            files = [f for f in files if self.partition_filter.apply(f.path)]
            if not files:
                raise ValueError(f"{self.who}: partition_filter kept none of the files under "
                                 f"{self._paths!r}; check its function and the partition keys")
        if exts:
            files = [f for f in files if has_extension(f.path, exts)]
            if not files:
                raise ValueError(f"{self.who}: no files under {self._paths!r} end with "
                                 f"file_extensions={list(exts)}; check the extensions (without "
                                 f"the dot: 'csv'), or leave file_extensions out")
        return fs, files

    # ---- listing ------------------------------------------------------------------
    def listing(self) -> tuple:
        """``(fs, files, partition columns)``; listed once (in parallel, in the background
        from construction on)."""
        if self._listing is None:
            pending, self._pending = self._pending, None
            if pending is not None:
                fs, files = pending.result()
            else:  # another thread took the background result: list again
                fs, files = self._list()
            self._listing = (fs, files, self._partition_columns(files))
        return self._listing

    def __getstate__(self) -> dict:
        """Picklable (for the Ray backend): the listing is done first."""
        self.listing()  # partition_filter has done its work (its function may not pickle)
        return {**self.__dict__, "_pending": None, "partition_filter": None}

    @property
    def fs(self):
        """The fsspec filesystem the files live on (a fresh one in a forked worker)."""
        fs = usable_fs(self.listing()[0])
        if fs is not self._listing[0]:
            self._listing = (fs, *self._listing[1:])
        return fs

    def _partition_columns(self, files: list[FileEntry]) -> dict[str, pa.Array]:
        if self.partitioning is None:
            return {}
        try:
            values = [f.partition_values(self.partitioning) for f in files]
        except ValueError as exc:
            raise ValueError(f"{self.who}: {exc}; pass partitioning= to match the paths, or "
                             f"partitioning=None") from None
        keys = list(dict.fromkeys(k for v in values for k in v))
        types = self.partitioning.field_types or {}
        return {k: _typed_partition(k, [v.get(k) for v in values], types.get(k), self.who)
                for k in keys}

    # ---- tasks ----------------------------------------------------------------------
    def estimate(self, entry: FileEntry) -> tuple[int | None, int]:
        """(rows or None, in-memory bytes) of one file, before reading it."""
        return None, int(entry.size * self.in_memory_factor)

    def read_tasks(self, parallelism: int, pushdowns: Pushdowns) -> list[ReadTask]:
        """Files pruned by partition values, grouped into about ``parallelism`` or more tasks."""
        _, files, parts = self.listing()
        rows = [{k: col[i].as_py() for k, col in parts.items()} for i in range(len(files))]
        keep = self._prune(parts, len(files), pushdowns.filter)
        items = [(files[i], rows[i]) for i in keep if not _done(files[i], pushdowns)]
        items = self._shuffled(items)
        sizes = [self.estimate(entry)[1] for entry, _ in items]
        return [self._task(group, pushdowns) for group in group_files(items, sizes, parallelism)]

    def _shuffled(self, items: list) -> list:
        """The files in the order ``shuffle=`` asks for (each call is a new run)."""
        self._runs += 1
        if self.shuffle is None:
            return items
        shuffle = self.shuffle
        seed = shuffle.get_seed(self._runs - 1) if isinstance(shuffle, FileShuffleConfig) else None
        items = list(items)
        random.Random(seed).shuffle(items)
        return items

    def _prune(self, parts: dict, n: int, expr) -> list[int]:
        if expr is None or not parts:
            return list(range(n))
        table = pa.table({**parts, "__index": pa.array(range(n), pa.int64())})
        try:
            return table.filter(expr).column("__index").to_pylist()
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, KeyError, TypeError):
            return list(range(n))  # the filter needs data columns: prune nothing

    def _task(self, group: list, pushdowns: Pushdowns) -> ReadTask:
        ests = [self.estimate(entry) for entry, _ in group]
        known = [r for r, _ in ests if r is not None]
        rows = sum(known) if len(known) == len(ests) else None
        size = sum(b for _, b in ests)
        first = group[0][0].path
        desc = first if len(group) == 1 else f"{len(group)} files from {first}"
        return ReadTask(partial(self._read_group, group, pushdowns), rows, size, desc,
                        tuple(Piece(entry.path) for entry, _ in group))

    def _read_group(self, group: list, pushdowns: Pushdowns) -> Iterator[pa.Table]:
        return limit_tables(self._tables(group, pushdowns), pushdowns.limit)

    def _tables(self, group: list, pushdowns: Pushdowns) -> Iterator[pa.Table]:
        fs = self.fs
        for entry, values in group:
            tables = iter(self.read_file(fs, entry, pushdowns))
            while True:
                try:
                    table = next(tables)
                except StopIteration:
                    break
                except FileReadError as exc:
                    if self.on_error != "skip":
                        raise
                    yield skipped(entry.path, exc)
                    break
                except Exception as exc:
                    error = FileReadError(self.who, entry.path, exc, self.error_hint)
                    if self.on_error != "skip":
                        raise error from exc
                    yield skipped(entry.path, error)
                    break
                table = add_constant_columns(table, values, self.listing()[2], entry.path,
                                             self.include_paths)
                yield apply_pushdowns(table, pushdowns)

    error_hint = "check that the file is complete and in the expected format"

    def read_file(self, fs, entry: FileEntry, pushdowns: Pushdowns) -> Iterator[pa.Table]:
        """Yield the tables of one file (pushdowns are applied afterwards)."""
        raise NotImplementedError


def _partitioning(partitioning, who: str) -> Partitioning | None:
    """``partitioning=`` as a :class:`Partitioning` or None (``"hive"`` stands for
    ``Partitioning("hive")``; Ray's own ``Partitioning`` is converted).

    >>> _partitioning("hive", "read_csv").style, _partitioning(None, "read_csv")
    ('hive', None)
    >>> _partitioning("dirs", "read_csv")
    Traceback (most recent call last):
    ...
    ValueError: read_csv: partitioning='dirs'; expected 'hive', None or streambatch.Partitioning(style, base_dir=, field_names=, field_types=)
    """
    if partitioning is None or isinstance(partitioning, Partitioning):
        return partitioning
    if partitioning == "hive":
        return Partitioning("hive")
    if type(partitioning).__name__ == "Partitioning":  # Ray's own: same fields
        return Partitioning(str(getattr(partitioning.style, "value", partitioning.style)),
                            partitioning.base_dir or None, partitioning.field_names,
                            partitioning.field_types or None)
    raise ValueError(f"{who}: partitioning={partitioning!r}; expected 'hive', None or "
                     f"streambatch.Partitioning(style, base_dir=, field_names=, field_types=)")


def _shuffle(shuffle, who: str) -> str | FileShuffleConfig | None:
    if shuffle is None or shuffle == "files" or isinstance(shuffle, FileShuffleConfig):
        return shuffle
    raise ValueError(f"{who}: shuffle={shuffle!r}; expected None, 'files' or "
                     f"streambatch.FileShuffleConfig(seed=...)")


def _extensions(exts, who: str) -> tuple[str, ...] | None:
    if exts is None:
        return None
    exts = [exts] if isinstance(exts, str) else exts
    if not isinstance(exts, (list, tuple)) or not exts or not all(isinstance(e, str) and e.strip(".")
                                                                   for e in exts):
        raise ValueError(f"{who}: file_extensions={exts!r}; expected a non-empty list of "
                         f"extensions such as ['csv', 'csv.gz']")
    return tuple(e.lstrip(".") for e in exts)


def _typed_partition(key: str, values: list, typ, who: str) -> pa.Array:
    """A partition column: of ``typ`` (a field_types entry), else inferred.

    >>> _typed_partition("k", ["1", "2"], str, "read_csv").to_pylist()
    ['1', '2']
    >>> _typed_partition("ok", ["true", None], bool, "read_csv").to_pylist()
    [True, None]
    """
    if typ is None:
        return infer_partition_value(values)
    try:
        return pa.array([None if v is None else cast_partition_value(v, typ) for v in values],
                        PARTITION_TYPES[typ])
    except (ValueError, TypeError):
        bad = next(v for v in values if v is not None and _fails(typ, v))
        raise ValueError(f"{who}: partition value {bad!r} of {key!r} is not of type "
                         f"{typ.__name__} (Partitioning field_types)") from None


def _fails(typ, value) -> bool:
    try:
        typ(value)
        return False
    except (ValueError, TypeError):
        return True


def _done(entry: FileEntry, pushdowns: Pushdowns) -> bool:
    """True when a resumed write has this whole file's rows already."""
    done = pushdowns.done
    return done is not None and done.covers(Piece(entry.path))


def skipped(path: str, error: BaseException) -> SkippedInput:
    """The :class:`SkippedInput` for a file that failed under ``on_error="skip"`` (rows
    the file yielded before the error have been passed on already).

    >>> skipped("/d/a.png", ValueError("truncated")).error
    'ValueError: truncated'
    """
    return SkippedInput(path, f"{type(error).__name__}: {error}")


def add_constant_columns(table: pa.Table, values: dict, parts: dict, path: str,
                         include_paths: bool) -> pa.Table:
    """Append hive partition columns (typed as across all files) and ``path``. A
    partition key the file's data holds too must hold the path's value in every row
    where it is not null (as Ray Data checks); the column then holds the path's value
    (nulls filled), in the data's type.

    >>> t = add_constant_columns(pa.table({"x": [1, 2]}), {"k": 3}, {"k": pa.array([3])}, "/a", True)
    >>> t.to_pylist()
    [{'x': 1, 'k': 3, 'path': '/a'}, {'x': 2, 'k': 3, 'path': '/a'}]
    >>> add_constant_columns(pa.table({"k": [3, 4]}), {"k": 3}, {"k": pa.array([3])}, "/d/k=3/a", False)
    Traceback (most recent call last):
    ...
    ValueError: '/d/k=3/a': column 'k' of the data holds [3, 4] where the path says k=3; rename the column, or read with partitioning=None
    """
    n = table.num_rows
    for key, value in values.items():
        if key not in table.column_names:
            table = table.append_column(key, pa.array([value] * n, parts[key].type))
        elif value is not None and n:
            column = check_partition_column(table.column(key), key, value, path)
            table = table.set_column(table.column_names.index(key), key, column)
    if include_paths and "path" not in table.column_names:
        table = table.append_column("path", pa.array([path] * n, pa.string()))
    return table


def check_partition_column(column, key: str, value, path: str) -> pa.Array:
    """The column of the path's value in the data's type, when the data agrees with it."""
    import pyarrow.compute as pc

    try:
        scalar = pa.scalar(value).cast(column.type)
        same = pc.all(pc.equal(column, scalar)).as_py() is not False
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        same = False
    if same:
        return pa.array([scalar.as_py()] * len(column), column.type)
    held = pc.unique(column).to_pylist()[:5]
    raise ValueError(f"{path!r}: column {key!r} of the data holds {held} where the path "
                     f"says {key}={value}; rename the column, or read with partitioning=None")


ONE_PER_TASK = 256  # up to this many files, each is its own read task


def group_files(items: list, sizes: list[int], parallelism: int,
                one_per_task: int = ONE_PER_TASK) -> list[list]:
    """Contiguous groups of items (files or pieces, with estimated decoded ``sizes``):
    one item per group up to ``one_per_task`` items (so a pipeline streams, and
    the memory budget sees one file at a time), else at least ``parallelism``
    groups of about ``TARGET_TASK_BYTES`` and at most ``MAX_FILES_PER_TASK`` items.

    >>> len(group_files(list(range(200)), [10] * 200, 4))
    200
    >>> len(group_files(list(range(2000)), [10] * 2000, 4))
    32
    >>> len(group_files(list(range(40)), [10] * 40, 2, one_per_task=0))  # small pieces
    2
    """
    if not items:
        return []
    total = sum(sizes)
    groups_wanted = max(parallelism, math.ceil(total / TARGET_TASK_BYTES),
                        math.ceil(len(items) / MAX_FILES_PER_TASK),
                        len(items) if len(items) <= one_per_task else 0)
    groups_wanted = min(len(items), groups_wanted)
    per_group = max(1, total / groups_wanted)
    max_files = math.ceil(len(items) / groups_wanted)
    groups: list[list] = []
    current: list = []
    current_bytes = 0
    for item, size in zip(items, sizes, strict=True):
        if current and (current_bytes + size > per_group * 1.5 or len(current) >= max_files):
            groups.append(current)
            current, current_bytes = [], 0
        current.append(item)
        current_bytes += size
    groups.append(current)
    return groups
