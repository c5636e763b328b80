"""Projection pushdown: ``select_columns`` right after a read becomes the read's columns."""

from __future__ import annotations

from dataclasses import replace

from streambatch.operators import logical as L


def push_projection(op: L.LogicalOp) -> L.LogicalOp:
    """Fold ``Project(keep=True)`` into a ``Read`` whose source can project.

    >>> from streambatch.connectors.memory import ArrowSource
    >>> import pyarrow as pa
    >>> read = L.Read(ArrowSource([pa.table({"a": [1], "b": [2]})]), "Arrow")
    >>> push_projection(L.Project(read, columns=("a",))).label
    "Read[Arrow; columns=['a']]"
    """
    if not (isinstance(op, L.Project) and op.keep and isinstance(op.input, L.Read)):
        return op
    read = op.input
    if not getattr(read.source, "supports_projection", False):
        return op
    if read.columns is not None and not set(op.columns) <= set(read.columns):
        return op
    return replace(read, columns=tuple(op.columns))
