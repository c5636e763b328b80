"""Apache Iceberg tables through PyIceberg (``pip install 'streambatch[iceberg]'``), as
Ray Data's ``read_iceberg`` and ``Dataset.write_iceberg``.

The catalog is ``pyiceberg.catalog.load_catalog(name, **properties)`` from
``catalog_kwargs`` (``name`` defaults to ``"default"``). Reads plan the scan on the
driver (row filter, selected fields, snapshot) and make one read task per planned file
(or ``override_num_blocks`` groups of them), each reading its files with PyIceberg's
Arrow reader (deletes and residual filters applied). Writes write one parquet file per
write task under the table's ``data/`` directory and add them all in one transaction on
the driver after every task succeeded (see :mod:`streambatch.connectors.lakehouse`).

>>> import tempfile
>>> d = tempfile.mkdtemp()
>>> kw = {"type": "sql", "uri": f"sqlite:///{d}/c.db", "warehouse": f"file://{d}"}
>>> from pyiceberg.catalog import load_catalog
>>> catalog = load_catalog("default", **kw)
>>> catalog.create_namespace("db")
>>> catalog.create_table("db.t", schema=pa.schema([("x", pa.int64())])).append(pa.table({"x": [1]}))
>>> [t.to_pylist() for task in IcebergSource("db.t", catalog_kwargs=kw).read_tasks(2, Pushdowns()) for t in task()]
[[{'x': 1}]]
"""

from __future__ import annotations

from functools import partial
from typing import Any

import pyarrow as pa
from streambatch.connectors.datasource import Datasource, Piece, Pushdowns, ReadTask
from streambatch.connectors.lakehouse import (
    TableSink,
    concrete,
    estimated_bytes,
    file_stem,
    remove_uncommitted,
    require,
    unified,
    wanted_columns,
    write_parquet_files,
)

MODES = ("append", "overwrite")


def load_catalog(catalog_kwargs: dict | None, who: str) -> Any:
    """The PyIceberg catalog ``catalog_kwargs`` describe (``name`` plus properties)."""
    catalog = require("pyiceberg.catalog", who)
    kwargs = dict(catalog_kwargs or {})
    return catalog.load_catalog(kwargs.pop("name", "default"), **kwargs)


def _split(identifier: Any) -> tuple[str, str]:
    """(namespace, table) of ``"db.t"`` or ``("db", "t")``.

    >>> _split("a.b.t"), _split(("db", "t"))
    (('a.b', 't'), ('db', 't'))
    """
    parts = identifier.split(".") if isinstance(identifier, str) else list(identifier)
    if len(parts) < 2:
        raise ValueError(f"iceberg: table_identifier={identifier!r}; expected "
                         "'namespace.table'")
    return ".".join(parts[:-1]), parts[-1]


