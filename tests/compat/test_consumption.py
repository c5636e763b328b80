"""Ray Data's dataset summaries and execution strategies, with only the import changed:
materialize() -> MaterializedDataset, num_blocks, size_bytes, input_files, compute=
ActorPoolStrategy / TaskPoolStrategy, with_column."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import streambatch as sb


@pytest.fixture(autouse=True)
def _two_cpus():
    sb.init(num_cpus=2)
    yield
    sb.init()


def test_materialize_returns_a_materialized_dataset_that_never_runs_again(tmp_path):
    calls = tmp_path / "calls"
    calls.mkdir()

    def count_call(row):
        (calls / f"{row['id']}-{os.getpid()}-{len(list(calls.iterdir()))}").touch()
        return row

    m = sb.range(10, override_num_blocks=5).map(count_call, releases_gil=True).materialize()
    assert isinstance(m, sb.MaterializedDataset) and isinstance(m, sb.Dataset)
    ran = len(list(calls.iterdir()))
    assert ran == 10
    assert m.num_blocks() == 5 and m.size_bytes() == 80
    assert sorted(r["id"] for r in m.take_all()) == list(range(10)) and m.count() == 10
    assert len(list(calls.iterdir())) == ran  # consumers read the held blocks


def test_num_blocks_and_size_bytes_of_a_lazy_dataset():
    ds = sb.from_items([{"x": i, "s": "ab"} for i in range(6)]).repartition(3)
    assert ds.num_blocks() == 3
    want = pa.table({"x": list(range(6)), "s": ["ab"] * 6}).nbytes
    assert ds.size_bytes() == want


def test_input_files_are_the_files_read(tmp_path):
    for i in range(3):
        pq.write_table(pa.table({"a": [i]}), tmp_path / f"part-{i}.parquet")
    (tmp_path / "_SUCCESS").touch()
    ds = sb.read_parquet(str(tmp_path)).map(lambda r: r)
    assert [os.path.basename(f) for f in ds.input_files()] == [
        "part-0.parquet", "part-1.parquet", "part-2.parquet"]
    assert sb.from_items([1]).input_files() == []


@pytest.mark.parametrize("compute,most", [(sb.ActorPoolStrategy(size=1), 1),
                                          (sb.ActorPoolStrategy(min_size=1, max_size=2), 2),
                                          (sb.TaskPoolStrategy(size=1), None), ("tasks", None)])
def test_compute_strategies_run_the_udf(compute, most):
    class Tag:
        def __init__(self):
            self.pid = os.getpid()
            self.me = id(self)

        def __call__(self, batch):
            return {"id": batch["id"], "who": [f"{self.pid}-{self.me}"] * len(batch["id"])}

    fn = Tag if isinstance(compute, sb.ActorPoolStrategy) else (
        lambda b: {"id": b["id"], "who": ["task"] * len(b["id"])})
    rows = sb.range(40, override_num_blocks=8).map_batches(
        fn, batch_size=5, batch_format="numpy", compute=compute, releases_gil=False).take_all()
    assert sorted(r["id"] for r in rows) == list(range(40))
    if most is not None:
        assert 1 <= len({r["who"] for r in rows}) <= most


def test_compute_and_concurrency_together_or_a_wrong_strategy_are_errors():
    with pytest.raises(ValueError, match="not both"):
        sb.range(3).map(lambda r: r, compute=sb.ActorPoolStrategy(size=1), concurrency=2)
    with pytest.raises(ValueError, match="compute must be"):
        sb.range(3).map_batches(lambda b: b, compute="actors", releases_gil=False)
    with pytest.raises(ValueError, match="min_size"):
        sb.ActorPoolStrategy(min_size=3, max_size=2)


def test_with_column_evaluates_an_expression():
    ds = sb.from_items([{"a": i, "b": 10 * i} for i in range(5)], override_num_blocks=2)
    got = ds.with_column("c", pc.field("a") + pc.field("b")).take_all()
    assert sorted((r["a"], r["c"]) for r in got) == [(i, 11 * i) for i in range(5)]
    replaced = ds.with_column("a", pc.field("a") * -1).take_all()
    assert sorted(r["a"] for r in replaced) == [-4, -3, -2, -1, 0]
    with pytest.raises(TypeError, match="pyarrow.compute expression"):
        ds.with_column("c", lambda b: 1)


@pytest.mark.parametrize("cpus", [1, 3])
def test_take_and_friends_return_rows_in_input_order(cpus):
    """Ray Data's tests expect range / from_* / take / take_all / limit in input order,
    even when the first partitions finish last."""
    import time

    sb.init(num_cpus=cpus)

    def first_ones_slow(row):
        time.sleep(0.03 if row["id"] < 3 else 0)
        return row

    ds = sb.range(12, override_num_blocks=12).map(first_ones_slow)
    assert [r["id"] for r in ds.take(5)] == [0, 1, 2, 3, 4]
    assert [r["id"] for r in ds.take_all()] == list(range(12))
    assert [r["id"] for r in ds.iter_rows()] == list(range(12))
    assert ds.take_batch(4, batch_format="numpy")["id"].tolist() == [0, 1, 2, 3]
    assert ds.limit(7).to_pandas()["id"].tolist() == list(range(7))
    assert [r["item"] for r in sb.from_items(list("abcdef"), override_num_blocks=6).take_all()] \
        == list("abcdef")
