"""Python row predicates translated into pyarrow expressions and pushed into reads:
what translates, identical results (nulls included), and bytes read counted."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from streambatch.operators.rules.translate_filter import translate_predicate

import streambatch as sb

from ..connectors.files.test_parquet_features import CountingFS, counting  # noqa: F401

MiB = 2**20
SCHEMA = pa.schema([("k", pa.int64()), ("x", pa.float64()), ("s", pa.string()),
                    ("b", pa.bool_()), ("f", pa.float32())])


@pytest.fixture(autouse=True, scope="module")
def _engine():
    sb.init(num_cpus=2, memory_budget=256 * MiB)


@pytest.mark.parametrize("fn, text", [
    (lambda r: r["k"] < 5, "(k < 5)"),
    (lambda r: 5 > r["k"], "(k < 5)"),
    (lambda r: (r["k"] >= 2) & (r["s"] == "a"), '((k >= 2) and (s == "a"))'),
    (lambda r: (r["k"] == 1) | r["b"], "((k == 1) or b)"),
    (lambda r: r["x"] * 2 + 1 > r["x"], "(add(multiply(x, 2), 1) > x)"),
    (lambda r: r["k"] + 0.5 > 3.0, "(add(k, 0.5) > 3)"),
    (lambda r: r["f"] > 0.25, "(f > 0.25)"),
    (lambda r: r["s"] != "z", '(s != "z")'),
])
def test_translatable_predicates(fn, text):
    expr, _ = translate_predicate(fn, SCHEMA)
    assert str(expr) == text


@pytest.mark.parametrize("fn", [
    lambda r: r["k"] < 5 and r["x"] > 0,          # bool() of a symbol
    lambda r: not r["b"],
    lambda r: ~(r["k"] < 5),                      # integer inversion in Python
    lambda r: r["k"] in (1, 2),
    lambda r: 0 < r["k"] < 5,                     # chained: an implicit `and`
    lambda r: r.get("k") == 1,
    lambda r: r["s"].startswith("a"),
    lambda r: r["k"] == None,  # noqa: E711
    lambda r: r["k"] + 1 > 3,                     # int arithmetic: Python never overflows
    lambda r: r["x"] / 2 > 1,
    lambda r: r["f"] * 2 > 1,                     # float32 arithmetic rounds differently
    lambda r: r["k"] < 2.5,                       # int column against a float literal
    lambda r: r["k"] == True,  # noqa: E712 - True == 1 in Python
    lambda r: r["s"] < 5,
    lambda r: r["nope"] > 1,
    lambda r: r["k"] & 1,
    lambda r: r["k"],                             # not a boolean
    lambda r: True,
    lambda r: 1 / 0,
])
def test_untranslatable_predicates_keep_the_python_filter(fn):
    assert translate_predicate(fn, SCHEMA) is None


def _catches_everything(r):
    try:
        return (r["k"] < 5) and r["b"]
    except:  # noqa: E722 - a predicate that hides the failed trace
        return r["k"] > 100


def _catches_exception(r):
    try:
        return (r["k"] < 5) and r["b"]
    except Exception:
        return r["k"] > 100


@pytest.mark.parametrize("fn", [_catches_everything, _catches_exception])
def test_a_predicate_that_catches_the_failed_trace_is_not_translated(fn):
    """Python would return ``k < 5 and b`` for real rows, never ``k > 100``."""
    assert translate_predicate(fn, SCHEMA) is None


@pytest.fixture
def files(tmp_path):
    """One parquet file, 8 row groups of 5,000 rows; ``id`` non-nullable, sorted;
    ``v`` nullable with a null in the last row group; 12 float columns."""
    n = 40_000
    rng = np.random.default_rng(1)
    v = pa.array([None if i == n - 1 else i for i in range(n)], pa.int64())
    cols = {"id": pa.array(np.arange(n)), "v": v} | {f"c{i}": rng.random(n) for i in range(12)}
    schema = pa.schema([pa.field("id", pa.int64(), nullable=False), ("v", pa.int64())]
                       + [(f"c{i}", pa.float64()) for i in range(12)])
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table(cols, schema=schema), str(path), row_group_size=5_000,
                   compression="none")
    return str(path)


def _bytes(ds) -> tuple[int, list]:
    CountingFS.reset()
    rows = ds.take_all()
    return CountingFS.bytes_read, rows


def test_non_nullable_column_replaces_the_python_filter_and_prunes(files, counting):  # noqa: F811
    base = sb.read_parquet(files, filesystem=counting, columns=["id", "c0"])
    full, _ = _bytes(base)
    ds = base.filter(lambda r: r["id"] < 1000)
    plan = ds.explain()
    optimized = plan.split("Optimized")[1].split("Physical")[0]
    assert "filter=(id < 1000)" in optimized and "Filter(" not in optimized
    read, rows = _bytes(ds)
    assert sorted(r["id"] for r in rows) == list(range(1000))
    assert read < full * 0.3                      # 1 of 8 row groups


def test_nullable_column_pushes_a_superset_and_keeps_the_python_filter(files, counting):  # noqa: F811
    ds = sb.read_parquet(files, filesystem=counting, columns=["v", "c0"]).filter(
        lambda r: r["v"] != 7)
    optimized = ds.explain().split("Optimized")[1].split("Physical")[0]
    assert "is_null(v" in optimized and "Filter(" in optimized
    _, rows = _bytes(ds)
    # Python semantics: None != 7 is True, so the null row is kept
    assert len(rows) == 40_000 - 1 and sum(r["v"] is None for r in rows) == 1
    sel = sb.read_parquet(files, filesystem=counting, columns=["v", "c0"]).filter(
        lambda r: r["v"] == 7)
    full, _ = _bytes(sb.read_parquet(files, filesystem=counting, columns=["v", "c0"]))
    read, rows = _bytes(sel)
    assert [r["v"] for r in rows] == [7]
    assert read < full * 0.45     # row groups 2-7 hold no 7 and no null: skipped


def test_null_that_python_refuses_still_raises(files):
    """Python raises on None < 5; the pushed superset keeps the null row, so the
    translated plan raises exactly as the untranslated one."""
    ds = sb.read_parquet(files, columns=["v"])
    with pytest.raises(sb.UserCodeError, match="'>' not supported"):
        ds.filter(lambda r: r["v"] > 39_990).take_all()
    with pytest.raises(sb.UserCodeError, match="'>' not supported"):
        ds.filter(lambda r: bool(r["v"] > 39_990)).take_all()  # untranslatable reference


def test_skip_sends_the_null_row_to_the_dead_letters(files):
    ds = sb.read_parquet(files, columns=["v"]).filter(lambda r: r["v"] > 39_990,
                                                      on_error="skip")
    assert sorted(r["v"] for r in ds.take_all()) == list(range(39_991, 39_999))
    dead = ds.dead_letters()
    assert dead.num_rows == 1 and dead.column("row").to_pylist() == ['{"v": null}']


def test_results_equal_the_python_filter_on_in_memory_data():
    table = pa.table({"k": pa.array([1, 5, None, 9], pa.int64()), "x": [0.5, 2.0, 3.0, None],
                      "s": ["a", None, "c", "d"]})
    for fn in (lambda r: r["s"] == "c", lambda r: r["s"] != "c",
               lambda r: (r["s"] == "a") | (r["s"] == "d")):
        want = [r for r in table.to_pylist() if fn(r)]
        got = sb.from_arrow(table).filter(fn).take_all()
        assert sorted(map(str, got)) == sorted(map(str, want))
