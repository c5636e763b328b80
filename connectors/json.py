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
import math

import numpy as np
import pyarrow as pa
from streambatch.connectors.arrow_types import list_like
from streambatch.connectors.datasink import FileDatasink
from streambatch.connectors.file_based import FileReadError, FileSource
from streambatch.connectors.parquet_schema import holds_null_type
from streambatch.connectors.wide_ints import exact_kind, kinds_fitting, may_hold_wide_ints


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
    are, object by object (slower; rare). Integers beyond int64 it infers as float64,
    rounding them: they are parsed again as uint64 (none negative) or decimal128(38, 0),
    and fail naming the file and the key beyond 38 digits (``wide_int_kinds``).

    >>> read_json_lines(b'{"l": [null, 3]}\\n{"l": [1, null]}\\n')["l"].to_pylist()
    [[None, 3], [1, None]]
    >>> read_json_lines(b'{"l": [null, null]}\\n{"l": null}\\n')["l"].to_pylist()
    [[None, None], None]
    >>> read_json_lines(b'{"u": 18446744073709551615}\\n{"u": 1}\\n')["u"].to_pylist()
    [18446744073709551615, 1]
    """
    import pyarrow.json as pajson

    table = pajson.read_json(io.BytesIO(data))
    lists = [kind for field in table.schema for kind in _lists(field.type)]
    if any(holds_null_type(kind.value_type) for kind in lists):
        rows = [json.loads(line) for line in data.splitlines() if line.strip()]
        return _array_block(rows, path, who)
    wide = wide_int_kinds(table, data, path, who)
    if lists or wide:
        schema = table.schema
        for leaf, kind in wide.items():
            index = schema.get_field_index(leaf[0])
            field = schema.field(index)
            schema = schema.set(index, field.with_type(_with_leaf(field.type, leaf[1:], kind)))
        options = pajson.ParseOptions(explicit_schema=schema)
        table = pajson.read_json(io.BytesIO(data), parse_options=options)
    return table


Leaf = tuple[str | None, ...]  # a column's name, then a struct field's name or None (a list's items) per level


def wide_int_kinds(table: pa.Table, data: bytes, path: str = "",
                   who: str = "read_json") -> dict[Leaf, pa.DataType]:
    """The float64 leaves of ``table`` (parsed from ``data``, JSON lines) that hold
    integers beyond int64 as written, each with the exact type to read them as
    (``wide_ints``: uint64 when none is negative, else decimal128(38, 0)). pyarrow
    infers float64 for them, rounding 18446744073709551615 to 1.8446744073709552e+19.
    A leaf holding a number written as a float ("2.0", "1e+20") stays float64.

    >>> data = b'{"u": 18446744073709551615, "f": 1e+20}\\n{"u": 1, "f": 2.0}\\n'
    >>> import pyarrow.json as pajson
    >>> wide_int_kinds(pajson.read_json(io.BytesIO(data)), data)
    {('u',): DataType(uint64)}
    """
    leaves = [leaf for field in table.schema for leaf in _float_leaves(field.type, (field.name,))
              if may_hold_wide_ints(_leaf_values(table.column(leaf[0]), leaf[1:]))]
    if not leaves:
        return {}
    written: dict[Leaf, list] = {leaf: [] for leaf in leaves}
    for line in data.splitlines():
        if line.strip():
            row = json.loads(line, parse_int=str, parse_float=_not_integer)
            for leaf, values in written.items():
                values.extend(_at(row, leaf))
    kinds = {}
    for leaf, values in written.items():
        if any(v is _NOT_INTEGER for v in values):
            continue  # floats as written
        fitting = kinds_fitting(pa.array(values, pa.string()))
        if fitting is not None:
            kinds[leaf] = exact_kind(fitting, who, path, ".".join(s or "[]" for s in leaf))
    return kinds


_NOT_INTEGER = object()


def _not_integer(_literal: str) -> object:
    """``json.loads``'s ``parse_float``: a marker for a number written as a float."""
    return _NOT_INTEGER


