"""Transforms: map, map_batches, filter, flat_map, projections, add_column, limit,
union, repartition.

UDFs run in worker processes; what they saw (batch type, batch length, which
instance ran them) is reported back through their output rows, and constructor
calls are counted through marker files.
"""

from __future__ import annotations

import functools
import os
import uuid

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from slow_first import first_partition_last

import streambatch as sb


def _py(v):
    return v.item() if isinstance(v, np.generic) else v


def _col(ds, name):
    """Sorted python values of one column of ``ds``."""
    return sorted(_py(r[name]) for r in ds.take_all())


def _touch(directory):
    with open(os.path.join(directory, f"call-{os.getpid()}-{uuid.uuid4().hex}"), "w") as fh:
        fh.write("1")


def _count_calls(directory):
    return sum(1 for n in os.listdir(directory) if n.startswith("call-"))


# ----------------------------------------------------------------------- UDFs (module level)


def add_square(row):
    return {"id": row["id"], "sq": row["id"] * row["id"]}


def batch_kind(batch):
    if isinstance(batch, pa.Table):
        return "pyarrow"
    if isinstance(batch, pd.DataFrame):
        return "pandas"
    if isinstance(batch, pl.DataFrame):
        return "polars"
    if isinstance(batch, dict) and batch and all(isinstance(v, np.ndarray) for v in batch.values()):
        return "numpy"
    return f"other:{type(batch).__module__}.{type(batch).__name__}"


def report_kind(batch):
    """One output row per input row: its id and the kind of batch it arrived in."""
    ids = np.asarray(batch["id"])
    return {"id": ids, "kind": np.array([batch_kind(batch)] * len(ids))}


def batch_len(batch):
    """One output row per batch: the number of rows the UDF saw."""
    return {"n": np.array([len(np.asarray(batch["id"]))], dtype=np.int64)}


def doubled_as(batch, kind):
    """Input pyarrow batch; returns column x = 2 * id in the requested return type."""
    x = batch.column("id").to_numpy() * 2
    if kind == "pyarrow":
        return pa.table({"x": x})
    if kind == "pandas":
        return pd.DataFrame({"x": x})
    if kind == "polars":
        return pl.DataFrame({"x": x})
    if kind == "numpy":
        return {"x": x}
    if kind == "lists":
        return {"x": x.tolist()}
    raise AssertionError(kind)


def affine(batch, mul, add=0):
    return {"id": batch["id"], "y": batch["id"] * mul + add}


class Tagger:
    """Records each construction in a marker file and stamps its output with an
    instance token, so tests can see how many instances ran and with which args."""

    def __init__(self, calls_dir, offset, *, scale=1):
        _touch(calls_dir)
        self.token = uuid.uuid4().hex
        self.offset = offset
        self.scale = scale

    def __call__(self, batch):
        ids = batch["id"]
        return {
            "id": ids,
            "y": ids * self.scale + self.offset,
            "token": np.array([self.token] * len(ids)),
        }


def divisible_by_3(row):
    return row["id"] % 3 == 0


def repeat_by_id(row):
    """Row with id k becomes k rows (so id 0 disappears)."""
    return [{"id": row["id"], "copy": c} for c in range(row["id"])]


def mark_row(row, calls_dir):
    _touch(calls_dir)
    return row


# ------------------------------------------------------------------------------ map


def test_map_row_to_row():
    ds = sb.range(10).map(add_square)
    rows = sorted(({k: _py(v) for k, v in r.items()} for r in ds.take_all()), key=lambda r: r["id"])
    assert rows == [{"id": i, "sq": i * i} for i in range(10)]
    assert ds.schema().field("sq").type == pa.int64()


def test_map_accepts_lambdas_and_closures():
    offset = 7
    ds = sb.range(5).map(lambda r: {"z": r["id"] + offset})
    assert _col(ds, "z") == [7, 8, 9, 10, 11]


def test_map_preserves_order_when_asked(ordered):
    ds = sb.range(50, override_num_blocks=5).map(add_square)
    assert [_py(r["sq"]) for r in ds.take_all()] == [i * i for i in range(50)]


def test_map_runs_each_row_exactly_once(calls_dir):
    ds = sb.range(12, override_num_blocks=3).map(functools.partial(mark_row, calls_dir=str(calls_dir)))
    assert _count_calls(calls_dir) == 0  # lazy: nothing ran yet
    assert _col(ds, "id") == list(range(12))
    assert _count_calls(calls_dir) == 12


