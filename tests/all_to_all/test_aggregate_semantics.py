"""Aggregate semantics a Ray Data / pandas / SQL user expects: aggregating the groupby
key column itself, output names that clash, integer means beyond 2**53, the std of one
value. Expected values come from pandas-like plain Python on the whole table."""

from __future__ import annotations

import math

import pytest

import streambatch as sb


@pytest.fixture(autouse=True)
def _context():
    sb.init(num_cpus=2, progress=False)
    yield
    sb.init()


def _rows() -> list[dict]:
    return [{"k": i % 3, "v": i} for i in range(12)]


# ---- the key column as an aggregate's input -------------------------------------------------
@pytest.mark.parametrize("blocks", [1, 3])
@pytest.mark.parametrize("method,want", [
    ("sum", [0, 4, 8]), ("min", [0, 1, 2]), ("max", [0, 1, 2]), ("mean", [0.0, 1.0, 2.0]),
    ("std", [0.0, 0.0, 0.0]),
])
def test_a_groupby_key_may_be_aggregated(method, want, blocks):
    grouped = sb.from_items(_rows(), override_num_blocks=blocks).groupby("k")
    got = getattr(grouped, method)("k").take_all()
    assert [r["k"] for r in got] == [0, 1, 2]
    assert [r[f"{method}(k)"] for r in got] == pytest.approx(want)


def test_the_key_beside_other_aggregates_and_a_user_aggregate():
    keys_seen = sb.AggregateFn(init=lambda key: set(), name="keys",
                               accumulate_block=lambda s, b: s | set(b["k"].to_pylist()),
                               merge=lambda a, b: a | b, finalize=sorted)
    got = sb.from_items(_rows(), override_num_blocks=2).groupby("k").aggregate(
        sb.Count(), sb.Sum("k"), sb.Sum("v"), keys_seen).take_all()
    assert got == [{"k": 0, "count()": 4, "sum(k)": 0, "sum(v)": 18, "keys": [0]},
                   {"k": 1, "count()": 4, "sum(k)": 4, "sum(v)": 22, "keys": [1]},
                   {"k": 2, "count()": 4, "sum(k)": 8, "sum(v)": 26, "keys": [2]}]


def test_one_of_several_keys_may_be_aggregated():
    rows = [{"a": i % 2, "b": i % 3, "v": i} for i in range(12)]
    got = sb.from_items(rows, override_num_blocks=2).groupby(["a", "b"]).aggregate(
        sb.Sum("a"), sb.Max("b")).take_all()
    assert [(r["a"], r["b"], r["sum(a)"], r["max(b)"]) for r in got] == [
        (0, 0, 0, 0), (0, 1, 0, 1), (0, 2, 0, 2), (1, 0, 2, 0), (1, 1, 2, 1), (1, 2, 2, 2)]


# ---- int64 values beyond 2**53 --------------------------------------------------------------
BIG = [2**53 + 1, 2**53 + 3, 5, 2**62 + 7]


@pytest.mark.parametrize("blocks", [1, 2])
def test_mean_and_std_of_int64_beyond_2_to_the_53_are_numpys(blocks):
    import numpy as np

    want_mean, want_std = float(np.mean(BIG)), float(np.std(BIG, ddof=1))
    ds = sb.from_items([{"k": i % 2, "v": v} for i, v in enumerate(BIG)],
                       override_num_blocks=blocks)
    assert ds.mean("v") == pytest.approx(want_mean, rel=1e-12)
    assert ds.std("v") == pytest.approx(want_std, rel=1e-9)
    got = ds.groupby("k").aggregate(sb.Mean("v"), sb.Std("v", ddof=0)).take_all()
    for row in got:
        members = BIG[row["k"]::2]
        assert row["mean(v)"] == pytest.approx(float(np.mean(members)), rel=1e-12)
        assert row["std(v)"] == pytest.approx(float(np.std(members)), rel=1e-9)


def test_an_int64_sum_that_overflows_still_raises_beside_a_mean():
    ds = sb.from_items([{"x": 2**62}] * 4, override_num_blocks=2)
    assert ds.mean("x") == float(2**62)
    with pytest.raises(Exception, match="overflows int64"):
        ds.aggregate(sb.Mean("x"), sb.Sum("x"))


