"""More formats users ask for, with Ray Data's names: ``read_webdataset`` (training shards:
tar files of samples) and ``read_sql`` (a query through a DB-API 2 connection). Their
writes are ``Dataset.write_webdataset`` and ``Dataset.write_sql``.

Drivers and ``tarfile`` load only when a read runs (``import streambatch`` stays light).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from streambatch import validate as v
from streambatch.dataset import Dataset
from streambatch.operators import logical as L
from streambatch.read_files import FILE_ARGS, SCHEDULING, ray_read_args

if TYPE_CHECKING:
    import os
    from typing import TypeAlias

    import fsspec
    import pyarrow.fs

    from streambatch.connectors.datasource import FileShuffleConfig, PathPartitionFilter

    Paths: TypeAlias = str | os.PathLike | list[str | os.PathLike]
    FileSystem: TypeAlias = pyarrow.fs.FileSystem | fsspec.AbstractFileSystem


def read_webdataset(paths: Paths, *, filesystem: FileSystem | None = None,
                    decoder: bool | str | Callable | list | None = True,
                    fileselect: list | Callable | None = None,
                    filerename: list | Callable | None = None,
                    suffixes: list | Callable | None = None, verbose_open: bool = False,
                    shuffle: str | FileShuffleConfig | None = None,
                    include_paths: bool = False, file_extensions: list[str] | None = None,
                    concurrency: int | None = None, override_num_blocks: int | None = None,
                    expand_json: bool = False, on_error: str = "raise",
                    ignore_missing_paths: bool = False,
                    partition_filter: PathPartitionFilter | None = None,
                    **ray_args) -> Dataset:
    """WebDataset shards (``.tar`` files), one row per sample, as Ray Data's.

    Members are grouped into samples by key: the member's path up to the first dot of
    its last part (``n01.seg.png`` is column ``seg.png`` of sample ``n01``); each row
    also has ``__key__`` and ``__url__`` (the shard). ``decoder=True`` (the default)
    decodes by extension: ``txt`` -> str, ``cls`` -> int, ``json``, ``npy``, images ->
    numpy arrays (``"PIL"``: PIL images), ``mp``, ``pt``, ``pickle`` (trusted shards
    only); ``None`` or ``False`` keeps bytes; a function (or list of them) maps each
    sample dict to a new one. ``fileselect`` keeps members (suffix patterns such as
    ``["*.png"]`` or a function of the name), ``filerename`` renames them, ``suffixes``
    keeps columns while grouping. ``expand_json=True`` (as Ray's) also makes the keys of
    each sample's ``.json`` member (a JSON object) columns of its row, after decoding;
    the ``json`` column stays, and a sample without one or a key that is a column
    already is an error naming the sample. A damaged shard raises an error naming it
    (with ``on_error="skip"`` it goes to ``ds.dead_letters()``). ``partition_filter``
    is as for every file reader; ``concurrency`` and Ray's other read arguments
    (``parallelism=``, ``arrow_open_stream_args=``...) are as in
    :mod:`streambatch.read_files`.

    >>> import streambatch as sb, tempfile
    >>> out = tempfile.mkdtemp()
    >>> _ = sb.from_items([{"__key__": "s1", "txt": "hello", "cls": 3}]).write_webdataset(out)
    >>> [(r["__key__"], r["txt"], r["cls"]) for r in sb.read_webdataset(out).take_all()]
    [('s1', 'hello', 3)]
    >>> out = tempfile.mkdtemp()
    >>> _ = sb.from_items([{"__key__": "s1", "json": {"label": 7}}]).write_webdataset(out)
    >>> [(r["__key__"], r["label"]) for r in sb.read_webdataset(out, expand_json=True).take_all()]
    [('s1', 7)]
    """
    from streambatch.connectors.paths import check_paths
    from streambatch.connectors.registry import check_protocol
    from streambatch.connectors.webdataset import WebDatasetSource

    override_num_blocks = ray_read_args("read_webdataset", override_num_blocks,
                                        {**ray_args, "concurrency": concurrency}, FILE_ARGS)
    check_protocol(check_paths(paths, "read_webdataset"))
    source = WebDatasetSource(paths, decoder=decoder, fileselect=fileselect,
                              filerename=filerename, suffixes=suffixes,
                              verbose_open=verbose_open, filesystem=filesystem,
                              include_paths=include_paths, on_error=v.on_error(on_error),
                              ignore_missing_paths=ignore_missing_paths,
                              file_extensions=file_extensions, shuffle=shuffle,
                              expand_json=expand_json, partition_filter=partition_filter)
    if override_num_blocks is not None:
        source.parallelism = v.positive_int("override_num_blocks", override_num_blocks)
    return Dataset(L.Read(source, name="WebDataset"))


def read_sql(sql: str, connection_factory: Callable[[], Any], *,
             shard_keys: list[str] | None = None, parallelism: int = -1,
             ray_remote_args: dict | None = None, concurrency: int | None = None,
             override_num_blocks: int | None = None) -> Dataset:
    """The rows of the query ``sql``, read through DB-API 2 connections made by
    ``connection_factory`` (as Ray Data's; it must pickle: a module-level function or
    ``functools.partial(sqlite3.connect, path)``). Columns are the query's, typed from
    the values the driver returns (a column of mixed types fails naming the row: CAST
    it). Without ``shard_keys`` one task reads the query (streamed in blocks); with
    them, databases with numeric ``MD5`` split it by hash as Ray does.
    ``parallelism``, ``ray_remote_args`` and ``concurrency`` are Ray's read arguments
    (see :func:`streambatch.read_files.ray_read_args`).

    >>> import functools, sqlite3, tempfile, streambatch as sb
    >>> db = tempfile.mkdtemp() + "/a.db"
    >>> with sqlite3.connect(db) as c:
    ...     _ = c.execute("CREATE TABLE movie (title TEXT, year INTEGER)")
    ...     _ = c.execute("INSERT INTO movie VALUES ('Alien', 1979), ('Heat', 1995)")
    >>> sb.read_sql("SELECT * FROM movie WHERE year > 1980",
    ...             functools.partial(sqlite3.connect, db)).take_all()
    [{'title': 'Heat', 'year': 1995}]
    """
    from streambatch.connectors.sql import SQLSource

    blocks = ray_read_args("read_sql", override_num_blocks, {
        "parallelism": parallelism, "ray_remote_args": ray_remote_args,
        "concurrency": concurrency}, ("parallelism", *SCHEDULING, "ray_remote_args"))
    source = SQLSource(sql, connection_factory, shard_keys=shard_keys)
    if blocks is not None:
        source.parallelism = v.positive_int("override_num_blocks", blocks)
    return Dataset(L.Read(source, name="SQL"))


__all__ = ["read_webdataset", "read_sql"]
