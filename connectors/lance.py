"""Lance datasets through ``pylance`` (``pip install 'streambatch[lance]'``), as Ray Data's
``read_lance`` and ``Dataset.write_lance``.

Reads open the dataset on the driver (the latest version, or ``version``) and make one
read task per fragment, each scanning its fragment of that version with the columns and
the ``filter`` pushed into Lance's scanner. Writes write each task's fragments with
``lance.fragment.write_fragments`` and commit them in one ``LanceDataset.commit`` on the
driver after every task succeeded (see :mod:`streambatch.connectors.lakehouse`). Each task
lists the data files it wrote in a record under ``_streambatch-<job>/`` in the dataset's
directory; after the commit the files of failed or repeated attempts are removed, and after
a failed write every file it wrote (:mod:`streambatch.connectors.lance_files`).

>>> import tempfile, pyarrow as pa
>>> import lance
>>> uri = tempfile.mkdtemp() + "/t.lance"
>>> _ = lance.write_dataset(pa.table({"x": [1, 2, 3]}), uri, max_rows_per_file=2)
>>> [t.num_rows for task in LanceSource(uri).read_tasks(2, Pushdowns()) for t in task()]
[2, 1]
"""

from __future__ import annotations

import os
from functools import partial
from typing import Any

import pyarrow as pa
from streambatch.connectors.datasource import Datasource, Piece, Pushdowns, ReadTask
from streambatch.connectors.lakehouse import (
    TableSink,
    conform,
    estimated_bytes,
    non_empty,
    refuse_dropped_fields,
    refuse_extra,
    require,
    wanted_columns,
)
from streambatch.connectors.lance_files import (
    data_files,
    record_written,
    remove_unreferenced,
    remove_written_now,
)

MODES = ("create", "append", "overwrite")


def _uri(uri: Any) -> str:
    uri = os.fspath(uri)
    return uri if "://" in uri else os.path.abspath(uri)


def _open(uri: str, version: Any = None, storage_options: dict | None = None) -> Any:
    lance = require("lance", "read_lance")
    return lance.dataset(uri, version=version, storage_options=storage_options)


class LanceSource(Datasource):
    """One version of a Lance dataset: a read task per fragment."""

    name = "Lance"
    supports_projection = True
    supports_limit = True

    def __init__(self, uri: Any, version: int | str | None = None,
                 columns: list[str] | None = None, filter: str | None = None,
                 storage_options: dict | None = None,
                 scanner_options: dict | None = None) -> None:
        self.uri = _uri(uri)
        try:
            dataset = _open(self.uri, version, storage_options)
        except (ValueError, OSError) as exc:
            raise FileNotFoundError(f"read_lance: cannot open a Lance dataset at {self.uri!r}"
                                    f"{'' if version is None else f' version {version!r}'}: "
                                    f"{exc}") from exc
        self.version = dataset.version  # pinned: every task reads this version
        self._schema = dataset.schema
        self.columns = wanted_columns(None, columns, self._schema, "read_lance")
        if filter is not None and not isinstance(filter, str):
            raise TypeError(f"read_lance: filter={filter!r}; expected a Lance SQL predicate "
                            "(a str such as \"x > 2 AND s IS NOT NULL\")")
        self.filter = filter
        self.storage_options = storage_options
        self.scanner_options = dict(scanner_options or {})
        self.fragments = [(f.fragment_id, f.count_rows(), _stored(f))
                          for f in dataset.get_fragments()]

    def schema(self) -> pa.Schema:
        """The dataset's schema (of the version read)."""
        return self._schema

    def read_tasks(self, parallelism: int, pushdowns: Pushdowns) -> list[ReadTask]:
        """One task per fragment; fragments a resumed write already holds are left out."""
        columns = wanted_columns(pushdowns.columns, self.columns, self._schema, "read_lance")
        tasks = []
        for fragment, rows, stored in self.fragments:
            piece = Piece(f"fragment {fragment}")
            if pushdowns.done and pushdowns.done.covers(piece):
                continue
            read = partial(read_fragment, self.uri, self.version, self.storage_options,
                           fragment, columns, self.filter, self.scanner_options)
            size = estimated_bytes(stored, columns, self._schema, factor=1.0)
            tasks.append(ReadTask(read, rows, size, f"Lance fragment {fragment}",
                                  pieces=(piece,), filtered=self.filter is not None,
                                  per_task_row_limit=pushdowns.limit))
        return tasks


