"""Arrow's hash join on tables with columns of type null, or keys of two types.

A column whose values in a partition are all None has Arrow's ``null`` type there
(``from_items`` or a map's rows where the field was never set), and Arrow's hash
join refuses such a column, key or not. A null-typed key takes the other side's key
type (every value is null: it matches nothing, as in SQL); a key null on both sides
stands in as ``int8`` through the join and comes out as a null column again. Keys of
two types that compare (int32 and int64; an integer and a float, as in SQL) are cast
to one. A column that is not a key and that Arrow's join does not carry (null, list,
struct, map, tensor types) goes round the join by row number (``join_columns``), and
a join whose output would name two columns alike is refused before it runs.
"""

from __future__ import annotations

import pyarrow as pa
from streambatch.operators.join_columns import check_unique, put_back, set_aside

STAND_IN = pa.int8()  # a type Arrow's join takes; the column is all null either way


def join_tables(left: pa.Table, right: pa.Table, keys: list[str], right_keys: list[str],
                join_type: str, suffixes: tuple[str | None, str | None]) -> pa.Table:
    """``left.join(right, ...)`` (pyarrow's, on one thread) that also takes null-typed
    columns and columns Arrow's join does not carry (lists, structs, tensors), and
    refuses a join that would give two output columns one name (JoinColumnsError).

    >>> left = pa.table({"k": [1, 2], "v": [None, None]})
    >>> right = pa.table({"k": [None, None], "w": [5, 6]})
    >>> out = join_tables(left, right, ["k"], ["k"], "left outer", (None, "_1"))
    >>> out.schema.field("v").type, out.sort_by("k").to_pylist()
    (DataType(null), [{'k': 1, 'v': None, 'w': None}, {'k': 2, 'v': None, 'w': None}])
    """
    left, right, nulls = _unify_keys(left, right, keys, right_keys)
    layout = check_unique(left.column_names, right.column_names, keys, right_keys, join_type,
                          suffixes)
    left, left_aside = set_aside(left, keys)
    right, right_aside = set_aside(right, right_keys)
    joined = left.join(right, keys, right_keys, join_type=join_type, left_suffix=suffixes[0],
                       right_suffix=suffixes[1], use_threads=False)
    joined = put_back(joined, layout, (left_aside, right_aside))
    for position, (name, side, index) in enumerate(layout):
        if (side, index) in nulls:
            joined = joined.set_column(position, name, pa.nulls(joined.num_rows))
    return joined


def _unify_keys(left: pa.Table, right: pa.Table, keys: list[str], right_keys: list[str]
                ) -> tuple[pa.Table, pa.Table, set[tuple[int, int]]]:
    """Both sides with keys of one type each; the (side, index) of keys null on both
    sides (cast to STAND_IN)."""
    nulls: set[tuple[int, int]] = set()
    for lk, rk in zip(keys, right_keys, strict=True):
        lt, rt = left.schema.field(lk).type, right.schema.field(rk).type
        if pa.types.is_null(lt) and pa.types.is_null(rt):
            left, right = _cast(left, lk, STAND_IN), _cast(right, rk, STAND_IN)
            nulls |= {(0, left.schema.get_field_index(lk)),
                      (1, right.schema.get_field_index(rk))}
        elif pa.types.is_null(lt):
            left = _cast(left, lk, rt)
        elif pa.types.is_null(rt):
            right = _cast(right, rk, lt)
        elif lt != rt:
            common = _common(lt, rt)
            if common is not None:
                left, right = _cast(left, lk, common), _cast(right, rk, common)
    return left, right, nulls


def _common(a: pa.DataType, b: pa.DataType) -> pa.DataType | None:
    """The type both keys are compared as (Arrow's join takes one type): the one that
    holds both exactly (int32 and int64: int64), else float64 for an integer and a
    float, as SQL compares them (1 = 1.0); None where they have none.

    >>> _common(pa.int32(), pa.int64()), _common(pa.int64(), pa.float64())
    (DataType(int64), DataType(double))
    """
    from streambatch.connectors.parquet_schema import unify_types

    found = unify_types(a, b)
    if found is not None:
        return found
    numbers = (pa.types.is_integer, pa.types.is_floating)
    if any(f(a) for f in numbers) and any(f(b) for f in numbers):
        return pa.float64()
    return None


def _cast(table: pa.Table, name: str, to: pa.DataType) -> pa.Table:
    index = table.schema.get_field_index(name)
    return table.set_column(index, name, table[name].cast(to))


__all__ = ["join_tables"]
