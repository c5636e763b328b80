"""Parquet: pushdown proven by counting bytes read, lazy footers, schema unification,
estimates; plus tensor / pandas / polars interop and from_torch."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.local import LocalFileSystem
from streambatch.connectors import parquet as pqmod
from streambatch.connectors.datasource import Pushdowns
from streambatch.connectors.file_based import MAX_FILES_PER_TASK

import streambatch as sb


class CountingFS(LocalFileSystem):
    """The local filesystem, counting the bytes read and the files opened (in this process)."""

    bytes_read = 0
    opened: set = set()

    def _open(self, path, mode="rb", **kwargs):
        handle = super()._open(path, mode, **kwargs)
        if "r" in mode:
            CountingFS.opened.add(path)
            read = handle.read

            def counted(*args):
                data = read(*args)
                CountingFS.bytes_read += len(data)
                return data

            handle.read = counted
        return handle

    @classmethod
    def reset(cls):
        cls.bytes_read, cls.opened = 0, set()


def threads():
    """Run every stage on threads so the counters see all reads."""
    ctx = sb.DataContext.get_current()
    ctx.execution_options.local = sb.LocalOptions(worker_mode="threads")


@pytest.fixture
def wide(tmp_path):
    """One file, 20 float columns + a sorted id, 8 row groups of 5,000 rows."""
    n = 40_000
    rng = np.random.default_rng(0)
    cols = {"id": np.arange(n)} | {f"c{i}": rng.random(n) for i in range(20)}
    path = tmp_path / "wide.parquet"
    pq.write_table(pa.table(cols), str(path), row_group_size=5_000, compression="none")
    return str(path)


@pytest.fixture
def counting():
    threads()
    CountingFS.reset()
    yield CountingFS(skip_instance_cache=True)
    sb.DataContext.get_current().execution_options.local = sb.LocalOptions()


def read_bytes(path, fs, **kwargs) -> tuple[int, pa.Table]:
    CountingFS.reset()
    table = sb.read_parquet(path, filesystem=fs, **kwargs).to_arrow()
    return CountingFS.bytes_read, table


def test_projection_pushdown_reads_a_fraction_of_the_bytes(wide, counting):
    full, all_cols = read_bytes(wide, counting)
    proj, two = read_bytes(wide, counting, columns=["id", "c3"])
    assert all_cols.num_rows == two.num_rows == 40_000 and two.column_names == ["id", "c3"]
    assert full > 40_000 * 21 * 8 * 0.9          # every column was read
    assert proj < full * 0.2                       # 2 of 21 columns (+ footers)


def test_filter_pushdown_skips_row_groups_by_statistics(wide, counting):
    full, _ = read_bytes(wide, counting, columns=["id", "c1"])
    sel, table = read_bytes(wide, counting, columns=["id", "c1"], filter=pc.field("id") < 1000)
    assert sorted(table["id"].to_pylist()) == list(range(1000))
    assert sel < full * 0.3                        # 1 of 8 row groups opened


def test_filter_from_the_dataset_api_is_pushed_into_the_read(wide, counting):
    full, _ = read_bytes(wide, counting, columns=["id"])
    CountingFS.reset()
    ds = sb.read_parquet(wide, filesystem=counting).select_columns(["id"]).filter(
        expr=pc.field("id") >= 35_000)
    assert "filter=" in ds.explain() and ds.count() == 5_000
    assert CountingFS.bytes_read < full * 0.3


def test_many_files_footers_are_read_by_tasks_not_before(tmp_path, counting):
    """2,000 files: making the tasks opens 1 footer; the first batch arrives after a few files."""
    d = tmp_path / "many"
    d.mkdir()
    for i in range(2000):
        pq.write_table(pa.table({"id": [i], "x": [float(i)]}), str(d / f"f{i:04d}.parquet"))
    CountingFS.reset()
    source = pqmod.ParquetSource(str(d), filesystem=counting)
    tasks = source.read_tasks(4, Pushdowns())
    assert len(CountingFS.opened) == 1 and len(tasks) >= 2000 // MAX_FILES_PER_TASK
    first = next(iter(sb.read_parquet(str(d), filesystem=counting).iter_batches(batch_size=1, batch_format="pyarrow")))
    assert first.num_rows == 1 and len(CountingFS.opened) < 2000
    assert sb.read_parquet(str(d)).count() == 2000


def test_a_projection_of_missing_columns_fails_before_reading(wide, counting):
    """Named with the columns that exist, when the plan is made (not as a read error of
    every task), and without reading any data page."""
    for ds in (sb.read_parquet(wide, columns=["id", "nope"], filesystem=CountingFS()),
               sb.read_parquet(wide, filesystem=CountingFS()).select_columns(["c1", "c99"])):
        CountingFS.bytes_read = 0
        with pytest.raises(KeyError, match=r"column\(s\) \['(nope|c99)'\] not found") as info:
            ds.take_all()
        assert "available columns: ['id', 'c0', 'c1'," in str(info.value)
        assert CountingFS.bytes_read <= 65_536  # the footer read only (the file is 6.4 MB)


def test_files_with_different_columns_and_widths_are_unified(tmp_path):
    pq.write_table(pa.table({"a": pa.array([1], pa.int32())}), str(tmp_path / "1.parquet"))
    pq.write_table(pa.table({"a": pa.array([2], pa.int64()), "b": ["x"]}), str(tmp_path / "2.parquet"))
    ds = sb.read_parquet(str(tmp_path))
    assert ds.schema() == pa.schema([("a", pa.int64()), ("b", pa.string())])
    assert sorted(ds.take_all(), key=lambda r: r["a"]) == [{"a": 1, "b": None}, {"a": 2, "b": "x"}]


def test_conflicting_types_raise_naming_both_files(tmp_path):
    pq.write_table(pa.table({"a": [1]}), str(tmp_path / "one.parquet"))
    pq.write_table(pa.table({"a": ["text"]}), str(tmp_path / "two.parquet"))
    with pytest.raises(pqmod.SchemaMismatchError, match=r"'a' is int64 in .*one\.parquet.* but string in .*two\.parquet"):
        sb.read_parquet(str(tmp_path)).take_all()
    ok = sb.read_parquet(str(tmp_path), schema=pa.schema([("a", pa.string())]))
    assert sorted(r["a"] for r in ok.take_all()) == ["1", "text"]


def test_conflict_found_lazily_by_a_read_task_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(pqmod, "EAGER_FOOTERS", 1)
    pq.write_table(pa.table({"a": [1]}), str(tmp_path / "one.parquet"))
    pq.write_table(pa.table({"a": ["text"]}), str(tmp_path / "two.parquet"))
    with pytest.raises(Exception, match=r"two\.parquet.*pass schema="):
        sb.read_parquet(str(tmp_path)).take_all()


def test_estimates_are_in_memory_sizes(wide, tmp_path):
    source = pqmod.ParquetSource(wide)
    source.parallelism = 8  # override_num_blocks=8: one task per row group
    tasks = source.read_tasks(8, Pushdowns(columns=("id",)))
    assert len(tasks) == 8 and all(t.estimated_rows == 5_000 for t in tasks)
    assert all(5_000 * 8 <= t.estimated_bytes < 5_000 * 8 * 1.3 for t in tasks)
    # By default a projected read of small pieces is one pyarrow scan per CPU (half the
    # default two tasks per CPU): two row groups per task here.
    tasks = pqmod.ParquetSource(wide).read_tasks(8, Pushdowns(columns=("id",)))
    assert len(tasks) == 4 and all(t.estimated_rows == 10_000 for t in tasks)
    assert all(10_000 * 8 <= t.estimated_bytes < 10_000 * 8 * 1.3 for t in tasks)
    from PIL import Image
    from streambatch.connectors.images import ImageSource

    Image.fromarray(np.zeros((30, 20, 3), np.uint8)).save(tmp_path / "a.png")
    [task] = ImageSource(str(tmp_path)).read_tasks(1, Pushdowns())
    assert task.estimated_rows == 1 and task.estimated_bytes == 30 * 20 * 3


# ---- interop --------------------------------------------------------------------------
def test_numpy_tensor_column_is_zero_copy_both_ways():
    arr = np.arange(4 * 3 * 2, dtype=np.float32).reshape(4, 3, 2)
    threads()
    try:
        out = sb.from_numpy(arr, override_num_blocks=1).to_numpy("data")
    finally:
        sb.DataContext.get_current().execution_options.local = sb.LocalOptions()
    assert out.shape == (4, 3, 2) and np.shares_memory(out, arr)


def frame_data(n=6):
    base = dt.datetime(2024, 3, 1, tzinfo=dt.timezone.utc)
    return {
        "i": [None if k == 2 else k for k in range(n)],
        "s": [None if k == 1 else f"s{k}" for k in range(n)],
        "ts": [base + dt.timedelta(minutes=k) for k in range(n)],
        "l": [[k, k + 1] if k % 2 else [] for k in range(n)],
        "st": [{"a": k, "b": f"b{k}"} for k in range(n)],
    }


def test_pandas_round_trip_through_parquet_keeps_dtypes(tmp_path):
    df = pd.DataFrame(frame_data())
    df["i"] = df["i"].astype("Int64")
    df["ts"] = pd.to_datetime(df["ts"]).dt.tz_convert("Europe/Paris")
    sb.from_pandas(df).write_parquet(str(tmp_path / "p"))
    back = sb.read_parquet(str(tmp_path / "p")).to_pandas().sort_values("ts").reset_index(drop=True)
    assert back["i"].dtype == pd.Int64Dtype() and str(back["ts"].dtype) == str(df["ts"].dtype)
    assert back["i"].isna().tolist() == df["i"].isna().tolist()
    assert back["s"].tolist() == df["s"].tolist()
    assert [list(v) for v in back["l"]] == [list(v) for v in df["l"]]
    assert back["st"].tolist() == df["st"].tolist()


def test_polars_round_trip_keeps_dtypes():
    df = pl.DataFrame(frame_data()).with_columns(pl.col("ts").dt.convert_time_zone("Asia/Tokyo"))
    back = sb.from_polars(df, override_num_blocks=2).to_polars().sort("ts")
    assert back.schema == df.schema
    assert back.equals(df)


def test_from_torch_map_style_and_iterable():
    torch = pytest.importorskip("torch")

    class Pairs(torch.utils.data.Dataset):
        def __len__(self):
            return 10

        def __getitem__(self, i):
            return torch.full((2, 2), i, dtype=torch.float32), i

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter({"x": k} for k in range(5))

    table = sb.from_torch(Pairs(), override_num_blocks=3).to_arrow().sort_by("item_1")
    assert table["item_1"].to_pylist() == list(range(10))
    from streambatch.connectors.tensors import tensor_to_numpy

    arrays = tensor_to_numpy(table["item_0"])
    assert arrays.shape == (10, 2, 2) and arrays[7].tolist() == [[7, 7], [7, 7]]
    assert sorted(r["x"] for r in sb.from_torch(Stream()).take_all()) == list(range(5))


def test_registry_missing_extra_names_the_pip_command(monkeypatch):
    from streambatch.connectors import registry

    monkeypatch.setitem(registry._SOURCES, "needs-extra", ("no_such_module_xyz:Thing", "images"))
    with pytest.raises(ImportError, match=r"pip install 'streambatch\[images\]'"):
        registry.get_source("needs-extra")
