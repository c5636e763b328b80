"""Sources: range, from_items, from_arrow/pandas/polars/numpy, read_parquet.

Every source is lazy; these tests consume each one and check the exact rows,
column names and types that come out.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import streambatch as sb


def _py(v):
    """numpy scalar -> python scalar (exact, readable comparisons)."""
    return v.item() if isinstance(v, np.generic) else v


def _rows(ds, key):
    """All rows of ``ds`` as plain dicts, sorted by ``key``."""
    rows = [{k: _py(v) for k, v in r.items()} for r in ds.take_all()]
    return sorted(rows, key=lambda r: r[key])


def _part_files(out_dir):
    return sorted(n for n in os.listdir(out_dir) if n.startswith("part-") and n.endswith(".parquet"))


# --------------------------------------------------------------------------- range


def test_range_rows_schema_and_count():
    ds = sb.range(10)
    assert _rows(ds, "id") == [{"id": i} for i in range(10)]
    assert ds.count() == 10
    schema = ds.schema()
    assert isinstance(schema, pa.Schema)
    assert schema.names == ["id"]
    assert schema.field("id").type == pa.int64()


def test_range_zero_rows():
    ds = sb.range(0)
    assert ds.count() == 0
    assert ds.take_all() == []


def test_range_override_num_blocks_splits_rows_across_partitions(tmp_path):
    out = tmp_path / "out"
    sb.range(10, override_num_blocks=3).write_parquet(str(out))
    files = _part_files(out)
    assert len(files) == 3
    counts = [pq.read_metadata(str(out / f)).num_rows for f in files]
    assert sum(counts) == 10 and all(c > 0 for c in counts)
    got = sorted(v for f in files for v in pq.read_table(str(out / f)).column("id").to_pylist())
    assert got == list(range(10))


# ------------------------------------------------------------------------ from_items


def test_from_items_dicts_keep_columns_and_types():
    items = [{"a": i, "b": f"s{i}", "c": i / 2} for i in range(6)]
    ds = sb.from_items(items)
    assert _rows(ds, "a") == items
    schema = ds.schema()
    assert schema.names == ["a", "b", "c"]
    assert schema.field("a").type == pa.int64()
    assert schema.field("c").type == pa.float64()
    assert pa.types.is_string(schema.field("b").type) or pa.types.is_large_string(
        schema.field("b").type
    )


@pytest.mark.parametrize(
    "items",
    [[3, 1, 2], ["x", "z", "y"], [1.5, -2.0, 0.25]],
    ids=["ints", "strings", "floats"],
)
def test_from_items_non_dict_items_become_item_column(items):
    ds = sb.from_items(items)
    assert ds.schema().names == ["item"]
    assert sorted(_py(r["item"]) for r in ds.take_all()) == sorted(items)


def test_from_items_preserve_order_and_override_num_blocks(ordered):
    items = [{"k": (i * 7) % 11} for i in range(11)]
    ds = sb.from_items(items, override_num_blocks=4)
    assert [{"k": _py(r["k"])} for r in ds.take_all()] == items


# ------------------------------------------------------------------------ from_arrow


def test_from_arrow_table_keeps_types():
    table = pa.table(
        {
            "i32": pa.array([3, 1, 2], pa.int32()),
            "f32": pa.array([0.5, 1.5, 2.5], pa.float32()),
            "s": pa.array(["c", "a", "b"], pa.string()),
        }
    )
    ds = sb.from_arrow(table)
    out = ds.to_arrow()
    assert out.schema.field("i32").type == pa.int32()
    assert out.schema.field("f32").type == pa.float32()
    assert out.sort_by("i32").to_pylist() == table.sort_by("i32").to_pylist()


def test_from_arrow_list_of_tables_concatenates():
    t1 = pa.table({"x": [1, 2]})
    t2 = pa.table({"x": [3, 4, 5]})
    ds = sb.from_arrow([t1, t2])
    assert ds.count() == 5
    assert _rows(ds, "x") == [{"x": i} for i in range(1, 6)]


# ----------------------------------------------------------------------- from_pandas


def test_from_pandas_dataframe_round_trips():
    df = pd.DataFrame({"a": [3, 1, 2], "f": [0.5, 1.5, 2.5], "s": ["c", "a", "b"]})
    ds = sb.from_pandas(df)
    schema = ds.schema()
    assert schema.field("a").type == pa.int64()
    assert schema.field("f").type == pa.float64()
    out = ds.to_pandas().sort_values("a").reset_index(drop=True)
    assert list(out.columns) == ["a", "f", "s"]
    assert out["a"].tolist() == [1, 2, 3]
    assert out["f"].tolist() == [1.5, 2.5, 0.5]
    assert out["s"].tolist() == ["a", "b", "c"]
    assert out["a"].dtype == np.int64


def test_from_pandas_list_of_dataframes_concatenates():
    dfs = [pd.DataFrame({"a": [i, i + 10]}) for i in range(3)]
    ds = sb.from_pandas(dfs)
    assert ds.count() == 6
    assert sorted(_py(r["a"]) for r in ds.take_all()) == [0, 1, 2, 10, 11, 12]


def test_from_pandas_warns_when_it_drops_a_named_index():
    """The index is dropped, as Ray Data drops it; a named one usually holds ids, so the
    user is told and what to do (reset_index) instead of losing it silently."""
    df = pd.DataFrame({"a": [1, 2]}, index=pd.Index([5, 6], name="user_id"))
    with pytest.warns(UserWarning, match=r"index \['user_id'\] is dropped.*reset_index"):
        ds = sb.from_pandas(df)
    assert ds.take_all() == [{"a": 1}, {"a": 2}]
    assert sb.from_pandas(df.reset_index()).take_all()[0] == {"user_id": 5, "a": 1}


# ----------------------------------------------------------------------- from_polars


def test_from_polars_dataframe_round_trips():
    df = pl.DataFrame({"a": [3, 1, 2], "s": ["c", "a", "b"]})
    ds = sb.from_polars(df)
    out = ds.to_polars().sort("a")
    assert isinstance(out, pl.DataFrame)
    assert out.columns == ["a", "s"]
    assert out["a"].to_list() == [1, 2, 3]
    assert out["s"].to_list() == ["a", "b", "c"]
    assert out["a"].dtype == pl.Int64


def test_from_polars_list_of_dataframes_concatenates():
    ds = sb.from_polars([pl.DataFrame({"a": [1, 2]}), pl.DataFrame({"a": [3]})])
    assert ds.count() == 3
    assert _rows(ds, "a") == [{"a": 1}, {"a": 2}, {"a": 3}]


# ------------------------------------------------------------------------ from_numpy


def test_from_numpy_1d_gives_data_column():
    arr = np.array([5, 3, 9], dtype=np.int64)
    ds = sb.from_numpy(arr)
    schema = ds.schema()
    assert schema.names == ["data"]
    assert schema.field("data").type == pa.int64()
    assert sorted(_py(r["data"]) for r in ds.take_all()) == [3, 5, 9]


def test_from_numpy_2d_gives_fixed_shape_tensor_column(ordered):
    arr = np.arange(12, dtype=np.int64).reshape(4, 3)
    ds = sb.from_numpy(arr)
    field_type = ds.schema().field("data").type
    assert isinstance(field_type, pa.FixedShapeTensorType), field_type
    assert list(field_type.shape) == [3]
    assert field_type.value_type == pa.int64()

    batches = list(ds.iter_batches(batch_size=4, batch_format="numpy"))
    assert len(batches) == 1
    data = batches[0]["data"]
    assert isinstance(data, np.ndarray)
    assert data.shape == (4, 3)
    np.testing.assert_array_equal(data, arr)


def test_from_numpy_3d_keeps_per_row_shape(ordered):
    arr = np.arange(2 * 2 * 3, dtype=np.float32).reshape(2, 2, 3)
    ds = sb.from_numpy(arr)
    field_type = ds.schema().field("data").type
    assert isinstance(field_type, pa.FixedShapeTensorType)
    assert list(field_type.shape) == [2, 3]
    assert field_type.value_type == pa.float32()
    table = ds.to_arrow()
    np.testing.assert_array_equal(table.column("data").combine_chunks().to_numpy_ndarray(), arr)


def test_from_numpy_list_of_arrays_concatenates(ordered):
    parts = [np.arange(6).reshape(2, 3), np.arange(6, 12).reshape(2, 3)]
    ds = sb.from_numpy(parts)
    assert ds.count() == 4
    batch = next(iter(ds.iter_batches(batch_size=10, batch_format="numpy")))
    np.testing.assert_array_equal(batch["data"], np.arange(12).reshape(4, 3))


# ---------------------------------------------------------------------- read_parquet


@pytest.fixture
def parquet_dir(tmp_path):
    """Three parquet files: part_a1 (a=0..3), part_a2 (a=4..7), other_b (a=100..101)."""
    d = tmp_path / "pq"
    d.mkdir()
    pq.write_table(pa.table({"a": list(range(0, 4)), "b": [f"x{i}" for i in range(0, 4)]}),
                   str(d / "part_a1.parquet"))
    pq.write_table(pa.table({"a": list(range(4, 8)), "b": [f"x{i}" for i in range(4, 8)]}),
                   str(d / "part_a2.parquet"))
    pq.write_table(pa.table({"a": [100, 101], "b": ["y100", "y101"]}),
                   str(d / "other_b.parquet"))
    return d


def test_read_parquet_single_file(parquet_dir):
    ds = sb.read_parquet(str(parquet_dir / "part_a1.parquet"))
    assert ds.schema().names == ["a", "b"]
    assert ds.schema().field("a").type == pa.int64()
    assert _rows(ds, "a") == [{"a": i, "b": f"x{i}"} for i in range(4)]


def test_read_parquet_columns_projects(parquet_dir):
    ds = sb.read_parquet(str(parquet_dir / "part_a1.parquet"), columns=["b"])
    assert ds.schema().names == ["b"]
    rows = ds.take_all()
    assert all(list(r.keys()) == ["b"] for r in rows)
    assert sorted(r["b"] for r in rows) == ["x0", "x1", "x2", "x3"]


def test_read_parquet_filter_expression(parquet_dir):
    ds = sb.read_parquet(str(parquet_dir / "part_a2.parquet"), filter=pc.field("a") > 5)
    assert _rows(ds, "a") == [{"a": 6, "b": "x6"}, {"a": 7, "b": "x7"}]
    assert ds.count() == 2


def test_read_parquet_filter_on_column_not_selected(parquet_dir):
    ds = sb.read_parquet(
        str(parquet_dir / "part_a1.parquet"), columns=["b"], filter=pc.field("a") >= 2
    )
    rows = ds.take_all()
    assert ds.schema().names == ["b"]
    assert sorted(r["b"] for r in rows) == ["x2", "x3"]


def test_read_parquet_directory_reads_every_file(parquet_dir):
    ds = sb.read_parquet(str(parquet_dir))
    assert ds.count() == 10
    assert sorted(_py(r["a"]) for r in ds.take_all()) == list(range(8)) + [100, 101]


def test_read_parquet_glob_reads_only_matching_files(parquet_dir):
    ds = sb.read_parquet(str(parquet_dir / "part_a*.parquet"))
    assert sorted(_py(r["a"]) for r in ds.take_all()) == list(range(8))


def test_read_parquet_list_of_paths(parquet_dir):
    ds = sb.read_parquet([str(parquet_dir / "part_a2.parquet"), str(parquet_dir / "other_b.parquet")])
    assert sorted(_py(r["a"]) for r in ds.take_all()) == [4, 5, 6, 7, 100, 101]


def test_read_parquet_directory_with_filter_and_columns(parquet_dir):
    ds = sb.read_parquet(str(parquet_dir), columns=["a"], filter=pc.field("a") >= 7)
    assert ds.schema().names == ["a"]
    assert sorted(_py(r["a"]) for r in ds.take_all()) == [7, 100, 101]


def test_read_parquet_missing_path_error_names_the_path(tmp_path):
    missing = str(tmp_path / "no_such_dir" / "data.parquet")
    with pytest.raises(FileNotFoundError) as info:
        sb.read_parquet(missing).take_all()
    assert missing in str(info.value)


def test_read_parquet_missing_path_in_list_names_that_path(parquet_dir, tmp_path):
    missing = str(tmp_path / "gone.parquet")
    with pytest.raises(FileNotFoundError) as info:
        sb.read_parquet([str(parquet_dir / "part_a1.parquet"), missing]).take_all()
    assert missing in str(info.value)


def test_from_items_keeps_the_items_as_they_were_given():
    """Ray Data converts the items at from_items; the dicts were read only when the job
    ran, so a caller that changed or reused them changed the dataset silently."""
    items = [{"id": i, "v": i, "x": np.arange(3) + i} for i in range(5000)]
    ds = sb.from_items(items, override_num_blocks=3)
    for row in items:
        row["v"] = -1
        row.pop("id")
        row["x"][:] = 0
    rows = ds.take_all()
    assert [(r["id"], r["v"], r["x"].tolist()) for r in rows] == \
        [(i, i, [i, i + 1, i + 2]) for i in range(5000)]
    assert ds.count() == 5000 and ds.take_all()[4999]["v"] == 4999  # every run alike


def test_from_items_reads_every_item_once_across_snapshot_chunks():
    items = [{"i": i} for i in range(9000)]  # more than two of the snapshot's chunks
    for blocks in (1, 5, 7):
        got = [r["i"] for r in sb.from_items(items, override_num_blocks=blocks).take_all()]
        assert got == list(range(9000))
    assert sb.from_items([]).count() == 0
    assert sb.from_items(items).limit(4097).count() == 4097


def test_from_pandas_makes_a_column_of_arrays_a_tensor_as_ray_data_does():
    """(Arrow's own conversion made it list<double>: numpy batches were object arrays.)"""
    df = pd.DataFrame({"id": [1, 2, 3], "emb": [np.full(4, i, np.float32) for i in range(3)],
                       "s": ["a", None, "c"]})
    batch = sb.from_pandas(df).take_batch(3)
    assert batch["emb"].shape == (3, 4) and batch["emb"].dtype == np.float32
    assert batch["emb"][:, 0].tolist() == [0.0, 1.0, 2.0] and batch["s"].tolist() == ["a", None, "c"]
    assert sb.from_pandas(pd.DataFrame({"x": [1, 2]})).take_all() == [{"x": 1}, {"x": 2}]
