"""The columns of a join's output, worked out before the join runs.

Which column of which side lands where in the output, under which name (suffixes
included), is Arrow's to say: :func:`joined_layout` asks Arrow's hash join itself, on
zero-row tables. Two output columns of one name would lose one of them downstream
(a row holds one value per name), so :func:`check_unique` refuses such a join,
naming the clash and a suffix that avoids it. Arrow's hash join carries no column of
a nested or extension type (list, struct, map, tensor) nor of the null type:
:func:`set_aside` swaps each such column for its row numbers, which the join carries,
and :func:`put_back` takes the column's values by them (a null row number, on the
side a row has no match: a null value), as Ray Data does.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
from streambatch.executor.contract import StreamBatchError

SIDES = ("left", "right")

Layout = tuple[tuple[str, int, int], ...]  # per output column: (name, side, index there)


class JoinColumnsError(StreamBatchError, ValueError):
    """Two output columns of a join would have one name.

    >>> print(JoinColumnsError("join: clash"))
    join: clash
    """

    def __init__(self, message: str) -> None:
        self._init_args = (message,)
        super().__init__(message)


def joined_layout(left: Sequence[str], right: Sequence[str], keys: Sequence[str],
                  right_keys: Sequence[str], join_type: str,
                  suffixes: tuple[str | None, str | None]) -> Layout:
    """Each output column of ``left.join(right, ...)`` (pyarrow's ``join_type``, as
    pyarrow names it) as (name, side, index of the column on that side).

    >>> joined_layout(["k", "v"], ["k", "v"], ["k"], ["k"], "inner", (None, "_1"))
    (('k', 0, 0), ('v', 0, 1), ('v_1', 1, 1))
    >>> joined_layout(["k", "v"], ["k", "w"], ["k"], ["k"], "right outer", (None, "_1"))
    (('v', 0, 1), ('k', 1, 0), ('w', 1, 1))
    """
    return _layout(tuple(left), tuple(right), tuple(keys), tuple(right_keys), join_type,
                   suffixes)


@functools.lru_cache(maxsize=256)
def _layout(left: tuple[str, ...], right: tuple[str, ...], keys: tuple[str, ...],
            right_keys: tuple[str, ...], join_type: str,
            suffixes: tuple[str | None, str | None]) -> Layout:
    names = _probe(left, right, keys, right_keys, join_type, suffixes)
    tokens = ([f"0.{i}" for i in range(len(left))], [f"1.{i}" for i in range(len(right))])
    token_keys = [tokens[0][left.index(k)] for k in keys]
    token_right_keys = [tokens[1][right.index(k)] for k in right_keys]
    origins = _probe(tokens[0], tokens[1], token_keys, token_right_keys, join_type,
                     (None, None))
    return tuple((name, int(origin.split(".")[0]), int(origin.split(".")[1]))
                 for name, origin in zip(names, origins, strict=True))


def _probe(left: Sequence[str], right: Sequence[str], keys: Sequence[str],
           right_keys: Sequence[str], join_type: str,
           suffixes: tuple[str | None, str | None]) -> list[str]:
    """The output names of Arrow's join of zero-row tables with these column names."""
    def empty(names: Sequence[str]) -> pa.Table:
        return pa.table([pa.array([], pa.int8()) for _ in names], names=list(names))

    return empty(left).join(empty(right), list(keys), list(right_keys), join_type=join_type,
                            left_suffix=suffixes[0], right_suffix=suffixes[1],
                            use_threads=False).column_names


def check_unique(left: Sequence[str], right: Sequence[str], keys: Sequence[str],
                 right_keys: Sequence[str], join_type: str,
                 suffixes: tuple[str | None, str | None], stage: str = "join") -> Layout:
    """The join's :func:`joined_layout`; refuses one whose output would hold two columns
    of one name (a row keeps one value per name: the other would be lost).

    >>> try:
    ...     check_unique(["k", "v", "v_1"], ["k", "v"], ["k"], ["k"], "inner", (None, "_1"))
    ... except JoinColumnsError as err:
    ...     print(err)
    join: output column 'v_1' would hold both the left side's column 'v_1' and the right side's column 'v' (renamed 'v_1' by right_suffix '_1', as the left side has a 'v' too); one would be lost. Pass another right_suffix (e.g. right_suffix='_right'), or rename_columns() first
    """
    args = (tuple(left), tuple(right), tuple(keys), tuple(right_keys), join_type)
    layout = _layout(*args, suffixes)
    clash = _clash(layout)
    if clash is None:
        return layout
    name, origins = clash
    names = (args[0], args[1])
    renamed = [s for s, i in origins if names[s][i] != name]
    which = max(renamed, default=1)
    held = " and ".join(_describe(s, names[s][i], name, suffixes[s]) for s, i in origins)
    raise JoinColumnsError(
        f"{stage}: output column {name!r} would hold both {held}; one would be lost. Pass "
        f"another {SIDES[which]}_suffix (e.g. {SIDES[which]}_suffix="
        f"{_free_suffix(args, suffixes, which)!r}), or rename_columns() first")


