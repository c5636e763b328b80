"""Shuffling for training loaders: seeded block order, and a local shuffle buffer.

Rows carry an id (``pack_ids``: the read partition and the row offset in what
that read produced), so a loader can record exactly which rows it delivered.

The shuffle buffer shuffles *indices*: blocks stay where they are (zero-copy
Arrow buffers) and a batch is gathered once, straight into its final random
order, from numpy views of the buffered blocks.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa

OFFSET_BITS = 40
_OFFSET_MASK = (1 << OFFSET_BITS) - 1


def pack_ids(read_index: int, start: int, rows: int) -> np.ndarray:
    """Row ids ``read_index << 40 | offset`` for ``rows`` rows starting at ``start``.

    >>> unpack_ids(pack_ids(3, 10, 2))
    (array([3, 3]), array([10, 11]))
    """
    return (np.int64(read_index) << OFFSET_BITS) + np.arange(start, start + rows, dtype=np.int64)


def unpack_ids(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split packed row ids into (read indices, row offsets).

    >>> unpack_ids(np.array([(1 << 40) + 5]))
    (array([1]), array([5]))
    """
    return ids >> OFFSET_BITS, ids & _OFFSET_MASK


def epoch_rng(seed: int, epoch: int, purpose: int) -> np.random.Generator:
    """A generator determined by (seed, epoch, purpose): same inputs, same stream.

    >>> int(epoch_rng(1, 0, 0).integers(100)) == int(epoch_rng(1, 0, 0).integers(100))
    True
    """
    return np.random.default_rng([seed, epoch, purpose])


def block_order(num_blocks: int, seed: int | None, epoch: int) -> list[int]:
    """The order in which to read ``num_blocks`` read partitions in ``epoch``.

    ``seed=None`` keeps the natural order; otherwise a permutation that is the
    same for the same (seed, epoch) and changes from epoch to epoch.

    >>> block_order(5, None, 0)
    [0, 1, 2, 3, 4]
    >>> block_order(5, 7, 0) == block_order(5, 7, 0), sorted(block_order(5, 7, 1))
    (True, [0, 1, 2, 3, 4])
    """
    if seed is None:
        return list(range(num_blocks))
    return [int(i) for i in epoch_rng(seed, epoch, 0).permutation(num_blocks)]


def numpy_view(column: pa.ChunkedArray) -> np.ndarray | None:
    """A zero-copy numpy view of a single-chunk numeric or fixed-shape tensor column.

    None when no zero-copy view exists (nulls, strings, booleans, several chunks).

    >>> numpy_view(pa.chunked_array([[1, 2]])).tolist()
    [1, 2]
    >>> numpy_view(pa.chunked_array([["a"]])) is None
    True
    """
    if column.num_chunks != 1:
        return None
    chunk = column.chunk(0)
    if chunk.null_count:
        return None
    if isinstance(chunk.type, pa.FixedShapeTensorType):
        return chunk.to_numpy_ndarray()
    if pa.types.is_integer(chunk.type) or pa.types.is_floating(chunk.type):
        return chunk.to_numpy(zero_copy_only=True)
    return None


def column_from_numpy(values: np.ndarray) -> pa.Array:
    """An Arrow column over ``values`` (n-d arrays become fixed-shape tensor columns).

    >>> str(column_from_numpy(np.zeros((2, 3), dtype=np.uint8)).type)
    'extension<arrow.fixed_shape_tensor[value_type=uint8, shape=[3]...]>'
    """
    if values.ndim > 1:
        return pa.FixedShapeTensorArray.from_numpy_ndarray(values)
    return pa.array(values)


class _Block:
    __slots__ = ("table", "ids", "views", "left")

    def __init__(self, table: pa.Table, ids: np.ndarray) -> None:
        self.ids, self.left = ids, table.num_rows
        self.reset(table)

    def reset(self, table: pa.Table) -> None:
        """Hold ``table`` (the same rows, e.g. with a widened schema) and its column views."""
        self.table = table.combine_chunks() if any(
            c.num_chunks > 1 for c in table.columns) else table
        self.views = [numpy_view(c) for c in self.table.columns]