# ---------------------------------------------------------------------- map_batches


@pytest.mark.parametrize("fmt", ["pyarrow", "pandas", "numpy", "polars"])
def test_map_batches_batch_format_decides_batch_type(fmt):
    ds = sb.range(20, override_num_blocks=2).map_batches(report_kind, batch_format=fmt, batch_size=8, releases_gil=False)
    rows = ds.take_all()
    assert sorted(_py(r["id"]) for r in rows) == list(range(20))
    assert {r["kind"] for r in rows} == {fmt}


@pytest.mark.parametrize("ret", ["pyarrow", "pandas", "polars", "numpy", "lists"])
def test_map_batches_accepts_each_return_type(ret):
    ds = sb.range(12, override_num_blocks=2).map_batches(
        doubled_as, batch_format="pyarrow", fn_kwargs={"kind": ret}, releases_gil=False
    )
    out = ds.to_arrow()
    assert out.schema.names == ["x"]
    assert out.schema.field("x").type == pa.int64()
    assert sorted(out.column("x").to_pylist()) == [2 * i for i in range(12)]


def test_map_batches_default_batch_format_is_numpy_as_in_ray_data():
    kinds = {r["kind"] for r in sb.range(30, override_num_blocks=2).map_batches(report_kind, releases_gil=False).take_all()}
    assert kinds == {"numpy"}


def test_batch_format_none_is_the_blocks_own_pyarrow_table():
    ds = sb.range(30, override_num_blocks=2)
    assert {r["kind"] for r in ds.map_batches(report_kind, batch_format=None, releases_gil=False).take_all()} == {"pyarrow"}
    assert isinstance(ds.take_batch(3, batch_format=None), pa.Table)


def test_map_batches_default_batch_size_is_1024():
    """The contract's signature reads ``batch_size=1024 | None``: 1024 by default."""
    lens = _col(sb.range(2500, override_num_blocks=1).map_batches(batch_len, releases_gil=False), "n")
    assert lens == [452, 1024, 1024]


def test_map_batches_fn_args_and_fn_kwargs():
    ds = sb.range(6).map_batches(affine, batch_format="numpy", fn_args=(3,), fn_kwargs={"add": 1}, releases_gil=False)
    rows = sorted(({k: _py(v) for k, v in r.items()} for r in ds.take_all()), key=lambda r: r["id"])
    assert rows == [{"id": i, "y": 3 * i + 1} for i in range(6)]


def test_map_batches_class_constructed_once_with_constructor_args(calls_dir):
    ds = sb.range(40, override_num_blocks=8).map_batches(
        Tagger,
        fn_constructor_args=(str(calls_dir), 5),
        fn_constructor_kwargs={"scale": 2},
        batch_size=5,
        batch_format="numpy",
        concurrency=1, releases_gil=False
    )
    assert _count_calls(calls_dir) == 0  # nothing constructed before execution
    rows = ds.take_all()
    assert sorted((_py(r["id"]), _py(r["y"])) for r in rows) == [(i, 2 * i + 5) for i in range(40)]
    # 8 batches, one worker: a single instance served them all, built exactly once.
    assert len({r["token"] for r in rows}) == 1
    assert _count_calls(calls_dir) == 1


def test_map_batches_class_once_per_worker_with_two_workers(calls_dir):
    ds = sb.range(60, override_num_blocks=12).map_batches(
        Tagger,
        fn_constructor_args=(str(calls_dir), 0),
        batch_size=5,
        batch_format="numpy",
        concurrency=2, releases_gil=False
    )
    rows = ds.take_all()
    assert sorted(_py(r["id"]) for r in rows) == list(range(60))
    tokens = {r["token"] for r in rows}
    constructed = _count_calls(calls_dir)
    # 12 batches but at most 2 instances: never one instance per batch.
    assert 1 <= len(tokens) <= 2
    assert len(tokens) <= constructed <= 2


def test_map_batches_batch_size_exact_within_one_partition():
    ds = sb.range(100, override_num_blocks=1).map_batches(batch_len, batch_size=32, batch_format="numpy", releases_gil=False)
    assert _col(ds, "n") == [4, 32, 32, 32]


