"""Helpers for tests that run a streambatch driver in a subprocess and signal or kill it.

Every driver starts in a session of its own, so the processes it leaves behind (its
workers) are found by session id, and :func:`driver` kills the whole session when
the test ends, whatever happened.
"""

from __future__ import annotations

import contextlib
import glob
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator

import psutil

# UDFs for the drivers: ``hang`` marks its start in $MARK_DIR (one file per process)
# and hangs; ``hang_after_first`` returns the batch holding row 0 at once and hangs on
# the others.
HANGING_UDF = """
import os, time
def hang(batch):
    open(os.path.join(os.environ["MARK_DIR"], f"started-{os.getpid()}"), "w").close()
    time.sleep(20)
    return batch
def hang_after_first(batch):
    return batch if 0 in list(batch["id"]) else hang(batch)
"""


@contextlib.contextmanager
def driver(code: str, tmp_path) -> Iterator[subprocess.Popen]:
    """Run ``code`` (dedented, after :data:`HANGING_UDF`) in a fresh interpreter, in a
    new session; on exit kill every process of that session."""
    script = tmp_path / "driver.py"
    script.write_text(HANGING_UDF + textwrap.dedent(code))
    marks = tmp_path / "marks"
    marks.mkdir()
    env = dict(os.environ, MARK_DIR=str(marks))
    proc = subprocess.Popen([sys.executable, str(script)], env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.marks = marks
    try:
        yield proc
    finally:
        kill_session(proc)


def kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL every process of ``proc``'s session (it started one) and reap ``proc``."""
    for pid in [proc.pid, *session_processes(proc.pid)]:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.communicate(timeout=10)


def wait_until(condition: Callable[[], object], timeout: float, what: str):
    """Poll ``condition`` until it is truthy; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def wait_for_udf_start(proc: subprocess.Popen, timeout: float = 60.0) -> None:
    """Wait until the driver's hanging UDF has started (the job is mid-flight)."""
    def started():
        if proc.poll() is not None:
            raise AssertionError(f"driver exited early ({proc.returncode}): "
                                 f"{proc.stderr.read()[-2000:]}")
        return os.listdir(proc.marks)

    wait_until(started, timeout, "the UDF to start in the driver")


def stores_of(pid: int) -> list[str]:
    """The shared-memory stores named for process ``pid``."""
    return glob.glob(f"/dev/shm/streambatch-{pid}-*")


def session_processes(sid: int) -> list[int]:
    """Live (not zombie) processes of session ``sid``."""
    found = []
    for proc in psutil.process_iter(["status"]):
        with contextlib.suppress(OSError, psutil.Error):
            if os.getsid(proc.pid) == sid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
    return found
