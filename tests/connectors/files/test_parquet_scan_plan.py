"""Parquet read planning: row groups pruned once while planning, small pruned pieces
read together as one scan, lazy footers read by the tasks (bytes counted)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from streambatch.connectors import parquet as pqmod
from streambatch.connectors.datasource import Pushdowns

import streambatch as sb

from .test_parquet_features import CountingFS, counting, read_bytes, wide  # noqa: F401


@pytest.fixture
def many(tmp_path):
    """24 files (more than EAGER_FOOTERS) in hive directories ``g=0..3``; each file
    has 4 row groups of 2,500 rows, ``k`` sorted 0..99 within the file."""
    root = tmp_path / "many"
    for f in range(24):
        d = root / f"g={f % 4}"
        d.mkdir(parents=True, exist_ok=True)
        n = 10_000
        cols = {"id": np.arange(f * n, (f + 1) * n), "k": np.repeat(np.arange(100), n // 100)}
        cols |= {f"c{i}": np.random.default_rng(f).random(n) for i in range(6)}
        pq.write_table(pa.table(cols), str(d / f"part-{f:02d}.parquet"), row_group_size=2_500,
                       compression="none")
    return str(root)


def test_planning_prunes_row_groups_once_and_estimates_the_survivors(wide):  # noqa: F811
    """The footer read while planning drops 7 of 8 row groups: the task's estimate is
    one row group's rows and the two columns' bytes."""
    full = pqmod.ParquetSource(wide).read_tasks(1, Pushdowns(columns=("id", "c1")))
    [task] = pqmod.ParquetSource(wide).read_tasks(
        1, Pushdowns(columns=("id", "c1"), filter=pc.field("id") < 1000))
    assert sum(t.estimated_rows for t in full) == 40_000
    assert task.estimated_rows == 5_000 and 5_000 * 16 <= task.estimated_bytes < 5_000 * 16 * 1.3
    rows = [r for t in task() for r in t["id"].to_pylist()]
    assert rows == list(range(1000))


def test_a_file_whose_statistics_rule_out_every_row_group_gets_no_task(wide):  # noqa: F811
    src = pqmod.ParquetSource(wide)
    assert src.read_tasks(4, Pushdowns(filter=pc.field("id") > 10**9)) == []


def test_small_pruned_pieces_are_read_together_with_the_same_rows(many, counting):  # noqa: F811
    """24 lazy files, 2 of 8 columns and 1 of 4 row groups each: a few tasks (not one
    per file), the rows pyarrow returns, and a fraction of the bytes."""
    query = {"columns": ["id", "c0"], "filter": pc.field("k") < 20}
    tasks = pqmod.ParquetSource(many).read_tasks(4, Pushdowns(("id", "c0"), query["filter"]))
    assert 2 <= len(tasks) <= 6
    whole, _ = read_bytes(many, counting)
    part, got = read_bytes(many, counting, **query)
    want = pads.dataset(many, format="parquet", partitioning="hive").to_table(**query)
    assert got.sort_by("id").equals(want.sort_by("id")) and got.num_rows == 24 * 2_000
    assert part < whole * 0.2    # 2 of 8 columns (25% alone), 1 of 4 row groups, + footers


def test_a_shared_scan_keeps_partition_columns_and_paths(many):
    ds = sb.read_parquet(many, columns=["id", "g", "path"], filter=pc.field("k") < 1,
                         include_paths=True)
    rows = ds.take_all()
    assert len(rows) == 24 * 100
    for row in rows:
        f = row["id"] // 10_000
        assert row["g"] == f % 4 and row["path"].endswith(f"g={f % 4}/part-{f:02d}.parquet")


def test_a_corrupt_file_in_a_shared_scan_is_named(many):
    bad = f"{many}/g=1/part-05.parquet"
    with open(bad, "r+b") as fh:  # keep the footer, destroy the data pages
        fh.seek(4)
        fh.write(b"\xff" * 50_000)
    with pytest.raises(sb.UserCodeError, match=r"read_parquet: cannot read .*part-05\.parquet"):
        sb.read_parquet(many, columns=["id", "c0"], filter=pc.field("k") < 50).take_all()


def test_listing_runs_in_the_background_while_the_pipeline_is_built(many):
    """The constructor returns while the directory walk is still blocked; the first
    use waits for it."""
    import threading

    from fsspec.implementations.local import LocalFileSystem

    release, done = threading.Event(), threading.Event()

    class SlowFS(LocalFileSystem):
        def find(self, *args, **kwargs):
            release.wait(10)
            found = super().find(*args, **kwargs)
            done.set()
            return found

    ds = sb.read_parquet(many, filesystem=SlowFS(skip_instance_cache=True), columns=["id"])
    listed_before_return = done.is_set()
    release.set()
    assert not listed_before_return
    assert ds.count() == 24 * 10_000 and done.is_set()


def test_a_conflicting_file_after_many_equal_ones_is_still_refused_in_a_shared_scan(tmp_path):
    """The per-file schema check runs once per distinct file schema: files equal to one
    that passed skip it, a later file with another schema is still checked and named."""
    for i in range(30):
        pq.write_table(pa.table({"id": [i], "k": [1]}), str(tmp_path / f"f{i:02d}.parquet"))
    pq.write_table(pa.table({"id": [99], "k": ["x"]}), str(tmp_path / "f99.parquet"))
    ds = sb.read_parquet(str(tmp_path), columns=["id"], filter=pc.field("id") >= 0)
    with pytest.raises(Exception, match=r"f99\.parquet.*pass schema="):
        ds.take_all()
    src = pqmod.ParquetSource(str(tmp_path / "f0*.parquet"))
    tasks = src.read_tasks(1, Pushdowns(columns=("id",), filter=pc.field("id") >= 0))
    assert sum(t.num_rows for task in tasks for t in task()) == 10
    assert len(src._schemas_ok) == 1  # ten files, one schema: checked once
