"""The block ops of all-to-all operators, on both sides of an exchange.

The map side runs in the upstream stage's tasks and cuts each task's rows into
``n`` buckets: by a hash of the keys (groupby, unique), at random (shuffle,
repartition), with partial aggregation per bucket where it applies; it emits exactly
``n`` blocks, bucket ``i`` as the task's output ``i`` (empty ones too). Sort sorts
each task's rows instead; the driver then cuts every sorted block into ranges
(:func:`range_split`, boundaries from a sample). The reduce side runs one task per
bucket over that bucket's blocks.

>>> import pyarrow as pa
>>> from streambatch.executor.contract import TaskContext
>>> ctx = TaskContext("Exchange", 0, "partition 0", key="k0")
>>> t = pa.table({"k": [1, 2, 1, 3], "v": [1, 2, 3, 4]})
>>> out = list(HashPartitionOp(("k",), 2).apply(iter([t]), ctx))
>>> len(out), sum(b.num_rows for b in out)
(2, 4)
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from streambatch.connectors.block_joins import concat_blocks
from streambatch.executor.contract import ColumnNotFoundError, TaskContext, UDFFailure

_MIX = np.uint64(0x9E3779B97F4A7C15)


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


def internal_keys(keys: tuple[str, ...]) -> tuple[str, ...]:
    """The names an aggregate's keys travel under (they never meet a state column).

    >>> internal_keys(("n", "state"))
    ('__sb_k0', '__sb_k1')
    """
    return tuple(f"__sb_k{i}" for i in range(len(keys)))


# ---- map side ---------------------------------------------------------------------------
class HashPartitionOp(_ExchangeOp):
    """Rows to ``n`` buckets by a hash of ``keys`` (the same key, the same bucket, in every
    task and process); with ``aggs``, each bucket's rows become partial aggregates."""

    def __init__(self, keys: tuple[str, ...], n: int, aggs: tuple = ()) -> None:
        self.keys, self.n, self.aggs = keys, n, aggs
        self.name = f"HashPartition({', '.join(keys)})"

    def apply(self, blocks: Iterator[pa.Table], ctx: TaskContext) -> Iterator[pa.Table]:
        """Yield ``n`` blocks: bucket 0 first."""
        table = _concat(blocks)
        if table is None or table.num_rows == 0:
            yield from (_empty(table) for _ in range(self.n))
            return
        buckets = bucket_of(table, self.keys, self.n)
        for i in range(self.n):
            part = table.filter(pa.array(buckets == i))
            yield partial_states(part, self.keys, self.aggs) if self.aggs else part


class DistinctPartitionOp(HashPartitionOp):
    """Keys to ``n`` buckets, each bucket's keys once (unique, groupby without aggregates)."""

    def apply(self, blocks, ctx):
        table = _concat(blocks)
        if table is None or table.num_rows == 0:
            yield from (_empty(table, self.keys) for _ in range(self.n))
            return
        table = table.select(list(self.keys))
        buckets = bucket_of(table, self.keys, self.n)
        for i in range(self.n):
            part = table.filter(pa.array(buckets == i))
            yield part.group_by(list(self.keys), use_threads=False).aggregate([])


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
            distinct = table.select(list(self.keys)).group_by(
                list(self.keys), use_threads=False).aggregate([])
            yield sort_table(distinct, self.keys, (False,) * len(self.keys))


class RandomPartitionOp(_ExchangeOp):
    """Rows to ``n`` buckets at random, seeded by ``seed`` and the task's lineage key (the
    same rows go to the same buckets in every run of the same layout)."""

    def __init__(self, n: int, seed: int | None) -> None:
        self.n, self.seed = n, seed
        self.name = "RandomPartition"

    def apply(self, blocks, ctx):
        table = _concat(blocks)
        if table is None or table.num_rows == 0:
            yield from (_empty(table) for _ in range(self.n))
            return
        rng = np.random.default_rng(_seed(self.seed, ctx.key))
        buckets = rng.integers(0, self.n, table.num_rows)
        for i in range(self.n):
            yield table.filter(pa.array(buckets == i))


