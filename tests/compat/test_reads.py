"""Ray Data compatibility, reads (issue 18): what Ray Data's read_* / from_* / Datasource
documentation and tests promise, checked on streambatch with the import changed.

Hive partitions from the whole path, ``partitioning=`` objects, ``filesystem=`` as a
``pyarrow.fs`` filesystem, ``pathlib.Path`` paths, ``ignore_missing_paths``,
``file_extensions``, ``shuffle="files"``; ``from_pandas`` block per DataFrame,
``range_tensor``, ``from_blocks`` and user ``Datasource`` / ``ReadTask`` connectors.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import streambatch as sb

MiB = 2**20


@pytest.fixture(autouse=True, scope="module")
def _engine():
    sb.init(num_cpus=2, memory_budget=256 * MiB)
    yield



def block_sizes(ds: sb.Dataset) -> list[int]:
    """The row counts of the dataset's blocks (one whole-block batch each), sorted."""
    out = ds.map_batches(lambda b: {"n": [b.num_rows]}, batch_size=None, batch_format="pyarrow")
    return sorted(r["n"] for r in out.take_all())


def write_csv(path: pathlib.Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = list(rows[0])
    lines = [",".join(keys)] + [",".join(str(r[k]) for k in keys) for r in rows]
    path.write_text("\n".join(lines) + "\n")


def rows_of(ds: sb.Dataset, *keys: str) -> list[tuple]:
    return sorted(tuple(r[k] for k in keys) for r in ds.take_all())


# ---- hive partitions come from the whole path -------------------------------------------

@pytest.fixture
def hive(tmp_path):
    """d/country=<c>/year=<y>/f.csv, with one row per file naming its own values."""
    d = tmp_path / "d"
    for country in ("us", "fr"):
        for year in (2023, 2024):
            write_csv(d / f"country={country}" / f"year={year}" / "f.csv",
                      [{"x": f"{country}{year}"}])
    return d


def test_hive_columns_from_the_directory_given(hive):
    assert rows_of(sb.read_csv(str(hive)), "x", "country", "year") == [
        ("fr2023", "fr", 2023), ("fr2024", "fr", 2024), ("us2023", "us", 2023), ("us2024", "us", 2024)]


def test_hive_columns_from_a_partition_directory_given(hive):
    ds = sb.read_csv(str(hive / "country=us"))
    assert rows_of(ds, "x", "country", "year") == [("us2023", "us", 2023), ("us2024", "us", 2024)]


def test_hive_columns_from_a_single_file_given(hive):
    ds = sb.read_csv(str(hive / "country=fr" / "year=2024" / "f.csv"))
    assert ds.take_all() == [{"x": "fr2024", "country": "fr", "year": 2024}]


def test_hive_columns_from_the_path_of_parquet_and_json_files(tmp_path):
    (tmp_path / "k=a").mkdir()
    (tmp_path / "k=b").mkdir()
    pq.write_table(pa.table({"v": [1, 2]}), tmp_path / "k=a" / "p.parquet")
    (tmp_path / "k=b" / "j.json").write_text('{"v": 3}\n')
    assert rows_of(sb.read_parquet(str(tmp_path / "k=a" / "p.parquet")), "v", "k") == [(1, "a"), (2, "a")]
    assert rows_of(sb.read_json(str(tmp_path / "k=b")), "v", "k") == [(3, "b")]


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(layout=st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 3),
                                 st.integers(1, 4)),
                       min_size=1, max_size=5, unique_by=lambda t: t[:2]),
       depth=st.integers(0, 2))
def test_property_hive_values_match_the_path_whatever_the_path_given(tmp_path_factory, layout, depth):
    """Any layout k1=<s>/k2=<i>/f.csv read from the root, from a k1 directory, or file by
    file: each row carries the values its file's whole path names."""
    root = tmp_path_factory.mktemp("hv")
    expected = []
    for k1, k2, n in layout:
        rows = [{"r": f"{k1}{k2}_{i}"} for i in range(n)]
        write_csv(root / f"k1={k1}" / f"k2={k2}" / "f.csv", rows)
        expected += [(r["r"], k1, k2) for r in rows]
    if depth == 0:
        ds = sb.read_csv(str(root))
    elif depth == 1:
        ds = sb.read_csv([str(root / f"k1={k1}") for k1 in sorted({t[0] for t in layout})])
    else:
        ds = sb.read_csv([root / f"k1={k1}" / f"k2={k2}" / "f.csv" for k1, k2, _ in layout])
    assert rows_of(ds, "r", "k1", "k2") == sorted(expected)


