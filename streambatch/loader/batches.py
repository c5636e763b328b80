"""The training-loader stream: blocks with row ids -> (shuffled) batches, and the
record of delivered rows that makes iteration resumable.

A row's id is its read partition and its offset among the rows that read
partition produced (after every transform), so a saved position does not depend
on how rows were cut into blocks. Nothing here knows about plans or torch.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from streambatch.connectors.block_joins import exact_batches, join_blocks
from streambatch.loader.shuffle import ShuffleBuffer, epoch_rng, unpack_ids

Chunk = tuple[pa.Table, np.ndarray]  # a table and the packed ids of its rows

STATE_FORMAT = "streambatch.loader/1"


def batches(chunks: Iterator[Chunk], batch_size: int | None, drop_last: bool = False,
            shuffle_buffer: int | None = None, seed: int | None = None,
            epoch: int = 0, whole: bool = True, keep_order: bool = True) -> Iterator[Chunk]:
    """Batches of exactly ``batch_size`` rows, shuffled through a buffer when asked.

    A batch that spans blocks is joined into one chunk per column (a copy) unless
    ``whole=False``: then its columns keep one chunk per block it came from (zero-copy),
    for a consumer that copies the rows anyway (the split server writes them to shared
    memory). ``keep_order=False`` (rows in any order): a block's whole batches go out as
    slices of it and only the rows left over at blocks' ends are joined (blocks of 64,
    64, 64, 8 rows for batches of 64 had every batch after the first 8-row block span
    two blocks, a 9.6 MB copy into fresh memory each in W2).

    >>> from streambatch.loader.shuffle import pack_ids
    >>> t = pa.table({"x": np.arange(5)})
    >>> src = [(t, pack_ids(0, 0, 5)), (t, pack_ids(1, 0, 5))]
    >>> [b.num_rows for b, _ in batches(iter(src), 4)]
    [4, 4, 2]
    >>> out = [b["x"].to_pylist() for b, _ in batches(iter(src), 4, shuffle_buffer=3, seed=1)]
    >>> [len(b) for b in out], sorted(sum(out, []))
    ([4, 4, 2], [0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
    >>> [b["x"].num_chunks for b, _ in batches(iter(src), 4, whole=False)]
    [1, 2, 1]
    >>> [b["x"].to_pylist() for b, _ in batches(iter(src), 4, keep_order=False)]
    [[0, 1, 2, 3], [0, 1, 2, 3], [4, 4]]
    """
    if shuffle_buffer:
        yield from _shuffled(chunks, batch_size or 1, drop_last, shuffle_buffer, seed, epoch)
        return
    pending: list[Chunk] = []
    rows = 0
    for table, ids in chunks:
        offset = 0 if keep_order or batch_size is None else \
            table.num_rows - table.num_rows % batch_size
        step = batch_size or 1  # (offset is 0 without a batch size)
        for start in range(0, offset, step):  # whole batches: slices, no copy
            yield table.slice(start, step), ids[start:start + step]
        while offset < table.num_rows:  # the rest joins the rows waiting for a batch
            take = table.num_rows - offset if batch_size is None else \
                min(batch_size - rows, table.num_rows - offset)
            pending.append((table.slice(offset, take), ids[offset:offset + take]))
            rows, offset = rows + take, offset + take
            if batch_size is None or rows == batch_size:
                yield _combine(pending, whole)
                pending, rows = [], 0
    if rows and not drop_last:
        yield _combine(pending, whole)


def table_batches(tables: Iterator[pa.Table], batch_size: int | None, drop_last: bool,
                  in_order: bool) -> Iterator[pa.Table]:
    """Batches of exactly ``batch_size`` rows (``iter_batches``). Where the rows' order is
    free (not ``in_order``), a block's whole batches are slices of it and only the rows
    left over at blocks' ends are joined (a copy); in order, a batch spanning blocks is
    joined.

    >>> t = pa.table({"x": list(range(5))})
    >>> [b["x"].to_pylist() for b in table_batches(iter([t, t]), 4, False, in_order=False)]
    [[0, 1, 2, 3], [0, 1, 2, 3], [4, 4]]
    >>> [b["x"].to_pylist() for b in table_batches(iter([t, t]), 4, False, in_order=True)]
    [[0, 1, 2, 3], [4, 0, 1, 2], [3, 4]]
    """
    if in_order or not batch_size:
        yield from exact_batches(tables, batch_size, drop_last)
        return
    no_ids = np.empty(0, dtype=np.int64)
    for table, _ in batches(((t, no_ids) for t in tables), batch_size, drop_last,
                            keep_order=False):
        yield table


def _shuffled(chunks, batch_size, drop_last, size, seed, epoch) -> Iterator[Chunk]:
    rng = epoch_rng(seed, epoch, 1) if seed is not None else np.random.default_rng()
    buf = ShuffleBuffer(size, rng=rng)
    for table, ids in chunks:
        buf.add(table, ids)
        while buf.ready(batch_size):
            yield buf.pop(batch_size)
    for batch, ids in buf.drain(batch_size):
        if batch.num_rows == batch_size or not drop_last:
            yield batch, ids


def _combine(parts: list[Chunk], whole: bool = True) -> Chunk:
    if len(parts) == 1:
        return parts[0]
    table = join_blocks([t for t, _ in parts], "a training batch spans blocks that")
    return table.combine_chunks() if whole else table, np.concatenate([i for _, i in parts])


class ReadProgress:
    """Which rows of which read partitions were delivered in the current epoch.

    ``mark`` records delivered row ids; ``produced_all`` records that a read
    partition will produce no more rows (its total is then known).
    ``state_dict`` stores, per read partition, the delivered offsets as ranges
    (a fully delivered partition is just listed as done).

    >>> from streambatch.loader.shuffle import pack_ids
    >>> p = ReadProgress(epoch=0, seed=None, order=[0, 1])
    >>> p.mark(pack_ids(0, 0, 3)); p.produced_all(0, 3); p.mark(pack_ids(1, 2, 2))
    >>> s = p.state_dict(); s["done"], s["partial"]
    ([0], {'1': [[2, 4]]})
    >>> q = ReadProgress.from_state(s)
    >>> q.skip_reads(), q.keep_mask(1, np.arange(5)).tolist()
    ({0}, [True, True, False, False, True])
    """

    def __init__(self, epoch: int, seed: int | None, order: list[int], mode: str = "reads") -> None:
        self.epoch, self.seed, self.order, self.mode = epoch, seed, list(order), mode
        self.deterministic = True  # False: output order varies between runs
        self._lock = threading.Lock()
        self.delivered: dict[int, np.ndarray] = {}  # unit -> bool bitmap of offsets
        self.totals: dict[int, int] = {}
        self.done: set[int] = set()  # read partitions fully delivered
        self.rows = 0
        # "keys" mode: a unit is one output partition, named by its lineage key; a read is
        # done once it has settled (no more outputs) and every one of its units is done.
        self.names: dict[int, str] = {}
        self._units: dict[str, int] = {}
        self.done_units: set[int] = set()
        self._read_units: dict[int, set[int]] = {}
        self._settled: set[int] = set()
        self.merged = False  # a partition mixed several reads: only a row count is exact

    def unit_for(self, key: str, read: int) -> int:
        """The unit (a small int packed into row ids) of output partition ``key`` of ``read``.

        >>> p = ReadProgress(0, None, [0], mode="keys")
        >>> p.unit_for("s0r0o0t1o0", 0), p.unit_for("s0r0o1t1o0", 0), p.unit_for("s0r0o0t1o0", 0)
        (0, 1, 0)
        """
        with self._lock:
            unit = self._unit(key)
            self._read_units.setdefault(read, set()).add(unit)
            return unit

    def settled(self, read: int) -> None:
        """Read partition ``read`` will produce no more output partitions ("keys" mode)."""
        with self._lock:
            self._settled.add(read)
            self._maybe_read_done(read)

    def key_done(self, key: str) -> bool:
        """Whether every row of output partition ``key`` was delivered."""
        unit = self._units.get(key)
        return unit is not None and unit in self.done_units

    def key_mask(self, key: str, offsets: np.ndarray) -> np.ndarray | None:
        """Which ``offsets`` of output partition ``key`` are still to deliver (None: all)."""
        unit = self._units.get(key)
        return None if unit is None else self.keep_mask(unit, offsets)

    def mark(self, ids: np.ndarray) -> None:
        """Record rows handed to the user."""
        with self._lock:
            self._mark(ids)

    def _mark(self, ids: np.ndarray) -> None:
        self.rows += len(ids)
        if self.mode == "ordered" or not len(ids):
            return
        reads, offsets = unpack_ids(ids)
        for read in np.unique(reads).tolist():
            mine = offsets[reads == read]
            bitmap = self.delivered.get(read)
            need = int(mine.max()) + 1
            if bitmap is None or len(bitmap) < need:
                grown = np.zeros(max(need, 2 * len(bitmap) if bitmap is not None else need), bool)
                if bitmap is not None:
                    grown[:len(bitmap)] = bitmap
                bitmap = self.delivered[read] = grown
            bitmap[mine] = True
            self._maybe_done(read)

    def produced_all(self, read: int, total: int) -> None:
        """Record that read partition ``read`` produced ``total`` rows in all."""
        with self._lock:
            self.totals[read] = total
            self._maybe_done(read)

    def _maybe_done(self, read: int) -> None:
        total = self.totals.get(read)
        if total is None:
            return
        bitmap = self.delivered.get(read)
        if total == 0 or (bitmap is not None and len(bitmap) >= total and bitmap[:total].all()):
            self.delivered.pop(read, None)
            if self.mode != "keys":
                self.done.add(read)
                return
            self.done_units.add(read)  # in "keys" mode, ``read`` is a unit
            for r, units in self._read_units.items():
                if read in units:
                    self._maybe_read_done(r)

    def _maybe_read_done(self, read: int) -> None:
        units = self._read_units.get(read, set())
        if read in self._settled and units <= self.done_units and read not in self.done:
            self.done.add(read)
            self.done_units -= units  # a done read stands for all its partitions

    def at_start(self) -> bool:
        """Nothing of the epoch delivered yet (a state saved before its first batch, when
        the partitions were not even known: its ``order`` is empty).

        >>> ReadProgress(2, None, []).at_start()
        True
        """
        return not (self.rows or self.done or self.done_units or self.delivered)

    def state_dict(self) -> dict:
        """A JSON-serializable position: epoch, seed, done and partially delivered reads."""
        with self._lock:
            return self._state()

    def _state(self) -> dict:
        name = (lambda u: self.names[u]) if self.mode == "keys" else str
        partial = {name(r): _ranges(b) for r, b in sorted(self.delivered.items()) if b.any()}
        state = {"format": STATE_FORMAT, "mode": self.mode, "epoch": self.epoch,
                 "seed": self.seed, "order": list(self.order), "rows": self.rows,
                 "done": sorted(self.done), "partial": partial}
        if self.mode == "keys":
            state["done_keys"] = sorted(self.names[u] for u in self.done_units)
        return state

    @classmethod
    def from_state(cls, state: dict) -> ReadProgress:
        """Restore a position saved by ``state_dict``."""
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise ValueError(f"load_state_dict expects a state saved by state_dict() "
                             f"(format {STATE_FORMAT!r}), got {str(state)[:80]!r}")
        p = cls(state["epoch"], state["seed"], state["order"], state["mode"])
        p.rows = state["rows"]
        p.done = set(state["done"])
        for key in state.get("done_keys", ()):
            p.done_units.add(p._unit(key))
        for read, ranges in state["partial"].items():
            end = max(e for _, e in ranges)
            bitmap = np.zeros(end, bool)
            for s, e in ranges:
                bitmap[s:e] = True
            p.delivered[p._unit(read) if p.mode == "keys" else int(read)] = bitmap
        return p

    def _unit(self, key: str) -> int:
        unit = self._units.get(key)
        if unit is None:
            unit = self._units[key] = len(self.names)
            self.names[unit] = key
        return unit

    def skip_reads(self) -> set[int]:
        """Read partitions already fully delivered (not re-read on resume)."""
        return set(self.done)

    def keep_mask(self, read: int, offsets: np.ndarray) -> np.ndarray | None:
        """Which of ``offsets`` of ``read`` are still to deliver (None: all of them)."""
        bitmap = self.delivered.get(read)
        if bitmap is None:
            return None
        inside = offsets < len(bitmap)
        delivered = np.zeros(len(offsets), bool)
        delivered[inside] = bitmap[offsets[inside]]
        return ~delivered


def _ranges(bitmap: np.ndarray) -> list[list[int]]:
    """[start, end) runs of True.

    >>> _ranges(np.array([1, 1, 0, 1], bool))
    [[0, 2], [3, 4]]
    """
    padded = np.concatenate([[False], bitmap, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return [[int(s), int(e)] for s, e in zip(edges[::2], edges[1::2], strict=True)]
