"""Limit pushdown (operators/rules/push_limit.py): a limit above row-preserving ops caps
each read task, the Limit itself stays, and nothing that can drop or add rows (a
filter, a flat_map, a batch UDF, an inner lookup, a union) is crossed."""

from __future__ import annotations

import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from streambatch.connectors.lookup import DictTable
from streambatch.operators import logical as L
from streambatch.operators.lookup import Lookup
from streambatch.operators.optimizer import optimize
from streambatch.operators.rules.push_limit import push_limit

import streambatch as sb

from .plan_helpers import PlainRange, read, rendered, rows

pytestmark = pytest.mark.usefixtures("engine")


def capped(plan: L.LogicalOp) -> int | None:
    """The limit pushed into the plan's (first) read."""
    return next(op for op in L.walk(plan) if isinstance(op, L.Read)).limit


def test_a_limit_on_a_read_caps_the_read_and_stays():
    out = push_limit(L.Limit(read(100), n=5))
    assert L.render(out) == "Limit[5]\n+- Read[Range; limit=5]"
    ds = sb.range(100, override_num_blocks=4).limit(5)
    assert rows(ds) == [{"id": i} for i in range(5)]


@pytest.mark.parametrize("build", [
    pytest.param(lambda r: L.MapRows(r, fn=dict), id="map"),
    pytest.param(lambda r: L.Project(r, columns=("id",)), id="select"),
    pytest.param(lambda r: L.Project(r, columns=("x",), keep=False), id="drop"),
    pytest.param(lambda r: L.RenameColumns(r, mapping=(("id", "k"),)), id="rename"),
    pytest.param(lambda r: L.AddColumn(r, name="x", fn=len), id="add_column"),
    pytest.param(lambda r: Lookup(r, table=DictTable({}, key="id"), on="id"), id="left-lookup"),
    pytest.param(lambda r: L.MapRows(L.Project(L.MapRows(r, fn=dict), columns=("id",)), fn=dict),
                 id="map-select-map"),
])
def test_the_cap_crosses_row_preserving_ops(build):
    assert capped(push_limit(L.Limit(build(read(100)), n=7))) == 7


@pytest.mark.parametrize("build", [
    pytest.param(lambda r: L.Filter(r, fn=bool), id="filter"),
    pytest.param(lambda r: L.Filter(r, expr=pc.field("id") > 3), id="filter-expr-op"),
    pytest.param(lambda r: L.FlatMap(r, fn=list), id="flat_map"),
    pytest.param(lambda r: L.MapBatches(r, fn=dict), id="map_batches"),
    pytest.param(lambda r: Lookup(r, table=DictTable({}, key="id"), on="id", how="inner"),
                 id="inner-lookup"),
    pytest.param(lambda r: L.Repartition(r, n=2), id="repartition"),
    pytest.param(lambda r: L.Union(parts=(r, read(3))), id="union"),
    pytest.param(lambda r: L.MapRows(L.Filter(r, fn=bool), fn=dict), id="map-over-filter"),
    pytest.param(lambda r: L.Write(r, sink=None), id="write"),
    # on_error="skip" sends the rows whose call raised to the dead letters
    pytest.param(lambda r: L.MapRows(r, fn=dict, on_error="skip"), id="map-skip"),
    pytest.param(lambda r: L.Project(L.MapRows(r, fn=dict, on_error="skip"), columns=("id",)),
                 id="select-over-map-skip"),
    pytest.param(lambda r: L.MapBatches(r, fn=dict, on_error="skip"), id="map_batches-skip"),
    pytest.param(lambda r: L.Filter(r, fn=bool, on_error="skip"), id="filter-skip"),
    pytest.param(lambda r: L.FlatMap(r, fn=list, on_error="skip"), id="flat_map-skip"),
])
def test_the_cap_stops_at_ops_that_change_the_row_count(build):
    assert capped(push_limit(L.Limit(build(read(100)), n=7))) is None