def _float_leaves(kind: pa.DataType, leaf: Leaf) -> list[Leaf]:
    """The float64 leaves in ``kind`` (a column's type, the column being ``leaf``)."""
    if pa.types.is_float64(kind):
        return [leaf]
    if pa.types.is_list(kind):
        return _float_leaves(kind.value_type, (*leaf, None))
    if pa.types.is_struct(kind):
        return [inner for f in kind for inner in _float_leaves(f.type, (*leaf, f.name))]
    return []


def _leaf_values(column: pa.ChunkedArray, steps: Leaf) -> pa.ChunkedArray:
    """The values at ``steps`` below ``column`` (its lists' items, its structs' fields)."""
    chunks = list(column.chunks)
    for step in steps:
        if step is None:
            chunks = [chunk.flatten() for chunk in chunks]
        else:
            chunks = [chunk.flatten()[chunk.type.get_field_index(step)] for chunk in chunks]
    return pa.chunked_array(chunks, type=pa.float64())


def _at(value: object, steps: Leaf) -> list:
    """The values at ``steps`` in a parsed JSON value (nulls left out)."""
    if value is None:
        return []
    if not steps:
        return [value]
    step, rest = steps[0], steps[1:]
    if step is None:
        return [v for item in value for v in _at(item, rest)] if isinstance(value, list) else []
    return _at(value.get(step), rest) if isinstance(value, dict) else []


def _with_leaf(kind: pa.DataType, steps: Leaf, new: pa.DataType) -> pa.DataType:
    """``kind`` with the type at ``steps`` below it replaced by ``new``."""
    if not steps:
        return new
    step, rest = steps[0], steps[1:]
    if step is None:
        return pa.list_(kind.value_field.with_type(_with_leaf(kind.value_type, rest, new)))
    return pa.struct([f.with_type(_with_leaf(f.type, rest, new)) if f.name == step else f
                      for f in kind])


def _lists(kind: pa.DataType) -> list[pa.DataType]:
    """The list types in ``kind``: itself, its fields', its items' (outermost first)."""
    if list_like(kind):
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


def json_line(record: dict) -> str:
    """``record`` as one line of standard JSON: NaN and infinities as null (as Ray Data
    and pandas write them; ``NaN``/``Infinity`` tokens are not JSON, and strict readers
    refuse the file).

    >>> json_line({"a": 1, "f": float("nan"), "v": [1.5, float("-inf")]})
    '{"a": 1, "f": null, "v": [1.5, null]}'
    """
    try:
        return json.dumps(record, default=json_default, allow_nan=False)
    except ValueError:  # a non-finite float somewhere (rare: only such rows pay for this)
        return json.dumps(_finite(record), default=json_default, allow_nan=False)


def _finite(value):
    """``value`` with every NaN and infinity (nested too) as None."""
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.ndarray):
        return _finite(value.tolist())
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def refused_map(kind: pa.DataType) -> pa.DataType | None:
    """The first map type in ``kind`` (at any depth) whose keys are not strings (a JSON
    object's keys are), or None.

    >>> refused_map(pa.list_(pa.map_(pa.int64(), pa.string())))
    MapType(map<int64, string>)
    >>> refused_map(pa.map_(pa.string(), pa.int64())) is None
    True
    """
    if pa.types.is_map(kind):
        key = kind.key_type
        if not (pa.types.is_string(key) or pa.types.is_large_string(key)
                or pa.types.is_string_view(key)):
            return kind
        return refused_map(kind.item_type)
    if list_like(kind):
        return refused_map(kind.value_type)
    if pa.types.is_struct(kind):
        return next((found for f in kind if (found := refused_map(f.type)) is not None), None)
    return None


