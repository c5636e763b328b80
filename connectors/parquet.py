"""The parquet source: lazy footers, row-group splitting, projection / filter / limit
pushdown, hive partitions and schema unification (parquet_schema.py). The sink is in
parquet_sink.py."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from streambatch.connectors.datasource import Piece, Pushdowns, ReadTask, limit_tables
from streambatch.connectors.file_based import (
    ONE_PER_TASK,
    FileEntry,
    FileReadError,
    FileSource,
    check_partition_column,
    group_files,
    skipped,
)
from streambatch.connectors.lazy_pandas import import_without_pandas
from streambatch.connectors.parquet_schema import (
    SchemaMismatchError,
    as_dataset_tensors,
    check_file_schema,
    check_file_values,
    column_origins,
    data_schema_of,
    holds_null_type,
    scan_schema,
    unify_schemas,
    varied_tensors,
)
from streambatch.connectors.paths import arrow_filesystem

pads = import_without_pandas("pyarrow.dataset")  # its pandas probe: ~0.5 s of a first batch

EAGER_FOOTERS = 16          # up to this many files, every footer is read before the tasks
SPLIT_BYTES = 64 * 2**20    # files larger than this are split by row group
FOOTER_THREADS = 8
SCAN_BATCH_ROWS = 64 * 1024
# Decoded batches a task's reader keeps ready ahead of its consumer. pyarrow's default,
# 16, held ~40 MiB per task (uncounted reader memory); the I/O is prefetched anyway
# (pre_buffer reads a row group's column chunks in one go).
READAHEAD_BATCHES = 2
SMALL_PIECE_BYTES = 8 * 2**20   # pieces smaller than this (decoded) are read together, as one scan
_POOL: tuple[int, ThreadPoolExecutor] | None = None


def parallel_map(fn, items: list) -> list:
    """``[fn(x) for x in items]`` on a small thread pool kept for the process (footer
    reads are I/O: threads overlap them without paying thread start-up each time).

    >>> parallel_map(abs, [-1, 2, -3])
    [1, 2, 3]
    """
    global _POOL
    if len(items) <= 1:
        return [fn(x) for x in items]
    if _POOL is None or _POOL[0] != os.getpid():  # a forked worker gets a pool of its own
        _POOL = (os.getpid(), ThreadPoolExecutor(FOOTER_THREADS, "streambatch-footers"))
    return list(_POOL[1].map(fn, items))



class ParquetSource(FileSource):
    """Parquet files (a file, directory, glob, list or any fsspec URL).

    Footers are read in parallel when the tasks are made for up to
    ``EAGER_FOOTERS`` files (and for every file over ``SPLIT_BYTES``, which
    is split by row group); beyond that each file's footer is read by its own
    read task (overlapping with reading), so thousands of files start producing
    output at once. Row groups that a filter's statistics rule out are dropped
    once, where the footer is read. A projected or filtered read of small pieces
    groups them into a few tasks, each one pyarrow scan over its files (read
    ahead across files, decoded on pyarrow's threads): the per-file fixed costs
    would otherwise dominate such a read.
    ``key=value`` directories become partition columns, and files whose
    partition values fail the filter are never opened. Schemas of the files
    are unified (missing columns read as nulls, integers widen); conflicting
    types raise :class:`SchemaMismatchError`; pass ``schema=`` to decide.

    >>> import tempfile, os
    >>> d = tempfile.mkdtemp(); pq.write_table(pa.table({"a": [1, 2, 3]}), os.path.join(d, "x.parquet"))
    >>> src = ParquetSource(d)
    >>> [t["a"].to_pylist() for task in src.read_tasks(1, Pushdowns(limit=2)) for t in task()]
    [[1, 2]]
    """

    name = "Parquet"
    who = "read_parquet"
    suffixes = (".parquet", ".parq", ".pq")
    error_hint = "the file is not a complete parquet file"

    def __init__(self, paths, *, schema: pa.Schema | None = None, **kwargs) -> None:
        super().__init__(paths, **kwargs)
        self.user_schema = schema
        self._footers: dict[str, pq.FileMetaData] | None = None
        self._fragments: dict = {}  # path -> fragment with its footer read (planning side)
        self._fragments_pid = os.getpid()
        self._schema: pa.Schema | None = None
        self._schemas_ok: list[pa.Schema] = []  # file schemas that passed check_file_schema

    # ---- metadata -----------------------------------------------------------------
    def footers(self, parallelism: int = 1) -> dict[str, pq.FileMetaData]:
        """Footers read before the tasks (all files when few, else the first and the big ones)."""
        if self._footers is None:
            fs, files, parts = self.listing()
            wanted = [(i, f) for i, f in enumerate(files)
                      if len(files) <= EAGER_FOOTERS or i == 0 or f.size > SPLIT_BYTES]
            arrow_fs = arrow_filesystem(fs)
            fmt = pads.ParquetFileFormat()

            def read(item):
                index, entry = item
                expr = _partition_expr({k: col[index].as_py() for k, col in parts.items()}, parts)
                try:
                    fragment = fmt.make_fragment(entry.path, filesystem=arrow_fs,
                                                 partition_expression=expr)
                    fragment.ensure_complete_metadata()
                    return entry.path, fragment
                except Exception as exc:
                    if self.on_error == "skip":  # its task reports it to the dead letters
                        return entry.path, None
                    raise FileReadError(self.who, entry.path, exc, self.error_hint) from exc

            found = parallel_map(read, wanted)
            asked = {i for i, _ in wanted}
            found += self._until_typed(found, [(i, f) for i, f in enumerate(files)
                                               if i not in asked], read)
            if self.on_error == "skip" and not any(f for _, f in found):
                found = next(([r] for r in map(read, enumerate(files)) if r[1]), [])
            self._fragments = {p: f for p, f in found if f is not None}
            self._footers = {p: f.metadata for p, f in self._fragments.items()}
            self._fragments_pid = os.getpid()
        return self._footers

    @staticmethod
    def _until_typed(found: list, rest: list, read) -> list:
        """More footers, while the schema of those read so far has a column (or a
        nested field) of Arrow's null type: the first file's values there were all
        null, and a later file's real type was refused as wider than the dataset's
        (a directory of more than EAGER_FOOTERS files whose first had a column of
        nulls could not be read). Rounds of EAGER_FOOTERS, then twice as many."""
        more: list = []
        size = EAGER_FOOTERS
        while rest and any(holds_null_type(field.type) for field in unify_schemas(
                [(p, f.physical_schema) for p, f in found + more if f is not None])):
            more += parallel_map(read, rest[:size])
            rest, size = rest[size:], size * 2
        return more

    def schema(self) -> pa.Schema:
        """The unified schema of the files read so far, plus partition columns."""
        if self._schema is None:
            _, files, parts = self.listing()
            if self.user_schema is not None:
                data = self.user_schema
            else:
                self.footers()
                data = data_schema_of(self._fragments)
            fields = list(data) + [pa.field(k, v.type) for k, v in parts.items()
                                   if k not in data.names]
            if self.include_paths and "path" not in data.names:
                fields.append(pa.field("path", pa.string()))
            self._schema = pa.schema(fields, metadata=data.metadata)
        return self._schema

    def _data_schema(self) -> pa.Schema:
        schema = self.schema()
        return pa.schema([f for f in schema if not (self.include_paths and f.name == "path"
                                                      and "path" not in self._file_names())])

    def _file_names(self) -> set:
        return set(self.user_schema.names) if self.user_schema is not None else {
            n for f in (self.footers(), self._fragments)[1].values()
            for n in f.physical_schema.names}

    # ---- tasks ----------------------------------------------------------------------
    def read_tasks(self, parallelism: int, pushdowns: Pushdowns) -> list[ReadTask]:
        """Files (or row groups of split files) grouped into tasks with row/byte estimates.

        Row groups that the filter's statistics rule out are dropped here, once,
        from the footers read while planning; the tasks read only the survivors
        (with the footer already parsed) and do not prune again.
        """
        _, files, parts = self.listing()
        footers, schema = self.footers(), self.schema()
        self._check_columns(pushdowns.columns, schema)
        keep = self._prune(parts, len(files), pushdowns.filter)
        names = list(parts)
        ratio = None
        split_all = len(keep) < parallelism
        # (file, partition values, row groups (None: all), rows (None: unknown), bytes)
        pieces: list[tuple[FileEntry, dict, list[int] | None, int | None, int]] = []
        sizes: list[int] = []
        already = pushdowns.done
        for i in keep:
            entry, meta = files[i], footers.get(files[i].path)
            if meta is not None and meta.num_rows == 0:
                continue  # no rows (e.g. an empty write's schema file): nothing to read
            done = already.remaining(Piece(entry.path)) if already else None
            if done == []:
                continue  # a resumed write has every row group of this file already
            if done and done != [Piece(entry.path)] and meta is None:
                meta = self._footer_now(i)  # some row groups are done: which are left?
            values = {k: parts[k][i].as_py() for k in names}
            if meta is None:  # footer read by the task
                if ratio is None:
                    ratio = _decoded_ratio(footers, {f.path: f.size for f in files})
                size = int(entry.size * ratio * _column_share(schema, pushdowns))
                pieces.append((entry, values, None, None, size))
                sizes.append(size)
                continue
            groups = self._surviving_row_groups(entry.path, pushdowns.filter)
            if groups == []:
                continue  # statistics rule out every row group: the file is never read again
            groups = list(groups if groups is not None else range(meta.num_row_groups))
            if already and done is not None:
                groups = [rg for rg in groups if not already.covers(Piece(entry.path, rg, rg + 1))]
                if not groups:
                    continue
            pruned = len(groups) < meta.num_row_groups
            estimates = _row_group_sizes(meta, groups, pushdowns.columns)
            if meta.num_row_groups > 1 and (split_all or entry.size > SPLIT_BYTES):
                for rg, (rows, size) in zip(groups, estimates, strict=True):
                    pieces.append((entry, values, [rg], rows, size))
                    sizes.append(size)
                continue
            rows, size = sum(e[0] for e in estimates), sum(e[1] for e in estimates)
            pieces.append((entry, values, list(groups) if pruned else None, rows, size))
            sizes.append(size)
        pushed = pushdowns.columns is not None or pushdowns.filter is not None
        small = pushed and not pushdowns.per_piece and bool(sizes) and \
            sorted(sizes)[len(sizes) // 2] < SMALL_PIECE_BYTES
        if small and self.parallelism is None:
            # Each group is one pyarrow scan decoding on pyarrow's own threads: one per CPU
            # (half the default two per CPU) keeps every core busy, and every extra scan
            # pays its own start-up and tail (~10% of a 2 GB pushed-down read).
            parallelism = max(1, parallelism // 2)
        tasks = group_files(pieces, sizes, parallelism, one_per_task=0 if small else ONE_PER_TASK)
        return [self._parquet_task(group, pushdowns) for group in tasks]

    def _check_columns(self, columns, schema: pa.Schema) -> None:
        """Refuse, before any task runs, a projection naming columns the files lack."""
        missing = [c for c in columns or () if c not in schema.names]
        if missing:
            where = "the schema= given" if self.user_schema is not None else \
                f"the dataset (schema read from {self._first_file()!r})"
            raise KeyError(f"read_parquet: column(s) {missing} not found in {where}; "
                           f"available columns: {schema.names}")

    def _surviving_row_groups(self, path: str, expr) -> list[int] | None:
        """Row groups whose statistics may hold rows passing ``expr`` (None: unknown)."""
        fragment = self._fragments.get(path)
        if expr is None or fragment is None:
            return None
        try:
            return [rg.id for rg in fragment.subset(filter=expr, schema=self.schema()).row_groups]
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, TypeError):
            return None

    def _parquet_task(self, group: list, pushdowns: Pushdowns) -> ReadTask:
        rows = None if any(p[3] is None for p in group) else sum(p[3] for p in group)
        size = sum(p[4] for p in group)
        first = group[0]
        desc = first[0].path + (f" row group {first[2][0]}" if first[2] else "")
        if len(group) > 1:
            desc = f"{len(group)} pieces from {desc}"
        pieces = tuple(piece for p in group for piece in _pieces_of(p[0].path, p[2]))
        return ReadTask(_ParquetRead(self, [p[:3] for p in group], pushdowns), rows, size, desc,
                        pieces)

    def _footer_now(self, index: int) -> pq.FileMetaData:
        """Read one file's footer while planning (a resumed write needs its row groups)."""
        fs, files, parts = self.listing()
        entry = files[index]
        expr = _partition_expr({k: col[index].as_py() for k, col in parts.items()}, parts)
        try:
            fragment = pads.ParquetFileFormat().make_fragment(
                entry.path, filesystem=arrow_filesystem(fs), partition_expression=expr)
            fragment.ensure_complete_metadata()
        except Exception as exc:
            raise FileReadError(self.who, entry.path, exc, self.error_hint) from exc
        self._fragments[entry.path] = fragment
        self.footers()[entry.path] = fragment.metadata
        return fragment.metadata

    def piece_fragment(self, arrow_fs, entry, values: dict, row_groups, pushdowns: Pushdowns):
        """The fragment of one file (or some of its row groups) to scan, its schema checked
        and row groups pruned by statistics; None when no row group can match."""
        schema = self.schema()
        fragment = self._fragment(arrow_fs, entry, values, row_groups)
        known = entry.path in self._fragments  # footer read while planning, pruned there
        self._check_schema(fragment, entry.path)
        _check_stored_keys(fragment, entry.path, values, arrow_fs)
        if pushdowns.filter is not None and (not known or row_groups is None):
            # drop row groups whose statistics rule them out (not yet done while planning)
            fragment = fragment.subset(filter=pushdowns.filter, schema=schema)
            if not fragment.row_groups:
                return None
        return fragment

    def read_piece(self, arrow_fs, entry, values: dict, row_groups, pushdowns: Pushdowns):
        """Yield the tables of one file (or some of its row groups), pushdowns applied."""
        fragment = self.piece_fragment(arrow_fs, entry, values, row_groups, pushdowns)
        if fragment is None:
            return
        cols, scan_cols = self._scan_columns(pushdowns, fragment)
        batches = fragment.to_batches(schema=scan_schema(self.schema(), fragment),
                                      columns=scan_cols,
                                      filter=pushdowns.filter, batch_size=SCAN_BATCH_ROWS,
                                      use_threads=False, batch_readahead=READAHEAD_BATCHES)
        for batch in batches:
            yield self._finish_batch(batch, cols, scan_cols, entry.path)

    def scan_pieces(self, arrow_fs, pieces: list, pushdowns: Pushdowns):
        """Yield ``(path, table)`` for several small pieces read as one pyarrow dataset
        scan: pyarrow reads the footers it lacks and the data ahead across files and
        decodes on its threads. Each file's schema is checked once its footer is in
        (the scan caches it in the fragment), before any of its rows are passed on."""
        fragments = [self._fragment(arrow_fs, entry, values, row_groups)
                     for entry, values, row_groups in pieces]
        by_path = {f.path: entry.path for f, (entry, _, _) in zip(fragments, pieces, strict=True)}
        values_of = {entry.path: values for entry, values, _ in pieces}
        cols = list(pushdowns.columns) if pushdowns.columns is not None else self.schema().names
        scan_cols = [c for c in cols if not (c == "path" and self.include_paths
                                              and c not in self._file_names())]
        dataset = pads.FileSystemDataset(fragments, self.schema(), pads.ParquetFileFormat(),
                                         arrow_fs)
        scanner = dataset.scanner(columns=scan_cols, filter=pushdowns.filter,
                                  batch_size=SCAN_BATCH_ROWS, use_threads=True)
        checked = set()
        for tagged in scanner.scan_batches():
            path = by_path.get(tagged.fragment.path, tagged.fragment.path)
            if path not in checked:
                self._check_schema(tagged.fragment, path)
                _check_stored_keys(tagged.fragment, path, values_of.get(path, {}), arrow_fs)
                checked.add(path)
            yield path, self._finish_batch(tagged.record_batch, cols, scan_cols, path)

    def find_bad_piece(self, arrow_fs, pieces: list, pushdowns: Pushdowns, error: Exception):
        """Raise the error of the first piece that fails on its own (after a shared scan
        failed), naming its file; else a FileReadError naming the pieces' first file."""
        for entry, values, row_groups in pieces:
            try:
                for _ in self.read_piece(arrow_fs, entry, values, row_groups, pushdowns):
                    pass
            except (FileReadError, SchemaMismatchError):
                raise
            except (OSError, pa.ArrowException) as exc:
                mismatch = _cast_mismatch(self, arrow_fs, (entry, values, row_groups), pushdowns, exc)
                if mismatch is not None:
                    raise mismatch from exc
                raise FileReadError(self.who, entry.path, exc, self.error_hint) from exc
        where = f"{pieces[0][0].path} (or one of {len(pieces) - 1} more files read with it)"
        raise FileReadError(self.who, where, error, self.error_hint) from error

    def _fragment(self, arrow_fs, entry, values: dict, row_groups):
        """The file's fragment: the one planning read (no I/O), else a new one whose
        footer is read when it is first scanned."""
        same_process = self._fragments_pid == os.getpid() or isinstance(arrow_fs, pafs.LocalFileSystem)
        known = self._fragments.get(entry.path) if same_process else None
        if known is not None:
            return known.subset(row_group_ids=row_groups) if row_groups else known
        return pads.ParquetFileFormat().make_fragment(
            entry.path, filesystem=arrow_fs, row_groups=row_groups,
            partition_expression=_partition_expr(values, self.listing()[2]))

    def _scan_columns(self, pushdowns: Pushdowns, fragment) -> tuple[list, list]:
        cols = list(pushdowns.columns) if pushdowns.columns is not None else self.schema().names
        scan_cols = [c for c in cols if not (c == "path" and self.include_paths
                                              and c not in fragment.physical_schema.names)]
        return cols, scan_cols

    def _finish_batch(self, batch: pa.RecordBatch, cols: list, scan_cols: list, path: str):
        table = as_dataset_tensors(pa.Table.from_batches([batch]), self.schema())
        metadata = self.schema().metadata
        if metadata:  # e.g. pandas dtypes (nullable ints, time zones)
            table = table.replace_schema_metadata(metadata)
        if len(scan_cols) < len(cols):
            table = table.append_column("path", pa.array([path] * table.num_rows,
                                                         pa.string())).select(cols)
        return table

    def _first_file(self) -> str:
        return next(iter(self.footers()), "")

    def _check_schema(self, fragment, path: str) -> None:
        """:func:`check_file_schema` (the file's types read as the dataset's without a
        value changing), once per distinct file schema (files of one dataset mostly
        share theirs; the check is Python work per column); with ``schema=`` given,
        :func:`check_file_values` (its statistics fit the given types)."""
        physical = fragment.physical_schema
        if any(physical.equals(ok) for ok in self._schemas_ok) or \
                fragment.metadata.num_rows == 0:  # no rows: no value to read or change
            return
        if self.user_schema is not None:
            if not check_file_values(fragment, self.schema(), path):  # nothing to check by value
                self._schemas_ok.append(physical)
            return
        files = [(p, f.physical_schema) for p, f in self._fragments.items()]
        check_file_schema(physical, self.schema(), path,
                          column_origins(self.schema(), files) or self._first_file())
        self._schemas_ok.append(physical)


class _ParquetRead:
    """The read function of one task (a picklable object, not a closure)."""

    def __init__(self, source: ParquetSource, pieces: list, pushdowns: Pushdowns) -> None:
        self.source, self.pieces, self.pushdowns = source, pieces, pushdowns

    def __call__(self):
        return limit_tables(self._tables(), self.pushdowns.limit)

    def _tables(self):
        arrow_fs = arrow_filesystem(self.source.fs)
        skip = self.source.on_error == "skip"  # (skip: piece by piece, to pass the rest
        # on; tensor shapes that differ by file: each file scanned as its own shapes)
        if len(self.pieces) > 1 and not skip and not varied_tensors(self.source.schema()):
            yield from self._scan_together(arrow_fs)
            return
        for entry, values, row_groups in self.pieces:
            try:
                yield from self.source.read_piece(arrow_fs, entry, values, row_groups, self.pushdowns)
            except SchemaMismatchError:
                raise  # not bad data: schema= decides how the files are read
            except (OSError, pa.ArrowException) as exc:
                mismatch = _cast_mismatch(self.source, arrow_fs, (entry, values, row_groups),
                                          self.pushdowns, exc)
                if mismatch is not None:
                    raise mismatch from exc  # as above: a value schema= cannot hold
                error = exc if isinstance(exc, FileReadError) else FileReadError(
                    self.source.who, entry.path, exc, self.source.error_hint)
                if not skip:
                    if error is exc:
                        raise
                    raise error from exc
                yield skipped(entry.path, error)

    def _scan_together(self, arrow_fs):
        try:
            for _, table in self.source.scan_pieces(arrow_fs, self.pieces, self.pushdowns):
                yield table
        except (FileReadError, SchemaMismatchError):
            raise
        except (OSError, pa.ArrowException) as exc:
            self.source.find_bad_piece(arrow_fs, self.pieces, self.pushdowns, exc)


def _cast_mismatch(source: ParquetSource, arrow_fs, piece: tuple, pushdowns: Pushdowns,
                   error: Exception) -> SchemaMismatchError | None:
    """When ``error`` (from reading ``piece``: entry, partition values, row groups) is a
    cast that failed, of a column of the file to the type ``schema=`` (or the dataset
    schema) reads it as (a value it cannot hold, e.g. 1.5 as int64, and statistics did
    not show it), the SchemaMismatchError naming the file, the column, both types and
    the value; else None (the file itself is bad)."""
    if not isinstance(error, (pa.ArrowInvalid, pa.ArrowNotImplementedError)):
        return None
    entry, values, row_groups = piece
    schema = source.schema()
    try:
        fragment = source._fragment(arrow_fs, entry, values, row_groups)
        physical = fragment.physical_schema
    except (OSError, pa.ArrowException):
        return None
    wanted = set(pushdowns.columns) if pushdowns.columns is not None else None
    for field in physical:
        if (field.name not in schema.names or (wanted is not None and field.name not in wanted)
                or field.type == schema.field(field.name).type):
            continue
        want = schema.field(field.name).type
        try:
            column = fragment.to_table(columns=[field.name], schema=physical).column(0)
        except (OSError, pa.ArrowException):
            return None
        value = _first_misfit(column, want)
        if value is _FITS:
            continue
        given = "schema=" if source.user_schema is not None else "the dataset schema"
        return SchemaMismatchError(
            f"{source.who}: column {field.name!r} is {field.type} in {entry.path!r} and holds "
            f"{value[0]!r}, which {given} reads as {want} and cannot hold ({value[1]}); pass "
            f"schema= with {field.name!r} as a type that holds every value of the files "
            f"({field.type} holds this file's; string holds any), or fix the file",
            field.name, (entry.path, "schema="), (str(field.type), str(want)))
    return None


_FITS = object()


def _first_misfit(column: pa.ChunkedArray, want: pa.DataType):
    """``(value, why)`` of the first value that a safe cast to ``want`` refuses (found by
    halving the failing chunk), else ``_FITS``.

    >>> _first_misfit(pa.chunked_array([[1.0, 2.0], [3.0, 1.5, 4.0]]), pa.int64())[0]
    1.5
    >>> _first_misfit(pa.chunked_array([[1.0]]), pa.int64()) is _FITS
    True
    """
    casting = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError)
    for chunk in column.chunks:
        try:
            chunk.cast(want)
            continue
        except casting as exc:
            why, lo, hi = exc, 0, len(chunk)
        while hi - lo > 1:  # chunk[lo:hi] holds a value the cast refuses
            mid = (lo + hi) // 2
            try:
                chunk.slice(lo, mid - lo).cast(want)
                lo = mid
            except casting as exc:
                why, hi = exc, mid
        return chunk[lo].as_py(), why
    return _FITS


