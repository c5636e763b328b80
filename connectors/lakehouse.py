"""What the table-format connectors (Delta Lake, Lance, Iceberg) share.

Their reads are Datasources that split a table version into one read task per data
file (or fragment), pinned to the version the driver saw. Their writes are
:class:`TableSink` s, run as a user Datasink is (``ContractJob``): each write task writes
its partition's data files and returns what it wrote; the table's commit, the only step
that makes rows visible, runs once on the driver after every task succeeded
(``on_write_complete``). A failed or retried attempt's files are never in a commit, so a
retry cannot add rows twice, and a failed job commits nothing; the files this job wrote
and did not commit are removed where the format allows (``remove_uncommitted``).

The format packages load only when a read or write runs (``import streambatch`` stays
light), through :func:`require`, whose error names the extra to install.

>>> require("json", "read_delta").__name__
'json'
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterable, Iterator
from types import ModuleType
from typing import Any

import pyarrow as pa
from streambatch.connectors.arrow_types import keeps_fields
from streambatch.connectors.sink_contract import ContractJob, Datasink

from streambatch._dependencies import import_optional

EXTRAS = {"deltalake": "delta", "lance": "lance", "pyiceberg": "iceberg"}


def require(module: str, what: str) -> ModuleType:
    """Import ``module`` or fail with ``pip install 'streambatch[<extra>]'``."""
    return import_optional(module, extra=EXTRAS.get(module.split(".")[0]), what=what)


def wanted_columns(pushed: tuple[str, ...] | None, asked: list[str] | None,
                   schema: pa.Schema, who: str) -> list[str] | None:
    """The columns a read returns: the optimizer's projection, else the user's
    ``columns``, else all (None); an unknown name fails listing the table's columns.

    >>> wanted_columns(None, ["b"], pa.schema([("a", pa.int8()), ("b", pa.int8())]), "r")
    ['b']
    >>> wanted_columns(None, ["z"], pa.schema([("a", pa.int8())]), "read_delta")
    Traceback (most recent call last):
    ...
    ValueError: read_delta: no column 'z' in the table; its columns are ['a']
    """
    columns = list(pushed) if pushed is not None else (list(asked) if asked else None)
    for name in columns or ():
        if name not in schema.names:
            raise ValueError(f"{who}: no column {name!r} in the table; its columns are "
                             f"{schema.names}")
    return columns


DECODED_PER_STORED_BYTE = 2.0  # parquet decodes to about 2-4x its size on disk


def estimated_bytes(stored: int | None, columns: list[str] | None, schema: pa.Schema,
                    factor: float = DECODED_PER_STORED_BYTE) -> int | None:
    """The in-memory size of ``stored`` bytes of a file read for ``columns`` (None: all)
    of ``schema``: ``factor`` times the bytes, times the share of the columns read.

    >>> estimated_bytes(1000, ["a"], pa.schema([("a", pa.int8()), ("b", pa.int8())]))
    1000
    >>> estimated_bytes(None, None, pa.schema([])) is None
    True
    """
    if stored is None:
        return None
    share = 1.0 if columns is None or not len(schema) else max(1, len(columns)) / len(schema)
    return int(stored * factor * share)


def conform(table: pa.Table, schema: pa.Schema, who: str) -> pa.Table:
    """``table`` with exactly ``schema``'s columns, in order and cast to its types; a
    column the table lacks (added to the table later) reads as nulls.

    >>> t = pa.table({"b": ["x"], "a": pa.array([1], pa.int32())})
    >>> conform(t, pa.schema([("a", pa.int64()), ("c", pa.string())]), "r").to_pylist()
    [{'a': 1, 'c': None}]
    """
    columns = []
    for field in schema:
        if field.name not in table.column_names:
            columns.append(pa.nulls(table.num_rows, field.type))
            continue
        columns.append(_cast(table.column(field.name), field.name, field.type, who))
    return pa.Table.from_arrays(columns, schema=schema)


def _cast(column: Any, name: str, kind: pa.DataType, who: str) -> Any:
    try:
        return column if column.type == kind else column.cast(kind)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise TypeError(f"{who}: column {name!r} holds {column.type}, which does not cast to "
                        f"the table's {kind}: {exc}") from None


def plain(kind: pa.DataType) -> pa.DataType:
    """``kind`` without field metadata in nested fields (e.g. an Iceberg table's
    ``PARQUET:field_id`` s, which must not reach a file written for another table).

    >>> inner = pa.field("element", pa.int64(), metadata={"PARQUET:field_id": "4"})
    >>> plain(pa.list_(inner)).value_field.metadata is None
    True
    """
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        value = kind.value_field
        item = pa.field(value.name, plain(value.type), value.nullable)
        return pa.list_(item) if pa.types.is_list(kind) else pa.large_list(item)
    if pa.types.is_struct(kind):
        return pa.struct([pa.field(f.name, plain(f.type), f.nullable) for f in kind])
    if pa.types.is_map(kind):
        return pa.map_(plain(kind.key_type), plain(kind.item_type))
    return kind


def normalized(table: pa.Table, target: pa.Schema | None, who: str) -> pa.Table:
    """A block as a data file holds it: the columns ``target`` (the table's schema) has,
    cast to its types; other columns as they are, except all-null ones of type null,
    left out (a file without a column reads as nulls); no field metadata.

    A struct with a field the table's lacks fails naming it: the cast would drop it.

    >>> t = pa.table({"a": pa.array([1], pa.int32()), "n": pa.nulls(1), "b": ["x"]})
    >>> normalized(t, pa.schema([("a", pa.int64())]), "w").schema
    a: int64
    b: string
    >>> normalized(pa.table({"s": [{"k": 1, "extra": 2}]}),
    ...            pa.schema([("s", pa.struct([("k", pa.int64())]))]), "w")
    Traceback (most recent call last):
    ...
    ValueError: w: column 's' holds struct<k: int64, extra: int64>, with nested fields the table's struct<k: int64> lacks; writing it would drop their values: add them to the table's schema first, or leave them out of the rows
    """
    if target is not None:
        refuse_dropped_fields(table, target, who, "add them to the table's schema first, or "
                              "leave them out of the rows")
    names, columns = [], []
    for field in table.schema:
        column = table.column(field.name)
        if target is not None and field.name in target.names:
            column = _cast(column, field.name, target.field(field.name).type, who)
        elif pa.types.is_null(field.type):
            continue
        names.append(field.name)
        columns.append(_cast(column, field.name, plain(column.type), who))
    return pa.Table.from_arrays(columns, names=names)


def refuse_extra(table: pa.Table, target: pa.Schema, who: str, hint: str) -> None:
    """Fail naming the columns of ``table`` that the table's ``target`` schema lacks
    (all-null ones excepted), rather than dropping their values.

    >>> refuse_extra(pa.table({"a": [1], "z": [2]}), pa.schema([("a", pa.int8())]), "w", "h")
    Traceback (most recent call last):
    ...
    ValueError: w: column(s) ['z'] are not in the table (its columns: ['a']); h
    """
    extra = [f.name for f in table.schema if f.name not in target.names
             and not pa.types.is_null(f.type)]
    if extra:
        raise ValueError(f"{who}: column(s) {extra} are not in the table (its columns: "
                         f"{target.names}); {hint}")


def refuse_dropped_fields(table: pa.Table, target: pa.Schema, who: str, hint: str) -> None:
    """Fail naming a column of ``table`` whose struct has fields that ``target``'s type
    for it lacks: Arrow's cast would leave them out, silently (``keeps_fields``).

    >>> refuse_dropped_fields(pa.table({"s": [{"k": 1, "e": 2}]}),
    ...                       pa.schema([("s", pa.struct([("k", pa.int64())]))]), "w", "h")
    Traceback (most recent call last):
    ...
    ValueError: w: column 's' holds struct<k: int64, e: int64>, with nested fields the table's struct<k: int64> lacks; writing it would drop their values: h
    """
    for field in table.schema:
        if field.name in target.names:
            want = target.field(field.name).type
            if not keeps_fields(field.type, want):
                raise ValueError(f"{who}: column {field.name!r} holds {field.type}, with nested "
                                 f"fields the table's {want} lacks; writing it would drop "
                                 f"their values: {hint}")


def concrete(schema: pa.Schema) -> pa.Schema:
    """``schema`` with columns that were null everywhere typed as strings (table formats
    have no null type).

    >>> concrete(pa.schema([("a", pa.null())]))
    a: string
    """
    return pa.schema([f.with_type(pa.string()) if pa.types.is_null(f.type) else f
                      for f in schema])


def write_parquet_files(blocks: Iterable[pa.Table], target: pa.Schema | None,
                        open_file: Callable[[int], tuple[str, Any]], who: str) -> list[dict]:
    """Write blocks to parquet files (``open_file(i)`` gives file ``i``'s name and a
    writable stream), starting a new file when a block's columns or types differ from
    the current file's; return ``{"path", "rows", "bytes", "schema"}`` per file, the
    schema also naming the all-null columns the file leaves out (type null)."""
    import pyarrow.parquet as pq

    files: list[dict] = []
    writer = stream = None
    try:
        for block in non_empty(blocks):
            table = normalized(block, target, who)
            if writer is None or table.schema != writer.schema:
                if writer is not None:
                    _close(writer, stream, files[-1])
                name, stream = open_file(len(files))
                writer = pq.ParquetWriter(stream, table.schema)
                files.append({"path": name, "rows": 0, "bytes": 0, "schema": table.schema})
            left_out = [f for f in block.schema if f.name not in table.column_names]
            if left_out:
                files[-1]["schema"] = unified([files[-1]["schema"], pa.schema(left_out)], who)
            writer.write_table(table)
            files[-1]["rows"] += table.num_rows
    finally:
        if writer is not None:
            _close(writer, stream, files[-1])
    return files


def _close(writer: Any, stream: Any, entry: dict) -> None:
    writer.close()
    entry["bytes"] = int(stream.tell())
    stream.close()


def unified(schemas: list[pa.Schema], who: str) -> pa.Schema:
    """One schema for the schemas the write tasks wrote (types promoted as Arrow allows).

    >>> unified([pa.schema([("a", pa.int32())]), pa.schema([("a", pa.int64())])], "w")
    a: int64
    """
    try:
        return pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise TypeError(f"{who}: the write tasks produced schemas with no common type ({exc}); "
                        "cast the columns to one type first (e.g. with map_batches)") from None


def file_stem(job: str, ctx: Any) -> str:
    """``part-<job>-<task>-<attempt>``: the job and task in every data file's name (the
    same for each attempt of the task), and a part unique to this attempt.

    >>> class Ctx: key = "read 3"; task_index = 3
    >>> file_stem("ab12", Ctx()).startswith("part-ab12-") and len(file_stem("ab12", Ctx()))
    35
    """
    key = str(getattr(ctx, "key", "") or getattr(ctx, "task_index", ""))
    return f"part-{job}-{hashlib.sha1(key.encode()).hexdigest()[:16]}-{uuid.uuid4().hex[:8]}"


def non_empty(blocks: Iterable[pa.Table]) -> Iterator[pa.Table]:
    """The blocks that hold rows."""
    return (block for block in blocks if block.num_rows)


class TableSink(Datasink):
    """A table format's sink: data files in tasks, one commit on the driver.

    Subclasses implement ``write`` (returning a dict of what the task wrote with its
    ``"task"`` index, or None for no rows),
    ``on_write_complete`` (the commit) and may implement :meth:`skip_write` (``mode=
    "ignore"`` on an existing table: nothing runs) and ``on_write_failed``."""

    who = "write"

    def __init__(self) -> None:
        self.job = uuid.uuid4().hex[:8]

    def skip_write(self) -> bool:
        """True when the write is to do nothing at all (checked before the job runs)."""
        return False

    def engine_sink(self) -> TableJob:
        """The job the executor runs."""
        return TableJob(self)

    @staticmethod
    def returned(write_result: Any) -> list:
        """The write tasks' returns that hold files (tasks with no rows return None), in
        the order of the partitions (``"task"``), so the table keeps the dataset's order."""
        found = [r for r in write_result.write_returns if r is not None]
        return sorted(found, key=lambda r: r.get("task", 0))


