"""The canonical form rows are compared in (engine output and oracle alike).

Values, not Arrow types, are compared:
- numpy arrays (tensor rows) and lists are nested lists, so a tensor's shape is
  kept in the nesting (a flattened tensor does not compare equal);
- a key whose value is null is the same as a missing key (blocks take the union of
  keys, missing ones null), at every dict level;
- NaN is null (numpy and pandas batches have no other null for floats); an
  integral float equals the int (pandas turns nullable ints to floats); floats are
  otherwise compared exactly; bools are not ints;
- long strings and bytes are replaced by a digest (kept comparable, not kept whole).

Engine tables are decoded here, not by the engine's helpers: fixed- and
variable-shape tensor columns become one array per row.
"""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pyarrow as pa

FIXED = "arrow.fixed_shape_tensor"
VARIABLE = "arrow.variable_shape_tensor"


def canon(value):
    """A JSON-able canonical form of ``value``.

    >>> canon({"a": None, "b": [1.0, float("nan")], "c": np.ones((1, 2), np.int8)})
    {'b': [1, None], 'c': [[1, 1]]}
    """
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        if math.isnan(f):
            return None
        if math.isinf(f):
            return "inf" if f > 0 else "-inf"
        if f.is_integer() and abs(f) < 2**63:
            return int(f)
        return f
    if isinstance(value, str):
        if len(value) <= 200:
            return value
        return f"<str {len(value)} {hashlib.sha1(value.encode('utf-8', 'surrogatepass')).hexdigest()}>"
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        return {"$bytes": data.hex() if len(data) <= 100 else hashlib.sha1(data).hexdigest()}
    if isinstance(value, np.ndarray):
        return canon(value.tolist())
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            c = canon(v)
            if c is not None:
                out[str(k)] = c
        return out
    if isinstance(value, (list, tuple)):
        return [canon(v) for v in value]
    if hasattr(value, "tolist"):  # numpy scalars of other kinds
        return canon(value.tolist())
    return {"$repr": repr(value)}


def row_key(row: dict, str_keys: tuple = ()) -> str:
    """The row's canonical JSON text (``str_keys``: values compared as text, e.g. hive
    partition columns, which a path holds as text)."""
    if str_keys:
        row = {k: (str(v) if k in str_keys and v is not None else v) for k, v in row.items()}
    return json.dumps(canon(row), sort_keys=True, ensure_ascii=True, separators=(",", ":"))


def table_rows(table: pa.Table) -> list[dict]:
    """The rows of an engine table; tensor columns give one numpy array per row."""
    columns = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        columns[name] = column_values(column)
    return [{name: columns[name][i] for name in table.column_names}
            for i in range(table.num_rows)]


def column_values(column) -> list:
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    typ = column.type
    if isinstance(typ, pa.BaseExtensionType) and typ.extension_name in (FIXED, VARIABLE):
        out: list = []
        for chunk in chunks:
            out.extend(_fixed_rows(chunk) if typ.extension_name == FIXED else _variable_rows(chunk))
        return out
    return column.to_pylist()


def _fixed_rows(chunk) -> list:
    shape = tuple(chunk.type.shape)
    storage = chunk.storage
    size = storage.type.list_size
    flat = storage.values.slice(storage.offset * size, len(storage) * size)
    values = flat.to_numpy(zero_copy_only=False).reshape((len(storage), *shape))
    perm = getattr(chunk.type, "permutation", None)
    if perm and list(perm) != list(range(len(shape))):
        raise AssertionError(f"tensor with permutation {perm}: not decoded by the harness")
    valid = chunk.is_valid().to_pylist()
    return [v if ok else None for v, ok in zip(values, valid, strict=True)]


def _variable_rows(chunk) -> list:
    storage = chunk.storage
    data, shape = storage.flatten()  # children with the slice's offset applied
    ndim = shape.type.list_size
    out = []
    for i in range(len(chunk)):
        if not chunk[i].is_valid:
            out.append(None)
            continue
        dims = shape[i].as_py()
        values = data[i].values.to_numpy(zero_copy_only=False) if data[i].is_valid else np.array([])
        out.append(values.reshape(dims if len(dims) == ndim else (-1,)))
    return out
