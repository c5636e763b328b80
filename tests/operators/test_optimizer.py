"""The optimizer (operators/optimizer.py): every logical rule, bottom-up, to a fixed
point. What optimized plans look like when the rules meet (filter translation before
projection, pushdowns in union branches), that a plan with nothing to rewrite comes
back as the same object, and, property-based, that random chains of select / drop /
rename / filter / limit / map / flat_map give the rows a plain-Python evaluation gives."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from streambatch.connectors.memory import ArrowSource
from streambatch.operators import logical as L
from streambatch.operators import optimizer
from streambatch.operators.optimizer import optimize

import streambatch as sb

from .plan_helpers import read, rendered, rows

pytestmark = pytest.mark.usefixtures("engine")

EXACT = pa.schema([pa.field("a", pa.int64(), nullable=False), pa.field("b", pa.int64(), nullable=False)])
TABLE = pa.table({"a": list(range(10)), "b": [i % 3 for i in range(10)]}, schema=EXACT)


def test_all_pushdowns_meet_in_one_read():
    plan = L.Limit(L.Project(L.Filter(L.Read(ArrowSource([TABLE]), "Arrow"), expr=pc.field("b") == 0),
                             columns=("a",)), n=2)
    assert L.render(optimize(plan)) == (
        "Limit[2]\n+- Read[Arrow; columns=['a'], filter=(b == 0), limit=2]")
    assert rows(sb.Dataset(plan)) == [{"a": 0}, {"a": 3}]


def test_a_python_filter_is_translated_before_the_select_above_it_is_pushed():
    ds = sb.from_arrow(TABLE).filter(lambda r: r["b"] == 1).select_columns(["a"]).limit(2)
    assert rendered(ds) == "Limit[2]\n+- Read[Arrow; columns=['a'], filter=(b == 1), limit=2]"
    assert rows(ds) == rows(ds, optimized=False) == [{"a": 1}, {"a": 4}]


def test_a_python_filter_that_stays_an_op_blocks_the_pushdowns_above_it():
    table = pa.table({"a": [1, None, 5, 7], "b": [0, 1, 2, 3]})
    ds = sb.from_arrow(table).filter(lambda r: r["a"] in (5, 7)).select_columns(["b"]).limit(1)
    assert rendered(ds) == "Limit[1]\n+- Select['b']\n   +- Filter(<lambda>)\n      +- Read[Arrow]"
    assert rows(ds) == [{"b": 2}]
    guarded = sb.from_arrow(table).filter(lambda r: r["a"] is not None and r["a"] > 3)
    assert rendered(guarded.select_columns(["b"])) == (
        "Select['b']\n+- Filter(<lambda>)\n"
        "   +- Read[Arrow; filter=((a > 3) or is_null(a, {nan_is_null=false}))]")
    assert rows(guarded) == [{"a": 5, "b": 2}, {"a": 7, "b": 3}]


def test_each_union_branch_is_optimized_on_its_own():
    ds = sb.from_arrow(TABLE).select_columns(["a"]).union(
        sb.from_arrow(TABLE).filter(expr=pc.field("a") > 7).select_columns(["a"])).limit(12)
    assert rendered(ds) == ("Limit[12]\n+- Union[2]\n   +- Read[Arrow; columns=['a']]\n"
                            "   +- Read[Arrow; columns=['a'], filter=(a > 7)]")
    assert rows(ds) == [{"a": a} for a in list(range(10)) + [8, 9]]


@pytest.mark.parametrize("plan", [
    pytest.param(read(5), id="read"),
    pytest.param(L.MapRows(L.Filter(read(5), fn=bool), fn=dict), id="map-filter"),
    pytest.param(L.Union(parts=(read(3), L.FlatMap(read(4), fn=list))), id="union"),
    pytest.param(L.Repartition(L.Project(read(5), columns=("x",), keep=False), n=2), id="drop"),
])
def test_a_plan_with_nothing_to_rewrite_is_returned_as_is(plan):
    assert optimize(plan) is plan


def test_optimizing_twice_changes_nothing_more():
    ds = (sb.from_arrow(TABLE).filter(expr=pc.field("a") > 1).select_columns(["a", "b"])
          .map(lambda r: r).limit(5).limit(3).select_columns(["a"]))
    once = optimize(ds._plan)
    assert L.render(optimize(once)) == L.render(once)


def test_the_input_plan_is_not_changed():
    plan = L.Limit(L.Project(read(10), columns=("id",)), n=2)
    before = L.render(plan)
    optimize(plan)
    assert L.render(plan) == before == "Limit[2]\n+- Select['id']\n   +- Read[Range]"


def test_a_plan_with_a_limit_reaches_its_fixed_point_in_a_few_passes(monkeypatch):
    calls = []

    def counted(rule):
        def run(op):
            calls.append(rule.__name__)
            return rule(op)
        return run

    monkeypatch.setattr(optimizer, "LOGICAL_RULES", tuple(counted(r) for r in optimizer.LOGICAL_RULES))
    optimize(L.Limit(read(10), n=2))
    passes = len(calls) / (2 * len(optimizer.LOGICAL_RULES))  # two nodes per pass
    assert passes <= 3, passes


def test_every_rule_returns_each_op_of_an_optimized_plan_itself():
    ds = (sb.from_arrow(TABLE).filter(lambda r: r["a"] > 1).select_columns(["a", "b"])
          .map(lambda r: r).limit(5).limit(3).select_columns(["a"]).limit(2))
    once = optimize(ds._plan)
    assert L.render(once) == ("Limit[2]\n+- Select['a']\n   +- Limit[3]\n      +- Map(<lambda>)\n"
                              "         +- Read[Arrow; columns=['a', 'b'], filter=(a > 1), limit=3]")
    for rule in optimizer.LOGICAL_RULES:
        for op in L.walk(once):
            assert rule(op) is op, (rule.__name__, op.label)
    assert optimize(once) is once


# ---- property: random chains against plain Python ------------------------------------

CMP = {"<": (lambda x, k: x < k), ">=": (lambda x, k: x >= k), "==": (lambda x, k: x == k)}


def _expr(col, op, k):
    field = pc.field(col)
    return {"<": field < k, ">=": field >= k, "==": field == k}[op]


def _pred(col, op, k):
    fn = CMP[op]
    return lambda r: fn(r[col], k)


def _step(data, ds, want: list[dict], cols: list[str], i: int):
    """Draw one transform valid for ``cols``; apply it to the dataset and to the rows."""
    kinds = ["select", "filter_expr", "filter_fn", "limit", "map", "flat_map", "rename"]
    kinds += ["drop"] if len(cols) > 1 else []
    kind = data.draw(st.sampled_from(kinds))
    if kind in ("select", "drop"):
        picked = data.draw(st.lists(st.sampled_from(cols), min_size=1, max_size=len(cols),
                                    unique=True))
        if kind == "drop":
            picked = picked[: len(cols) - 1]
            keep = [c for c in cols if c not in picked]
            return ds.drop_columns(picked), [{c: r[c] for c in keep} for r in want], keep
        return ds.select_columns(picked), [{c: r[c] for c in picked} for r in want], picked
    if kind in ("filter_expr", "filter_fn"):
        col, op, k = (data.draw(st.sampled_from(cols)), data.draw(st.sampled_from(list(CMP))),
                      data.draw(st.integers(-1, 12)))
        ds = ds.filter(expr=_expr(col, op, k)) if kind == "filter_expr" else ds.filter(
            _pred(col, op, k))
        return ds, [r for r in want if CMP[op](r[col], k)], cols
    if kind == "limit":
        n = data.draw(st.integers(0, 12))
        return ds.limit(n), want[:n], cols
    src = data.draw(st.sampled_from(cols))
    if kind == "map":  # a new column, or a changed one
        new = data.draw(st.sampled_from([f"m{i}", src]))
        ds = ds.map(lambda r, s=src, n=new: {**r, n: r[s] * 2 + 1})
        return ds, [{**r, new: r[src] * 2 + 1} for r in want], cols + ([new] if new not in cols else [])
    if kind == "flat_map":  # 0, 1 or 2 copies of a row
        ds = ds.flat_map(lambda r, s=src: [dict(r) for _ in range(r[s] % 3)])
        return ds, [dict(r) for r in want for _ in range(r[src] % 3)], cols
    new = f"r{i}"
    return (ds.rename_columns({src: new}), [{(new if c == src else c): v for c, v in r.items()}
                                            for r in want], [new if c == src else c for c in cols])


def _source(data):
    kind = data.draw(st.sampled_from(["arrow", "items", "arrow-exact"]))
    # (an empty from_items has no columns at all: it is left out)
    n = data.draw(st.integers(1 if kind == "items" else 0, 14))
    items = [{"a": i, "b": (i * 7) % 5, "c": i % 3} for i in range(n)]
    blocks = data.draw(st.integers(1, 4))
    if kind == "items":
        return sb.from_items(items, override_num_blocks=blocks), items
    schema = pa.schema([pa.field(c, pa.int64(), nullable=kind == "arrow") for c in "abc"])
    table = pa.Table.from_pylist(items, schema=schema)
    return sb.from_arrow(table, override_num_blocks=blocks), items


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_chains_give_the_rows_plain_python_gives(data):
    ds, want = _source(data)
    cols = ["a", "b", "c"]
    for i in range(data.draw(st.integers(1, 6))):
        ds, want, cols = _step(data, ds, want, cols, i)
    once = optimize(ds._plan)
    assert optimize(once) is once  # a fixed point: every rule returns its op unchanged
    got = rows(ds)
    if got != want:  # say whether the optimizer or the engine is at fault
        raw = rows(ds, optimized=False)
        raise AssertionError(f"optimized {got}\nun-optimized {raw}\nwant {want}\n"
                             f"plan:\n{L.render(ds._plan)}\noptimized:\n{rendered(ds)}")
