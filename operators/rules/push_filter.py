"""Predicate pushdown: an expression filter right after a read goes into the read."""

from __future__ import annotations

from dataclasses import replace

from streambatch.operators import logical as L


def push_filter(op: L.LogicalOp) -> L.LogicalOp:
    """Fold ``Filter(expr=...)`` into a ``Read`` whose source can filter.

    >>> import pyarrow.compute as pc
    >>> from streambatch.connectors.memory import ArrowSource
    >>> import pyarrow as pa
    >>> read = L.Read(ArrowSource([pa.table({"a": [1, 5]})]), "Arrow")
    >>> push_filter(L.Filter(read, expr=pc.field("a") > 2)).label
    'Read[Arrow; filter=(a > 2)]'
    """
    if not (isinstance(op, L.Filter) and op.expr is not None and isinstance(op.input, L.Read)):
        return op
    read = op.input
    if not getattr(read.source, "supports_filter", False) or read.limit is not None:
        return op
    combined = op.expr if read.filter is None else (read.filter & op.expr)
    return replace(read, filter=combined)
