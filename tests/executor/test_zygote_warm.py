"""An "auto" stage that may move to worker processes has the zygote import what its
workers need while its first tasks still measure on threads, so the move forks
workers at once instead of importing first."""

from __future__ import annotations

import os
import time

import pytest
from streambatch.executor.backends import zygote


def _mapped(pid: int, fragment: str) -> bool:
    with open(f"/proc/{pid}/maps") as maps:
        return any(fragment in line for line in maps)


def _eventually(check, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="Linux only")
def test_warming_imports_the_workers_modules_in_the_zygote_without_forking():
    pytest.importorskip("PIL.Image")
    zygote._forget_dead_zygote()  # a fresh zygote that has not imported Pillow
    z = zygote.zygote()
    pid = z.proc.pid
    assert _eventually(lambda: _mapped(pid, "pyarrow"))  # started: its own imports
    assert not _mapped(pid, "_imaging")
    forked_before = z.forked_any
    zygote.warm_zygote(("PIL.Image",))
    assert _eventually(lambda: _mapped(pid, "_imaging"))  # Pillow's C module, loaded
    assert z.forked_any == forked_before  # nothing forked
    child = zygote.fork_worker(("PIL.Image",))  # the zygote still forks as before
    try:
        assert child.pid != pid and zygote.zygote() is z
    finally:
        child.kill()
        child.join(10)
