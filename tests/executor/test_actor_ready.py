"""Backends say when an actor has started (its constructor ran): ``ActorReady``, before
any of its tasks ends. The executor times a pool's start-up on it and hands tasks to
the actor where they start soonest (tests/executor/test_actor_start_choice.py)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pyarrow as pa
import pytest
from streambatch.executor.backends.base import ActorReady, Task, TaskDone
from streambatch.executor.backends.local import LocalBackend
from streambatch.executor.backends.simulated import SimCost, SimulatedBackend
from streambatch.executor.contract import TaskStage

import streambatch as sb
from streambatch.session import Session

START_S = 0.6


class SlowToStart:
    def __init__(self) -> None:
        time.sleep(START_S)  # stands in for loading a model

    def __call__(self, batch: pa.Table) -> pa.Table:
        return batch


def first_events_of_an_actor(backend, stages: list, stage_index: int) -> tuple[list, float]:
    """Start the backend and one actor of ``stages[stage_index]`` (id 5); its first
    events, and the seconds they took."""
    backend.start(stages, target_bytes=1 << 20)
    try:
        started = time.monotonic()
        backend.start_actor(stage_index, 5, {})
        events: list = []
        while not events and time.monotonic() - started < 60:
            events += backend.poll(1.0)
        return events, time.monotonic() - started
    finally:
        backend.shutdown()


def test_a_local_actor_is_reported_ready_once_its_constructor_ran():
    sb.init(num_cpus=2, progress=False)
    ds = sb.range(4).map_batches(SlowToStart, concurrency=1, batch_size=2)
    stages = Session.current().stages(ds._plan)
    model = next(i for i, s in enumerate(stages) if s.uses_actors)
    events, took = first_events_of_an_actor(LocalBackend(num_cpus=2), stages, model)
    assert events == [ActorReady(5)]
    assert START_S <= took < 30


def test_a_simulated_actor_is_ready_after_its_start_up_before_its_tasks_end():
    backend = SimulatedBackend([SimCost(0.0, 1), SimCost(1.0, 1, startup_s=3.0)], num_cpus=1)
    backend.start([TaskStage("Read"), TaskStage("Model", upstream=(0,))], 100)
    backend.start_actor(1, 7, {})
    backend.submit(Task(1, 1, None, [SimpleNamespace(spans=((0, 2),))], actor_id=7))
    seen = []
    while not any(isinstance(e, TaskDone) for _, e in seen):
        seen += [(backend.clock(), e) for e in backend.poll(10.0)]
    assert [(t, type(e).__name__) for t, e in seen] == [
        (3.0, "ActorReady"), (5.0, "TaskOutput"), (5.0, "TaskDone")]


@pytest.fixture
def ray_session():
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_a_ray_actor_is_reported_ready_once_its_constructor_ran(ray_session):
    from streambatch.executor.backends.ray import RayBackend

    sb.init(num_cpus=2, progress=False, backend="ray")
    try:
        ds = sb.range(4).map_batches(SlowToStart, concurrency=1, batch_size=2)
        session = Session.current()
        stages = session.stages(ds._plan)
        model = next(i for i, s in enumerate(stages) if s.uses_actors)
        events, took = first_events_of_an_actor(RayBackend.from_options(session.options),
                                                stages, model)
    finally:
        sb.init()
    assert events == [ActorReady(5)]
    assert START_S <= took < 60
