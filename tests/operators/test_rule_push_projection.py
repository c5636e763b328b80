"""Projection pushdown (operators/rules/push_projection.py): ``select_columns`` right
after a read becomes the read's ``columns``, and nothing else does; the rows stay the
same as the un-optimized plan's."""

from __future__ import annotations

import pyarrow as pa
import pytest
from streambatch.connectors.memory import ArrowSource
from streambatch.operators import logical as L
from streambatch.operators.rules.push_projection import push_projection

import streambatch as sb

from .plan_helpers import PlainRange, rendered, rows

pytestmark = pytest.mark.usefixtures("engine")

TABLE = pa.table({"a": [1, 2, 3, 4], "b": [10, 20, 30, 40], "c": ["w", "x", "y", "z"]})


def arrow_read(**pushed) -> L.Read:
    return L.Read(ArrowSource([TABLE]), "Arrow", **pushed)


def test_a_select_right_after_a_read_becomes_the_reads_columns_in_the_selected_order():
    out = push_projection(L.Project(arrow_read(), columns=("c", "a")))
    assert isinstance(out, L.Read) and out.columns == ("c", "a")
    assert out.label == "Read[Arrow; columns=['c', 'a']]"
    got = rows(sb.from_arrow(TABLE).select_columns(["c", "a"]))
    assert got == [{"c": "w", "a": 1}, {"c": "x", "a": 2}, {"c": "y", "a": 3}, {"c": "z", "a": 4}]
    assert [list(r) for r in got] == [["c", "a"]] * 4  # the column order is the select's


@pytest.mark.parametrize("op", [
    pytest.param(L.Project(arrow_read(), columns=("a",), keep=False), id="drop_columns"),
    pytest.param(L.Project(L.MapRows(arrow_read(), fn=dict), columns=("a",)), id="over-a-map"),
    pytest.param(L.Project(L.Filter(arrow_read(), fn=bool), columns=("a",)), id="over-a-filter"),
    pytest.param(L.Project(L.Read(PlainRange(4), "Plain"), columns=("id",)), id="source-cannot"),
    pytest.param(L.MapRows(arrow_read(), fn=dict), id="not-a-project"),
])
def test_anything_else_is_returned_unchanged(op):
    assert push_projection(op) is op


def test_a_narrower_select_over_pushed_columns_narrows_them():
    out = push_projection(L.Project(arrow_read(columns=("a", "b", "c")), columns=("b",)))
    assert out.columns == ("b",)
    ds = sb.from_arrow(TABLE).select_columns(["a", "b"]).select_columns(["b"])
    assert rendered(ds) == "Read[Arrow; columns=['b']]"
    assert rows(ds) == [{"b": 10}, {"b": 20}, {"b": 30}, {"b": 40}]


def test_a_select_of_a_column_the_read_no_longer_has_is_not_pushed_and_still_fails():
    op = L.Project(arrow_read(columns=("a",)), columns=("b",))
    assert push_projection(op) is op
    ds = sb.from_arrow(TABLE).select_columns(["a"]).select_columns(["b"])
    assert rendered(ds) == "Select['b']\n+- Read[Arrow; columns=['a']]"
    for optimized in (False, True):
        with pytest.raises(Exception, match="b"):
            rows(ds, optimized)


def test_a_pushed_select_keeps_the_reads_filter_and_limit():
    import pyarrow.compute as pc

    op = L.Project(arrow_read(filter=pc.field("b") > 15, limit=2), columns=("a",))
    out = push_projection(op)
    assert (out.columns, str(out.filter), out.limit) == (("a",), "(b > 15)", 2)
    # the filter on a column the select drops still runs first, in the read
    ds = sb.from_arrow(TABLE).filter(expr=pc.field("b") > 15).select_columns(["a"])
    assert rendered(ds) == "Read[Arrow; columns=['a'], filter=(b > 15)]"
    assert rows(ds) == [{"a": 2}, {"a": 3}, {"a": 4}]


def test_a_select_of_a_column_a_map_created_stays_above_the_map():
    ds = sb.from_arrow(TABLE).map(lambda r: {**r, "m": r["a"] * 100}).select_columns(["m", "c"])
    assert rendered(ds).splitlines()[0] == "Select['m', 'c']"
    assert rows(ds) == [{"m": 100 * a, "c": c} for a, c in zip([1, 2, 3, 4], "wxyz", strict=True)]


def test_a_select_of_a_missing_column_fails_with_or_without_the_pushdown():
    ds = sb.from_arrow(TABLE).select_columns(["a", "nope"])
    assert rendered(ds) == "Read[Arrow; columns=['a', 'nope']]"
    for optimized in (False, True):
        with pytest.raises(Exception, match="nope"):
            rows(ds, optimized)


def test_a_drop_is_not_pushed_but_drops():
    ds = sb.from_arrow(TABLE).drop_columns(["b"])
    assert rendered(ds) == "Drop['b']\n+- Read[Arrow]"
    assert rows(ds) == [{"a": a, "c": c} for a, c in zip([1, 2, 3, 4], "wxyz", strict=True)]


def test_a_source_without_projection_support_gets_the_select_as_an_op():
    ds = sb.Dataset(L.Project(L.Read(PlainRange(3), "Plain"), columns=("id",)))
    assert rendered(ds) == "Select['id']\n+- Read[Plain]"
    assert rows(ds) == [{"id": 0}, {"id": 1}, {"id": 2}]


def test_from_items_rows_are_the_same_after_the_pushdown():
    items = [{"a": i, "b": -i, "c": str(i)} for i in range(7)]
    ds = sb.from_items(items, override_num_blocks=3).select_columns(["b", "c"])
    assert rendered(ds) == "Read[Items; columns=['b', 'c']]"
    assert rows(ds) == rows(ds, optimized=False) == [{"b": -i, "c": str(i)} for i in range(7)]

