"""Block alignment (operators/rules/align_blocks.py): a task stage whose only consumer
takes fixed batches, or passes whole blocks on to a stage that is aligned, cuts its
output blocks to that batch size (``out_batch_rows``); nothing else is aligned. Run,
the fixed-batch UDF then sees whole batches."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from streambatch.executor.contract import LimitStage, RepartitionStage, TaskStage, UnionStage
from streambatch.operators.rules.align_blocks import align_blocks

import streambatch as sb

from .plan_helpers import names, rows, stages


@dataclass
class Op:
    name: str
    batch_rows: int | None = None
    is_actor: bool = False


def read(name="Read") -> TaskStage:
    return TaskStage(name, read_tasks_fn=list, read_tasks=[])


def task(name, up, batch=None, **kw) -> TaskStage:
    return TaskStage(name, upstream=(up,), ops=[Op(name, batch)], **kw)


def aligned(plan) -> list:
    return [getattr(s, "out_batch_rows", "-") for s in align_blocks(plan)]


def test_the_producer_of_a_fixed_batch_stage_is_cut_to_its_batch():
    assert aligned([read(), task("B", 0, 8)]) == [8, None]


def test_alignment_passes_back_through_stages_that_take_whole_blocks():
    assert aligned([read(), task("A", 0), task("C", 1), task("B", 2, 8)]) == [8, 8, 8, None]


def test_a_stage_with_its_own_batch_size_stops_the_pass_back():
    assert aligned([read(), task("B8", 0, 8), task("A", 1), task("B4", 2, 4)]) == [8, 4, 4, None]


def test_a_consumer_batch_size_wins_over_the_consumers_own_alignment():
    assert aligned([read(), task("B5", 0, 5), task("B8", 1, 8)]) == [5, 8, None]


@pytest.mark.parametrize("consumer", [
    pytest.param(LimitStage("Limit", upstream=(0,), limit=3), id="limit"),
    pytest.param(RepartitionStage("Repartition", upstream=(0,), num_partitions=2), id="repartition"),
    pytest.param(UnionStage("Union", upstream=(0,)), id="union"),
])
def test_a_driver_stage_consumer_aligns_nothing(consumer):
    plan = [read(), consumer, task("B", 1, 8)]
    assert aligned(plan) == [None, "-", None]


def test_a_stage_with_two_consumers_is_not_aligned():
    plan = [read(), task("B8", 0, 8), task("B4", 0, 4), UnionStage("U", upstream=(1, 2))]
    assert aligned(plan) == [None, None, None, "-"]


def test_both_sides_of_a_union_feeding_nothing_fixed_stay_unaligned():
    plan = [read("R1"), task("A", 0, 8), read("R2"), task("B", 2, 4),
            UnionStage("U", upstream=(1, 3)), task("C", 4, 2)]
    assert aligned(plan) == [8, None, 4, None, "-", None]


def test_a_stage_whose_consumer_has_no_batch_keeps_its_own_alignment_and_passes_it_back():
    plan = [read(), task("A", 0, out_batch_rows=3), task("B", 1)]
    assert aligned(plan) == [3, 3, None]


def test_the_input_list_and_its_stages_are_not_changed():
    plan = [read(), task("A", 0), task("B", 1, 8)]
    out = align_blocks(plan)
    assert [s.out_batch_rows for s in plan] == [None, None, None]
    assert out[2] is plan[2] and out[0] is not plan[0]


def _sizes(batch):
    return {"n": [batch.num_rows]}


def _per_block(batch):
    return {"id": batch["id"]}


@pytest.mark.usefixtures("engine")
def test_planned_small_reads_are_aligned_to_the_batch_and_the_udf_gets_whole_batches():
    ds = sb.range(1000, override_num_blocks=20).map_batches(_sizes, batch_size=100, batch_format="pyarrow")
    got = stages(ds)
    assert names(got) == ["Read[Range]", "MapBatches(_sizes)"]
    assert [s.out_batch_rows for s in got] == [100, None]
    assert [r["n"] for r in rows(ds)] == [100] * 10


@pytest.mark.usefixtures("engine")
def test_a_whole_block_stage_between_passes_the_alignment_to_the_read():
    ds = (sb.range(1000, override_num_blocks=20).map_batches(_per_block, batch_size=None, batch_format="pyarrow")
          .filter(lambda r: r["id"] % 2 == 0).map_batches(_sizes, batch_size=50, batch_format="pyarrow"))
    got = stages(ds)
    assert names(got) == ["Read[Range]->MapBatches(_per_block)->Filter(<lambda>)",
                          "MapBatches(_sizes)"]
    assert [s.out_batch_rows for s in got] == [50, None]
    assert [r["n"] for r in rows(ds)] == [50] * 10  # tasks of 25 rows, bundled in pairs
