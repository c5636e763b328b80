"""Prompt cancellation: Ctrl-C or closing an iterator stops the job within a second even
when a UDF hangs (process workers are killed; hung threads are abandoned and their late
output dropped), and a failure while the executor starts leaves no process and no store."""

from __future__ import annotations

import os
import signal
import threading
import time

import psutil
import pyarrow as pa
import pytest
from streambatch.executor.backends.base import TaskDone, TaskOutput
from streambatch.executor.backends.local import LocalBackend
from streambatch.executor.backends.zygote import zygote_pid

import streambatch as sb
from tests.executor.drivers import (
    driver,
    session_processes,
    stores_of,
    wait_for_udf_start,
    wait_until,
)


@pytest.fixture(autouse=True)
def two_cpus():
    sb.init(num_cpus=2)
    yield
    sb.init(num_cpus=2)


def _live_children() -> set[int]:
    """This process's live descendants but the zygote (kept between jobs)."""
    return {c.pid for c in psutil.Process().children(recursive=True)
            if c.status() != psutil.STATUS_ZOMBIE and c.pid != zygote_pid()}


def _gone(pids: set[int]) -> bool:
    return not (pids & _live_children())


@pytest.mark.parametrize("releases_gil", [False, True], ids=["process", "thread"])
def test_ctrl_c_in_iter_batches_stops_a_hung_udf_within_3_s(tmp_path, releases_gil):
    code = f"""
        import streambatch as sb
        sb.init(num_cpus=2)
        ds = sb.range(8, override_num_blocks=2).map_batches(hang, releases_gil={releases_gil})
        for _ in ds.iter_batches():
            pass
    """
    with driver(code, tmp_path) as proc:
        wait_for_udf_start(proc)
        start = time.monotonic()
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(10)
        finally:
            elapsed = time.monotonic() - start
        assert elapsed < 3.0, f"the driver took {elapsed:.1f} s to stop"
        assert code == -signal.SIGINT
        assert "KeyboardInterrupt" in proc.stderr.read()
        wait_until(lambda: not session_processes(proc.pid), 5, "the driver's workers to exit")
        assert stores_of(proc.pid) == []


def _first_fast_then_hang(batch: pa.Table) -> pa.Table:
    if batch["id"][0].as_py() != 0:
        time.sleep(20)
    return batch


def test_closing_the_iterator_kills_a_hung_process_udf_within_1_s():
    before = _live_children()
    it = iter(sb.range(8, override_num_blocks=2).map_batches(_first_fast_then_hang, batch_size=4, batch_format="pyarrow", releases_gil=False)
              .iter_batches(batch_size=4, batch_format="pyarrow"))
    assert next(it)["id"].to_pylist() == [0, 1, 2, 3]
    workers, stores = _live_children() - before, stores_of(os.getpid())
    assert workers and stores  # the hung task runs in a worker process of this job
    start = time.monotonic()
    it.close()
    assert time.monotonic() - start < 1.0
    wait_until(lambda: _gone(workers), 5, "the job's worker processes to exit")
    wait_until(lambda: not any(os.path.exists(s) for s in stores), 5, "the store to go")


def test_breaking_out_of_iter_torch_batches_kills_a_hung_process_udf_within_1_s():
    pytest.importorskip("torch")
    before = _live_children()
    ds = sb.range(8, override_num_blocks=2).map_batches(_first_fast_then_hang, batch_size=4, batch_format="pyarrow", releases_gil=False)
    start = None
    for batch in ds.iter_torch_batches(batch_size=4, device="cpu"):
        assert batch["id"].tolist() == [0, 1, 2, 3]
        workers = _live_children() - before
        start = time.monotonic()
        break
    assert time.monotonic() - start < 1.0
    assert workers
    wait_until(lambda: _gone(workers), 5, "the job's worker processes to exit")


def test_closing_the_iterator_abandons_a_hung_thread_task_and_drops_its_late_output(
        monkeypatch):
    release, late_task_ended = threading.Event(), threading.Event()
    hung = threading.Event()
    backends = []
    run_on_thread = LocalBackend._run_on_thread

    def tracked(self, task):
        backends.append(self)
        try:
            run_on_thread(self, task)
        finally:
            if release.is_set():
                late_task_ended.set()

    def udf(batch: pa.Table) -> pa.Table:
        if batch["id"][0].as_py() != 0:
            hung.set()
            release.wait(20)
        return batch

    monkeypatch.setattr(LocalBackend, "_run_on_thread", tracked)
    it = iter(sb.range(8, override_num_blocks=2).map_batches(udf, batch_size=4, releases_gil=True, batch_format="pyarrow")
              .iter_batches(batch_size=4, batch_format="pyarrow"))
    assert next(it)["id"].to_pylist() == [0, 1, 2, 3]
    assert hung.wait(10), "the second task never started"
    start = time.monotonic()
    it.close()
    assert time.monotonic() - start < 1.0
    events = backends[0].events
    queued = len(events.queue)
    release.set()  # the hung UDF returns now, after the job has stopped
    assert late_task_ended.wait(10)
    late = list(events.queue)[queued:]
    assert [e for e in late if isinstance(e, (TaskOutput, TaskDone))] == []


