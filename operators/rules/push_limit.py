"""Limit pushdown: a limit above row-preserving operators caps every read task.

The ``Limit`` itself stays (it cuts the total); each read task stops after
``n`` rows, so ``take(5)`` on a large file reads a few rows, not row groups.
"""

from __future__ import annotations

from dataclasses import replace

from streambatch.operators import logical as L


def push_limit(op: L.LogicalOp) -> L.LogicalOp:
    """Set ``Read.limit`` under a ``Limit`` reached through row-preserving ops only.

    Returns ``op`` itself when there is nothing (more) to push, so the optimizer sees
    its fixed point.

    >>> from streambatch.connectors.memory import ArrowSource
    >>> import pyarrow as pa
    >>> read = L.Read(ArrowSource([pa.table({"a": [1, 2, 3]})]), "Arrow")
    >>> plan = push_limit(L.Limit(L.MapRows(read, fn=dict), n=2))
    >>> plan.input.input.label
    'Read[Arrow; limit=2]'
    >>> push_limit(plan) is plan
    True
    """
    if not isinstance(op, L.Limit):
        return op
    if isinstance(op.input, L.Limit):
        return L.Limit(op.input.input, n=min(op.n, op.input.n))
    capped = _cap_reads(op.input, op.n)
    return op if capped is op.input else replace(op, input=capped)


def _cap_reads(op: L.LogicalOp, n: int) -> L.LogicalOp:
    """``op`` with the reads under it capped at ``n`` rows (``op`` itself if unchanged)."""
    if isinstance(op, L.Read):
        if not getattr(op.source, "supports_limit", False):
            return op
        if op.limit is not None and op.limit <= n:
            return op
        return replace(op, limit=n)
    if isinstance(op, L.MapLike) and op.row_preserving:
        capped = _cap_reads(op.input, n)
        return op if capped is op.input else op.with_inputs(capped)
    return op
