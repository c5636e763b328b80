"""``Dataset.write_delta``: Delta Lake writes through ``deltalake``, as Ray Data's.

Each write task writes parquet files into the table's directory (under hive
``col=value/`` directories with ``partition_by``); one Delta commit on the driver, after
every task succeeded, adds them all (see :mod:`streambatch.connectors.lakehouse`). An
append with columns the table lacks adds them first (``schema_mode="merge"``, Ray's
default: its own Delta transaction, as Ray's) or fails (``"error"``).

>>> import tempfile
>>> from streambatch.connectors.delta_sink import DeltaSink
>>> DeltaSink(tempfile.mkdtemp(), mode="upsert")
Traceback (most recent call last):
...
ValueError: write_delta: mode='upsert'; expected one of ('append', 'overwrite', 'error', 'ignore')
"""

from __future__ import annotations

import json
import posixpath
import time
from typing import Any

import pyarrow as pa
from streambatch.connectors.datasource import Partitioning
from streambatch.connectors.delta import filesystem_of, table_uri
from streambatch.connectors.lakehouse import (
    TableSink,
    concrete,
    file_stem,
    normalized,
    refuse_extra,
    remove_uncommitted,
    require,
    unified,
    write_parquet_files,
)

MODES = ("append", "overwrite", "error", "ignore")
SCHEMA_MODES = ("merge", "error")


