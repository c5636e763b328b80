"""``write_lance`` with no rows, and what a failed or repeated write leaves on disk.

An overwrite of no rows is a new version holding none (the dataset's rows do not stay);
a write of no rows with a known schema creates an empty dataset with it. A failed write
leaves no data file behind (into a new path or into an existing dataset), and a
successful one leaves only the files its version holds."""

from __future__ import annotations

import glob
import os
import time
from types import SimpleNamespace

import pyarrow as pa
import pytest
from streambatch.connectors.lance import LanceSink
from streambatch.connectors.lance_files import record_written, remove_unreferenced

import streambatch as sb

lance = pytest.importorskip("lance")


@pytest.fixture(autouse=True)
def _two_cpus():
    sb.init(num_cpus=2)
    yield
    sb.init()


def files(root: str) -> list[str]:
    """Every file below ``root``, relative, sorted ([] when it does not exist)."""
    return sorted(os.path.relpath(os.path.join(d, f), root)
                  for d, _, names in os.walk(root) for f in names)


def no_rows() -> sb.Dataset:
    """A dataset whose filter keeps nothing: no block reaches the sink (no schema)."""
    return sb.range(10).filter(lambda r: r["id"] > 100)


def test_an_overwrite_with_no_rows_is_a_version_with_none(tmp_path):
    uri = str(tmp_path / "t.lance")
    sb.from_arrow(pa.table({"id": [1, 2, 3]})).write_lance(uri)
    no_rows().write_lance(uri, mode="overwrite")
    assert sb.read_lance(uri).count() == 0
    assert lance.dataset(uri).version == 2 and lance.dataset(uri).schema.names == ["id"]
    assert sb.read_lance(uri, version=1).count() == 3  # the earlier version stays
    empty = pa.table({"x": pa.array([], pa.float32()), "s": pa.array([], pa.string())})
    sb.from_arrow(empty).write_lance(uri, mode="overwrite")  # empty blocks: their schema
    assert lance.dataset(uri).count_rows() == 0
    assert lance.dataset(uri).schema == empty.schema


def test_a_write_of_no_rows_creates_an_empty_dataset_when_the_schema_is_known(tmp_path):
    schema = pa.schema([("id", pa.int64()), ("s", pa.string())])
    given = str(tmp_path / "given.lance")
    no_rows().write_lance(given, schema=schema)
    assert lance.dataset(given).count_rows() == 0 and lance.dataset(given).schema == schema
    assert sb.read_lance(given).count() == 0
    sb.from_items([{"id": 1, "s": "a"}]).write_lance(given, mode="append")
    assert sb.read_lance(given).take_all() == [{"id": 1, "s": "a"}]
    from_blocks = str(tmp_path / "blocks.lance")
    sb.from_arrow(schema.empty_table()).write_lance(from_blocks)
    assert lance.dataset(from_blocks).schema == schema
    with pytest.raises(FileExistsError, match="mode='create'"):
        no_rows().write_lance(from_blocks)
    unknown = str(tmp_path / "unknown.lance")
    no_rows().write_lance(unknown)  # no rows, no schema: nothing to create
    assert not os.path.exists(unknown)


def fail_last(records: str, others: int):
    """A map_batches function that fails partition ``others`` once every other
    partition's write has recorded its files (so none is killed mid-write)."""
    def fn(batch: pa.Table) -> pa.Table:
        if others in batch["part"].to_pylist():
            deadline = time.monotonic() + 30
            while len(glob.glob(records)) < others and time.monotonic() < deadline:
                time.sleep(0.02)
            raise RuntimeError("the last partition fails")
        return batch
    return fn


def parts(n: int) -> sb.Dataset:
    return sb.from_items([{"part": p, "s": "x" * 50} for p in range(n) for _ in range(3)],
                         override_num_blocks=n)


def test_a_failed_write_leaves_no_data_file(tmp_path):
    uri = str(tmp_path / "new.lance")
    ds = parts(6).map_batches(fail_last(f"{uri}/_streambatch-*/*.written", 5),
                              batch_format="pyarrow")
    with pytest.raises(Exception, match="the last partition fails"):
        ds.write_lance(uri)
    assert files(uri) == []
    existing = str(tmp_path / "existing.lance")
    parts(2).write_lance(existing)
    before = files(existing)
    ds = parts(6).map_batches(fail_last(f"{existing}/_streambatch-*/*.written", 5),
                              batch_format="pyarrow")
    with pytest.raises(Exception, match="the last partition fails"):
        ds.write_lance(existing, mode="append")
    assert files(existing) == before
    assert sb.read_lance(existing).count() == 6


def test_a_write_keeps_only_the_files_of_its_version(tmp_path):
    uri = str(tmp_path / "t.lance")
    parts(4).write_lance(uri)
    assert [f for f in files(uri) if f.startswith("_streambatch")] == []
    held = {f"data/{d.path}" for fr in lance.dataset(uri).get_fragments()
            for d in fr.metadata.files}
    assert {f for f in files(uri) if f.startswith("data/")} == held
    # an attempt that was not committed (a retried or repeated task): removed after
    # the commit, while the dataset's own files stay
    stray = tmp_path / "t.lance" / "data" / "stray.lance"
    stray.write_bytes(b"x")
    record_written(uri, "j9", ["stray.lance", sorted(held)[0][len("data/"):]])
    remove_unreferenced(uri, "j9", set(), lance.dataset(uri))
    assert not stray.exists() and {f for f in files(uri) if f.startswith("data/")} == held
    assert sb.read_lance(uri).count() == 12


def test_a_thread_task_of_a_stopped_job_removes_what_it_wrote(tmp_path):
    uri = str(tmp_path / "t.lance")
    sink = LanceSink(uri)

    def stopped() -> None:
        raise RuntimeError("abandoned: the job stopped")

    ctx = SimpleNamespace(task_index=0, check_running=stopped)
    with pytest.raises(RuntimeError, match="abandoned"):
        sink.write([pa.table({"id": [1, 2]})], ctx)
    assert files(uri) == []
    ok = SimpleNamespace(task_index=0, check_running=lambda: None)
    assert sink.write([pa.table({"id": pa.array([], pa.int64())})], ok) == {
        "task": 0, "fragments": [], "schema": pa.schema([("id", pa.int64())])}
