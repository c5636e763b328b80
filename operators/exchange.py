"""The block ops of all-to-all operators, on both sides of an exchange.

Keyed operators (groupby, unique, map_groups, sort, join) sort each map task's rows,
or its partial aggregates, by key; the driver cuts every sorted block into key ranges
(``key_ranges.py``, boundaries from a sample) and a reduce task merges one range.
A shuffle sends each row to a random bucket instead (:class:`RandomPartitionOp`).
Grouping treats float keys as pyarrow's ``group_by`` does, everywhere: every NaN is
one key, ``-0.0`` and ``0.0`` are one key (:func:`canonical_keys`).

>>> import pyarrow as pa
>>> from streambatch.executor.contract import TaskContext
>>> ctx = TaskContext("Exchange", 0, "partition 0", key="k0")
>>> t = pa.table({"k": [1, 2, 1, 3], "v": [1.0, 2.0, 3.0, 4.0]})
>>> from streambatch.operators.aggregates import Sum
>>> [b.to_pylist() for b in PartialAggregateOp(("k",), (Sum("v"),)).apply(iter([t]), ctx)]
[[{'__sb_k0': 1, 'a0.s': 4.0}, {'__sb_k0': 2, 'a0.s': 2.0}, {'__sb_k0': 3, 'a0.s': 4.0}]]
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from streambatch.connectors.block_joins import concat_blocks
from streambatch.executor.contract import ColumnNotFoundError, TaskContext, UDFFailure
from streambatch.operators.aggregates import merge_together, partial_together, unprefixed
from streambatch.operators.join_nulls import join_tables


class _ExchangeOp:
    """Defaults every exchange op shares (the BlockOp protocol)."""

    holds_gil = False  # pyarrow/numpy kernels: thread workers, no block copies
    batch_rows = None
    changes_row_count = True
    is_actor = False
    stays_in_driver = False
    name = "Exchange"


def _concat(blocks: Iterator[pa.Table]) -> pa.Table | None:
    tables = [b for b in blocks if b.num_columns]
    return concat_blocks(tables) if tables else None


def _keyed(blocks: Iterator[pa.Table], keys: tuple[str, ...], ctx: TaskContext
           ) -> pa.Table | None:
    """A task's rows, its key columns checked and dictionary-decoded (sortable)."""
    table = _concat(blocks)
    if table is None:
        return None
    missing = [k for k in keys if k not in table.column_names]
    if missing:
        raise ColumnNotFoundError(ctx.stage, missing[0], table.column_names)
    for key in keys:
        kind = table.schema.field(key).type
        if pa.types.is_dictionary(kind):
            table = table.set_column(table.column_names.index(key), key,
                                     table[key].cast(kind.value_type))
    return table


def canonical_keys(table: pa.Table, keys) -> pa.Table:
    """``table`` with its float key columns canonical: every NaN the same NaN, ``-0.0``
    as ``0.0`` (pyarrow's ``group_by`` hashes bits; SQL and Python call them equal).

    >>> t = canonical_keys(pa.table({"k": [-0.0, float("nan"), None]}), ["k"])
    >>> [str(v) for v in t["k"].to_pylist()]
    ['0.0', 'nan', 'None']
    """
    for key in keys:
        column = table[key]
        if not pa.types.is_floating(column.type) or column.type == pa.float16():
            continue  # (Arrow has no float16 comparison: such keys are left as they are)
        kind = column.type
        zero, nan = pa.scalar(0.0, kind), pa.scalar(math.nan, kind)
        fixed = pc.if_else(pc.equal(column, zero), zero, column)
        fixed = pc.if_else(pc.is_nan(fixed), nan, fixed)
        table = table.set_column(table.column_names.index(key), key, fixed)
    return table


def internal_keys(keys: tuple[str, ...]) -> tuple[str, ...]:
    """The names an aggregate's keys travel under (they never meet a state column).

    >>> internal_keys(("n", "state"))
    ('__sb_k0', '__sb_k1')
    """
    return tuple(f"__sb_k{i}" for i in range(len(keys)))


