"""Predicate pushdown: an expression filter right after a read goes into the read."""

from __future__ import annotations

from dataclasses import replace

import pyarrow as pa
from streambatch.operators import logical as L


def push_filter(op: L.LogicalOp) -> L.LogicalOp:
    """Fold ``Filter(expr=...)`` into a ``Read`` whose source can filter.

    A read filters before it projects, so a filter above a pushed projection
    (``select_columns(["a"]).filter(expr=b > 2)``) is folded in only when it reads
    nothing but the projected columns; else it stays an op above the read and fails
    there, naming the missing column, exactly as the un-optimized plan does.

    >>> import pyarrow.compute as pc
    >>> from streambatch.connectors.memory import ArrowSource
    >>> read = L.Read(ArrowSource([pa.table({"a": [1, 5], "b": [0, 1]})]), "Arrow")
    >>> push_filter(L.Filter(read, expr=pc.field("a") > 2)).label
    'Read[Arrow; filter=(a > 2)]'
    >>> push_filter(L.Filter(replace(read, columns=("a",)), expr=pc.field("b") > 0)).label
    'Filter((b > 0))'
    """
    if not (isinstance(op, L.Filter) and op.expr is not None and isinstance(op.input, L.Read)):
        return op
    read = op.input
    if not getattr(read.source, "supports_filter", False) or read.limit is not None:
        return op
    if read.columns is not None and not _reads_only(op.expr, read):
        return op
    combined = op.expr if read.filter is None else (read.filter & op.expr)
    return replace(read, filter=combined)


def _reads_only(expr, read: L.Read) -> bool:
    """True when ``expr`` evaluates on the read's projected columns alone, checked on an
    empty table of the source's schema (without a schema, it is not known: False)."""
    try:
        schema = getattr(read.source, "schema", lambda: None)()
        if schema is None:
            return False
        pa.schema([schema.field(c) for c in read.columns or ()]).empty_table().filter(expr)
    except Exception:  # noqa: BLE001 - no schema, or a missing column: the filter stays an op
        return False
    return True