class _Model:
    def __call__(self, batch):
        return batch


def test_an_unplaceable_actor_pool_leaves_no_process_and_no_store():
    before, stores = _live_children(), set(stores_of(os.getpid()))
    ds = sb.range(10).map(lambda r: r).map_batches(_Model, concurrency=(3, 3), num_cpus=1, batch_format="pyarrow", releases_gil=False)
    with pytest.raises(sb.UnplaceableError, match="needs 3 actor"):
        ds.take_all()
    assert _live_children() - before == set()
    assert set(stores_of(os.getpid())) == stores


def _runs_a_dataset(batch: pa.Table) -> dict:
    inner = sb.range(3).map(lambda r: r).count()
    return {"n": [inner] * batch.num_rows}


class _RunsADataset:
    def __init__(self):
        self.inner = sb.range(5).map(lambda r: r).count()

    def __call__(self, batch: pa.Table) -> dict:
        return {"n": [self.inner] * batch.num_rows}


@pytest.mark.parametrize("how", ["process", "actor", "thread"])
def test_a_dataset_inside_a_udf_runs_and_leaves_nothing(how):
    """A worker started from the zygote may start workers of its own (from a zygote of
    its own, which exits with it): nested datasets work in process, actor and thread
    UDFs, and the outer job's end leaves no process and no store."""
    before, stores = _live_children(), set(stores_of(os.getpid()))
    ds = sb.range(10, override_num_blocks=2)
    if how == "actor":
        ds = ds.map_batches(_RunsADataset, concurrency=1, batch_format="pyarrow", releases_gil=False)
    else:
        ds = ds.map_batches(_runs_a_dataset, releases_gil=how == "thread", batch_format="pyarrow")
    rows = ds.take_all()
    assert sorted(r["n"] for r in rows) == [5 if how == "actor" else 3] * 10
    wait_until(lambda: _live_children() - before == set(), 5, "the inner jobs' processes to exit")
    assert set(stores_of(os.getpid())) == stores


@pytest.mark.filterwarnings("ignore:This process:DeprecationWarning")  # forks on purpose
def test_a_dataset_inside_a_forked_process_udf_fails_clearly_and_leaks_nothing():
    sb.init(num_cpus=2, worker_start_method="fork")
    before, stores = _live_children(), set(stores_of(os.getpid()))
    with pytest.raises(sb.UserCodeError, match="cannot start") as info:
        sb.range(10).map_batches(_runs_a_dataset, batch_format="pyarrow", releases_gil=False).take_all()
    assert "inside streambatch worker process" in str(info.value)
    worker = int(str(info.value).split("inside streambatch worker process ")[1].split()[0])
    assert stores_of(worker) == []  # the inner job's store, made in the worker
    assert _live_children() - before == set()
    assert set(stores_of(os.getpid())) == stores


def _mixed_types():
    """Blocks whose column ``x`` is int64 in some and string in others: a batch that
    spans them fails in the consumer, after the job's workers have started."""
    return sb.range(40, override_num_blocks=4).map(lambda r: {"x": 1 if r["id"] < 20 else "a"})


def _iter_batches(ds, prefetch):
    return list(ds.iter_batches(batch_size=8, prefetch_batches=prefetch, batch_format="pyarrow"))


def _torch_batches(ds, prefetch):
    pytest.importorskip("torch")
    return list(ds.iter_torch_batches(batch_size=8, prefetch_batches=prefetch))


def _split_batches(ds, prefetch):
    (only,) = ds.streaming_split(1, equal=True)
    return list(only.iter_batches(batch_size=8, prefetch_batches=prefetch, batch_format="pyarrow"))


@pytest.mark.parametrize("prefetch", [0, 1])
@pytest.mark.parametrize("consume", [_iter_batches, _torch_batches, _split_batches])
def test_an_error_while_consuming_stops_the_job_at_once(consume, prefetch):
    """The error is still referenced (its traceback holds the consumer's frames), so
    only an explicit stop, not garbage collection, frees the workers and the store."""
    before, stores = _live_children(), set(stores_of(os.getpid()))
    with pytest.raises(ValueError, match="column 'x' is int64 in block 0 and string") as err:
        consume(_mixed_types(), prefetch)
    wait_until(lambda: _live_children() - before == set(), 5, "the job's workers to exit")
    assert set(stores_of(os.getpid())) == stores
    assert err.value.__traceback__ is not None
