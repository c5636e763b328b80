"""``streaming_split``: one pipeline run shared by ``n`` data-parallel ranks.

Every rank of an epoch reads from one :class:`SplitCoordinator` (equal batch
counts, a stuck-rank timeout). Ranks in other processes (spawned, or copied by a
fork) reach the process that called ``streaming_split`` through its
:class:`SplitServer`, a local socket started with the split group.
``Dataset.streaming_split`` delegates here.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Generator, Iterator
from contextlib import closing
from dataclasses import replace

from streambatch import validate as v
from streambatch.executor.iteration import prefetched
from streambatch.loader.batches import batches
from streambatch.loader.epochs import LoaderConfig, epoch_chunks, make_config
from streambatch.loader.iterator import DataIterator
from streambatch.loader.split import _RECENT, RankStream, SplitCoordinator
from streambatch.loader.split_server import SplitServer, fetch_rank
from streambatch.operators.batch_format import check_batch_format, to_batch


class _SplitGroup:
    def __init__(self, dataset, n: int, equal: bool, timeout_s: float, queue_depth: int) -> None:
        self.dataset, self.n, self.equal = dataset, n, equal
        self.timeout_s, self.queue_depth = timeout_s, queue_depth
        self.epochs: dict[int, tuple[LoaderConfig, SplitCoordinator]] = {}
        self._lock = threading.Lock()
        # Served from the start: a rank handle copied by a fork or pickled for spawn must
        # reach this process, and starting a thread inside a fork hook can hang the child.
        ref = weakref.ref(self)
        self.server = SplitServer(lambda rank, epoch, opts: _open_rank(ref, rank, epoch, opts))
        weakref.finalize(self, self.server.close)

    def coordinator(self, epoch: int, cfg: LoaderConfig) -> SplitCoordinator:
        with self._lock:
            return self._coordinator(epoch, cfg)

    def _coordinator(self, epoch: int, cfg: LoaderConfig) -> SplitCoordinator:
        if epoch in self.epochs:
            known, co = self.epochs[epoch]
            if replace(known, seed=None, seed_given=True) != replace(cfg, seed=None,
                                                                     seed_given=True) or \
                    (cfg.reproducible and known.seed != cfg.seed):
                raise ValueError(f"streaming_split: every rank must iterate epoch {epoch} with "
                                 f"the same batch_size, drop_last and shuffle arguments; rank 0.."
                                 f"{self.n - 1} got {known} and {cfg}")
            return co
        ds = self.dataset

        def make():
            drop = cfg.drop_last and not self.equal
            with closing(epoch_chunks(ds, cfg, epoch, None)) as chunks:  # errors stop the job
                for table, _ in batches(chunks, cfg.batch_size, drop, cfg.shuffle_buffer,
                                        cfg.seed, epoch, whole=False):
                    yield table

        co = SplitCoordinator(self.n, make, batch_size=cfg.batch_size, equal=self.equal,
                              drop_last=cfg.drop_last, queue_depth=self.queue_depth,
                              timeout_s=self.timeout_s, epoch=epoch)
        # an epoch some rank may still start (one that waits for the others first) keeps
        # its coordinator, so that rank gets what is left of it instead of a fresh run
        self.epochs = {e: x for e, x in self.epochs.items() if e >= epoch - 1 or not x[1].over()}
        self.epochs[epoch] = (cfg, co)
        return co


class DataSplit(DataIterator):
    """One rank's share of a ``streaming_split``: iterate it once per epoch (a
    :class:`~streambatch.loader.iterator.DataIterator`: ``iter_batches``, ``iter_rows``,
    ``iter_torch_batches``, ``materialize``).

    A split can be handed to another process (pickled for ``spawn``, or copied
    by ``fork``): there it fetches its batches from the process that called
    ``streaming_split`` (which runs the pipeline and must stay alive) over a
    local socket, with the same equal batch counts and stuck-rank timeout. A
    rank process that dies mid-epoch (without closing its iterator) fails the
    epoch for the others with a ``RankLostError`` that names it. A rank that
    stops early (``break``, ``close()``) leaves the batches it had not seen, and
    the rest of its share, to the ranks still reading. With ``equal=False`` a
    rank that does not read (yet) does not hold up the others, who take its
    share; with ``equal=True`` the ranks must read at the same time (see
    :mod:`streambatch.loader.split`).

    >>> import streambatch as sb
    >>> a, b = sb.range(10).streaming_split(2, equal=True)
    >>> import threading
    >>> out = {}
    >>> t = threading.Thread(target=lambda: out.update(b=list(b.iter_batches(batch_size=3))))
    >>> t.start(); got_a = list(a.iter_batches(batch_size=3)); t.join()
    >>> len(got_a) == len(out["b"]), sum(len(x["id"]) for x in got_a + out["b"])
    (True, 10)
    """

    def __init__(self, group: _SplitGroup | None, rank: int, n: int | None = None,
                 remote: tuple | None = None, epoch: int = 0) -> None:
        self.group, self.rank = group, rank
        self.n = group.n if group is not None else n
        self._remote = remote  # (address, authkey) of the driver's SplitServer
        self._owner = os.getpid()
        self._epoch = epoch

    def __repr__(self) -> str:
        return f"DataSplit(rank={self.rank} of {self.n})"

    def __reduce__(self):
        """Pickled (e.g. into a spawned rank process) as a handle on the driver's server."""
        return (DataSplit, (None, self.rank, self.n, self._address(), self._epoch))

    def _local_group(self) -> _SplitGroup:
        """The split group, in the process that called ``streaming_split``."""
        if self.group is None:  # only a handle pickled with the server's address lacks it
            raise RuntimeError(f"{self!r}: no split group and no server address")
        return self.group

    def _address(self) -> tuple:
        if self._remote is not None:
            return self._remote
        server = self._local_group().server
        return (server.address, server.authkey)

    def _batches(self, options: dict, prefetch: int) -> Iterator:
        """This rank's tables for its next epoch; ``options`` are make_config's arguments,
        ``prefetch`` the depth of the consumer's prefetch (see :func:`unseen_at_most`)."""
        epoch = self._epoch
        self._epoch += 1
        if self._remote is None and os.getpid() == self._owner:
            cfg = make_config(**options)
            return self._local_group().coordinator(epoch, cfg).iterate(
                self.rank, keep=unseen_at_most(prefetch))
        address, authkey = self._address()
        return fetch_rank(address, authkey, self.rank, epoch, {**options, _PREFETCH: prefetch})

    def iter_batches(self, *, batch_size=256, batch_format="default", drop_last=False,
                     prefetch_batches=1, local_shuffle_buffer_size=None,
                     local_shuffle_seed=None) -> Iterator:
        """This rank's batches for one epoch (``batch_format`` as in ``Dataset.iter_batches``)."""
        batch_format = check_batch_format(batch_format)
        options = _loader_options(batch_size, drop_last, local_shuffle_buffer_size,
                                  local_shuffle_seed)
        tables = self._batches(options, prefetch_batches)
        return served(tables, lambda t: to_batch(t, batch_format), prefetch_batches)

    def iter_torch_batches(self, *, batch_size=256, dtypes=None, device="auto", collate_fn=None,
                           drop_last=False, prefetch_batches=1, pin_memory=None,
                           local_shuffle_buffer_size=None, local_shuffle_seed=None) -> Iterator:
        """This rank's batches for one epoch as tensors (as ``Dataset.iter_torch_batches``)."""
        from streambatch.loader.torch_batches import TorchConverter

        options = _loader_options(batch_size, drop_last, local_shuffle_buffer_size,
                                  local_shuffle_seed)
        conv = TorchConverter(dtypes, device, collate_fn, pin_memory)
        with closing(served(self._batches(options, prefetch_batches), conv.host,
                            prefetch_batches)) as values:
            for value in values:
                yield conv.to_device(value)


