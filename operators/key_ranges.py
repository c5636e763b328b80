"""Key ranges: the driver's cut of sorted blocks into the ranges each reducer merges
(a sort, a groupby, unique, map_groups, a join). Boundaries come from an evenly spaced
sample of every block; each block is cut at them by binary search, as zero-copy
slices. Keys compare as pyarrow sorts them: numbers in the key's direction, then NaN,
then null.

>>> import pyarrow as pa
>>> cut = range_split(("x",), (False,), 2)
>>> cut([pa.table({"x": [3, 1]}).sort_by("x"), pa.table({"x": [2, 4]})], 0)
[[(0, 0, 1), (1, 0, 1)], [(0, 1, 1), (1, 1, 1)]]
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import pyarrow as pa
from streambatch.operators.exchange import SIDE

Span = tuple  # (index of a block in the split's input, first row, rows): a slice of it


def range_split(keys: tuple[str, ...], descending: tuple[bool, ...], n: int,
                ties: bool = False) -> Callable[[list[pa.Table], int], list[list[Span]]]:
    """The driver's cut of sorted blocks into at least ``n`` key ranges: boundaries from
    an evenly spaced sample of every block, each block cut at them by binary search.
    Bucket ``i``'s spans (slices of the blocks, no copy), merged, are the ``i``-th part
    of the sorted output. ``at_least`` raises the number of ranges (the exchange asks
    for more when its input is large for the memory budget). ``ties``: rows with equal
    keys may go to different buckets (a sort; not a group): a key the sample finds in
    several ranges has its rows shared among them, so a hot key is no one reducer's.

    >>> cut = range_split(("x",), (False,), 2)
    >>> cut([pa.table({"x": [1, 3, 5, 7]}), pa.table({"x": [2, 4, 6, 8]})], 0)
    [[(0, 0, 2), (1, 0, 2)], [(0, 2, 2), (1, 2, 2)]]
    >>> hot = pa.table({"x": [1] + [5] * 8 + [9]})
    >>> [[r for _, _, r in b] for b in range_split(("x",), (False,), 4, ties=True)([hot], 0)]
    [[1], [2], [3], [4]]
    """
    def split(tables: list[pa.Table], at_least: int = 0) -> list[list[Span]]:
        named = [(i, t, keys) for i, t in enumerate(tables)]
        out = _cut(named, descending, max(n, at_least), ties)
        if tables and not any(spans for spans in out):  # no rows: the first bucket still
            out[0].append((0, 0, 0))  # gets the columns (a join after the sort needs them)
        return out

    return split


def join_split(keys: tuple[str, ...], right_keys: tuple[str, ...], n: int
               ) -> Callable[[list[pa.Table], int], list[list[Span]]]:
    """The driver's cut of both sides' sorted blocks into the same key ranges (boundaries
    from both sides); every bucket also gets an empty span of each side, so a reducer
    knows both sides' columns even when its range holds rows of one side only."""
    def split(tables: list[pa.Table], at_least: int = 0) -> list[list[Span]]:
        sides = [int((t.schema.metadata or {}).get(SIDE, b"0")) for t in tables]
        named = [(i, t, right_keys if side else keys) for i, (t, side) in
                 enumerate(zip(tables, sides, strict=True))]
        out = _cut(named, (False,) * len(keys), max(n, at_least))
        for side in (0, 1):
            first = next((i for i, s in enumerate(sides) if s == side), None)
            if first is not None:
                for bucket in out:
                    bucket.insert(0, (first, 0, 0))
        return out

    return split


def _cut(named: list[tuple[int, pa.Table, tuple]], descending, n: int,
         ties: bool = False) -> list[list[Span]]:
    """Spans per key range of sorted blocks (each with its own key columns)."""
    filled = [(i, t, k) for i, t, k in named if t.num_rows]
    check_comparable([(t, k) for _, t, k in filled])
    bounds = _boundaries_of([(t, k) for _, t, k in filled], descending, n, ties)
    out: list[list[Span]] = [[] for _ in range(len(bounds) + 1)]
    for index, table, keys in filled:
        cuts = [0] + _cuts(table, bounds, keys, descending) + [table.num_rows]
        for i in range(len(bounds) + 1):
            if cuts[i + 1] > cuts[i]:
                out[i].append((index, cuts[i], cuts[i + 1] - cuts[i]))
    return out