def _pieces_of(path: str, row_groups) -> list[Piece]:
    """The file's row groups as pieces: runs of consecutive groups (all: one piece).

    >>> [(p.start, p.stop) for p in _pieces_of("a", [0, 1, 3])], _pieces_of("a", None)
    ([(0, 2), (3, 4)], [Piece(item='a', start=0, stop=None)])
    """
    if row_groups is None:
        return [Piece(path)]
    out: list[Piece] = []
    for rg in row_groups:
        if out and out[-1].stop == rg:
            out[-1] = Piece(path, out[-1].start, rg + 1)
        else:
            out.append(Piece(path, rg, rg + 1))
    return out


def _check_stored_keys(fragment, path: str, values: dict, arrow_fs) -> None:
    """A Hive key the file also stores must hold the path's value where not null (as
    the other file readers check, :func:`check_partition_column`): the path's value is
    the one read, filtered and pruned on, so a file storing p=[5, 6] under p=1/ read as
    [1, 1] silently. A ValueError naming the file, the column and both values."""
    stored = [k for k in values if values[k] is not None and k in fragment.physical_schema.names]
    if not stored:
        return
    table = pads.ParquetFileFormat().make_fragment(path, filesystem=arrow_fs).to_table(
        columns=stored)
    for key in stored:
        check_partition_column(table.column(key), key, values[key], path)


