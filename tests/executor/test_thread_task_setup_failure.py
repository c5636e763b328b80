"""A thread task whose set-up raises (before the user's function runs) ends with a
TaskFailed naming the error: before, it never ended, and the job waited for it until
the 30-minute no-progress timeout."""

from __future__ import annotations

import time

import pyarrow as pa
from streambatch.executor.backends import local
from streambatch.executor.backends.base import Task, TaskDone, TaskFailed
from streambatch.executor.backends.local import LocalBackend
from streambatch.executor.contract import TaskStage


def _read():
    yield pa.table({"x": [1, 2, 3]})


def test_a_thread_task_whose_set_up_raises_fails_instead_of_hanging(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("set-up broke")

    monkeypatch.setattr(local, "task_context", broken)
    read = [_read]
    backend = LocalBackend(num_cpus=1)
    backend.start([TaskStage("Read", read_tasks_fn=lambda: read, read_tasks=read,
                             worker="thread")], target_bytes=1 << 20)
    try:
        backend.submit(Task(0, 0, 0, [], "partition 0"))
        events: list = []
        deadline = time.monotonic() + 30
        while not any(isinstance(e, (TaskDone, TaskFailed)) for e in events) and \
                time.monotonic() < deadline:
            events += backend.poll(0.5)
    finally:
        backend.shutdown()
    [failed] = [e for e in events if isinstance(e, TaskFailed)]
    assert "set-up broke" in failed.failure.error
