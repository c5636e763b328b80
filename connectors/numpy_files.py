"""NumPy ``.npy`` files: a sink writing one column of each partition to one file, and a
source reading ``.npy`` files back into column ``data`` (n-d arrays as tensor columns).

>>> import tempfile, numpy as np
>>> from streambatch.connectors.datasource import Pushdowns
>>> d = tempfile.mkdtemp(); np.save(f"{d}/a.npy", np.zeros((3, 2, 2), np.float32))
>>> [t.num_rows for task in NumpySource(d).read_tasks(1, Pushdowns()) for t in task()]
[3]
"""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
from streambatch.connectors.datasink import FileDatasink
from streambatch.connectors.file_based import FileSource
from streambatch.connectors.tensors import (
    FIXED,
    VARIABLE,
    is_tensor_type,
    tensor_array,
    tensor_to_numpy,
)


class NumpySource(FileSource):
    """``.npy`` files (no pickled objects): rows along the first axis, in column ``data``."""

    name = "Numpy"
    who = "read_numpy"
    suffixes = (".npy",)
    error_hint = "expected a .npy file written by numpy.save (object arrays are not read)"

    def read_file(self, fs, entry, pushdowns):
        """The array as one table."""
        with fs.open(entry.path, "rb") as handle:
            array = np.load(io.BytesIO(handle.read()), allow_pickle=False)
        if array.ndim == 0:
            array = array.reshape(1)
        column = tensor_array(array) if array.ndim > 1 else pa.array(array)
        yield pa.table({"data": column})


class NumpySink(FileDatasink):
    """One ``.npy`` file per partition holding ``column`` (a tensor column becomes an
    n-d array, rows along the first axis).

    >>> import tempfile
    >>> sink = NumpySink(tempfile.mkdtemp() + "/out", column="x"); _ = sink.start()
    >>> class Ctx: task_index = 0
    >>> sink.write([pa.table({"x": [1, 2]})], Ctx())["rows"].to_pylist()
    [2]
    """

    name = "Numpy"
    suffix = ".npy"

    def __init__(self, path: str, *, column: str, **kwargs) -> None:
        super().__init__(path, **kwargs)
        self.column = column

    def write_file(self, tables, path: str) -> tuple[int, int]:
        """Concatenate the column over the partition and ``numpy.save`` it."""
        parts = []
        for table in tables:
            if self.column not in table.column_names:
                raise KeyError(f"write_numpy: no column {self.column!r}; the columns are "
                               f"{table.column_names}")
            parts.append(column_array(table.column(self.column)))
        array = parts[0] if len(parts) == 1 else np.concatenate(parts)
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        with self.fs.open(path, "wb") as handle:
            handle.write(buffer.getvalue())
        return len(array), array.nbytes


def column_array(column: pa.ChunkedArray) -> np.ndarray:
    """A column as one numpy array (fixed-shape tensors as n-d arrays).

    >>> column_array(pa.chunked_array([[1, 2], [3]])).tolist()
    [1, 2, 3]
    """
    if is_tensor_type(column.type):
        if column.type.extension_name == VARIABLE:
            raise TypeError("write_numpy: a variable-shape tensor column has no single n-d "
                            "array form; resize the tensors to one shape first")
        assert column.type.extension_name == FIXED
        return tensor_to_numpy(column)
    if pa.types.is_nested(column.type) or pa.types.is_binary(column.type):
        raise TypeError(f"write_numpy: column type {column.type} has no numpy array form")
    return column.to_numpy()
