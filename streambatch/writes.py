"""The ``write_*`` methods of ``Dataset``: each builds its sink and runs the plan through
it (the sink owns the write: start, the job, then finalize or abort)."""

from __future__ import annotations

import hashlib
from contextlib import closing
from typing import Any

import pyarrow as pa

from streambatch.operators import logical as L
from streambatch.session import plan_fingerprint


class WriteMethods:
    """Mixed into ``Dataset``."""

    _plan: Any  # the dataset's logical plan (Dataset sets it)
    _stats: Any
    _dead: Any

    def _with(self, op) -> Any:  # provided by Dataset
        raise NotImplementedError

    def write_parquet(self, path: str, *, filesystem=None, mode: str = "append",
                      resume: bool = False, partition_cols=None,
                      target_file_bytes: int | None = None,
                      num_rows_per_file: int | None = None,
                      max_rows_per_file: int | None = None,
                      ray_remote_args: dict | None = None,
                      concurrency: int | None = None) -> list[dict]:
        """Write one parquet file per partition under ``path``; ``_SUCCESS`` marks completion.

        Returns the committed files (path, rows, bytes). Files are committed
        atomically and recorded in ``_manifest.jsonl``; a retried task never adds a
        second file. ``resume=True`` finishes a job whose driver was killed: its
        committed files are kept and the reads they cover are skipped. On an error
        the files of this job are removed and no ``_SUCCESS`` is written (an append's
        earlier, complete output keeps its ``_SUCCESS``).

        ``mode`` (Ray Data's SaveMode, as a string or the enum) says what to do when
        ``path`` already holds data files: ``"append"`` (default) adds this write's
        files, ``"error"`` refuses, ``"ignore"`` skips the write (nothing runs), and
        ``"overwrite"`` replaces an earlier streambatch output. An interrupted write
        (no ``_SUCCESS``) is only finished by ``resume=True`` or replaced by overwrite:
        append and ignore refuse it.
        ``partition_cols`` writes hive ``col=value/`` directories; ``target_file_bytes``
        starts a new file when one reaches that size; ``num_rows_per_file`` cuts each
        partition's rows into files of that many rows (a partition's last file may be
        shorter); ``max_rows_per_file`` (Ray's name for at most that many) is the same
        cut. ``ray_remote_args`` and ``concurrency`` are accepted for Ray compatibility
        and ignored (``init(num_cpus=...)`` sets the parallelism), on every ``write_*``.

        >>> import streambatch as sb, tempfile
        >>> out = tempfile.mkdtemp() + "/out"
        >>> sum(f["rows"] for f in sb.range(10).write_parquet(out))
        10
        >>> sorted(f["rows"] for f in sb.range(10, override_num_blocks=1).write_parquet(
        ...     out, mode="overwrite", num_rows_per_file=4))
        [2, 4, 4]
        """
        from streambatch.connectors.parquet_sink import ParquetSink

        if num_rows_per_file is not None and max_rows_per_file is not None \
                and num_rows_per_file != max_rows_per_file:
            raise ValueError(f"write_parquet: num_rows_per_file={num_rows_per_file} and "
                             f"max_rows_per_file={max_rows_per_file} both cut files here; "
                             "pass one of them")
        if num_rows_per_file is None:
            num_rows_per_file = max_rows_per_file
        return self._write(ParquetSink(path, filesystem=filesystem, mode=mode,
                                       partition_cols=partition_cols,
                                       target_file_bytes=target_file_bytes,
                                       num_rows_per_file=num_rows_per_file), resume)

    def write_csv(self, path: str, *, filesystem=None, mode: str = "append",
                  resume: bool = False, num_rows_per_file: int | None = None,
                  ray_remote_args: dict | None = None,
                  concurrency: int | None = None) -> list[dict]:
        """Write one CSV file (with a header) per partition; ``mode``, ``resume`` and
        ``num_rows_per_file`` as in ``write_parquet``.

        >>> import streambatch as sb, tempfile
        >>> sum(f["rows"] for f in sb.range(4).write_csv(tempfile.mkdtemp() + "/o"))
        4
        """
        return self._write(self._sink("csv", path, filesystem, mode, num_rows_per_file), resume)

    def write_json(self, path: str, *, filesystem=None, mode: str = "append",
                   resume: bool = False, num_rows_per_file: int | None = None,
                   ray_remote_args: dict | None = None,
                   concurrency: int | None = None) -> list[dict]:
        """Write one JSON-lines file (``.json``, one object per line, as Ray Data) per
        partition; ``mode``, ``resume`` and ``num_rows_per_file`` as in ``write_parquet``.

        >>> import streambatch as sb, tempfile
        >>> sum(f["rows"] for f in sb.range(4).write_json(tempfile.mkdtemp() + "/o"))
        4
        """
        return self._write(self._sink("json", path, filesystem, mode, num_rows_per_file), resume)

    def write_numpy(self, path: str, *, column: str, filesystem=None,
                    mode: str = "append", num_rows_per_file: int | None = None,
                    ray_remote_args: dict | None = None,
                    concurrency: int | None = None) -> list[dict]:
        """Write ``column`` of each partition to one ``.npy`` file (tensor columns as n-d
        arrays); ``mode`` and ``num_rows_per_file`` as in ``write_parquet``.

        >>> import streambatch as sb, tempfile
        >>> sum(f["rows"] for f in sb.range(4).write_numpy(tempfile.mkdtemp() + "/o", column="id"))
        4
        """
        return self._write(self._sink("numpy", path, filesystem, mode, num_rows_per_file,
                                      column=column))

    def write_images(self, path: str, *, column: str, file_format: str = "png",
                     filename_column: str | None = None, filesystem=None,
                     mode: str = "append", ray_remote_args: dict | None = None,
                     concurrency: int | None = None) -> list[dict]:
        """Write one image file per row from tensor column ``column``, named from
        ``filename_column`` when given; ``mode`` as in ``write_parquet``. Needs
        ``pip install 'streambatch[images]'``.

        >>> import streambatch as sb, tempfile, numpy as np
        >>> ds = sb.from_numpy(np.zeros((2, 4, 4, 3), np.uint8))
        >>> len(ds.write_images(tempfile.mkdtemp() + "/o", column="data"))
        2
        """
        from streambatch.connectors.registry import get_sink

        return self._write(get_sink("images")(path, column=column, file_format=file_format,
                                              filename_column=filename_column,
                                              filesystem=filesystem, mode=mode))

    def write_webdataset(self, path: str, *, encoder=True, filesystem=None,
                         mode: str = "append", num_rows_per_file: int | None = None,
                         ray_remote_args: dict | None = None,
                         concurrency: int | None = None) -> list[dict]:
        """Write WebDataset shards (``.tar``), one per partition (or per
        ``num_rows_per_file`` rows), as Ray Data's: each row is a sample whose non-null
        columns become members ``<__key__>.<column>``. ``encoder=True`` encodes by the
        column's extension (``txt``, ``cls``, ``json``, ``npy``, images from arrays,
        ``mp``, ``pt``, ``pickle``); bytes and str columns are written as they are; a
        function (or list of them) maps each sample dict to one of bytes; ``None`` does
        not encode. A row without ``__key__`` gets a key from its shard and row number.
        Shards are committed as the other file writes (``mode``, ``_SUCCESS``, a retried
        task rewrites its own shard).

        >>> import streambatch as sb, tempfile
        >>> out = tempfile.mkdtemp()
        >>> ds = sb.from_items([{"__key__": f"k{i}", "cls": i, "bin": bytes([i])} for i in range(3)])
        >>> sum(f["rows"] for f in ds.write_webdataset(out))
        3
        >>> sorted((r["cls"], r["bin"]) for r in sb.read_webdataset(out).take_all())
        [(0, b'\\x00'), (1, b'\\x01'), (2, b'\\x02')]
        """
        from streambatch.connectors.webdataset import WebDatasetSink

        return self._write(WebDatasetSink(path, filesystem=filesystem, mode=mode,
                                          num_rows_per_file=num_rows_per_file,
                                          encoder=encoder))

    def write_sql(self, sql: str, connection_factory, *, ledger_table: str | None = None,
                  resume: bool = False, ray_remote_args: dict | None = None,
                  concurrency: int | None = None) -> None:
        """Insert every row with ``sql``, a parameterised statement in the driver's style
        (``?`` for sqlite3, ``%s`` for psycopg) taking the row's values in column order,
        on DB-API 2 connections from ``connection_factory`` (as Ray Data's). Each write
        task inserts its partition in one transaction: a failed task leaves none of its
        rows and its retry inserts them once. A task that committed, then died before
        reporting it, is retried and inserts again, unless ``ledger_table`` names a table
        (created if missing) where each task records itself in its transaction: then a
        retry of a committed task inserts nothing (exactly-once). With a ledger, the same
        job run again after its driver was killed is refused (its rows would go in twice)
        unless ``resume=True``, which inserts only the tasks the killed run did not
        commit. ``ray_remote_args`` and ``concurrency`` are accepted and ignored.

        >>> import functools, sqlite3, tempfile, streambatch as sb
        >>> db = tempfile.mkdtemp() + "/a.db"
        >>> with sqlite3.connect(db) as c: _ = c.execute("CREATE TABLE t (id INTEGER)")
        >>> sb.range(5).write_sql("INSERT INTO t VALUES (?)", functools.partial(sqlite3.connect, db))
        >>> sqlite3.connect(db).execute("SELECT COUNT(*), SUM(id) FROM t").fetchone()
        (5, 10)
        """
        from streambatch.connectors.sql import SQLSink

        job = "j" + plan_fingerprint(self._plan)[:11] + \
            hashlib.sha1(sql.encode()).hexdigest()[:6]  # (the same job: the same plan and SQL)
        self._write(SQLSink(sql, connection_factory, ledger_table=ledger_table, resume=resume,
                            job=job).engine_sink())

    def write_delta(self, path: str, *, catalog=None, mode: Any = "append",
                    partition_by: list[str] | None = None,
                    storage_options: dict | None = None, schema_mode: str = "merge",
                    filesystem=None, name: str | None = None,
                    description: str | None = None, ray_remote_args: dict | None = None,
                    concurrency: int | None = None) -> None:
        """Write the rows to the Delta Lake table at ``path`` (created if missing; as Ray
        Data's): each write task writes parquet files into the table's directory
        (``partition_by``: under hive ``col=value/`` directories), and one Delta commit
        on the driver, after every task succeeded, adds them all (a failed job commits
        nothing and removes its files; a retried task's first attempt is never
        committed). ``mode`` (a string or Ray's SaveMode): ``"append"`` (default),
        ``"overwrite"`` (a new version holding only these rows, with their schema),
        ``"error"`` (refuse an existing table) or ``"ignore"`` (do nothing when it
        exists). An append with columns the table lacks adds them
        (``schema_mode="merge"``) or fails (``"error"``). ``storage_options`` go to
        deltalake; ``filesystem`` (pyarrow or fsspec) writes the files; ``name`` and
        ``description`` label a new table. ``catalog`` (a Ray catalog connector) is
        not supported. Needs ``pip install 'streambatch[delta]'``.

        >>> import streambatch as sb, tempfile
        >>> path = tempfile.mkdtemp() + "/t"
        >>> sb.range(5).write_delta(path)
        >>> sb.range(2).write_delta(path, mode="overwrite")
        >>> sb.read_delta(path).count(), sb.read_delta(path, version=0).count()
        (2, 5)
        """
        from streambatch.connectors.delta_sink import DeltaSink

        if catalog is not None:
            raise NotImplementedError("write_delta: catalog= (a Ray catalog connector) is "
                                      "not supported; pass the table's path")
        self._write(DeltaSink(path, mode=mode, partition_by=partition_by,
                              storage_options=storage_options, schema_mode=schema_mode,
                              filesystem=filesystem, name=name,
                              description=description).engine_sink())

    def write_lance(self, path: str, *, schema: pa.Schema | None = None, mode: str = "create",
                    min_rows_per_file: int = 1024 * 1024,
                    max_rows_per_file: int = 64 * 1024 * 1024,
                    data_storage_version: str | None = None,
                    storage_options: dict | None = None, table_id: list[str] | None = None,
                    namespace_impl: str | None = None,
                    namespace_properties: dict | None = None,
                    ray_remote_args: dict | None = None,
                    concurrency: int | None = None) -> None:
        """Write the rows to the Lance dataset at ``path`` (as Ray Data's): each write task
        writes its fragments, and one commit on the driver adds them all after every
        task succeeded. ``mode``: ``"create"`` (default; refuses an existing dataset),
        ``"append"`` (a new version with these rows added; creates a missing dataset)
        or ``"overwrite"`` (a new version holding only these rows). ``schema`` fixes
        the columns' types; ``max_rows_per_file``, ``data_storage_version`` and
        ``storage_options`` go to Lance; ``min_rows_per_file`` is accepted and ignored
        (each partition is written as it comes); Lance namespaces (``table_id``,
        ``namespace_impl``, ``namespace_properties``) are not supported. Needs
        ``pip install 'streambatch[lance]'``.

        >>> import streambatch as sb, tempfile
        >>> uri = tempfile.mkdtemp() + "/t.lance"
        >>> sb.range(3).write_lance(uri)
        >>> sb.range(3).write_lance(uri, mode="append")
        >>> sb.read_lance(uri).count()
        6
        """
        from streambatch.connectors.lance import LanceSink

        if table_id is not None or namespace_impl is not None or namespace_properties:
            raise NotImplementedError("write_lance: Lance namespaces (table_id, "
                                      "namespace_impl, namespace_properties) are not "
                                      "supported; pass the dataset's path")
        self._write(LanceSink(path, schema=schema, mode=mode,
                              max_rows_per_file=max_rows_per_file,
                              data_storage_version=data_storage_version,
                              storage_options=storage_options).engine_sink())

    def write_iceberg(self, table_identifier: str, catalog_kwargs: dict | None = None,
                      catalog=None, snapshot_properties: dict | None = None,
                      mode: Any = "append",
                      overwrite_filter: Any = None, upsert_kwargs: dict | None = None,
                      overwrite_kwargs: dict | None = None,
                      ray_remote_args: dict | None = None,
                      concurrency: int | None = None) -> None:
        """Write the rows to the Iceberg table ``table_identifier`` (as Ray Data's), in the
        catalog ``pyiceberg.catalog.load_catalog(catalog_kwargs["name"], **the rest)``.
        Each write task writes one parquet file under the table's location, and one
        transaction on the driver, after every task succeeded, adds them all (new
        columns are added to the table's schema; a missing table, and its namespace,
        are created). ``mode``: ``"append"`` (default) or ``"overwrite"`` (deletes the
        rows matching ``overwrite_filter``, a PyIceberg expression or string, else all
        rows, in the same transaction); ``"upsert"`` is not supported.
        ``snapshot_properties`` go to the snapshot summary; ``catalog`` (a Ray catalog
        connector) is ignored when ``catalog_kwargs`` is given, else refused. Needs
        ``pip install 'streambatch[iceberg]'``.

        >>> import streambatch as sb, tempfile
        >>> d = tempfile.mkdtemp()
        >>> kw = {"name": "default", "type": "sql", "uri": f"sqlite:///{d}/c.db", "warehouse": f"file://{d}"}
        >>> sb.range(3).write_iceberg("db.t", catalog_kwargs=kw)
        >>> sb.read_iceberg(table_identifier="db.t", catalog_kwargs=kw).count()
        3
        """
        from streambatch.connectors.iceberg import IcebergSink

        if catalog is not None and catalog_kwargs is None:
            raise NotImplementedError("write_iceberg: catalog= (a Ray catalog connector) is "
                                      "not supported; pass catalog_kwargs")
        self._write(IcebergSink(table_identifier, catalog_kwargs=catalog_kwargs,
                                snapshot_properties=snapshot_properties, mode=mode,
                                overwrite_filter=overwrite_filter, upsert_kwargs=upsert_kwargs,
                                overwrite_kwargs=overwrite_kwargs).engine_sink())

    def write_datasink(self, datasink, *, ray_remote_args: dict | None = None,
                       concurrency: int | None = None) -> None:
        """Write through a user ``sb.Datasink`` (Ray Data's ``write_datasink``): its
        ``on_write_start()``, then ``write(blocks, ctx)`` once per partition in a task,
        then ``on_write_complete(write_result)``, or ``on_write_failed(error)`` and the
        error raised. ``ray_remote_args`` and ``concurrency`` are accepted for Ray
        compatibility and ignored (``init(num_cpus=...)`` sets the parallelism).

        >>> import streambatch as sb
        >>> class Collect(sb.Datasink):
        ...     def write(self, blocks, ctx):
        ...         return [i for b in blocks for i in b["id"].to_pylist()]
        ...     def on_write_complete(self, write_result):
        ...         self.ids = sorted(i for ids in write_result.write_returns for i in ids)
        >>> sink = Collect()
        >>> sb.range(5).write_datasink(sink)
        >>> sink.ids
        [0, 1, 2, 3, 4]
        """
        from streambatch.connectors.sink_contract import Datasink

        if not isinstance(datasink, Datasink):
            raise TypeError(f"write_datasink: expected an sb.Datasink (subclass it and "
                            f"implement write(blocks, ctx)), got {type(datasink).__name__}")
        self._write(datasink.engine_sink())

    def _sink(self, fmt: str, path, filesystem, mode, num_rows_per_file, **options) -> Any:
        from streambatch.connectors.registry import get_sink

        return get_sink(fmt)(path, filesystem=filesystem, mode=mode,
                             num_rows_per_file=num_rows_per_file, **options)

    def _write(self, sink, resume: bool = False) -> Any:
        write = self._with(L.Write(self._plan, sink=sink))

        def execute(listener, done) -> list[pa.Table]:
            with closing(write._partitions(listener=listener, done=done)) as parts:
                return [p.get() for p in parts]

        try:
            return sink.run_job(execute, plan_fingerprint(self._plan), resume)
        finally:
            self._stats = write._stats
            self._dead = sink.dead_letter_rows()
