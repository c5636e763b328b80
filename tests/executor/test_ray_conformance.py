"""The executor conformance suites on the Ray backend, plus Ray-only checks.

One embedded Ray instance serves the whole module (starting Ray takes seconds):
4 logical CPUs and 2 logical GPUs, the most any conformance test declares;
``streambatch.init(num_cpus=...)`` caps what a job uses of it.
"""

from __future__ import annotations

import os

import pytest

import streambatch as sb
from tests.executor.conformance import (
    ExecutorConformance,
    HeterogeneousConformance,
)
from tests.executor.recovery_conformance import RecoveryConformance

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    """One Ray instance for the module (workers import the test UDFs by module, as
    Ray puts the driver's working directory on their path)."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=4, num_gpus=2, resources={"licence": 1}, include_dashboard=False,
             log_to_driver=False)
    yield
    sb.init()
    ray.shutdown()


@pytest.fixture(autouse=True)
def warm_workers(ray_session):
    """Start (or restart, after a test killed some) a Ray worker per CPU before each
    test: executor behaviour is under test here, not Ray's worker start-up time."""
    ray.get([_warm.remote() for _ in range(4)], timeout=120)


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
        from streambatch.executor.block_split import split_blocks
        from streambatch.executor.contract import TaskStage

        read = [lambda: iter([pa.table({"x": list(range(1000))})])]
        stage = TaskStage("Read", read_tasks_fn=lambda: read, read_tasks=read)
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
        ds = sb.range(10).map_batches(BrokenModel, concurrency=1, releases_gil=False)
        with pytest.raises(sb.UserCodeError) as info:
            ds.take_all()
        assert "MapBatches(BrokenModel)" in str(info.value)
        # the actor's start and its first task both report the failure, whichever comes
        # first: "on actor 0 (while starting), the constructor: ..." or "on partition 0
        # (ids 0-2), the constructor: ..." (a CI run got the second)
        assert "the constructor: RuntimeError: weights not found" in str(info.value)

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


class TestRayRecovery(RecoveryConformance):
    backend = "ray"

    def test_worker_killed_by_a_signal_is_reported_as_killed(self, tmp_path):
        """Ray reports no signal for a crashed worker: the error says it was killed by
        one (not that the UDF exited) and points at memory."""
        with pytest.raises(AssertionError) as info:  # the base test wants "signal 9"
            super().test_worker_killed_by_a_signal_is_reported_as_killed(tmp_path)
        text = str(info.value)
        assert "died without an exit code (killed by a signal" in text and "memory" in text
        assert "exit code None" not in text and "ended the process" not in text


# ---- recovery and liveness on Ray (same session) ----------------------------
@ray.remote(num_cpus=0)
class _Owner:
    """Owns one object; once killed, the object is lost (OwnerDiedError) for good."""

    def make(self):
        import pyarrow as pa

        return [ray.put(pa.table({"id": [-1]}))]


def _lost_object_ref():
    """A real Ray object whose owner died: a task given it fails with OwnerDiedError."""
    owner = _Owner.remote()
    [ref] = ray.get(owner.make.remote(), timeout=120)
    ray.kill(owner, no_restart=True)
    while True:  # until Ray has noticed the owner's death (no time-based assert)
        try:
            ray.get(ref, timeout=5)
        except ray.exceptions.OwnerDiedError:
            return ref
        except ray.exceptions.GetTimeoutError:
            pass


def _losing_backend(lose_stage: int):
    """The Ray backend, except that the first task of ``lose_stage`` is handed a lost
    block instead of its first input (as when the input's node left the cluster)."""
    from streambatch.executor.backends.ray import RayBackend, RayRef

    class LosingRayBackend(RayBackend):
        lost = 0

        def submit(self, task):
            if task.stage_index == lose_stage and not self.lost and task.input_refs:
                task.input_refs = [RayRef(_lost_object_ref())] + list(task.input_refs[1:])
                self.lost += 1
            super().submit(task)

    return LosingRayBackend(num_cpus=2)


def plus_one(batch):
    return {"id": batch["id"], "v": batch["id"] + 1}


class Doubler:
    def __call__(self, batch):
        return {"id": batch["id"], "v": batch["v"] * 2}


def minus_three(batch):
    return {"id": batch["id"], "v": batch["v"] - 3}