# ---- partitioning= -----------------------------------------------------------------------

def test_partitioning_dir_style_with_field_names(tmp_path):
    for cls, n in (("cat", 2), ("dog", 1)):
        write_csv(tmp_path / "img" / cls / "f.csv", [{"i": i} for i in range(n)])
    part = sb.Partitioning("dir", field_names=["class"], base_dir=str(tmp_path / "img"))
    ds = sb.read_csv(str(tmp_path / "img"), partitioning=part)
    assert rows_of(ds, "i", "class") == [(0, "cat"), (0, "dog"), (1, "cat")]


def test_partitioning_field_types_and_none(hive):
    ds = sb.read_csv(str(hive), partitioning=sb.Partitioning("hive", field_types={"year": str}))
    assert {r["year"] for r in ds.take_all()} == {"2023", "2024"}
    assert sorted(sb.read_csv(str(hive), partitioning=None).take_all()[0]) == ["x"]


def test_partitioning_base_dir_limits_where_keys_are_read(tmp_path):
    write_csv(tmp_path / "run=7" / "data" / "k=1" / "f.csv", [{"x": 1}])
    whole = sb.read_csv(str(tmp_path / "run=7" / "data"))
    assert whole.take_all() == [{"x": 1, "run": 7, "k": 1}]
    part = sb.Partitioning("hive", base_dir=str(tmp_path / "run=7" / "data"))
    assert sb.read_csv(str(tmp_path / "run=7" / "data"), partitioning=part).take_all() == [{"x": 1, "k": 1}]


def test_partitioning_bad_values_are_named(tmp_path):
    write_csv(tmp_path / "f.csv", [{"x": 1}])
    with pytest.raises(ValueError, match="partitioning='dirs'; expected 'hive', None"):
        sb.read_csv(str(tmp_path), partitioning="dirs")
    with pytest.raises(ValueError, match="style='dir' needs field_names"):
        sb.Partitioning("dir")
    write_csv(tmp_path / "k=x" / "g.csv", [{"x": 2}])
    ds = sb.read_csv(str(tmp_path), partitioning=sb.Partitioning("hive", field_types={"k": int}))
    with pytest.raises(ValueError, match="partition value 'x' of 'k' is not of type int"):
        ds.take_all()


# ---- filesystem=, pathlib ------------------------------------------------------------------

def test_pyarrow_local_filesystem(hive, tmp_path):
    fs = pafs.LocalFileSystem()
    assert len(sb.read_csv(str(hive), filesystem=fs).take_all()) == 4
    pq.write_table(pa.table({"a": [1, 2, 3]}), tmp_path / "t.parquet")
    assert rows_of(sb.read_parquet(str(tmp_path / "t.parquet"), filesystem=fs), "a") == [(1,), (2,), (3,)]


def test_pyarrow_subtree_filesystem_is_wrapped(tmp_path):
    write_csv(tmp_path / "sub" / "a.csv", [{"x": 5}])
    fs = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())
    assert sb.read_csv("sub/a.csv", filesystem=fs).take_all() == [{"x": 5}]


def test_bad_filesystem_is_named(tmp_path):
    write_csv(tmp_path / "a.csv", [{"x": 1}])
    with pytest.raises(TypeError, match="read_csv: filesystem= must be a pyarrow.fs.FileSystem"):
        sb.read_csv(str(tmp_path), filesystem="local")


