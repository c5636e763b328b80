"""All-to-all operators under worker deaths: a worker that ends (``os._exit``, as a
library calling exit does; SIGKILL, as the OOM killer does) on its first attempt
only, agreed through a marker file (the pattern of
``tests/executor/conformance.py::RecoveryConformance``), on the map side or in a
map_groups reduce UDF. The output must stay exact (every group's values, every row
once, in order). Also: where the user's code of an all-to-all runs."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from streambatch.executor.errors import UserCodeError

import streambatch as sb
from tests.executor.recovery_conformance import _die, _first_to_claim

ROWS = 600


def _oracle_sums() -> dict:
    sums: dict = {}
    for i in range(ROWS):
        sums[i % 7] = sums.get(i % 7, 0) + i * 3
    return sums


def _with_key_dying_once(marker: str, driver: int, how: str, at: int):
    """A map_batches UDF (``k``, ``v``) whose worker dies on its first attempt at the
    block starting at row ``at``."""
    def with_key(batch: pa.Table) -> pa.Table:
        if batch["id"][0].as_py() == at and _first_to_claim(marker):
            _die(how, driver)
        ids = batch["id"].to_numpy()
        return pa.table({"k": ids % 7, "v": ids * 3, "id": ids})
    return with_key


@pytest.fixture(autouse=True)
def _context():
    sb.init(num_cpus=2)
    yield
    sb.init()


@pytest.mark.parametrize("how", ["exit", "sigkill"])
@pytest.mark.parametrize("what", ["groupby", "sort", "unique", "shuffle"])
def test_a_map_side_worker_that_dies_once_leaves_the_output_exact(tmp_path, how, what):
    marker = str(tmp_path / "died")
    ds = sb.range(ROWS, override_num_blocks=6).map_batches(
        _with_key_dying_once(marker, os.getpid(), how, at=200), batch_size=None, batch_format="pyarrow", releases_gil=False)
    if what == "groupby":
        got = ds.groupby("k").aggregate(sb.Count(), sb.Sum("v")).take_all()
        assert got == [{"k": k, "count()": sum(1 for i in range(ROWS) if i % 7 == k),
                        "sum(v)": s} for k, s in sorted(_oracle_sums().items())]
    elif what == "sort":
        got = ds.sort(["k", "id"], descending=[True, False]).take_all()
        assert [r["id"] for r in got] == sorted(range(ROWS), key=lambda i: (-(i % 7), i))
    elif what == "unique":
        assert ds.unique("k") == list(range(7))
    else:
        out = ds.random_shuffle(seed=2)
        assert sorted(r["id"] for r in out.take_all()) == list(range(ROWS))
    assert os.path.exists(marker), "the worker never died: the test tested nothing"


def _summary_dying_once(marker: str, driver: int, how: str):
    def summary(batch: pa.Table) -> dict:
        if batch["k"][0].as_py() == 3 and _first_to_claim(marker):
            _die(how, driver)
        return {"k": batch["k"].slice(0, 1), "n": [batch.num_rows],
                "total": [pc.sum(batch["v"]).as_py()]}
    return summary


def _check_summaries(got: list[dict]) -> None:
    sums = _oracle_sums()
    assert sorted((r["k"], r["n"], r["total"]) for r in got) == \
        [(k, sum(1 for i in range(ROWS) if i % 7 == k), sums[k]) for k in range(7)]


@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_a_map_groups_worker_that_dies_once_in_process_mode_leaves_the_output_exact(
        tmp_path, how):
    """With every stage in worker processes (``worker_mode="processes"``), a reduce
    task whose worker dies in the user's map_groups UDF runs again from its bucket."""
    sb.init(num_cpus=2, worker_mode="processes")
    marker = str(tmp_path / "died")
    ds = sb.range(ROWS, override_num_blocks=6).map(
        lambda r: {"k": r["id"] % 7, "v": r["id"] * 3})
    got = ds.groupby("k").map_groups(_summary_dying_once(marker, os.getpid(), how), batch_format="pyarrow").take_all()
    _check_summaries(got)
    assert os.path.exists(marker)


@pytest.mark.parametrize("how", ["exit"])
def test_a_map_groups_worker_that_dies_once_leaves_the_output_exact(tmp_path, how):
    marker = str(tmp_path / "died")
    ds = sb.range(ROWS, override_num_blocks=6).map(
        lambda r: {"k": r["id"] % 7, "v": r["id"] * 3})
    got = ds.groupby("k").map_groups(_summary_dying_once(marker, os.getpid(), how), batch_format="pyarrow").take_all()
    _check_summaries(got)
    assert os.path.exists(marker)


def _pid_of(batch: pa.Table) -> dict:
    return {"k": batch["k"].slice(0, 1), "pid": [os.getpid()]}


def test_a_map_groups_udf_runs_in_a_worker_process_as_map_batches_does():
    driver = os.getpid()
    ds = sb.from_items([{"k": i % 3} for i in range(30)], override_num_blocks=3)
    batches = ds.map_batches(lambda b: {"pid": [os.getpid()] * b.num_rows}, batch_format="pyarrow", releases_gil=False).take_all()
    assert driver not in {r["pid"] for r in batches}  # map_batches: worker processes
    pids = {r["pid"] for r in ds.groupby("k").map_groups(_pid_of, batch_format="pyarrow").take_all()}
    assert driver not in pids


def test_a_user_aggregate_runs_in_worker_processes():
    driver = os.getpid()
    pids = sb.AggregateFn(
        init=lambda key: frozenset(), name="pids",
        accumulate_block=lambda acc, b: acc | {os.getpid()},
        merge=lambda a, b: a | b | {os.getpid()}, finalize=sorted)
    got = sb.from_items([{"k": i % 2} for i in range(20)], override_num_blocks=4) \
        .groupby("k").aggregate(pids).take_all()
    assert all(driver not in r["pids"] for r in got), (driver, got)


def test_a_user_exception_in_a_map_side_udf_is_not_retried_and_names_its_partition(tmp_path):
    calls = tmp_path / "calls"

    def fails(batch):
        with open(calls, "a") as f:
            f.write(f"{batch['id'][0].as_py()}\n")
        if batch["id"][0].as_py() == 300:
            raise ValueError("bad block")
        return batch.append_column("k", pc.bit_wise_and(batch["id"], 3))

    ds = sb.range(ROWS, override_num_blocks=6).map_batches(fails, batch_size=None, batch_format="pyarrow", releases_gil=False)
    with pytest.raises(UserCodeError, match="bad block") as info:
        ds.groupby("k").count().take_all()
    assert "partition 3" in str(info.value) or "300" in str(info.value), str(info.value)
    assert open(calls).read().split().count("300") == 1, "a user exception was retried"