# ---- map side ---------------------------------------------------------------------------
class PartialAggregateOp(_ExchangeOp):
    """A task's rows as the partial aggregates of their groups, sorted by key, the keys
    under internal names (the driver cuts them into key ranges; a reducer merges one
    range). A user's AggregateFn runs Python: in worker processes."""

    def __init__(self, keys: tuple[str, ...], aggs: tuple) -> None:
        self.keys, self.aggs = keys, aggs
        self.name = f"PartialAggregate({', '.join(keys)})"
        self.holds_gil = any(a.runs_python for a in aggs)

    def apply(self, blocks, ctx):
        table = _keyed(blocks, self.keys, ctx)
        if table is not None and table.num_rows:
            yield partial_states(table, self.keys, self.aggs)


class DistinctMapOp(_ExchangeOp):
    """A task's distinct keys, sorted."""

    def __init__(self, keys: tuple[str, ...]) -> None:
        self.keys = keys
        self.name = f"DistinctMap({', '.join(keys)})"

    def apply(self, blocks, ctx):
        table = _keyed(blocks, self.keys, ctx)
        if table is not None and table.num_rows:
            distinct = canonical_keys(table.select(list(self.keys)), self.keys).group_by(
                list(self.keys), use_threads=False).aggregate([])
            yield sort_table(distinct, self.keys, (False,) * len(self.keys))


class RandomPartitionOp(_ExchangeOp):
    """Rows to ``n`` buckets by a random number per row (kept as a column for the reduce
    side), drawn from the seed and the row's number in the map side's input
    (``ctx.first_row`` + its place): the same rows in the same order get the same
    numbers however they were partitioned, on any number of CPUs. Bucket ``i`` holds
    the ``i``-th range of the numbers, so the buckets' rows sorted by them, bucket
    after bucket, are one order of all rows that does not depend on ``n`` either.

    >>> from streambatch.executor.contract import TaskContext
    >>> op = RandomPartitionOp(2, seed=7)
    >>> def numbers(first, rows):
    ...     ctx = TaskContext("Shuffle.map", 0, "p", first_row=first)
    ...     blocks = op.apply(iter([pa.table({"x": list(range(rows))})]), ctx)
    ...     return {n for b in blocks for n in b[RANDOM].to_pylist()}
    >>> numbers(2, 2) < numbers(0, 4)  # rows 2 and 3 get the same numbers
    True
    """

    def __init__(self, n: int, seed: int | None) -> None:
        self.n, self.base = n, _base(seed)
        self.name = "RandomPartition"

    def apply(self, blocks, ctx):
        table = _concat(blocks)
        if table is None or table.num_rows == 0:  # its columns go to the first bucket only,
            yield _empty(table).replace_schema_metadata({NO_ROWS: b"1"})  # marked, so that
            yield from (pa.table({}) for _ in range(self.n - 1))  # an empty dataset keeps
            return  # them and a bucket that drew no row makes no block
        if ctx.first_row is None:
            raise RuntimeError(f"{ctx.stage}: a shuffle's map side runs in a numbered stage")
        numbers = row_randoms(self.base, ctx.first_row, table.num_rows)
        buckets = ((numbers >> np.uint64(32)) * np.uint64(self.n)) >> np.uint64(32)
        if self.n <= 2**16:  # numpy's stable sort of 16-bit values is a radix sort
            buckets = buckets.astype(np.uint16)
        order = np.argsort(buckets, kind="stable")
        table = table.append_column(RANDOM, pa.array(numbers)).take(pa.array(order))
        ends = np.cumsum(np.bincount(buckets.astype(np.int64), minlength=self.n))
        for i in range(self.n):
            start = int(ends[i - 1]) if i else 0
            yield table.slice(start, int(ends[i]) - start)


RANDOM = "__sb_random"  # a shuffled row's random number, between the two sides
NO_ROWS = b"streambatch.no_rows"  # schema metadata: a shuffle map task's output of no rows


