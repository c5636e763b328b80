"""streaming_split: one running pipeline feeds n consumers (data-parallel ranks).

A coordinator thread pulls batches from the pipeline and hands them to per-rank
bounded queues, round-robin. A slow rank backpressures the pipeline (its queue
is full, so the coordinator waits); if it does not take a batch within
``timeout_s``, every rank gets a :class:`RankStuckError` naming it instead of
hanging. A rank that is known to be gone (its process lost its connection
mid-epoch) is named at once, as a :class:`RankLostError`, rather than having its
share of the epoch dropped while the others finish short.

With ``equal=True`` every rank gets the same number of batches: the last full
round is held back until the stream ends, then the held rows and the leftover
rows are re-cut into one or two more batches per rank (each at most
``batch_size`` rows). Rows are dropped only with ``drop_last=True``.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator

import pyarrow as pa

from streambatch.connectors.block_joins import even_cut, join_blocks
from streambatch.executor.contract import StreamBatchError

_END = object()


class RankStuckError(StreamBatchError):
    """A rank stopped taking batches; the message names it."""

    def __init__(self, rank: int, waited: float, n: int) -> None:
        self._init_args = (rank, waited, n)  # survives pickling to a rank's process
        super().__init__(f"streaming_split: rank {rank} of {n} took no batch for {waited:.1f}s "
                         f"while the others waited on it (its queue is full). Make every rank "
                         f"iterate its split for the whole epoch, or raise timeout_s")
        self.rank = rank


class RankLostError(RankStuckError):
    """A rank's process went away mid-epoch (it crashed or exited without closing
    its split); every other rank gets this error, naming it, instead of an epoch
    that silently misses its share.

    >>> str(RankLostError(1, 2, 0, "its connection closed"))[:60]
    'streaming_split: rank 1 of 2 was lost in epoch 0 (its connec'
    """

    def __init__(self, rank: int, n: int, epoch: int, why: str) -> None:
        StreamBatchError.__init__(
            self, f"streaming_split: rank {rank} of {n} was lost in epoch {epoch} ({why}); its "
            f"share of the epoch cannot be delivered, so every rank stops here. Restart the "
            f"ranks (did the rank's process crash or exit without closing its iterator?)")
        self._init_args = (rank, n, epoch, why)
        self.rank = rank


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def final_round(held: list[pa.Table], leftover: list[pa.Table], n: int,
                drop_last: bool) -> list[pa.Table]:
    """The batches that end an equal split: a multiple of ``n``, none larger than before.

    ``held`` is the last full round (n full batches, or empty), ``leftover`` the
    fewer than n batches after it.

    >>> t = lambda k: pa.table({"x": list(range(k))})
    >>> [b.num_rows for b in final_round([t(4), t(4)], [t(1)], 2, False)]
    [3, 2, 2, 2]
    >>> [b.num_rows for b in final_round([t(4), t(4)], [t(1)], 2, True)]
    [4, 4]
    """
    if not leftover:
        return held
    if drop_last:
        return held
    rows = join_blocks(held + leftover, f"streaming_split(n={n}, equal=True): the epoch's last "
                       "batches, cut again to give each rank the same number,").combine_chunks()
    pieces = 2 * n if held else n
    if rows.num_rows < pieces:
        raise ValueError(f"streaming_split(n={n}, equal=True): the epoch ends with "
                         f"{rows.num_rows} row(s) that cannot give each of the {n} ranks the "
                         f"same number of non-empty batches; pass drop_last=True to drop them, "
                         f"or use equal=False")
    return even_cut(rows, pieces)


class SplitCoordinator:
    """Feeds ``n`` rank queues from ``make_batches()`` on one background thread.

    >>> make = lambda: iter([pa.table({"x": [i, i]}) for i in range(5)])
    >>> co = SplitCoordinator(2, make, batch_size=2, equal=True, queue_depth=4)
    >>> [[b["x"].to_pylist() for b in co.iterate(r)] for r in (0, 1)]
    [[[0, 0], [2, 2], [4]], [[1, 1], [3, 3], [4]]]
    """

    def __init__(self, n: int, make_batches: Callable[[], Iterator[pa.Table]], *,
                 batch_size: int | None, equal: bool = True, drop_last: bool = False,
                 queue_depth: int = 2, timeout_s: float = 600.0, epoch: int = 0) -> None:
        self.n, self.make_batches, self.epoch = n, make_batches, epoch
        self.batch_size, self.equal, self.drop_last = batch_size, equal, drop_last
        self.timeout_s = timeout_s
        self.queues: list[queue.Queue] = [queue.Queue(maxsize=max(1, queue_depth))
                                          for _ in range(n)]
        self.closed = [False] * n
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.delivered = [0] * n

    def start(self) -> None:
        """Start the coordinator thread (once)."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="streambatch-split")
                self._thread.start()

    # ---- coordinator thread ---------------------------------------------------
    def _run(self) -> None:
        source = None
        try:
            source = self.make_batches()
            self._distribute(source)
            for rank in range(self.n):
                self._put(rank, _END)
        except _Stopped:
            return
        except BaseException as exc:  # noqa: BLE001 - handed to every rank
            self.fail(exc)
        finally:
            if source is not None and hasattr(source, "close"):
                source.close()

    def _distribute(self, source: Iterator[pa.Table]) -> None:
        if not self.equal:
            for i, batch in enumerate(source):
                self._put(i % self.n, batch)
            return
        held: list[pa.Table] = []
        round_: list[pa.Table] = []
        for batch in source:
            round_.append(batch)
            full = self.batch_size is None or batch.num_rows == self.batch_size
            if len(round_) == self.n and full:
                self._deliver(held)
                held, round_ = round_, []
        self._deliver(final_round(held, round_, self.n, self.drop_last))

    def _deliver(self, batches: list[pa.Table]) -> None:
        for i, batch in enumerate(batches):
            self._put(i % self.n, batch)

    def _put(self, rank: int, item) -> None:
        start = time.monotonic()
        while True:
            if self.stop.is_set():
                raise _Stopped()
            if self.closed[rank]:
                return
            try:
                self.queues[rank].put(item, timeout=0.05)
                if item is not _END:
                    self.delivered[rank] += 1
                return
            except queue.Full:
                waited = time.monotonic() - start
                if waited > self.timeout_s:
                    raise RankStuckError(rank, waited, self.n) from None

    # ---- rank side --------------------------------------------------------------
    def iterate(self, rank: int) -> RankStream:
        """The batches for ``rank``; raises the coordinator's error if it failed."""
        self.start()
        return RankStream(self, rank)

    def fail(self, error: BaseException) -> None:
        """Stop the epoch: every rank raises ``error`` once its queued batches are taken."""
        self.error = error if self.error is None else self.error
        self.stop.set()

    def release(self, rank: int) -> None:
        """``rank`` takes no more batches (it stopped on purpose): skip it from now on."""
        self.closed[rank] = True
        if all(self.closed):
            self.stop.set()


