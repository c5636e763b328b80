"""Consuming output: exact-size batches across partitions, with background prefetch.

A consumer that stops early (``close()``, ``break``, garbage collection, Ctrl-C)
cancels the work behind its prefetch thread at once (``executor/cancel.py``): the
job's workers are killed there and then, and the consumer waits at most
``STOP_WAIT_S`` for the thread to wind down, never for a batch in flight.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator

import pyarrow as pa
from streambatch.connectors.block_joins import concat_blocks
from streambatch.executor.cancel import CancelScope, cancel_scope, on_cancel
from streambatch.executor.exit_cleanup import install_sigterm_handler
from streambatch.executor.thread_pool import shared_pool

_DONE = object()
STOP_WAIT_S = 0.5  # how long a consumer that stops early waits for the producer to stop


def exact_batches(tables: Iterator[pa.Table], batch_size: int | None,
                  drop_last: bool = False) -> Iterator[pa.Table]:
    """Cut a stream of tables into batches of exactly ``batch_size`` rows.

    Slices are zero-copy; a batch that spans two blocks is concatenated.

    >>> t = pa.table({"x": list(range(5))})
    >>> [b.num_rows for b in exact_batches(iter([t, t]), 4)]
    [4, 4, 2]
    >>> [b.num_rows for b in exact_batches(iter([t, t]), 4, drop_last=True)]
    [4, 4]
    """
    if batch_size is None:
        yield from (t for t in tables if t.num_rows)
        return
    pending, rows = [], 0
    for table in tables:
        offset = 0
        while offset < table.num_rows:
            take = min(batch_size - rows, table.num_rows - offset)
            pending.append(table.slice(offset, take))
            rows, offset = rows + take, offset + take
            if rows == batch_size:
                yield _combine(pending)
                pending, rows = [], 0
    if rows and not drop_last:
        yield _combine(pending)


def _combine(tables: list[pa.Table]) -> pa.Table:
    if len(tables) == 1:
        return tables[0]
    return join_blocks(tables, "a batch spans blocks that").combine_chunks()


def join_blocks(tables: list[pa.Table], what: str = "") -> pa.Table:
    """The blocks as one table, zero-copy when their schemas agree; else unified by
    ``concat_blocks`` (missing columns null, types promoted where no value changes,
    tensor columns whose shapes differ made variable-shape). Blocks of rows with no
    columns keep their rows. Columns with no common type raise a ValueError naming
    the column and both types, prefixed by ``what`` (who joins: "... cannot be joined").

    >>> a, b = pa.table({"x": [1]}), pa.table({"x": [2.5], "y": ["s"]})
    >>> join_blocks([a, b]).to_pylist()
    [{'x': 1.0, 'y': None}, {'x': 2.5, 'y': 's'}]
    >>> join_blocks([a.select([]), b.select([])]).num_rows
    2
    >>> try:
    ...     join_blocks([a, pa.table({"x": ["s"]})], "a batch spans blocks that")
    ... except ValueError as err:
    ...     print(err)  # doctest: +ELLIPSIS
    a batch spans blocks that cannot be joined: column 'x' is int64 in block 0 and string in block 1: no common type; make the key hold one type in every row ...
    """
    try:
        return concat_blocks(tables)
    except ValueError as err:
        if not what:
            raise
        raise ValueError(f"{what} cannot be joined: {err}") from err


def prefetched(make: Callable[[], Iterator], depth: int) -> Iterator:
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
