"""Column helpers shared by block ops: checks and conversions with clear errors."""

from __future__ import annotations

import pyarrow as pa
from streambatch.connectors.row_conversion import COLUMN_KINDS, column_to_array
from streambatch.executor.contract import UDFReturnTypeError


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


def column_to_arrow(values, num_rows: int, stage: str, name: str = "column"):
    """Convert a UDF's column (pandas/polars Series, numpy, torch, list, Arrow) to Arrow.

    Values follow the row rules (unified types, tensors for arrays); one that cannot
    be stored raises ``RowsToBlockError`` naming its row and the column.

    >>> column_to_arrow([1, 2], 2, "AddColumn(x)").to_pylist()
    [1, 2]
    """
    kind = type(values).__module__.split(".")[0]
    if not (isinstance(values, (pa.Array, pa.ChunkedArray, list, tuple)) or
            kind in ("numpy", "pandas", "polars", "torch")):
        raise UDFReturnTypeError(stage, type(values).__name__, f"a column: {COLUMN_KINDS}")
    array = column_to_array(values, name)
    if len(array) != num_rows:
        raise ValueError(f"stage '{stage}' returned a column of {len(array)} values "
                         f"for a batch of {num_rows} rows")
    return array
