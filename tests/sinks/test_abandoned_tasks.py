"""A failed write leaves nothing behind, even from a task still running on a thread
when the job failed: nothing can kill a thread, so a sink checks before each commit."""

from __future__ import annotations

import threading

import numpy as np
from streambatch.connectors.image_sink import ImageSink

import streambatch as sb


class _Watched(ImageSink):
    """The image sink, telling the test when the driver cleans up and when the late
    task has ended (the sink is shared with the thread tasks: they run in the driver)."""

    aborting = threading.Event()
    late_started = threading.Event()  # the late task is running: the failure may come
    ended = threading.Semaphore(0)  # released as each write task ends

    def abort(self) -> None:
        type(self).aborting.set()
        super().abort()

    def write(self, blocks, ctx):
        try:
            return super().write(blocks, ctx)
        finally:
            type(self).ended.release()


def _wait_for_cleanup(batch):
    """The late task waits (running) for the driver's cleanup; the failing one waits for
    the late one to be running, so the failure always finds it in flight."""
    if "late.png" in list(batch["name"]):
        _Watched.late_started.set()
        assert _Watched.aborting.wait(20), "the job's cleanup never ran"
    else:
        assert _Watched.late_started.wait(20), "the late task never started"
    return batch


def test_a_thread_task_that_outlives_a_failed_write_commits_nothing(tmp_path):
    sb.init(num_cpus=2)
    image = np.zeros((4, 4, 3), np.uint8)
    rows = [{"image": image, "name": "dup.png"}, {"image": image, "name": "dup.png"},
            {"image": image, "name": "late.png"}, {"image": image, "name": "late2.png"}]
    ds = sb.from_items(rows, override_num_blocks=2).map_batches(
        _wait_for_cleanup, batch_format="numpy", batch_size=2, releases_gil=True)
    sink = _Watched(str(tmp_path / "o"), column="image", filename_column="name")
    try:
        ds._write(sink)
    except Exception as exc:  # noqa: BLE001 - the duplicate name fails the job
        assert "dup.png" in str(exc)
    else:
        raise AssertionError("a duplicate file name must fail the write")
    assert all(_Watched.ended.acquire(timeout=20) for _ in range(2)), "a task never ended"
    assert sorted(p.name for p in (tmp_path / "o").rglob("*.png")) == []
