"""The admission policies as small objects, without an engine."""

from __future__ import annotations

import pytest
from streambatch.executor.actor_pool import wanted_actors
from streambatch.executor.contract import Resources
from streambatch.executor.policy import (
    AdaptiveAdmission,
    BudgetAdmission,
    MemoryView,
    StageRate,
    make_policy,
    pipeline_seconds_per_source_task,
)
from streambatch.executor.resources import ResourceLedger

ROOM = MemoryView(used_bytes=0, budget_bytes=10**12, anything_running=True)


def test_p_sums_stage_time_per_source_task_over_parallelism():
    rates = [StageRate(2.0, 4, 1.0), StageRate(0.5, 1, 3.0), StageRate(1.0, 2, 0.5)]
    assert pipeline_seconds_per_source_task(rates) == pytest.approx(0.5 + 1.5 + 0.25)


def test_static_policy_admits_until_the_budget_is_full():
    policy = BudgetAdmission()
    assert policy.admit_source(MemoryView(70, 100, True), 30, now=0.0)
    assert not policy.admit_source(MemoryView(71, 100, True), 30, now=0.0)
    assert policy.admit(MemoryView(200, 100, False), 30)  # liveness: nothing running


def test_adaptive_allowance_grows_at_the_pipeline_drain_rate():
    policy = AdaptiveAdmission(initial_tasks=1)
    rates = [StageRate(task_time_s=2.0, slots=1, tasks_per_source_task=1.0)]  # P = 2 s
    policy.observe(rates, source_bytes=1000, now=10.0)
    admitted = 0
    for now in (10.0, 11.0, 12.0, 13.0, 14.0):
        policy.observe(rates, source_bytes=1000, now=now)
        while policy.admit_source(ROOM, 1000, now):
            policy.source_started(1000)
            admitted += 1
    # 1 initial task, then 1000 bytes / 2 s = one more task every 2 s: at 12 s and 14 s.
    assert admitted == 3


def test_adaptive_follows_more_parallelism_downstream():
    slow, fast = AdaptiveAdmission(initial_tasks=0), AdaptiveAdmission(initial_tasks=0)
    for policy, slots in ((slow, 1), (fast, 4)):
        rates = [StageRate(4.0, slots, 1.0)]
        policy.observe(rates, 100, now=0.0)
        policy.observe(rates, 100, now=8.0)
    assert slow.allowance == pytest.approx(200)  # 100 bytes per 4 s
    assert fast.allowance == pytest.approx(800)  # 100 bytes per 1 s


def test_adaptive_never_exceeds_the_memory_budget():
    policy = AdaptiveAdmission(initial_tasks=100)
    policy.observe([StageRate(0.001, 8, 1.0)], 10, now=0.0)
    assert not policy.admit_source(MemoryView(95, 100, True), 10, now=0.0)


def test_adaptive_without_measurements_only_applies_the_memory_rule():
    policy = AdaptiveAdmission(initial_tasks=1)
    policy.observe([], 100, now=0.0)
    assert all(policy.admit_source(ROOM, 100, now=0.0) for _ in range(10))


def test_policy_names():
    assert isinstance(make_policy("adaptive"), AdaptiveAdmission)
    assert type(make_policy("static")) is BudgetAdmission


def test_autoscaling_target_is_one_actor_per_task_in_the_backlog_within_bounds():
    # (the queue depth is for tasks beyond the pool's maximum: six batches with sixteen
    # free GPUs run on six actors, not two after each other on three)
    assert [wanted_actors(b, 2, 1, 4) for b in (0, 1, 2, 3, 7, 100)] == [1, 1, 2, 3, 4, 4]
    assert wanted_actors(6, 2, 2, 16) == 6