def _clash(layout: Layout) -> tuple[str, list[tuple[int, int]]] | None:
    """The first output name two columns share, and where both come from."""
    first: dict[str, tuple[int, int]] = {}
    for name, side, index in layout:
        if name in first:
            return name, [first[name], (side, index)]
        first[name] = (side, index)
    return None


def _describe(side: int, column: str, name: str, suffix: str | None) -> str:
    """One of the two columns called ``name``."""
    said = f"the {SIDES[side]} side's column {column!r}"
    if column == name:
        return said
    return (f"{said} (renamed {name!r} by {SIDES[side]}_suffix {suffix!r}, as the "
            f"{SIDES[1 - side]} side has a {column!r} too)")


def _free_suffix(args: tuple, suffixes: tuple[str | None, str | None], side: int) -> str:
    """A suffix for ``side`` under which every output column has a name of its own."""
    for n in range(1, 100):
        suffix = f"_{SIDES[side]}" + (str(n) if n > 1 else "")
        tried = (suffix, suffixes[1]) if side == 0 else (suffixes[0], suffix)
        if _clash(_layout(*args, tried)) is None:
            return suffix
    return f"_{SIDES[side]}"


def check_known_names(left: object, right: object, keys: Sequence[str],
                      right_keys: Sequence[str], join_type: str,
                      suffixes: tuple[str, str]) -> None:
    """:func:`check_unique` at plan time, where both plans' reads know their columns
    without running (else the join's tasks check, when they see the columns).

    >>> import streambatch as sb, pyarrow as pa
    >>> a, b = sb.from_arrow(pa.table({"k": [1], "v": [1]})), sb.from_arrow(pa.table({"k": [1]}))
    >>> check_known_names(a._plan, b._plan, ["k"], ["k"], "inner", ("", "_1"))
    """
    left_names, right_names = _known_names(left), _known_names(right)
    if left_names is not None and right_names is not None \
            and all(k in left_names for k in keys) and all(k in right_names for k in right_keys):
        check_unique(left_names, right_names, keys, right_keys, join_type,
                     (suffixes[0] or None, suffixes[1] or None))


def _known_names(plan: object) -> list[str] | None:
    """A plan's column names where its read knows them without running (else None)."""
    from streambatch.operators.logical import Read

    if isinstance(plan, Read) and plan.columns is None:
        schema = plan.source.schema()
        return None if schema is None else list(schema.names)
    return None


@functools.lru_cache(maxsize=256)
def joinable(kind: pa.DataType) -> bool:
    """Whether Arrow's hash join carries a non-key column of this type.

    >>> joinable(pa.int64()), joinable(pa.list_(pa.int64())), joinable(pa.null())
    (True, False, False)
    """
    try:
        side = pa.schema([pa.field("k", pa.int8()), pa.field("c", kind)]).empty_table()
        side.join(side.select(["k"]), "k", use_threads=False)
    except (pa.ArrowException, NotImplementedError, TypeError, ValueError):
        return False
    return True


def set_aside(table: pa.Table, keys: Sequence[str]) -> tuple[pa.Table, dict[int, pa.ChunkedArray]]:
    """``table`` with each non-key column the join cannot carry replaced by its row
    numbers (int64); those columns, by index.

    >>> t = pa.table({"k": [1, 2], "tags": [[1], [2, 3]]})
    >>> carried, aside = set_aside(t, ["k"])
    >>> carried["tags"].to_pylist(), list(aside)
    ([0, 1], [1])
    """
    aside = {i: table.column(i) for i, field in enumerate(table.schema)
             if field.name not in keys and not joinable(field.type)}
    if not aside:
        return table, aside
    rows = pa.array(np.arange(table.num_rows, dtype=np.int64))
    for index in aside:
        table = table.set_column(index, table.schema.field(index).name, rows)
    return table, aside


def put_back(joined: pa.Table, layout: Layout,
             aside: tuple[dict[int, pa.ChunkedArray], dict[int, pa.ChunkedArray]]) -> pa.Table:
    """``joined`` with each column :func:`set_aside` replaced by row numbers holding its
    values again (null where the row number is null: no match on that side).

    >>> t = pa.table({"k": [1, 2], "tags": [[1], [2, 3]]})
    >>> carried, aside = set_aside(t, ["k"])
    >>> joined = pa.table({"k": [2, 1, 3], "tags": [1, 0, None]})
    >>> layout = (("k", 0, 0), ("tags", 0, 1))
    >>> put_back(joined, layout, (aside, {}))["tags"].to_pylist()
    [[2, 3], [1], None]
    """
    for position, (name, side, index) in enumerate(layout):
        column = aside[side].get(index)
        if column is not None:
            values = column.take(joined.column(position))
            joined = joined.set_column(position, pa.field(name, column.type), values)
    return joined


__all__ = ["JoinColumnsError", "check_unique", "joinable", "joined_layout", "check_known_names",
           "put_back", "set_aside"]