def _run_with(backend, ds, **options):
    from streambatch.executor.options import ExecutionOptions
    from streambatch.executor.streaming import StreamingExecutor

    from streambatch.session import Session

    opts = ExecutionOptions(num_cpus=2, **options)
    ex = StreamingExecutor(Session(opts).stages(ds._plan), backend, opts)
    rows = [r for p in ex.run() for r in p.get().to_pylist()]
    return sorted(rows, key=lambda r: r["id"]), ex.stats


class TestRayLostInputRecovery:
    """A lost input block is recomputed by the executor from lineage (Ray retries
    nothing: ray_max_retries=0), back through an actor stage to the read task."""

    def test_lost_input_is_recomputed_from_lineage(self):
        ds = (sb.range(40, override_num_blocks=8)
              .map_batches(plus_one, batch_size=None, batch_format="numpy", releases_gil=False)
              .map_batches(Doubler, batch_size=None, batch_format="numpy", concurrency=1, releases_gil=False)
              .map_batches(minus_three, batch_size=None, batch_format="numpy", num_cpus=0.5, releases_gil=False))
        rows, stats = _run_with(_losing_backend(lose_stage=2), ds)
        assert rows == [{"id": i, "v": (i + 1) * 2 - 3} for i in range(40)]
        read, model, last = stats.stages
        assert last.retries == 1, str(stats)
        assert (read.recomputed, model.recomputed) == (1, 1), str(stats)  # back to the read

    def test_lost_input_without_retries_left_names_stage_and_partition(self):
        ds = (sb.range(8, override_num_blocks=2)
              .map_batches(plus_one, batch_size=None, batch_format="numpy", releases_gil=False)
              .map_batches(minus_three, batch_size=None, batch_format="numpy", num_cpus=0.5, releases_gil=False))
        with pytest.raises(sb.StreamBatchError) as info:
            _run_with(_losing_backend(lose_stage=1), ds, max_task_retries=0)
        assert "MapBatches(minus_three)" in str(info.value)
        assert "lost an input block of partition" in str(info.value)
        assert "OwnerDiedError" in str(info.value)


@ray.remote(num_cpus=0, resources={"licence": 1})
class _Hog:
    """Another user of the cluster holding the one "licence" every task of the job asks
    for. (A custom resource, not every CPU: Ray may keep a CPU lease of the warm-up
    tasks for a while, and an actor asking for all CPUs then waits for it.)"""

    def ready(self):
        return True


def test_tasks_queued_in_the_cluster_are_not_stuck():
    """The no-progress clock starts at TaskStarted: tasks that wait in Ray's queue
    longer than the timeout (what they need is taken) are not reported stuck."""
    import threading

    hog = _Hog.remote()
    ray.get(hog.ready.remote(), timeout=120)  # a C-level wait pytest-timeout cannot interrupt
    freed = threading.Event()

    def free_cpus():
        ray.kill(hog, no_restart=True)
        freed.set()

    timer = threading.Timer(3.0, free_cpus)  # 3x the timeout below (at 0.5 s a run on a
    # machine at load ~8 reported a started 5-row read task stuck after 1 s)
    timer.start()
    try:
        sb.init(backend="ray", num_cpus=2, resources={"licence": 1}, no_progress_timeout_s=1.0)
        ids = sb.range(20, override_num_blocks=4).map_batches(
            lambda b: {"id": b["id"]}, batch_size=None, resources={"licence": 1}, releases_gil=False).take_all()
    finally:
        timer.join()
    assert freed.is_set()
    assert sorted(r["id"] for r in ids) == list(range(20))


def test_a_ragged_tensor_table_goes_through_ray_workers_unchanged():
    """Blocks of a C++-only extension type (arrow.variable_shape_tensor) are put in Ray's
    object store by its workers and come back unchanged (executor/arrow_pickle.py)."""
    from tests.executor.test_arrow_pickle import _pid, _ragged

    table = _ragged(40)
    sb.init(backend="ray", num_cpus=2)
    try:
        out = sb.from_arrow(table).map_batches(_pid, batch_format="pyarrow").to_arrow()
    finally:
        sb.init()
    out = out.sort_by("id")
    assert out["t"].type == table["t"].type
    assert out["t"].to_pylist() == table["t"].to_pylist()