def _partition_expr(values: dict, parts: dict):
    expr = None
    for key, value in values.items():
        term = (pc.field(key).is_null() if value is None
                else pc.field(key) == pa.scalar(value, parts[key].type))
        expr = term if expr is None else expr & term
    return expr


def _decoded_ratio(footers: dict, sizes: dict) -> float:
    disk = sum(sizes.get(p, 0) for p in footers)
    decoded = sum(m.row_group(i).total_byte_size for m in footers.values() for i in range(m.num_row_groups))
    return decoded / disk if disk and decoded else 1.0


def _column_share(schema: pa.Schema, pushdowns: Pushdowns) -> float:
    if pushdowns.columns is None or not len(schema):
        return 1.0
    return max(1, len(pushdowns.columns)) / len(schema)


def _row_group_sizes(meta: pq.FileMetaData, groups, columns) -> list[tuple[int, int]]:
    """(rows, decoded bytes of ``columns``) of each row group in ``groups``."""
    if columns is None:
        return [(rg.num_rows, rg.total_byte_size) for rg in map(meta.row_group, groups)]
    wanted = set(columns)
    leaves = [i for i, name in enumerate(_leaf_roots(meta)) if name in wanted]
    out = []
    for rg in map(meta.row_group, groups):
        out.append((rg.num_rows, sum(rg.column(i).total_uncompressed_size for i in leaves)))
    return out


def _leaf_roots(meta: pq.FileMetaData) -> list[str]:
    """The top-level column of each leaf column chunk (``a.b.c`` -> ``a``)."""
    schema = meta.schema
    return [schema.column(i).path.split(".")[0] for i in range(len(schema))]
