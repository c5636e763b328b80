"""The executor conformance suites on the Ray backend, plus Ray-only checks.

One embedded Ray instance serves the whole module (starting Ray takes seconds):
4 logical CPUs and 2 logical GPUs, the most any conformance test declares;
``streambatch.init(num_cpus=...)`` caps what a job uses of it.
"""

from __future__ import annotations

import os

import pytest

import streambatch as sb
from tests.executor.conformance import ExecutorConformance, HeterogeneousConformance

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    """One Ray instance for the module (workers import the test UDFs by module, as
    Ray puts the driver's working directory on their path)."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=4, num_gpus=2, include_dashboard=False, log_to_driver=False)
    yield
    sb.init()
    ray.shutdown()


@pytest.fixture(autouse=True)
def warm_workers(ray_session):
    """Start (or restart, after a test killed some) a Ray worker per CPU before each
    test: executor behaviour is under test here, not Ray's worker start-up time."""
    ray.get([_warm.remote() for _ in range(4)])


@ray.remote(num_cpus=1)
def _warm() -> None:
    import time

    import streambatch.executor.backends.ray  # noqa: F401 - what a task imports first

    time.sleep(0.05)


class TestRayBackend(ExecutorConformance):
    backend = "ray"

    def test_outputs_stream_back_as_object_refs(self):
        import pyarrow as pa
        from streambatch.executor.backends.base import Task, TaskDone, TaskOutput, TaskStarted
        from streambatch.executor.backends.ray import RayBackend, RayRef
        from streambatch.executor.stage import PhysicalStage, split_blocks

        read = [lambda: iter([pa.table({"x": list(range(1000))})])]
        stage = PhysicalStage("Read", read_tasks_fn=lambda: read, read_tasks=read)
        backend = RayBackend(num_cpus=2)
        backend.start([stage], target_bytes=2000)
        backend.submit(Task(0, 0, 0, [], "partition 0"))
        events = []
        while not any(isinstance(e, TaskDone) for e in events):
            events += backend.poll(5.0)
        backend.shutdown()
        outputs = [e for e in events if isinstance(e, TaskOutput)]
        assert isinstance(events[0], TaskStarted)
        assert all(isinstance(e.ref, RayRef) for e in outputs)
        assert [e.rows for e in outputs] == [250] * 4  # split to the target in the worker
        expected = list(split_blocks(iter([pa.table({"x": list(range(1000))})]), 2000))
        assert [e.ref.read() for e in outputs] == expected

    def test_tasks_run_in_ray_workers(self):
        ds = sb.range(8, override_num_blocks=4).map(lambda r: {"pid": os.getpid()})
        pids = {r["pid"] for r in ds.take_all()}
        assert os.getpid() not in pids

    def test_actor_constructor_error_names_stage_and_cause(self):
        ds = sb.range(10).map_batches(BrokenModel, concurrency=1)
        with pytest.raises(sb.UserCodeError) as info:
            ds.take_all()
        assert "MapBatches(BrokenModel)" in str(info.value)
        assert "while starting" in str(info.value)
        assert "RuntimeError: weights not found" in str(info.value)

    def test_resources_come_from_the_cluster_capped_by_init(self):
        from streambatch.executor.backends.ray import RayBackend

        assert RayBackend(num_cpus=None).total_resources() == (4.0, 2.0, {})
        assert RayBackend(num_cpus=2, num_gpus=1).total_resources() == (2.0, 1.0, {})


class BrokenModel:
    def __init__(self) -> None:
        raise RuntimeError("weights not found")

    def __call__(self, batch):
        return batch


class TestRayHeterogeneous(HeterogeneousConformance):
    backend = "ray"