class DeltaSink(TableSink):
    """Writes parquet files into a Delta table and commits them once, on the driver.

    ``mode``: ``"append"`` adds rows (creating the table if missing), ``"overwrite"``
    replaces the table's rows (and schema) in one new version, ``"error"`` refuses an
    existing table, ``"ignore"`` does nothing when the table exists."""

    who = "write_delta"

    def __init__(self, path: Any, mode: str = "append", partition_by: list[str] | None = None,
                 storage_options: dict | None = None, schema_mode: str = "merge",
                 filesystem: Any = None, name: str | None = None,
                 description: str | None = None) -> None:
        super().__init__()
        mode = str(getattr(mode, "value", mode)).lower()
        if mode not in MODES:
            raise ValueError(f"write_delta: mode={mode!r}; expected one of {MODES}")
        if schema_mode not in SCHEMA_MODES:
            raise ValueError(f"write_delta: schema_mode={schema_mode!r}; expected one of "
                             f"{SCHEMA_MODES}")
        if isinstance(partition_by, str):
            partition_by = [partition_by]
        require("deltalake", "write_delta")
        self.uri, self.mode, self.schema_mode = table_uri(path), mode, schema_mode
        self.partition_by = list(partition_by or [])
        self.filesystem, self.storage_options = filesystem, storage_options
        self.name, self.description = name, description
        self.schema: pa.Schema | None = None  # an existing table's, when appending

    def _table(self) -> Any:
        deltalake = require("deltalake", "write_delta")
        if not deltalake.DeltaTable.is_deltatable(self.uri, self.storage_options):
            return None
        return deltalake.DeltaTable(self.uri, storage_options=self.storage_options)

    def skip_write(self) -> bool:
        """``mode="ignore"`` and the table exists."""
        return self.mode == "ignore" and self._table() is not None

    def on_write_start(self) -> None:
        """Refuse an existing table under ``mode="error"``; learn the schema and the
        partition columns of the table appended to."""
        table = self._table()
        if table is not None and self.mode == "error":
            raise FileExistsError(f"write_delta: a Delta table exists at {self.uri!r} and "
                                  "mode='error' refuses it; pass mode='append' or 'overwrite'")
        if table is not None and self.mode == "append":
            self.schema = pa.schema(table.schema().to_arrow())
            existing = list(table.metadata().partition_columns)
            if self.partition_by and self.partition_by != existing:
                raise ValueError(f"write_delta: the table at {self.uri!r} is partitioned by "
                                 f"{existing}, not partition_by={self.partition_by}")
            self.partition_by = existing
        fs, root = filesystem_of(self.uri, self.filesystem)
        if hasattr(fs, "makedirs"):
            fs.makedirs(root, exist_ok=True)

    def write(self, blocks, ctx) -> dict | None:
        """Write this partition's parquet files (one per hive directory with
        ``partition_by``, else one unless its blocks' columns differ)."""
        fs, root = filesystem_of(self.uri, self.filesystem)
        stem = file_stem(self.job, ctx)
        blocks = self._checked(blocks)
        if self.partition_by:
            files = self._write_partitioned(blocks, fs, root, stem)
        else:
            opener = getattr(fs, "open_output_stream", None)

            def open_file(index: int) -> tuple[str, Any]:
                name = f"{stem}-{index}.parquet"
                path = f"{root.rstrip('/')}/{name}"
                return name, opener(path) if opener else fs.open(path, "wb")

            files = write_parquet_files(blocks, self.schema, open_file, self.who)
        return {"task": ctx.task_index, "files": files,
                "time": int(time.time() * 1000)} if files else None

    def _checked(self, blocks):
        for block in blocks:
            missing = [c for c in self.partition_by if c not in block.column_names]
            if missing:
                raise ValueError(f"write_delta: the rows have no partition column(s) "
                                 f"{missing}; the table is partitioned by {self.partition_by}")
            if self.schema is not None and self.schema_mode == "error":
                refuse_extra(block, self.schema, self.who, "pass schema_mode='merge' to "
                             "add them, or select the table's columns")
            yield block

    def _write_partitioned(self, blocks, fs: Any, root: str, stem: str) -> list[dict]:
        import pyarrow.dataset as pds
        from streambatch.connectors.paths import arrow_filesystem

        arrow_fs = fs if isinstance(fs, pa.fs.FileSystem) else arrow_filesystem(fs)
        files: list[dict] = []
        for index, block in enumerate(b for b in blocks if b.num_rows):
            table = normalized(block, self.schema, self.who)
            keys = table.select(self.partition_by).schema

            def visit(written: Any, schema: pa.Schema = table.schema) -> None:
                path = posixpath.relpath(written.path.lstrip("/"), root.strip("/"))
                files.append({"path": path, "rows": written.metadata.num_rows,
                              "bytes": written.size, "schema": schema,
                              "values": Partitioning("hive").parse(path)})

            pds.write_dataset(table, base_dir=root, filesystem=arrow_fs, format="parquet",
                              partitioning=pds.partitioning(keys, flavor="hive"),
                              basename_template=f"{stem}-{index}-{{i}}.parquet",
                              existing_data_behavior="overwrite_or_ignore",
                              file_visitor=visit)
        return files

    def on_write_complete(self, write_result) -> None:
        """Commit every task's files in one Delta transaction (after adding new columns
        to the table appended to)."""
        deltalake = require("deltalake", "write_delta")
        from deltalake.transaction import AddAction, create_table_with_add_actions

        written = self.returned(write_result)
        files = [(f, w["time"]) for w in written for f in w["files"]]
        table = self._table()
        found = unified([f["schema"] for f, _ in files], self.who) if files else None
        if self.schema is not None and table is not None:
            schema = self._merged(table, found)
            table = self._table()
        elif found is not None:
            schema = concrete(found)
        elif table is not None:
            schema = pa.schema(table.schema().to_arrow())
        else:
            return  # no rows and no table: nothing to create
        actions = [AddAction(f["path"], f["bytes"], f.get("values", {}), when, True,
                             json.dumps({"numRecords": f["rows"]})) for f, when in files]
        delta_schema = deltalake.Schema.from_arrow(schema)
        if table is None:
            create_table_with_add_actions(self.uri, delta_schema, actions, mode="error",
                                          partition_by=self.partition_by or None,
                                          name=self.name, description=self.description,
                                          storage_options=self.storage_options)
        else:
            table.create_write_transaction(actions, mode="overwrite" if self.mode == "overwrite"
                                           else "append", schema=delta_schema,
                                           partition_by=self.partition_by or None)
        remove_uncommitted(self.uri, self.job, {posixpath.basename(f["path"]) for f, _ in files})

    def _merged(self, table: Any, found: pa.Schema | None) -> pa.Schema:
        """The table's schema, with the columns the rows added (``schema_mode="merge"``:
        added to the table now, nullable)."""
        existing = pa.schema(table.schema().to_arrow())
        new = [f.with_nullable(True) for f in (found or []) if f.name not in existing.names
               and not pa.types.is_null(f.type)]
        if not new:
            return existing
        if self.schema_mode == "error":
            raise ValueError(f"write_delta: column(s) {[f.name for f in new]} are not in the "
                             "table; pass schema_mode='merge' to add them")
        deltalake = require("deltalake", "write_delta")
        table.alter.add_columns(deltalake.Schema.from_arrow(pa.schema(new)).fields)
        return pa.schema(list(existing) + new)

    def on_write_failed(self, error: Exception) -> None:
        """Remove every file this write left: none of them was committed."""
        remove_uncommitted(self.uri, self.job, set())
