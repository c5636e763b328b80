"""Limit pushdown: a limit above row-preserving operators caps every read task.

The ``Limit`` itself stays (it cuts the total); each read task stops after
``n`` rows, so ``take(5)`` on a large file reads a few rows, not row groups.
"""

from __future__ import annotations

from dataclasses import replace

from streambatch.operators import logical as L


def push_limit(op: L.LogicalOp) -> L.LogicalOp:
    """Set ``Read.limit`` under a ``Limit`` reached through row-preserving ops only.

    >>> from streambatch.connectors.memory import ArrowSource
    >>> import pyarrow as pa
    >>> read = L.Read(ArrowSource([pa.table({"a": [1, 2, 3]})]), "Arrow")
    >>> plan = push_limit(L.Limit(L.MapRows(read, fn=dict), n=2))
    >>> plan.input.input.label
    'Read[Arrow; limit=2]'
    """
    if not isinstance(op, L.Limit):
        return op
    if isinstance(op.input, L.Limit):
        return L.Limit(op.input.input, n=min(op.n, op.input.n))
    return replace(op, input=_cap_reads(op.input, op.n))


def _cap_reads(op: L.LogicalOp, n: int) -> L.LogicalOp:
    if isinstance(op, L.Read):
        if not getattr(op.source, "supports_limit", False):
            return op
        return replace(op, limit=n if op.limit is None else min(n, op.limit))
    if isinstance(op, L.MapLike) and op.row_preserving:
        return op.with_inputs(_cap_reads(op.input, n))
    return op