def row_randoms(base: int, first: int, rows: int) -> np.ndarray:
    """splitmix64's numbers ``first`` to ``first + rows`` of the stream that starts at
    ``base``: uniform 64-bit values, each a function of its row number alone.

    >>> bool((row_randoms(1, 3, 2) == row_randoms(1, 0, 5)[3:]).all())
    True
    """
    with np.errstate(over="ignore"):
        index = np.arange(first + 1, first + rows + 1, dtype=np.uint64)
        return _mix(np.uint64(base) + index * np.uint64(0x9E3779B97F4A7C15))


def random_order(numbers: np.ndarray) -> np.ndarray:
    """The order of ``numbers`` by their top 32 bits, ties in the order they come: two
    stable radix passes of 16 bits (a third of the time of a sort of the 64-bit
    values; a tie is two rows of a bucket in 4 billion values).

    >>> random_order(np.array([3 << 48, 1 << 48, 2 << 48, 1 << 48], np.uint64)).tolist()
    [1, 3, 2, 0]
    """
    low = ((numbers >> np.uint64(32)) & np.uint64(0xFFFF)).astype(np.uint16)
    high = (numbers >> np.uint64(48)).astype(np.uint16)
    first = np.argsort(low, kind="stable")
    return first[np.argsort(high[first], kind="stable")]


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: every input bit moves every output bit."""
    with np.errstate(over="ignore"):
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return h ^ (h >> np.uint64(31))


def _base(seed: int | None) -> int:
    """The start of a shuffle's random stream: from the seed, or fresh for no seed."""
    if seed is None:
        return int.from_bytes(os.urandom(8), "little")
    return int.from_bytes(hashlib.sha256(f"shuffle|{seed}".encode()).digest()[:8], "little")


class SortMapOp(_ExchangeOp):
    """Each task's rows sorted (the driver then cuts the sorted blocks into ranges)."""

    changes_row_count = False
    runs = False  # True: the input is sorted runs (the reduce side)

    def __init__(self, keys: tuple[str, ...], descending: tuple[bool, ...]) -> None:
        self.keys, self.descending = keys, descending
        self.name = f"SortMap({', '.join(keys)})"

    def apply(self, blocks, ctx):
        table = _keyed(blocks, self.keys, ctx)
        if table is not None:  # no rows: its columns still go on (a join after the sort
            yield sort_table(table, self.keys, self.descending, self.runs)  # needs them)


# ---- reduce side ------------------------------------------------------------------------
class AggregateReduceOp(_ExchangeOp):
    """A bucket's partial aggregates merged and finalized: one row per group, sorted by
    the keys (nulls last), columns named as Ray Data names them (``sum(v)``)."""

    def __init__(self, keys: tuple[str, ...], aggs: tuple) -> None:
        self.keys, self.aggs = keys, aggs
        self.name = f"Aggregate({', '.join(keys)})"
        self.holds_gil = any(a.runs_python for a in aggs)

    def apply(self, blocks, ctx):
        states = _concat(blocks)
        if states is None or states.num_rows == 0:
            return
        yield final_aggregates(states, self.keys, self.aggs)


class DistinctReduceOp(_ExchangeOp):
    """A bucket's keys once each, sorted."""

    def __init__(self, keys: tuple[str, ...]) -> None:
        self.keys = keys
        self.name = f"Distinct({', '.join(keys)})"

    def apply(self, blocks, ctx):
        table = _concat(blocks)
        if table is None or table.num_rows == 0:
            return
        distinct = table.group_by(list(self.keys), use_threads=False).aggregate([])
        yield sort_table(distinct, self.keys, (False,) * len(self.keys))


class MapGroupsReduceOp(_ExchangeOp):
    """``fn`` over each group of a bucket's rows (groups in key order)."""

    holds_gil = True  # a user function: in worker processes, as map_batches

    def __init__(self, keys: tuple[str, ...], fn: Callable, batch_format: str) -> None:
        self.keys, self.fn, self.batch_format = keys, fn, batch_format
        self.name = f"MapGroups({getattr(fn, '__name__', type(fn).__name__)})"

    def apply(self, blocks, ctx):
        from streambatch.operators.batch_format import from_batch, to_batch

        table = _concat(blocks)
        if table is None or table.num_rows == 0:
            return
        table = sort_table(table, self.keys, (False,) * len(self.keys))
        for start, stop in group_spans(table, self.keys):
            group = table.slice(start, stop - start)
            try:
                out = self.fn(to_batch(group, self.batch_format))
            except Exception as exc:
                key = tuple(group[k][0].as_py() for k in self.keys)
                raise UDFFailure(self.name, f"group {key if len(key) > 1 else key[0]!r}",
                                 exc) from exc
            yield from_batch(out, self.name)