def _stored(fragment: Any) -> int | None:
    """The bytes of a fragment's data files (None when Lance does not record them)."""
    sizes: list[int] = []
    for data_file in fragment.metadata.files:
        size = getattr(data_file, "file_size_bytes", None)
        if size is None:
            return None
        sizes.append(int(size))
    return sum(sizes) if sizes else None


def read_fragment(uri: str, version: int, storage_options: dict | None, fragment: int,
                  columns: list[str] | None, filter: str | None, scanner_options: dict):
    """Stream one fragment of one version, as blocks."""
    dataset = _open(uri, version, storage_options)
    scanner = dataset.scanner(columns=columns, filter=filter,
                              fragments=[dataset.get_fragment(fragment)], **scanner_options)
    for batch in scanner.to_batches():
        if batch.num_rows:
            yield pa.Table.from_batches([batch])


class LanceSink(TableSink):
    """Writes fragments in the write tasks and commits them once, on the driver.

    ``mode``: ``"create"`` refuses an existing dataset, ``"append"`` adds a version with
    the rows added (creating a missing dataset), ``"overwrite"`` adds a version with
    only these rows (none: an empty version, with the rows' schema where known, else the
    dataset's). A write of no rows creates an empty dataset when the schema is known
    (``schema=``, or the empty blocks' columns); with none known it creates nothing."""

    who = "write_lance"

    def __init__(self, uri: Any, schema: pa.Schema | None = None, mode: str = "create",
                 max_rows_per_file: int = 64 * 1024 * 1024,
                 data_storage_version: str | None = None,
                 storage_options: dict | None = None) -> None:
        super().__init__()
        mode = str(getattr(mode, "value", mode)).lower()
        if mode not in MODES:
            raise ValueError(f"write_lance: mode={mode!r}; expected one of {MODES}")
        if schema is not None and not isinstance(schema, pa.Schema):
            raise TypeError(f"write_lance: schema must be a pyarrow.Schema, got "
                            f"{type(schema).__name__}")
        require("lance", "write_lance")
        self.uri, self.mode, self.schema = _uri(uri), mode, schema
        self.max_rows_per_file = max_rows_per_file
        self.data_storage_version = data_storage_version
        self.storage_options = storage_options
        self.read_version: int | None = None  # the version this write builds on
        self.existing_schema: pa.Schema | None = None  # that version's schema

    def _existing(self) -> Any:
        try:
            return _open(self.uri, None, self.storage_options)
        except (ValueError, OSError):
            return None

    def on_write_start(self) -> None:
        """Refuse an existing dataset under ``"create"``; learn the version and schema to
        append to."""
        dataset = self._existing()
        if dataset is None:
            return
        if self.mode == "create":
            raise FileExistsError(f"write_lance: a Lance dataset exists at {self.uri!r} and "
                                  "mode='create' refuses it; pass mode='append' or "
                                  "'overwrite'")
        self.read_version, self.existing_schema = dataset.version, dataset.schema
        if self.mode == "append":
            self.schema = dataset.schema

    def write(self, blocks, ctx) -> dict | None:
        """Write this partition's fragments (not committed: invisible until the commit);
        a partition of empty blocks returns their schema and no fragments."""
        blocks = iter(blocks)
        seen, first = _first_with_rows(blocks)
        if first is None:  # a schema of no columns is no schema: a dataset needs one
            return None if seen is None or not len(seen) else {
                "task": ctx.task_index, "fragments": [], "schema": self.schema or seen}
        schema = self.schema or first.schema
        fragments = self._write_fragments(first, non_empty(blocks), schema)
        files = data_files(fragments)
        record = record_written(self.uri, self.job, files)  # first: the cleanup finds them
        try:
            getattr(ctx, "check_running", lambda: None)()  # a thread task of a stopped job
        except BaseException:
            remove_written_now(self.uri, files, record)  # the job's cleanup may have run
            raise
        return {"task": ctx.task_index, "fragments": fragments, "schema": schema}

    def _write_fragments(self, first: pa.Table, rest, schema: pa.Schema) -> list:
        """``write_fragments`` of the blocks (conformed to ``schema``); the error of the
        blocks' producer (a UDF) is raised as it is, not Lance's wrapping of it."""
        from lance.fragment import write_fragments

        hint = "pass a schema with every column, or mode='overwrite' to change the " \
            "dataset's schema" if self.schema is not None else "pass schema= with every " \
            "column and nested field the rows may have (this partition's first block had " \
            "fewer, and its schema is the file's)"
        upstream: list[BaseException] = []  # what the blocks' producer raised

        def batches():
            try:
                for block in (first, *rest):
                    refuse_extra(block, schema, self.who, hint)
                    refuse_dropped_fields(block, schema, self.who, hint)
                    yield from conform(block, schema, self.who).to_batches()
            except BaseException as exc:
                upstream.append(exc)
                raise

        try:
            return write_fragments(pa.RecordBatchReader.from_batches(schema, batches()),
                                   self.uri, schema=schema, mode="append" if
                                   self.mode == "append" else "overwrite",
                                   max_rows_per_file=self.max_rows_per_file,
                                   data_storage_version=self.data_storage_version,
                                   storage_options=self.storage_options)
        except Exception:
            if upstream:  # Lance wraps it in an OSError: raise the UDF's own error (retries)
                raise upstream[0] from None
            raise

    def on_write_complete(self, write_result) -> None:
        """Commit every task's fragments in one new version; then remove the files of
        attempts that are not in it."""
        lance = require("lance", "write_lance")
        written = self.returned(write_result)
        fragments = [f for w in written for f in w["fragments"]]
        if self.mode == "append" and self.read_version is not None:
            operation = lance.LanceOperation.Append(fragments)
        else:
            schema = self._new_schema(written)
            if schema is None:
                remove_unreferenced(self.uri, self.job, set(), None,
                                    created=self.read_version is None)
                return  # no rows and no schema: nothing to create
            operation = lance.LanceOperation.Overwrite(schema, fragments)
        lance.LanceDataset.commit(self.uri, operation, read_version=self.read_version,
                                  storage_options=self.storage_options)
        remove_unreferenced(self.uri, self.job, set(data_files(fragments)), self._existing())

    def _new_schema(self, written: list[dict]) -> pa.Schema | None:
        """The schema of a new dataset or an overwrite's version: that of the tasks that
        wrote rows; with none, ``schema=``, the empty blocks' or the dataset's; or None."""
        with_rows = [w["schema"] for w in written if w["fragments"]]
        if with_rows:
            return _one_schema(with_rows)
        empty = [w["schema"] for w in written]
        return self.schema or (empty[0] if empty else self.existing_schema)

    def on_write_failed(self, error: Exception) -> None:
        """Remove every data file this write left (none is in a version: a commit that
        went through before the error keeps its files), and, when there was no dataset
        before, the directories left empty."""
        remove_unreferenced(self.uri, self.job, set(), self._existing(),
                            created=self.read_version is None)


