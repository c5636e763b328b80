"""Sources: functions that start a lazy Dataset from data in memory or in files."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from streambatch import validate as v
from streambatch.connectors.datasource import (
    BlockMetadata,
    Datasource,
    FileShuffleConfig,
    Partitioning,
    PathPartitionFilter,
    ReadTask,
)
from streambatch.connectors.memory import ArrowSource, ItemsSource, RangeSource
from streambatch.dataset import Dataset
from streambatch.operators import logical as L
from streambatch.operators.batch_format import from_batch, table_from_columns
from streambatch.operators.columns import check_unique_names
from streambatch.read_files import FILE_ARGS, SCHEDULING, ray_read_args

_RANGE_ARGS = ("parallelism", "concurrency")
# pyarrow scan options Ray passes on (``**arrow_parquet_args``) that change only speed
_PARQUET_SPEED_ARGS = ("batch_size", "use_threads", "batch_readahead", "fragment_readahead",
                       "buffer_size", "pre_buffer", "cache_metadata")

if TYPE_CHECKING:
    import pandas

    from streambatch.read_files import FileSystem, Paths


def _source(source, name: str, override_num_blocks: int | None) -> Dataset:
    if override_num_blocks is not None:
        source.parallelism = v.positive_int("override_num_blocks", override_num_blocks)
    return Dataset(L.Read(source, name=name))


def _in_memory(tables: list[pa.Table], name: str, override_num_blocks: int | None) -> Dataset:
    """As Ray Data's ``from_arrow`` / ``from_pandas`` / ``from_numpy``: one block per table
    given, in order; with ``override_num_blocks=n`` the tables are joined and cut into
    ``n`` blocks of about equal rows (tables whose types do not join, such as tensors
    of different shapes, are each cut in proportion instead).

    >>> t = pa.table({"x": [1, 2, 3]})
    >>> _in_memory([t, t], "Arrow", None).num_blocks(), _in_memory([t, t], "Arrow", 3).num_blocks()
    (2, 3)
    """
    if override_num_blocks is None or not tables:
        return Dataset(L.Read(ArrowSource(tables, split=False), name=name))
    try:
        joined = [pa.concat_tables(tables, promote_options="default")] if len(tables) > 1 \
            else tables
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        joined = tables
    return _source(ArrowSource(joined), name, override_num_blocks)


def range(n: int, *, override_num_blocks: int | None = None,  # noqa: A001
          **ray_args) -> Dataset:
    """Integers ``0..n-1`` in column ``id`` (int64). Ray's ``parallelism=`` and
    ``concurrency=`` are accepted (see :func:`streambatch.read_files.ray_read_args`).

    >>> import streambatch as sb
    >>> sb.range(3, override_num_blocks=1).take_all()
    [{'id': 0}, {'id': 1}, {'id': 2}]
    """
    blocks = ray_read_args("range", override_num_blocks, ray_args, _RANGE_ARGS)
    return _source(RangeSource(v.non_negative_int("n", n)), "Range", blocks)


def from_items(items: list, *, override_num_blocks: int | None = None, **ray_args) -> Dataset:
    """Rows from Python items: dicts are rows, other values go in column ``item``
    (Ray's deprecated ``parallelism=`` is accepted as ``override_num_blocks``).

    >>> import streambatch as sb
    >>> sb.from_items([{"a": 1}, {"a": 2}]).count()
    2
    """
    blocks = ray_read_args("from_items", override_num_blocks, ray_args, ("parallelism",))
    if not isinstance(items, (list, tuple)):
        raise TypeError(f"from_items expects a list, got {type(items).__name__}")
    return _source(ItemsSource(list(items)), "Items", blocks)


def from_arrow(tables, *, override_num_blocks: int | None = None) -> Dataset:
    """Rows of one or more pyarrow Tables (zero-copy), as Ray Data's: one block per
    table, in order; ``override_num_blocks=n`` joins them and cuts ``n`` blocks.

    >>> import streambatch as sb, pyarrow as pa
    >>> t = pa.table({"x": [1, 2]})
    >>> sb.from_arrow(t).take_all()
    [{'x': 1}, {'x': 2}]
    >>> sb.from_arrow([t, t, t]).num_blocks()
    3
    """
    tables = [tables] if isinstance(tables, (pa.Table, pa.RecordBatch)) else list(tables)
    tables = [pa.Table.from_batches([t]) if isinstance(t, pa.RecordBatch) else t for t in tables]
    for index, t in enumerate(tables):
        if not isinstance(t, pa.Table):
            raise TypeError(f"from_arrow expects pyarrow Tables, got {type(t).__name__}")
        check_unique_names(t.column_names, f"from_arrow: tables[{index}]")
    return _in_memory(tables, "Arrow", override_num_blocks)


def from_pandas(dfs: pandas.DataFrame | list[pandas.DataFrame], *,
                override_num_blocks: int | None = None) -> Dataset:
    """Rows of one or more pandas DataFrames (the index is dropped, with a warning when it
    has a name), as Ray Data's: one
    block per DataFrame; with ``override_num_blocks=n`` the frames are joined and cut
    into ``n`` blocks of about equal rows.

    >>> import streambatch as sb, pandas as pd
    >>> ds = sb.from_pandas([pd.DataFrame({"x": [1, 2]}), pd.DataFrame({"x": [3]})])
    >>> sorted(r["x"] for r in ds.take_all())
    [1, 2, 3]
    """
    dfs = list(dfs) if isinstance(dfs, (list, tuple)) else [dfs]
    for index, df in enumerate(dfs):
        if not (type(df).__module__.startswith("pandas") and hasattr(df, "columns")):
            raise TypeError(f"from_pandas: dfs[{index}] is a {type(df).__name__}; expected a "
                            f"pandas.DataFrame (use from_arrow for Arrow tables, from_items for rows)")
        named = [n for n in df.index.names if n is not None]
        if named:  # an index with a name usually holds data (ids): say it is not kept
            warnings.warn(f"from_pandas: dfs[{index}]'s index {named} is dropped, as Ray "
                          f"Data drops it; call df.reset_index() first to keep it as columns",
                          stacklevel=2)
    tables = [_pandas_block(df, index) for index, df in enumerate(dfs)]
    return _in_memory(tables, "Pandas", override_num_blocks)


def _pandas_block(df, index: int) -> pa.Table:
    """A DataFrame as a block; a column of numpy arrays (embeddings) becomes a tensor
    column, as from map_batches and in Ray Data (Arrow's own conversion made lists).

    >>> import pandas as pd, numpy as np
    >>> t = _pandas_block(pd.DataFrame({"e": [np.ones(2), np.zeros(2)]}), 0)
    >>> t.schema.field("e").type.extension_name
    'arrow.fixed_shape_tensor'
    """
    if any(df[name].dtype == object and
           isinstance(next((v for v in df[name] if v is not None), None), np.ndarray)
           for name in df.columns):
        return from_batch(df, f"from_pandas: dfs[{index}]")
    return pa.Table.from_pandas(df, preserve_index=False)


def from_blocks(blocks: list[pa.Table | pandas.DataFrame]) -> Dataset:
    """A dataset of exactly these blocks (pyarrow Tables or pandas DataFrames), one
    partition each, in order, never re-cut (Ray Data's ``from_blocks``).

    >>> import streambatch as sb, pyarrow as pa
    >>> sorted(r["x"] for r in sb.from_blocks([pa.table({"x": [1, 2]}), pa.table({"x": [3]})]).take_all())
    [1, 2, 3]
    """
    if not isinstance(blocks, (list, tuple)):
        raise TypeError(f"from_blocks expects a list of blocks, got {type(blocks).__name__}")
    tables = []
    for index, block in enumerate(blocks):
        if isinstance(block, pa.RecordBatch):
            block = pa.Table.from_batches([block])
        elif type(block).__module__.startswith("pandas") and hasattr(block, "columns"):
            block = pa.Table.from_pandas(block, preserve_index=False)
        if not isinstance(block, pa.Table):
            raise TypeError(f"from_blocks: blocks[{index}] is a {type(block).__name__}; a block "
                            f"is a pyarrow.Table or a pandas.DataFrame")
        tables.append(block)
    return Dataset(L.Read(ArrowSource(tables, split=False), name="FromBlocks"))


def range_tensor(n: int, *, shape: tuple[int, ...] = (1,),
                 override_num_blocks: int | None = None, **ray_args) -> Dataset:
    """Rows ``0..n-1`` as tensors in column ``data``: row ``i`` is ``np.full(shape, i)``
    (int64), as Ray Data's ``range_tensor``.

    >>> import streambatch as sb
    >>> sorted(r["data"].tolist() for r in sb.range_tensor(2, shape=(2, 2)).take_all())
    [[[0, 0], [0, 0]], [[1, 1], [1, 1]]]
    """
    blocks = ray_read_args("range_tensor", override_num_blocks, ray_args, _RANGE_ARGS)
    shape = tuple(shape) if isinstance(shape, (tuple, list)) else (shape,)
    if not shape or any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1
                        for d in shape):
        raise ValueError(f"range_tensor: shape={shape!r}; expected a tuple of positive ints "
                         f"such as (2, 2)")
    source = RangeSource(v.non_negative_int("n", n), tuple(int(d) for d in shape))
    return _source(source, "RangeTensor", blocks)


def read_datasource(datasource: Datasource, *, override_num_blocks: int | None = None,
                    **ray_args) -> Dataset:
    """Rows of a custom :class:`~streambatch.Datasource` (Ray Data's ``read_datasource``):
    its ``get_read_tasks(parallelism)`` is asked for read tasks when a run starts, and
    each :class:`~streambatch.ReadTask` runs in a worker. ``override_num_blocks`` is the
    ``parallelism`` it is asked for. Ray's ``parallelism=``, ``num_cpus=``, ``num_gpus=``,
    ``memory=``, ``concurrency=`` and ``ray_remote_args=`` are accepted (see
    :func:`streambatch.read_files.ray_read_args`).

    >>> import streambatch as sb, pyarrow as pa
    >>> class Letters(sb.Datasource):
    ...     def get_read_tasks(self, parallelism):
    ...         return [sb.ReadTask(lambda c=c: [pa.table({"c": [c]})], sb.BlockMetadata(1, 8))
    ...                 for c in "abc"]
    >>> ds = sb.read_datasource(Letters())
    >>> sorted(r["c"] for r in ds.take_all())
    ['a', 'b', 'c']
    """
    blocks = ray_read_args("read_datasource", override_num_blocks, ray_args,
                           ("parallelism", *SCHEDULING, "ray_remote_args"))
    if not isinstance(datasource, Datasource):
        raise TypeError(f"read_datasource: datasource is a {type(datasource).__name__}; "
                        f"expected a subclass of streambatch.Datasource implementing "
                        f"get_read_tasks(parallelism)")
    if (type(datasource).read_tasks is Datasource.read_tasks
            and type(datasource).get_read_tasks is Datasource.get_read_tasks):
        raise TypeError(f"read_datasource: {type(datasource).__name__} does not implement "
                        f"get_read_tasks(parallelism) -> list[ReadTask]")
    return _source(datasource, datasource.get_name(), blocks)


def from_polars(dfs, *, override_num_blocks: int | None = None) -> Dataset:
    """Rows of one or more polars DataFrames, one block per frame (as ``from_pandas``).

    >>> import streambatch as sb, polars as pl
    >>> sb.from_polars(pl.DataFrame({"x": [1, 2]}), override_num_blocks=1).take_all()
    [{'x': 1}, {'x': 2}]
    """
    dfs = dfs if isinstance(dfs, (list, tuple)) else [dfs]
    return _in_memory([df.to_arrow() for df in dfs], "Polars", override_num_blocks)


def from_numpy(arrays, *, override_num_blocks: int | None = None) -> Dataset:
    """Rows of numpy arrays in column ``data`` (rows along the first axis); n-d arrays
    become tensor columns. As Ray Data's: one block per array, in order;
    ``override_num_blocks=n`` joins them and cuts ``n`` blocks.

    >>> import streambatch as sb, numpy as np
    >>> sb.from_numpy(np.arange(3)).take_all()
    [{'data': 0}, {'data': 1}, {'data': 2}]
    >>> sb.from_numpy([np.arange(3), np.arange(2)]).num_blocks()
    2
    """
    arrays = arrays if isinstance(arrays, (list, tuple)) else [arrays]
    for a in arrays:
        if not isinstance(a, np.ndarray):
            raise TypeError(f"from_numpy expects numpy arrays, got {type(a).__name__}")
    tables = [table_from_columns({"data": a}) for a in arrays]
    return _in_memory(tables, "Numpy", override_num_blocks)


def read_parquet(paths: Paths, *, columns: list[str] | None = None, filter=None,
                 filesystem: FileSystem | None = None, schema: pa.Schema | None = None,
                 partitioning: str | Partitioning | None = "hive", include_paths: bool = False,
                 override_num_blocks: int | None = None, on_error: str = "raise",
                 ignore_missing_paths: bool = False, file_extensions: list[str] | None = None,
                 shuffle: str | FileShuffleConfig | None = None,
                 partition_filter: PathPartitionFilter | None = None,
                 **arrow_parquet_args) -> Dataset:
    """Parquet files (a file, directory, glob, list, or any fsspec URL), split by row group.

    ``columns`` and ``filter`` (a pyarrow.compute expression) are pushed into the scan;
    ``key=value`` directories become columns; files' schemas are unified (``schema=``
    overrides). Footers of large datasets are read lazily, by the read tasks.
    ``on_error="skip"`` reads past unreadable files, recording each in ``ds.dead_letters()``.
    ``filesystem``, ``partitioning``, ``ignore_missing_paths``, ``file_extensions``,
    ``shuffle`` and ``partition_filter`` are as for every file reader (see
    :mod:`streambatch.read_files`), and so are Ray's read arguments (``parallelism=``,
    ``ray_remote_args=``...). Of Ray's ``**arrow_parquet_args``, the scan's speed options
    (``batch_size``, ``use_threads``...) are accepted and not needed; ``dataset_kwargs``,
    ``tensor_column_schema`` and ``_block_udf`` raise a TypeError saying what to use.

    >>> import streambatch as sb, tempfile
    >>> out = tempfile.mkdtemp() + "/t"
    >>> _ = sb.range(5).write_parquet(out)
    >>> sb.read_parquet(out, columns=["id"]).count()
    5
    """
    from streambatch.connectors.parquet import ParquetSource
    from streambatch.connectors.paths import check_paths
    from streambatch.connectors.registry import check_protocol

    override_num_blocks = _parquet_args(override_num_blocks, arrow_parquet_args)
    check_protocol(check_paths(paths, "read_parquet"))
    source = ParquetSource(paths, filesystem=filesystem, schema=schema,
                           partitioning=partitioning, include_paths=include_paths,
                           on_error=v.on_error(on_error), ignore_missing_paths=ignore_missing_paths,
                           file_extensions=file_extensions, shuffle=shuffle,
                           partition_filter=partition_filter)
    if override_num_blocks is not None:
        source.parallelism = v.positive_int("override_num_blocks", override_num_blocks)
    plan = L.Read(source, name="Parquet",
                  columns=v.column_list("columns", columns) if columns is not None else None,
                  filter=filter)
    return Dataset(plan)


def _parquet_args(override_num_blocks: int | None, args: dict) -> int | None:
    """Ray's extra ``read_parquet`` arguments: its read arguments, and pyarrow scan options
    (speed only: accepted), or a TypeError for one that changes the rows.

    >>> _parquet_args(None, {"batch_size": 1024, "use_threads": True}) is None
    True
    >>> _parquet_args(None, {"tensor_column_schema": {"x": ("float32", (2,))}})
    Traceback (most recent call last):
    ...
    TypeError: read_parquet: tensor_column_schema= cannot be honoured; decode the column after reading: ds.map_batches(lambda b: {**b, "x": np.frombuffer(...)}, batch_format="numpy")
    """
    advice = {"tensor_column_schema": 'decode the column after reading: ds.map_batches('
                                      'lambda b: {**b, "x": np.frombuffer(...)}, '
                                      'batch_format="numpy")',
              "_block_udf": "apply the function after reading: "
                            "ds.map_batches(fn, batch_format='pyarrow', batch_size=None)",
              "dataset_kwargs": "pass partitioning=, filesystem=, schema= or "
                                "partition_filter= instead"}
    for name, what in advice.items():
        if args.pop(name, None):
            raise TypeError(f"read_parquet: {name}= cannot be honoured; {what}")
    for name in _PARQUET_SPEED_ARGS:
        args.pop(name, None)
    allowed = tuple(a for a in FILE_ARGS if a != "arrow_open_stream_args")
    return ray_read_args("read_parquet", override_num_blocks, args, allowed)


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

__all__ = ["range", "range_tensor", "from_items", "from_arrow", "from_pandas", "from_polars",
           "from_numpy", "from_blocks", "read_datasource", "Datasource", "ReadTask",
           "BlockMetadata", "Partitioning", "FileShuffleConfig", "PathPartitionFilter",
           "read_parquet", "read_csv", "read_json", "read_text", "read_binary_files",
           "read_numpy", "read_images", "from_torch", "from_huggingface"]