class ShuffleReduceOp(_ExchangeOp):
    """A bucket's rows in the order of their random numbers (``permute``), or as they came
    (``repartition(n, shuffle=True)``); the numbers' column dropped."""

    changes_row_count = False

    def __init__(self, permute: bool = True) -> None:
        self.permute = permute
        self.name = "Shuffle" if permute else "Repartition"

    def apply(self, blocks, ctx):
        blocks = list(blocks)
        marked = any(NO_ROWS in (b.schema.metadata or {}) for b in blocks)
        table = _concat(iter(blocks))
        if table is None:
            table = pa.table({})
        elif self.permute and table.num_rows:
            order = random_order(table[RANDOM].to_numpy())
            table = table.combine_chunks().take(pa.array(order))  # one chunk: a faster take
        if table.num_rows or marked or not self.permute:  # repartition(n): n partitions,
            # empty too; an empty dataset's shuffle: one block of no rows, its columns
            table = table.replace_schema_metadata(None)
            yield table.drop_columns([c for c in table.column_names if c == RANDOM])


class SortReduceOp(SortMapOp):
    """A bucket's sorted ranges merged into one sorted block."""

    runs = True


SIDE = b"streambatch.side"  # schema metadata: which input of a join a block comes from

JOIN_TYPES = {"inner": "inner", "left": "left outer", "right": "right outer",
              "outer": "full outer", "semi": "left semi", "anti": "left anti",
              "right_semi": "right semi", "right_anti": "right anti"}


class JoinMapOp(SortMapOp):
    """One side of a join: each task's rows sorted by that side's keys, marked with the
    side (schema metadata, which slices and shared memory keep); float keys canonical
    (:func:`canonical_keys`: a ``-0.0`` key matches ``0.0``, as in SQL, and comes out as
    ``0.0``)."""

    def __init__(self, keys: tuple[str, ...], side: int) -> None:
        super().__init__(keys, (False,) * len(keys))
        self.side = side
        self.name = f"JoinMap({', '.join(keys)})"

    def apply(self, blocks, ctx):
        table = _keyed(blocks, self.keys, ctx)
        if table is not None:  # an empty side still tells the reducers its columns
            table = canonical_keys(table, self.keys)  # -0.0 matches 0.0 (Arrow's hash join
            table = sort_table(table, self.keys, self.descending)  # compares bits)
            yield table.replace_schema_metadata({SIDE: str(self.side).encode()})


class JoinReduceOp(_ExchangeOp):
    """One key range of both sides joined (pyarrow's hash join: a null key matches
    nothing, as in SQL)."""

    def __init__(self, keys: tuple[str, ...], right_keys: tuple[str, ...], how: str,
                 suffixes: tuple[str, str]) -> None:
        self.keys, self.right_keys, self.how, self.suffixes = keys, right_keys, how, suffixes
        self.name = f"Join({how} on {', '.join(keys)})"

    def apply(self, blocks, ctx):
        sides: dict[int, list[pa.Table]] = {0: [], 1: []}
        for block in blocks:
            side = int((block.schema.metadata or {}).get(SIDE, b"0"))
            sides[side].append(block.replace_schema_metadata(None))
        if not sides[0] or not sides[1]:  # a side with no block at all: no columns known
            kept = {"left": 0, "anti": 0, "right": 1, "right_anti": 1,
                    "outer": None}.get(self.how, -1)
            rows = [t for side in (0, 1) if kept in (side, None) for t in sides[side]]
            if rows:
                yield concat_blocks(rows)
            return
        left, right = concat_blocks(sides[0]), concat_blocks(sides[1])
        if not left.num_rows and not right.num_rows:
            return
        joined = join_tables(left, right, list(self.keys), list(self.right_keys),
                             JOIN_TYPES[self.how], (self.suffixes[0] or None,
                                                    self.suffixes[1] or None))
        if joined.num_rows:
            yield joined