def map_columns(schema: pa.Schema) -> dict[str, pa.DataType]:
    """The columns of ``schema`` holding maps (at any depth), by name; a TypeError naming
    the first whose map keys are not strings (a JSON object's keys are).

    >>> map_columns(pa.schema([("m", pa.map_(pa.string(), pa.int64())), ("x", pa.int64())]))
    {'m': MapType(map<string, int64>)}
    >>> map_columns(pa.schema([("m", pa.map_(pa.int64(), pa.int64()))]))
    Traceback (most recent call last):
    ...
    TypeError: write_json: column 'm' has type map<int64, int64>, whose keys (int64) a JSON object cannot hold (its keys are strings); cast the keys to strings first, write it with write_parquet, or drop_columns(['m'])
    """
    maps = {}
    for field in schema:
        refused = refused_map(field.type)
        if refused is not None:
            raise TypeError(
                f"write_json: column {field.name!r} has type {field.type}, whose keys "
                f"({refused.key_type}) a JSON object cannot hold (its keys are strings); cast "
                f"the keys to strings first, write it with write_parquet, or "
                f"drop_columns([{field.name!r}])")
        if _holds_map(field.type):
            maps[field.name] = field.type
    return maps


def _holds_map(kind: pa.DataType) -> bool:
    """True when ``kind`` is a map or holds one (in lists, structs, maps)."""
    if pa.types.is_map(kind):
        return True
    if list_like(kind):
        return _holds_map(kind.value_type)
    return pa.types.is_struct(kind) and any(_holds_map(f.type) for f in kind)


def as_objects(value: object, kind: pa.DataType, column: str) -> object:
    """A value of type ``kind`` (as ``to_pylist`` gives it) with its maps, lists of
    (key, value) pairs, as dicts: JSON objects. A map holding a key twice fails naming
    the column (an object would keep one of them).

    >>> as_objects([("a", 1), ("b", 2)], pa.map_(pa.string(), pa.int64()), "m")
    {'a': 1, 'b': 2}
    """
    if value is None:
        return None
    if pa.types.is_map(kind):
        pairs = value if isinstance(value, list) else []
        found = {k: as_objects(v, kind.item_type, column) for k, v in pairs}
        if len(found) != len(pairs):
            twice = next(k for i, (k, _) in enumerate(pairs) if k in dict(pairs[:i]))
            raise ValueError(f"write_json: column {column!r} holds a map with the key {twice!r} "
                             f"twice, which a JSON object cannot hold")
        return found
    if list_like(kind) and isinstance(value, list):
        return [as_objects(v, kind.value_type, column) for v in value]
    if pa.types.is_struct(kind) and isinstance(value, dict):
        return {f.name: as_objects(value.get(f.name), f.type, column) for f in kind}
    return value


class JSONSink(FileDatasink):
    """One JSON-lines file per partition, named ``.json`` as Ray Data names them (one
    object per line; ``read_json`` reads both). A map column is written as JSON
    objects (``{"a": 1, "b": 2}``), which ``read_json`` reads back as a struct: one
    field per key found in the file, null in the rows whose map lacks that key (an
    empty map reads as a struct of nulls). A map whose keys are not strings, or that
    holds a key twice, fails naming the column.

    >>> import tempfile
    >>> sink = JSONSink(tempfile.mkdtemp() + "/out"); _ = sink.start()
    >>> class Ctx: task_index = 0
    >>> sink.write([pa.table({"x": [1, 2]})], Ctx())["rows"].to_pylist()
    [2]
    """

    name = "JSON"
    suffix = ".json"
    resumable = True  # write_*(resume=True) finishes an interrupted write

    def write_file(self, tables, path: str) -> tuple[int, int]:
        """Write every row as one JSON object per line; return (rows, bytes)."""
        from streambatch.connectors.tensors import records

        rows = size = 0
        with self.fs.open(path, "wb") as handle:
            for table in tables:
                maps = map_columns(table.schema)
                for record in records(table):
                    for name, kind in maps.items():
                        record[name] = as_objects(record[name], kind, name)
                    handle.write(json_line(record).encode() + b"\n")
                rows, size = rows + table.num_rows, size + table.nbytes
        return rows, size