class IcebergSource(Datasource):
    """One snapshot of an Iceberg table: a read task per planned file."""

    name = "Iceberg"
    supports_projection = True
    supports_limit = True

    def __init__(self, table_identifier: str, row_filter: Any = None,
                 columns: list[str] | None = None, snapshot_id: int | None = None,
                 scan_kwargs: dict | None = None, catalog_kwargs: dict | None = None) -> None:
        table = load_catalog(catalog_kwargs, "read_iceberg").load_table(table_identifier)
        self.identifier, self.catalog_kwargs = table_identifier, dict(catalog_kwargs or {})
        self.metadata, self.io = table.metadata, table.io
        self.snapshot_id = snapshot_id if snapshot_id is not None else (
            table.current_snapshot().snapshot_id if table.current_snapshot() else None)
        self.row_filter, self.scan_kwargs = row_filter, dict(scan_kwargs or {})
        self._schema = table.schema().as_arrow()
        self.columns = wanted_columns(None, columns, self._schema, "read_iceberg")
        self._table = table

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_table", None)  # a catalog connection: the tasks carry metadata and io
        return state

    def schema(self) -> pa.Schema:
        """The table's schema as Arrow."""
        return self._schema

    def _scan(self, columns: list[str] | None) -> Any:
        table = self.__dict__.get("_table")
        if table is None:  # a copy of the source (pickled): open the table again
            table = self._table = load_catalog(self.catalog_kwargs,
                                               "read_iceberg").load_table(self.identifier)
        kwargs: dict[str, Any] = dict(self.scan_kwargs)
        if self.row_filter is not None:
            kwargs["row_filter"] = self.row_filter
        return table.scan(selected_fields=tuple(columns) if columns else ("*",),
                          snapshot_id=self.snapshot_id, **kwargs)

    def read_tasks(self, parallelism: int, pushdowns: Pushdowns) -> list[ReadTask]:
        """The scan's planned files, one task each (or ``override_num_blocks`` groups)."""
        columns = wanted_columns(pushdowns.columns, self.columns, self._schema,
                                 "read_iceberg")
        if self.snapshot_id is None:
            return []  # a table with no snapshot has no rows
        scan = self._scan(columns)
        planned = [t for t in scan.plan_files()
                   if not (pushdowns.done and pushdowns.done.covers(Piece(t.file.file_path)))]
        groups = _groups(planned, self.parallelism or len(planned))
        reader = (self.metadata, self.io, scan.projection(), scan.row_filter,
                  scan.case_sensitive, scan.limit)
        return [ReadTask(partial(read_files, *reader, group),
                         sum(t.file.record_count for t in group),
                         estimated_bytes(sum(t.file.file_size_in_bytes for t in group),
                                         columns, self._schema),
                         f"Iceberg {len(group)} file(s) from {group[0].file.file_path}",
                         pieces=tuple(Piece(t.file.file_path) for t in group),
                         filtered=self.row_filter is not None,
                         per_task_row_limit=pushdowns.limit,
                         input_files=tuple(t.file.file_path for t in group))
                for group in groups]


def _groups(tasks: list, count: int) -> list[list]:
    """``tasks`` in ``count`` groups of about equal bytes (largest first, each to the
    lightest group); one task a group, in the planned order, when ``count`` allows.

    >>> class F: pass
    >>> def task(n):
    ...     t = F(); t.file = F(); t.file.file_size_in_bytes = n; return t
    >>> [[t.file.file_size_in_bytes for t in g] for g in _groups([task(1), task(5), task(3)], 2)]
    [[5], [3, 1]]
    >>> [[t.file.file_size_in_bytes for t in g] for g in _groups([task(1), task(5)], 4)]
    [[1], [5]]
    """
    if count >= len(tasks):
        return [[task] for task in tasks]
    groups: list[list] = [[] for _ in range(max(1, count))]
    sizes = [0] * len(groups)
    for task in sorted(tasks, key=lambda t: -t.file.file_size_in_bytes):
        lightest = sizes.index(min(sizes))
        groups[lightest].append(task)
        sizes[lightest] += task.file.file_size_in_bytes
    return groups


def read_files(metadata: Any, io: Any, projection: Any, row_filter: Any, case_sensitive: bool,
               limit: int | None, tasks: list):
    """Stream the planned files of one read task."""
    from pyiceberg.io.pyarrow import ArrowScan

    scan = ArrowScan(metadata, io, projection, row_filter, case_sensitive, limit)
    for batch in scan.to_record_batches(tasks):
        if batch.num_rows:
            yield pa.Table.from_batches([batch])


