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


def tensor_array(arrays, variable: bool = False) -> pa.ExtensionArray:
    """A tensor column from a stacked n-d array or a list of arrays (one per row).

    A single contiguous n-d array becomes a fixed-shape column without a copy;
    ``variable=True`` forces the variable-shape type (to match other blocks).

    >>> a = np.arange(6, dtype=np.uint8).reshape(3, 2)
    >>> np.shares_memory(tensor_to_numpy(tensor_array(a)), a)
    True
    """
    if isinstance(arrays, np.ndarray) and arrays.ndim > 1:
        return pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(arrays))
    arrays = [np.asarray(a) for a in arrays]
    if not arrays:
        raise ValueError("tensor_array needs at least one array")
    shapes = {a.shape for a in arrays}
    if len(shapes) == 1 and not variable:
        return pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(np.stack(arrays)))
    ndims = {a.ndim for a in arrays}
    if len(ndims) != 1:
        raise ValueError(f"tensor rows must have the same number of dimensions, got {sorted(ndims)}")
    value_type = pa.from_numpy_dtype(np.result_type(*arrays))
    typ = variable_shape_tensor_type(value_type, ndims.pop())
    flat = [a.astype(value_type.to_pandas_dtype(), copy=False).ravel() for a in arrays]
    offsets = np.concatenate([[0], np.cumsum([f.size for f in flat])]).astype(np.int32)
    data = pa.ListArray.from_arrays(pa.array(offsets), pa.array(np.concatenate(flat)))
    shape = pa.FixedSizeListArray.from_arrays(
        pa.array(np.array([a.shape for a in arrays], np.int32).ravel()), typ.storage_type[1].type.list_size)
    storage = pa.StructArray.from_arrays([data, shape], fields=list(typ.storage_type))
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
        data, shape = storage.field("data"), storage.field("shape")
        ndim = shape.type.list_size
        shapes = shape.flatten().to_numpy().reshape(-1, ndim)
        offsets = data.offsets.to_numpy()
        values = data.values.to_numpy(zero_copy_only=False)
        for i in range(len(chunk)):
            out.append(values[offsets[i]:offsets[i + 1]].reshape(shapes[i]))
    return out
