"""All-to-all operators as a Ray Data user sees them, against plain-Python oracles, on
random pipelines: map / filter / flat_map before and after a groupby-aggregate, a sort,
a unique, a random_shuffle or a map_groups; random data (nulls in keys and values;
int, float, string, bool, date and two-column keys; one row, no rows, one key, a hot
key holding half the rows) and random layouts (1-10 blocks, 1-3 CPUs, shuffle buckets).

Values are chosen so that the oracle is exact: float values are multiples of 1/8, so
every sum is exact whatever order the engine adds in. Keys here are never NaN or -0.0
(those have tests of their own in ``test_adversarial_edges.py``).
"""

from __future__ import annotations

import datetime
import math
import os
import statistics
from collections import Counter

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import streambatch as sb

# The default run is short and the same every time; STREAMBATCH_ADVERSARIAL_EXAMPLES=200
# runs 200 fresh random examples per property instead (a deeper search).
_EXAMPLES = os.environ.get("STREAMBATCH_ADVERSARIAL_EXAMPLES")
FAST = settings(max_examples=int(_EXAMPLES or 8), deadline=None, derandomize=not _EXAMPLES,
                database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
LONG = settings(max_examples=300, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# ---- data -------------------------------------------------------------------------------
_DAY = datetime.date(2024, 2, 28)
KEY_VALUES = {
    "int": st.integers(-4, 4),
    "float": st.sampled_from([-1.5, 0.0, 2.25, 7.0, 1e300, -1e-300]),
    "str": st.sampled_from(["", "a", "B", "ab", "é", "\u4e2d", "\U0001f600", "a b"]),
    "bool": st.booleans(),
    "date": st.integers(0, 4).map(lambda d: _DAY + datetime.timedelta(days=d)),
}
KINDS = [*KEY_VALUES, "multi"]


def _maybe_null(strategy, null: bool):
    return st.one_of(st.none(), strategy) if null else strategy


@st.composite
def tables(draw, max_rows: int = 60):
    """(key columns, rows): columns ``k`` (and ``k2`` for two-column keys), ``i`` (int),
    ``v`` (float, multiples of 1/8), ``s`` (string); nulls anywhere but in ``i``'s
    non-null half."""
    kind = draw(st.sampled_from(KINDS))
    null_keys, null_values = draw(st.booleans()), draw(st.booleans())
    shape = draw(st.sampled_from(["random", "random", "one key", "hot key"]))
    if kind == "multi":
        keys = ("k", "k2")
        key = st.tuples(_maybe_null(KEY_VALUES["int"], null_keys),
                        _maybe_null(KEY_VALUES["str"], null_keys))
    else:
        keys = ("k",)
        key = st.tuples(_maybe_null(KEY_VALUES[kind], null_keys))
    value = st.tuples(
        _maybe_null(st.integers(-20, 20), null_values),
        _maybe_null(st.integers(-8000, 8000).map(lambda x: x / 8), null_values),
        _maybe_null(st.sampled_from(["x", "yy", "Z", "\u00e9t\u00e9"]), null_values))
    n = draw(st.integers(0, max_rows))
    if n == 0:
        return keys, []
    drawn = draw(st.lists(st.tuples(key, value), min_size=n, max_size=n))
    if shape == "one key":
        drawn = [(drawn[0][0], v) for _, v in drawn]
    elif shape == "hot key":
        drawn = [(drawn[0][0] if j % 2 == 0 else k, v) for j, (k, v) in enumerate(drawn)]
    rows = []
    for k, (i, v, s) in drawn:
        row = dict(zip(keys, k, strict=True))
        row.update(i=i, v=v, s=s)
        rows.append(row)
    return keys, rows


# (blocks, cpus, where Python UDFs run: "auto" puts them in worker processes, "threads"
# in the driver; both are a user's choice, and threads keep the default run fast)
# Shapes every run covers (hypothesis examples): no rows, one row, one key, a hot key
# holding half the rows, all keys null.
def _rows(keys, n: int, key) -> list[dict]:
    return [{**dict(zip(keys, key(j), strict=True)), "i": j % 5 - 2, "v": j / 8,
             "s": "xy"[j % 2]} for j in range(n)]


SHAPES = [
    (("k",), []),
    (("k",), _rows(("k",), 1, lambda j: ("only",))),
    (("k", "k2"), _rows(("k", "k2"), 30, lambda j: (1, "a"))),
    (("k",), _rows(("k",), 40, lambda j: (7 if j % 2 else j,))),
    (("k",), _rows(("k",), 12, lambda j: (None,))),
]


def with_shapes(*rest, steps: bool = True):
    """Also run the test on each of SHAPES: 3 blocks, 2 CPUs, no steps before, then
    ``rest`` for the test's other arguments."""
    def wrap(test):
        for shape in SHAPES:
            args = (shape, (3, 2, "auto"), *([[]] if steps else []), *rest)
            test = example(*args)(test)
        return test
    return wrap


layouts = st.tuples(st.integers(1, 10), st.integers(1, 3), st.sampled_from(["auto", "threads"]))


def _init(layout, backend: str = "local") -> int:
    """``sb.init`` for ``layout``; returns its number of blocks."""
    blocks, cpus, mode = layout
    sb.init(num_cpus=cpus, backend=backend, **({"worker_mode": mode} if backend == "local" else {}))
    return blocks


def _dataset(rows: list[dict], keys: tuple[str, ...], blocks: int):
    """The rows as a dataset; no rows: a filtered-out row, so the schema is known."""
    if rows:
        return sb.from_items(rows, override_num_blocks=min(blocks, len(rows)))
    blank = {k: None for k in keys} | {"i": 0, "v": 0.0, "s": ""}
    return sb.from_items([blank]).filter(lambda r: False)


# ---- pipelines: the same steps on the dataset and on the oracle's rows ------------------
def _double_i(row):
    return {**row, "i": None if row["i"] is None else row["i"] * 2}


def _keep_not_multiple_of_three(row):
    return row["i"] is None or row["i"] % 3 != 0


def _twice_if_even(row):
    return [row, dict(row)] if row["i"] is not None and row["i"] % 2 == 0 else [row]


STEPS = {
    "map": (lambda ds: ds.map(_double_i), lambda rows: [_double_i(r) for r in rows]),
    "filter": (lambda ds: ds.filter(_keep_not_multiple_of_three),
               lambda rows: [r for r in rows if _keep_not_multiple_of_three(r)]),
    "flat_map": (lambda ds: ds.flat_map(_twice_if_even),
                 lambda rows: [x for r in rows for x in _twice_if_even(r)]),
}
pipelines = st.lists(st.sampled_from(sorted(STEPS)), max_size=2)


def _run(steps, ds, rows):
    for name in steps:
        on_ds, on_rows = STEPS[name]
        ds, rows = on_ds(ds), on_rows(rows)
    return ds, rows


# ---- oracle helpers -----------------------------------------------------------------------
def _order(values: tuple, descending: tuple[bool, ...] | None = None) -> tuple:
    """A sort key: per column, nulls last whatever the direction."""
    out = []
    for j, x in enumerate(values):
        desc = bool(descending and descending[j])
        out.append((x is None, _Rev(x) if desc and x is not None else x if x is not None else 0))
    return tuple(out)


class _Rev:
    """Reverses the order of one value (for descending keys of any type)."""

    def __init__(self, x):
        self.x = x

    def __lt__(self, other):
        return other.x < self.x

    def __eq__(self, other):
        return self.x == other.x


def _groups(rows: list[dict], keys: tuple[str, ...]) -> dict[tuple, list[dict]]:
    out: dict[tuple, list[dict]] = {}
    for r in rows:
        out.setdefault(tuple(r[k] for k in keys), []).append(r)
    return out


def _nonnull(members, column):
    return [r[column] for r in members if r[column] is not None]


def _close(got, want) -> bool:
    if want is None or got is None:
        return got is None and want is None
    return math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9)


def _close_or_both_nan(got, want) -> bool:
    if isinstance(got, float) and isinstance(want, float) and math.isnan(want):
        return math.isnan(got)
    return _close(got, want)


def _hashable(row: dict) -> tuple:
    return tuple(sorted(row.items()))


def _distinct_i():
    return sb.AggregateFn(init=lambda key: set(), name="distinct(i)",
                          accumulate_block=lambda acc, b: acc | set(b["i"].drop_null().to_pylist()),
                          merge=lambda a, b: a | b, finalize=len)


AGGS = ("count()", "sum(i)", "sum(v)", "min(v)", "max(v)", "mean(v)", "std(v)", "min(s)",
        "max(s)", "mean(i)", "distinct(i)")


def _aggregates(with_std: bool = True):
    std = (sb.Std("v"),) if with_std else ()
    return (sb.Count(), sb.Sum("i"), sb.Sum("v"), sb.Min("v"), sb.Max("v"), sb.Mean("v"),
            *std, sb.Min("s"), sb.Max("s"), sb.Mean("i"), _distinct_i())


def _std_works(rows: list[dict], keys: tuple[str, ...]) -> bool:
    """Std per group fails where a block's key column is all null (Arrow type null):
    ``test_adversarial_edges.py::test_std_by_a_key_that_is_null_in_a_whole_block``. The
    properties leave Std out where any key is null, so they test everything else."""
    return all(r[k] is not None for r in rows for k in keys)


def _check_group(row: dict, members: list[dict], with_std: bool = True) -> None:
    i, v, s = _nonnull(members, "i"), _nonnull(members, "v"), _nonnull(members, "s")
    names = [n for n in AGGS if with_std or n != "std(v)"]
    assert [c for c in row if "(" in c] == names, row  # Ray Data's column names, in order
    assert row["count()"] == len(members), row
    assert row["sum(i)"] == (sum(i) if i else None), row
    assert row["sum(v)"] == (sum(v) if v else None), row  # exact: multiples of 1/8
    assert row["min(v)"] == (min(v) if v else None) and row["max(v)"] == (max(v) if v else None)
    assert row["min(s)"] == (min(s) if s else None) and row["max(s)"] == (max(s) if s else None)
    assert _close(row["mean(v)"], statistics.mean(v) if v else None), row
    assert _close(row["mean(i)"], statistics.mean(i) if i else None), row
    if with_std:  # ddof=1: one value gives NaN (Ray Data, pandas), none gives None
        want = statistics.stdev(v) if len(v) > 1 else math.nan if v else None
        assert _close_or_both_nan(row["std(v)"], want), row
    assert row["distinct(i)"] == len(set(i)), row


@pytest.fixture(autouse=True)
def _restore_context():
    yield
    sb.init()


# ---- properties ---------------------------------------------------------------------------
def _groupby_matches_the_oracle(data, layout, before, after_filter, backend="local"):
    keys, rows = data
    blocks = _init(layout, backend)
    ds, rows = _run(before, _dataset(rows, keys, blocks), rows)
    with_std = _std_works(rows, keys)
    out = ds.groupby(list(keys) if len(keys) > 1 else keys[0]).aggregate(*_aggregates(with_std))
    if after_filter:  # a stage after the all-to-all, keeping only groups of 2 or more
        out = out.filter(lambda r: r["count()"] >= 2).map(lambda r: {**r, "tag": 1})
    got = out.take_all()
    groups = _groups(rows, keys)
    if after_filter:
        groups = {k: g for k, g in groups.items() if len(g) >= 2}
    got_keys = [tuple(r[k] for k in keys) for r in got]
    assert got_keys == sorted(groups, key=_order), "one row per group, in key order, nulls last"
    for row in got:
        _check_group(row, groups[tuple(row[k] for k in keys)], with_std)


@FAST
@with_shapes(False)
@given(tables(), layouts, pipelines, st.booleans())
def test_groupby_aggregate_matches_the_oracle(data, layout, before, after_filter):
    _groupby_matches_the_oracle(data, layout, before, after_filter)


@pytest.mark.slow
@LONG
@given(tables(max_rows=300), layouts, pipelines, st.booleans())
def test_groupby_aggregate_matches_the_oracle_long(data, layout, before, after_filter):
    _groupby_matches_the_oracle(data, layout, before, after_filter)


def _global_aggregate_matches_the_oracle(data, layout, before):
    keys, rows = data
    blocks = _init(layout)
    ds, rows = _run(before, _dataset(rows, keys, blocks), rows)
    got = ds.aggregate(*_aggregates())
    assert list(got) == list(AGGS)
    if rows:
        _check_group(got, rows)
    else:  # no rows: count 0, every other built-in None, a user aggregate its empty value
        assert got == {**{name: None for name in AGGS}, "count()": 0, "distinct(i)": 0}


@FAST
@with_shapes()
@given(tables(), layouts, pipelines)
def test_global_aggregates_match_the_oracle(data, layout, before):
    _global_aggregate_matches_the_oracle(data, layout, before)


def _sort_matches_the_oracle(data, layout, before, after, descending, backend="local"):
    keys, rows = data
    blocks = _init(layout, backend)
    ds, rows = _run(before, _dataset(rows, keys, blocks), rows)
    desc = tuple(descending[:len(keys)])
    ds = ds.sort(list(keys), descending=list(desc))
    ds, rows = _run(after, ds, rows)  # per-row steps after the sort keep its order
    got = ds.take_all()
    assert Counter(map(_hashable, got)) == Counter(map(_hashable, rows)), "every row once"
    got_keys = [tuple(r[k] for k in keys) for r in got]
    assert got_keys == sorted(got_keys, key=lambda t: _order(t, desc)), \
        f"not in the order of {keys} descending={desc} (nulls last)"


@FAST
@with_shapes([], [False, True])
@given(tables(), layouts, pipelines, pipelines, st.lists(st.booleans(), min_size=2, max_size=2))
def test_sort_matches_the_oracle(data, layout, before, after, descending):
    _sort_matches_the_oracle(data, layout, before, after, descending)


@pytest.mark.slow
@LONG
@given(tables(max_rows=300), layouts, pipelines, pipelines,
       st.lists(st.booleans(), min_size=2, max_size=2))
def test_sort_matches_the_oracle_long(data, layout, before, after, descending):
    _sort_matches_the_oracle(data, layout, before, after, descending)


@FAST
@with_shapes()
@given(tables(), layouts, pipelines)
def test_unique_matches_the_oracle(data, layout, before):
    keys, rows = data
    blocks = _init(layout)
    ds, rows = _run(before, _dataset(rows, keys, blocks), rows)
    want = sorted({r["k"] for r in rows}, key=lambda x: _order((x,)))
    assert ds.unique("k") == want


@FAST
@with_shapes(None, 0)
@given(tables(), layouts, pipelines, st.one_of(st.none(), st.integers(1, 7)), st.integers(0, 3))
def test_random_shuffle_keeps_every_row_once(data, layout, before, buckets, seed):
    keys, rows = data
    blocks = _init(layout)
    ds, rows = _run(before, _dataset(rows, keys, blocks), rows)
    shuffled = ds.random_shuffle(seed=seed, num_blocks=buckets)
    assert Counter(map(_hashable, shuffled.take_all())) == Counter(map(_hashable, rows))
    parts = ds.repartition(buckets or 3, shuffle=True, seed=seed)
    assert Counter(map(_hashable, parts.take_all())) == Counter(map(_hashable, rows))


def _summary(batch):
    """One row per group: its key (from the first row), its rows, the sum of ``i``."""
    import pyarrow.compute as pc

    out = {name: batch[name].slice(0, 1) for name in batch.column_names if name.startswith("k")}
    total = pc.sum(batch["i"]).as_py()
    return {**out, "n": [batch.num_rows], "sum_i": [total]}


@FAST
@with_shapes()
@given(tables(), layouts, pipelines)
def test_map_groups_sees_each_group_whole(data, layout, before):
    keys, rows = data
    blocks = _init(layout)
    ds, rows = _run(before, _dataset(rows, keys, blocks), rows)
    got = ds.groupby(list(keys)).map_groups(_summary, batch_format="pyarrow").take_all()
    groups = _groups(rows, keys)
    want = {k: (len(g), sum(_nonnull(g, "i")) if _nonnull(g, "i") else None)
            for k, g in groups.items()}
    seen = [tuple(r[k] for k in keys) for r in got]
    assert len(seen) == len(set(seen)), "a group was split in two calls"
    assert {tuple(r[k] for k in keys): (r["n"], r["sum_i"]) for r in got} == want


# ---- chained all-to-alls ------------------------------------------------------------------
@settings(FAST, max_examples=int(_EXAMPLES or 5))
@with_shapes(steps=False)
@given(tables(), layouts)
def test_chained_all_to_alls_match_the_oracle(data, layout):
    keys, rows = data
    blocks = _init(layout)
    ds = _dataset(rows, keys, blocks)
    kcol = keys[0]
    groups = _groups(rows, (kcol,))
    counts = sorted(((k[0], len(g)) for k, g in groups.items()),
                    key=lambda kv: (-kv[1], _order((kv[0],))))
    # sort then groupby
    got = ds.sort("v", descending=True).groupby(kcol).count().take_all()
    assert [(r[kcol], r["count()"]) for r in got] == \
        sorted(((k[0], len(g)) for k, g in groups.items()), key=lambda kv: _order((kv[0],)))
    # groupby then sort (by the count, descending; ties by key)
    got = ds.groupby(kcol).count().sort(["count()", kcol], descending=[True, False]).take_all()
    assert [(r[kcol], r["count()"]) for r in got] == counts
    # shuffle then sort
    got = ds.random_shuffle(seed=1).sort(["i", "s"]).take_all()
    assert [(r["i"], r["s"]) for r in got] == sorted(((r["i"], r["s"]) for r in rows), key=_order)
    # take after a groupby: the first groups in key order
    assert [(r[kcol],) for r in ds.groupby(kcol).count().take(2)] == \
        sorted(groups, key=_order)[:2]
    # groupby of a groupby: how many groups have each count
    got = (ds.groupby(kcol).count().map(lambda r: {"c": r["count()"]})
           .groupby("c").count().take_all())
    hist = Counter(len(g) for g in groups.values())
    assert [(r["c"], r["count()"]) for r in got] == sorted(hist.items())


# ---- limit / take after sort, write after an all-to-all -----------------------------------
@pytest.mark.parametrize("blocks,cpus", [(1, 1), (10, 2), (7, 3)])
@pytest.mark.parametrize("descending", [False, True])
def test_limit_and_take_after_a_sort_are_the_first_rows(blocks, cpus, descending):
    sb.init(num_cpus=cpus)
    values = [(i * 7919) % 5003 for i in range(5000)]
    ds = sb.from_items([{"v": x, "w": x % 10} for x in values], override_num_blocks=blocks)
    want = sorted(values, reverse=descending)
    ordered = ds.sort("v", descending=descending)
    assert [r["v"] for r in ordered.limit(7).take_all()] == want[:7]
    assert [r["v"] for r in ordered.take(5)] == want[:5]
    assert [r["v"] for r in ordered.map(lambda r: r).limit(3).take_all()] == want[:3]
    evens = [x for x in want if x % 2 == 0]
    assert [r["v"] for r in ordered.filter(lambda r: r["v"] % 2 == 0).take(6)] == evens[:6]
    resorted = ordered.limit(100).sort("w").take_all()  # a sort of a limit of a sort
    assert sorted(r["v"] for r in resorted) == sorted(want[:100])
    assert [r["w"] for r in resorted] == sorted(x % 10 for x in want[:100])
    batches = list(ordered.iter_batches(batch_size=999, batch_format="pyarrow"))
    assert [x for b in batches for x in b["v"].to_pylist()] == want
    assert ordered.count() == 5000


@pytest.mark.parametrize("what", ["groupby", "sort", "shuffle", "map_groups"])
def test_an_all_to_all_written_to_parquet_reads_back_the_same(tmp_path, what):
    sb.init(num_cpus=2)
    rows = [{"k": (i * 31) % 17 if i % 11 else None, "v": float(i % 13) / 4, "i": i}
            for i in range(1500)]
    ds = sb.from_items(rows, override_num_blocks=6).map(lambda r: r)
    if what == "groupby":
        out = ds.groupby("k").aggregate(sb.Count(), sb.Sum("v"), sb.Max("i"))
    elif what == "sort":
        out = ds.sort(["k", "i"], descending=[True, False])
    elif what == "shuffle":
        out = ds.random_shuffle(seed=5)
    else:
        out = ds.groupby("k").map_groups(_summary, batch_format="pyarrow")
    want = out.take_all()
    out.write_parquet(str(tmp_path / "o"))
    back = sb.read_parquet(str(tmp_path / "o")).take_all()
    assert Counter(map(_hashable, back)) == Counter(map(_hashable, want))
    if what == "groupby":
        groups = _groups(rows, ("k",))
        assert {r["k"]: r["count()"] for r in back} == {k[0]: len(g) for k, g in groups.items()}
    import pyarrow.parquet as pq

    if what == "sort":  # every file is a sorted run
        for path in sorted((tmp_path / "o").glob("*.parquet")):
            keys = [(r["k"], r["i"]) for r in pq.read_table(path).to_pylist()]
            assert keys == sorted(keys, key=lambda t: _order(t, (True, False)))