def test_pathlib_paths(tmp_path):
    write_csv(tmp_path / "a.csv", [{"x": 1}])
    write_csv(tmp_path / "b.csv", [{"x": 2}])
    assert rows_of(sb.read_csv(tmp_path), "x") == [(1,), (2,)]
    assert rows_of(sb.read_csv([tmp_path / "a.csv", tmp_path / "b.csv"]), "x") == [(1,), (2,)]
    np.save(tmp_path / "n.npy", np.arange(3))
    assert rows_of(sb.read_numpy(tmp_path / "n.npy"), "data") == [(0,), (1,), (2,)]
    with pytest.raises(TypeError, match=r"paths\[1\] is an int"):
        sb.read_csv([tmp_path / "a.csv", 3])


# ---- ignore_missing_paths -------------------------------------------------------------------

def test_ignore_missing_paths(tmp_path):
    write_csv(tmp_path / "a.csv", [{"x": 1}])
    missing = str(tmp_path / "nope.csv")
    with pytest.raises(FileNotFoundError, match="nope.csv.*ignore_missing_paths=True"):
        sb.read_csv([str(tmp_path / "a.csv"), missing]).take_all()
    ds = sb.read_csv([missing, str(tmp_path / "a.csv")], ignore_missing_paths=True)
    assert ds.take_all() == [{"x": 1}]
    with pytest.raises(FileNotFoundError, match="none of the paths"):
        sb.read_csv([missing], ignore_missing_paths=True).take_all()


# ---- file_extensions -------------------------------------------------------------------------

def test_file_extensions_select_files(tmp_path):
    write_csv(tmp_path / "a.csv", [{"x": 1}])
    write_csv(tmp_path / "b.txt", [{"x": 2}])
    write_csv(tmp_path / "c.CSV", [{"x": 3}])
    assert rows_of(sb.read_csv(str(tmp_path), file_extensions=["txt"]), "x") == [(2,)]
    assert rows_of(sb.read_csv(str(tmp_path), file_extensions=[".csv", "txt"]), "x") == [(1,), (2,), (3,)]
    # as Ray's, the filter applies to files named explicitly too
    both = [str(tmp_path / "a.csv"), str(tmp_path / "b.txt")]
    assert rows_of(sb.read_csv(both, file_extensions=["csv"]), "x") == [(1,)]
    with pytest.raises(ValueError, match=r"file_extensions=\['json'\]"):
        sb.read_csv(str(tmp_path), file_extensions=["json"]).take_all()
    with pytest.raises(ValueError, match="file_extensions=\\[\\]; expected a non-empty list"):
        sb.read_csv(str(tmp_path), file_extensions=[])


# ---- shuffle="files" ---------------------------------------------------------------------------

@pytest.fixture
def many(tmp_path):
    for i in range(12):
        (tmp_path / f"f{i:02d}.json").write_text(json.dumps({"i": i}) + "\n")
    return tmp_path


def test_shuffle_files_keeps_rows_changes_order(many, ordered):
    plain = [r["i"] for r in sb.read_json(str(many)).take_all()]
    assert plain == list(range(12))
    orders = [[r["i"] for r in sb.read_json(str(many), shuffle="files").take_all()]
              for _ in range(3)]
    assert all(sorted(o) == plain for o in orders)
    assert any(o != plain for o in orders)  # 3 runs in sorted order: 1 / 12!^3


def test_shuffle_with_a_seed_is_reproducible(many, ordered):
    fixed = sb.FileShuffleConfig(seed=7, reseed_after_execution=False)
    first = [r["i"] for r in sb.read_json(str(many), shuffle=fixed).take_all()]
    again = [r["i"] for r in sb.read_json(str(many), shuffle=fixed).take_all()]
    assert first == again and sorted(first) == list(range(12)) and first != list(range(12))
    ds = sb.read_json(str(many), shuffle=sb.FileShuffleConfig(seed=7))
    runs = [[r["i"] for r in ds.take_all()] for _ in range(3)]
    assert len({tuple(r) for r in runs}) > 1  # reseeded on each run
    with pytest.raises(ValueError, match="shuffle='rows'; expected None, 'files'"):
        sb.read_json(str(many), shuffle="rows")


# ---- from_pandas, range_tensor, from_blocks -----------------------------------------------------

