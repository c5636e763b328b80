"""Sources: functions that start a lazy Dataset from data in memory or in files."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from streambatch import validate as v
from streambatch.connectors.memory import ArrowSource, ItemsSource, RangeSource
from streambatch.dataset import Dataset
from streambatch.operators import logical as L
from streambatch.operators.batch_format import table_from_columns


def _source(source, name: str, override_num_blocks: int | None) -> Dataset:
    if override_num_blocks is not None:
        source.parallelism = v.positive_int("override_num_blocks", override_num_blocks)
    return Dataset(L.Read(source, name=name))


def range(n: int, *, override_num_blocks: int | None = None) -> Dataset:  # noqa: A001
    """Integers ``0..n-1`` in column ``id`` (int64).

    >>> import streambatch as sb
    >>> sb.range(3, override_num_blocks=1).take_all()
    [{'id': 0}, {'id': 1}, {'id': 2}]
    """
    return _source(RangeSource(v.non_negative_int("n", n)), "Range", override_num_blocks)


def from_items(items: list, *, override_num_blocks: int | None = None) -> Dataset:
    """Rows from Python items: dicts are rows, other values go in column ``item``.

    >>> import streambatch as sb
    >>> sb.from_items([{"a": 1}, {"a": 2}]).count()
    2
    """
    if not isinstance(items, (list, tuple)):
        raise TypeError(f"from_items expects a list, got {type(items).__name__}")
    return _source(ItemsSource(list(items)), "Items", override_num_blocks)


def from_arrow(tables, *, override_num_blocks: int | None = None) -> Dataset:
    """Rows of one or more pyarrow Tables (zero-copy).

    >>> import streambatch as sb, pyarrow as pa
    >>> sb.from_arrow(pa.table({"x": [1, 2]}), override_num_blocks=1).take_all()
    [{'x': 1}, {'x': 2}]
    """
    tables = [tables] if isinstance(tables, (pa.Table, pa.RecordBatch)) else list(tables)
    tables = [pa.Table.from_batches([t]) if isinstance(t, pa.RecordBatch) else t for t in tables]
    for t in tables:
        if not isinstance(t, pa.Table):
            raise TypeError(f"from_arrow expects pyarrow Tables, got {type(t).__name__}")
    return _source(ArrowSource(tables), "Arrow", override_num_blocks)


def from_pandas(dfs, *, override_num_blocks: int | None = None) -> Dataset:
    """Rows of one or more pandas DataFrames (the index is dropped).

    >>> import streambatch as sb, pandas as pd
    >>> sb.from_pandas(pd.DataFrame({"x": [1, 2]})).count()
    2
    """
    dfs = dfs if isinstance(dfs, (list, tuple)) else [dfs]
    tables = [pa.Table.from_pandas(df, preserve_index=False) for df in dfs]
    return _source(ArrowSource(tables), "Pandas", override_num_blocks)


def from_polars(dfs, *, override_num_blocks: int | None = None) -> Dataset:
    """Rows of one or more polars DataFrames.

    >>> import streambatch as sb, polars as pl
    >>> sb.from_polars(pl.DataFrame({"x": [1, 2]}), override_num_blocks=1).take_all()
    [{'x': 1}, {'x': 2}]
    """
    dfs = dfs if isinstance(dfs, (list, tuple)) else [dfs]
    return _source(ArrowSource([df.to_arrow() for df in dfs]), "Polars", override_num_blocks)


def from_numpy(arrays, *, override_num_blocks: int | None = None) -> Dataset:
    """Rows of numpy arrays in column ``data``; n-d arrays become tensor columns.

    >>> import streambatch as sb, numpy as np
    >>> sb.from_numpy(np.arange(3), override_num_blocks=1).take_all()
    [{'data': 0}, {'data': 1}, {'data': 2}]
    """
    arrays = arrays if isinstance(arrays, (list, tuple)) else [arrays]
    for a in arrays:
        if not isinstance(a, np.ndarray):
            raise TypeError(f"from_numpy expects numpy arrays, got {type(a).__name__}")
    tables = [table_from_columns({"data": a}) for a in arrays]
    return _source(ArrowSource(tables), "Numpy", override_num_blocks)


def read_parquet(paths, *, columns: list[str] | None = None, filter=None, filesystem=None,
                 schema=None, partitioning="hive", include_paths: bool = False,
                 override_num_blocks: int | None = None, on_error: str = "raise") -> Dataset:
    """Parquet files (a file, directory, glob, list, or any fsspec URL), split by row group.

    ``columns`` and ``filter`` (a pyarrow.compute expression) are pushed into the scan;
    ``key=value`` directories become columns; files' schemas are unified (``schema=``
    overrides). Footers of large datasets are read lazily, by the read tasks.
    ``on_error="skip"`` reads past unreadable files, recording each in ``ds.dead_letters()``.

    >>> import streambatch as sb, tempfile
    >>> out = tempfile.mkdtemp() + "/t"
    >>> _ = sb.range(5).write_parquet(out)
    >>> sb.read_parquet(out, columns=["id"]).count()
    5
    """
    from streambatch.connectors.parquet import ParquetSource
    from streambatch.connectors.registry import check_protocol

    check_protocol(paths)
    source = ParquetSource(paths, filesystem=filesystem, schema=schema,
                           partitioning=partitioning, include_paths=include_paths,
                           on_error=v.on_error(on_error))
    if override_num_blocks is not None:
        source.parallelism = v.positive_int("override_num_blocks", override_num_blocks)
    plan = L.Read(source, name="Parquet",
                  columns=v.column_list("columns", columns) if columns is not None else None,
                  filter=filter)
    return Dataset(plan)


from streambatch.read_files import (  # noqa: E402 - file sources live in their own module
    from_huggingface,
    from_torch,
    read_binary_files,
    read_csv,
    read_images,
    read_json,
    read_numpy,
    read_text,
)

__all__ = ["range", "from_items", "from_arrow", "from_pandas", "from_polars", "from_numpy",
           "read_parquet", "read_csv", "read_json", "read_text", "read_binary_files",
           "read_numpy", "read_images", "from_torch", "from_huggingface"]