def test_every_map_like_op_that_can_drop_a_row_says_it_does_not_preserve_rows():
    # the ops of Dataset that have on_error: only a map keeps its rows, and only when a
    # failed call raises (add_column, rename, select/drop, a left lookup have no skip)
    r = read(10)
    assert L.MapRows(r, fn=dict).row_preserving
    for on_error in ("raise", "skip"):
        preserving = {type(op).__name__: op.row_preserving for op in (
            L.MapRows(r, fn=dict, on_error=on_error), L.MapBatches(r, fn=dict, on_error=on_error),
            L.Filter(r, fn=bool, on_error=on_error), L.FlatMap(r, fn=list, on_error=on_error))}
        assert preserving == {"MapRows": on_error == "raise", "MapBatches": False,
                              "Filter": False, "FlatMap": False}, on_error
    for op_type in (L.AddColumn, L.RenameColumns, L.Project, Lookup):
        assert not hasattr(op_type, "on_error"), op_type  # a new one must be listed above


def test_push_limit_returns_the_plan_itself_when_nothing_is_left_to_push():
    for plan in (L.Limit(read(100, limit=5), n=5), L.Limit(read(100, limit=2), n=5),
                 L.Limit(L.MapRows(read(100, limit=5), fn=dict), n=7),
                 L.Limit(L.MapRows(read(100), fn=dict, on_error="skip"), n=3),
                 L.Limit(L.Read(PlainRange(50), "Plain"), n=4),
                 L.Limit(L.Filter(read(100), fn=bool), n=4)):
        assert push_limit(plan) is plan, L.render(plan)
    once = push_limit(L.Limit(L.MapRows(read(100), fn=dict), n=7))
    assert capped(once) == 7 and push_limit(once) is once


def test_nested_limits_become_the_smaller_one():
    for outer, inner in ((3, 8), (8, 3)):
        out = push_limit(L.Limit(L.Limit(read(100), n=inner), n=outer))
        assert L.render(out) == "Limit[3]\n+- Read[Range]"  # capped on the next pass
        assert rendered(L.Limit(L.Limit(read(100), n=inner), n=outer)) == (
            "Limit[3]\n+- Read[Range; limit=3]")


def test_a_read_keeps_the_smaller_of_its_cap_and_the_limit():
    assert capped(push_limit(L.Limit(read(100, limit=4), n=9))) == 4
    assert capped(push_limit(L.Limit(read(100, limit=9), n=4))) == 4


def test_a_source_without_limit_support_is_left_alone_and_the_limit_still_cuts():
    plan = L.Limit(L.MapRows(L.Read(PlainRange(50), "Plain"), fn=dict), n=4)
    assert capped(push_limit(plan)) is None
    assert rows(sb.Dataset(plan)) == [{"id": i} for i in range(4)]


def test_non_limits_are_returned_unchanged():
    op = L.MapRows(read(10), fn=dict)
    assert push_limit(op) is op


def test_a_limit_below_a_filter_takes_the_first_rows_then_filters():
    ds = sb.range(20, override_num_blocks=2).limit(6).filter(lambda r: r["id"] % 2 == 1)
    assert rows(ds) == rows(ds, optimized=False) == [{"id": 1}, {"id": 3}, {"id": 5}]


def test_a_limit_above_a_filter_counts_the_rows_that_passed():
    ds = sb.range(20, override_num_blocks=2).filter(lambda r: r["id"] % 3 == 0).limit(4)
    assert "limit" not in rendered(ds).splitlines()[-1]
    assert rows(ds) == [{"id": i} for i in (0, 3, 6, 9)]


def test_an_expression_filter_pushed_into_the_read_is_applied_before_the_cap():
    ds = sb.range(20, override_num_blocks=2).filter(expr=pc.field("id") >= 12).limit(3)
    assert rendered(ds) == "Limit[3]\n+- Read[Range; filter=(id >= 12), limit=3]"
    assert rows(ds) == [{"id": 12}, {"id": 13}, {"id": 14}]


def test_a_limit_above_a_flat_map_counts_its_output_rows():
    ds = sb.range(10, override_num_blocks=2).flat_map(
        lambda r: [{"id": r["id"], "k": k} for k in range(r["id"] % 3)]).limit(4)
    assert "limit" not in rendered(ds)
    assert rows(ds) == [{"id": 1, "k": 0}, {"id": 2, "k": 0}, {"id": 2, "k": 1}, {"id": 4, "k": 0}]


def test_a_limit_through_a_map_keeps_the_mapped_first_rows():
    ds = sb.range(30, override_num_blocks=3).map(lambda r: {"y": r["id"] * 2}).limit(4)
    assert rendered(ds) == "Limit[4]\n+- Map(<lambda>)\n   +- Read[Range; limit=4]"
    assert rows(ds) == [{"y": 0}, {"y": 2}, {"y": 4}, {"y": 6}]


