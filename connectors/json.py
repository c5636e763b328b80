"""JSON: a source for JSON lines and JSON arrays (detected per file), and a sink
writing JSON lines, one file per partition.

>>> import tempfile
>>> from streambatch.connectors.datasource import Pushdowns
>>> d = tempfile.mkdtemp()
>>> _ = open(f"{d}/a.jsonl", "w").write('{"x": 1}\\n{"x": 2}\\n')
>>> _ = open(f"{d}/b.json", "w").write('[{"x": 3}]')
>>> sorted(v for task in JSONSource(d).read_tasks(1, Pushdowns()) for t in task() for v in t["x"].to_pylist())
[1, 2, 3]
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import io
import json

import numpy as np
import pyarrow as pa
from streambatch.connectors.datasink import FileDatasink
from streambatch.connectors.file_based import FileReadError, FileSource
from streambatch.connectors.parquet_schema import holds_null_type


class JSONSource(FileSource):
    """``.json`` / ``.jsonl`` files: JSON lines (one object per line) or one JSON
    array of objects (or one object) per file, detected from the first character."""

    name = "JSON"
    who = "read_json"
    suffixes = (".json", ".jsonl", ".ndjson", ".json.gz", ".jsonl.gz")
    in_memory_factor = 1.0
    error_hint = "expected JSON lines (one object per line) or a JSON array of objects"

    def read_file(self, fs, entry, pushdowns):
        """Parse one file as JSON lines or a JSON array. An array's objects become rows
        as any rows do (``rows_to_block``): the union of their keys (a key an object
        lacks is null), types unified across objects; a key whose values have no
        common type (e.g. 1 and "x") fails naming the file, the object and the key.

        >>> import fsspec, tempfile
        >>> from streambatch.connectors.file_based import FileEntry
        >>> path = tempfile.mkdtemp() + "/a.json"
        >>> _ = open(path, "w").write('[{"a": 1}, {"a": 2.5, "b": "x"}]')
        >>> src = JSONSource(path)
        >>> [t.to_pylist() for t in src.read_file(fsspec.filesystem("file"), FileEntry(path, 0), None)]
        [[{'a': 1.0, 'b': None}, {'a': 2.5, 'b': 'x'}]]
        """
        with fs.open(entry.path, "rb", compression="infer") as handle:
            data = handle.read()
        head = data.lstrip()[:1]
        if not head:
            return
        if head == b"[" or (head == b"{" and _single_document(data)):
            value = json.loads(data)
            rows = value if isinstance(value, list) else [value]
            if rows and not all(isinstance(r, dict) for r in rows):
                bad = next(i for i, r in enumerate(rows) if not isinstance(r, dict))
                raise ValueError(f"a JSON array must hold objects (one per row); item {bad} is "
                                 f"a {type(rows[bad]).__name__}")
            yield _array_block(rows, entry.path, self.who)
            return
        yield read_json_lines(data, entry.path, self.who)


def read_json_lines(data: bytes, path: str = "", who: str = "read_json") -> pa.Table:
    """JSON lines by pyarrow's reader. Its type inference garbles a list whose first
    values are null (pyarrow 26: ``[null, 3]`` read as ``[3, 0]``, ``[null, "a"]`` as
    invalid strings): where the inferred schema holds a list, the lines are parsed again
    with that schema given, which reads them as written. A list of nothing but nulls
    (``list<null>``) it makes invalid either way: such files are parsed as JSON arrays
    are, object by object (slower; rare).

    >>> read_json_lines(b'{"l": [null, 3]}\\n{"l": [1, null]}\\n')["l"].to_pylist()
    [[None, 3], [1, None]]
    >>> read_json_lines(b'{"l": [null, null]}\\n{"l": null}\\n')["l"].to_pylist()
    [[None, None], None]
    """
    import pyarrow.json as pajson

    table = pajson.read_json(io.BytesIO(data))
    lists = [kind for field in table.schema for kind in _lists(field.type)]
    if any(holds_null_type(kind.value_type) for kind in lists):
        rows = [json.loads(line) for line in data.splitlines() if line.strip()]
        return _array_block(rows, path, who)
    if lists:
        options = pajson.ParseOptions(explicit_schema=table.schema)
        table = pajson.read_json(io.BytesIO(data), parse_options=options)
    return table


def _lists(kind: pa.DataType) -> list[pa.DataType]:
    """The list types in ``kind``: itself, its fields', its items' (outermost first)."""
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        return [kind] + _lists(kind.value_type)
    if pa.types.is_struct(kind):
        return [inner for f in kind for inner in _lists(f.type)]
    return []


def _array_block(rows: list[dict], path: str, who: str) -> pa.Table:
    """A JSON array's objects as one block; an object that cannot join it fails
    naming the file and the object's index in the array ("row" here)."""
    from streambatch.connectors.row_conversion import RowsToBlockError, rows_to_block

    try:
        return rows_to_block(rows)
    except RowsToBlockError as err:
        raise FileReadError(who, path, err, "rows count the objects of the JSON array from 0") from err


def _single_document(data: bytes) -> bool:
    """True when the bytes hold exactly one JSON value (a pretty-printed object)."""
    first_line = data.lstrip().split(b"\n", 1)[0]
    try:
        json.loads(first_line)
        return False
    except ValueError:
        return True


def json_default(value):
    """Serialize what ``json`` cannot: dates and times (ISO 8601), decimals, bytes
    (base64), numpy values.

    >>> json.dumps({"t": dt.datetime(2024, 1, 2, 3, 4, 5)}, default=json_default)
    '{"t": "2024-01-02T03:04:05"}'
    """
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"write_json: values of type {type(value).__name__} have no JSON form")


class JSONSink(FileDatasink):
    """One JSON-lines file per partition, named ``.json`` as Ray Data names them (one
    object per line; ``read_json`` reads both).

    >>> import tempfile
    >>> sink = JSONSink(tempfile.mkdtemp() + "/out"); _ = sink.start()
    >>> class Ctx: task_index = 0
    >>> sink.write([pa.table({"x": [1, 2]})], Ctx())["rows"].to_pylist()
    [2]
    """

    name = "JSON"
    suffix = ".json"

    def write_file(self, tables, path: str) -> tuple[int, int]:
        """Write every row as one JSON object per line; return (rows, bytes)."""
        from streambatch.connectors.tensors import records

        rows = size = 0
        with self.fs.open(path, "wb") as handle:
            for table in tables:
                for record in records(table):
                    handle.write(json.dumps(record, default=json_default).encode() + b"\n")
                rows, size = rows + table.num_rows, size + table.nbytes
        return rows, size