class SortMapOp(_ExchangeOp):
    """Each task's rows sorted (the driver then cuts the sorted blocks into ranges)."""

    changes_row_count = False

    def __init__(self, keys: tuple[str, ...], descending: tuple[bool, ...]) -> None:
        self.keys, self.descending = keys, descending
        self.name = f"SortMap({', '.join(keys)})"

    def apply(self, blocks, ctx):
        table = _keyed(blocks, self.keys, ctx)
        if table is not None and table.num_rows:
            yield sort_table(table, self.keys, self.descending)


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
    """A bucket's rows in a random order, seeded by ``seed`` and the bucket."""

    changes_row_count = False

    def __init__(self, seed: int | None, permute: bool = True) -> None:
        self.seed, self.permute = seed, permute
        self.name = "Shuffle" if permute else "Repartition"

    def apply(self, blocks, ctx):
        table = _concat(blocks)
        if table is None or table.num_rows == 0:
            if not self.permute:  # repartition(n): n partitions, empty ones too
                yield table if table is not None else pa.table({})
            return
        if self.permute:
            rng = np.random.default_rng(_seed(self.seed, ctx.key))
            table = table.take(pa.array(rng.permutation(table.num_rows)))
        yield table


class SortReduceOp(SortMapOp):
    """A bucket's sorted ranges merged into one sorted block."""


SIDE = b"streambatch.side"  # schema metadata: which input of a join a block comes from

JOIN_TYPES = {"inner": "inner", "left": "left outer", "right": "right outer",
              "outer": "full outer", "semi": "left semi", "anti": "left anti"}


class JoinMapOp(SortMapOp):
    """One side of a join: each task's rows sorted by that side's keys, marked with the
    side (schema metadata, which slices and shared memory keep)."""

    def __init__(self, keys: tuple[str, ...], side: int) -> None:
        super().__init__(keys, (False,) * len(keys))
        self.side = side
        self.name = f"JoinMap({', '.join(keys)})"

    def apply(self, blocks, ctx):
        table = _keyed(blocks, self.keys, ctx)
        if table is not None:  # an empty side still tells the reducers its columns
            table = sort_table(table, self.keys, self.descending)
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
            kept = {"left": 0, "anti": 0, "right": 1, "outer": None}.get(self.how, -1)
            rows = [t for side in (0, 1) if kept in (side, None) for t in sides[side]]
            if rows:
                yield concat_blocks(rows)
            return
        left, right = concat_blocks(sides[0]), concat_blocks(sides[1])
        if not left.num_rows and not right.num_rows:
            return
        joined = left.join(right, list(self.keys), list(self.right_keys),
                           join_type=JOIN_TYPES[self.how], left_suffix=self.suffixes[0] or None,
                           right_suffix=self.suffixes[1] or None, use_threads=False)
        if joined.num_rows:
            yield joined


# ---- helpers ------------------------------------------------------------------------------
def bucket_of(table: pa.Table, keys: tuple[str, ...], n: int) -> np.ndarray:
    """The bucket of each row: a hash of its key values that is the same in every process
    (Python's ``hash`` of a string is not), modulo ``n``.

    >>> b = bucket_of(pa.table({"k": ["a", "b", "a", None]}), ("k",), 4)
    >>> bool(b[0] == b[2]), bool(((0 <= b) & (b < 4)).all())
    (True, True)
    """
    h = np.zeros(table.num_rows, dtype=np.uint64)
    for key in keys:
        h = _mix(h * np.uint64(31) + column_hash(table[key]))
    return (h % np.uint64(n)).astype(np.int64)


def column_hash(column) -> np.ndarray:
    """A deterministic 64-bit hash per value (nulls hash to 0).

    >>> column_hash(pa.chunked_array([[1, None]])).tolist()[1]
    0
    """
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_dictionary(array.type):
        array = array.cast(array.type.value_type)
    typ = array.type
    if pa.types.is_integer(typ) or pa.types.is_boolean(typ) or pa.types.is_temporal(typ):
        values = pc.fill_null(array.cast(pa.int64()) if not pa.types.is_temporal(typ)
                              else array.view(pa.int64()), 0).to_numpy(zero_copy_only=False)
        h = _mix(values.astype(np.int64).view(np.uint64) ^ _MIX)
    elif pa.types.is_floating(typ):
        values = pc.fill_null(array.cast(pa.float64()), 0.0).to_numpy(zero_copy_only=False)
        values = np.where(values == 0.0, 0.0, values)  # -0.0 and 0.0: one key
        h = _mix(values.view(np.uint64) ^ _MIX)
    else:
        h = _bytes_hash(array)
    valid = array.is_valid().to_numpy(zero_copy_only=False)
    return np.where(valid, h, np.uint64(0))


