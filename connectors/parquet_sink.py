"""The parquet sink: one file per partition, or per partition-column value (hive
directories), rolled over at a target file size."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from streambatch.connectors.arrow_types import keeps_fields
from streambatch.connectors.datasink import FileDatasink, written
from streambatch.connectors.paths import HIVE_NULL


class ParquetSink(FileDatasink):
    """Write parquet files; ``_SUCCESS`` lists them when all succeeded.

    ``mode``: "append" (the default, as Ray's: add files; the earlier ones stay
    listed), "error" (the directory must hold no data files), "ignore" (skip the write
    when it holds the data files of a complete output; an interrupted write is
    refused, as append refuses it), "overwrite"
    (replace an earlier streambatch output: only the files its manifest records go;
    a directory holding files no streambatch write recorded is refused, naming
    them). ``partition_cols`` writes
    hive directories ``col=value/`` (the columns leave the files);
    ``target_file_bytes`` starts a new file once a file reaches that size on disk;
    ``num_rows_per_file`` cuts each partition's rows into files of that many rows.

    >>> import tempfile, streambatch as sb
    >>> out = tempfile.mkdtemp() + "/out"
    >>> written = sb.from_items([{"k": 1, "v": 2.0}, {"k": 2, "v": 3.0}]).write_parquet(
    ...     out, partition_cols=["k"])
    >>> sorted(f["path"].split("/")[-2] for f in written)
    ['k=1', 'k=2']
    >>> sorted(r["k"] for r in sb.read_parquet(out).take_all())
    [1, 2]
    """

    name = "Parquet"
    suffix = ".parquet"
    resumable = True  # write_parquet(resume=True) finishes an interrupted write

    def __init__(self, path: str, *, partition_cols=None, target_file_bytes: int | None = None,
                 **kwargs) -> None:
        super().__init__(path, **kwargs)
        self.partition_cols = list(partition_cols or [])
        self.target_file_bytes = target_file_bytes

    def write(self, blocks, ctx) -> pa.Table:
        """The partition's rows in parquet files: one, or one per partition-column value,
        rolled over at ``target_file_bytes`` and when a block's schema does not fit the
        open file's (a column that was all nulls in the first block, a new column)."""
        self.use_in_this_process()
        prefix = self.file_prefix(ctx)
        writers: dict[tuple, _RollingWriter] = {}
        seen: pa.Schema | None = None  # the first block's, for an output of no rows
        for table in blocks:
            seen = table.schema if seen is None else seen
            if not table.num_rows:
                continue
            missing = [c for c in self.partition_cols if c not in table.column_names]
            if missing:
                raise KeyError(f"write_parquet: partition_cols {missing} are not columns; the "
                               f"columns are {table.column_names}")
            for key, part in _split_by(table, self.partition_cols):
                if key not in writers:
                    directory = "/".join([self.path] + [f"{c}={_hive_value(v)}" for c, v in
                                                        zip(self.partition_cols, key, strict=True)])
                    writers[key] = _RollingWriter(self, directory, prefix, ctx)
                writers[key].write(part.drop_columns(self.partition_cols))
        result = written([row for w in writers.values() for row in w.close()])
        return result if writers or seen is None else with_schema(result, seen)

    def finalize(self, results: list[pa.Table]) -> list[dict]:
        """As every file sink's; an output that would hold no data file (a write of no
        rows, into a new or overwritten output) gets one file of no rows with the rows'
        schema where a write task saw it, recorded as any file is (so an overwrite
        removes it and a resume keeps it): it reads back as no rows with the columns."""
        schema = next((s for s in map(schema_of, results) if s is not None), None)
        if not self.committed and schema is not None:
            self._commit_schema_file(schema)
        return super().finalize(results)

    def _commit_schema_file(self, schema: pa.Schema) -> None:
        """Write ``part-<job>-schema.parquet`` (no rows) and record it in the manifest."""
        rel, temp = f"part-{self.job}-schema{self.suffix}", f".part-{self.job}-schema.tmp"
        pq.write_table(schema.empty_table(), self.out.full(temp), filesystem=self.arrow_fs)
        size = int(self.fs.size(self.out.full(temp)))
        self.fs.mv(self.out.full(temp), self.out.full(rel))
        entry = {"file": rel, "rows": 0, "bytes": size, "origins": [], "job": self.job}
        self.manifest.append(entry)
        self.committed.append(entry)


SCHEMA_KEY = b"streambatch.schema"  # a write task's result: the schema of its empty blocks


def with_schema(result: pa.Table, schema: pa.Schema) -> pa.Table:
    """A write task's result table carrying ``schema`` (of blocks with no rows) for the
    driver; a schema of no columns is none.

    >>> schema_of(with_schema(written([]), pa.schema([("a", pa.int8())])))
    a: int8
    >>> schema_of(with_schema(written([]), pa.schema([]))) is None
    True
    """
    if not len(schema):
        return result
    return result.replace_schema_metadata({SCHEMA_KEY: schema.serialize().to_pybytes()})


