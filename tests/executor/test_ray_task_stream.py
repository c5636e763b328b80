"""How the Ray backend reads a task's stream of records when the task dies part-way.

The node-loss hang (tests/executor/test_ray_node_loss.py, about 1 run in 8): a
preprocess task on the removed node had sent its ("out", rows, nbytes) record but
not the block. Ray then hands out the generator's own ref (holding NodeDiedError)
in place of the block; the backend took it for the block, posted a TaskOutput, and
the stream ended without "done" or "failed", so the task stayed "running" until
StageStuckError. Here a worker exits at exactly that point, deterministically:
with ``_generator_backpressure_num_objects=1`` the worker pauses at each yield
until the driver has taken the item, so the "out" record is in the driver's hands
before the worker exits.
"""

from __future__ import annotations

import os
import threading

import pyarrow as pa
import pytest

import streambatch as sb

ray = pytest.importorskip("ray")
from streambatch.executor.backends.base import (  # noqa: E402
    TaskDone,
    TaskFailed,
    TaskOutput,
    TaskStarted,
    drain,
)
from streambatch.executor.backends.ray import RayBackend, RayRef  # noqa: E402
from streambatch.executor.backends.ray_stream import (  # noqa: E402
    StreamCut,
    UnreachableObjectError,
    fetch,
    task_records,
)


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    if ray.is_initialized():
        ray.shutdown()
    # address="local": a fresh instance, never a cluster another test run started here
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    sb.init()
    ray.shutdown()


@ray.remote(num_cpus=0, max_retries=0, num_returns="streaming")
def _stream(records: list, then: str):
    """Yield ``records`` (a pyarrow table goes out as a block), then exit the worker
    (``then="exit"``) or simply return (``then="return"``)."""
    # Not `yield from`: Ray send()s into the generator, and a list iterator has no send.
    for record in records:  # noqa: UP028
        yield record
    if then == "exit":
        os._exit(1)


def _gen(records: list, then: str):
    return _stream.options(_generator_backpressure_num_objects=1).remote(records, then)


def _events(gen) -> list:
    """Every event the backend posts while following ``gen`` to its end."""
    backend = RayBackend()
    backend._follow(7, gen, "streambatch-exit-test-7")  # returns once the stream ended
    return drain(backend.events, 0)


def test_a_task_dying_between_an_output_record_and_its_block_fails_the_task():
    events = _events(_gen([("started",), ("out", 3, 24)], then="exit"))
    assert [type(e) for e in events] == [TaskStarted, TaskFailed]  # no TaskOutput of an error
    failed = events[-1]
    assert failed.task_id == 7
    assert failed.failure.kind == "died"  # the executor re-runs it (from lineage if needed)
    assert "WorkerCrashedError" in failed.failure.error


def test_the_records_before_the_failure_come_out_then_the_tasks_error():
    records = task_records(_gen([("started",), ("out", 3, 24)], then="exit"))
    assert next(records) == ("started",)
    with pytest.raises(ray.exceptions.WorkerCrashedError):
        next(records)


def test_a_stream_that_ends_without_a_final_record_fails_the_task():
    events = _events(_gen([("started",)], then="return"))
    assert [type(e) for e in events] == [TaskStarted, TaskFailed]
    assert events[-1].failure.kind == "died"
    assert "without a 'done' or 'failed' record" in events[-1].failure.error


def test_a_whole_stream_gives_started_outputs_and_done():
    table = pa.table({"id": [1, 2, 3]})
    events = _events(_gen([("started",), ("out", 3, table.nbytes), table, ("done", 0.25)],
                          then="return"))
    assert [type(e) for e in events] == [TaskStarted, TaskOutput, TaskDone]
    out = events[1]
    assert (out.task_id, out.rows, out.nbytes) == (7, 3, table.nbytes)
    assert isinstance(out.ref, RayRef) and out.ref.read().equals(table)
    assert events[2].seconds == 0.25


@ray.remote(num_cpus=0)
def _never_ready(release: str) -> int:
    """Returns only once the file ``release`` exists (a ref that stays pending)."""
    while not os.path.exists(release):
        threading.Event().wait(0.05)
    return 1


def test_fetch_waits_while_a_live_node_holds_the_object_and_gives_up_when_none_does(tmp_path):
    ref = _never_ready.remote(str(tmp_path / "release"))
    asked = []

    def held(r) -> bool:  # two slices with a live holder, then its node is gone
        asked.append(r)
        return len(asked) < 3

    with pytest.raises(UnreachableObjectError, match=ref.hex()):
        fetch(ref, slice_s=0.05, held=held)
    assert asked == [ref, ref, ref]
    (tmp_path / "release").touch()
    assert fetch(ref, slice_s=30, held=lambda r: True) == 1  # a ready object comes back


def test_stream_cut_is_an_exception_the_backend_classifies_as_died():
    backend = RayBackend()
    info = backend._classify(StreamCut("the stream ended after ('started',)"), "no-such-key")
    assert info.kind == "died"
    info = backend._classify(UnreachableObjectError("ab12"), "no-such-key")
    assert info.kind == "died"
