"""Column helpers shared by block ops: checks and conversions with clear errors."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from streambatch.executor.errors import UDFReturnTypeError


def require_columns(table: pa.Table, columns: tuple[str, ...], stage: str) -> None:
    """Fail naming the missing columns, the stage and the columns that exist.

    >>> require_columns(pa.table({"a": [1]}), ("b",), "Select['b']")
    Traceback (most recent call last):
    ...
    KeyError: "stage 'Select['b']': column(s) ['b'] not found; available columns: ['a']"
    """
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise KeyError(f"stage '{stage}': column(s) {missing} not found; "
                       f"available columns: {table.column_names}")


def column_to_arrow(values, num_rows: int, stage: str) -> pa.Array:
    """Convert a UDF's column (pandas/polars Series, numpy, list, Arrow) to Arrow.

    >>> column_to_arrow([1, 2], 2, "AddColumn(x)").to_pylist()
    [1, 2]
    """
    kind = type(values).__module__.split(".")[0]
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        array = values
    elif kind == "polars":
        array = values.to_arrow()
    elif kind == "pandas" or isinstance(values, (np.ndarray, list)):
        array = pa.array(values)
    else:
        raise UDFReturnTypeError(stage, type(values).__name__,
                                 "a column: pandas/polars Series, numpy array, list or Arrow array")
    if len(array) != num_rows:
        raise ValueError(f"stage '{stage}' returned a column of {len(array)} values "
                         f"for a batch of {num_rows} rows")
    return array
