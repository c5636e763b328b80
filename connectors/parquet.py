"""Parquet: a source split by row group with projection, filter and limit pushdown,
and a sink writing one file per partition behind a ``_SUCCESS`` manifest."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from streambatch.connectors.datasink import Datasink
from streambatch.connectors.datasource import Datasource, Pushdowns, ReadTask, limit_tables
from streambatch.connectors.paths import arrow_filesystem, expand_paths


class ParquetSource(Datasource):
    """Parquet files; one read task per row group.

    >>> import tempfile, os
    >>> d = tempfile.mkdtemp(); pq.write_table(pa.table({"a": [1, 2, 3]}), os.path.join(d, "x.parquet"))
    >>> src = ParquetSource(d)
    >>> [t["a"].to_pylist() for task in src.read_tasks(1, Pushdowns(limit=2)) for t in task()]
    [[1, 2]]
    """

    name = "Parquet"
    supports_projection = supports_filter = supports_limit = True

    def __init__(self, paths, filesystem=None) -> None:
        self.fs, self.files = expand_paths(paths, ".parquet", filesystem, "read_parquet")
        self._dataset = None

    def dataset(self) -> pads.Dataset:
        """The pyarrow dataset over the files (footers read on first use)."""
        if self._dataset is None:
            self._dataset = pads.dataset(self.files, format="parquet",
                                         filesystem=arrow_filesystem(self.fs))
        return self._dataset

    def schema(self) -> pa.Schema:
        """Schema from the first file's footer."""
        return self.dataset().schema

    def read_tasks(self, parallelism: int, pushdowns: Pushdowns) -> list[ReadTask]:
        """One task per row group, with its rows and uncompressed bytes as estimates."""
        dataset, tasks = self.dataset(), []
        for fragment in dataset.get_fragments():
            for piece in fragment.split_by_row_group():
                rows, size = _row_group_size(piece, pushdowns.columns)
                desc = f"file {piece.path} row group {piece.row_groups[0].id}"
                tasks.append(ReadTask(_reader(piece, dataset.schema, pushdowns), rows, size, desc))
        return tasks


def _row_group_size(piece, columns) -> tuple[int, int]:
    meta = piece.row_groups[0].metadata
    if columns is None:
        return meta.num_rows, meta.total_byte_size
    wanted = set(columns)
    size = sum(meta.column(i).total_uncompressed_size for i in range(meta.num_columns)
               if meta.column(i).path_in_schema.split(".")[0] in wanted)
    return meta.num_rows, size


def _reader(piece, schema: pa.Schema, pushdowns: Pushdowns):
    def read():
        cols = list(pushdowns.columns) if pushdowns.columns is not None else None
        batches = piece.to_batches(schema=schema, columns=cols, filter=pushdowns.filter,
                                   batch_size=64 * 1024, use_threads=False)
        tables = (pa.Table.from_batches([b]) for b in batches)
        return limit_tables(tables, pushdowns.limit)

    return read


class ParquetSink(Datasink):
    """Write one parquet file per partition; ``_SUCCESS`` lists them when all succeeded.

    ``mode``: "error" (the directory must hold no data files), "overwrite"
    (delete existing data files first) or "append".
    """

    name = "Parquet"
    suffix = ".parquet"

    def write_file(self, table_iter, path: str) -> tuple[int, int]:
        """Stream the tables into one parquet file; return (rows, bytes)."""
        writer, rows, size = None, 0, 0
        try:
            for table in table_iter:
                if writer is None:
                    writer = pq.ParquetWriter(path, table.schema, filesystem=self.arrow_fs)
                writer.write_table(table.cast(writer.schema) if table.schema != writer.schema else table)
                rows, size = rows + table.num_rows, size + table.nbytes
        finally:
            if writer is not None:
                writer.close()
        return rows, size