def test_map_batches_batch_size_never_exceeded_across_partitions():
    ds = sb.range(100, override_num_blocks=4).map_batches(batch_len, batch_size=10, batch_format="numpy", releases_gil=False)
    lens = _col(ds, "n")
    assert sum(lens) == 100
    assert max(lens) == 10
    # at most one short (remainder) batch per input partition
    assert sum(1 for n in lens if n < 10) <= 4


def test_map_batches_batch_size_larger_than_partitions_is_honored():
    """The batch size a UDF sees is independent of the partition size (DESIGN.md):
    ten 10-row partitions with batch_size=50 give two 50-row batches, as in Ray Data."""
    ds = sb.range(100, override_num_blocks=10).map_batches(batch_len, batch_size=50, batch_format="numpy", releases_gil=False)
    assert _col(ds, "n") == [50, 50]


def test_map_batches_batch_size_none_gives_whole_partition():
    ds = sb.range(30, override_num_blocks=1).map_batches(batch_len, batch_size=None, batch_format="numpy", releases_gil=False)
    assert _col(ds, "n") == [30]


def test_map_batches_pandas_udf_adds_column():
    def with_half(df):
        df = df.copy()
        df["half"] = df["id"] / 2
        return df

    ds = sb.range(4).map_batches(with_half, batch_format="pandas", releases_gil=False)
    out = ds.to_pandas().sort_values("id").reset_index(drop=True)
    assert list(out.columns) == ["id", "half"]
    assert out["half"].tolist() == [0.0, 0.5, 1.0, 1.5]
    assert out["half"].dtype == np.float64


def test_map_batches_chained_stages_compose():
    ds = (
        sb.range(10)
        .map_batches(affine, batch_format="numpy", fn_args=(2,), releases_gil=False)
        .map_batches(lambda t: t.append_column("z", pc.add(t["y"], 1)), batch_format="pyarrow", releases_gil=False)
    )
    rows = sorted(({k: _py(v) for k, v in r.items()} for r in ds.take_all()), key=lambda r: r["id"])
    assert rows == [{"id": i, "y": 2 * i, "z": 2 * i + 1} for i in range(10)]


# --------------------------------------------------------------------------- filter


def test_filter_by_function():
    ds = sb.range(20, override_num_blocks=3).filter(divisible_by_3)
    assert _col(ds, "id") == [0, 3, 6, 9, 12, 15, 18]
    assert ds.count() == 7


def test_filter_by_expression():
    ds = sb.range(20, override_num_blocks=3).filter(expr=pc.field("id") > 15)
    assert _col(ds, "id") == [16, 17, 18, 19]
    assert ds.schema().names == ["id"]


def test_filter_everything_out_gives_empty_dataset():
    ds = sb.range(10).filter(lambda r: False)
    assert ds.count() == 0
    assert ds.take_all() == []


@pytest.mark.parametrize("method", ["filter", "with_column"])
def test_an_expression_that_is_not_pyarrow_fails_at_once_naming_it(method):
    """filter(expr="v > 1") failed in the read task, an ArrowTypeError blamed on user code."""
    ds = sb.from_items([{"v": 1}, {"v": 3}])
    call = (lambda: ds.filter(expr="v > 1")) if method == "filter" else \
        (lambda: ds.with_column("w", "v * 2"))
    with pytest.raises(TypeError, match=rf"{method} expects a pyarrow.compute expression.*str"):
        call()


def test_selecting_a_missing_column_pushed_into_the_read_names_the_columns():
    """Pushed into an in-memory read, Arrow's "Field does not exist" named no columns."""
    with pytest.raises(KeyError, match=r"\['zz'\] not found; available columns: \['a', 'b'\]"):
        sb.from_items([{"a": 1, "b": 2}]).select_columns(["a", "zz"]).take_all()


def test_filter_expression_on_transformed_column():
    ds = sb.range(10).map(add_square).filter(expr=pc.field("sq") >= 49)
    assert _col(ds, "id") == [7, 8, 9]


# ------------------------------------------------------------------------- flat_map


def test_flat_map_expands_and_drops_rows():
    ds = sb.range(5).flat_map(repeat_by_id)
    rows = sorted((_py(r["id"]), _py(r["copy"])) for r in ds.take_all())
    assert rows == [(k, c) for k in range(5) for c in range(k)]
    assert ds.count() == 10