def test_limit_zero():
    ds = sb.range(10).map(lambda r: r).limit(0)
    assert rendered(ds).endswith("Read[Range; limit=0]")
    assert rows(ds) == []


def test_a_union_keeps_its_limit_above_and_its_parts_uncapped():
    ds = sb.range(3).union(sb.range(5)).limit(4)
    assert rendered(ds) == "Limit[4]\n+- Union[2]\n   +- Read[Range]\n   +- Read[Range]"
    assert rows(ds) == [{"id": i} for i in (0, 1, 2, 0)]


def _odd_or_fail(row):
    if row["id"] % 2 == 0:
        raise ValueError("even")
    return row


def test_the_cap_does_not_cross_a_map_that_skips_failed_rows():
    plan = L.Limit(L.MapRows(read(10), fn=_odd_or_fail, on_error="skip"), n=3)
    assert capped(push_limit(plan)) is None


def test_a_limit_after_a_map_that_skips_failed_rows_still_gets_n_rows():
    ds = sb.range(10, override_num_blocks=1).map(_odd_or_fail, on_error="skip").limit(3)
    assert rows(ds, optimized=False) == [{"id": 1}, {"id": 3}, {"id": 5}]
    assert rows(ds) == [{"id": 1}, {"id": 3}, {"id": 5}]


def test_a_limit_after_a_map_that_skips_gets_n_rows_through_row_preserving_ops_above_it():
    ds = (sb.range(10, override_num_blocks=2).map(_odd_or_fail, on_error="skip")
          .select_columns(["id"]).map(lambda r: r).limit(4))
    assert rendered(ds).endswith("Read[Range]")  # not capped
    assert rows(ds, optimized=False) == rows(ds) == [{"id": i} for i in (1, 3, 5, 7)]


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 25), size=st.integers(0, 20), blocks=st.integers(1, 5),
       chain=st.lists(st.sampled_from(["map", "select", "rename", "limit"]), max_size=4))
def test_limits_through_row_preserving_chains_give_the_first_rows(n, size, blocks, chain):
    ds, want, col = sb.range(size, override_num_blocks=blocks), [{"id": i} for i in range(size)], "id"
    for i, step in enumerate(chain):
        if step == "map":
            ds = ds.map(lambda r, c=col: {c: r[c] + 1})
            want = [{col: r[col] + 1} for r in want]
        elif step == "select":
            ds, want = ds.select_columns([col]), want
        elif step == "rename":
            new = f"c{i}"
            ds, want, col = ds.rename_columns({col: new}), [{new: r[col]} for r in want], new
        else:
            ds, want = ds.limit(n + i), want[: n + i]
    ds = ds.limit(n)
    # every op is row-preserving: the innermost limit caps the read (a limit above a
    # map above a limit stops at the inner Limit, which is exact, if not the tightest)
    assert capped(optimize(ds._plan)) is not None
    assert rows(ds) == want[:n]


def test_a_limit_on_an_empty_from_items_gives_no_rows():
    ds = sb.from_items([]).limit(1)
    assert rows(ds, optimized=False) == []
    assert rows(ds) == []


@pytest.mark.parametrize("items, n, want", [
    ([{}, {}], 5, 2),        # a cap above the rows: pyarrow's slice would report 5 rows
    ([{}, {}, {}], 2, 2),
    ([{}], 0, 0),
])
def test_a_limit_on_rows_without_columns_keeps_their_count(items, n, want):
    ds = sb.from_items(items, override_num_blocks=1).limit(n)
    assert rendered(ds).endswith(f"limit={n}]")
    assert rows(ds, optimized=False) == rows(ds) == [{}] * want


def test_limit_tables_counts_the_rows_of_a_table_without_columns():
    import pyarrow as pa
    from streambatch.connectors.datasource import limit_tables

    no_columns = pa.table({"a": [1, 2, 3]}).select([])
    assert [t.num_rows for t in limit_tables(iter([no_columns, no_columns]), 5)] == [3, 2]
    assert [t.num_rows for t in limit_tables(iter([pa.table({}), no_columns]), 1)] == [0, 1]

