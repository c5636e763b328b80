"""Aggregate functions: Ray Data's names (``Count``, ``Sum``, ``Min``, ``Max``, ``Mean``,
``Std``, user-defined ``AggregateFn``), computed in three steps so an all-to-all
groupby combines on the map side:

- ``partial(table, keys)``: per group of one block, a small state table (the keys and
  this aggregate's state columns), computed with ``pyarrow.Table.group_by``;
- ``merge(states, keys)``: the states of several blocks for the same groups into one;
- ``finalize(states)``: the output column.

Nulls are skipped (``ignore_nulls=True``, as in Ray Data); a group whose values are all
null gets null; ``Count()`` counts rows.

>>> import pyarrow as pa
>>> t = pa.table({"k": [1, 1, 2], "v": [1.0, 3.0, None]})
>>> states = Mean("v").partial(t, ["k"])
>>> Mean("v").finalize(Mean("v").merge(states, ["k"])).to_pylist()
[2.0, None]
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from streambatch.executor.contract import ColumnTypeError, SumOverflowError


class AggregateFn:
    """An aggregation over groups of rows (subclassed by the built-ins; or built from
    four functions, as Ray Data's ``AggregateFn``):

    - ``init(key)`` -> the state of an empty group (``key``: the group's key value, a
      tuple for several keys, None for a global aggregate);
    - ``accumulate_block(state, batch)`` -> the state after a group's rows (a
      ``pyarrow.Table`` holding only that group's rows);
    - ``merge(a, b)`` -> one state of two;
    - ``finalize(state)`` -> the output value (default: the state).

    >>> import pyarrow as pa
    >>> span = AggregateFn(init=lambda k: (None, None), name="span",
    ...     accumulate_block=lambda s, b: _span(s, b["v"].to_pylist()),
    ...     merge=lambda a, b: _span(a, [x for x in a + b if x is not None]),
    ...     finalize=lambda s: s[1] - s[0])
    >>> t = pa.table({"k": [1, 1, 2], "v": [5, 9, 4]})
    >>> span.finalize(span.merge(span.partial(t, ["k"]), ["k"])).to_pylist()
    [4, 0]
    """

    def __init__(self, init: Callable, merge: Callable, name: str,
                 accumulate_block: Callable | None = None,
                 finalize: Callable | None = None) -> None:
        if accumulate_block is None:
            raise ValueError(f"AggregateFn {name!r}: pass accumulate_block(state, batch)")
        self._init, self._merge, self.name = init, merge, name
        self._accumulate, self._finalize = accumulate_block, finalize or (lambda s: s)

    runs_python = True  # user code: runs in worker processes, as map_batches does
    batchable = False  # True: a simple built-in, sharing one group_by with the others

    # The state travels between tasks as one pickled binary value per group.
    def partial(self, table: pa.Table, keys: list[str]) -> pa.Table:
        """Per group of ``table``: the keys and this aggregate's state."""
        groups, key_values = _group_rows(table, keys)
        states = [self._accumulate(self._init(_key(k, keys)), table.take(pa.array(rows)))
                  for k, rows in zip(key_values, groups, strict=True)]
        return _with_keys(table, keys, key_values, {"__sb_state": _pickled(states)})

    def merge(self, states: pa.Table, keys: list[str]) -> pa.Table:
        """One state per group, merging the states of several blocks."""
        groups, key_values = _group_rows(states, keys)
        column = states["__sb_state"].to_pylist()
        merged = []
        for rows in groups:
            values = [pickle.loads(column[i]) for i in rows]
            state = values[0]
            for other in values[1:]:
                state = self._merge(state, other)
            merged.append(state)
        return _with_keys(states, keys, key_values, {"__sb_state": _pickled(merged)})

    def finalize(self, states: pa.Table) -> pa.Array:
        """The output column, one value per group (in the states' order)."""
        values = [self._finalize(pickle.loads(s)) for s in states["__sb_state"].to_pylist()]
        return pa.array(values)

    def empty(self) -> object:
        """The value over no rows at all (a global aggregate of an empty dataset)."""
        return self._finalize(self._init(None))


class _Builtin(AggregateFn):
    """An aggregate computed by ``pyarrow.Table.group_by`` on state columns."""

    label = ""
    runs_python = False  # pyarrow kernels
    numeric = False  # True: ``on`` must hold numbers

    def __init__(self, on: str | None = None, ignore_nulls: bool = True,
                 alias_name: str | None = None) -> None:
        if not isinstance(ignore_nulls, (bool, np.bool_)):
            raise TypeError(f"{type(self).__name__}: ignore_nulls is True or False, not "
                            f"{ignore_nulls!r} (the second argument is ignore_nulls, as in "
                            f"Ray Data; name the output with alias_name=)")
        self.on, self.alias_name, self.ignore_nulls = on, alias_name, bool(ignore_nulls)
        self.name = alias_name or self.default_name()

    def default_name(self) -> str:
        """The name Ray Data gives the output column when no ``alias_name`` is given."""
        return f"{self.label}({self.on or ''})"

    def _states(self, table: pa.Table, keys: list[str], specs: list[tuple]) -> pa.Table:
        """``table`` grouped by ``keys`` with ``specs`` ((column, function, out name))."""
        if not keys:  # a global aggregate: one group
            table = table.append_column("__sb_g", pa.array(np.zeros(table.num_rows, np.int8)))
            keys = ["__sb_g"]
        out = table.group_by(keys, use_threads=False).aggregate(
            [(column, function) for column, function, _ in specs])
        names = [f"{column}_{function}" for column, function, _ in specs]
        renamed = out.rename_columns([{n: o for n, (_, _, o) in zip(names, specs, strict=True)}
                                      .get(c, c) for c in out.column_names])
        return renamed.drop_columns(["__sb_g"]) if "__sb_g" in renamed.column_names else renamed

    def values(self, table: pa.Table) -> pa.ChunkedArray:
        """Column ``on`` (null where the block lacks it), checked to hold numbers for the
        aggregates that add them."""
        if self.on not in table.column_names:
            return pa.chunked_array([pa.nulls(table.num_rows, pa.int64())])
        column = table[self.on]
        kind = column.type
        if self.numeric and not (pa.types.is_integer(kind) or pa.types.is_floating(kind)
                                 or pa.types.is_decimal(kind) or pa.types.is_boolean(kind)
                                 or pa.types.is_null(kind)):
            raise ColumnTypeError(self.name, str(self.on), str(kind), "numbers")
        return column

    def _with_values(self, table: pa.Table, cast: pa.DataType | None = None) -> pa.Table:
        """``table`` with its ``on`` column checked (and cast, rounding as numpy does: an
        int64 beyond 2**53 becomes the nearest float64), or added as nulls."""
        values = self.values(table)
        if cast is not None:
            values = pc.cast(values, cast, safe=False)
        if self.on in table.column_names:
            return table.set_column(table.column_names.index(self.on), self.on, values)
        return table.append_column(self.on, values)

    def empty(self) -> object:
        return None


class _Simple(_Builtin):
    """A built-in whose states are plain sums, counts, mins or maxes: several of them run
    in one ``group_by`` (:func:`partial_together`, :func:`merge_together`). With
    ``ignore_nulls=False`` a group holding a null gets null (Ray Data's rule): a state
    ``z`` counts the nulls.

    >>> import pyarrow as pa
    >>> t = pa.table({"k": [1, 1, 2], "v": [1, None, 3]})
    >>> s = Sum("v", ignore_nulls=False)
    >>> s.finalize(s.merge(s.partial(t, ["k"]), ["k"])).to_pylist()
    [None, 3]
    """

    batchable = True
    counts_nulls = True  # ignore_nulls=False: null where the group holds a null

    def partial_plan(self, table: pa.Table) -> list[tuple[object, str, str]]:
        """(input column, function, state name) for each state column."""
        plan = self.plan(table)
        if self.counts_nulls and not self.ignore_nulls:
            nulls = pc.cast(pc.is_null(self.values(table), nan_is_null=False), pa.int64())
            plan.append((nulls, "sum", "z"))
        return plan

    def merge_plan(self, states: pa.Table, prefix: str) -> list[tuple[str, str]]:
        """(state name, function merging it) for each state column."""
        plan = self.merge_states(states, prefix)
        return plan + ([("z", "sum")] if f"{prefix}z" in states.column_names else [])

    def finalize(self, states: pa.Table) -> pa.Array:
        """The output column: :meth:`result`, null where a counted null was seen."""
        out = self.result(states)
        if "z" not in states.column_names:
            return out
        return pc.if_else(pc.greater(states["z"], 0), pa.scalar(None, out.type), out)

    def plan(self, table: pa.Table) -> list[tuple[object, str, str]]:
        """:meth:`partial_plan`'s states, the null count aside."""
        raise NotImplementedError

    def merge_states(self, states: pa.Table, prefix: str) -> list[tuple[str, str]]:
        """:meth:`merge_plan`'s states, the null count aside."""
        raise NotImplementedError

    def result(self, states: pa.Table) -> pa.Array:
        """The output column from merged states."""
        raise NotImplementedError

    def check(self, states: pa.Table, prefix: str) -> None:
        """Raise if the states (columns named ``prefix`` + state) are wrong."""

    def partial(self, table, keys):
        return unprefixed(partial_together(table, keys, [("a.", self)]), keys, "a.")

    def merge(self, states, keys):
        prefixed = states.rename_columns([c if c in keys else f"a.{c}" for c in states.column_names])
        return unprefixed(merge_together(prefixed, keys, [("a.", self)]), keys, "a.")


class Count(_Simple):
    """Rows per group; with ``on`` and ``ignore_nulls=True``, the rows whose ``on`` is
    not null (Ray Data's ``Count``: ``ignore_nulls`` is False unless given).

    >>> import pyarrow as pa
    >>> t = pa.table({"v": [1.0, None, float("nan")]})
    >>> [c.finalize(c.merge(c.partial(t, []), [])).to_pylist()
    ...  for c in (Count(), Count("v"), Count("v", ignore_nulls=True))]
    [[3], [3], [2]]
    """

    label = "count"
    counts_nulls = False

    def __init__(self, on: str | None = None, ignore_nulls: bool = False,
                 alias_name: str | None = None) -> None:
        super().__init__(on, ignore_nulls, alias_name)

    def plan(self, table):
        if self.on is not None and self.ignore_nulls:
            valid = pc.is_valid(self.values(table))
            return [(pc.cast(valid, pa.int64()), "sum", "n")]
        return [(pa.array(np.ones(table.num_rows, np.int64)), "sum", "n")]

    def merge_states(self, states, prefix):
        return [("n", "sum")]

    def result(self, states):
        return pc.fill_null(states["n"], 0)

    def empty(self) -> object:
        return 0


class Sum(_Simple):
    """Sum of the non-null values of ``on``. An integer sum that leaves the int64 range
    raises :class:`SumOverflowError` (each state also sums in float64, and a wrapped
    sum is 2**64 away from it).

    >>> import pyarrow as pa
    >>> s = Sum("x"); s.finalize(s.merge(s.partial(pa.table({"x": [2**62] * 4}), []), []))
    Traceback (most recent call last):
    ...
    streambatch.executor.contract.SumOverflowError: sum(x): the sum of column 'x' (int64) overflows int64; cast the column to float64 (or a decimal) first
    """

    label = "sum"
    numeric = True

    def plan(self, table):
        values = self.values(table)
        if pa.types.is_null(values.type):  # a block whose values are all null (typed
            return [(values, "min", "s")]  # null): null-typed, where Arrow's sum gives
        plan = [(values, "sum", "s")]  # int64, beside other blocks' doubles (their
        if _is_int(values.type):  # parquet files then disagreed)
            plan.append((pc.cast(values, pa.float64(), safe=False), "sum", "f"))
        return plan

    def merge_states(self, states, prefix):
        if pa.types.is_null(states.schema.field(f"{prefix}s").type):
            return [("s", "min")]
        return [("s", "sum")] + ([("f", "sum")] if f"{prefix}f" in states.column_names else [])

    def check(self, states, prefix):
        if f"{prefix}f" not in states.column_names:
            return
        total = pc.cast(states[f"{prefix}s"], pa.float64(), safe=False)
        if pc.any(pc.greater(pc.abs(pc.subtract(total, states[f"{prefix}f"])), 2.0 ** 62)).as_py():
            raise SumOverflowError(self.name, str(self.on), str(states[f"{prefix}s"].type))

    def result(self, states):
        return states["s"]


def _is_int(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_boolean(kind)


def _decoded(values: pa.ChunkedArray) -> pa.ChunkedArray:
    """``values`` with a dictionary (categorical) column as its plain values (pyarrow has
    no min/max kernel for dictionaries): compared by value, as the column's values."""
    if pa.types.is_dictionary(values.type):
        return pc.cast(values, values.type.value_type)
    return values


class Min(_Simple):
    """Smallest non-null value of ``on`` (of a dictionary column: its smallest value).

    >>> import pyarrow as pa
    >>> t = pa.table({"c": pa.array(["b", "a", None]).dictionary_encode()})
    >>> Min("c").finalize(Min("c").merge(Min("c").partial(t, []), [])).to_pylist()
    ['a']
    """

    label = "min"

    def plan(self, table):
        return [(_decoded(self.values(table)), "min", "m")]

    def merge_states(self, states, prefix):
        return [("m", "min")]

    def result(self, states):
        return states["m"]


class Max(_Simple):
    """Largest non-null value of ``on``."""

    label = "max"

    def plan(self, table):
        return [(_decoded(self.values(table)), "max", "m")]

    def merge_states(self, states, prefix):
        return [("m", "max")]

    def result(self, states):
        return states["m"]


class Mean(_Simple):
    """Mean of the non-null values of ``on`` (float64, summed in float64 as numpy and
    pandas do: integers beyond 2**53 are rounded to the nearest float64, never an error).

    >>> import pyarrow as pa
    >>> m = Mean("v"); states = m.partial(pa.table({"v": [2**62 + 1, 2**62 + 3]}), [])
    >>> m.finalize(m.merge(states, [])).to_pylist() == [float(2**62)]
    True
    """

    label = "mean"
    numeric = True

    def plan(self, table):
        values = pc.cast(self.values(table), pa.float64(), safe=False)
        return [(values, "sum", "s"), (values, "count", "n")]

    def merge_states(self, states, prefix):
        return [("s", "sum"), ("n", "sum")]

    def result(self, states):
        n = pc.cast(states["n"], pa.float64())
        return pc.if_else(pc.equal(n, 0), pa.scalar(None, pa.float64()), pc.divide(states["s"], n))


def partial_together(table: pa.Table, keys: list[str], aggs: list[tuple[str, _Simple]]
                     ) -> pa.Table:
    """The partial states of several simple aggregates (``(prefix, aggregate)``) in one
    ``group_by``: the keys, then each one's state columns named ``prefix`` + state.

    >>> t = pa.table({"k": [1, 1, 2], "v": [1.0, 3.0, None]})
    >>> partial_together(t, ["k"], [("a0.", Count()), ("a1.", Mean("v"))]).to_pylist()[0]
    {'k': 1, 'a0.n': 2, 'a1.s': 4.0, 'a1.n': 2}
    """
    columns: dict[str, object] = {k: table[k] for k in keys}
    specs = []
    for prefix, agg in aggs:
        for values, function, state in agg.partial_plan(table):
            columns[prefix + state] = values
            specs.append((prefix + state, function, prefix + state))
    out = _grouped(pa.table(columns) if columns else pa.table({"__sb_g": []}), keys, specs,
                   table.num_rows)
    for prefix, agg in aggs:
        agg.check(out, prefix)
    return out


def merge_together(states: pa.Table, keys: list[str], aggs: list[tuple[str, _Simple]]
                   ) -> pa.Table:
    """The states :func:`partial_together` made, of several blocks, merged per group."""
    specs = [(prefix + state, function, prefix + state) for prefix, agg in aggs
             for state, function in agg.merge_plan(states, prefix)]
    out = _grouped(states.select(keys + [c for c, _, _ in specs]), keys, specs, states.num_rows)
    for prefix, agg in aggs:
        agg.check(out, prefix)
    return out


def _grouped(table: pa.Table, keys: list[str], specs: list[tuple], rows: int) -> pa.Table:
    """``table`` grouped by ``keys`` (none: one group) with ``specs`` ((column, function,
    output name))."""
    if not keys:
        table = pa.table({**{c: table[c] for c in table.column_names if c != "__sb_g"},
                          "__sb_g": pa.array(np.zeros(rows, np.int8))})
    out = table.group_by(keys or ["__sb_g"], use_threads=False).aggregate(
        [(column, function) for column, function, _ in specs])
    names = {f"{column}_{function}": name for column, function, name in specs}
    out = out.rename_columns([names.get(c, c) for c in out.column_names])
    return out.drop_columns(["__sb_g"]) if not keys else out


def unprefixed(table: pa.Table, keys: list[str], prefix: str) -> pa.Table:
    """The keys and the columns named ``prefix`` + something, as that something."""
    mine = [c for c in table.column_names if c.startswith(prefix)]
    return table.select(keys + mine).rename_columns(keys + [c[len(prefix):] for c in mine])


class Std(_Builtin):
    """Standard deviation of the non-null values of ``on`` (``ddof=1`` by default); states
    are (count, mean, M2), merged with Chan's formula, which keeps its precision when
    values are large. As in Ray Data's ``Std.finalize`` (and pandas), a group with fewer
    than ``ddof + 1`` non-null values (one value, at ``ddof=1``) gets NaN, and a group
    with none gets null (``ignore_nulls``).

    >>> import pyarrow as pa
    >>> t = pa.table({"v": [1e9 + 1, 1e9 + 2, 1e9 + 3]})
    >>> s = Std("v"); s.finalize(s.merge(pa.concat_tables([s.partial(t.slice(0, 1), []),
    ...     s.partial(t.slice(1), [])]), [])).to_pylist()
    [1.0]
    >>> s.finalize(s.merge(s.partial(pa.table({"k": [1, 2, 2], "v": [5.0, None, None]}),
    ...     ["k"]), ["k"])).to_pylist()
    [nan, None]
    """

    label = "std"
    numeric = True

    def __init__(self, on: str | None = None, ddof: int = 1, ignore_nulls: bool = True,
                 alias_name: str | None = None) -> None:
        super().__init__(on, ignore_nulls, alias_name)
        self.ddof = ddof

    def partial(self, table, keys):
        table = self._with_values(table, pa.float64())
        specs = [(self.on, "sum", "s"), (self.on, "count", "n"), (self.on, "variance", "var")]
        if not self.ignore_nulls:  # null where the group holds a null (a state z counts them)
            nulls = pc.cast(pc.is_null(table[self.on], nan_is_null=False), pa.int64())
            table = table.append_column("__sb_z", nulls)
            specs.append(("__sb_z", "sum", "z"))
        sums = self._states(table, keys, specs)
        n = pc.cast(sums["n"], pa.float64())
        mean = pc.if_else(pc.equal(n, 0), 0.0, pc.divide(sums["s"], n))
        m2 = pc.fill_null(pc.multiply(sums["var"], n), 0.0)  # population variance x n
        return sums.drop_columns(["s", "var"]).append_column("mean", mean).append_column("m2", m2)

    def merge(self, states, keys):
        n = pc.cast(states["n"], pa.float64())
        states = states.set_column(states.column_names.index("n"), "n", n)
        safe, codes, dictionaries = _encoded_keys(states, keys)  # join keys without nulls
        safe = safe.drop_columns(keys)  # only the codes join (a null-typed key cannot)
        weighted = safe.append_column("nm", pc.multiply(n, safe["mean"]))
        nulls = [("z", "sum", "z")] if "z" in states.column_names else []
        totals = self._states(weighted, codes, [("n", "sum", "n"), ("nm", "sum", "nm"),
                                                ("m2", "sum", "m2")] + nulls)
        mean = pc.if_else(pc.equal(totals["n"], 0), 0.0, pc.divide(totals["nm"], totals["n"]))
        # M2 = sum(M2_i) + sum(n_i * (mean_i - mean)^2): each group's mean joined back
        if codes:
            joined = weighted.join(totals.select(codes).append_column("gmean", mean), codes)
        else:
            joined = weighted.append_column(
                "gmean", pa.array([mean[0].as_py()] * weighted.num_rows, pa.float64()))
        spread = pc.multiply(joined["n"], pc.power(pc.subtract(joined["mean"], joined["gmean"]), 2))
        extra = self._states(joined.append_column("spread", spread), codes,
                             [("spread", "sum", "spread")])
        if codes:
            totals = totals.join(extra, codes)
            mean = pc.if_else(pc.equal(totals["n"], 0), 0.0, pc.divide(totals["nm"], totals["n"]))
        else:
            totals = totals.append_column("spread", extra["spread"])
        m2 = pc.add(totals["m2"], totals["spread"])
        out = totals.select(codes + ["n"] + [z for z, _, _ in nulls])
        out = out.append_column("mean", mean).append_column("m2", m2)
        return _decoded_keys(out, keys, codes, dictionaries)

    def finalize(self, states):
        n = pc.cast(states["n"], pa.float64())
        dof = pc.subtract(n, float(self.ddof))
        var = pc.if_else(pc.greater(dof, 0), pc.divide(states["m2"], dof), math.nan)
        empty = pc.equal(n, 0)
        if "z" in states.column_names:
            empty = pc.or_(empty, pc.greater(states["z"], 0))
        return pc.sqrt(pc.if_else(empty, pa.scalar(None, pa.float64()), var))


def _group_rows(table: pa.Table, keys: list[str]) -> tuple[list[list[int]], list[tuple]]:
    """Row indices per group, and each group's key values (first-seen order), grouped as
    ``pyarrow.Table.group_by`` groups (so a user's aggregate and a built-in agree: one
    group for all NaN keys); keys pyarrow cannot group (nested values) by Python value."""
    if not keys:  # a global aggregate: all rows, one group
        return ([list(range(table.num_rows))], [()]) if table.num_rows else ([], [])
    rows = pa.array(np.arange(table.num_rows, dtype=np.int64))
    try:
        grouped = table.select(keys).append_column("__sb_rows", rows).group_by(
            keys, use_threads=False).aggregate([("__sb_rows", "list")])
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError):
        return _group_rows_by_value(table, keys)
    key_columns = [grouped[k].to_pylist() for k in keys]
    return (grouped["__sb_rows_list"].to_pylist(),
            [tuple(c[i] for c in key_columns) for i in range(grouped.num_rows)])


def _group_rows_by_value(table: pa.Table, keys: list[str]):
    groups: dict[tuple, list[int]] = {}
    columns = [table[k].to_pylist() for k in keys]
    for i in range(table.num_rows):
        groups.setdefault(tuple(_hashable(c[i]) for c in columns), []).append(i)
    return list(groups.values()), [tuple(columns[j][g[0]] for j in range(len(keys)))
                                   for g in groups.values()]


def _hashable(value):
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple((k, _hashable(v)) for k, v in value.items())
    return value


def _encoded_keys(table: pa.Table, keys: list[str]):
    """``table`` with each key column also as non-null codes (``pyarrow`` joins never match
    nulls, and a null key is a group of its own): (table, code columns, dictionaries)."""
    codes: list[str] = []
    dictionaries: list = []
    for key in keys:
        encoded = pc.dictionary_encode(table[key].combine_chunks())
        name = f"__code_{len(codes)}"
        table = table.append_column(name, pc.fill_null(encoded.indices, -1))
        codes.append(name)
        dictionaries.append(encoded.dictionary)
    return table, codes, dictionaries


def _decoded_keys(table: pa.Table, keys: list[str], codes: list[str], dictionaries) -> pa.Table:
    """The key columns back from their codes (code -1: null), first."""
    columns = {}
    for key, code, dictionary in zip(keys, codes, dictionaries, strict=True):
        indices = table[code].combine_chunks()
        taken = pc.take(dictionary, pc.if_else(pc.equal(indices, -1), None, indices))
        columns[key] = taken
    rest = table.drop_columns(codes)
    return pa.table({**columns, **{n: rest[n] for n in rest.column_names}})


def _key(values: tuple, keys: list[str]):
    return None if not keys else values[0] if len(keys) == 1 else values


def _with_keys(table: pa.Table, keys: list[str], key_values: list[tuple],
               columns: dict[str, pa.Array]) -> pa.Table:
    arrays = {k: pa.array([v[i] for v in key_values], table.schema.field(k).type)
              for i, k in enumerate(keys)}
    return pa.table({**arrays, **columns})


def _pickled(states: list) -> pa.Array:
    return pa.array([pickle.dumps(s) for s in states], pa.binary())


def _span(state, values):
    """(min, max) of ``state`` widened by ``values`` (for the AggregateFn example)."""
    values = [v for v in values if v is not None] + [v for v in state if v is not None]
    return (min(values), max(values)) if values else (None, None)


__all__ = ["AggregateFn", "Count", "Max", "Mean", "Min", "Std", "Sum"]