# ---------------------------------------------------------------- column projections


@pytest.fixture
def abc():
    return sb.from_items([{"a": i, "b": 10 * i, "c": f"c{i}"} for i in range(4)])


def test_select_columns_keeps_given_order(abc):
    ds = abc.select_columns(["c", "a"])
    assert ds.schema().names == ["c", "a"]
    rows = sorted(ds.take_all(), key=lambda r: r["c"])
    assert [list(r.keys()) for r in rows] == [["c", "a"]] * 4
    assert [(r["c"], _py(r["a"])) for r in rows] == [(f"c{i}", i) for i in range(4)]


def test_drop_columns(abc):
    ds = abc.drop_columns(["b"])
    assert ds.schema().names == ["a", "c"]
    assert _col(ds, "a") == [0, 1, 2, 3]


def test_rename_columns(abc):
    ds = abc.rename_columns({"a": "x", "c": "name"})
    assert ds.schema().names == ["x", "b", "name"]
    rows = sorted((_py(r["x"]), _py(r["b"]), r["name"]) for r in ds.take_all())
    assert rows == [(i, 10 * i, f"c{i}") for i in range(4)]


def test_add_column_pandas_default(abc):
    ds = abc.add_column("a_plus_b", lambda df: df["a"] + df["b"])
    assert ds.schema().names == ["a", "b", "c", "a_plus_b"]
    assert ds.schema().field("a_plus_b").type == pa.int64()
    assert _col(ds, "a_plus_b") == [0, 11, 22, 33]


def test_add_column_aligns_a_pandas_series_on_the_batch_index():
    """As ``df.loc[:, col] = series`` (and Ray Data's add_column): a reordered Series
    lands on its rows (it was placed by position: y came out sorted beside x), and
    rows it lacks get nulls (it was a length error)."""
    ds = sb.from_items([{"x": v} for v in [3, 1, 2, 7, 5]], override_num_blocks=2)
    assert [(r["x"], r["y"]) for r in ds.add_column("y", lambda df: df["x"].sort_values())
            .take_all()] == [(3, 3), (1, 1), (2, 2), (7, 7), (5, 5)]
    subset = ds.add_column("y", lambda df: df.loc[df["x"] > 2, "x"] * 10).take_all()
    assert [r["y"] for r in subset] == [30.0, None, None, 70.0, 50.0]


def test_add_column_pyarrow_format(abc):
    ds = abc.add_column("twice", lambda t: pc.multiply(t["a"], 2), batch_format="pyarrow")
    assert _col(ds, "twice") == [0, 2, 4, 6]


# ---------------------------------------------------------------------------- limit


def test_limit_returns_exactly_n_distinct_rows():
    ds = sb.range(100, override_num_blocks=5).limit(7)
    vals = _col(ds, "id")
    assert len(vals) == 7
    assert len(set(vals)) == 7
    assert all(0 <= v < 100 for v in vals)
    assert ds.count() == 7


def test_limit_with_preserve_order_takes_the_first_rows(ordered):
    ds = sb.range(100, override_num_blocks=5).map(add_square).limit(7)
    assert [_py(r["id"]) for r in ds.take_all()] == list(range(7))


@pytest.mark.parametrize("consume", ["iter_batches", "write_parquet", "union"])
def test_a_limit_keeps_the_first_rows_whatever_finishes_first(tmp_path, consume):
    """Without preserve_order the limit took rows in completion order: with partition 0
    finishing last, limit(300) of 1000 iterated or written held rows from later
    partitions (take_all, ordered, did not). The limit now reads its input in order."""
    fn = functools.partial(first_partition_last, marker=str(tmp_path / "done"), last_id=999)
    mapped = sb.range(1000, override_num_blocks=8).map(fn)
    expected = list(range(300))
    if consume == "iter_batches":
        got = [int(x) for b in mapped.limit(300).iter_batches(batch_size=64) for x in b["id"]]
    elif consume == "write_parquet":
        mapped.limit(300).write_parquet(str(tmp_path / "out"))
        got = pq.read_table(str(tmp_path / "out"))["id"].to_pylist()
    else:
        both = mapped.limit(300).union(sb.range(5).limit(2))
        got = [int(x) for b in both.iter_batches(batch_size=64) for x in b["id"]]
        expected = sorted(expected + [0, 1])
    assert sorted(got) == expected