# ---- helpers ------------------------------------------------------------------------------
def _empty(table: pa.Table | None, keys: tuple[str, ...] | None = None) -> pa.Table:
    if table is None:
        return pa.table({})
    return (table.select(list(keys)) if keys else table).slice(0, 0)


def sort_table(table: pa.Table, keys: tuple[str, ...], descending: tuple[bool, ...],
               runs: bool = False) -> pa.Table:
    """``table`` sorted by ``keys`` (nulls last, whatever the direction; NaN before nulls).
    ``runs``: the table is a few sorted runs end to end (a merge, not a sort). Ties may
    come in any order, the same in every run.

    >>> sort_table(pa.table({"a": [2, None, 1]}), ("a",), (True,))["a"].to_pylist()
    [2, 1, None]
    >>> sort_table(pa.table({"a": [2.5, float("nan"), -1.0]}), ("a",), (True,))["a"].to_pylist()
    [2.5, -1.0, nan]
    """
    if not keys or not table.num_rows:
        return table
    order = _numpy_order(table, keys, descending, runs)
    if order is None:
        order = pc.sort_indices(table, sort_keys=[
            (k, "descending" if d else "ascending") for k, d in zip(keys, descending, strict=True)])
    if any(column.num_chunks > 1 for column in table.columns):
        table = table.combine_chunks()  # one copy, then a take from one chunk: faster
    return table.take(order)


def _numpy_order(table: pa.Table, keys: tuple[str, ...], descending: tuple[bool, ...],
                 runs: bool) -> np.ndarray | None:
    """The sort order of one numeric key without nulls, by numpy (quicksort, or timsort's
    merge for ``runs``: both faster than pyarrow's stable sort); None otherwise."""
    column = table[keys[0]]
    kind = column.type
    if len(keys) > 1 or column.null_count or not (
            pa.types.is_integer(kind) or pa.types.is_floating(kind)):
        return None
    values = column.to_numpy()
    if descending[0]:  # NaN stays last: -NaN is NaN
        values = -values if pa.types.is_floating(kind) else ~values
    return np.argsort(values, kind="stable" if runs else "quicksort")


def group_spans(table: pa.Table, keys: tuple[str, ...]) -> list[tuple[int, int]]:
    """(start, stop) of each run of equal keys in a table sorted by them (vectorized; a
    null key is a group of its own, as in a groupby).

    >>> group_spans(pa.table({"k": [1, 1, 2, None, None]}), ("k",))
    [(0, 2), (2, 3), (3, 5)]
    >>> group_spans(pa.table({"k": [0.0, -0.0, float("nan"), float("nan")]}), ("k",))
    [(0, 2), (2, 4)]
    """
    n = table.num_rows
    if n == 0:
        return []
    change = np.zeros(n - 1, dtype=bool)
    for key in keys:
        column = table[key].combine_chunks()
        before, after = column.slice(0, n - 1), column.slice(1)
        try:
            differs = pc.fill_null(pc.not_equal(before, after), False)
        except (pa.ArrowNotImplementedError, pa.ArrowInvalid):  # nested keys: by value
            values = column.to_pylist()
            differs = pa.array([values[i] != values[i + 1] for i in range(n - 1)], pa.bool_())
        if pa.types.is_floating(column.type):  # NaN next to NaN: the same group
            differs = pc.and_(differs, pc.invert(pc.and_(pc.is_nan(before), pc.is_nan(after))))
            differs = pc.fill_null(differs, False)
        nulls = pc.not_equal(before.is_null(), after.is_null())
        change |= pc.or_(differs, nulls).to_numpy(zero_copy_only=False)
    starts = np.concatenate([[0], np.nonzero(change)[0] + 1])
    stops = np.append(starts[1:], n)
    return list(zip(starts.tolist(), stops.tolist(), strict=True))


