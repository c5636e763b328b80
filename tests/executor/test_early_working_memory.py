"""A task's working memory is known from its first output block, long before it ends:
the local backend's thread and process tasks report it with that block, so the
executor stops charging the stage's guess (``UNMEASURED_FACTOR`` x the expected
output) to the tasks still to start (issue 20: the first wave of a stage ran at a
fraction of its slots for the whole length of its first task)."""

from __future__ import annotations

import os
import time

import numpy as np
import pyarrow as pa
import pytest
from streambatch.executor.backends.base import Task, TaskDone, TaskOutput
from streambatch.executor.backends.local import LocalBackend
from streambatch.executor.contract import TaskStage

MiB = 2**20
SCRATCH = 48 * MiB


def _read_with_scratch(gate: str):
    """A read that works with 48 MiB, hands out a first block, and makes its last
    block only once ``gate`` exists."""

    def read():
        scratch = np.ones(SCRATCH, dtype=np.uint8)  # touched: resident
        yield pa.table({"x": np.arange(1000)})
        deadline = time.monotonic() + 60
        while not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.01)  # the test opens the gate once it saw the first block
        yield pa.table({"x": np.arange(1000) + int(scratch[0])})

    return read


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="Linux only")
@pytest.mark.parametrize("worker", ["thread", "process"])
def test_the_first_block_tells_the_working_memory_before_the_task_ends(tmp_path, worker):
    gate = str(tmp_path / "gate")
    read = [_read_with_scratch(gate)]
    stage = TaskStage("Read", read_tasks_fn=lambda: read, read_tasks=read, worker=worker)
    backend = LocalBackend(num_cpus=1)
    backend.start([stage], target_bytes=1 << 30)
    try:
        backend.submit(Task(0, 0, 0, [], "partition 0"))
        events: list = []
        deadline = time.monotonic() + 60
        while not any(isinstance(e, TaskOutput) for e in events) and time.monotonic() < deadline:
            events += backend.poll(1.0)
        first = next(e for e in events if isinstance(e, TaskOutput))
        assert not any(isinstance(e, TaskDone) for e in events)  # the task still runs
        assert first.peak_bytes >= SCRATCH * 3 // 4, first
        open(gate, "w").close()
        while not any(isinstance(e, TaskDone) for e in events) and time.monotonic() < deadline:
            events += backend.poll(1.0)
    finally:
        open(gate, "w").close()
        backend.shutdown()
    outputs = [e for e in events if isinstance(e, TaskOutput)]
    assert [e.rows for e in outputs] == [1000, 1000]
    assert outputs[1].peak_bytes == 0  # later blocks: measured once, at the end
    done = next(e for e in events if isinstance(e, TaskDone))
    assert done.peak_bytes >= SCRATCH * 3 // 4


def _small_read():
    yield pa.table({"x": np.arange(10)})


@pytest.mark.parametrize("worker", ["thread", "process"])
def test_a_workers_first_task_of_a_stage_is_marked_as_its_warm_up(worker):
    """Its measure holds what the worker keeps once started (imports, arenas): the
    executor counts it only until a later task of the stage is measured."""
    read = [_small_read, _small_read, _small_read]
    stage = TaskStage("Read", read_tasks_fn=lambda: read, read_tasks=read, worker=worker)
    backend = LocalBackend(num_cpus=1)
    backend.start([stage], target_bytes=1 << 30)
    marks = []
    try:
        for index in range(3):  # one after another, on the one worker
            backend.submit(Task(index, 0, index, [], f"partition {index}"))
            events: list = []
            deadline = time.monotonic() + 60
            while not any(isinstance(e, TaskDone) for e in events) and \
                    time.monotonic() < deadline:
                events += backend.poll(1.0)
            out = next(e for e in events if isinstance(e, TaskOutput))
            done = next(e for e in events if isinstance(e, TaskDone))
            marks.append((out.warmup, done.warmup, done.peak_bytes > 0))
    finally:
        backend.shutdown()
    assert marks[0] == (True, True, True)  # the first task of the stage in its worker
    if worker == "process":  # one worker process ran all three; threads come from a
        # pool the process keeps, so a later task may run on another (its first there)
        assert marks[1:] == [(False, False, True), (False, False, True)]
    assert all(measured for _, _, measured in marks)


_PURGE_BESIDE = """
import os, sys, tempfile, time
import numpy as np, pyarrow as pa
import streambatch
sys.path.insert(0, sys.argv[1])
from test_early_working_memory import SCRATCH
from streambatch.executor.backends.base import Task, TaskOutput
from streambatch.executor.backends.local import LocalBackend
from streambatch.executor.contract import TaskStage

parts = [pa.array(np.arange(2_000_000)) for _ in range(30)]
joined = pa.concat_arrays(parts)
del parts, joined  # an earlier job's memory, freed: this thread's allocator keeps it
go = os.path.join(tempfile.mkdtemp(), "go")

def work():  # starts (its measure's base is taken), waits for the purge, then works
    while not os.path.exists(go):
        time.sleep(0.01)
    scratch = np.ones(SCRATCH, dtype=np.uint8)
    yield pa.table({"x": np.arange(1000) + int(scratch[0])})

read = [work]
backend = LocalBackend(num_cpus=1)
backend.start([TaskStage("Read", read_tasks_fn=lambda: read, read_tasks=read, worker="thread")],
              target_bytes=1 << 30)
backend.submit(Task(0, 0, 0, [], "partition 0"))
time.sleep(0.2)  # the task started
pa.default_memory_pool().release_unused()  # this thread's allocator purges what it holds
open(go, "w").close()
events = []
while not any(isinstance(e, TaskOutput) for e in events):
    events += backend.poll(1.0)
backend.shutdown()
print(next(e for e in events if isinstance(e, TaskOutput)).peak_bytes)
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="Linux only")
def test_a_thread_tasks_measure_holds_when_the_driver_gives_memory_back_meanwhile():
    """The driver thread's allocator purging what an earlier test had freed made the
    process's resident memory fall by hundreds of MiB while a thread task worked in 48
    MiB: it was measured as 1 byte (fresh-clone suites, 3 times). The backend has it
    purge as a job starts."""
    import subprocess
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    out = subprocess.run([sys.executable, "-c", _PURGE_BESIDE, here], capture_output=True,
                         text=True, timeout=120, check=True)
    assert int(out.stdout.strip().splitlines()[-1]) >= SCRATCH * 3 // 4, out.stdout