class ShuffleBuffer:
    """Rows from incoming blocks, handed out in seeded random order, a batch at a time.

    A batch is drawn once the buffer holds at least ``buffer_size`` rows beyond
    it; at the end, ``drain`` hands out the rest, still shuffled.

    >>> buf = ShuffleBuffer(buffer_size=4, seed=0)
    >>> buf.add(pa.table({"x": np.arange(10)}), pack_ids(0, 0, 10))
    >>> batch, ids = buf.pop(3)
    >>> batch.num_rows, sorted(batch["x"].to_pylist()) == sorted(unpack_ids(ids)[1].tolist())
    (3, True)
    >>> sorted(sum((b["x"].to_pylist() for b, _ in buf.drain(3)), batch["x"].to_pylist()))
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    """

    def __init__(self, buffer_size: int, seed: int | None = None,
                 rng: np.random.Generator | None = None) -> None:
        if buffer_size < 1:
            raise ValueError(f"local_shuffle_buffer_size must be >= 1, got {buffer_size}")
        self.buffer_size = buffer_size
        self.rng = rng if rng is not None else np.random.default_rng(seed)
        self._blocks: dict[int, _Block] = {}
        self._pool = np.empty(0, dtype=np.int64)  # slot << 40 | row
        self._next_slot = 0
        self._schema: pa.Schema | None = None

    @property
    def rows(self) -> int:
        """Rows buffered now."""
        return len(self._pool)

    def add(self, table: pa.Table, ids: np.ndarray) -> None:
        """Buffer a block (kept as is when its schema is the buffer's) and its row ids.

        Columns are matched by name: a block whose columns come in another order,
        lack one or hold a wider type is unified with the buffer first (and the
        buffered blocks with it, when the schema widens), never taken by position.
        """
        if not table.num_rows:
            return
        if self._schema is None:
            self._schema = table.schema
        elif table.schema != self._schema:
            table = self._unified(table)
        slot = self._next_slot
        self._next_slot += 1
        self._blocks[slot] = _Block(table, ids)
        new = (np.int64(slot) << OFFSET_BITS) + np.arange(table.num_rows, dtype=np.int64)
        self._pool = np.concatenate([self._pool, new])

    def _unified(self, table: pa.Table) -> pa.Table:
        from streambatch.connectors.block_joins import concat_blocks

        assert self._schema is not None  # set by the first block added
        unified = concat_blocks([self._schema.empty_table(), table])
        if unified.schema != self._schema:  # the buffer's schema widens: its blocks follow
            self._schema = unified.schema
            for block in self._blocks.values():
                block.reset(concat_blocks([self._schema.empty_table(), block.table]))
        return unified

    def ready(self, batch_size: int) -> bool:
        """True when a batch can be drawn while keeping ``buffer_size`` rows to mix with."""
        return self.rows >= self.buffer_size + batch_size

    def pop(self, n: int) -> tuple[pa.Table, np.ndarray]:
        """Draw ``n`` random rows (fewer if fewer are buffered) as one table, with their ids."""
        n = min(n, self.rows)
        picks = self.rng.choice(self.rows, size=n, replace=False)
        chosen = self._pool[picks]
        self._pool = np.delete(self._pool, picks)
        return self._gather(chosen)

    def drain(self, batch_size: int) -> Iterator[tuple[pa.Table, np.ndarray]]:
        """Everything left, shuffled, in batches of ``batch_size`` (the last may be short)."""
        while self.rows:
            yield self.pop(batch_size)

    def _gather(self, chosen: np.ndarray) -> tuple[pa.Table, np.ndarray]:
        slots, rows = chosen >> OFFSET_BITS, chosen & _OFFSET_MASK
        groups = []
        for slot in np.unique(slots):
            where = np.nonzero(slots == slot)[0]
            groups.append((self._blocks[int(slot)], where, rows[where]))
        ids = np.empty(len(chosen), dtype=np.int64)
        for block, where, picked in groups:
            ids[where] = block.ids[picked]
        assert self._schema is not None  # rows are drawn only after blocks were added
        columns = [self._gather_column(i, groups, len(chosen))
                   for i in range(len(self._schema.names))]
        for block, _, picked in groups:
            block.left -= len(picked)
        for slot in [int(s) for s in np.unique(slots)]:
            if self._blocks[slot].left == 0:
                del self._blocks[slot]
        return pa.table(columns, names=self._schema.names), ids

    def _gather_column(self, i: int, groups, n: int):
        views = [block.views[i] for block, _, _ in groups]
        if all(v is not None for v in views) and len({(v.dtype, v.shape[1:]) for v in views}) == 1:
            out = np.empty((n, *views[0].shape[1:]), dtype=views[0].dtype)
            for view, (_, where, picked) in zip(views, groups, strict=True):
                out[where] = view[picked]  # the one copy: straight into batch order
            return column_from_numpy(out)
        # Columns without a numpy view (strings, nulls...): take per block, then reorder.
        pieces, order = [], []
        for block, where, picked in groups:
            pieces.append(block.table.column(i).take(pa.array(picked)))
            order.append(where)
        merged = pa.concat_arrays([c for p in pieces for c in p.chunks])  # groups: never empty
        inverse = np.empty(n, dtype=np.int64)
        inverse[np.concatenate(order)] = np.arange(n)
        return merged.take(pa.array(inverse))
