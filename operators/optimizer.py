"""The optimizer: apply the logical rules (one per file under ``rules/``) in order."""

from __future__ import annotations

from streambatch.operators.logical import LogicalOp
from streambatch.operators.rules import transform_up
from streambatch.operators.rules.push_filter import push_filter
from streambatch.operators.rules.push_limit import push_limit
from streambatch.operators.rules.push_projection import push_projection
from streambatch.operators.rules.translate_filter import translate_filter

LOGICAL_RULES = (push_filter, translate_filter, push_projection, push_limit)


def optimize(plan: LogicalOp) -> LogicalOp:
    """Rewrite ``plan`` with every logical rule, bottom-up, until nothing changes.

    >>> from streambatch.operators import logical as L
    >>> from streambatch.connectors.memory import RangeSource
    >>> plan = L.Limit(L.Project(L.Read(RangeSource(10), "Range"), columns=("id",)), n=2)
    >>> print(L.render(optimize(plan)))
    Limit[2]
    +- Read[Range; columns=['id'], limit=2]
    """
    for _ in range(10):
        before = plan
        for rule in LOGICAL_RULES:
            plan = transform_up(plan, rule)
        if plan is before:
            return plan
    return plan