def test_from_pandas_one_block_per_dataframe():
    dfs = [pd.DataFrame({"x": range(i * 10, i * 10 + n)}) for i, n in enumerate([3, 1, 5])]
    ds = sb.from_pandas(dfs)
    assert block_sizes(ds) == [1, 3, 5]
    assert sorted(r["x"] for r in ds.take_all()) == [0, 1, 2, 10, 20, 21, 22, 23, 24]
    assert block_sizes(sb.from_pandas(pd.DataFrame({"x": range(1000)}))) == [1000]
    assert block_sizes(sb.from_pandas(dfs, override_num_blocks=2)) == [4, 5]
    with pytest.raises(TypeError, match=r"from_pandas: dfs\[1\] is a dict"):
        sb.from_pandas([dfs[0], {"x": [1]}])


@pytest.mark.parametrize("shape", [(1,), (2, 3), (4,)])
def test_range_tensor(shape, ordered):
    ds = sb.range_tensor(5, shape=shape, override_num_blocks=2)
    rows = ds.take_all()
    assert len(rows) == 5
    for i, row in enumerate(rows):
        assert list(row) == ["data"]
        assert row["data"].shape == shape and row["data"].dtype == np.int64
        assert (row["data"] == i).all()
    with pytest.raises(ValueError, match="range_tensor: shape=\\(0,\\)"):
        sb.range_tensor(3, shape=(0,))


def test_from_blocks_keeps_each_block(ordered):
    blocks = [pa.table({"x": [1, 2]}), pd.DataFrame({"x": [3]}), pa.table({"x": [4, 5, 6]})]
    ds = sb.from_blocks(blocks)
    assert block_sizes(ds) == [1, 2, 3]
    assert [r["x"] for r in ds.take_all()] == [1, 2, 3, 4, 5, 6]
    with pytest.raises(TypeError, match=r"from_blocks: blocks\[0\] is a list"):
        sb.from_blocks([[1, 2]])


# ---- read_datasource with a user Datasource -------------------------------------------------------

