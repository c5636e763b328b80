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
from streambatch.connectors.datasink import Datasink
from streambatch.connectors.file_based import FileSource


class JSONSource(FileSource):
    """``.json`` / ``.jsonl`` files: JSON lines (one object per line) or one JSON
    array of objects (or one object) per file, detected from the first character."""

    name = "JSON"
    who = "read_json"
    suffixes = (".json", ".jsonl", ".ndjson", ".json.gz", ".jsonl.gz")
    in_memory_factor = 1.0
    error_hint = "expected JSON lines (one object per line) or a JSON array of objects"

    def read_file(self, fs, entry, pushdowns):
        """Parse one file as JSON lines or a JSON array."""
        import pyarrow.json as pajson

        with fs.open(entry.path, "rb", compression="infer") as handle:
            data = handle.read()
        head = data.lstrip()[:1]
        if not head:
            return
        if head == b"[" or (head == b"{" and _single_document(data)):
            value = json.loads(data)
            rows = value if isinstance(value, list) else [value]
            if rows and not all(isinstance(r, dict) for r in rows):
                raise ValueError("a JSON array must hold objects (one per row)")
            yield pa.Table.from_pylist(rows)
            return
        yield pajson.read_json(io.BytesIO(data))


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


class JSONSink(Datasink):
    """One JSON-lines file per partition (``.jsonl``).

    >>> import tempfile
    >>> sink = JSONSink(tempfile.mkdtemp() + "/out"); _ = sink.start()
    >>> class Ctx: task_index = 0
    >>> sink.write([pa.table({"x": [1, 2]})], Ctx())["rows"].to_pylist()
    [2]
    """

    name = "JSON"
    suffix = ".jsonl"

    def write_file(self, tables, path: str) -> tuple[int, int]:
        """Write every row as one JSON object per line; return (rows, bytes)."""
        from streambatch.connectors.tensors import is_tensor_type, tensor_to_numpy

        rows = size = 0
        with self.fs.open(path, "wb") as handle:
            for table in tables:
                tensors = {f.name: tensor_to_numpy(table.column(f.name)) for f in table.schema
                           if is_tensor_type(f.type)}
                records = table.drop_columns(list(tensors)).to_pylist()
                for i, record in enumerate(records):
                    record.update({k: v[i] for k, v in tensors.items()})
                    handle.write(json.dumps(record, default=json_default).encode() + b"\n")
                rows, size = rows + table.num_rows, size + table.nbytes
        return rows, size
