"""Backpressure inside running tasks: the executor names the stages whose consumer has
enough input waiting (:func:`~streambatch.executor.accounting.held_stages`), and a
task of such a stage waits before it makes its next output block.

The executor's own rule holds a stage's *next* task; a task already running (a read
of one large file fused with its decode) would otherwise make all of its output at
once, so the memory a pipeline holds grew with the size of a task, not with its
depth. This is the local backend's half: one object shared by the control loop
(:meth:`OutputGate.hold`, after each dispatch) and the threads that run tasks
(:meth:`OutputGate.wait`, between blocks). Worker processes take the same answer as
a message (:meth:`OutputGate.held`), since they cannot share the object.

>>> gate = OutputGate()
>>> gate.hold({0})
>>> gate.held(0), gate.held(1)
(True, False)
>>> gate.wait(1, stopped=lambda: False)  # not held: at once, 0 s waited
0.0
>>> gate.hold(set())
>>> gate.wait(0, stopped=lambda: False)
0.0
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

WAKE_S = 0.2  # a waiting task looks at ``stopped`` at least this often


class OutputGate:
    """Which stages' running tasks pause between output blocks (thread-safe)."""

    def __init__(self) -> None:
        self._held: frozenset[int] = frozenset()
        self._cond = threading.Condition()
        self._open = False  # release_all(): nothing waits from now on

    def hold(self, stages: Iterable[int]) -> None:
        """Pause the running tasks of ``stages`` (and only those) before their next block.

        >>> gate = OutputGate(); gate.hold([2, 3]); gate.hold([3])
        >>> gate.held(2), gate.held(3)
        (False, True)
        """
        held = frozenset(stages)
        if held == self._held:
            return
        with self._cond:
            self._held = held
            self._cond.notify_all()

    def held(self, stage_index: int) -> bool:
        """True while tasks of ``stage_index`` should wait."""
        return not self._open and stage_index in self._held

    def release_all(self) -> None:
        """Let every waiting task go, now and later (the job is stopping).

        >>> gate = OutputGate(); gate.hold({0}); gate.release_all()
        >>> gate.held(0), gate.wait(0, stopped=lambda: False)
        (False, 0.0)
        """
        with self._cond:
            self._open = True
            self._cond.notify_all()

    def wait(self, stage_index: int, stopped: Callable[[], bool],
             timeout_s: float | None = None) -> float:
        """Block the calling task of ``stage_index`` while its stage is held, or until
        ``stopped()`` (the job was cancelled) or ``timeout_s``; the seconds it waited
        (for the task's own time, which the wait is not part of).

        >>> gate = OutputGate(); gate.hold({0})
        >>> t = threading.Timer(0.05, gate.hold, args=(set(),)); t.start()
        >>> gate.wait(0, stopped=lambda: False) > 0
        True
        >>> gate.hold({0}); gate.wait(0, stopped=lambda: True)  # cancelled: goes at once
        0.0
        """
        if not self.held(stage_index) or stopped():
            return 0.0
        start = time.perf_counter()
        deadline = None if timeout_s is None else start + timeout_s
        with self._cond:
            while self.held(stage_index) and not stopped():
                left = WAKE_S if deadline is None else min(WAKE_S, deadline - time.perf_counter())
                if left <= 0:
                    break
                self._cond.wait(left)
        return time.perf_counter() - start


__all__ = ["OutputGate", "WAKE_S"]