def schema_of(result: pa.Table) -> pa.Schema | None:
    """The schema a write task's result carries (None: it wrote rows, or saw no block)."""
    value = (result.schema.metadata or {}).get(SCHEMA_KEY)
    return None if value is None else pa.ipc.read_schema(pa.py_buffer(value))


def fitted(table: pa.Table, schema: pa.Schema) -> pa.Table | None:
    """``table`` as ``schema`` when every value keeps its meaning (same columns, safe
    casts), else None: it goes to a file of its own instead of being cast.

    >>> fitted(pa.table({"b": [1], "a": ["x"]}), pa.schema([("a", pa.string()), ("b", pa.int64())])).column_names
    ['a', 'b']
    >>> fitted(pa.table({"x": [1.5]}), pa.schema([("x", pa.null())])) is None
    True
    >>> fitted(pa.table({"s": [{"k": 1, "extra": [1, 2]}]}),  # a field more than the file's
    ...        pa.schema([("s", pa.struct([("k", pa.int64())]))])) is None
    True
    """
    if table.schema == schema:
        return table
    if sorted(table.column_names) != sorted(schema.names):
        return None
    if not all(keeps_fields(table.schema.field(n).type, schema.field(n).type)
               for n in schema.names):
        return None
    try:
        return table.select(schema.names).cast(schema, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return None


def _hive_value(value) -> str:
    """A partition value as its directory name's ``col=`` part: null as Hive's marker, a
    string that is the marker itself with its first character escaped (it went to the
    nulls' directory, and the two writers of one file name failed the job).

    >>> _hive_value(None), _hive_value("a/b"), _hive_value(HIVE_NULL)
    ('__HIVE_DEFAULT_PARTITION__', 'a%2Fb', '%5F_HIVE_DEFAULT_PARTITION__')
    """
    from urllib.parse import quote

    if value is None:
        return HIVE_NULL
    text = quote(str(value), safe="")
    return "%5F" + text[1:] if text == HIVE_NULL else text


def _split_by(table: pa.Table, cols: list[str]):
    if not cols:
        yield (), table
        return
    keys = table.select(cols).group_by(cols).aggregate([]).to_pylist()
    for key in keys:
        mask = None
        for c in cols:
            term = pc.is_null(table[c]) if key[c] is None else pc.equal(table[c], key[c])
            mask = term if mask is None else pc.and_(mask, term)
        yield tuple(key[c] for c in cols), table.filter(mask)


class _RollingWriter:
    """Parquet files in one directory, a new one each time ``target_file_bytes`` is reached."""

    def __init__(self, sink: ParquetSink, directory: str, prefix: str, ctx) -> None:
        self.sink, self.directory, self.prefix, self.ctx = sink, directory, prefix, ctx
        self.index = 0
        self.done: list[tuple[str, int, int]] = []  # (path, rows, bytes) of each file closed
        # The open file and its pq.ParquetWriter (pyarrow is untyped); both None between files.
        self.handle: Any = None
        self.writer: Any = None

    def write(self, table: pa.Table) -> None:
        """Add ``table``'s rows, cut into files of ``num_rows_per_file`` rows when set."""
        limit = self.sink.num_rows_per_file
        if not limit:
            self._add(table)
            return
        while table.num_rows:
            room = limit - (self.rows if self.writer is not None else 0)
            self._add(table.slice(0, room))
            table = table.slice(room)

    def _add(self, table: pa.Table) -> None:
        if self.writer is not None:
            fit = fitted(table, self.writer.schema)
            if fit is None:
                self._finish()  # a schema the open file cannot hold: the rest go to a new file
            else:
                table = fit
        if self.writer is None:
            self.sink.fs.makedirs(self.directory, exist_ok=True)
            name = f"{self.prefix}-{self.index:04d}{self.sink.suffix}"
            self.final, self.temp = f"{self.directory}/{name}", f"{self.directory}/.{name}.tmp"
            self.handle = self.sink.fs.open(self.temp, "wb")
            self.writer, self.rows = pq.ParquetWriter(self.handle, table.schema), 0
        self.writer.write_table(table)
        self.rows += table.num_rows
        target, limit = self.sink.target_file_bytes, self.sink.num_rows_per_file
        if (target and self.handle.tell() >= target) or (limit and self.rows >= limit):
            self._finish()

    def _finish(self) -> None:
        self.writer.close()
        size = self.handle.tell()
        self.handle.close()
        self.sink.commit(self.temp, self.final, self.ctx)
        self.done.append((self.final, self.rows, size))
        self.writer = self.handle = None
        self.index += 1

    def close(self) -> list[tuple]:
        if self.writer is not None:
            self._finish()
        return self.done
