"""The all-to-all methods of ``Dataset`` (groupby, aggregates, unique, sort, shuffle),
with Ray Data's names and semantics, and ``GroupedData``.

Aggregate columns are named as Ray Data names them (``count()``, ``sum(v)``,
``mean(v)``...); nulls are skipped; groups come out sorted by key (nulls last).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from streambatch import validate as v
from streambatch.operators import all_to_all as A
from streambatch.operators.aggregates import AggregateFn, Count, Max, Mean, Min, Std, Sum
from streambatch.operators.batch_format import check_batch_format

if TYPE_CHECKING:
    from streambatch.dataset import Dataset


def _names(what: str, value) -> tuple[str, ...]:
    names = (value,) if isinstance(value, str) else tuple(value or ())
    if not all(isinstance(n, str) and n for n in names):
        raise TypeError(f"{what}: expected a column name or a list of them, got {value!r}")
    return names


class AllToAllMethods:
    """Mixed into ``Dataset``: the operators whose output rows depend on all input rows."""

    _plan: Any  # the dataset's logical plan (Dataset sets it)

    def _with(self, op) -> Dataset:  # provided by Dataset
        raise NotImplementedError

    def groupby(self, key: str | list[str] | None,
                num_partitions: int | None = None) -> GroupedData:
        """Group rows by ``key`` (a column, a list of columns, or None for one group);
        ``num_partitions``: the exchange's buckets (default: from the CPUs), as Ray's.

        >>> import streambatch as sb
        >>> ds = sb.from_items([{"k": i % 2, "v": i} for i in range(6)])
        >>> ds.groupby("k").sum("v").take_all()
        [{'k': 0, 'sum(v)': 6}, {'k': 1, 'sum(v)': 9}]
        >>> ds.groupby("k", num_partitions=3).count().num_blocks() <= 3
        True
        """
        if num_partitions is not None:
            num_partitions = v.positive_int("num_partitions", num_partitions)
        return GroupedData(self, _names("groupby", key) if key is not None else (),
                           num_partitions)

    def aggregate(self, *aggs: AggregateFn) -> dict[str, Any]:
        """The aggregates over all rows, as ``{name: value}``.

        >>> import streambatch as sb
        >>> sb.range(5).aggregate(sb.Count(), sb.Max("id"))
        {'count()': 5, 'max(id)': 4}
        """
        ds = GroupedData(self, ()).aggregate(*aggs)
        rows = ds.take_all()  # the op names them: sum(v), sum(v)_2 for two Sum("v")
        return rows[0] if rows else {a.name: a.empty() for a in ds._plan.aggs}

    def sum(self, on: str | list[str], ignore_nulls: bool = True) -> Any:
        """Sum of column ``on`` (a dict for several columns; None when empty; with
        ``ignore_nulls=False``, None when a value is null).

        >>> import streambatch as sb
        >>> sb.range(5).sum("id")
        10
        """
        return self._global(Sum, on, ignore_nulls)

    def min(self, on: str | list[str], ignore_nulls: bool = True) -> Any:
        """Smallest value of ``on``."""
        return self._global(Min, on, ignore_nulls)

    def max(self, on: str | list[str], ignore_nulls: bool = True) -> Any:
        """Largest value of ``on``."""
        return self._global(Max, on, ignore_nulls)

    def mean(self, on: str | list[str], ignore_nulls: bool = True) -> Any:
        """Mean of ``on``.

        >>> import streambatch as sb
        >>> sb.range(5).mean("id")
        2.0
        """
        return self._global(Mean, on, ignore_nulls)

    def std(self, on: str | list[str], ddof: int = 1, ignore_nulls: bool = True) -> Any:
        """Standard deviation of ``on`` (``ddof=1``: the sample's, as Ray Data)."""
        names = _names("std", on)
        result = self.aggregate(*(Std(n, ddof=ddof, ignore_nulls=ignore_nulls) for n in names))
        return result[f"std({names[0]})"] if isinstance(on, str) else result

    def _global(self, cls, on, ignore_nulls: bool) -> Any:
        names = _names(cls.label, on)
        result = self.aggregate(*(cls(n, ignore_nulls=ignore_nulls) for n in names))
        return result[f"{cls.label}({names[0]})"] if isinstance(on, str) else result

    def unique(self, column: str) -> list:
        """The distinct values of ``column`` (sorted, None last).

        >>> import streambatch as sb
        >>> sb.from_items([{"a": 2}, {"a": 1}, {"a": 2}]).unique("a")
        [1, 2]
        """
        (name,) = _names("unique", column)
        ds = self._with(A.Distinct(input=self._plan, keys=(name,)))
        values = [row[name] for row in ds.take_all()]
        return sorted(values, key=lambda x: (x is None, x if x is not None else 0))

    def sort(self, key: str | list[str], descending: bool | list[bool] = False) -> Dataset:
        """Rows sorted by ``key`` (one or more columns; ``descending`` for all, or per key);
        nulls last.

        >>> import streambatch as sb
        >>> [r["id"] for r in sb.range(5).sort("id", descending=True).take_all()]
        [4, 3, 2, 1, 0]
        """
        keys = _names("sort", key)
        order = tuple(descending) if isinstance(descending, (list, tuple)) \
            else (bool(descending),) * len(keys)
        if len(order) != len(keys):
            raise ValueError(f"sort: {len(keys)} keys but {len(order)} descending flags")
        return self._with(A.Sort(input=self._plan, keys=keys, descending=order))

    def join(self, other: Dataset, join_type: str = "inner", num_partitions: int | None = None,
             on: str | Sequence[str] = ("id",), right_on: str | Sequence[str] | None = None,
             left_suffix: str | None = None, right_suffix: str | None = None, *,
             how: str | None = None, partition_size_hint: int | None = None,
             aggregator_ray_remote_args: dict | None = None,
             validate_schemas: bool = False) -> Dataset:
        """Rows of this dataset and ``other`` whose ``on`` columns (``right_on`` on the other
        side) are equal, as SQL's joins: ``join_type`` (``how``, pandas' name for it) is
        inner, left, right, outer, semi (this side's rows that have a match) or anti (those
        that have none), right_semi and right_anti (the same of ``other``'s rows), or
        Ray Data's left_outer, right_outer, full_outer, left_semi, left_anti; a null key
        matches nothing. A non-key column both sides have gets
        ``right_suffix`` (default ``_1``) on ``other``'s. Ray Data's signature:
        ``ds.join(other, "inner", 4, on=("id",))`` works as it is
        (``partition_size_hint``, ``aggregator_ray_remote_args`` and
        ``validate_schemas`` are accepted and not applied).

        >>> import streambatch as sb
        >>> users = sb.from_items([{"id": 1, "name": "ada"}, {"id": 2, "name": "bob"}])
        >>> orders = sb.from_items([{"id": 1, "total": 5}, {"id": 1, "total": 7}])
        >>> sorted(r["total"] for r in users.join(orders, on="id").take_all())
        [5, 7]
        >>> users.join(orders, "left_outer", 2, on=("id",)).count()
        3
        """
        from streambatch.operators.exchange import JOIN_TYPES
        from streambatch.operators.join_columns import check_known_names

        if how is not None and join_type != "inner" and how != join_type:
            raise ValueError(f"join: join_type={join_type!r} and how={how!r}; pass one of them")
        how = how or join_type
        kind = _JOIN_NAMES.get(how, how)
        if kind not in JOIN_TYPES:
            raise ValueError(f"join: join_type={how!r}; expected one of: "
                             f"{', '.join([*JOIN_TYPES, *_JOIN_NAMES])}")
        if num_partitions is not None:
            num_partitions = v.positive_int("num_partitions", num_partitions)
        left_suffix = "" if left_suffix is None else left_suffix
        right_suffix = "_1" if right_suffix is None else right_suffix
        keys = _names("join", on)
        right_keys = _names("join", right_on) if right_on is not None else keys
        if len(keys) != len(right_keys):
            raise ValueError(f"join: {len(keys)} keys on the left, {len(right_keys)} on the right")
        check_known_names(self._plan, other._plan, keys, right_keys, JOIN_TYPES[kind],
                          (left_suffix, right_suffix))
        return self._with(A.Join(input=self._plan, right=other._plan, keys=keys,
                                 right_keys=right_keys, how=kind,
                                 suffixes=(left_suffix, right_suffix),
                                 num_partitions=num_partitions))

    def random_shuffle(self, *, seed: int | None = None,
                       num_blocks: int | None = None) -> Dataset:
        """All rows in a random order (the same order for the same ``seed`` and layout).

        >>> import streambatch as sb
        >>> sorted(r["id"] for r in sb.range(5).random_shuffle(seed=1).take_all())
        [0, 1, 2, 3, 4]
        """
        return self._with(A.Shuffle(input=self._plan, seed=seed, num_partitions=num_blocks))


# Ray Data's join_type names, beside SQL's short ones
_JOIN_NAMES = {"left_outer": "left", "right_outer": "right", "full_outer": "outer",
               "left_semi": "semi", "left_anti": "anti"}


class GroupedData:
    """A dataset grouped by key columns (``Dataset.groupby``).

    >>> import streambatch as sb
    >>> ds = sb.from_items([{"k": "a", "v": 1}, {"k": "b", "v": 2}, {"k": "a", "v": 3}])
    >>> ds.groupby("k").count().take_all()
    [{'k': 'a', 'count()': 2}, {'k': 'b', 'count()': 1}]
    """

    def __init__(self, dataset, keys: tuple[str, ...], num_partitions: int | None = None
                 ) -> None:
        self._dataset, self._keys, self._partitions = dataset, keys, num_partitions

    def aggregate(self, *aggs: AggregateFn) -> Dataset:
        """One row per group: the keys, then one column per aggregate."""
        if not aggs:
            raise ValueError("aggregate: pass at least one aggregate (sb.Count(), sb.Sum(col)...)")
        for agg in aggs:
            if not isinstance(agg, AggregateFn):
                raise TypeError(f"aggregate: {agg!r} is not an AggregateFn (sb.Count(), "
                                "sb.Sum(col), ... or sb.AggregateFn(...))")
        op = A.Aggregate(input=self._dataset._plan, keys=self._keys, aggs=tuple(aggs),
                         num_partitions=self._partitions if self._keys else 1)
        return self._dataset._with(op)

    def count(self) -> Dataset:
        """Rows per group, in column ``count()``."""
        return self.aggregate(Count())

    def sum(self, on: str | list[str], ignore_nulls: bool = True) -> Dataset:
        """Sum per group of each column in ``on`` (``ignore_nulls=False``: null for a
        group holding a null, as for each aggregate below)."""
        return self._each(Sum, on, ignore_nulls)

    def min(self, on: str | list[str], ignore_nulls: bool = True) -> Dataset:
        """Smallest value per group."""
        return self._each(Min, on, ignore_nulls)

    def max(self, on: str | list[str], ignore_nulls: bool = True) -> Dataset:
        """Largest value per group."""
        return self._each(Max, on, ignore_nulls)

    def mean(self, on: str | list[str], ignore_nulls: bool = True) -> Dataset:
        """Mean per group."""
        return self._each(Mean, on, ignore_nulls)

    def std(self, on: str | list[str], ddof: int = 1, ignore_nulls: bool = True) -> Dataset:
        """Standard deviation per group (``ddof=1``)."""
        return self.aggregate(*(Std(n, ddof=ddof, ignore_nulls=ignore_nulls)
                                for n in _names("std", on)))

    def _each(self, cls, on, ignore_nulls: bool) -> Dataset:
        return self.aggregate(*(cls(n, ignore_nulls=ignore_nulls)
                                for n in _names(cls.label, on)))

    def map_groups(self, fn, *, batch_format: str | None = "default") -> Dataset:
        """``fn`` over each group's rows as one batch; its outputs are the rows.

        >>> import streambatch as sb
        >>> ds = sb.from_items([{"k": 1, "v": 2}, {"k": 1, "v": 4}, {"k": 2, "v": 1}])
        >>> ds.groupby("k").map_groups(lambda b: {"k": b["k"][:1], "n": [len(b["v"])]},
        ...                            batch_format="numpy").take_all()
        [{'k': 1, 'n': 2}, {'k': 2, 'n': 1}]
        """
        if not self._keys:
            raise ValueError("map_groups needs a groupby key")
        op = A.MapGroups(input=self._dataset._plan, keys=self._keys,
                         fn=v.callable_fn("map_groups", fn),
                         batch_format=check_batch_format(batch_format),
                         num_partitions=self._partitions)
        return self._dataset._with(op)


__all__ = ["AllToAllMethods", "AggregateFn", "Count", "GroupedData", "Max", "Mean", "Min",
           "Std", "Sum"]