def test_ledger_packs_fractional_gpus_and_refuses_the_impossible():
    ledger = ResourceLedger(num_cpus=4, num_gpus=2)
    halves = [ledger.acquire(Resources(num_cpus=0, num_gpus=0.5)) for _ in range(3)]
    assert [a.cuda_visible_devices() for a in halves] == ["0", "0", "1"]
    assert ledger.acquire(Resources(num_cpus=0, num_gpus=2)) is None  # only 1.5 free
    assert ledger.fits_ever(Resources(num_gpus=3)) == "asks for 3 GPU but the backend has 2 GPUs"
    whole = ledger.acquire(Resources(num_cpus=0, num_gpus=0.5))
    assert whole.cuda_visible_devices() == "1"


def _stages_with_a_slow_model_still_on_its_first_task(model_age_s: float):
    from streambatch.executor.contract import TaskStage
    from streambatch.executor.snapshots import source_rates
    from streambatch.executor.stage_state import RunningTask, StageState

    read = StageState(0, TaskStage("Read"), 1)
    read.stats.tasks, read.stats.task_time_s, read.done_out = 4, 1.0, 4000
    model = StageState(1, TaskStage("Model", upstream=(0,)), None)
    model.running[1] = RunningTask(1, 1, 0, [], "partition 0", 0, submitted_at=100.0)
    return source_rates([read, model], read, 1000, now=100.0 + model_age_s)


def test_a_stage_that_has_not_finished_a_task_slows_the_source_by_its_oldest_task():
    rates, source_bytes = _stages_with_a_slow_model_still_on_its_first_task(8.0)
    assert source_bytes == 1000
    assert [(r.task_time_s, r.tasks_per_source_task) for r in rates] == [(0.25, 1.0), (8.0, 1.0)]
    policy = AdaptiveAdmission(initial_tasks=1)
    for now in (0.0, 1.0, 2.0):
        policy.observe(rates, source_bytes, now)
    # P = 0.25 + 8.0 s in one pool: about a quarter of a partition per second, not four
    assert policy.allowance == pytest.approx(1000 + 2 * 1000 / 8.25)


def test_refusals_name_the_rule_that_refused():
    policy = AdaptiveAdmission(initial_tasks=1)
    policy.observe([StageRate(1.0, 1, 1.0)], source_bytes=100, now=0.0)
    policy.source_started(100)
    assert not policy.admit_source(ROOM, 100, now=0.0)
    assert policy.blocked_by == "source rate (adaptive)"
    assert not policy.admit_source(MemoryView(950, 1000, True), 100, now=0.0)
    assert policy.blocked_by == "memory budget"


def test_tasks_per_source_task_comes_from_bytes_not_from_finished_counts():
    from streambatch.executor.contract import TaskStage
    from streambatch.executor.snapshots import source_rates
    from streambatch.executor.stage_state import StageState

    read = StageState(0, TaskStage("Read"), 1)
    read.stats.tasks, read.stats.task_time_s, read.done_out = 10, 10.0, 10_000
    model = StageState(1, TaskStage("Model", upstream=(0,)), None)
    # it lags: 6 tasks started of 500 bytes each, only 2 finished so far
    model.next_seq, model.bytes_in = 6, 3000
    model.stats.tasks, model.stats.task_time_s = 2, 4.0
    rates, _ = source_rates([read, model], read, 1000, now=0.0)
    assert [r.tasks_per_source_task for r in rates] == [1.0, 2.0]  # not 2 / 10


def test_a_starving_pipeline_gets_source_tasks_beyond_the_rate():
    policy = AdaptiveAdmission(initial_tasks=2)
    policy.observe([StageRate(10.0, 1, 1.0)], source_bytes=100, now=0.0)  # slow: P = 10 s
    for _ in range(2):
        policy.source_started(100)
    fed = MemoryView(0, 10**9, True, in_pipeline=250)  # 2.5 partitions downstream
    dry = MemoryView(0, 10**9, True, in_pipeline=50)  # half a partition left
    assert not policy.admit_source(fed, 100, now=0.0)
    assert policy.admit_source(dry, 100, now=0.0)
    assert not policy.admit_source(MemoryView(950, 1000, True, in_pipeline=0), 100, now=0.0)
