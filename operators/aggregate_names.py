"""Output names of aggregates: unique, never hiding a groupby key (as Ray Data names
them: ``sum(v)``, ``sum(v)_2``)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TypeGuard

from streambatch.operators.aggregates import AggregateFn, _Builtin


def named_uniquely(keys: Sequence[str], aggs: Sequence[AggregateFn]) -> tuple:
    """``aggs`` with output names that neither repeat nor hide a key column.

    A name the user chose (``alias_name=``, an ``AggregateFn``'s ``name``) is kept and
    must be new: one equal to a groupby key or to another chosen name raises ValueError.
    A generated name (``sum(v)``) that is taken gets ``_2``, ``_3``... as Ray Data does
    (on a copy: the user's aggregate is left as it is).

    >>> from streambatch.operators.aggregates import Max, Sum
    >>> [a.name for a in named_uniquely(["k"], [Sum("v"), Sum("v"), Max("v", alias_name="m")])]
    ['sum(v)', 'sum(v)_2', 'm']
    >>> named_uniquely(["k"], [Sum("v", alias_name="k")])
    Traceback (most recent call last):
    ...
    ValueError: aggregate: Sum(on='v', alias_name='k') names its output column 'k', which is a groupby key; pass another alias_name
    """
    taken = _chosen_names(keys, aggs)
    out = []
    for agg in aggs:
        if _generated(agg):
            name, n = agg.default_name(), 2
            while name in taken:
                name, n = f"{agg.default_name()}_{n}", n + 1
            taken[name] = f"also the name of {_described(agg)}"
            if name != agg.name:
                agg = copy.copy(agg)
                agg.name = name
        out.append(agg)
    return tuple(out)


def _chosen_names(keys: Sequence[str], aggs: Sequence[AggregateFn]) -> dict[str, str]:
    """The keys and the names the user chose, each with what it names; ValueError where
    a chosen name is taken."""
    taken = {key: "a groupby key" for key in keys}
    for agg in aggs:
        if _generated(agg):
            continue
        if agg.name in taken:
            what = "alias_name" if isinstance(agg, _Builtin) else "name"
            raise ValueError(f"aggregate: {_described(agg)} names its output column "
                             f"{agg.name!r}, which is {taken[agg.name]}; pass another {what}")
        taken[agg.name] = f"also the name of {_described(agg)}"
    return taken


def _generated(agg: AggregateFn) -> TypeGuard[_Builtin]:
    """Whether ``agg``'s output name is generated (a built-in without ``alias_name``)."""
    return isinstance(agg, _Builtin) and agg.alias_name is None


def _described(agg: AggregateFn) -> str:
    """``agg`` as the user wrote it, for errors."""
    if not isinstance(agg, _Builtin):
        return f"AggregateFn(name={agg.name!r})"
    on = "" if agg.on is None else f"on={agg.on!r}, "
    return f"{type(agg).__name__}({on}alias_name={agg.alias_name!r})"


__all__ = ["named_uniquely"]
