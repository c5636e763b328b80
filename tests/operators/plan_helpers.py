"""Helpers of the plan-layer tests: run a dataset with or without the optimizer, plan
its stages, and small sources whose pushdown support a test chooses."""

from __future__ import annotations

from unittest import mock

from streambatch.connectors.memory import RangeSource
from streambatch.operators import logical as L
from streambatch.operators.optimizer import optimize
from streambatch.operators.planner import PlanSettings, plan_stages


def rows(ds, optimized: bool = True) -> list[dict]:
    """``ds.take_all()``, with the logical rules switched off when not ``optimized``
    (the un-optimized plan is the semantics every rewrite must keep)."""
    if optimized:
        return ds.take_all()
    with mock.patch("streambatch.session.optimize", lambda plan: plan):
        return ds.take_all()


def key(row: dict) -> tuple:
    """A sort key for rows of comparable values."""
    return tuple(sorted(row.items()))


def stages(ds_or_plan, worker_mode: str = "auto", num_cpus: int = 2, optimized: bool = True):
    """The physical stages of a Dataset (or logical plan) under these settings."""
    plan = getattr(ds_or_plan, "_plan", ds_or_plan)
    plan = optimize(plan) if optimized else plan
    return plan_stages(plan, PlanSettings(num_cpus=num_cpus, worker_mode=worker_mode))


def names(stage_list) -> list[str]:
    """The stages' names."""
    return [s.name for s in stage_list]


def rendered(plan) -> str:
    """The optimized plan as ``render`` draws it."""
    return L.render(optimize(getattr(plan, "_plan", plan)))


class PlainRange(RangeSource):
    """A range source that honours no pushdown (as a source without the flags)."""

    name = "Plain"
    supports_projection = supports_filter = supports_limit = False


def read(n: int = 10, source=None, **pushed) -> L.Read:
    """A logical Read of ``RangeSource(n)`` (or ``source``), with pushdown fields."""
    source = RangeSource(n) if source is None else source
    return L.Read(source, source.name, **pushed)