# ---- std of too few values -------------------------------------------------------------------
def test_std_of_one_value_is_nan_and_of_no_value_is_none():
    """Ray Data's Std.finalize and pandas: NaN where count - ddof <= 0; no non-null value
    at all: null (ignore_nulls)."""
    rows = [{"k": 0, "v": 1.0}, {"k": 1, "v": 2.0}, {"k": 1, "v": 4.0}, {"k": 2, "v": None}]
    got = sb.from_items(rows, override_num_blocks=2).groupby("k").std("v").take_all()
    values = [r["std(v)"] for r in got]
    assert math.isnan(values[0]) and values[1] == pytest.approx(2 ** 0.5) and values[2] is None
    assert math.isnan(sb.from_items(rows[:1]).std("v"))
    assert math.isnan(sb.from_items(rows[1:3]).std("v", ddof=2))
    assert sb.from_items(rows[1:3]).std("v", ddof=0) == pytest.approx(1.0)
    assert sb.from_items(rows[3:]).std("v") is None
    assert sb.from_items(rows).filter(lambda r: False).std("v") is None


# ---- output names that clash ------------------------------------------------------------------
def _small():
    return sb.from_items([{"k": i % 2, "v": i} for i in range(6)], override_num_blocks=2)


def test_a_repeated_generated_name_gets_a_suffix_and_keeps_both_columns():
    sum_v = sb.Sum("v")
    got = _small().groupby("k").aggregate(sum_v, sb.Max("v"), sum_v, sb.Sum("v")).take_all()
    assert got == [{"k": 0, "sum(v)": 6, "max(v)": 4, "sum(v)_2": 6, "sum(v)_3": 6},
                   {"k": 1, "sum(v)": 9, "max(v)": 5, "sum(v)_2": 9, "sum(v)_3": 9}]
    assert sum_v.name == "sum(v)"  # the user's aggregate is left as it was
    assert _small().aggregate(sb.Count(), sb.Count()) == {"count()": 6, "count()_2": 6}
    assert _small().sum(["v", "v"]) == {"sum(v)": 15, "sum(v)_2": 15}


def test_a_generated_name_steps_around_a_key_and_a_chosen_name():
    ds = sb.from_items([{"sum(v)": 1, "v": 2}, {"sum(v)": 1, "v": 3}])
    got = ds.groupby("sum(v)").aggregate(sb.Sum("v"), sb.Min("v", alias_name="sum(v)_2")).take_all()
    assert got == [{"sum(v)": 1, "sum(v)_3": 5, "sum(v)_2": 2}]


@pytest.mark.parametrize("aggs,message", [
    ((sb.Sum("v", alias_name="k"),),
     r"Sum\(on='v', alias_name='k'\) names its output column 'k', which is a groupby key; "
     r"pass another alias_name"),
    ((sb.Sum("v", alias_name="s"), sb.Max("v", alias_name="s")),
     r"Max\(on='v', alias_name='s'\) names its output column 's', which is also the name "
     r"of Sum\(on='v', alias_name='s'\); pass another alias_name"),
    ((sb.Count(), sb.AggregateFn(init=lambda k: 0, merge=max, name="k",
                                 accumulate_block=lambda s, b: s)),
     r"AggregateFn\(name='k'\) names its output column 'k', which is a groupby key; "
     r"pass another name"),
])
def test_a_chosen_name_that_is_taken_is_an_error_naming_it(aggs, message):
    with pytest.raises(ValueError, match=message):
        _small().groupby("k").aggregate(*aggs)


def test_a_chosen_name_may_be_any_name_not_taken():
    got = _small().groupby("k").aggregate(sb.Sum("v", alias_name="total"),
                                          sb.Max("v", alias_name="top")).take_all()
    assert got == [{"k": 0, "total": 6, "top": 4}, {"k": 1, "total": 9, "top": 5}]


def test_an_empty_dataset_names_its_global_aggregates_the_same():
    empty = _small().filter(lambda r: False)
    assert empty.aggregate(sb.Sum("v"), sb.Sum("v"), sb.Count()) == \
        {"sum(v)": None, "sum(v)_2": None, "count()": 0}


# ---- dictionary (categorical) columns ------------------------------------------------------------
def test_min_and_max_of_a_dictionary_column_compare_its_values():
    import pyarrow as pa

    def block(keys, values):
        return pa.table({"k": keys, "c": pa.array(values).dictionary_encode()})

    ds = sb.from_arrow([block([0, 0, 1], ["pear", "fig", None]), block([1, 0], ["kiwi", "apple"])])
    assert (ds.min("c"), ds.max("c")) == ("apple", "pear")
    got = ds.groupby("k").aggregate(sb.Min("c"), sb.Max("c"), sb.Count()).take_all()
    assert got == [{"k": 0, "min(c)": "apple", "max(c)": "pear", "count()": 3},
                   {"k": 1, "min(c)": "kiwi", "max(c)": "kiwi", "count()": 2}]


