"""A stage that takes a source's output in fixed batches, with room for another task
and less than a batch queued, waits on the source alone: the adaptive source rate does
not hold the source then (sweep seed 20: two GPU actors on batches of 128 rows of a
2 ms read; the rate, one busy actor's, spread the second batch's reads over 66 s while
the other actor stood idle)."""

from __future__ import annotations

from collections import deque
from types import SimpleNamespace

from streambatch.executor.accounting import batch_wanted
from streambatch.executor.contract import TaskStage
from streambatch.executor.policy import AdaptiveAdmission, MemoryView, StageRate
from streambatch.executor.simulation import PipelineSpec, SourceSpec, StageSpec, simulate
from streambatch.executor.stage_state import StageState


def read_then_model(queued_rows: list[int], running: int, slots: float = 2.0):
    read = StageState(0, TaskStage("Read", read_tasks_fn=list), 1)
    model = StageState(1, TaskStage("Model", upstream=(0,),
                                    ops=[SimpleNamespace(batch_rows=128)]), None)
    model.inputs[0] = deque(SimpleNamespace(rows=r) for r in queued_rows)
    model.running = {i: SimpleNamespace() for i in range(running)}
    return [read, model], (lambda st: (slots, "actors-1"))


def test_a_batch_stage_with_room_and_less_than_a_batch_queued_wants_one():
    states, slots_of = read_then_model([2] * 30, running=1)
    assert batch_wanted(states, slots_of, "actors-1")


def test_no_batch_is_wanted_when_one_is_queued_no_actor_has_room_or_it_is_not_the_bottleneck():
    states, slots_of = read_then_model([2] * 64, running=1)
    assert not batch_wanted(states, slots_of, "actors-1")  # a whole batch waits
    states, slots_of = read_then_model([2] * 30, running=2)
    assert not batch_wanted(states, slots_of, "actors-1")  # both actors busy
    states, slots_of = read_then_model([2] * 30, running=1)
    states[1].upstream_finished[0] = True
    assert not batch_wanted(states, slots_of, "actors-1")  # no more input comes: a short batch goes
    states, slots_of = read_then_model([2] * 30, running=1)
    assert not batch_wanted(states, slots_of, "cpu")  # the CPUs bound the pipeline
    assert not batch_wanted(states, slots_of, None)  # not known yet


def test_the_source_rate_does_not_hold_a_source_a_batch_waits_for():
    policy = AdaptiveAdmission(initial_tasks=2)
    policy.observe([StageRate(66.0, 1, 1 / 64)], source_bytes=100, now=0.0)
    policy.observe([StageRate(66.0, 1, 1 / 64)], source_bytes=100, now=1.0)
    policy.source_started(10_000)  # far beyond what the rate allows
    busy = MemoryView(0, 10**9, True, in_pipeline=3_000)
    assert not policy.admit_source(busy, 100, now=1.0)
    assert policy.blocked_by == "source rate (adaptive)"
    wanted = MemoryView(0, 10**9, True, in_pipeline=3_000, batch_wanted=True)
    assert policy.admit_source(wanted, 100, now=1.0)


def test_two_gpu_actors_on_large_batches_of_a_cheap_read_both_run():
    spec = PipelineSpec(SourceSpec(250, 2, 0.0020405, 14_559.47),
                        (StageSpec("Gpu1", 0.5203434, 0.0587724, batch_rows=128, num_cpus=0,
                                   num_gpus=1.0, actors=(1, 2), startup_s=1.0),),
                        num_cpus=8, num_gpus=2, budget_bytes=8_388_608, seconds_per_task=0.01)
    result = simulate(spec)
    assert not result.over_budget
    assert result.seconds < 200.0, result.stats  # was 217 s: the second actor idle 66 s
