"""Batch formats: conversions between blocks (pyarrow.Table) and what UDFs see or return."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from streambatch.connectors.arrow_types import duplicate_name
from streambatch.connectors.row_conversion import columns_to_block, rows_to_block
from streambatch.connectors.tensors import FIXED, is_tensor_type, tensor_rows, tensor_to_numpy
from streambatch.executor.contract import UDFReturnTypeError

from streambatch._dependencies import import_optional

BATCH_FORMATS = ("default", "numpy", "pyarrow", "pandas", "polars")
EXPECTED_RETURNS = ("pyarrow.Table, pandas.DataFrame, polars.DataFrame, dict of column -> array/list, "
                    "list of dicts (rows)")


def check_batch_format(batch_format: str | None) -> str:
    """Validate a batch format name. ``"default"`` is a dict of numpy arrays, as in Ray
    Data; ``None`` is the blocks' own format, a ``pyarrow.Table`` (Ray Data's None).

    >>> check_batch_format("default"), check_batch_format("numpy"), check_batch_format(None)
    ('numpy', 'numpy', 'pyarrow')
    >>> check_batch_format("arrow")
    Traceback (most recent call last):
    ...
    ValueError: batch_format='arrow' is not supported; expected one of: default, numpy, pyarrow, pandas, polars
    """
    if batch_format is None:
        return "pyarrow"
    if batch_format == "default":
        return "numpy"
    if batch_format not in BATCH_FORMATS:
        raise ValueError(f"batch_format={batch_format!r} is not supported; "
                         f"expected one of: {', '.join(BATCH_FORMATS)}")
    return batch_format


def to_batch(table: pa.Table, batch_format: str):
    """Convert a block to the batch format a UDF asked for (zero-copy where Arrow allows).

    >>> to_batch(pa.table({"x": [1, 2]}), "numpy")["x"].tolist()
    [1, 2]
    """
    if batch_format == "pyarrow":
        return table
    if batch_format == "pandas":
        import_optional("pandas", extra="pandas", what="batch_format='pandas'")
        return _to_pandas(table)
    if batch_format == "polars":
        return import_optional("polars", extra="polars", what="batch_format='polars'").from_arrow(table)
    return {name: column_to_numpy(table.column(name)) for name in table.column_names}


def _to_pandas(table: pa.Table):
    """A block as a pandas DataFrame; a tensor column holds one n-d array per row."""
    tensors = {i: f.name for i, f in enumerate(table.schema) if is_tensor_type(f.type)}
    if not tensors:
        return table.to_pandas()
    frame = table.drop_columns(list(tensors.values())).to_pandas()
    for index, name in sorted(tensors.items()):
        frame.insert(index, name, _object_array(tensor_rows(table.column(name))))
    return frame


def _object_array(values: list) -> np.ndarray:
    """A 1-d object array holding ``values`` as they are (arrays are not broadcast)."""
    out = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        out[i] = value
    return out


def _from_pandas(frame, like: pa.Schema | None = None) -> pa.Table:
    """A DataFrame as a block; object columns (arrays, dicts, lists) follow the row rules."""
    names = list(frame.columns)
    plain_names = all(isinstance(n, str) for n in names) and len(set(names)) == len(names)
    if plain_names and any(frame[n].dtype == object for n in names):
        return columns_to_block({name: frame[name] for name in names}, like)
    return pa.Table.from_pandas(frame, preserve_index=False)


def column_to_numpy(column: pa.ChunkedArray) -> np.ndarray:
    """A column as numpy; a fixed-shape tensor column becomes one n-d array, a
    variable-shape one (or one with null rows) an object array of per-row arrays.

    >>> column_to_numpy(pa.chunked_array([[1, 2], [3]])).tolist()
    [1, 2, 3]
    >>> from streambatch.connectors.tensors import tensor_array
    >>> [a.shape for a in column_to_numpy(pa.chunked_array([tensor_array([np.zeros(1), np.zeros(2)])]))]
    [(1,), (2,)]
    """
    if is_tensor_type(column.type):
        if column.type.extension_name == FIXED and not column.null_count:
            return tensor_to_numpy(column)
        return _object_array(tensor_rows(column))
    if column.num_chunks == 1:
        return column.chunk(0).to_numpy(zero_copy_only=False)
    return column.to_numpy()


def from_batch(value, stage: str, like: pa.Schema | None = None) -> pa.Table:
    """Convert what a UDF returned into a block, or name the stage and the bad type.

    Columns of Python values (a dict of lists) and lists of rows (dicts) follow the
    row rules of :mod:`streambatch.connectors.row_conversion`; a value they cannot
    store raises ``RowsToBlockError`` naming the row and the key, unless the column has
    a name of ``like`` (the UDF's input) whose type holds it (a map column passed
    through a numpy or pandas batch comes back as lists of (key, value) tuples).

    >>> from_batch({"x": [1, 2]}, "Map(f)").num_rows
    2
    >>> from_batch([{"x": 1}, {"y": "a"}], "Map(f)").to_pylist()
    [{'x': 1, 'y': None}, {'x': None, 'y': 'a'}]
    >>> from_batch(3, "MapBatches(f)")
    Traceback (most recent call last):
    ...
    streambatch.executor.contract.UDFReturnTypeError: stage 'MapBatches(f)' returned int; expected one of: pyarrow.Table, pandas.DataFrame, polars.DataFrame, dict of column -> array/list, list of dicts (rows)
    """
    if isinstance(value, (pa.Table, pa.RecordBatch)):
        _unique_names(value.schema.names, stage, f"pyarrow.{type(value).__name__}")
        return value if isinstance(value, pa.Table) else pa.Table.from_batches([value])
    if isinstance(value, dict):
        return columns_to_block(value, like)
    if isinstance(value, list):
        return rows_to_block(value)
    module = type(value).__module__.split(".")[0]
    if module == "pandas" and type(value).__name__ == "DataFrame":
        _unique_names([str(n) for n in value.columns], stage, "pandas.DataFrame")
        return _from_pandas(value, like)
    if module == "polars" and type(value).__name__ == "DataFrame":
        return value.to_arrow()
    raise UDFReturnTypeError(stage, type(value).__name__, EXPECTED_RETURNS)


def _unique_names(names: list[str], stage: str, kind: str) -> None:
    """Refuse a UDF's table with two columns of one name (a row keeps one of them).

    >>> _unique_names(["a", "a"], "MapBatches(f)", "Table")
    Traceback (most recent call last):
    ...
    streambatch.executor.contract.UDFReturnTypeError: stage 'MapBatches(f)' returned a Table with two columns named 'a' (columns ['a', 'a']); expected one of: a table whose column names are unique (a row holds one value per name, so one column's values would be lost): rename or drop one of the 'a' columns
    """
    twice = duplicate_name(names)
    if twice is not None:
        raise UDFReturnTypeError(
            stage, f"a {kind} with two columns named {twice!r} (columns {names})",
            "a table whose column names are unique (a row holds one value per name, so one "
            f"column's values would be lost): rename or drop one of the {twice!r} columns")


def table_from_columns(columns: dict) -> pa.Table:
    """Build a table from a dict of columns; n-d numpy arrays become tensor columns.

    >>> t = table_from_columns({"img": np.zeros((2, 3, 3))})
    >>> t.num_rows, str(t.schema.field("img").type)
    (2, 'extension<arrow.fixed_shape_tensor[value_type=double, shape=[3,3]...]>')
    """
    return columns_to_block(columns)
