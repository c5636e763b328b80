"""Cutting a task's output into blocks: coalesce tiny ones, split large ones, and line
them up with the next stage's batches (its ``batch_rows``)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pyarrow as pa

WHOLE_BYTES = 4 * 2**20  # a block this big (or an eighth of the target) passes as it is


def split_blocks(blocks: Iterator[pa.Table], target_bytes: int,
                 batch_rows: int | None = None) -> Iterator[pa.Table]:
    """Coalesce small blocks and split large ones so outputs are near ``target_bytes``
    (the first block of a task is passed on at once, for a fast pipeline start; a block
    of ``WHOLE_BYTES`` or an eighth of the target passes as it is: joining it would copy
    it for little gain in block count).
    With ``batch_rows`` (the next stage's batch size), blocks are cut at multiples
    of it, in one piece of memory each, so that stage's batches are read in place.

    >>> t = pa.table({"x": list(range(1000))})
    >>> [b.num_rows for b in split_blocks(iter([t]), target_bytes=2000)]
    [250, 250, 250, 250]
    >>> [b.num_rows for b in split_blocks(iter([t]), target_bytes=2000, batch_rows=300)]
    [300, 300, 300, 100]
    >>> [b.num_rows for b in split_blocks(iter([t.slice(0, 3), t.slice(3, 4), t.slice(7, 2)]), 10**6)]
    [3, 6]
    >>> ones = [t.slice(i, 1) for i in range(7)]
    >>> [(b.num_rows, b.column(0).num_chunks) for b in split_blocks(iter(ones), 8, batch_rows=2)]
    [(1, 1), (2, 1), (2, 1), (2, 1)]
    """
    pending: list[pa.Table] = []
    pending_bytes = 0
    first = True
    for table in blocks:
        if first and table.num_rows:
            # The first block goes out at once: the next stage (or the consumer) can
            # start while this task works on the rest; later blocks are coalesced.
            first = False
            yield from _slices(table, target_bytes, batch_rows) if table.nbytes > target_bytes else [table]
            continue
        if table.nbytes > target_bytes and table.num_rows > 1:
            if pending:
                yield _concat(pending, batch_rows)
                pending, pending_bytes = [], 0
            yield from _slices(table, target_bytes, batch_rows)
            continue
        if not pending and table.nbytes >= min(target_bytes // 8, WHOLE_BYTES) \
                and _aligned(table, batch_rows):
            yield table  # big enough to travel alone: joining it to others is a copy
            continue
        pending.append(table)
        pending_bytes += table.nbytes
        if pending_bytes >= target_bytes:
            ready, rest = _aligned_prefix(_concat(pending, batch_rows), batch_rows)
            if ready is not None:
                yield ready
            pending = [rest] if rest is not None else []
            pending_bytes = rest.nbytes if rest is not None else 0
    if pending:
        yield _concat(pending, batch_rows)


def _aligned(table: pa.Table, batch_rows: int | None) -> bool:
    """True when the block holds whole batches of the next stage (or it has none)."""
    return not batch_rows or table.num_rows % batch_rows == 0


def _slices(table: pa.Table, target_bytes: int, batch_rows: int | None) -> Iterator[pa.Table]:
    pieces = min(table.num_rows, math.ceil(table.nbytes / target_bytes))
    step = math.ceil(table.num_rows / pieces)
    if batch_rows:
        step = aligned_step(step, batch_rows, table.num_rows)
    for start in range(0, table.num_rows, step):
        yield table.slice(start, step)


def aligned_step(step: int, batch_rows: int, total_rows: int = 0) -> int:
    """Rows per block near ``step`` that line up with batches of ``batch_rows``: a
    multiple of it, or below it a divisor (whole blocks fill a batch), preferring,
    within a factor of two of ``step``, one that also divides ``total_rows`` (no
    short last block).

    >>> aligned_step(4, 10), aligned_step(1, 10), aligned_step(2, 10), aligned_step(25, 10)
    (5, 1, 2, 30)
    >>> aligned_step(3, 10, total_rows=5), aligned_step(3, 10, total_rows=10)
    (5, 2)
    """
    if step >= batch_rows:
        return math.ceil(step / batch_rows) * batch_rows
    small = [d for d in range(1, math.isqrt(batch_rows) + 1) if batch_rows % d == 0]
    divisors = small + [batch_rows // d for d in small]
    near = [d for d in divisors if step / 2 <= d <= 2 * step] or divisors
    return min(near, key=lambda d: (bool(total_rows) and total_rows % d != 0,
                                    abs(d - step), -d))


def _aligned_prefix(table: pa.Table, batch_rows: int | None):
    """(the rows up to the last multiple of ``batch_rows``, the rest); None for empty."""
    cut = table.num_rows if not batch_rows else table.num_rows // batch_rows * batch_rows
    head = table.slice(0, cut) if cut else None
    rest = table.slice(cut) if cut < table.num_rows else None
    return head, rest


def _concat(tables: list[pa.Table], batch_rows: int | None = None) -> pa.Table:
    """A task's output blocks as one: zero-copy when their schemas agree, else unified
    by ``concat_blocks`` (e.g. tensor shapes that differ between blocks become one
    variable-shape column); rows of blocks with no columns are kept.

    >>> import numpy as np
    >>> from streambatch.connectors.tensors import tensor_array
    >>> a = pa.table({"v": tensor_array(np.zeros((2, 2)))})
    >>> _concat([a, pa.table({"v": tensor_array(np.zeros((1, 3)))})]).schema.field("v").type.extension_name
    'arrow.variable_shape_tensor'
    >>> _concat([a.select([]), a.select([])]).num_rows
    4
    """
    non_empty = [t for t in tables if t.num_rows] or tables[:1]
    if len(non_empty) == 1:
        return non_empty[0]
    from streambatch.connectors.block_joins import concat_blocks

    try:
        joined = concat_blocks(non_empty)
    except ValueError as err:
        raise ValueError(f"this task's output blocks cannot be joined: {err}") from err
    if batch_rows and any(t.num_rows % batch_rows for t in non_empty[:-1]):
        return joined.combine_chunks()  # a batch would span pieces: one copy here
    return joined
