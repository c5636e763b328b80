"""Nodes: the machines of a backend, their free resources and their share of memory.

A backend of one machine (the local one) is one node, and everything here reduces to
the single :class:`~streambatch.executor.resources.ResourceLedger` it always was. A
backend of several (``Backend.nodes()``) has a memory budget per node too: the job's
budget shared in proportion to each node's memory. A global budget alone lets one
node's store fill while others are empty (tasks land where resources are free, and
their blocks stay there until consumed), so the executor places each task itself:
on a node with the task's resources free and room in its memory share for what the
task will make, preferring the node that holds most of its input (which the task then
frees there) and, among the rest, the emptiest.

>>> from streambatch.executor.backends.base import Node
>>> from streambatch.executor.contract import Resources
>>> ledger = NodeLedger([Node(2), Node(2)])
>>> a = ledger.acquire(Resources(), order=[1, 0])
>>> a.node, ledger.num_cpus, ledger.free_cpus
(1, 4.0, 3.0)
>>> shares(1000, [Node(2, memory=3), Node(2, memory=1)]), shares(1000, [Node(2), Node(2)])
([750, 250], [500, 500])
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from streambatch.executor.backends.base import Node
from streambatch.executor.contract import Resources
from streambatch.executor.resources import Allocation, ResourceLedger


def shares(budget: int, nodes: Sequence[Node]) -> list[int]:
    """Each node's part of ``budget``: in proportion to its memory (equal when unknown)."""
    total = sum(n.memory for n in nodes)
    if total <= 0 or any(n.memory <= 0 for n in nodes):
        return [budget // len(nodes)] * len(nodes)
    return [budget * n.memory // total for n in nodes]


class NodeLedger:
    """Free and total resources of each node; hands out allocations on one node.

    >>> from streambatch.executor.backends.base import Node
    >>> ledger = NodeLedger([Node(1, 1), Node(1, 0)])
    >>> ledger.fits_ever(Resources(num_cpus=2))
    'asks for 2 CPUs but the backend has 1 (on each of its 2 nodes)'
    >>> ledger.acquire(Resources(num_gpus=1)).node, ledger.acquire(Resources(num_gpus=1))
    (0, None)
    """

    def __init__(self, nodes: Sequence[Node]) -> None:
        self.nodes = list(nodes)
        self.ledgers = [ResourceLedger(n.num_cpus, n.num_gpus, dict(n.custom)) for n in nodes]

    @property
    def num_cpus(self) -> float:
        """CPUs of all nodes."""
        return float(sum(led.num_cpus for led in self.ledgers))

    @property
    def num_gpus(self) -> float:
        """GPUs of all nodes."""
        return float(sum(led.num_gpus for led in self.ledgers))

    @property
    def free_cpus(self) -> float:
        """CPUs free on all nodes together."""
        return sum(led.free_cpus for led in self.ledgers)

    def fits_ever(self, req: Resources) -> str | None:
        """None when ``req`` fits one empty node, else what is missing."""
        missing = [led.fits_ever(req) for led in self.ledgers]
        if any(m is None for m in missing):
            return None
        if len(self.ledgers) == 1:
            return missing[0]
        return f"{missing[0]} (on each of its {len(self.ledgers)} nodes)"

    def acquire(self, req: Resources, order: Iterable[int] | None = None) -> Allocation | None:
        """Take ``req`` on the first node of ``order`` where it fits now (default: the
        node with most of what ``req`` asks for free, which spreads actors and tasks)."""
        for node in self.spread(req) if order is None else order:
            alloc = self.ledgers[node].acquire(req)
            if alloc is not None:
                alloc.node = node
                return alloc
        return None

    def spread(self, req: Resources) -> list[int]:
        """Nodes, the one with the most free GPUs first for a request of GPUs, else the
        one with the most free CPUs.

        >>> from streambatch.executor.backends.base import Node
        >>> ledger = NodeLedger([Node(4, 2), Node(4, 2)])
        >>> [ledger.acquire(Resources(num_cpus=0, num_gpus=1)).node for _ in range(3)]
        [0, 1, 0]
        """
        if len(self.ledgers) == 1:
            return [0]
        if req.num_gpus:
            return sorted(range(len(self.ledgers)), key=lambda i: -sum(self.ledgers[i].gpu_free))
        return sorted(range(len(self.ledgers)), key=lambda i: -self.ledgers[i].free_cpus)

    def release(self, alloc: Allocation) -> None:
        """Give an allocation back to its node."""
        self.ledgers[alloc.node].release(alloc)

    def resize(self, num_cpus: float, num_gpus: float, custom: dict) -> bool:
        """Follow a one-node backend whose resources changed (a Ray cluster seen as one
        pool); True if changed. A backend of several nodes keeps its nodes."""
        if len(self.ledgers) != 1:
            return False
        return self.ledgers[0].resize(num_cpus, num_gpus, custom)