def test_limit_zero_and_limit_above_size():
    assert sb.range(10).limit(0).take_all() == []
    assert sb.range(10).limit(1000).count() == 10


def test_limit_after_filter_counts_filtered_rows():
    ds = sb.range(100, override_num_blocks=4).filter(expr=pc.field("id") >= 90).limit(5)
    vals = _col(ds, "id")
    assert len(vals) == 5 and all(90 <= v < 100 for v in vals)


# ---------------------------------------------------------------------------- union


def test_union_of_several_datasets():
    ds = sb.range(5).union(sb.from_items([{"id": 100}]), sb.range(3))
    assert _col(ds, "id") == [0, 0, 1, 1, 2, 2, 3, 4, 100]
    assert ds.count() == 9


def test_union_of_transformed_datasets():
    left = sb.range(4).map(lambda r: {"id": r["id"] + 10})
    right = sb.range(6).filter(expr=pc.field("id") >= 4)
    assert _col(left.union(right), "id") == [4, 5, 10, 11, 12, 13]


# ----------------------------------------------------------------------- repartition


def _part_files(out_dir):
    return sorted(n for n in os.listdir(out_dir) if n.startswith("part-") and n.endswith(".parquet"))


@pytest.mark.parametrize("blocks,n", [(2, 5), (6, 1), (3, 3)])
def test_repartition_gives_n_partitions_and_all_rows(tmp_path, blocks, n):
    out = tmp_path / "out"
    sb.range(100, override_num_blocks=blocks).repartition(n).write_parquet(str(out))
    files = _part_files(out)
    assert len(files) == n
    got = sorted(v for f in files for v in pq.read_table(str(out / f)).column("id").to_pylist())
    assert got == list(range(100))


def test_repartition_then_whole_partition_batches():
    ds = sb.range(100, override_num_blocks=1).repartition(4).map_batches(
        batch_len, batch_size=None, batch_format="numpy", releases_gil=False
    )
    lens = _col(ds, "n")
    assert len(lens) == 4
    assert sum(lens) == 100
    assert all(n > 0 for n in lens)


@pytest.mark.parametrize("batch_format", ["numpy", "pandas"])
def test_a_map_column_passed_through_a_batch_keeps_its_type(batch_format):
    """Arrow map columns (common in parquet) come to numpy/pandas as lists of (key,
    value) tuples; returned as they are, no row rule reads them as a map (a
    RowConversionError): a column the UDF passed through keeps the type it came with."""
    kind = pa.map_(pa.string(), pa.int64())
    table = pa.table({"id": [1, 2, 3], "m": pa.array([[("a", 1)], [], None], kind)})

    def touch(batch):
        batch["id"] = batch["id"] * 10
        return batch

    out = sb.from_arrow(table).map_batches(touch, batch_format=batch_format)
    assert out.take_all() == [{"id": 10, "m": [("a", 1)]}, {"id": 20, "m": []},
                              {"id": 30, "m": None}]
    assert out.schema().field("m").type == kind
    with pytest.raises(sb.RowConversionError, match="for key 'm"):  # values it cannot hold
        sb.from_arrow(table).map_batches(
            lambda b: {"id": b["id"], "m": [[("a", "x")], [1], None]},
            batch_format=batch_format).take_all()


@pytest.mark.parametrize("kind,values", [
    (pa.map_(pa.string(), pa.int64()), [[("a", 1.5)], [], None]),  # pyarrow truncates 1.5
    (pa.struct([("a", pa.int64())]), [{"a": 1, "b": [1]}, {"a": 2, "b": 2}, None]),  # drops b
    (pa.timestamp("us"), [__import__("datetime").datetime(2024, 1, 2), 7, None]),  # 7 s
])
def test_a_passed_through_column_is_kept_only_where_its_values_hold_as_they_are(kind, values):
    table = pa.table({"id": [1, 2, 3], "c": pa.nulls(3, kind)})
    ds = sb.from_arrow(table).map_batches(lambda b: {"id": b["id"], "c": values},
                                          batch_format="numpy")
    with pytest.raises(sb.RowConversionError, match="for key 'c"):
        ds.take_all()