def _cuts(table: pa.Table, bounds: list[tuple], keys, descending) -> list[int]:
    """Where ``table`` is cut at each boundary; the rows equal to a boundary that comes
    ``d`` times in a row are shared evenly among those ``d`` ranges."""
    cuts: list[int] = []
    i = 0
    while i < len(bounds):
        d = 1
        while i + d < len(bounds) and not _before(bounds[i], bounds[i + d], descending):
            d += 1
        lo = _bisect(table, bounds[i], keys, descending)
        hi = _bisect(table, bounds[i], keys, descending, right=True) if d > 1 else lo
        cuts += [lo + (hi - lo) * t // d for t in range(d)]
        i += d
    return cuts


def _row(table: pa.Table, keys: tuple[str, ...], i: int) -> tuple:
    return tuple(table[k][i].as_py() for k in keys)


def _before(a: tuple, b: tuple, descending: tuple[bool, ...]) -> bool:
    """True when row key ``a`` sorts strictly before ``b``, as pyarrow sorts: numbers in
    the key's direction, then NaN, then null (whatever the direction).

    >>> nan = float("nan")
    >>> _before((1.0,), (nan,), (True,)), _before((nan,), (None,), (False,))
    (True, True)
    >>> _before((nan,), (nan,), (False,)), _before((nan,), (2.0,), (False,))
    (False, False)
    """
    for x, y, desc in zip(a, b, descending, strict=True):
        rx, ry = _rank(x), _rank(y)
        if rx != ry:
            return rx < ry
        if rx or x == y:  # both NaN, both null, or equal
            continue
        return x > y if desc else x < y
    return False


def _rank(value) -> int:
    """0 for a value, 1 for NaN, 2 for null: where it sorts among the values."""
    if value is None:
        return 2
    return 1 if isinstance(value, float) and value != value else 0


def _bisect(table: pa.Table, bound: tuple, keys, descending, right: bool = False) -> int:
    """The first row of a sorted ``table`` that does not sort before ``bound`` (``right``:
    the first that sorts after it)."""
    lo, hi = 0, table.num_rows
    while lo < hi:
        mid = (lo + hi) // 2
        row = _row(table, keys, mid)
        if (not _before(bound, row, descending)) if right else _before(row, bound, descending):
            lo = mid + 1
        else:
            hi = mid
    return lo


def check_comparable(tables: list[tuple[pa.Table, tuple]]) -> None:
    """Refuse keys that cannot be ordered together: a key column that is a number in one
    block (or one side of a join) and text, bytes or a date in another (Python's ``<``
    failed deep in the cut: "'<' not supported between instances of 'str' and 'int'").

    >>> check_comparable([(pa.table({"k": [1]}), ("k",)), (pa.table({"k": [0.5]}), ("k",))])
    >>> check_comparable([(pa.table({"k": [1]}), ("k",)), (pa.table({"j": ["1"]}), ("j",))])
    Traceback (most recent call last):
    ...
    TypeError: key 'k' holds int64 in one input and string (as 'j') in another: keys compared across blocks (a sort, a groupby, both sides of a join) need one kind of value; cast one of them first (e.g. map_batches with pyarrow.compute.cast)
    """
    for position in range(len(tables[0][1]) if tables else 0):
        seen: dict[str, tuple[pa.DataType, str]] = {}
        for table, keys in tables:
            kind = table.schema.field(keys[position]).type
            if not pa.types.is_null(kind):
                seen.setdefault(_family(kind), (kind, keys[position]))
        if len(seen) > 1:
            (a, name), (b, other) = list(seen.values())[:2]
            as_ = f" (as {other!r})" if other != name else ""
            raise TypeError(
                f"key {name!r} holds {a} in one input and {b}{as_} in another: keys compared "
                f"across blocks (a sort, a groupby, both sides of a join) need one kind of "
                f"value; cast one of them first (e.g. map_batches with pyarrow.compute.cast)")


def _family(kind: pa.DataType) -> str:
    """Types whose values Python orders together share a family."""
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind) \
            or pa.types.is_decimal(kind):
        return "number"
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return "text"
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return "bytes"
    if pa.types.is_timestamp(kind):
        return f"timestamp{'+tz' if kind.tz else ''}"
    if pa.types.is_dictionary(kind):
        return _family(kind.value_type)
    for family in ("date", "time", "duration"):
        if getattr(pa.types, f"is_{family}")(kind):
            return family
    return str(kind)


def _boundaries_of(tables: list[tuple[pa.Table, tuple]], descending, n: int,
                   ties: bool = False) -> list[tuple]:
    """Boundaries of ``n`` key ranges from an evenly spaced sample of each sorted table
    (each with its own key columns); equal ones once, unless ``ties``."""
    sample = []
    for table, keys in tables:
        count = min(table.num_rows, 64)
        for i in np.linspace(0, table.num_rows - 1, count).astype(int):
            sample.append(_row(table, keys, int(i)))
    if not sample or n <= 1:
        return []
    def compare(a, b):
        return -1 if _before(a, b, descending) else 1 if _before(b, a, descending) else 0

    sample.sort(key=functools.cmp_to_key(compare))
    picks = [sample[len(sample) * i // n] for i in range(1, n)]
    if ties:
        return picks
    bounds: list[tuple] = []
    for b in picks:  # equal boundaries would make empty buckets
        if not bounds or compare(bounds[-1], b) < 0:
            bounds.append(b)
    return bounds