# ---- nulls: Ray Data's ignore_nulls ---------------------------------------------------------
def _with_nulls(blocks: int) -> sb.Dataset:
    rows = [{"k": 1, "v": 1.0}, {"k": 1, "v": None}, {"k": 1, "v": 3.0},
            {"k": 2, "v": 4.0}, {"k": 2, "v": 6.0}, {"k": 3, "v": None}]
    return sb.from_items(rows, override_num_blocks=blocks)


@pytest.mark.parametrize("blocks", [1, 4])
def test_count_of_a_column_counts_its_non_null_values_only_when_asked(blocks):
    """Ray Data's Count: ignore_nulls is False unless given; with it, nulls are not counted
    (they were: Count("v", ignore_nulls=True) gave 3 where Ray gives 2)."""
    ds = _with_nulls(blocks)
    assert ds.aggregate(sb.Count(), sb.Count("v"), sb.Count("v", ignore_nulls=True)) == \
        {"count()": 6, "count(v)": 6, "count(v)_2": 4}
    grouped = ds.groupby("k").aggregate(sb.Count("v", ignore_nulls=True)).take_all()
    assert grouped == [{"k": 1, "count(v)": 2}, {"k": 2, "count(v)": 2}, {"k": 3, "count(v)": 0}]


@pytest.mark.parametrize("blocks", [1, 4])
@pytest.mark.parametrize("method,skipping,strict", [
    ("sum", [4.0, 10.0, None], [None, 10.0, None]),
    ("min", [1.0, 4.0, None], [None, 4.0, None]),
    ("max", [3.0, 6.0, None], [None, 6.0, None]),
    ("mean", [2.0, 5.0, None], [None, 5.0, None]),
    ("std", [math.sqrt(2.0), math.sqrt(2.0), None], [None, math.sqrt(2.0), None]),
])
def test_ignore_nulls_false_gives_null_for_a_group_holding_a_null(blocks, method, skipping,
                                                                   strict):
    ds = _with_nulls(blocks)
    for ignore, want in ((True, skipping), (False, strict)):
        got = getattr(ds.groupby("k"), method)("v", ignore_nulls=ignore).take_all()
        assert [r[f"{method}(v)"] for r in got] == pytest.approx(want), (ignore, got)
    assert getattr(ds, method)("v", ignore_nulls=False) is None
    assert getattr(ds.filter(lambda r: r["v"] is not None), method)("v", ignore_nulls=False) \
        is not None


def test_the_second_argument_is_ignore_nulls_as_in_ray_data():
    assert sb.Sum("v", False).ignore_nulls is False
    with pytest.raises(TypeError, match="the second argument is ignore_nulls.*alias_name="):
        sb.Sum("v", "total")
    assert sb.Std("v", 0, False, "s").name == "s"


def test_a_sum_over_blocks_of_only_nulls_writes_files_that_read_back(tmp_path):
    """A block whose values are all None is null-typed; Arrow sums it to int64, so one
    output block's sum(f) was int64 and another's double, and read_parquet refused the
    written folder (int64 in one file, double in another)."""
    rows = [{"s": "a", "f": None}, {"s": "b", "f": 1.5}, {"s": "c", "f": None}]
    out = sb.from_items(rows, override_num_blocks=3).groupby("s").aggregate(
        sb.Sum("f"), sb.Min("f"), sb.Mean("f"))
    out.write_parquet(str(tmp_path / "sums"))
    back = sorted(sb.read_parquet(str(tmp_path / "sums")).take_all(), key=lambda r: r["s"])
    assert back == [{"s": "a", "sum(f)": None, "min(f)": None, "mean(f)": None},
                    {"s": "b", "sum(f)": 1.5, "min(f)": 1.5, "mean(f)": 1.5},
                    {"s": "c", "sum(f)": None, "min(f)": None, "mean(f)": None}]
    assert sb.from_items([{"f": None}] * 3).sum("f") is None


@pytest.mark.parametrize("partitions", [1, 3, 7])
def test_groupby_takes_ray_datas_num_partitions(partitions):
    ds = sb.from_items(_rows(), override_num_blocks=4).groupby("k", num_partitions=partitions)
    sums = ds.sum("v")
    assert sorted(r["sum(v)"] for r in sums.take_all()) == [18, 22, 26]
    assert sums.num_blocks() <= partitions
    groups = ds.map_groups(lambda b: {"k": b["k"][:1], "n": [len(b["k"])]}, batch_format="numpy")
    assert sorted((r["k"], r["n"]) for r in groups.take_all()) == [(0, 4), (1, 4), (2, 4)]
