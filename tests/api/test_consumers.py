"""Consumers: iter_batches, iter_rows, take, take_all, count, schema, to_*,
write_parquet, materialize, stats, explain.
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Mapping

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


def _touch(directory):
    with open(os.path.join(directory, f"call-{os.getpid()}-{uuid.uuid4().hex}"), "w") as fh:
        fh.write("1")


def _count_calls(directory):
    return sum(1 for n in os.listdir(directory) if n.startswith("call-"))


def _part_files(out_dir):
    return sorted(n for n in os.listdir(out_dir) if n.startswith("part-") and n.endswith(".parquet"))


def _batch_ids(batch):
    """The id column of a batch of any format, as a python list."""
    if isinstance(batch, pa.Table):
        return batch.column("id").to_pylist()
    if isinstance(batch, pd.DataFrame):
        return batch["id"].tolist()
    if isinstance(batch, pl.DataFrame):
        return batch["id"].to_list()
    return np.asarray(batch["id"]).tolist()


# ---------------------------------------------------------------------- UDFs (module level)


def mark_row(row, calls_dir):
    _touch(calls_dir)
    return {"id": row["id"], "v": row["id"] * 10}


def mark_row_free(row):
    return {"id": row["id"], "v": row["id"] * 10}


def is_even(row):
    return row["id"] % 2 == 0


class Doubler:
    def __call__(self, batch):
        return {"id": batch["id"], "dbl": batch["id"] * 2}


def plus_one_batch(batch):
    return batch.append_column("p1", pc.add(batch["id"], 1))


# -------------------------------------------------------------------------- iter_batches


def test_iter_batches_sizes_are_exact_across_partitions():
    ds = sb.range(100, override_num_blocks=7)
    batches = list(ds.iter_batches(batch_size=16, batch_format="pyarrow"))
    assert [b.num_rows for b in batches] == [16] * 6 + [4]
    assert sorted(v for b in batches for v in b.column("id").to_pylist()) == list(range(100))


def test_iter_batches_drop_last_drops_only_the_remainder():
    ds = sb.range(100, override_num_blocks=7)
    batches = list(ds.iter_batches(batch_size=16, drop_last=True, batch_format="pyarrow"))
    assert [b.num_rows for b in batches] == [16] * 6
    got = [v for b in batches for v in b.column("id").to_pylist()]
    assert len(set(got)) == 96 and set(got) <= set(range(100))


def test_iter_batches_batch_size_larger_than_dataset():
    batches = list(sb.range(10, override_num_blocks=3).iter_batches(batch_size=64, batch_format="pyarrow"))
    assert [b.num_rows for b in batches] == [10]
    assert list(sb.range(10).iter_batches(batch_size=64, drop_last=True, batch_format="pyarrow")) == []


def test_iter_batches_preserve_order(ordered):
    ds = sb.range(50, override_num_blocks=5).map(lambda r: {"id": r["id"]})
    got = [v for b in ds.iter_batches(batch_size=7, batch_format="pyarrow") for v in b.column("id").to_pylist()]
    assert got == list(range(50))


@pytest.mark.parametrize(
    "fmt,expected_type",
    [("pyarrow", pa.Table), ("pandas", pd.DataFrame), ("polars", pl.DataFrame), ("numpy", dict)],
)
def test_iter_batches_format_types(fmt, expected_type):
    ds = sb.range(20, override_num_blocks=2)
    batches = list(ds.iter_batches(batch_size=8, batch_format=fmt))
    assert all(isinstance(b, expected_type) for b in batches)
    if fmt == "numpy":
        assert all(isinstance(b["id"], np.ndarray) and b["id"].dtype == np.int64 for b in batches)
    assert [len(_batch_ids(b)) for b in batches] == [8, 8, 4]
    assert sorted(v for b in batches for v in _batch_ids(b)) == list(range(20))


def test_iter_batches_default_format_is_pyarrow():
    batches = list(sb.range(5).iter_batches(batch_format="pyarrow"))
    assert len(batches) == 1 and isinstance(batches[0], pa.Table)
    assert batches[0].schema.field("id").type == pa.int64()


# ----------------------------------------------------------------------- rows and take


def test_iter_rows_yields_every_row_as_mapping():
    rows = list(sb.range(15, override_num_blocks=3).map(mark_row_free).iter_rows())
    assert all(isinstance(r, Mapping) for r in rows)
    assert sorted((_py(r["id"]), _py(r["v"])) for r in rows) == [(i, i * 10) for i in range(15)]


def test_take_returns_n_distinct_rows():
    rows = sb.range(100, override_num_blocks=4).take(5)
    vals = [_py(r["id"]) for r in rows]
    assert len(vals) == 5 and len(set(vals)) == 5 and all(0 <= v < 100 for v in vals)


def test_take_default_is_20():
    assert len(sb.range(100).take()) == 20


def test_take_more_than_available_returns_everything():
    rows = sb.range(3).take(50)
    assert sorted(_py(r["id"]) for r in rows) == [0, 1, 2]


def test_take_with_preserve_order_is_the_prefix(ordered):
    rows = sb.range(100, override_num_blocks=4).take(5)
    assert [dict(r) for r in rows] == [{"id": i} for i in range(5)]


def test_take_all_returns_every_row():
    rows = sb.from_items([{"k": f"r{i}", "v": i} for i in range(30)], override_num_blocks=3).take_all()
    assert sorted((r["k"], _py(r["v"])) for r in rows) == sorted((f"r{i}", i) for i in range(30))


def test_count_after_transforms():
    assert sb.range(37, override_num_blocks=4).count() == 37
    assert sb.range(37, override_num_blocks=4).filter(is_even).count() == 19
    assert sb.range(5).flat_map(lambda r: [r, r, r]).count() == 15


# ------------------------------------------------------------------------------ schema


def test_schema_of_source_and_of_transformed_dataset():
    ds = sb.from_items([{"i": 1, "f": 0.5, "s": "a", "b": True}])
    schema = ds.schema()
    assert isinstance(schema, pa.Schema)
    assert schema.names == ["i", "f", "s", "b"]
    assert schema.field("i").type == pa.int64()
    assert schema.field("f").type == pa.float64()
    assert schema.field("b").type == pa.bool_()
    assert pa.types.is_string(schema.field("s").type) or pa.types.is_large_string(schema.field("s").type)

    mapped = sb.range(4).map_batches(lambda t: pa.table({"x": pc.cast(t["id"], pa.float32())}), batch_format="pyarrow", releases_gil=False)
    assert mapped.schema().names == ["x"]
    assert mapped.schema().field("x").type == pa.float32()


# ----------------------------------------------------------------------------- to_*


def test_to_arrow():
    t = sb.range(25, override_num_blocks=3).map(mark_row_free).to_arrow()
    assert isinstance(t, pa.Table)
    assert t.num_rows == 25
    assert t.schema.field("id").type == pa.int64() and t.schema.field("v").type == pa.int64()
    assert sorted(t.column("v").to_pylist()) == [10 * i for i in range(25)]


def test_to_pandas():
    df = sb.from_items([{"a": i, "f": i / 4} for i in range(8)], override_num_blocks=2).to_pandas()
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == ["a", "f"]
    assert df["a"].dtype == np.int64 and df["f"].dtype == np.float64
    assert sorted(df["a"].tolist()) == list(range(8))
    assert len(df) == 8



def test_to_pandas_gives_tensor_cells_as_arrays_as_take_batch_does():
    """A ragged tensor column, and one whose shape differs between blocks (padded per
    batch): each cell an n-d array (to_pandas gave {'data': ..., 'shape': ...} dicts)."""
    ragged = sb.range(3, override_num_blocks=1).map(lambda r: {"x": np.arange(r["id"] + 1)})
    cells = ragged.to_pandas()["x"]
    assert [c.tolist() for c in cells] == [[0], [0, 1], [0, 1, 2]]
    assert [c.tolist() for c in cells] == \
        [c.tolist() for c in ragged.take_batch(3, batch_format="pandas")["x"]]
    padded = sb.range(4, override_num_blocks=2).map_batches(
        lambda b: {"x": np.ones((len(b["id"]), int(b["id"][0]) + 1))})
    assert [c.shape for c in padded.to_pandas()["x"]] == [(1,), (1,), (3,), (3,)]


def test_to_polars():
    df = sb.range(12, override_num_blocks=3).to_polars()
    assert isinstance(df, pl.DataFrame)
    assert df.columns == ["id"]
    assert df["id"].dtype == pl.Int64
    assert sorted(df["id"].to_list()) == list(range(12))


def test_to_arrow_of_empty_result_keeps_schema():
    t = sb.range(10).filter(expr=pc.field("id") > 100).to_arrow()
    assert t.num_rows == 0
    assert t.schema.names == ["id"]


# ------------------------------------------------------------------------- write_parquet


def test_write_parquet_one_file_per_partition_and_success_marker(tmp_path):
    out = tmp_path / "out"
    sb.range(100, override_num_blocks=4).write_parquet(str(out))
    files = _part_files(out)
    assert len(files) == 4
    assert (out / "_SUCCESS").is_file()
    assert set(os.listdir(out)) == set(files) | {"_SUCCESS", "_manifest.jsonl"}
    tables = [pq.read_table(str(out / f)) for f in files]
    assert all(t.schema.field("id").type == pa.int64() for t in tables)
    assert sorted(v for t in tables for v in t.column("id").to_pylist()) == list(range(100))


def test_write_parquet_round_trips_through_read_parquet(tmp_path):
    items = [{"i": i, "f": i / 8, "s": f"s{i}", "b": i % 2 == 0} for i in range(40)]
    src = sb.from_items(items, override_num_blocks=3).map(lambda r: {**r, "i2": r["i"] * 2})
    out = tmp_path / "rt"
    src.write_parquet(str(out))
    assert (out / "_SUCCESS").is_file()
    assert len(_part_files(out)) == 3

    back = sb.read_parquet(str(out))
    got = sorted(({k: _py(v) for k, v in r.items()} for r in back.take_all()), key=lambda r: r["i"])
    assert got == [{**r, "i2": r["i"] * 2} for r in items]
    assert back.schema().names == ["i", "f", "s", "b", "i2"]
    assert back.schema().field("i2").type == pa.int64()
    assert back.schema().field("b").type == pa.bool_()


def test_write_parquet_after_filter_writes_only_kept_rows(tmp_path):
    out = tmp_path / "even"
    sb.range(30, override_num_blocks=3).filter(is_even).write_parquet(str(out))
    files = _part_files(out)
    assert files and (out / "_SUCCESS").is_file()
    got = sorted(v for f in files for v in pq.read_table(str(out / f)).column("id").to_pylist())
    assert got == list(range(0, 30, 2))


# --------------------------------------------------------------------------- materialize


def test_transforms_are_lazy_until_consumed(calls_dir):
    ds = sb.range(6).map(functools.partial(mark_row, calls_dir=str(calls_dir)))
    ds2 = ds.filter(is_even).limit(3)
    assert _count_calls(calls_dir) == 0
    assert sorted(_py(r["id"]) for r in ds2.take_all()) == [0, 2, 4]
    # rows 0, 2 and 4 had to be mapped; no row is mapped twice
    assert 3 <= _count_calls(calls_dir) <= 6


def test_materialize_executes_once(calls_dir):
    ds = sb.range(12, override_num_blocks=3).map(functools.partial(mark_row, calls_dir=str(calls_dir)))
    assert _count_calls(calls_dir) == 0
    m = ds.materialize()
    assert isinstance(m, sb.Dataset)
    assert _count_calls(calls_dir) == 12

    assert m.count() == 12
    assert sorted(_py(r["v"]) for r in m.take_all()) == [10 * i for i in range(12)]
    assert m.to_arrow().num_rows == 12
    assert sum(b.num_rows for b in m.iter_batches(batch_size=5, batch_format="pyarrow")) == 12
    assert sorted(_py(r["id"]) for r in m.map(lambda r: {"id": r["id"] + 1}).take_all()) == list(
        range(1, 13)
    )
    assert _count_calls(calls_dir) == 12  # none of the five consumptions re-ran the map


def test_materialize_keeps_input_order(tmp_path):
    """take/take_all give input order; a materialized dataset kept its blocks in
    completion order (take(5) gave 250..254 when the first partition ended last)."""
    fn = functools.partial(first_partition_last, marker=str(tmp_path / "last-done"),
                           last_id=999)
    m = sb.range(1000, override_num_blocks=8).map(fn).materialize()
    assert (tmp_path / "last-done").exists()
    assert [_py(r["id"]) for r in m.take(5)] == [0, 1, 2, 3, 4]
    assert [_py(r["id"]) for r in m.take_all()] == list(range(1000))


# --------------------------------------------------------------------------------- stats


STAGE_FIELDS = (
    "name", "rows_in", "rows_out", "tasks", "task_time_s", "wall_time_s", "bytes_out",
    "backpressure_time_s",
)


def test_stats_report_row_counts_per_stage(budget):
    ds = (
        sb.range(100, override_num_blocks=4)
        .filter(is_even)
        .map_batches(Doubler, batch_size=10, batch_format="numpy", concurrency=1, releases_gil=False)
    )
    m = ds.materialize()
    st = m.stats()
    assert st.stages, "no stages recorded"
    for s in st.stages:
        for f in STAGE_FIELDS:
            assert hasattr(s, f), f"StageStats lacks {f}"
        assert s.tasks >= 1
        assert s.task_time_s >= 0 and s.wall_time_s >= 0 and s.backpressure_time_s >= 0
        assert s.rows_out >= 0 and s.bytes_out >= 0

    last = st.stages[-1]
    assert last.rows_out == 50
    assert last.bytes_out > 0

    doubler = [s for s in st.stages if "Doubler" in s.name]
    filt = [s for s in st.stages if "is_even" in s.name]
    assert len(doubler) == 1 and len(filt) == 1, [s.name for s in st.stages]
    assert doubler[0].rows_out == 50
    assert filt[0].rows_out == 50
    if doubler[0] is not filt[0]:
        assert doubler[0].rows_in == 50

    assert st.memory_budget == budget
    assert isinstance(st.peak_buffered_bytes, int) and st.peak_buffered_bytes >= 0
    report = str(st)
    assert "Doubler" in report and "is_even" in report


def test_stats_of_materialized_dataset_survive_consuming_it():
    """As in Ray Data: a MaterializedDataset's stats() describe how it was produced,
    also after it has been consumed (count/take_all read the held blocks)."""
    m = sb.range(40, override_num_blocks=4).filter(is_even).materialize()
    assert m.count() == 20
    assert len(m.take_all()) == 20
    st = m.stats()
    filt = [s for s in st.stages if "is_even" in s.name]
    assert len(filt) == 1, [s.name for s in st.stages]
    assert filt[0].rows_out == 20


def test_stats_single_stage_counts_all_rows():
    m = sb.range(30, override_num_blocks=3).map(mark_row_free).materialize()
    st = m.stats()
    assert st.stages[-1].rows_out == 30
    assert sum(s.tasks for s in st.stages) >= 3  # one task per input partition at least
    assert any("mark_row_free" in s.name for s in st.stages), [s.name for s in st.stages]


# ------------------------------------------------------------------------------- explain


def test_explain_names_operators_and_does_not_execute(capsys, calls_dir):
    ds = (
        sb.range(10)
        .map(functools.partial(mark_row, calls_dir=str(calls_dir)))
        .filter(expr=pc.field("id") > 2)
        .map_batches(plus_one_batch, batch_format="pyarrow", releases_gil=False)
        .limit(3)
    )
    text = ds.explain()
    printed = capsys.readouterr().out
    assert isinstance(text, str) and text.strip()
    assert text.strip() in printed
    lower = text.lower()
    for word in ("logical", "optimized", "physical", "filter", "limit", "plus_one_batch"):
        assert word in lower, f"{word!r} missing from explain():\n{text}"
    assert _count_calls(calls_dir) == 0


def test_ray_datas_keyword_names_for_limit_and_to_pandas():
    ds = sb.range(10, override_num_blocks=3)
    assert ds.limit(limit=4).count() == 4
    assert ds.to_pandas(limit=10)["id"].tolist() == list(range(10))
    with pytest.raises(ValueError, match="more than limit=9 rows"):
        ds.to_pandas(limit=9)


@pytest.mark.parametrize("consume", [lambda ds: ds.take(3), lambda ds: ds.take_batch(3)])
def test_take_and_take_batch_leave_the_runs_stats(consume):
    ds = sb.range(100, override_num_blocks=4).map(lambda r: {"id": r["id"] + 1})
    consume(ds)
    st = ds.stats()  # (take_batch left None)
    assert st is not None and st.stages[-1].rows_out == 3  # (the limit: it showed 0)
