"""streaming_split: one running pipeline feeds n consumers (data-parallel ranks).

A coordinator thread pulls batches from the pipeline and deals them to the
ranks, round-robin, into per-rank lists of pending batches (at most
``queue_depth`` each); a rank takes its pending batches in order. A rank that
falls behind backpressures the pipeline (its list is full, so the coordinator
waits) and nothing is lost or reordered for it.

What a rank that does not read does to the others depends on ``equal``:

- ``equal=False``: the others are never held up for long. Once the
  coordinator has waited ``steal_after_s`` for a rank's room while another rank
  has room and is waiting for a batch, it deals to the ranks that read. A rank
  that starts iterating late (e.g. after waiting for another rank to finish)
  gets what is left for it, possibly nothing; a rank that has not started when
  the epoch's stream ends gives its pending batches to a rank that is waiting.
  Every row still goes to exactly one rank; the counts per rank then follow
  the ranks' speeds.
- ``equal=True`` (as in Ray Data, where every consumer must read at the same
  time): every rank gets the same number of batches, so the others wait for a
  rank that does not read (it has not started, or it stopped without closing
  its iterator). If it takes no batch within ``timeout_s``, every rank gets a
  :class:`RankStuckError` naming it instead of hanging. A rank known to be gone
  (its process lost its connection mid-epoch) is named at once, as a
  :class:`RankLostError`, rather than having its share dropped while the
  others finish short.

A rank that stops on purpose (``break`` then ``close()``, or garbage
collection of its iterator) hands back what it had not yet seen: its pending
batches and those its iterator had fetched ahead (``seen`` on
:class:`RankStream`) are dealt to the ranks still reading, as is its share of
the rest of the epoch, so every row still goes to exactly one rank (the equal
counts no longer hold after a rank left).

With ``equal=True`` every rank gets the same number of batches: the last full
round is held back until the stream ends, then the held rows and the leftover
rows are re-cut into one or two more batches per rank (each at most
``batch_size`` rows). Rows are dropped only with ``drop_last=True``.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import pyarrow as pa

from streambatch.connectors.block_joins import even_cut, join_blocks
from streambatch.executor.contract import StreamBatchError

_WAIT_S = 0.05  # how often a waiting side rechecks (stop, errors, timeouts)
_RECENT = 64  # batches a rank remembers having taken, to hand back those it had not seen
WARN_AFTER_S = 30.0  # as Ray Data: say once that the ranks wait on one that does not read
_log = logging.getLogger("streambatch.split")


class RankStuckError(StreamBatchError):
    """A rank stopped taking batches; the message names it."""

    def __init__(self, rank: int, waited: float, n: int, started: bool = True) -> None:
        self._init_args = (rank, waited, n, started)  # survives pickling to a rank's process
        what = ("took no batch" if started else "has not started iterating its split")
        super().__init__(f"streaming_split: rank {rank} of {n} {what} for {waited:.1f}s while "
                         f"the others waited on it (its queue is full). With equal=True every "
                         f"rank must iterate its split for the whole epoch, at the same time as "
                         f"the others; raise timeout_s, or use equal=False to let the ranks "
                         f"that read take the batches of one that does not")
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
                       "batches, cut again to give each rank the same number,")
    pieces = 2 * n if held else n
    if rows.num_rows < pieces:
        raise ValueError(f"streaming_split(n={n}, equal=True): the epoch ends with "
                         f"{rows.num_rows} row(s) that cannot give each of the {n} ranks the "
                         f"same number of non-empty batches; pass drop_last=True to drop them, "
                         f"or use equal=False")
    return even_cut(rows, pieces)


class SplitCoordinator:
    """Deals ``make_batches()`` to ``n`` ranks from one background thread.

    All the state below is guarded by one condition variable: ``pending[r]`` (the
    batches dealt to rank ``r`` and not yet taken), ``started`` / ``closed`` /
    ``waiting`` per rank, ``ended`` (the stream ran out) and ``error``.

    >>> make = lambda: iter([pa.table({"x": [i, i]}) for i in range(5)])
    >>> co = SplitCoordinator(2, make, batch_size=2, equal=True, queue_depth=4)
    >>> [[b["x"].to_pylist() for b in co.iterate(r)] for r in (0, 1)]
    [[[0, 0], [2, 2], [4]], [[1, 1], [3, 3], [4]]]
    """

    def __init__(self, n: int, make_batches: Callable[[], Iterator[pa.Table]], *,
                 batch_size: int | None, equal: bool = True, drop_last: bool = False,
                 queue_depth: int = 2, timeout_s: float = 600.0, epoch: int = 0,
                 steal_after_s: float = 0.5) -> None:
        self.n, self.make_batches, self.epoch = n, make_batches, epoch
        self.batch_size, self.equal, self.drop_last = batch_size, equal, drop_last
        self.depth, self.timeout_s, self.steal_after_s = max(1, queue_depth), timeout_s, steal_after_s
        self.pending: list[collections.deque] = [collections.deque() for _ in range(n)]
        self.started, self.closed = [False] * n, [False] * n
        self.waiting = [False] * n  # in take() with nothing pending
        self.behind = [False] * n  # passed over once (equal=False): pass over at once next time
        self.ended = False
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._next = 0  # equal=False: the rank next in turn
        self._warned = False
        self.delivered = [0] * n  # batches dealt to each rank

    def start(self) -> None:
        """Start the coordinator thread (once)."""
        with self._cond:
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
            with self._cond:
                self.ended = True
                self._cond.notify_all()
        except _Stopped:
            return
        except BaseException as exc:  # noqa: BLE001 - handed to every rank
            self.fail(exc)
        finally:
            if source is not None and hasattr(source, "close"):
                source.close()

    def _distribute(self, source: Iterator[pa.Table]) -> None:
        if not self.equal:
            for batch in source:
                self._put(None, batch)
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

    def _put(self, rank: int | None, batch: pa.Table) -> None:
        """Deal ``batch`` to ``rank`` (None: the rank next in turn, equal=False), waiting
        while its pending list is full."""
        start = time.monotonic()
        with self._cond:
            while True:
                if self.stop.is_set():
                    raise _Stopped()
                target = self._target(rank, time.monotonic() - start)
                if len(self.pending[target]) < self.depth:
                    self.pending[target].append(batch)
                    self.delivered[target] += 1
                    if rank is None:
                        self._next = (target + 1) % self.n
                    self._cond.notify_all()
                    return
                waited = time.monotonic() - start
                if waited > self.timeout_s:
                    raise RankStuckError(target, waited, self.n, self.started[target])
                if waited > WARN_AFTER_S and not self._warned:
                    self._warned = True
                    _log.warning("streaming_split epoch %d: the ranks have waited %.0fs for rank "
                                 "%d, which %s; every rank must iterate at the same time "
                                 "(failing with RankStuckError after timeout_s=%.0fs)",
                                 self.epoch, waited, target, "takes no batch"
                                 if self.started[target] else "has not started", self.timeout_s)
                self._cond.wait(_WAIT_S)

    def _target(self, rank: int | None, waited: float) -> int:
        """The open rank to deal to now (called under the lock)."""
        if rank is not None and not self.closed[rank]:
            return rank  # equal=True: its turn, whatever it costs the others
        first = self._next if rank is None else rank
        turn = [r for r in (*range(first, self.n), *range(first)) if not self.closed[r]]
        if not turn:
            raise _Stopped()
        preferred = turn[0]
        if len(self.pending[preferred]) < self.depth:
            return preferred
        # equal=False (or a closed rank's turn): pass over a rank that does not read
        # when another one with room is waiting for a batch
        ready = [r for r in turn[1:] if len(self.pending[r]) < self.depth and self.waiting[r]]
        if ready and (waited >= self.steal_after_s or self.behind[preferred]):
            self.behind[preferred] = True
            return ready[0]
        return preferred

    def over(self) -> bool:
        """Whether no rank can take another batch of this epoch (it failed, or every
        rank closed its iterator)."""
        with self._cond:
            return self.error is not None or all(self.closed)

    # ---- rank side --------------------------------------------------------------
    def iterate(self, rank: int, whole: bool = True, keep: int = _RECENT) -> RankStream:
        """The batches for ``rank``; raises the coordinator's error if it failed.

        A batch cut from several blocks may hold several chunks per column; with
        ``whole`` (the default) each is joined into one chunk per column as it is
        taken, else it is handed on as it is (the split server writes the chunks
        straight to shared memory). ``keep``: how many of the batches it took the
        rank's consumer may not have seen yet when it stops (its prefetch depth and
        one or two in hand); only those are kept for handing back (a batch kept
        holds its memory, and the blocks it was cut from, until then)."""
        with self._cond:
            self.started[rank] = True
        self.start()
        return RankStream(self, rank, whole, keep)

    def take(self, rank: int, stream: RankStream) -> pa.Table | None:
        """``rank``'s next batch (None: the epoch ended for it); raises the epoch's error
        once the rank's pending batches are taken."""
        with self._cond:
            self.started[rank] = True
            try:
                while True:
                    if stream.done:
                        return None
                    if self.pending[rank]:
                        batch = self.pending[rank].popleft()
                        self.behind[rank] = False
                        stream.taken += 1
                        stream.recent.append(batch)
                        self._cond.notify_all()
                        return batch
                    if self.error is not None:
                        raise self.error
                    if self.ended and not self._take_unstarted(rank):
                        return None
                    self.waiting[rank] = True
                    self._cond.wait(_WAIT_S)
            finally:
                self.waiting[rank] = False

    def _take_unstarted(self, rank: int) -> bool:
        """equal=False, after the stream ended: move the pending batches of ranks that
        have not started iterating to ``rank`` (which waits for one); whether any moved."""
        if self.equal:
            return False
        for other in range(self.n):
            if not self.started[other] and self.pending[other]:
                self.pending[rank].extend(self.pending[other])
                self.pending[other].clear()
                return True
        return False

    def fail(self, error: BaseException) -> None:
        """Stop the epoch: every rank raises ``error`` once its pending batches are taken."""
        with self._cond:
            self.error = error if self.error is None else self.error
            self.stop.set()
            self._cond.notify_all()

    def release(self, rank: int, unseen: Sequence[pa.Table] = ()) -> None:
        """``rank`` takes no more batches (it stopped on purpose): its pending batches and
        ``unseen`` (taken but never seen by its consumer) go to the ranks still reading,
        and it is skipped from now on."""
        with self._cond:
            if self.closed[rank]:
                return
            self.closed[rank] = True
            back = list(unseen) + list(self.pending[rank])
            self.pending[rank].clear()
            open_ = [r for r in range(self.n) if not self.closed[r]]
            if not open_:
                self.stop.set()
            elif back and self.error is None:
                start = open_.index(min(open_, key=lambda r: len(self.pending[r])))
                for i, batch in enumerate(back):
                    self.pending[open_[(start + i) % len(open_)]].append(batch)
            self._cond.notify_all()


