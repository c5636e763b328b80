"""All-to-all edge cases a Ray Data user meets: NaN and -0.0 keys, NaN values, a key
column that is null in a whole block, key columns whose names the engine also uses
inside (``n``, ``s``, ``m``, ``state``...), aggregates of a column of the wrong type,
missing columns, map_groups returning the wrong thing. Each expected value comes from
plain Python or pyarrow on the whole table; each behaviour found wrong is a strict
xfail that says what is wrong."""

from __future__ import annotations

import math
import re

import pyarrow as pa
import pytest
from streambatch.executor.errors import UserCodeError

import streambatch as sb

NAN = float("nan")


@pytest.fixture(autouse=True)
def _context():
    sb.init(num_cpus=2)
    yield
    sb.init()


def _rows_per_call(batch: pa.Table) -> dict:
    return {"k": batch["k"].slice(0, 1), "n": [batch.num_rows]}


def _rows_counted():
    return sb.AggregateFn(init=lambda key: 0, accumulate_block=lambda n, b: n + b.num_rows,
                          merge=lambda a, b: a + b, name="rows")


def _by_key(rows: list[dict], column: str) -> dict:
    """``{key: value}``, one NaN key for all NaN rows (a dict keeps NaN objects apart)."""
    out: dict = {}
    for r in rows:
        k = "nan" if isinstance(r["k"], float) and math.isnan(r["k"]) else r["k"]
        assert k not in out, f"two output rows for key {r['k']!r}: {rows}"
        out[k] = r[column]
    return out


# ---- NaN and -0.0 keys --------------------------------------------------------------------
@pytest.mark.parametrize("blocks", [1, 3])
@pytest.mark.parametrize("descending", [False, True])
def test_nan_keys_are_one_group_and_sort_after_numbers(blocks, descending):
    """As pyarrow and Ray Data: all NaN keys are one group; a sort puts them after every
    number and before nulls (either direction, as pyarrow does), in every layout."""
    rows = [{"k": NAN if i % 2 == 0 else float(i % 13) if i % 7 else None, "v": i}
            for i in range(200)]
    ds = sb.from_items(rows, override_num_blocks=blocks)
    got = _by_key(ds.groupby("k").count().take_all(), "count()")
    assert got["nan"] == 100 and got[None] == sum(1 for r in rows if r["k"] is None)
    keys = [r["k"] for r in ds.sort("k", descending=descending).take_all()]
    numbers = [k for k in keys if k is not None and not math.isnan(k)]
    assert numbers == sorted(numbers, reverse=descending) and keys[:len(numbers)] == numbers
    assert all(math.isnan(k) for k in keys[len(numbers):100 + len(numbers)])
    assert all(k is None for k in keys[100 + len(numbers):])


@pytest.mark.parametrize("blocks", [1, 3])
def test_map_groups_gives_all_nan_keys_one_call(blocks):
    rows = [{"k": NAN if i % 2 else 1.0, "v": i} for i in range(10)]
    ds = sb.from_items(rows, override_num_blocks=blocks)
    got = _by_key(ds.groupby("k").map_groups(_rows_per_call, batch_format="pyarrow").take_all(), "n")
    assert got == {1.0: 5, "nan": 5}


def test_negative_and_positive_zero_keys_group_the_same_way_everywhere():
    rows = [{"k": -0.0 if i % 2 else 0.0, "v": i} for i in range(10)]
    ds = sb.from_items(rows, override_num_blocks=3)
    counted = sorted(r["count()"] for r in ds.groupby("k").count().take_all())
    called = sorted(r["n"] for r in ds.groupby("k").map_groups(_rows_per_call, batch_format="pyarrow").take_all())
    user = sorted(r["rows"] for r in ds.groupby("k").aggregate(_rows_counted()).take_all())
    assert counted == called == user


@pytest.mark.parametrize("keys", [[NAN, 1.0], [-0.0, 0.0]], ids=["nan", "signed-zero"])
def test_a_builtin_and_a_user_aggregate_together_by_a_float_key(keys):
    rows = [{"k": keys[i % 2], "v": 1} for i in range(10)]
    got = sb.from_items(rows, override_num_blocks=2).groupby("k") \
        .aggregate(sb.Count(), _rows_counted()).take_all()
    assert all(r["count()"] == r["rows"] for r in got)
    assert sum(r["rows"] for r in got) == 10