def _bytes_hash(array: pa.Array) -> np.ndarray:
    """Strings and binaries by their bytes; other types by their text (slow path)."""
    if not (pa.types.is_string(array.type) or pa.types.is_binary(array.type)
            or pa.types.is_large_string(array.type) or pa.types.is_large_binary(array.type)):
        return np.array([int.from_bytes(hashlib.blake2b(repr(v).encode(), digest_size=8)
                                        .digest(), "little") for v in array.to_pylist()],
                        dtype=np.uint64)
    values = [v if v is not None else b"" for v in array.cast(pa.large_binary()).to_pylist()]
    return np.array([int.from_bytes(hashlib.blake2b(v, digest_size=8).digest(), "little")
                     for v in values], dtype=np.uint64)


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: every input bit moves every output bit."""
    with np.errstate(over="ignore"):
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return h ^ (h >> np.uint64(31))


def _seed(seed: int | None, key: str) -> list[int]:
    digest = hashlib.sha256(f"{seed}|{key}".encode()).digest()
    return [int.from_bytes(digest[i:i + 4], "little") for i in range(0, 16, 4)] + \
        ([] if seed is not None else list(np.random.SeedSequence().generate_state(2)))


def _empty(table: pa.Table | None, keys: tuple[str, ...] | None = None) -> pa.Table:
    if table is None:
        return pa.table({})
    return (table.select(list(keys)) if keys else table).slice(0, 0)


def sort_table(table: pa.Table, keys: tuple[str, ...], descending: tuple[bool, ...]) -> pa.Table:
    """``table`` sorted by ``keys`` (nulls last, whatever the direction).

    >>> sort_table(pa.table({"a": [2, None, 1]}), ("a",), (True,))["a"].to_pylist()
    [2, 1, None]
    """
    if not keys or not table.num_rows:
        return table
    order = [(k, "descending" if d else "ascending") for k, d in zip(keys, descending, strict=True)]
    return table.take(pc.sort_indices(table, sort_keys=order))  # nulls at the end by default


def group_spans(table: pa.Table, keys: tuple[str, ...]) -> list[tuple[int, int]]:
    """(start, stop) of each run of equal keys in a table sorted by them (vectorized; a
    null key is a group of its own, as in a groupby).

    >>> group_spans(pa.table({"k": [1, 1, 2, None, None]}), ("k",))
    [(0, 2), (2, 3), (3, 5)]
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
        nulls = pc.not_equal(before.is_null(), after.is_null())
        change |= pc.or_(differs, nulls).to_numpy(zero_copy_only=False)
    starts = np.concatenate([[0], np.nonzero(change)[0] + 1])
    stops = np.append(starts[1:], n)
    return list(zip(starts.tolist(), stops.tolist(), strict=True))


def partial_states(table: pa.Table, keys: tuple[str, ...], aggs: tuple) -> pa.Table:
    """Every aggregate's partial state of ``table``'s groups, side by side (groups sorted by
    key, so every aggregate's rows line up), state columns prefixed ``a<i>.``, the keys
    under :func:`internal_keys` names."""
    inner = internal_keys(keys)
    table = table.rename_columns([inner[keys.index(c)] if c in keys else c
                                  for c in table.column_names])
    keys = inner
    out: pa.Table | None = None
    for i, agg in enumerate(aggs):
        states = sort_table(agg.partial(table, list(keys)), keys, (False,) * len(keys))
        if out is None:
            out = states.select(list(keys))
        for name in states.column_names:
            if name not in keys:
                out = out.append_column(f"a{i}.{name}", states[name])
    return out if out is not None else table.select(list(keys))


def final_aggregates(states: pa.Table, user_keys: tuple[str, ...], aggs: tuple) -> pa.Table:
    """Merge the partial states of one bucket and finalize them: keys (their names back),
    then one column per aggregate named by it."""
    keys = internal_keys(user_keys)
    out: pa.Table | None = None
    for i, agg in enumerate(aggs):
        prefix = f"a{i}."
        mine = [c for c in states.column_names if c.startswith(prefix)]
        own = states.select(list(keys) + mine).rename_columns(
            list(keys) + [c[len(prefix):] for c in mine])
        merged = sort_table(agg.merge(own, list(keys)), keys, (False,) * len(keys))
        if out is None:
            out = merged.select(list(keys))
        out = out.append_column(agg.name, agg.finalize(merged))
    out = out if out is not None else states.select(list(keys))
    return out.rename_columns([user_keys[keys.index(c)] if c in keys else c
                               for c in out.column_names])


