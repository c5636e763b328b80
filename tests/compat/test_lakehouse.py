"""Table formats users ask for, as Ray Data documents them: ``read_delta`` /
``write_delta`` (deltalake), ``read_lance`` / ``write_lance`` (pylance) and
``read_iceberg`` / ``write_iceberg`` (pyiceberg with a local SQLite catalog). Every test
writes generated values (ints, strings, nulls, nested lists), reads them back and
compares; tables written by each format's own library are read, and what we write is
read by that library. Writes commit once on the driver: a failed job leaves the table as
it was, and a retried task's rows are in it once."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from streambatch.connectors.datasource import Pushdowns

import streambatch as sb

deltalake = pytest.importorskip("deltalake")
lance = pytest.importorskip("lance")
pyiceberg_catalog = pytest.importorskip("pyiceberg.catalog")


@pytest.fixture(autouse=True)
def _two_cpus():
    sb.init(num_cpus=2)
    yield
    sb.init()


def rows(n: int, start: int = 0) -> list[dict]:
    return [{"i": i, "s": None if i % 3 == 0 else f"s{i} é", "l": [i, None, i + 1] if i % 2
             else None} for i in range(start, start + n)]


def by_i(found: list[dict]) -> list[dict]:
    return sorted(found, key=lambda r: r["i"])


def source(n: int, start: int = 0) -> sb.Dataset:
    """``n`` rows in partitions of 4 or more rows: each has non-null values in every
    column, so every write task writes the same types (an all-null column is type null)."""
    return sb.from_items(rows(n, start), override_num_blocks=max(1, n // 4))


def _first_to_claim(marker: Path) -> bool:
    try:
        os.close(os.open(str(marker), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def fails_at_7(batch: pa.Table) -> pa.Table:
    if 7 in batch["i"].to_pylist():
        raise ValueError("row 7 is bad")
    return batch


def flaky_once(marker: str):
    """A UDF that raises on the first attempt of the task holding row 9 (rows 6-9 with
    ``source(n, start=6)``), after its first batch (``batch_size=2``) was written."""
    def udf(batch: pa.Table) -> pa.Table:
        if 9 in batch["i"].to_pylist() and _first_to_claim(Path(marker)):
            raise ConnectionError("flaky, once")
        return batch
    return udf


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("part-*"))


# ---- Delta Lake ------------------------------------------------------------------------

def test_delta_round_trip_projection_and_one_task_per_file(tmp_path):
    path = str(tmp_path / "t")
    source(12).write_delta(path)
    assert by_i(sb.read_delta(path).take_all()) == rows(12)
    assert len(deltalake.DeltaTable(path).file_uris()) == 3
    assert len(sb.read_delta(path).materialize().get_internal_block_refs()) >= 3 \
        if hasattr(sb.Dataset, "get_internal_block_refs") else True
    from streambatch.connectors.delta import DeltaSource

    assert len(DeltaSource(path).read_tasks(1, Pushdowns())) == 3
    assert sorted(r["s"] or "" for r in sb.read_delta(path, columns=["s"]).take_all()) == \
        sorted(r["s"] or "" for r in rows(12))
    assert set(sb.read_delta(path).select_columns(["l"]).take(1)[0]) == {"l"}
    # deltalake reads what we wrote
    assert by_i(deltalake.DeltaTable(path).to_pyarrow_table().to_pylist()) == rows(12)
    found = sb.read_delta(path, include_paths=True, shuffle="files").take_all()
    assert {r["path"] for r in found} == set(deltalake.DeltaTable(path).file_uris())
    assert sorted(r["i"] for r in sb.read_delta(path, include_paths=True)
                  .select_columns(["i", "path"]).take_all()) == list(range(12))
    with pytest.raises(NotImplementedError, match="catalog="):
        sb.read_delta(path, catalog=object())


def test_delta_modes_and_time_travel(tmp_path):
    path = str(tmp_path / "t")
    source(6).write_delta(path)
    source(6, start=6).write_delta(path, mode="append")
    assert sb.read_delta(path).count() == 12
    source(3, start=100).write_delta(path, mode="overwrite")
    assert by_i(sb.read_delta(path).take_all()) == rows(3, start=100)
    assert sb.read_delta(path, version=0).count() == 6
    assert by_i(sb.read_delta(path, version=1).take_all()) == rows(12)
    with pytest.raises(FileExistsError, match="mode='error'"):
        source(3).write_delta(path, mode="error")
    source(3).write_delta(path, mode="ignore")  # the table exists: nothing is written
    assert deltalake.DeltaTable(path).version() == 2
    with pytest.raises(ValueError, match="mode='upsert'"):
        source(3).write_delta(path, mode="upsert")


def test_delta_reads_a_partitioned_table_deltalake_wrote(tmp_path):
    path = str(tmp_path / "t")
    table = pa.table({"x": [1, 2, 3, 4], "k": ["a", "b", None, "a"],
                      "l": [[1], None, [], [2, 3]]})
    deltalake.write_deltalake(path, table, partition_by=["k"])
    deltalake.write_deltalake(path, table.slice(0, 1), mode="append", partition_by=["k"])
    found = sorted(sb.read_delta(path).take_all(), key=lambda r: (r["x"], r["k"] or ""))
    expected = table.to_pylist() + table.slice(0, 1).to_pylist()
    assert found == sorted(expected, key=lambda r: (r["x"], r["k"] or ""))
    assert sorted(r["k"] or "" for r in sb.read_delta(path, columns=["k"]).take_all()) == \
        ["", "a", "a", "a", "b"]
    assert sb.read_delta(path, version=0).count() == 4


def test_delta_failed_write_commits_nothing_and_retry_writes_once(tmp_path, monkeypatch):
    from streambatch.connectors import delta_sink as delta

    removed: list[list[str]] = []  # per cleanup: the files it removes
    real = delta.remove_uncommitted

    def spy(directory, job, keep, storage=None):
        removed.append([f for f in os.listdir(directory) if f.startswith(f"part-{job}-")
                        and f not in keep])
        real(directory, job, keep, storage)

    monkeypatch.setattr(delta, "remove_uncommitted", spy)
    path = str(tmp_path / "t")
    source(6).write_delta(path)
    with pytest.raises(Exception, match="row 7 is bad"):
        source(12).map_batches(fails_at_7, batch_size=2, batch_format="pyarrow", releases_gil=True).write_delta(path)
    assert deltalake.DeltaTable(path).version() == 0 and sb.read_delta(path).count() == 6
    assert len(leftovers(tmp_path / "t")) == 1  # only the committed file
    source(12, start=6).map_batches(flaky_once(str(tmp_path / "m")), batch_size=2,
                                    batch_format="pyarrow", max_retries=1,
                                    releases_gil=True).write_delta(path)
    assert (tmp_path / "m").exists()
    # the first write left nothing to remove; the failed job's files all went; the
    # retried job removed its task's first attempt's (partial) file
    assert removed[0] == [] and removed[1] and len(removed[2]) == 1
    assert by_i(sb.read_delta(path).take_all()) == rows(18)
    assert len(leftovers(tmp_path / "t")) == len(deltalake.DeltaTable(path).file_uris())


def test_delta_schemas_all_null_partitions_and_appends_with_new_columns(tmp_path):
    path = str(tmp_path / "t")
    # partition 0's "s" is all null (type null): left out of its file, typed from the other
    sb.from_items([{"x": 1, "s": None, "n": None}, {"x": 2, "s": "b", "n": None}],
                  override_num_blocks=2).write_delta(path)
    assert pa.schema(deltalake.DeltaTable(path).schema().to_arrow()).field("s").type == \
        pa.string()
    expected = [{"x": 1, "s": None, "n": None}, {"x": 2, "s": "b", "n": None}]
    assert sorted(sb.read_delta(path).take_all(), key=lambda r: r["x"]) == expected
    assert sorted(deltalake.DeltaTable(path).to_pyarrow_table().to_pylist(),
                  key=lambda r: r["x"]) == expected
    with pytest.raises(Exception, match=r"column\(s\) \['z'\] are not in the table"):
        sb.from_items([{"x": 3, "z": 1.5}]).write_delta(path, schema_mode="error")
    sb.from_items([{"x": 3}]).write_delta(path)  # missing columns are nulls
    assert sb.read_delta(path).count() == 3 and deltalake.DeltaTable(path).version() == 1
    sb.from_items([{"x": 4, "z": 1.5}]).write_delta(path)  # schema_mode="merge" adds "z"
    found = sorted(sb.read_delta(path).take_all(), key=lambda r: r["x"])
    assert [r["z"] for r in found] == [None, None, None, 1.5] and found[0]["n"] is None
    assert sorted(deltalake.DeltaTable(path).to_pyarrow_table().to_pylist(),
                  key=lambda r: r["x"]) == found
    sb.from_items([{"x": 5, "w": "new"}]).write_delta(path, mode="overwrite")  # new schema
    assert sb.read_delta(path).take_all() == [{"x": 5, "w": "new"}]


def test_delta_append_refuses_a_nested_field_the_table_lacks(tmp_path):
    """Cast to the table's struct, the new field's values were dropped and the append
    committed without them; now nothing is written and the error names the column."""
    path = str(tmp_path / "t")
    sb.from_items([{"x": 1, "s": {"k": 1}}]).write_delta(path)
    with pytest.raises(Exception, match=r"column 's' holds struct<k: int64, extra: .*the "
                                        r"table's struct<k: int64> lacks"):
        sb.from_items([{"x": 2, "s": {"k": 2, "extra": [2, 3]}}]).write_delta(path)
    assert sb.read_delta(path).take_all() == [{"x": 1, "s": {"k": 1}}]
    assert deltalake.DeltaTable(path).version() == 0


def test_delta_partition_by(tmp_path):
    path = str(tmp_path / "t")
    source(12).write_delta(path, partition_by=["s"], name="t", description="test rows")
    dt = deltalake.DeltaTable(path)
    assert dt.metadata().partition_columns == ["s"] and dt.metadata().name == "t"
    assert any("s=__HIVE_DEFAULT_PARTITION__" in f for f in dt.file_uris())
    assert by_i(sb.read_delta(path).take_all()) == rows(12)
    assert by_i(dt.to_pyarrow_table().to_pylist()) == rows(12)
    source(4, start=12).write_delta(path)  # an append keeps the table's partitioning
    assert by_i(sb.read_delta(path).take_all()) == rows(16)
    with pytest.raises(ValueError, match="partitioned by"):
        source(4).write_delta(path, partition_by=["i"])
    files = leftovers(tmp_path / "t")
    with pytest.raises(Exception, match="row 7 is bad"):  # its files in hive dirs go too
        source(12).map_batches(fails_at_7, batch_size=2, batch_format="pyarrow",
                               releases_gil=True).write_delta(path)
    assert leftovers(tmp_path / "t") == files and sb.read_delta(path).count() == 16


# ---- Lance -----------------------------------------------------------------------------

def test_lance_round_trip_projection_filter_and_fragments(tmp_path):
    uri = str(tmp_path / "t.lance")
    source(12).write_lance(uri)
    assert by_i(sb.read_lance(uri).take_all()) == rows(12)
    assert by_i(lance.dataset(uri).to_table().to_pylist()) == rows(12)  # lance reads ours
    assert sorted(r["i"] for r in sb.read_lance(uri, columns=["i"], filter="i >= 9")
                  .take_all()) == [9, 10, 11]
    assert set(sb.read_lance(uri).select_columns(["s"]).take(1)[0]) == {"s"}
    # a dataset lance wrote, in 4 fragments: 4 read tasks
    other = str(tmp_path / "o.lance")
    lance.write_dataset(pa.Table.from_pylist(rows(10)), other, max_rows_per_file=3)
    from streambatch.connectors.lance import LanceSource

    assert len(LanceSource(other).read_tasks(1, Pushdowns())) == 4
    assert by_i(sb.read_lance(other).take_all()) == rows(10)


def test_lance_modes_versions_and_failed_write(tmp_path):
    uri = str(tmp_path / "t.lance")
    source(6).write_lance(uri)
    with pytest.raises(FileExistsError, match="mode='create'"):
        source(3).write_lance(uri)
    source(6, start=6).write_lance(uri, mode="append")
    assert sb.read_lance(uri).count() == 12
    source(3, start=100).write_lance(uri, mode="overwrite")
    assert by_i(sb.read_lance(uri).take_all()) == rows(3, start=100)
    assert sb.read_lance(uri, version=1).count() == 6
    with pytest.raises(Exception, match="row 7 is bad"):
        source(12).map_batches(fails_at_7, batch_size=2, batch_format="pyarrow", releases_gil=True).write_lance(uri, mode="append")
    assert lance.dataset(uri).version == 3 and sb.read_lance(uri).count() == 3
    source(12, start=6).map_batches(flaky_once(str(tmp_path / "m")), batch_size=2,
                                    batch_format="pyarrow", max_retries=1,
                                    releases_gil=True).write_lance(uri, mode="append")
    assert by_i(sb.read_lance(uri).take_all()) == rows(12, start=6) + rows(3, start=100)


def test_lance_all_null_partitions_and_differing_schemas(tmp_path):
    # a flat column all null in one partition (type null) takes the other tasks' type
    uri = str(tmp_path / "t.lance")
    sb.from_items([{"x": 1, "s": None}, {"x": 2, "s": "b"}], override_num_blocks=2) \
        .write_lance(uri)
    assert sorted(sb.read_lance(uri).take_all(), key=lambda r: r["x"]) == [
        {"x": 1, "s": None}, {"x": 2, "s": "b"}]
    # a nested one cannot: the error says to pass schema=, which writes it
    ds = sb.from_items([{"x": 1, "l": None}, {"x": 2, "l": [1]}], override_num_blocks=2)
    other = str(tmp_path / "o.lance")
    with pytest.raises(TypeError, match="pass schema="):
        ds.write_lance(other)
    ds.write_lance(other, schema=pa.schema([("x", pa.int64()), ("l", pa.list_(pa.int64()))]))
    assert sorted(sb.read_lance(other).take_all(), key=lambda r: r["x"]) == [
        {"x": 1, "l": None}, {"x": 2, "l": [1]}]
    with pytest.raises(Exception, match=r"column\(s\) \['z'\] are not in the table"):
        sb.from_items([{"x": 3, "l": [2], "z": 1}]).write_lance(other, mode="append")
    assert sb.read_lance(other).count() == 2


def test_lance_a_later_block_with_more_columns_or_fields_fails_unless_the_schema_has_them(
        tmp_path):
    """A partition's first block sets the file's schema: a later block's new column and
    new struct field were dropped, silently. Now the write fails naming them, and
    schema= with every column and field writes each value."""
    def grows(batch):
        i = int(batch["id"][0])
        extra = {"extra": [i]} if i % 2 else {}
        return {"id": [i], "s": [{"k": i, **extra}], **({"z": [i]} if i == 2 else {})}

    ds = sb.range(3, override_num_blocks=1).map_batches(grows, batch_size=1)
    uri = str(tmp_path / "t.lance")
    with pytest.raises(Exception, match=r"column 's' holds struct<k: int64, extra: .*pass "
                                        r"schema= with every column and nested field"):
        ds.write_lance(uri)
    schema = pa.schema([("id", pa.int64()), ("z", pa.int64()),
                        ("s", pa.struct([("k", pa.int64()), ("extra", pa.list_(pa.int64()))]))])
    ds.write_lance(str(tmp_path / "u.lance"), schema=schema)
    assert sorted(sb.read_lance(str(tmp_path / "u.lance")).take_all(), key=lambda r: r["id"]) == [
        {"id": 0, "z": None, "s": {"k": 0, "extra": None}},
        {"id": 1, "z": None, "s": {"k": 1, "extra": [1]}},
        {"id": 2, "z": 2, "s": {"k": 2, "extra": None}}]


# ---- Iceberg ---------------------------------------------------------------------------

def catalog_kwargs(tmp_path: Path) -> dict:
    return {"name": "default", "type": "sql", "uri": f"sqlite:///{tmp_path}/catalog.db",
            "warehouse": f"file://{tmp_path}/warehouse"}


def catalog(tmp_path: Path):
    kwargs = catalog_kwargs(tmp_path)
    return pyiceberg_catalog.load_catalog(kwargs.pop("name"), **kwargs)


def test_iceberg_round_trip_filter_projection_and_snapshots(tmp_path):
    kw = catalog_kwargs(tmp_path)
    source(12).write_iceberg("db.t", catalog_kwargs=kw)  # creates the namespace and table
    assert by_i(sb.read_iceberg(table_identifier="db.t", catalog_kwargs=kw).take_all()) == \
        rows(12)
    table = catalog(tmp_path).load_table("db.t")
    assert by_i(table.scan().to_arrow().to_pylist()) == rows(12)  # pyiceberg reads ours
    assert len(list(table.scan().plan_files())) == 3
    from streambatch.connectors.iceberg import IcebergSource

    copied = pickle.loads(pickle.dumps(IcebergSource("db.t", catalog_kwargs=kw)))
    tasks = copied.read_tasks(8, Pushdowns(columns=("i",)))  # a copy opens the table again
    assert len(tasks) == 3 and sorted(r["i"] for t in tasks for b in t() for r in
                                      b.to_pylist()) == list(range(12))
    from pyiceberg.expressions import GreaterThanOrEqual

    for where in ("i >= 9", GreaterThanOrEqual("i", 9)):
        found = sb.read_iceberg(table_identifier="db.t", catalog_kwargs=kw, row_filter=where,
                                selected_fields=("i", "s")).take_all()
        assert by_i(found) == [{"i": r["i"], "s": r["s"]} for r in rows(12) if r["i"] >= 9]
    assert set(sb.read_iceberg(table_identifier="db.t", catalog_kwargs=kw)
               .select_columns(["l"]).take(1)[0]) == {"l"}
    first = table.current_snapshot().snapshot_id
    source(6, start=12).write_iceberg("db.t", catalog_kwargs=kw)
    assert sb.read_iceberg(table_identifier="db.t", catalog_kwargs=kw).count() == 18
    assert sb.read_iceberg(table_identifier="db.t", catalog_kwargs=kw,
                           snapshot_id=first).count() == 12
    source(3, start=100).write_iceberg("db.t", catalog_kwargs=kw, mode="overwrite")
    assert by_i(sb.read_iceberg(table_identifier="db.t", catalog_kwargs=kw).take_all()) == \
        rows(3, start=100)
    with pytest.raises(NotImplementedError, match="upsert"):
        source(3).write_iceberg("db.t", catalog_kwargs=kw, mode="upsert")


def test_iceberg_reads_a_table_pyiceberg_wrote_and_overwrite_filter(tmp_path):
    kw = catalog_kwargs(tmp_path)
    cat = catalog(tmp_path)
    cat.create_namespace("db")
    data = pa.Table.from_pylist(rows(8))
    table = cat.create_table("db.t", schema=data.schema)
    table.append(data.slice(0, 4))
    table.append(data.slice(4))
    assert by_i(sb.read_iceberg(table_identifier="db.t", catalog_kwargs=kw).take_all()) == \
        rows(8)
    assert by_i(sb.read_iceberg(table_identifier="db.t", catalog_kwargs=kw,
                                override_num_blocks=1).take_all()) == rows(8)
    source(3, start=100).write_iceberg("db.t", catalog_kwargs=kw, mode="overwrite",
                                       overwrite_filter="i < 4")
    assert by_i(sb.read_iceberg(table_identifier="db.t", catalog_kwargs=kw).take_all()) == \
        rows(4, start=4) + rows(3, start=100)


def test_iceberg_failed_write_commits_nothing_and_retry_writes_once(tmp_path):
    kw = catalog_kwargs(tmp_path)
    source(6).write_iceberg("db.t", catalog_kwargs=kw)
    snapshots = len(catalog(tmp_path).load_table("db.t").snapshots())
    with pytest.raises(Exception, match="row 7 is bad"):
        source(12).map_batches(fails_at_7, batch_size=2, batch_format="pyarrow", releases_gil=True).write_iceberg("db.t", catalog_kwargs=kw)
    assert len(catalog(tmp_path).load_table("db.t").snapshots()) == snapshots
    assert sb.read_iceberg(table_identifier="db.t", catalog_kwargs=kw).count() == 6
    data = tmp_path / "warehouse"
    assert len(leftovers(data)) == 1
    source(12, start=6).map_batches(flaky_once(str(tmp_path / "m")), batch_size=2,
                                    batch_format="pyarrow", max_retries=1,
                                    releases_gil=True).write_iceberg("db.t", catalog_kwargs=kw)
    assert by_i(sb.read_iceberg(table_identifier="db.t", catalog_kwargs=kw).take_all()) == \
        rows(18)
    table = catalog(tmp_path).load_table("db.t")
    assert len(leftovers(data)) == len(list(table.scan().plan_files())) == 4


def test_iceberg_all_null_partitions_and_new_columns(tmp_path):
    kw = catalog_kwargs(tmp_path)
    sb.from_items([{"x": 1, "s": None}, {"x": 2, "s": "b"}],
                  override_num_blocks=2).write_iceberg("db.t", catalog_kwargs=kw)
    sb.from_items([{"x": 3, "s": "c", "z": 1.5}]).write_iceberg("db.t", catalog_kwargs=kw)
    found = sb.read_iceberg(table_identifier="db.t", catalog_kwargs=kw).take_all()
    assert sorted(found, key=lambda r: r["x"]) == [
        {"x": 1, "s": None, "z": None}, {"x": 2, "s": "b", "z": None},
        {"x": 3, "s": "c", "z": 1.5}]
    with pytest.raises(Exception, match="column 'x' holds string"):
        sb.from_items([{"x": "not a number"}]).write_iceberg("db.t", catalog_kwargs=kw)


# ---- optional packages -----------------------------------------------------------------

@pytest.mark.parametrize(("module", "call", "extra"), [
    ("deltalake", lambda p: sb.read_delta(p), "delta"),
    ("deltalake", lambda p: sb.range(1).write_delta(p), "delta"),
    ("lance", lambda p: sb.read_lance(p), "lance"),
    ("lance", lambda p: sb.range(1).write_lance(p), "lance"),
    ("pyiceberg", lambda p: sb.read_iceberg(table_identifier="db.t"), "iceberg"),
    ("pyiceberg", lambda p: sb.range(1).write_iceberg("db.t"), "iceberg"),
])
def test_a_missing_package_names_the_extra(tmp_path, monkeypatch, module, call, extra):
    for name in list(sys.modules):
        if name == module or name.startswith(module + "."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(ImportError, match=rf"pip install 'streambatch\[{extra}\]'"):
        call(str(tmp_path / "t"))


def test_import_streambatch_loads_no_table_format_package():
    code = ("import sys, streambatch; print(sorted(m for m in ('deltalake', 'lance', "
            "'pyiceberg') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