@pytest.mark.parametrize("blocks", [1, 2, 5])
def test_nan_values_give_the_same_aggregates_in_every_layout(blocks):
    """NaN values (not nulls): whatever the convention (pyarrow's: sum/mean/std are NaN,
    min/max skip NaN), every layout gives what pyarrow gives on the whole table."""
    rows = [{"k": i % 3, "v": NAN if i % 5 == 0 else i / 4} for i in range(60)]
    table = pa.Table.from_pylist(rows)
    want = {r["k"]: r for r in table.group_by("k").aggregate(
        [("v", "sum"), ("v", "min"), ("v", "max"), ("v", "mean")]).to_pylist()}
    got = sb.from_items(rows, override_num_blocks=blocks).groupby("k").aggregate(
        sb.Sum("v"), sb.Min("v"), sb.Max("v"), sb.Mean("v")).take_all()
    for row in got:
        w = want[row["k"]]
        for name, col in (("sum(v)", "v_sum"), ("min(v)", "v_min"), ("max(v)", "v_max"),
                          ("mean(v)", "v_mean")):
            assert (math.isnan(row[name]) and math.isnan(w[col])) or \
                math.isclose(row[name], w[col]), (name, row, w)


# ---- nulls --------------------------------------------------------------------------------
def test_a_group_whose_values_are_all_null_gets_none_and_counts_its_rows():
    rows = [{"k": "a", "v": None}, {"k": "a", "v": None}, {"k": "b", "v": 2.5},
            {"k": None, "v": None}]
    got = sb.from_items(rows, override_num_blocks=1).groupby("k").aggregate(  # 1: see below
        sb.Count(), sb.Sum("v"), sb.Min("v"), sb.Max("v"), sb.Mean("v"), sb.Std("v")).take_all()
    assert math.isnan(got[1].pop("std(v)"))  # one value: NaN, as Ray Data and pandas
    assert got == [
        {"k": "a", "count()": 2, "sum(v)": None, "min(v)": None, "max(v)": None,
         "mean(v)": None, "std(v)": None},
        {"k": "b", "count()": 1, "sum(v)": 2.5, "min(v)": 2.5, "max(v)": 2.5,
         "mean(v)": 2.5},
        {"k": None, "count()": 1, "sum(v)": None, "min(v)": None, "max(v)": None,
         "mean(v)": None, "std(v)": None}]


@pytest.mark.parametrize("rows,blocks", [
    ([{"k": None, "v": 1.0}], 1),
    ([{"k": None, "v": 1.0}, {"k": None, "v": 3.0}, {"k": 3, "v": 1.0}, {"k": 3, "v": 5.0}], 2),
], ids=["one-row", "one-block-of-null-keys"])
def test_std_by_a_key_that_is_null_in_a_whole_block(rows, blocks):
    got = sb.from_items(rows, override_num_blocks=blocks).groupby("k").std("v").take_all()
    want = {None: 1.4142135623730951 if len(rows) > 1 else math.nan}  # one value: NaN
    if len(rows) > 1:
        want[3] = 2.8284271247461903
    assert {r["k"]: r["std(v)"] for r in got} == pytest.approx(want, nan_ok=True)


# ---- names the engine uses inside ---------------------------------------------------------
@pytest.mark.parametrize("key,agg,want", [
    ("n", sb.Count(), [4, 4, 4]),
    ("s", sb.Sum("v"), [18.0, 22.0, 26.0]),
    ("m", sb.Max("v"), [9.0, 10.0, 11.0]),
    ("mean", sb.Std("v"), [3.872983346207417] * 3),
    ("state", _rows_counted(), [4, 4, 4]),
    ("a0.s", sb.Sum("v"), [18.0, 22.0, 26.0]),
])
def test_a_key_column_may_have_any_name(key, agg, want):
    rows = [{key: i % 3, "v": float(i)} for i in range(12)]
    got = sb.from_items(rows, override_num_blocks=3).groupby(key).aggregate(agg).take_all()
    assert [r[key] for r in got] == [0, 1, 2]
    assert [r[agg.name] for r in got] == pytest.approx(want)


@pytest.mark.parametrize("column", ["__one", "__g"])
def test_a_value_column_may_have_any_name(column):
    ds = sb.from_items([{"k": i % 2, column: i} for i in range(6)], override_num_blocks=2)
    assert ds.groupby("k").count().take_all() == [{"k": 0, "count()": 3}, {"k": 1, "count()": 3}]
    assert ds.aggregate(sb.Count(), sb.Sum(column)) == {"count()": 6, f"sum({column})": 15}


