"""Tensor columns: Arrow's canonical fixed-shape and variable-shape tensor extension types.

Arrays of equal shape become ``arrow.fixed_shape_tensor`` (zero-copy to and from
numpy); arrays of different shapes become ``arrow.variable_shape_tensor``
(``struct<data: list<T>, shape: fixed_size_list<int32>[ndim]>``).

>>> import numpy as np
>>> col = tensor_array([np.zeros((2, 2)), np.ones((2, 2))])
>>> col.type.extension_name, tensor_to_numpy(col).shape
('arrow.fixed_shape_tensor', (2, 2, 2))
>>> var = tensor_array([np.zeros((1, 2)), np.ones((3, 1))])
>>> var.type.extension_name, [a.shape for a in tensor_to_numpy(var)]
('arrow.variable_shape_tensor', [(1, 2), (3, 1)])
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pyarrow as pa

FIXED = "arrow.fixed_shape_tensor"
VARIABLE = "arrow.variable_shape_tensor"


@lru_cache(maxsize=64)
def variable_shape_tensor_type(value_type: pa.DataType, ndim: int) -> pa.DataType:
    """The canonical variable-shape tensor type (built by Arrow C++, reached through IPC).

    >>> str(variable_shape_tensor_type(pa.uint8(), 3))
    'extension<arrow.variable_shape_tensor[value_type=uint8, ndim=3]>'
    """
    storage = pa.struct([("data", pa.list_(value_type)), ("shape", pa.list_(pa.int32(), ndim))])
    field = pa.field("t", storage, metadata={b"ARROW:extension:name": VARIABLE.encode(),
                                             b"ARROW:extension:metadata": b"{}"})
    schema = pa.ipc.read_schema(pa.py_buffer(pa.schema([field]).serialize()))
    typ = schema.field("t").type
    if not isinstance(typ, pa.BaseExtensionType):  # pragma: no cover - very old Arrow C++
        raise ImportError("this pyarrow has no arrow.variable_shape_tensor type: "
                          "pip install -U 'pyarrow>=16'")
    return typ


def tensor_value_type(typ: pa.DataType) -> pa.DataType:
    """The element type of a fixed- or variable-shape tensor type.

    >>> str(tensor_value_type(variable_shape_tensor_type(pa.uint8(), 2)))
    'uint8'
    >>> str(tensor_value_type(pa.fixed_shape_tensor(pa.float32(), [2])))
    'float'
    """
    if hasattr(typ, "value_type"):
        return typ.value_type
    return typ.storage_type.field("data").type.value_type


def tensor_ndim(typ: pa.DataType) -> int:
    """The number of dimensions of a row of a fixed- or variable-shape tensor type.

    >>> tensor_ndim(pa.fixed_shape_tensor(pa.float32(), [2, 3])), tensor_ndim(
    ...     variable_shape_tensor_type(pa.uint8(), 3))
    (2, 3)
    """
    if hasattr(typ, "shape"):
        return len(typ.shape)
    return typ.storage_type.field("shape").type.list_size


def as_variable_shape(column):
    """A fixed-shape tensor column (Array or ChunkedArray) as the variable-shape type of
    its value type and dimensions, row by row (nulls kept); other columns as they are.

    >>> col = as_variable_shape(tensor_array(np.arange(4).reshape(2, 2)))
    >>> col.type.extension_name, [r.tolist() for r in tensor_rows(col)]
    ('arrow.variable_shape_tensor', [[0, 1], [2, 3]])
    """
    if getattr(column.type, "extension_name", None) != FIXED:
        return column
    rows = tensor_rows(column)
    if all(row is None for row in rows):
        return pa.nulls(len(rows), variable_shape_tensor_type(tensor_value_type(column.type),
                                                              tensor_ndim(column.type)))
    return tensor_array(rows, variable=True)


def tensor_array(arrays, variable: bool = False) -> pa.ExtensionArray:
    """A tensor column from a stacked n-d array or a list of arrays (one per row).

    A single contiguous n-d array becomes a fixed-shape column without a copy;
    ``variable=True`` forces the variable-shape type (to match other blocks).
    ``None`` in the list is a null row. Rows of different shapes need the same
    number of dimensions; their dtypes are promoted as numpy does.

    >>> a = np.arange(6, dtype=np.uint8).reshape(3, 2)
    >>> np.shares_memory(tensor_to_numpy(tensor_array(a)), a)
    True
    >>> col = tensor_array([np.ones(2), None])
    >>> col.null_count, tensor_rows(col)
    (1, [array([1., 1.]), None])
    >>> tensor_array([np.zeros((0, 2))]).type.extension_name  # no values: variable shape
    'arrow.variable_shape_tensor'
    >>> len(tensor_array(np.zeros((0, 2, 2))))
    0

    """
    if isinstance(arrays, np.ndarray) and arrays.ndim > 1:
        _check_numbers(arrays.dtype)
        if arrays.size:
            return pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(arrays))
        if not len(arrays):
            return _no_rows(arrays)
        arrays = list(arrays)  # rows of no values: Arrow has no fixed shape of size 0
    arrays = [None if a is None else np.asarray(a) for a in arrays]
    present = [a for a in arrays if a is not None]
    if not present:
        raise ValueError("tensor_array needs at least one array (not None)")
    shapes = {a.shape for a in present}
    if len(shapes) == 1 and not variable and present[0].size:  # size 0: variable, as Arrow
        return _fixed_tensor_array(arrays, present)           # has no fixed shape of size 0
    ndims = {a.ndim for a in present}
    if len(ndims) != 1:
        raise ValueError(f"tensor rows must have the same number of dimensions, got {sorted(ndims)}")
    return _variable_tensor_array(arrays, present, ndims.pop())


def _check_numbers(dtype: np.dtype) -> None:
    """A TypeError naming what to do for a dtype Arrow's tensor types do not hold.

    >>> _check_numbers(np.dtype(bool))
    Traceback (most recent call last):
    ...
    TypeError: a tensor column holds int, uint or float numbers only, not bool; convert it with .astype(...) (a bool mask: .astype(np.uint8)) or .tolist()
    """
    if dtype.kind not in "iuf":
        raise TypeError(f"a tensor column holds int, uint or float numbers only, not {dtype}; "
                        "convert it with .astype(...) (a bool mask: .astype(np.uint8)) or "
                        ".tolist()")


def _no_rows(stacked: np.ndarray) -> pa.ExtensionArray:
    """An empty tensor column for a stacked array of no rows (keeping its row shape)."""
    value_type = pa.from_numpy_dtype(stacked.dtype)
    shape = stacked.shape[1:]
    if int(np.prod(shape)):
        typ = pa.fixed_shape_tensor(value_type, list(shape))
    else:
        typ = variable_shape_tensor_type(value_type, len(shape))
    return pa.ExtensionArray.from_storage(typ, pa.array([], typ.storage_type))


def _null_mask(arrays: list) -> pa.Array | None:
    """A boolean mask of the ``None`` rows, or None when there are none."""
    if all(a is not None for a in arrays):
        return None
    return pa.array([a is None for a in arrays], pa.bool_())


def _fixed_tensor_array(arrays: list, present: list) -> pa.ExtensionArray:
    dtype = np.result_type(*present)
    fill = np.zeros(present[0].shape, dtype)
    stacked = np.stack([fill if a is None else a for a in arrays]).astype(dtype, copy=False)
    array = pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(stacked))
    mask = _null_mask(arrays)
    if mask is None:
        return array
    storage = pa.FixedSizeListArray.from_arrays(array.storage.values, type=array.storage.type, mask=mask)
    return pa.ExtensionArray.from_storage(array.type, storage)


def _variable_tensor_array(arrays: list, present: list, ndim: int) -> pa.ExtensionArray:
    value_type = pa.from_numpy_dtype(np.result_type(*present))
    typ = variable_shape_tensor_type(value_type, ndim)
    empty = np.zeros((0,) * ndim, value_type.to_pandas_dtype())
    rows = [empty if a is None else a for a in arrays]
    flat = [a.astype(value_type.to_pandas_dtype(), copy=False).ravel() for a in rows]
    offsets = np.concatenate([[0], np.cumsum([f.size for f in flat])]).astype(np.int32)
    values = pa.array(np.concatenate(flat), type=value_type)
    data = pa.ListArray.from_arrays(pa.array(offsets), values)
    shape = pa.FixedSizeListArray.from_arrays(
        pa.array(np.array([a.shape for a in rows], np.int32).ravel()), typ.storage_type[1].type.list_size)
    storage = pa.StructArray.from_arrays([data, shape], fields=list(typ.storage_type),
                                         mask=_null_mask(arrays))
    return pa.ExtensionArray.from_storage(typ, storage)


def is_tensor_type(typ: pa.DataType) -> bool:
    """True for fixed- or variable-shape tensor columns.

    >>> is_tensor_type(pa.int64())
    False
    """
    return isinstance(typ, pa.BaseExtensionType) and typ.extension_name in (FIXED, VARIABLE)


def tensor_to_numpy(column):
    """A tensor column as numpy: one n-d array (fixed shape, zero-copy for one chunk)
    or a list of arrays (variable shape).

    >>> tensor_to_numpy(tensor_array(np.zeros((4, 2, 2)))).shape
    (4, 2, 2)
    >>> [None if a is None else a.shape for a in tensor_to_numpy(
    ...     pa.concat_arrays([tensor_array([np.zeros(2), np.zeros(3)]),
    ...                       pa.nulls(1, variable_shape_tensor_type(pa.float64(), 1))]))]
    [(2,), (3,), None]
    """
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    if column.type.extension_name == FIXED:
        if not chunks:
            return np.empty((0, *column.type.shape), column.type.value_type.to_pandas_dtype())
        parts = [c.to_numpy_ndarray() for c in chunks]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)
    out = []
    for chunk in chunks:
        storage = chunk.storage
        valid = chunk.is_valid().to_pylist() if chunk.null_count else [True] * len(chunk)
        rows = storage.to_pylist() if chunk.null_count else None
        if rows is not None:  # null rows: their slots in the children may be missing
            out += [np.asarray(r["data"], _numpy_dtype(chunk.type)).reshape(r["shape"])
                    if ok else None for r, ok in zip(rows, valid, strict=True)]
            continue
        data, shape = storage.field("data"), storage.field("shape")
        shapes = shape.flatten().to_numpy().reshape(-1, shape.type.list_size)
        offsets = data.offsets.to_numpy()
        values = data.values.to_numpy(zero_copy_only=False)
        out += [values[offsets[i]:offsets[i + 1]].reshape(shapes[i]) for i in range(len(chunk))]
    return out


def _numpy_dtype(typ) -> np.dtype:
    return np.dtype(tensor_value_type(typ).to_pandas_dtype())



def tensor_rows(column) -> list:
    """A tensor column as one numpy array per row (``None`` for a null row).

    This is what a row UDF (``map``, ``filter``, ``flat_map``) sees for a tensor column.

    >>> [r.shape for r in tensor_rows(tensor_array([np.zeros((1, 2)), np.ones((3, 1))]))]
    [(1, 2), (3, 1)]
    """
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    out: list = []
    for chunk in chunks:
        if chunk.type.extension_name == VARIABLE:
            out.extend(tensor_to_numpy(chunk))
        elif not chunk.null_count:
            out.extend(chunk.to_numpy_ndarray())
        else:
            out.extend(_fixed_rows_with_nulls(chunk))
    return out


def _fixed_rows_with_nulls(chunk) -> list:
    """Rows of a fixed-shape tensor chunk that has null rows (``None`` for those)."""
    storage, shape = chunk.storage, tuple(chunk.type.shape)
    size = storage.type.list_size
    flat = storage.values.slice(storage.offset * size, len(storage) * size)
    values = flat.to_numpy(zero_copy_only=False).reshape((len(storage), *shape))
    valid = chunk.is_valid().to_pylist()
    return [v if ok else None for v, ok in zip(values, valid, strict=True)]


def records(table: pa.Table) -> list[dict]:
    """The rows of ``table`` as dicts, a tensor column's value as an n-d numpy array (for
    sinks that write one record per row: JSON lines, webdataset samples).

    >>> t = pa.table({"a": [1, 2], "v": tensor_array([np.zeros((2, 2)), np.ones((2, 2))])})
    >>> [(r["a"], r["v"].shape) for r in records(t)]
    [(1, (2, 2)), (2, (2, 2))]
    """
    tensors = {f.name: tensor_to_numpy(table.column(f.name)) for f in table.schema
               if is_tensor_type(f.type)}
    rows = table.drop_columns(list(tensors)).to_pylist()
    for i, row in enumerate(rows):
        row.update({k: v[i] for k, v in tensors.items()})
    return rows