Span = tuple  # (index of a block in the split's input, first row, rows): a slice of it


def range_split(keys: tuple[str, ...], descending: tuple[bool, ...], n: int
                ) -> Callable[[list[pa.Table], int], list[list[Span]]]:
    """The driver's cut of sorted blocks into at least ``n`` key ranges: boundaries from
    an evenly spaced sample of every block, each block cut at them by binary search.
    Bucket ``i``'s spans (slices of the blocks, no copy), merged, are the ``i``-th part
    of the sorted output. ``at_least`` raises the number of ranges (the exchange asks
    for more when its input is large for the memory budget).

    >>> cut = range_split(("x",), (False,), 2)
    >>> cut([pa.table({"x": [1, 3, 5, 7]}), pa.table({"x": [2, 4, 6, 8]})], 0)
    [[(0, 0, 2), (1, 0, 2)], [(0, 2, 2), (1, 2, 2)]]
    """
    def split(tables: list[pa.Table], at_least: int = 0) -> list[list[Span]]:
        named = [(i, t, keys) for i, t in enumerate(tables)]
        return _cut(named, descending, max(n, at_least))

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


def _cut(named: list[tuple[int, pa.Table, tuple]], descending, n: int) -> list[list[Span]]:
    """Spans per key range of sorted blocks (each with its own key columns)."""
    filled = [(i, t, k) for i, t, k in named if t.num_rows]
    bounds = _boundaries_of([(t, k) for _, t, k in filled], descending, n)
    out: list[list[Span]] = [[] for _ in range(len(bounds) + 1)]
    for index, table, keys in filled:
        cuts = [0] + [_bisect(table, b, keys, descending) for b in bounds] + [table.num_rows]
        for i in range(len(bounds) + 1):
            if cuts[i + 1] > cuts[i]:
                out[i].append((index, cuts[i], cuts[i + 1] - cuts[i]))
    return out


def _row(table: pa.Table, keys: tuple[str, ...], i: int) -> tuple:
    return tuple(table[k][i].as_py() for k in keys)


def _before(a: tuple, b: tuple, descending: tuple[bool, ...]) -> bool:
    """True when row key ``a`` sorts strictly before ``b`` (nulls last)."""
    for x, y, desc in zip(a, b, descending, strict=True):
        if x == y:
            continue
        if x is None:
            return False
        if y is None:
            return True
        return x > y if desc else x < y
    return False


def _bisect(table: pa.Table, bound: tuple, keys, descending) -> int:
    """The first row of a sorted ``table`` that does not sort before ``bound``."""
    lo, hi = 0, table.num_rows
    while lo < hi:
        mid = (lo + hi) // 2
        if _before(_row(table, keys, mid), bound, descending):
            lo = mid + 1
        else:
            hi = mid
    return lo


def _boundaries(tables: list[pa.Table], keys, descending, n: int) -> list[tuple]:
    return _boundaries_of([(t, keys) for t in tables], descending, n)


def _boundaries_of(tables: list[tuple[pa.Table, tuple]], descending, n: int) -> list[tuple]:
    """Boundaries of ``n`` key ranges from an evenly spaced sample of each sorted table
    (each with its own key columns)."""
    sample = []
    for table, keys in tables:
        count = min(table.num_rows, 64)
        for i in np.linspace(0, table.num_rows - 1, count).astype(int):
            sample.append(_row(table, keys, int(i)))
    if not sample or n <= 1:
        return []
    import functools

    def compare(a, b):
        return -1 if _before(a, b, descending) else 1 if _before(b, a, descending) else 0

    sample.sort(key=functools.cmp_to_key(compare))
    picks = [sample[len(sample) * i // n] for i in range(1, n)]
    bounds: list[tuple] = []
    for b in picks:  # equal boundaries would make empty buckets
        if not bounds or compare(bounds[-1], b) < 0:
            bounds.append(b)
    return bounds