class SquaresDatasource(sb.Datasource):
    """A user connector written as Ray Data's documentation shows."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n

    def get_read_tasks(self, parallelism: int) -> list[sb.ReadTask]:
        cuts = [self.n * i // parallelism for i in range(parallelism + 1)]
        return [sb.ReadTask(lambda lo=lo, hi=hi: [pd.DataFrame({"i": range(lo, hi),
                                                                "sq": [j * j for j in range(lo, hi)]})],
                            sb.BlockMetadata(num_rows=hi - lo, size_bytes=16 * (hi - lo),
                                             input_files=None, exec_stats=None))
                for lo, hi in zip(cuts[:-1], cuts[1:], strict=True) if hi > lo]

    def estimate_inmemory_data_size(self) -> int:
        return 16 * self.n


class BadBlocks(sb.Datasource):
    def get_read_tasks(self, parallelism: int) -> list[sb.ReadTask]:
        return [sb.ReadTask(lambda: ["not a block"], sb.BlockMetadata(1, 8))]


class NoTasks(sb.Datasource):
    pass


def test_read_datasource_user_connector():
    src = SquaresDatasource(20)
    assert src.get_name() == "Squares" and src.estimate_inmemory_data_size() == 320
    tasks = src.get_read_tasks(4)
    assert [t.metadata.num_rows for t in tasks] == [5, 5, 5, 5]
    ds = sb.read_datasource(src, override_num_blocks=4)
    assert block_sizes(ds) == [5, 5, 5, 5]
    assert sorted((r["i"], r["sq"]) for r in ds.take_all()) == [(i, i * i) for i in range(20)]
    assert ds.count() == 20


def test_read_task_row_limit_and_schema():
    task = sb.ReadTask(lambda: [pa.table({"a": list(range(10))})], sb.BlockMetadata(10, 80),
                       per_task_row_limit=4)
    assert [t.num_rows for t in task()] == [4]
    assert task.metadata.size_bytes == 80 and task.read_fn is not None


def test_read_datasource_bad_input_is_named():
    with pytest.raises(TypeError, match="read_datasource: datasource is a list"):
        sb.read_datasource([1, 2])
    with pytest.raises(TypeError, match="NoTasks does not implement get_read_tasks"):
        sb.read_datasource(NoTasks())
    with pytest.raises(Exception, match="read_fn yielded a str; a block is a pyarrow.Table"):
        sb.read_datasource(BadBlocks()).take_all()
    with pytest.raises(TypeError, match="metadata must be a BlockMetadata"):
        sb.ReadTask(lambda: [], metadata={"num_rows": 1})


def test_partition_key_also_in_the_data_must_agree(tmp_path):
    """As Ray's: a partition key the file holds as a column takes the path's value when
    the data agrees with it (nulls aside), and fails naming the file when it does not."""
    write_csv(tmp_path / "k=1" / "a.csv", [{"k": 1, "x": 1}, {"k": "", "x": 2}])  # "" reads as null
    assert sorted(sb.read_csv(str(tmp_path)).take_all(), key=lambda r: r["x"]) == [
        {"k": 1, "x": 1}, {"k": 1, "x": 2}]  # the null takes the path's value, as Ray's
    write_csv(tmp_path / "k=2" / "b.csv", [{"k": 5, "x": 2}])
    with pytest.raises(Exception, match=r"b.csv': column 'k' of the data holds \[5\] where the path says k=2"):
        sb.read_csv(str(tmp_path)).take_all()
    assert len(sb.read_csv(str(tmp_path), partitioning=None).take_all()) == 3


@pytest.mark.parametrize("files", [1, 20])  # one read task per file, or a shared scan
def test_a_parquet_file_storing_a_partition_key_must_agree_with_its_path(tmp_path, files):
    """As the other readers: a key the file stores holds the path's value (nulls take
    it); a file storing other values fails naming it. (Arrow read the path's value in
    their place: p=[5, 6] under p=1/ came back [1, 1]; keeping the file's values made
    a filter on p, pruned by the path, lose them.)"""
    for i in range(files):
        (tmp_path / "p=1" / "q=a").mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"x": [2 * i, 2 * i + 1], "p": [1, None]}),
                       tmp_path / "p=1" / "q=a" / f"f{i}.parquet")
    rows = sb.read_parquet(str(tmp_path)).take_all()
    assert sorted((r["x"], r["p"], r["q"]) for r in rows) == \
        [(x, 1, "a") for x in range(2 * files)]
    assert sb.read_parquet(str(tmp_path), filter=pc.field("p") == 1).count() == 2 * files
    (tmp_path / "p=2").mkdir()
    pq.write_table(pa.table({"x": [100, 101], "p": [5, 6]}), tmp_path / "p=2" / "bad.parquet")
    with pytest.raises(Exception, match=r"bad.parquet': column 'p' of the data holds \[5, 6\] "
                                        r"where the path says p=2"):
        sb.read_parquet(str(tmp_path)).take_all()


def test_partition_filter(hive, tmp_path):
    """Ray's PathPartitionFilter: the function sees the path's values (strings unless
    typed) and only the files it keeps are read; none kept is an error naming it."""
    PathPartitionFilter = sb.PathPartitionFilter
    keep = PathPartitionFilter.of(lambda d: d["country"] == "us" and d["year"] == "2024")
    assert sb.read_csv(str(hive), partition_filter=keep).take_all() == [
        {"x": "us2024", "country": "us", "year": 2024}]
    typed = PathPartitionFilter.of(lambda d: d["year"] < 2024, field_types={"year": int})
    assert rows_of(sb.read_csv(str(hive), partition_filter=typed), "x") == [("fr2023",), ("us2023",)]
    pq.write_table(pa.table({"v": [1]}), tmp_path / "d" / "country=fr" / "p.parquet")
    only_fr = PathPartitionFilter.of(lambda d: d.get("country") == "fr")
    assert sb.read_parquet(str(tmp_path / "d"), partition_filter=only_fr).take_all() == [
        {"v": 1, "country": "fr"}]
    with pytest.raises(ValueError, match="partition_filter kept none of the files"):
        sb.read_csv(str(hive), partition_filter=PathPartitionFilter.of(lambda d: False)).take_all()
    with pytest.raises(TypeError, match="partition_filter must be a streambatch.PathPartitionFilter"):
        sb.read_csv(str(hive), partition_filter=lambda d: True)