# ---- wrong types ---------------------------------------------------------------------------
@pytest.mark.parametrize("agg", ["mean", "std"])
def test_mean_of_a_string_column_is_an_error(agg):
    ds = sb.from_items([{"k": 1, "a": "1"}, {"k": 1, "a": "3"}])
    with pytest.raises(Exception, match=r"'a'|\(a\)"):
        getattr(ds, agg)("a")
    with pytest.raises(Exception, match=r"'a'|\(a\)"):
        getattr(ds.groupby("k"), agg)("a").take_all()


def _message(call) -> str:
    with pytest.raises(Exception) as info:
        call()
    return str(info.value)


def test_sum_of_a_string_column_names_the_column_and_its_type():
    ds = sb.from_items([{"k": i % 2, "s": f"x{i}"} for i in range(6)])
    for call in (lambda: ds.sum("s"), lambda: ds.groupby("k").sum("s").take_all()):
        msg = _message(call)
        assert re.search(r"column '?s'?\b", msg) and "string" in msg, msg
        assert "hash_sum" not in msg and "Fix the function" not in msg, msg


@pytest.mark.parametrize("op", ["groupby", "groupby-sum", "sum", "sort", "unique", "map_groups"])
def test_a_missing_column_is_named_with_the_columns_there_are(op):
    ds = sb.from_items([{"a": i % 3, "payload": f"row-{i}"} for i in range(20)],
                       override_num_blocks=2)
    calls = {
        "groupby": lambda: ds.groupby("nope").count().take_all(),
        "groupby-sum": lambda: ds.groupby("a").sum("nope").take_all(),
        "sum": lambda: ds.aggregate(sb.Count(), sb.Mean("nope")),
        "sort": lambda: ds.sort("nope").take_all(),
        "unique": lambda: ds.unique("nope"),
        "map_groups": lambda: ds.groupby("nope").map_groups(lambda b: b, batch_format="pyarrow").take_all(),
    }
    msg = _message(calls[op])
    assert re.search(r"column '?nope'?", msg), msg
    assert "payload" in msg and "Fix the function" not in msg, msg  # the columns there are
    assert "row-1" not in msg, "the message shows the data"


def test_sort_and_groupby_argument_errors_are_raised_when_called():
    ds = sb.range(10)
    with pytest.raises(ValueError, match="1 keys but 2 descending"):
        ds.sort("id", descending=[True, False])
    with pytest.raises(TypeError, match="sort"):
        ds.sort(["id", 3])
    with pytest.raises(ValueError, match="aggregate"):
        ds.groupby("id").aggregate()
    with pytest.raises(TypeError, match="AggregateFn"):
        ds.groupby("id").aggregate("sum")


# ---- map_groups outputs ---------------------------------------------------------------------
@pytest.mark.parametrize("returned,expect", [
    (lambda b: 42, "int"),
    (lambda b: None, "NoneType"),
    (lambda b: [1, 2], "int"),
    (lambda b: {"x": [1, 2], "y": [1]}, "'y'"),
])
def test_map_groups_returning_the_wrong_thing_says_what_it_returned(returned, expect):
    ds = sb.from_items([{"k": i % 3, "v": i} for i in range(9)], override_num_blocks=2)
    with pytest.raises(Exception, match="MapGroups") as info:
        ds.groupby("k").map_groups(returned, batch_format="pyarrow").take_all()
    assert expect in str(info.value)


def test_a_user_exception_in_map_groups_names_the_group_and_is_the_users_error():
    ds = sb.from_items([{"k": f"g{i % 4}", "k2": i % 2, "v": i} for i in range(40)],
                       override_num_blocks=4)

    def fails_on_g2(batch):
        if batch["k"][0].as_py() == "g2":
            raise ValueError("cannot summarise this group")
        return batch

    with pytest.raises(UserCodeError, match="cannot summarise") as info:
        ds.groupby("k").map_groups(fails_on_g2, batch_format="pyarrow").take_all()
    assert "'g2'" in str(info.value) and "ValueError" in str(info.value)
    with pytest.raises(UserCodeError) as info:
        ds.groupby(["k", "k2"]).map_groups(fails_on_g2, batch_format="pyarrow").take_all()
    assert "('g2', 0)" in str(info.value)