_PREFETCH = "prefetch"  # sent with a remote rank's options; not make_config's


def unseen_at_most(prefetch) -> int:
    """How many batches a rank's consumer can have taken from its stream without
    seeing them (:func:`served`): those in its prefetch queue, one its prefetch thread
    holds waiting for room, and one being converted.

    >>> unseen_at_most(1), unseen_at_most(0), unseen_at_most(None)
    (3, 2, 64)
    """
    if not isinstance(prefetch, int) or isinstance(prefetch, bool):
        return _RECENT
    return max(0, prefetch) + 2


def served(tables: Iterator, convert, depth: int) -> Generator:
    """``convert(t)`` for each of a rank's tables, ``depth`` ahead on a prefetch thread.

    When the consumer stops early, ``tables`` learns how many batches it actually
    got (``seen``) before it is closed, so the batches fetched ahead and never
    seen go back to the ranks still reading instead of being lost; a local
    :class:`RankStream` is closed from here at once (that wakes a prefetch thread
    waiting in it).

    >>> list(served(iter([1, 2, 3]), lambda x: x * 10, 1))
    [10, 20, 30]
    """
    seen = 0
    inner = prefetched(lambda: converted(tables, convert), depth)
    try:
        for item in inner:
            seen += 1
            yield item
    finally:
        if hasattr(tables, "seen"):
            tables.seen = seen
        if isinstance(tables, RankStream):
            tables.close()
        inner.close()


def converted(tables: Iterator, convert) -> Iterator:
    """``convert(t)`` for each table, closing ``tables`` when this iterator ends or
    is closed, so a rank that stops early says so at once (a rank in another
    process otherwise looks lost to the driver).

    >>> closed = []
    >>> def source():
    ...     try:
    ...         yield from (1, 2, 3)
    ...     finally:
    ...         closed.append(True)
    >>> out = converted(source(), lambda x: x * 10)
    >>> next(out), out.close(), closed
    (10, None, [True])
    """
    try:
        for table in tables:
            yield convert(table)
    finally:
        close = getattr(tables, "close", None)
        if close is not None:
            close()


def streaming_split(dataset, n: int, equal: bool = True, timeout_s: float = 600.0,
                    queue_depth: int = 2) -> list[DataSplit]:
    """The object behind ``Dataset.streaming_split`` (see there)."""
    v.positive_int("n", n)
    if not timeout_s or timeout_s <= 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
    group = _SplitGroup(dataset, n, bool(equal), float(timeout_s), queue_depth)
    return [DataSplit(group, rank) for rank in range(n)]


def _loader_options(batch_size, drop_last, buffer, seed) -> dict:
    """The loader arguments of one epoch, validated (in the rank, so it fails there), as
    sent to the driver's SplitServer: ``make_config``'s keyword arguments."""
    options = dict(batch_size=batch_size, drop_last=drop_last, buffer=buffer, seed=seed)
    make_config(**options)
    return options


def _open_rank(ref, rank: int, epoch: int, options: dict) -> Iterator:
    group = ref()
    if group is None:
        raise RuntimeError("streaming_split: the driver no longer holds this split's dataset; "
                           "keep the list streaming_split() returned alive while ranks iterate")
    options = dict(options)
    keep = unseen_at_most(options.pop(_PREFETCH, None))
    # the server writes a batch's chunks straight to shared memory: no join first
    return group.coordinator(epoch, make_config(**options)).iterate(rank, whole=False, keep=keep)

