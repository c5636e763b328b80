"""The kept thread pool: reuses finished threads, never makes a job wait for another."""

from __future__ import annotations

import os
import threading

import pytest
from streambatch.executor.thread_pool import ThreadPool, shared_pool


def test_a_finished_thread_runs_the_next_job():
    pool = ThreadPool()
    idents = []
    for _ in range(3):
        assert pool.run(lambda: idents.append(threading.get_ident()), name="t").wait(5)
    assert len(set(idents)) == 1


def test_concurrent_jobs_each_get_a_thread():
    """Three jobs that can only finish together: a pool that queued one behind another
    would deadlock (the barrier times out and breaks)."""
    pool = ThreadPool()
    barrier = threading.Barrier(3, timeout=10)
    names = []

    def job(i):
        barrier.wait()
        names.append(threading.current_thread().name)

    events = [pool.run(job, i, name=f"job-{i}") for i in range(3)]
    assert all(e.wait(15) for e in events)
    assert sorted(names) == ["job-0", "job-1", "job-2"]


def test_a_failing_job_keeps_the_pool_working(capsys):
    pool = ThreadPool()
    assert pool.run(lambda: 1 / 0, name="t").wait(5)
    out = []
    assert pool.run(out.append, 7, name="t").wait(5) and out == [7]
    assert "ZeroDivisionError" in capsys.readouterr().err


def test_idle_threads_exit_and_new_jobs_still_run():
    pool = ThreadPool(idle_exit_s=0.05)
    first = []
    assert pool.run(lambda: first.append(threading.current_thread()), name="t").wait(5)
    first[0].join(5)  # it exits after 0.05 s without a job
    assert not first[0].is_alive()
    out = []
    assert pool.run(out.append, 1, name="t").wait(5) and out == [1]


@pytest.mark.filterwarnings("ignore:This process:DeprecationWarning")  # forks on purpose
def test_a_forked_child_gets_its_own_pool():
    parent = shared_pool()
    assert parent.run(lambda: None, name="t").wait(5)  # the parent has a kept thread
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: the parent's kept threads do not exist here
        ok = shared_pool() is not parent and shared_pool().run(lambda: None, name="c").wait(5)
        os.write(write, b"1" if ok else b"0")
        os._exit(0)
    import select
    import signal

    ready, _, _ = select.select([read], [], [], 20)
    if not ready:
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    assert ready and os.read(read, 1) == b"1", "the forked child's job never ran"


def test_an_idle_thread_keeps_nothing_of_its_last_job():
    """A finished task's arguments (its input blocks) are freed, not held by the kept
    thread until its next job."""
    import gc
    import time
    import weakref

    class Block:
        pass

    pool = ThreadPool()
    block = Block()
    gone = weakref.ref(block)
    assert pool.run(lambda b: None, block, name="t").wait(5)
    del block
    deadline = time.monotonic() + 10  # until the thread is back waiting for a job
    while gone() is not None and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.01)
    assert gone() is None