def _first_with_rows(blocks) -> tuple[pa.Schema | None, pa.Table | None]:
    """(the first block's schema, the first block with rows), reading ``blocks`` up to it.

    >>> _first_with_rows(iter([pa.table({"a": pa.array([], pa.int8())})]))
    (a: int8, None)
    """
    seen = None
    for block in blocks:
        seen = block.schema if seen is None else seen
        if block.num_rows:
            return seen, block
    return seen, None


def _one_schema(schemas: list[pa.Schema]) -> pa.Schema:
    """The dataset's schema for fragments written with ``schemas``: one schema, or (as
    Ray's) their union where they differ only in top-level columns that were all null
    (type null) in some tasks; anything else fails naming the schemas.

    >>> _one_schema([pa.schema([("a", pa.int64()), ("s", pa.null())]),
    ...              pa.schema([("a", pa.int64()), ("s", pa.string())])])
    a: int64
    s: string
    >>> _one_schema([pa.schema([("a", pa.int64())]), pa.schema([("a", pa.int32())])])
    Traceback (most recent call last):
    ...
    TypeError: write_lance: the write tasks produced different schemas (a: int64 / a: int32); pass schema= to fix one
    """
    union = pa.unify_schemas(schemas, promote_options="permissive") if all(
        s.names == schemas[0].names for s in schemas) else None
    for schema in schemas:
        if union is None or any(f.type != union.field(f.name).type and (
                not pa.types.is_null(f.type) or pa.types.is_nested(union.field(f.name).type))
                for f in schema):
            shown = " / ".join(dict.fromkeys(_brief(s) for s in schemas))
            raise TypeError(f"write_lance: the write tasks produced different schemas "
                            f"({shown}); pass schema= to fix one")
    assert union is not None
    return union


def _brief(schema: pa.Schema) -> str:
    """``a: int64, b: null``.

    >>> _brief(pa.schema([("a", pa.int64()), ("b", pa.null())]))
    'a: int64, b: null'
    """
    return ", ".join(f"{f.name}: {f.type}" for f in schema)