class TableJob(ContractJob):
    """``ContractJob`` that runs nothing when the sink says to skip the write."""

    def run_job(self, execute: Callable, fingerprint: str = "", resume: bool = False) -> None:
        """Skip (``mode="ignore"`` on an existing table) or run as a user Datasink."""
        if resume:
            raise ValueError(f"{getattr(self.sink, 'who', 'write')}: resume=True is only for file outputs "
                             "(write_parquet); a table commits once, at the end")
        if isinstance(self.sink, TableSink) and self.sink.skip_write():
            return None
        return super().run_job(execute, fingerprint, resume)


def remove_uncommitted(directory: str, job: str, keep: set[str], storage: Any = None) -> None:
    """Best effort: delete the files in or below ``directory`` (a URL or path) that this
    job wrote (``part-<job>-*``) and that are not in ``keep`` (base names): attempts that
    failed, or every file of a write that failed."""
    from fsspec.core import url_to_fs

    try:
        fs, root = url_to_fs(directory, **(storage or {}))
        found = fs.glob(f"{root.rstrip('/')}/part-{job}-*") + fs.glob(
            f"{root.rstrip('/')}/**/part-{job}-*")  # in hive directories too
        for path in sorted(set(found)):
            if path.rsplit("/", 1)[-1] not in keep:
                fs.rm(path)
    except Exception:  # noqa: S110 - cleanup must never hide the write's own outcome
        pass
