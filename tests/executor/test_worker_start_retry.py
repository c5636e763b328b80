"""A worker process that dies between its fork and its setup (a SIGKILL, the OOM
killer: tests/chaos's killer once hit one there and the job failed with a
BrokenPipeError) is replaced, and the job's rows are all there."""

from __future__ import annotations

import os
import signal

from streambatch.executor.backends import zygote

import streambatch as sb


def test_a_worker_killed_before_its_setup_is_replaced(monkeypatch):
    real = zygote.fork_worker
    victims: list[int] = []

    def fork_then_kill_the_first(preload=()):
        child = real(preload)
        if not victims:  # the first worker dies before it gets its setup
            victims.append(child.pid)
            os.kill(child.pid, signal.SIGKILL)
            child.join(10)
        return child

    monkeypatch.setattr(zygote, "fork_worker", fork_then_kill_the_first)
    sb.init(num_cpus=2)
    try:
        ds = sb.range(40, override_num_blocks=4).map(lambda r: {"id": r["id"], "pid": os.getpid()})
        rows = ds.take_all()
    finally:
        sb.init()
    assert victims
    assert sorted(r["id"] for r in rows) == list(range(40))
    assert victims[0] not in {r["pid"] for r in rows}
