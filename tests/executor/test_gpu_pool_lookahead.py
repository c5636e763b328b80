"""The one GPU pool of a plan starts actors for the rows on their way to it (issue 20),
but only for rows that will reach it: a filter, a union or a job of one batch starts
no model it does not need (an adversarial probe found 4 model loads for one batch)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from streambatch.executor.actor_stages import ActorStages
from streambatch.executor.contract import Resources, TaskStage
from streambatch.executor.resources import ResourceLedger
from streambatch.executor.stage_state import StageState

import streambatch as sb


class Doubler:
    """A stand-in model: its constructor is what a start costs."""

    def __call__(self, batch):
        return {"id": batch["id"], "y": batch["id"] * 2}


@pytest.fixture(autouse=True)
def logical_gpus():
    sb.init(num_cpus=2, num_gpus=4)
    yield
    sb.init()


def _run(ds, rows: list[int]) -> int:
    ds = ds.map_batches(Doubler, batch_size=128, num_gpus=1, num_cpus=0, concurrency=(1, 4),
                        batch_format="numpy")
    out = ds.take_all()
    assert sorted((r["id"], r["y"]) for r in out) == [(i, 2 * i) for i in rows]
    return ds.stats().stages[-1].actors_peak


def test_one_batch_starts_one_actor():
    assert _run(sb.range(100), list(range(100))) == 1


def test_rows_a_filter_drops_start_no_actor():
    kept = [i for i in range(20_000) if i % 1000 == 0]
    ds = sb.range(20_000, override_num_blocks=8).filter(lambda r: r["id"] % 1000 == 0)
    assert _run(ds, kept) == 1


def test_the_other_side_of_a_union_starts_no_actor_of_its_own():
    ds = sb.range(100).union(sb.from_items([{"id": i} for i in range(100, 120)]))
    assert _run(ds, list(range(120))) == 1


def test_pools_that_share_the_gpus_do_not_look_ahead():
    backend = SimpleNamespace(place_actor=lambda *a: None, start_actor=lambda *a: None)
    stages = ActorStages(backend, ResourceLedger(num_cpus=4, num_gpus=2))
    one = [StageState(0, TaskStage("Read"), 1),
           StageState(1, TaskStage("A", upstream=(0,), resources=Resources(0, 0.5)), None)]
    stages.start(one)
    assert stages.pools[1].looks_ahead
    two = one + [StageState(2, TaskStage("B", upstream=(1,), resources=Resources(0, 0.5)),
                            None)]
    stages = ActorStages(backend, ResourceLedger(num_cpus=4, num_gpus=2))
    stages.start(two)
    assert not stages.pools[1].looks_ahead and not stages.pools[2].looks_ahead
