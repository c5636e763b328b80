"""Optimizer rules, one per file. Logical rules rewrite the operator tree;
the fusion rule works on physical stages.

>>> from streambatch.operators import logical as L
>>> plan = L.Limit(L.MapRows(L.Read(None, "Range"), fn=str), n=2)
>>> [op.label for op in L.walk(transform_up(plan, lambda op: op))]
['Read[Range]', 'Map(str)', 'Limit[2]']
"""

from __future__ import annotations

from collections.abc import Callable

from streambatch.operators.logical import LogicalOp


def transform_up(op: LogicalOp, fn: Callable[[LogicalOp], LogicalOp]) -> LogicalOp:
    """Rewrite a plan bottom-up: children first, then ``fn`` on the rebuilt node."""
    children = tuple(transform_up(child, fn) for child in op.inputs)
    if any(new is not old for new, old in zip(children, op.inputs, strict=False)):
        op = op.with_inputs(*children)
    return fn(op)
