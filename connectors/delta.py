"""Delta Lake tables through the ``deltalake`` package (``pip install 'streambatch[delta]'``),
as Ray Data's ``read_delta`` and a ``Dataset.write_delta``.

Reads open the table's log on the driver (the latest version, or ``version``) and make
one read task per data file of that version, each streaming its parquet file's row
groups with the partition values added as columns. Writes are
:mod:`streambatch.connectors.delta_sink`'s.

>>> import tempfile, pyarrow as pa
>>> from deltalake import write_deltalake
>>> path = tempfile.mkdtemp() + "/t"
>>> write_deltalake(path, pa.table({"x": [1, 2]}))
>>> [t.num_rows for task in DeltaSource(path).read_tasks(2, Pushdowns()) for t in task()]
[2]
"""

from __future__ import annotations

import os
import random
from functools import partial
from typing import Any
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.parquet as pq
from streambatch.connectors.datasource import Datasource, Piece, Pushdowns, ReadTask
from streambatch.connectors.lakehouse import (
    conform,
    estimated_bytes,
    require,
    wanted_columns,
)

BATCH_ROWS = 65536  # rows per block when streaming a data file
UNSUPPORTED_READER_FEATURES = ("deletionVectors", "columnMapping")


def table_uri(path: Any) -> str:
    """The table's location as deltalake takes it: URLs as given, local paths absolute.

    >>> table_uri("s3://b/t"), table_uri("/data/t/")
    ('s3://b/t', '/data/t')
    """
    path = os.fspath(path)
    return path if "://" in path else os.path.abspath(path).rstrip("/") or "/"


def filesystem_of(uri: str, filesystem: Any = None) -> tuple[Any, str]:
    """(filesystem, path) for the table root: ``filesystem`` when given, else fsspec's."""
    if filesystem is not None:
        return filesystem, uri.split("://", 1)[-1]
    from fsspec.core import url_to_fs

    return url_to_fs(uri)


def _check_readable(table: Any) -> None:
    """Refuse tables whose files cannot be read one by one as plain parquet."""
    features = set(table.protocol().reader_features or ())
    mapping = (table.metadata().configuration or {}).get("delta.columnMapping.mode", "none")
    used = sorted(features.intersection(UNSUPPORTED_READER_FEATURES))
    if used or mapping not in ("none", None):
        raise NotImplementedError(
            f"read_delta: the table {table.table_uri!r} uses Delta features "
            f"{used or ['columnMapping']} that read_delta does not apply; read it with "
            "deltalake (DeltaTable(path).to_pyarrow_table()) and pass it to sb.from_arrow")


class DeltaSource(Datasource):
    """One version of a Delta table: a read task per data file."""

    name = "Delta"
    supports_projection = True
    supports_limit = True

    def __init__(self, path: Any, version: int | None = None, columns: list[str] | None = None,
                 filesystem: Any = None, storage_options: dict | None = None,
                 include_paths: bool = False, shuffle: str | None = None) -> None:
        if shuffle not in (None, "files"):
            raise ValueError(f"read_delta: shuffle={shuffle!r}; expected None or 'files'")
        deltalake = require("deltalake", "read_delta")
        self.uri = table_uri(path)
        try:
            table = deltalake.DeltaTable(self.uri, version=version,
                                         storage_options=storage_options)
        except Exception as exc:
            raise FileNotFoundError(f"read_delta: cannot open a Delta table at {self.uri!r}"
                                    f"{'' if version is None else f' version {version}'}: "
                                    f"{exc}") from exc
        _check_readable(table)
        self.version = table.version()
        self._schema = pa.schema(table.schema().to_arrow())
        self.partition_cols = list(table.metadata().partition_columns)
        self.include_paths, self.shuffle = include_paths, shuffle
        self.columns = self._wanted(None, columns)
        self.filesystem = filesystem
        self.files = [_file_entry(row, self.partition_cols)
                      for row in pa.table(table.get_add_actions(flatten=True)).to_pylist()]

    def schema(self) -> pa.Schema:
        """The table's schema (of the version read), plus ``path`` with include_paths."""
        return self._schema.append(pa.field("path", pa.string())) if self.include_paths \
            else self._schema

    def _wanted(self, pushed: tuple[str, ...] | None, asked: list[str] | None) -> list | None:
        return wanted_columns(pushed, asked, self.schema(), "read_delta")

    def read_tasks(self, parallelism: int, pushdowns: Pushdowns) -> list[ReadTask]:
        """One task per data file, in the log's order; files a resumed write already
        holds (``pushdowns.done``) are left out."""
        columns = self._wanted(pushdowns.columns, self.columns)
        with_path = self.include_paths and (columns is None or "path" in columns)
        schema = self._schema if columns is None else pa.schema(
            [self._schema.field(c) for c in columns if c in self._schema.names])
        tasks = []
        for path, rows, size, values in self.files:
            if pushdowns.done and pushdowns.done.covers(Piece(path)):
                continue
            url = path if "://" in path else f"{self.uri.rstrip('/')}/{unquote(path)}"
            read = partial(read_file, url, self.uri, self.filesystem, schema, values,
                           with_path)
            tasks.append(ReadTask(read, rows, estimated_bytes(size, columns, self._schema),
                                  f"Delta file {path}", pieces=(Piece(path),),
                                  per_task_row_limit=pushdowns.limit, input_files=(url,)))
        if self.shuffle == "files":
            random.shuffle(tasks)
        return tasks


def _file_entry(row: dict, partition_cols: list[str]) -> tuple[str, int | None, int | None,
                                                                dict[str, Any]]:
    """(path, rows, bytes, partition values) of one add action of the log."""
    values = {c: row.get(f"partition.{c}") for c in partition_cols}
    return row["path"], row.get("num_records"), row.get("size_bytes"), values


def read_file(url: str, uri: str, filesystem: Any, schema: pa.Schema,
              partition_values: dict[str, Any], with_path: bool = False):
    """Stream one data file as blocks of ``schema`` (partition columns from the log;
    ``path``, the file's, when ``with_path``)."""
    fs, root = filesystem_of(uri, filesystem)
    path = root.rstrip("/") + url[len(uri.rstrip("/")):] if url.startswith(uri) else \
        url.split("://", 1)[-1]
    stored = [f.name for f in schema if f.name not in partition_values]
    opener = getattr(fs, "open_input_file", None)
    with (opener(path) if opener else fs.open(path, "rb")) as handle:
        parquet = pq.ParquetFile(handle)
        present = [c for c in stored if c in parquet.schema_arrow.names]
        for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=present):
            table = pa.Table.from_batches([batch])
            for name, value in partition_values.items():
                if name in schema.names:
                    table = table.append_column(name, pa.array([value] * table.num_rows))
            table = conform(table, schema, "read_delta")
            yield table.append_column("path", pa.array([url] * table.num_rows, pa.string())) \
                if with_path else table
