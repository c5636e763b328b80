"""The first op of a read stage whose source skips unreadable files (``on_error="skip"``):
it moves each :class:`~streambatch.connectors.datasource.SkippedInput` the read yields
to the task's dead letters (file path and error), so no file is dropped silently."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
from streambatch.connectors.datasource import SkippedInput
from streambatch.executor.contract import TaskContext
from streambatch.operators import logical as L
from streambatch.operators.block_ops import OpBase


@dataclass
class SkippedReadsOp(OpBase):
    """Pass tables on; record skipped files as dead letters.

    >>> from streambatch.connectors.memory import RangeSource
    >>> op, ctx = SkippedReadsOp(L.Read(RangeSource(1), "Range")), TaskContext("Read", 0, "p0")
    >>> out = list(op.apply(iter([SkippedInput("/a.png", "FileReadError: bad"), pa.table({"x": [1]})]), ctx))
    >>> len(out), ctx.dead_letters[0]["row"], ctx.dead_letters[0]["where"]
    (1, '{"path": "/a.png"}', 'file /a.png')
    """

    op: L.Read

    def apply(self, blocks: Iterator, ctx: TaskContext) -> Iterator[pa.Table]:
        """Yield the tables; each skipped file becomes one dead letter."""
        for item in blocks:
            if isinstance(item, SkippedInput):
                ctx.dead_letters.append({"stage": ctx.stage, "op": self.name,
                                         "partition": ctx.partition, "where": f"file {item.path}",
                                         "error": item.error,
                                         "row": json.dumps({"path": item.path})})
                continue
            yield item


def read_ops(op: L.Read) -> list:
    """The ops a read stage starts with: a :class:`SkippedReadsOp` when its source skips.

    >>> from streambatch.connectors.memory import RangeSource
    >>> read_ops(L.Read(RangeSource(1), "Range"))
    []
    """
    return [SkippedReadsOp(op)] if getattr(op.source, "on_error", "raise") == "skip" else []