class RankStream:
    """One rank's batches from a :class:`SplitCoordinator`, as an iterator.

    ``close()`` (also on garbage collection) says the rank stopped on purpose;
    if ``seen`` was set (the number of batches its consumer actually got), the
    batches it took beyond those go back to the other ranks. ``lost(why)`` says
    it is gone, which fails the epoch for every rank.

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

    def __init__(self, co: SplitCoordinator, rank: int, whole: bool = True,
                 keep: int = _RECENT) -> None:
        self.co, self.rank, self.done, self.whole = co, rank, False, whole
        self.taken = 0
        self.recent: collections.deque = collections.deque(maxlen=max(1, keep))
        self.seen: int | None = None

    def __iter__(self) -> RankStream:
        return self

    def __next__(self) -> pa.Table:
        try:
            batch = self.co.take(self.rank, self)
        except BaseException:
            self.close()
            raise
        if batch is None:
            self.close()
            raise StopIteration
        if self.whole and any(c.num_chunks > 1 for c in batch.columns):
            return batch.combine_chunks()
        return batch

    def close(self) -> None:
        """This rank stops taking batches (thread-safe: wakes a ``next`` waiting in another
        thread); the batches it took beyond ``seen`` go back to the others."""
        with self.co._cond:
            if self.done:
                return
            self.done = True
            unseen = 0 if self.seen is None else max(0, self.taken - self.seen)
            back = list(self.recent)[len(self.recent) - min(unseen, len(self.recent)):]
            self.recent.clear()
            self.co.release(self.rank, back)

    def lost(self, why: str) -> None:
        """This rank is gone (``why``): every rank stops with a :class:`RankLostError`."""
        if not self.done:
            self.co.fail(RankLostError(self.rank, self.co.n, self.co.epoch, why))
        self.done = True

    def __del__(self) -> None:
        try:
            self.close()  # an abandoned iterator, like a closed one, stops taking batches
        except Exception:  # noqa: BLE001 - at interpreter exit
            pass


class _Stopped(Exception):
    """Every rank stopped listening: end quietly."""
