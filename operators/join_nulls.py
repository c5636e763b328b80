"""Arrow's hash join on tables with columns of type null, or keys of two types.

A column whose values in a partition are all None has Arrow's ``null`` type there
(``from_items`` or a map's rows where the field was never set), and Arrow's hash
join refuses such a column, key or not. A null-typed key takes the other side's key
type (every value is null: it matches nothing, as in SQL); a null-typed column that is
not a key, or a key null on both sides, stands in as ``int8`` through the join and
comes out as a null column again, under the name the join gives it. Keys of two types
that compare (int32 and int64; an integer and a float, as in SQL) are cast to one. A
join whose output would name two columns alike is refused before it runs.
"""

from __future__ import annotations

import pyarrow as pa
from streambatch.operators.join_columns import check_unique

STAND_IN = pa.int8()  # a type Arrow's join takes; the column is all null either way


def join_tables(left: pa.Table, right: pa.Table, keys: list[str], right_keys: list[str],
                join_type: str, suffixes: tuple[str | None, str | None]) -> pa.Table:
    """``left.join(right, ...)`` (pyarrow's, on one thread) that also takes null-typed
    columns.

    >>> left = pa.table({"k": [1, 2], "v": [None, None]})
    >>> right = pa.table({"k": [None, None], "w": [5, 6]})
    >>> out = join_tables(left, right, ["k"], ["k"], "left outer", (None, "_1"))
    >>> out.schema.field("v").type, out.sort_by("k").to_pylist()
    (DataType(null), [{'k': 1, 'v': None, 'w': None}, {'k': 2, 'v': None, 'w': None}])
    """
    nulls: set[str] = set()
    for lk, rk in zip(keys, right_keys, strict=True):
        lt, rt = left.schema.field(lk).type, right.schema.field(rk).type
        if pa.types.is_null(lt) and pa.types.is_null(rt):
            left, right = _cast(left, lk, STAND_IN), _cast(right, rk, STAND_IN)
            nulls |= {lk, rk}
        elif pa.types.is_null(lt):
            left = _cast(left, lk, rt)
        elif pa.types.is_null(rt):
            right = _cast(right, rk, lt)
        elif lt != rt:
            common = _common(lt, rt)
            if common is not None:
                left, right = _cast(left, lk, common), _cast(right, rk, common)
    left_rest = [c for c in left.column_names if c not in keys]
    right_rest = [c for c in right.column_names if c not in right_keys]
    check_unique(left.column_names, right.column_names, keys, right_keys, join_type, suffixes)
    left = _stand_in(left, left_rest, right_rest, suffixes[0], nulls)
    right = _stand_in(right, right_rest, left_rest, suffixes[1], nulls)
    joined = left.join(right, keys, right_keys, join_type=join_type, left_suffix=suffixes[0],
                       right_suffix=suffixes[1], use_threads=False)
    for i, name in enumerate(joined.column_names):
        if name in nulls:
            joined = joined.set_column(i, name, pa.nulls(joined.num_rows))
    return joined


def _stand_in(table: pa.Table, rest: list[str], other: list[str], suffix: str | None,
              nulls: set[str]) -> pa.Table:
    """``table`` with its null-typed columns (not keys: ``rest``) cast to STAND_IN; adds
    to ``nulls`` each one's name in the join's output (suffixed where ``other`` has it)."""
    for name in rest:
        if pa.types.is_null(table.schema.field(name).type):
            table = _cast(table, name, STAND_IN)
            nulls.add(name + suffix if suffix and name in other else name)
    return table


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
