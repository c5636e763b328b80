"""Predicate pushdown (operators/rules/push_filter.py): an expression filter right after
a read goes into the read (combined with one already there), never past a limit, and
never a Python predicate or a filter on a column a map made; the rows stay the same."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from streambatch.connectors.memory import ArrowSource
from streambatch.operators import logical as L
from streambatch.operators.rules.push_filter import push_filter

import streambatch as sb

from .plan_helpers import PlainRange, read, rendered, rows

pytestmark = pytest.mark.usefixtures("engine")

TABLE = pa.table({"a": list(range(12)), "b": [i % 3 for i in range(12)]})


def test_an_expression_filter_on_a_read_becomes_the_reads_filter():
    out = push_filter(L.Filter(read(10), expr=pc.field("id") > 6))
    assert isinstance(out, L.Read) and out.label == "Read[Range; filter=(id > 6)]"
    assert rows(sb.range(10).filter(expr=pc.field("id") > 6)) == [{"id": 7}, {"id": 8}, {"id": 9}]


def test_a_second_filter_is_anded_with_the_first():
    out = push_filter(L.Filter(read(10, filter=pc.field("id") > 2), expr=pc.field("id") < 5))
    assert str(out.filter) == "((id > 2) and (id < 5))"
    ds = sb.range(10, override_num_blocks=3).filter(expr=pc.field("id") > 2).filter(
        expr=pc.field("id") < 5)
    assert rendered(ds) == "Read[Range; filter=((id > 2) and (id < 5))]"
    assert rows(ds) == [{"id": 3}, {"id": 4}]


@pytest.mark.parametrize("op", [
    pytest.param(L.Filter(read(10), fn=bool), id="python-predicate"),
    pytest.param(L.Filter(read(10, limit=3), expr=pc.field("id") > 1), id="read-has-a-limit"),
    pytest.param(L.Filter(L.Read(PlainRange(10), "Plain"), expr=pc.field("id") > 1),
                 id="source-cannot"),
    pytest.param(L.Filter(L.MapRows(read(10), fn=dict), expr=pc.field("id") > 1), id="over-a-map"),
    pytest.param(L.Filter(L.Limit(read(10), n=3), expr=pc.field("id") > 1), id="over-a-limit"),
    pytest.param(L.Project(read(10), columns=("id",)), id="not-a-filter"),
])
def test_anything_else_is_returned_unchanged(op):
    assert push_filter(op) is op


def test_a_filter_after_a_limit_stays_after_it():
    """limit(3).filter(id >= 2) is [2]; pushed below the limit it would be [2, 3, 4]."""
    ds = sb.range(10, override_num_blocks=1).limit(3).filter(expr=pc.field("id") >= 2)
    assert rendered(ds) == "Filter((id >= 2))\n+- Limit[3]\n   +- Read[Range; limit=3]"
    assert rows(ds) == rows(ds, optimized=False) == [{"id": 2}]


def test_a_filter_on_a_column_a_map_created_is_not_pushed():
    ds = sb.from_arrow(TABLE).map(lambda r: {**r, "m": r["a"] * 10}).filter(
        expr=pc.field("m") >= 90)
    assert rendered(ds).splitlines()[:2] == ["Filter((m >= 90))", "+- Map(<lambda>)"]
    assert rows(ds) == [{"a": a, "b": a % 3, "m": 10 * a} for a in (9, 10, 11)]


def test_a_filter_on_a_renamed_column_is_not_pushed_below_the_rename():
    ds = sb.from_arrow(TABLE).rename_columns({"a": "z"}).filter(expr=pc.field("z") > 9)
    assert rendered(ds).splitlines()[0] == "Filter((z > 9))"
    assert rows(ds) == [{"z": 10, "b": 1}, {"z": 11, "b": 2}]


def test_a_filter_before_a_select_runs_in_the_read_before_the_projection():
    ds = sb.from_arrow(TABLE).filter(expr=pc.field("b") == 0).select_columns(["a"])
    assert rendered(ds) == "Read[Arrow; columns=['a'], filter=(b == 0)]"
    assert rows(ds) == [{"a": 0}, {"a": 3}, {"a": 6}, {"a": 9}]


def test_a_filter_on_a_column_a_select_dropped_is_not_pushed_into_the_read():
    op = L.Filter(L.Read(ArrowSource([TABLE]), "Arrow", columns=("a",)), expr=pc.field("b") == 0)
    assert push_filter(op) is op


def test_a_filter_on_a_column_a_select_dropped_fails_as_it_does_unoptimized():
    ds = sb.from_arrow(TABLE).select_columns(["a"]).filter(expr=pc.field("b") == 0)
    with pytest.raises(Exception, match="b"):
        rows(ds, optimized=False)
    with pytest.raises(Exception, match="b"):
        rows(ds)


def test_a_filter_on_a_dropped_column_of_a_source_without_schema_fails_as_unoptimized():
    # from_items knows no schema before reading: a filter above its pushed projection
    # stays an op, and fails there naming the column, as it does un-optimized
    ds = sb.from_items([{"a": 1, "b": 5}, {"a": 2, "b": 1}]).select_columns(["a"]).filter(
        expr=pc.field("b") > 2)
    assert rendered(ds) == "Filter((b > 2))\n+- Read[Items; columns=['a']]"
    for optimized in (False, True):
        with pytest.raises(Exception, match=r"No match for FieldRef.Name\(b\)"):
            rows(ds, optimized=optimized)


@pytest.mark.parametrize("expr", [
    pytest.param(pc.field("a") > 9, id="kept-column"),
    pytest.param((pc.field("a") > 9) | pc.field("a").is_null(), id="kept-column-twice"),
])
def test_a_filter_on_a_kept_column_still_goes_into_a_projected_read(expr):
    ds = sb.from_arrow(TABLE).select_columns(["a"]).filter(expr=expr)
    assert rendered(ds) == f"Read[Arrow; columns=['a'], filter={expr}]"
    assert rows(ds) == rows(ds, optimized=False) == [{"a": 10}, {"a": 11}]


def test_a_filter_on_a_kept_and_a_dropped_column_stays_above_the_projected_read():
    op = L.Filter(L.Read(ArrowSource([TABLE]), "Arrow", columns=("a",)),
                  expr=(pc.field("a") > 9) & (pc.field("b") == 0))
    assert push_filter(op) is op


def test_a_filter_above_a_projection_of_a_source_without_schema_is_not_pushed():
    # its columns cannot be checked without reading: the filter stays an op, rows the same
    items = [{"a": i, "b": i % 3} for i in range(6)]
    ds = sb.from_items(items).select_columns(["a"]).filter(expr=pc.field("a") >= 4)
    assert rendered(ds) == "Filter((a >= 4))\n+- Read[Items; columns=['a']]"
    assert rows(ds) == rows(ds, optimized=False) == [{"a": 4}, {"a": 5}]
    # a filter before the projection (no columns pushed yet) still goes in
    ds = sb.from_items(items).filter(expr=pc.field("b") == 0).select_columns(["a"])
    assert rendered(ds) == "Read[Items; columns=['a'], filter=(b == 0)]"
    assert rows(ds) == [{"a": 0}, {"a": 3}]


def test_a_source_without_filter_support_filters_in_an_op():
    ds = sb.Dataset(L.Filter(L.Read(PlainRange(6), "Plain"), expr=pc.field("id") > 3))
    assert rendered(ds) == "Filter((id > 3))\n+- Read[Plain]"
    assert rows(ds) == [{"id": 4}, {"id": 5}]


BOUNDS = st.lists(st.tuples(st.sampled_from(["a", "b"]), st.sampled_from(["<", ">=", "=="]),
                            st.integers(-1, 12)), min_size=1, max_size=3)
OPS = {"<": lambda x, k: x < k, ">=": lambda x, k: x >= k, "==": lambda x, k: x == k}


def _expr(col, op, k):
    return {"<": pc.field(col) < k, ">=": pc.field(col) >= k, "==": pc.field(col) == k}[op]


@settings(max_examples=40, deadline=None)
@given(filters=BOUNDS, blocks=st.integers(1, 4))
def test_stacked_expression_filters_give_the_python_rows(filters, blocks):
    ds = sb.from_arrow(TABLE, override_num_blocks=blocks)
    for col, op, k in filters:
        ds = ds.filter(expr=_expr(col, op, k))
    assert rendered(ds).count("\n") == 0  # all of them folded into the read
    want = [r for r in TABLE.to_pylist() if all(OPS[op](r[col], k) for col, op, k in filters)]
    assert rows(ds) == want
