"""Consuming output with background prefetch.

A consumer that stops early (``close()``, ``break``, garbage collection, Ctrl-C)
cancels the work behind its prefetch thread at once (``executor/cancel.py``): the
job's workers are killed there and then, and the consumer waits at most
``STOP_WAIT_S`` for the thread to wind down, never for a batch in flight.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterator

from streambatch.executor.cancel import CancelScope, cancel_scope, on_cancel
from streambatch.executor.exit_cleanup import install_sigterm_handler
from streambatch.executor.thread_pool import shared_pool

_DONE = object()
STOP_WAIT_S = 0.5  # how long a consumer that stops early waits for the producer to stop


def prefetched(make: Callable[[], Iterator], depth: int) -> Generator:
    """Run the iterator ``make()`` on a background thread, ``depth`` items ahead.

    Exceptions are re-raised in the consumer. Stopping early (``close()``, ``break``,
    Ctrl-C) cancels the producer's scope: a job running there stops at once.

    >>> list(prefetched(lambda: iter(range(5)), depth=2))
    [0, 1, 2, 3, 4]
    >>> it = prefetched(lambda: iter(range(5)), depth=2)
    >>> next(it), it.close()
    (0, None)
    """
    if depth <= 0:
        yield from make()
        return
    install_sigterm_handler()  # the consumer's thread may be the main one; the producer's is not
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop, scope, finished = threading.Event(), CancelScope(), False
    forget = on_cancel(scope.cancel)  # a consumer further out that stops stops this one too
    ended = shared_pool().run(_produce, make, items, stop, scope, name="streambatch-prefetch")
    try:
        while True:
            item = items.get()
            if item is _DONE:
                finished = True
                return
            if isinstance(item, _Raised):
                finished = True
                raise item.error
            yield item
    finally:
        stop.set()
        forget()
        _stop_producer(scope, ended, finished)


def _stop_producer(scope: CancelScope, ended: threading.Event, finished: bool) -> None:
    """After the producer's last item it is only returning: wait for it. Otherwise the
    consumer stopped early: cancel the producer's work and wait only briefly (the job
    is stopped by the cancel, not by this wait)."""
    if finished:
        ended.wait()
        return
    scope.cancel()
    ended.wait(STOP_WAIT_S)


class _Raised:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def _produce(make, items: queue.Queue, stop: threading.Event, scope: CancelScope) -> None:
    with cancel_scope(scope):  # what make() starts on this thread registers with it
        source = None
        try:
            source = make()
            for item in source:
                if not _put(items, item, stop):
                    return
            _put(items, _DONE, stop)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            _put(items, _Raised(exc), stop)
        finally:
            if source is not None and hasattr(source, "close"):
                source.close()


def _put(items: queue.Queue, item, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            items.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False