@pytest.mark.parametrize("batch_format", ["pandas", "numpy", "pyarrow"])
def test_map_groups_in_each_batch_format_sees_whole_groups(batch_format):
    rows = [{"k": i % 5 if i % 9 else None, "v": float(i)} for i in range(100)]

    def summary(batch):
        n = len(batch["v"]) if batch_format != "pyarrow" else batch.num_rows
        return {"n": [n], "total": [float(sum(batch["v"].tolist() if batch_format != "pyarrow"
                                               else batch["v"].to_pylist()))]}

    got = sb.from_items(rows, override_num_blocks=4).groupby("k") \
        .map_groups(summary, batch_format=batch_format).take_all()
    groups: dict = {}
    for r in rows:
        groups.setdefault(r["k"], []).append(r["v"])
    assert sorted((r["n"], r["total"]) for r in got) == \
        sorted((len(g), float(sum(g))) for g in groups.values())


def test_map_groups_may_return_no_rows_or_many_and_other_columns():
    ds = sb.from_items([{"k": i % 4, "v": i} for i in range(40)], override_num_blocks=3)

    def explode(batch):
        k = batch["k"][0].as_py()
        if k == 0:
            return {"k": [], "j": []}
        return {"k": [k] * k, "j": list(range(k))}

    got = ds.groupby("k").map_groups(explode, batch_format="pyarrow").take_all()
    assert sorted((r["k"], r["j"]) for r in got) == \
        sorted((k, j) for k in (1, 2, 3) for j in range(k))


# ---- numbers -----------------------------------------------------------------------------
def test_an_int_sum_that_overflows_is_not_silently_wrong():
    ds = sb.from_items([{"k": 1, "x": 2**62}] * 4, override_num_blocks=2)
    for call in (lambda: ds.sum("x"), lambda: ds.groupby("k").sum("x").take_all()[0]["sum(x)"]):
        try:
            total = call()
        except Exception as exc:  # an overflow error is a fine answer
            assert "overflow" in str(exc).lower()
        else:
            assert total == 2**64


def test_std_matches_statistics_on_large_offsets_in_any_layout():
    import statistics

    values = [1e9 + (i % 7) * 0.25 for i in range(300)]
    for blocks in (1, 4, 9):
        ds = sb.from_items([{"k": i % 2, "v": x} for i, x in enumerate(values)],
                           override_num_blocks=blocks)
        got = {r["k"]: r["std(v)"] for r in ds.groupby("k").std("v").take_all()}
        for k in (0, 1):
            want = statistics.stdev(values[k::2])
            assert math.isclose(got[k], want, rel_tol=1e-7), (blocks, k, got[k], want)
        assert math.isclose(ds.std("v", ddof=0), statistics.pstdev(values), rel_tol=1e-7)


# ---- repartition --------------------------------------------------------------------------
def _kilobyte_rows(batch: pa.Table) -> pa.Table:
    ids = batch["id"].to_numpy()
    return pa.table({"id": ids, "blob": pa.array([f"{i:010d}" * 100 for i in ids])})


@pytest.mark.parametrize("case", ["larger than a partition", "fewer rows than n"])
def test_repartition_with_shuffle_gives_n_partitions_as_without(case):
    if case == "larger than a partition":
        sb.init(num_cpus=2, memory_budget=64 * 2**20)  # partitions of about 4 MiB
        ds, n = sb.range(20_000, override_num_blocks=10).map_batches(_kilobyte_rows, batch_format="pyarrow"), 2
    else:
        ds, n = sb.range(3), 10
    assert ds.repartition(n).num_partitions() == n
    shuffled = ds.repartition(n, shuffle=True, seed=1)
    assert shuffled.num_partitions() == n
    assert sorted(r["id"] for r in shuffled.take_all()) == list(range(ds.count()))


# ---- column types and schemas a reader gives ------------------------------------------------
@pytest.fixture
def categorical_parquet(tmp_path):
    """Three parquet files of a pandas-categorical column (read back as Arrow dictionary
    arrays, as a DataFrame with a category column writes it)."""
    import pyarrow.parquet as pq

    cats = ["b", "a", "b", "c"] * 30
    for i in range(3):
        part = cats[i::3]
        pq.write_table(pa.table({"cat": pa.array(part).dictionary_encode(),
                                 "v": list(range(len(part)))}), tmp_path / f"p{i}.parquet")
    return str(tmp_path), cats


