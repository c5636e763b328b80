"""Column helpers shared by block ops: checks and conversions with clear errors."""

from __future__ import annotations

import pyarrow as pa
from streambatch.connectors.arrow_types import duplicate_name
from streambatch.connectors.row_conversion import COLUMN_KINDS, column_to_array
from streambatch.executor.contract import StreamBatchError, UDFReturnTypeError


class DuplicateColumnError(StreamBatchError, ValueError):
    """Two columns of one name (as Polars' DuplicateError): a row holds one value per
    name, so one column's values would be lost.

    >>> print(DuplicateColumnError("from_arrow: tables[0]", "a", "", "rename one first"))
    from_arrow: tables[0]: two columns named 'a'; a row holds one value per name, so one column's values would be lost: rename one first
    """

    def __init__(self, where: str, column: str, detail: str, fix: str) -> None:
        self._init_args = (where, column, detail, fix)
        super().__init__(f"{where}: two columns named {column!r}{detail}; a row holds one "
                         f"value per name, so one column's values would be lost: {fix}")
        self.where, self.column = where, column


def check_unique_names(names: list[str], where: str) -> None:
    """Refuse a table (a source's) with two columns of one name.

    >>> check_unique_names(["a", "b"], "from_arrow: tables[0]")
    """
    twice = duplicate_name(names)
    if twice is not None:
        raise DuplicateColumnError(where, twice, f" (columns {names})",
                                   "rename one first (table.rename_columns([...]))")


def renamed_names(names: list[str], mapping: dict[str, str], where: str) -> list[str]:
    """``names`` renamed by ``mapping``; refuses a rename that gives two columns one name
    (onto a column the input has and keeps, or two columns onto one name).

    >>> renamed_names(["a", "b"], {"a": "b", "b": "a"}, "Rename")
    ['b', 'a']
    >>> try:
    ...     renamed_names(["x", "y"], {"x": "y"}, "stage 'Rename({'x': 'y'})'")
    ... except DuplicateColumnError as err:
    ...     print(err)
    stage 'Rename({'x': 'y'})': two columns named 'y' (renaming 'x' to 'y', a column the input has); a row holds one value per name, so one column's values would be lost: rename onto a name not in use, or drop_columns(['y']) first
    """
    new = [mapping.get(name, name) for name in names]
    twice = duplicate_name(new)
    if twice is None:
        return new
    sources = [old for old, name in zip(names, new, strict=True) if name == twice]
    renamed = [old for old in sources if old != twice]
    if len(renamed) < len(sources):
        raise DuplicateColumnError(
            where, twice, f" (renaming {renamed[0]!r} to {twice!r}, a column the input has)",
            f"rename onto a name not in use, or drop_columns([{twice!r}]) first")
    raise DuplicateColumnError(
        where, twice, f" (renaming {' and '.join(map(repr, renamed))} to it)",
        "give each column a name of its own")


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