class RankStream:
    """One rank's batches from a :class:`SplitCoordinator`, as an iterator.

    ``close()`` (also on garbage collection) says the rank stopped on purpose;
    ``lost(why)`` says it is gone, which fails the epoch for every rank.

    >>> co = SplitCoordinator(2, lambda: iter([pa.table({"x": [1]})] * 4), batch_size=1)
    >>> first = co.iterate(0)
    >>> next(first)["x"].to_pylist()
    [1]
    >>> first.lost("its connection closed")
    >>> try:
    ...     list(co.iterate(1))
    ... except RankLostError as error:
    ...     print(error.rank)
    0
    """

    def __init__(self, co: SplitCoordinator, rank: int) -> None:
        self.co, self.rank, self._done = co, rank, False

    def __iter__(self) -> RankStream:
        return self

    def __next__(self) -> pa.Table:
        q = self.co.queues[self.rank]
        while not self._done:
            try:
                item = q.get(timeout=0.05)
            except queue.Empty:
                if self.co.error is not None:
                    self.close()
                    raise self.co.error from None
                continue
            if item is _END:
                if self.co.error is not None:  # another rank was lost: this epoch is short
                    self.close()
                    raise self.co.error
                break
            return item
        self.close()
        raise StopIteration

    def close(self) -> None:
        """This rank stops taking batches."""
        if not self._done:
            self._done = True
            self.co.release(self.rank)

    def lost(self, why: str) -> None:
        """This rank is gone (``why``): every rank stops with a :class:`RankLostError`."""
        if not self._done:
            self.co.fail(RankLostError(self.rank, self.co.n, self.co.epoch, why))
        self._done = True

    def __del__(self) -> None:
        self.close()  # an abandoned iterator, like a closed one, stops taking batches


class _Stopped(Exception):
    """Every rank stopped listening: end quietly."""
