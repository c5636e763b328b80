"""Stopping a job from the thread that consumes it.

``iter_batches`` runs a job's control loop on a background thread and hands
its batches to the consumer's thread. When the consumer stops early (``close()``,
``break``, garbage collection, Ctrl-C), it cancels the :class:`CancelScope` it
opened for that thread: every callback registered in the scope runs at once,
in the consumer's thread (the local backend kills its worker processes there),
so nothing waits for a batch in flight or for a hung user function.

Code that runs on the background thread registers with :func:`on_cancel`; it
finds the scope the thread was given by :func:`cancel_scope`. Scopes nest: a
consumer that is itself the producer of an outer consumer registers its own
scope's ``cancel`` with the outer one.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class JobCancelled(Exception):
    """Raised in a job's control loop after its consumer went away (the job stops).

    >>> str(JobCancelled("the consumer closed the iterator"))
    'the consumer closed the iterator'
    """


class CancelScope:
    """Callbacks that stop the work one consumer waits for; :meth:`cancel` runs them once.

    >>> scope, seen = CancelScope(), []
    >>> forget = scope.add(lambda: seen.append("workers killed"))
    >>> scope.cancel(); scope.cancel(); seen
    ['workers killed']
    >>> forget = scope.add(lambda: seen.append("late"))  # added after cancel: runs at once
    >>> seen
    ['workers killed', 'late']
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._callbacks: dict[int, Callable[[], object]] = {}
        self._ids = itertools.count()
        self.cancelled = False

    def add(self, fn: Callable[[], object]) -> Callable[[], None]:
        """Call ``fn()`` when the scope is cancelled (now, if it already was); returns a
        function that unregisters it."""
        with self._lock:
            if not self.cancelled:
                key = next(self._ids)
                self._callbacks[key] = fn
                return lambda: self._forget(key)
        fn()
        return _nothing

    def _forget(self, key: int) -> None:
        with self._lock:
            self._callbacks.pop(key, None)

    def cancel(self) -> None:
        """Run every registered callback (once; a failing one does not stop the others)."""
        with self._lock:
            if self.cancelled:
                return
            self.cancelled = True
            callbacks, self._callbacks = list(self._callbacks.values()), {}
        for fn in callbacks:
            try:
                fn()
            except Exception:  # noqa: BLE001 - stopping must not replace the consumer's error
                pass


def _nothing() -> None:
    return None


_CURRENT = threading.local()


@contextmanager
def cancel_scope(scope: CancelScope) -> Iterator[CancelScope]:
    """Make ``scope`` the one :func:`on_cancel` registers with, on this thread.

    >>> with cancel_scope(CancelScope()) as scope:
    ...     forget = on_cancel(lambda: print("stop"))
    ...     scope.cancel()
    stop
    """
    previous = getattr(_CURRENT, "scope", None)
    _CURRENT.scope = scope
    try:
        yield scope
    finally:
        _CURRENT.scope = previous


def on_cancel(fn: Callable[[], object]) -> Callable[[], None]:
    """Register ``fn`` with this thread's scope (a no-op outside one); returns the
    function that unregisters it.

    >>> on_cancel(lambda: None)()  # no scope on this thread: nothing to do
    """
    scope = getattr(_CURRENT, "scope", None)
    return scope.add(fn) if scope is not None else _nothing


__all__ = ["CancelScope", "JobCancelled", "cancel_scope", "on_cancel"]