class IcebergSink(TableSink):
    """Writes parquet files in tasks and adds them to the table in one transaction."""

    who = "write_iceberg"

    def __init__(self, table_identifier: str, catalog_kwargs: dict | None = None,
                 snapshot_properties: dict | None = None, mode: Any = "append",
                 overwrite_filter: Any = None, upsert_kwargs: dict | None = None,
                 overwrite_kwargs: dict | None = None) -> None:
        super().__init__()
        mode = str(getattr(mode, "value", mode)).lower()
        if mode == "upsert" or upsert_kwargs:
            raise NotImplementedError("write_iceberg: mode='upsert' is not supported; append "
                                      "or overwrite (with overwrite_filter)")
        if mode not in MODES:
            raise ValueError(f"write_iceberg: mode={mode!r}; expected one of {MODES}")
        if overwrite_filter is not None and mode != "overwrite":
            raise ValueError("write_iceberg: overwrite_filter is only for mode='overwrite'")
        require("pyiceberg", "write_iceberg")
        self.identifier, self.catalog_kwargs = table_identifier, dict(catalog_kwargs or {})
        self.properties = dict(snapshot_properties or {})
        self.mode, self.overwrite_filter = mode, overwrite_filter
        self.overwrite_kwargs = dict(overwrite_kwargs or {})
        _split(table_identifier)
        self.location = ""
        self.io: Any = None
        self.schema: pa.Schema | None = None  # the existing table's, to cast to

    def _table(self, catalog: Any) -> Any:
        from pyiceberg.exceptions import NoSuchTableError

        try:
            return catalog.load_table(self.identifier)
        except NoSuchTableError:
            return None

    def on_write_start(self) -> None:
        """Find where the files go: the table's location, or where the catalog will put
        a new table."""
        from pyiceberg.io import load_file_io

        catalog = load_catalog(self.catalog_kwargs, self.who)
        table = self._table(catalog)
        if table is not None:
            self.location, self.io = table.location(), table.io
            self.schema = table.schema().as_arrow()
            return
        resolve = getattr(catalog, "_resolve_table_location", None)
        if resolve is None:
            raise ValueError(f"write_iceberg: no table {self.identifier!r} in the catalog; "
                             "create it first (catalog.create_table)")
        namespace, name = _split(self.identifier)
        catalog.create_namespace_if_not_exists(namespace)  # the new table's location is in it
        self.location = resolve(None, namespace, name)
        self.io = load_file_io(catalog.properties, self.location)

    def write(self, blocks, ctx) -> dict | None:
        """Write this partition to parquet files under the table's ``data/`` (one, unless
        its blocks' columns differ); no field ids: ``add_files`` maps columns by name."""
        stem = file_stem(self.job, ctx)

        def open_file(index: int) -> tuple[str, Any]:
            path = f"{self.location.rstrip('/')}/data/{stem}-{index}.parquet"
            return path, self.io.new_output(path).create(overwrite=True)

        files = write_parquet_files(blocks, self.schema, open_file, self.who)
        return {"task": ctx.task_index, "files": files} if files else None

    def on_write_complete(self, write_result) -> None:
        """Add every task's file in one transaction (creating the table if missing)."""
        files = [f for w in self.returned(write_result) for f in w["files"]]
        paths = [f["path"] for f in files]
        catalog = load_catalog(self.catalog_kwargs, self.who)
        table = self._table(catalog)
        schema = concrete(unified([f["schema"] for f in files], self.who)) if files else None
        if table is None:
            if schema is None:
                return  # no rows and no table: nothing to create
            transaction = catalog.create_table_transaction(self.identifier, schema=schema,
                                                           location=self.location)
        else:
            transaction = table.transaction()
            if schema is not None:
                with transaction.update_schema() as update:
                    update.union_by_name(schema)  # new columns join the table
            if self.mode == "overwrite":
                self._delete(transaction)
        if paths:
            transaction.add_files(paths, snapshot_properties=self.properties)
        transaction.commit_transaction()
        remove_uncommitted(f"{self.location.rstrip('/')}/data", self.job,
                           {p.rsplit("/", 1)[-1] for p in paths})

    def _delete(self, transaction: Any) -> None:
        from pyiceberg.expressions import AlwaysTrue

        where = self.overwrite_filter if self.overwrite_filter is not None else AlwaysTrue()
        transaction.delete(where, snapshot_properties=self.properties,
                           **self.overwrite_kwargs)

    def on_write_failed(self, error: Exception) -> None:
        """Remove every file this write left: none of them was committed."""
        if self.location:
            remove_uncommitted(f"{self.location.rstrip('/')}/data", self.job, set())
