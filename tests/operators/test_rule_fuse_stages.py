"""Stage fusion (operators/rules/fuse_stages.py) on hand-built stages: what fuses, what
never does (a resource or concurrency change, an actor-pool stage upstream, a
row-count-changing op into a fixed-batch op, a read of small tasks into a fixed-batch
op, a driver-state op into process workers, a stage with two consumers), how fused
stages are named, where they run and how ``upstream`` links are re-indexed; plus the
batch sizes a UDF sees when the plan runs."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from streambatch.connectors.datasource import ReadTask
from streambatch.executor.contract import LimitStage, Resources, TaskStage, UnionStage
from streambatch.operators.rules.fuse_stages import can_fuse, fuse, fuse_stages

import streambatch as sb

from .plan_helpers import names, rows, stages


@dataclass
class Op:
    """A block op with the fields fusion reads."""

    name: str
    holds_gil: bool = False
    batch_rows: int | None = None
    changes_row_count: bool = False
    is_actor: bool = False
    stays_in_driver: bool = False


def source(name="Read", task_rows=(), **kw) -> TaskStage:
    tasks = [ReadTask(lambda: iter(()), estimated_rows=n) for n in task_rows]
    return TaskStage(name, read_tasks_fn=lambda: tasks, read_tasks=tasks, **kw)


def stage(name, up=0, **op_fields) -> TaskStage:
    stage_fields = {k: op_fields.pop(k) for k in ("resources", "concurrency", "worker")
                    if k in op_fields}
    return TaskStage(name, upstream=(up,), ops=[Op(name, **op_fields)], **stage_fields)


def test_a_chain_of_plain_stages_becomes_one_named_after_all():
    out = fuse_stages([source(), stage("A", 0), stage("B", 1), stage("C", 2)])
    assert names(out) == ["Read->A->B->C"]
    assert [op.name for op in out[0].ops] == ["A", "B", "C"]
    assert out[0].is_source and out[0].upstream == ()


@pytest.mark.parametrize("change, after", [
    ({"resources": Resources(num_cpus=2)}, ["B->C"]),
    ({"resources": Resources(memory=1)}, ["B->C"]),
    ({"concurrency": (1, 2)}, ["B->C"]),
    # a GPU stage runs in an actor pool: never the upstream side, even of its equal
    ({"resources": Resources(num_gpus=1)}, ["B", "C"]),
])
def test_never_across_a_resource_or_concurrency_change(change, after):
    out = fuse_stages([source(), stage("A", 0), stage("B", 1, **change), stage("C", 2, **change)])
    assert names(out) == ["Read->A"] + after  # the changed pair fuses with its equal
    assert out[1].upstream == (0,)


def test_an_actor_stage_is_never_the_upstream_side_but_may_be_the_downstream_side():
    out = fuse_stages([source(), stage("Model", 0, is_actor=True), stage("After", 1)])
    assert names(out) == ["Read->Model", "After"]
    assert out[1].upstream == (0,) and out[0].uses_actors and not out[1].uses_actors


@pytest.mark.parametrize("gpus", [1, 0.5])
def test_a_gpu_function_stage_is_an_actor_pool_so_never_the_upstream_side(gpus):
    # DESIGN: never fuse an actor-pool stage as the upstream side. A function UDF that
    # asks for GPUs has no is_actor op, but its stage uses_actors (a pool of GPU actors):
    # what follows it, even on the same GPU resources, runs in its own stage.
    gpu = Resources(num_gpus=gpus)
    first, second = stage("Embed", 0, resources=gpu), stage("Score", 1, resources=gpu)
    assert first.uses_actors and not any(op.is_actor for op in first.ops)
    assert not can_fuse(first, second)
    out = fuse_stages([source(), first, second])
    assert names(out) == ["Read", "Embed", "Score"]
    assert [s.upstream for s in out] == [(), (0,), (1,)]


def test_a_row_count_changing_op_never_feeds_a_fixed_batch_op_in_the_same_task():
    out = fuse_stages([source(), stage("Filter", 0, changes_row_count=True),
                       stage("Batches", 1, batch_rows=8)])
    assert names(out) == ["Read->Filter", "Batches"]
    assert out[1].batch_rows == 8


def test_a_row_count_changing_op_fuses_into_an_op_that_takes_whole_blocks():
    out = fuse_stages([source(), stage("Filter", 0, changes_row_count=True),
                       stage("Whole", 1, batch_rows=None), stage("Map", 2)])
    assert names(out) == ["Read->Filter->Whole->Map"]


def test_a_row_preserving_stage_fuses_into_a_fixed_batch_op():
    up = stage("Map", 0)
    assert can_fuse(up, stage("Batches", 0, batch_rows=8))
    assert not can_fuse(stage("Flat", 0, changes_row_count=True), stage("Batches", 0, batch_rows=8))


@pytest.mark.parametrize("task_rows, fuses", [
    ((), True),                  # nothing known: fused
    ((None, None), True),        # no estimates: fused
    ((100, 100), True),          # each task holds a batch exactly
    ((10, 100, 200), True),      # the median task holds one
    ((10, 10, 200), False),      # the median task does not
    ((99,), False),
    ((5,) * 20, False),          # many tiny reads: bundled in another stage
])
def test_a_read_fuses_into_a_fixed_batch_op_only_when_its_median_task_holds_a_batch(
        task_rows, fuses):
    out = fuse_stages([source(task_rows=task_rows), stage("Batches", 0, batch_rows=100)])
    assert names(out) == (["Read->Batches"] if fuses else ["Read", "Batches"])


@pytest.mark.parametrize("task_rows", [(1000, 1000), (None, None), ()])
def test_a_read_with_a_pushed_filter_never_fuses_into_a_fixed_batch_op(task_rows):
    # its estimated_rows count rows before the filter: an upper bound, not a batch
    read = source(task_rows=task_rows)
    if read.read_tasks:
        read.read_tasks = [replace(t, filtered=True) for t in read.read_tasks]
        assert not can_fuse(read, stage("Batches", 0, batch_rows=100))
    assert can_fuse(read, stage("Whole", 0, batch_rows=None))  # whole blocks: fused


def test_the_planner_marks_the_read_tasks_of_a_read_with_a_pushed_filter():
    ds = sb.range(1000, override_num_blocks=2)
    (plain,) = stages(ds)
    (filtered,) = stages(ds.filter(expr=pc.field("id") < 10))
    assert [t.filtered for t in plain.read_tasks] == [False, False]
    assert [t.filtered for t in filtered.read_tasks] == [True, True]
    assert [t.filtered for t in filtered.read_tasks_fn()] == [True, True]  # as run
    assert names(stages(ds.filter(expr=pc.field("id") < 10).map_batches(_sizes, batch_size=100, batch_format="pyarrow"))) == [
        "Read[Range; filter=(id < 10)]", "MapBatches(_sizes)"]


def test_a_map_that_skips_failed_rows_never_fuses_into_a_fixed_batch_op():
    from streambatch.operators import logical as L
    from streambatch.operators.block_ops import block_op

    for on_error, fuses in (("raise", True), ("skip", False)):
        up = TaskStage("Map", upstream=(0,), ops=[block_op(L.MapRows(None, fn=dict, on_error=on_error))])
        assert can_fuse(up, stage("Batches", 1, batch_rows=8)) is fuses, on_error
        assert can_fuse(up, stage("Whole", 1, batch_rows=None))


def test_a_read_with_a_row_count_changing_op_never_fuses_into_a_fixed_batch_op():
    read = replace(source(task_rows=(1000, 1000)), ops=[Op("SkippedReads", changes_row_count=True)])
    assert not can_fuse(read, stage("Batches", 0, batch_rows=100))


@pytest.mark.parametrize("up_worker, down_worker, fuses", [
    ("thread", "thread", True), ("process", "thread", False), ("thread", "process", False),
])
def test_a_driver_state_op_never_fuses_into_a_process_stage(up_worker, down_worker, fuses):
    for driver_side in ("up", "down"):
        up = stage("Up", 0, worker=up_worker, stays_in_driver=driver_side == "up")
        down = stage("Down", 0, worker=down_worker, stays_in_driver=driver_side == "down")
        assert can_fuse(up, down) is fuses, driver_side


def test_a_fused_stage_runs_in_processes_when_either_side_does():
    for a, b, want in (("thread", "thread", "thread"), ("process", "thread", "process"),
                       ("thread", "process", "process"), ("process", "process", "process")):
        assert fuse(stage("A", 0, worker=a), stage("B", 1, worker=b)).worker == want
    out = fuse_stages([source(), stage("A", 0, worker="process"), stage("B", 1)])
    assert [(s.name, s.worker) for s in out] == [("Read->A->B", "process")]


def test_a_fused_stage_keeps_the_upstream_sides_resources_and_batch():
    gpu = Resources(num_gpus=1)
    fused = fuse(stage("A", 0, batch_rows=4, resources=gpu), stage("B", 1, resources=gpu))
    assert (fused.resources, fused.batch_rows, fused.upstream) == (gpu, 4, (0,))


def test_a_stage_with_two_consumers_fuses_with_neither():
    plan = [source(), stage("A", 0), stage("B", 0), UnionStage("Union", upstream=(1, 2))]
    out = fuse_stages(plan)
    assert names(out) == ["Read", "A", "B", "Union"]
    assert [s.upstream for s in out] == [(), (0,), (0,), (1, 2)]


def test_sources_and_driver_stages_are_never_the_downstream_side():
    out = fuse_stages([source("R1"), source("R2"), UnionStage("Union", upstream=(0, 1)),
                       stage("A", 2), LimitStage("Limit", upstream=(3,), limit=3), stage("B", 4),
                       stage("C", 5)])
    assert names(out) == ["R1", "R2", "Union", "A", "Limit", "B->C"]
    assert [s.upstream for s in out] == [(), (), (0, 1), (2,), (3,), (4,)]
    assert not can_fuse(source("R1"), source("R2"))
    assert not can_fuse(LimitStage("L", (0,), 1), stage("A", 0))


def test_links_are_reindexed_after_fusion_in_both_branches_of_a_union():
    plan = [source("R1"), stage("A", 0), stage("B", 1), source("R2"), stage("C", 3),
            UnionStage("Union", upstream=(2, 4)), stage("D", 5)]
    out = fuse_stages(plan)
    assert names(out) == ["R1->A->B", "R2->C", "Union", "D"]
    assert [s.upstream for s in out] == [(), (), (0, 1), (2,)]


def test_the_input_stages_are_not_changed():
    plan = [source(), stage("A", 0), stage("B", 1)]
    before = [(s.name, s.upstream, list(s.ops)) for s in plan]
    fuse_stages(plan)
    assert [(s.name, s.upstream, list(s.ops)) for s in plan] == before


# ---- property: random linear chains ------------------------------------------------

STAGE = st.fixed_dictionaries({
    "resources": st.sampled_from([Resources(), Resources(num_gpus=1)]),
    "concurrency": st.sampled_from([None, (1, 2)]),
    "worker": st.sampled_from(["thread", "process"]),
    "batch_rows": st.sampled_from([None, None, 8]),
    "changes_row_count": st.booleans(),
    "is_actor": st.booleans(),
    "stays_in_driver": st.sampled_from([False, False, True]),
})


@settings(max_examples=150, deadline=None)
@given(specs=st.lists(STAGE, min_size=1, max_size=7),
       task_rows=st.lists(st.sampled_from([None, 4, 8, 100]), max_size=4))
def test_random_chains_fuse_maximally_and_never_against_a_rule(specs, task_rows):
    plan = [source(task_rows=task_rows)] + [stage(f"S{i}", i, **spec)
                                            for i, spec in enumerate(specs)]
    out = fuse_stages(plan)
    # the ops run in the same order, each stage reads from the one before it
    assert [op.name for s in out for op in s.ops] == [f"S{i}" for i in range(len(specs))]
    assert [s.upstream for s in out] == [()] + [(i,) for i in range(len(out) - 1)]
    firsts = {s.ops[0].name if s.ops else None: s for s in plan}
    for i, st_ in enumerate(out):
        ops = st_.ops
        # maximal: the next stage could not have joined this one
        if i + 1 < len(out):
            assert not can_fuse(st_, firsts[out[i + 1].ops[0].name])
        for j, op in enumerate(ops):
            original = firsts[op.name]
            before = ops[:j]
            if before or (j == 0 and st_.is_source):  # op was fused into what precedes it
                assert (original.resources, original.concurrency) == (st_.resources, st_.concurrency)
                assert not any(b.is_actor for b in before)
                assert not (before and original.resources.num_gpus)  # GPU: an actor pool
                if op.batch_rows:
                    assert not any(b.changes_row_count for b in before)
                    if st_.is_source and task_rows:
                        rows_ = sorted(r or 8 for r in task_rows)
                        assert rows_[len(rows_) // 2] >= 8
        if any(op.stays_in_driver for op in ops) and (len(ops) > 1 or st_.is_source):
            assert st_.worker == "thread"
        assert st_.worker == ("process" if any(firsts[op.name].worker == "process" for op in ops)
                              else "thread")


# ---- running: the batch sizes a UDF sees ----------------------------------------------

def _sizes(batch):
    return {"n": [batch.num_rows]}


@pytest.mark.usefixtures("engine")
def test_a_fixed_batch_op_after_a_filter_gets_full_batches_across_read_tasks():
    ds = sb.range(1000, override_num_blocks=4).filter(lambda r: r["id"] % 5 != 0).map_batches(
        _sizes, batch_size=100, batch_format="pyarrow")
    assert len(stages(ds)) == 2
    assert [r["n"] for r in rows(ds)] == [100] * 8


@pytest.mark.usefixtures("engine")
def test_a_read_of_big_tasks_fused_into_a_fixed_batch_op_cuts_batches_at_task_ends():
    ds = sb.range(1000, override_num_blocks=3).map_batches(_sizes, batch_size=100, batch_format="pyarrow")
    assert names(stages(ds)) == ["Read[Range]->MapBatches(_sizes)"]
    assert [r["n"] for r in rows(ds)] == [100, 100, 100, 34, 100, 100, 100, 33, 100, 100, 100, 33]


@pytest.mark.usefixtures("engine")
def test_a_read_with_a_pushed_filter_is_not_fused_into_a_fixed_batch_op_by_its_unfiltered_size():
    keep = (pc.field("id") < 60) | ((pc.field("id") >= 500) & (pc.field("id") < 560))
    ds = sb.range(1000, override_num_blocks=2).filter(expr=keep).map_batches(_sizes, batch_size=100, batch_format="pyarrow")
    assert [r["n"] for r in rows(ds, optimized=False)] == [100, 20]
    assert [r["n"] for r in rows(ds)] == [100, 20]


def _first_60_of_each_half(row):
    if row["id"] % 500 >= 60:
        raise ValueError("dropped")
    return row


@pytest.mark.usefixtures("engine")
def test_a_fixed_batch_op_after_a_map_that_skips_rows_gets_its_batches_across_read_tasks():
    ds = sb.range(1000, override_num_blocks=2).map(_first_60_of_each_half, on_error="skip") \
        .map_batches(_sizes, batch_size=100, batch_format="pyarrow")
    assert len(stages(ds)) == 2
    assert [r["n"] for r in rows(ds, optimized=False)] == [100, 20]
    assert [r["n"] for r in rows(ds)] == [100, 20]

