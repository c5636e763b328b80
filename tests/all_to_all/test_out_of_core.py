"""Exchanges larger than the memory budget: what an exchange holds beyond its share of
the budget goes to disk while it waits for its whole input, its buckets grow in number
with its input, and the result is exact."""

from __future__ import annotations

import glob
import tempfile

import numpy as np
import pytest

import streambatch as sb

MiB = 2**20


def _rows(batch):
    rng = np.random.default_rng(int(batch["id"][0]))
    n = len(batch["id"])
    return {"id": batch["id"], "k": batch["id"] % 97, "v": rng.random(n),
            "pad": np.zeros((n, 14))}  # ~128 bytes a row


@pytest.fixture(autouse=True)
def _context():
    sb.init(num_cpus=2, memory_budget=4 * MiB)
    yield
    sb.init()


def _data(rows: int):
    return sb.range(rows, override_num_blocks=20).map_batches(_rows, batch_format="numpy",
                                                               batch_size=None)


def test_a_sort_of_ten_times_the_budget_spills_and_stays_exact():
    before = set(glob.glob(f"{tempfile.gettempdir()}/streambatch-spill-*"))
    ds = _data(320_000).sort("v")  # ~40 MiB of rows under a 4 MiB budget
    prev, rows = -1.0, 0
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        v = batch["v"].to_numpy()
        assert (np.diff(v) >= 0).all() and v[0] >= prev
        prev, rows = v[-1], rows + len(v)
    assert rows == 320_000
    stats = ds.stats()
    exchange = next(s for s in stats.stages if s.name.endswith(".exchange"))
    reduce = next(s for s in stats.stages if s.name.endswith(".reduce"))
    assert exchange.spilled_bytes > 30 * MiB  # most of the input waited on disk
    assert reduce.tasks >= 30  # buckets of about a quarter of the budget each
    assert stats.peak_buffered_bytes <= 2 * stats.memory_budget
    assert set(glob.glob(f"{tempfile.gettempdir()}/streambatch-spill-*")) == before  # removed


def test_a_groupby_of_ten_times_the_budget_is_exact():
    got = _data(320_000).groupby("k").aggregate(sb.Count(), sb.Sum("id")).take_all()
    assert [r["k"] for r in got] == list(range(97))
    assert all(r["count()"] == len(range(r["k"], 320_000, 97)) for r in got)
    assert all(r["sum(id)"] == sum(range(r["k"], 320_000, 97)) for r in got)
