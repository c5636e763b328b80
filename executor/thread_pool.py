"""Daemon threads kept for the process and reused by every execution.

A small job starts several threads (the control loop's prefetch thread, one
per CPU slot for tasks that release the GIL); each ``Thread.start`` waits for
the new thread to get the GIL, ~0.3-0.5 ms while other threads are busy. The
pool keeps finished threads waiting for the next job (for ``IDLE_EXIT_S``), so
later executions in the process start none. It never holds back a job: when no
thread is idle it starts one, so every job runs at once, as with its own
thread. Threads are daemons (a stuck user function does not block the
interpreter's exit), and a forked child starts with an empty pool of its own.
"""

from __future__ import annotations

import os
import queue
import threading
import traceback
from collections.abc import Callable

IDLE_EXIT_S = 30.0


class ThreadPool:
    """Runs each job on an idle kept thread, or on a new one when none is idle.

    >>> pool = ThreadPool()
    >>> out = []
    >>> pool.run(out.append, 1, name="example").wait(5)
    True
    >>> pool.run(out.append, 2, name="example").wait(5), out
    (True, [1, 2])
    """

    def __init__(self, idle_exit_s: float = IDLE_EXIT_S) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0  # threads waiting for a job and not promised to one already
        self._idle_exit_s = idle_exit_s

    def run(self, fn: Callable, *args, name: str) -> threading.Event:
        """Run ``fn(*args)`` on a pool thread named ``name``; the event is set when it ends."""
        done = threading.Event()
        with self._lock:
            reuse = self._idle > 0
            if reuse:
                self._idle -= 1
        self._jobs.put((fn, args, name, done))
        if not reuse:
            threading.Thread(target=self._work, daemon=True, name=name).start()
        return done

    def _work(self) -> None:
        while True:
            try:
                job = self._jobs.get(timeout=self._idle_exit_s)
            except queue.Empty:
                with self._lock:
                    if self._idle > 0:  # nobody was promised this thread: let it go
                        self._idle -= 1
                        return
                continue  # a job is on its way to this thread
            self._run(*job)
            del job  # an idle thread must not keep the last job's blocks or closures alive

    def _run(self, fn: Callable, args: tuple, name: str, done: threading.Event) -> None:
        threading.current_thread().name = name
        try:
            fn(*args)
        except BaseException:  # noqa: BLE001 - jobs report their own errors; keep the thread
            traceback.print_exc()
        finally:
            done.set()
            with self._lock:
                self._idle += 1


_POOL: tuple[int, ThreadPool] | None = None


def shared_pool() -> ThreadPool:
    """The process's pool (a forked child gets a new, empty one).

    >>> shared_pool() is shared_pool()
    True
    """
    global _POOL
    if _POOL is None or _POOL[0] != os.getpid():
        _POOL = (os.getpid(), ThreadPool())
    return _POOL[1]


__all__ = ["ThreadPool", "shared_pool"]