def partial_states(table: pa.Table, keys: tuple[str, ...], aggs: tuple) -> pa.Table:
    """Every aggregate's partial state of ``table``'s groups, side by side (groups sorted by
    key, so every aggregate's rows line up), state columns prefixed ``a<i>.``, the keys
    under :func:`internal_keys` names (the aggregates still see them under their own
    names: ``groupby("k").sum("k")`` sums k). The simple built-ins share one ``group_by``."""
    inner = internal_keys(keys)
    missing = sorted({a.on for a in aggs if getattr(a, "on", None) is not None
                      and a.on not in table.column_names})
    note = {MISSING: json.dumps({"missing": missing, "columns": table.column_names})}
    original = table
    table = table.rename_columns([inner[keys.index(c)] if c in keys else c
                                  for c in table.column_names])
    table = canonical_keys(table, inner)
    for key in keys:  # the key columns also under their own names: an aggregate may read them
        table = table.append_column(key, original[key])
    keys = inner
    order = (False,) * len(keys)
    simple = [(f"a{i}.", a) for i, a in enumerate(aggs) if a.batchable]
    parts = [sort_table(partial_together(table, list(keys), simple), keys, order)] if simple else []
    for i, agg in enumerate(aggs):
        if not agg.batchable:
            states = sort_table(agg.partial(table, list(keys)), keys, order)
            parts.append(states.rename_columns([c if c in keys else f"a{i}.{c}"
                                                for c in states.column_names]))
    out = _side_by_side(parts, keys) if parts else table.select(list(keys))
    return out.replace_schema_metadata(note) if missing else out


def _side_by_side(parts: list[pa.Table], keys: tuple[str, ...]) -> pa.Table:
    """The keys of the first table, then every table's other columns (the rows line up)."""
    out = parts[0]
    for part in parts[1:]:
        for name in part.column_names:
            if name not in keys:
                out = out.append_column(name, part[name])
    return out


MISSING = b"streambatch.missing"  # schema metadata of partial states: the aggregates'
# columns the block lacked (null there), and the columns it had


def columns_checked(split: Callable, stage: str) -> Callable:
    """``split`` that first checks the partial states' notes: a column that every block
    lacked is a mistake (ColumnNotFoundError), not a column of nulls.

    >>> t = pa.table({"k": [1]}).replace_schema_metadata(
    ...     {MISSING: '{"missing": ["v"], "columns": ["k"]}'})
    >>> columns_checked(lambda tables, at_least: [], "Aggregate(sum(v))")([t], 0)
    Traceback (most recent call last):
    ...
    streambatch.executor.contract.ColumnNotFoundError: stage 'Aggregate(sum(v))': column 'v' not found; the columns are ['k']
    """
    def checked(tables: list[pa.Table], at_least: int = 0) -> list:
        notes = [json.loads((t.schema.metadata or {}).get(MISSING, b"null"))
                 for t in tables if t.num_rows]
        if notes and all(notes):
            never = set.intersection(*(set(n["missing"]) for n in notes))
            if never:
                raise ColumnNotFoundError(stage, sorted(never)[0], notes[0]["columns"])
        return split(tables, at_least)

    return checked


def final_aggregates(states: pa.Table, user_keys: tuple[str, ...], aggs: tuple) -> pa.Table:
    """Merge the partial states of one bucket and finalize them: keys (their names back),
    then one column per aggregate named by it."""
    keys = internal_keys(user_keys)
    order = (False,) * len(keys)
    merged: dict[int, pa.Table] = {}
    simple = [(f"a{i}.", a) for i, a in enumerate(aggs) if a.batchable]
    if simple:
        together = sort_table(merge_together(states, list(keys), simple), keys, order)
        merged.update({i: unprefixed(together, list(keys), f"a{i}.")
                       for i, a in enumerate(aggs) if a.batchable})
    for i, agg in enumerate(aggs):
        if not agg.batchable:
            own = unprefixed(states, list(keys), f"a{i}.")
            merged[i] = sort_table(agg.merge(own, list(keys)), keys, order)
    out = merged[0].select(list(keys)) if merged else states.select(list(keys))
    for i, agg in enumerate(aggs):
        out = out.append_column(agg.name, agg.finalize(merged[i]))
    return out.rename_columns([user_keys[keys.index(c)] if c in keys else c
                               for c in out.column_names])