@pytest.mark.parametrize("op", ["groupby", "unique", "sort", "map_groups"])
def test_a_dictionary_encoded_key_column_groups_and_sorts(categorical_parquet, op):
    path, cats = categorical_parquet
    ds = sb.read_parquet(path)
    if op == "groupby":
        got = {r["cat"]: r["count()"] for r in ds.groupby("cat").count().take_all()}
        assert got == {c: cats.count(c) for c in "abc"}
    elif op == "unique":
        assert ds.unique("cat") == ["a", "b", "c"]
    elif op == "sort":
        assert [r["cat"] for r in ds.sort("cat").take_all()] == sorted(cats)
    else:
        got = ds.groupby("cat").map_groups(_rows_per_call_of("cat"), batch_format="pyarrow").take_all()
        assert {r["cat"]: r["n"] for r in got} == {c: cats.count(c) for c in "abc"}


def _rows_per_call_of(column: str):
    def rows(batch: pa.Table) -> dict:
        return {column: batch[column].slice(0, 1).cast(pa.string()), "n": [batch.num_rows]}
    return rows


def test_an_aggregate_of_a_column_some_blocks_lack_treats_it_as_null():
    ds = sb.from_items([{"a": 1}, {"b": 2}, {"a": 3}], override_num_blocks=3)
    assert ds.aggregate(sb.Count(), sb.Sum("a"), sb.Sum("b")) == \
        {"count()": 3, "sum(a)": 4, "sum(b)": 2}


@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("blocks", [3, 8])
def test_keys_mostly_nan_cut_into_ranges_keep_every_row_once(blocks, descending):
    """Half the keys NaN, a quarter null: the driver's range boundaries land on NaN and on
    null, and every block must be cut at them in the order pyarrow sorts (numbers, NaN,
    null), or rows are lost or doubled."""
    rows = [{"k": NAN if i % 4 < 2 else None if i % 4 == 2 else float(i % 17), "i": i}
            for i in range(4000)]
    ds = sb.from_items(rows, override_num_blocks=blocks)
    got = ds.sort(["k", "i"], descending=[descending, False]).take_all()
    assert sorted(r["i"] for r in got) == list(range(4000))
    numbers = sorted({float(i % 17) for i in range(4000) if i % 4 == 3}, reverse=descending)
    keys = [r["k"] for r in got]
    distinct = [k for j, k in enumerate(keys) if j == 0 or not _same(k, keys[j - 1])]
    assert distinct[:-2] == numbers and math.isnan(distinct[-2]) and distinct[-1] is None
    counts = {("nan" if isinstance(r["k"], float) and math.isnan(r["k"]) else r["k"]): r["count()"]
              for r in ds.groupby("k").count().take_all()}
    assert counts["nan"] == 2000 and counts[None] == 1000 and sum(counts.values()) == 4000
    assert len(ds.unique("k")) == 17 + 2


def _same(a, b) -> bool:
    both_nan = isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
    return both_nan or a == b


@pytest.mark.parametrize("hot", [7, None, NAN])
@pytest.mark.parametrize("descending", [False, True])
def test_a_hot_key_in_a_sort_is_shared_among_reducers(hot, descending):
    """60% of the rows hold one key: a sort may put equal keys in different ranges, so no
    reducer gets them all (each reducer's output is one block here)."""
    rows = [{"k": hot if i % 5 < 3 else (i * 7919) % 101, "i": i} for i in range(6000)]
    ds = sb.from_items(rows, override_num_blocks=8)
    blocks = [b.num_rows for b in ds.sort("k", descending=descending)
              .iter_batches(batch_size=None, batch_format="pyarrow")]
    assert sum(blocks) == 6000 and max(blocks) < 0.45 * 6000, blocks
    got = ds.sort("k", descending=descending).take_all()
    assert sorted(r["i"] for r in got) == list(range(6000))
    numbers = sorted({(i * 7919) % 101 for i in range(6000) if i % 5 >= 3}, reverse=descending)
    keys = [r["k"] for r in got]
    distinct = [k for j, k in enumerate(keys) if j == 0 or not _same(k, keys[j - 1])]
    if hot == 7:
        assert distinct == sorted(set(numbers) | {7}, reverse=descending)
    else:
        assert distinct[:-1] == numbers and _same(distinct[-1], hot)
