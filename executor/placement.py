"""Where the executor starts a task it has admitted: a CPU slot (or an idle actor's
lent CPUs) or a free actor of the stage's pool, on a node with room for it.

On one node only resources decide. On several (``Backend.nodes()``), each node also
has its share of the memory budget (:func:`~streambatch.executor.nodes.shares`) for
the blocks it holds (its object store, in Ray's terms; a task's working memory is its
worker's heap, which the global budget counts), and a task goes to a node where its
expected output fits that share, with the inputs it copies from other nodes (its
local inputs are held until it ends). Among those, the node that is least full afterwards comes
first (a node holding its input needs no copy, so locality counts, but a node full of
other work, such as the one an actor is pinned to, is left free). A node that holds
nothing takes a task whatever its estimate (one expected to make more than a share
runs alone: an estimate made before the stage's growth is measured errs high), and
when none of the job's tasks runs any node takes a task (liveness).

>>> from streambatch.executor.backends.base import Node
>>> from streambatch.executor.nodes import NodeLedger
>>> from streambatch.executor.partition import Partition
>>> import pyarrow as pa
>>> place = Placement(NodeLedger([Node(2), Node(2)]), {}, {}, budget=2000)
>>> part = Partition.from_table(pa.table({"x": [1] * 100}), stage=0)   # 800 bytes
>>> part.node = 1
>>> place.nodes_for([], [part], 300)         # its input is on node 1
[1, 0]
>>> place.nodes_for([], [], 1200)            # over a node's share (1000): liveness
[0, 1]
>>> place.tasks[7] = type("T", (), dict(alloc=None, actor_id=None, stage_index=0, est_bytes=900,
...                                     produced_bytes=0, inputs=[]))()
>>> place.nodes_for([], [], 1200), place.nodes_for([], [], 200)  # node 0 runs a task of 900
([1], [1])
"""

from __future__ import annotations

from streambatch.executor.nodes import NodeLedger, shares
from streambatch.executor.resources import Allocation
from streambatch.executor.stage_state import StageState


class Placement:
    """Picks the node, and the slot or actor on it, for each task the executor starts."""

    def __init__(self, ledger: NodeLedger, pools: dict, tasks: dict, budget: int) -> None:
        self.ledger, self.pools, self.tasks = ledger, pools, tasks
        self.budgets = shares(budget, ledger.nodes)
        self.memory_aware = True  # False: resources and locality only (a comparison)
        self.peaks = [0] * len(ledger.nodes)  # most bytes each node held

    @property
    def several(self) -> bool:
        """True when the backend has more than one node."""
        return len(self.budgets) > 1

    def place(self, states: list[StageState], st: StageState, inputs: list,
              need: int) -> tuple | None:
        """``(allocation, actor id)`` for a task of ``st`` on ``inputs`` expected to make
        ``need`` bytes of blocks, or None with the stage's backpressure reason set."""
        nodes = self.nodes_for(states, inputs, need) if self.several else [0]
        if not nodes:
            st.start_backpressure("every node with room is at its share of the memory budget")
            return None
        if st.index in self.pools:
            actor = self._free_actor(self.pools[st.index], nodes)
            return None if actor is None else (None, actor.actor_id)
        resources = st.task_stage.resources
        alloc = self.ledger.acquire(resources, nodes) or self._borrow(resources, nodes)
        if alloc is None:
            st.start_backpressure("waiting for resources")
            return None
        return alloc, None

    def node_of(self, task) -> int:
        """The node a running task is on (its allocation's, or its actor's)."""
        if task.alloc is not None:
            return task.alloc.node
        pool = self.pools.get(task.stage_index)
        actor = pool.actors.get(task.actor_id) if pool is not None else None
        return actor.alloc.node if actor is not None else 0

    def nodes_for(self, states: list[StageState], inputs: list, need: int) -> list[int]:
        """Nodes where a task on ``inputs`` that holds ``need`` bytes fits, best first."""
        used = self.used(states)
        local = [0] * len(used)
        for part in inputs:
            local[part.node] += part.memory_bytes
        total = sum(local)  # inputs from other nodes are copied in (local ones are held
        # until the task ends, after its last output block)
        after = [used[i] + need + total - local[i] for i in range(len(used))]
        if not self.memory_aware:
            return sorted(range(len(used)),
                          key=lambda i: (-local[i], -self.ledger.ledgers[i].free_cpus))
        fits = [i for i in range(len(used)) if after[i] <= self.budgets[i]
                or not self.tasks  # liveness: nothing runs
                or used[i] == 0]  # a node holding nothing takes one task of any size
        return sorted(fits, key=lambda i: after[i] / max(1, self.budgets[i]))

    def used(self, states: list[StageState]) -> list[int]:
        """Bytes of blocks each node holds or has promised: queued, running and
        finished partitions, and running tasks' outputs still to come."""
        used = [0] * len(self.budgets)
        for st in states:
            for part in _partitions(st):
                used[part.node] += part.memory_bytes
        for t in self.tasks.values():
            used[self.node_of(t)] += max(0, t.est_bytes - t.produced_bytes)
        return used

    def note_peaks(self, states: list[StageState]) -> None:
        """Record the blocks each node holds now (several nodes only)."""
        if not self.several:
            return
        held = [0] * len(self.budgets)
        for st in states:
            for part in _partitions(st):
                held[part.node] += part.memory_bytes
        self.peaks = [max(a, b) for a, b in zip(self.peaks, held, strict=True)]

    def _free_actor(self, pool, nodes: list[int]):
        """The actor a task handed out now would start on soonest (within ``nodes``), or
        None when that is one still starting and a started one, full now, will get to
        the task sooner (the task waits for it)."""
        rank = {node: i for i, node in enumerate(nodes)}
        mine = [a for a in pool.actors.values() if a.alloc.node in rank]
        free = [a for a in mine if a.in_flight < pool.depth]
        if not free:
            return None
        if not pool.task_s:  # (nothing timed yet: the least loaded)
            return min(free, key=lambda a: (a.in_flight, rank[a.alloc.node]))
        best = min(free, key=lambda a: (a.wait_s(pool), a.in_flight, rank[a.alloc.node]))
        if not best.ready and any(a.ready and a.wait_s(pool) < best.wait_s(pool) for a in mine):
            return None
        return best

    def _borrow(self, req, nodes: list[int]) -> Allocation | None:
        """Lend the CPUs of idle actors to a CPU task (liveness: a pool whose actors
        hold every CPU must not starve the stage that feeds it). An actor that has
        not finished a task may still be starting (importing torch, building its
        model): its CPU is lent only when nothing runs at all, so the bottleneck's
        start-up does not share a core with tasks that feed it faster than it can
        start (W1: the model's first batch came 2.6 s after the job began)."""
        if req.num_gpus or req.custom:
            return None
        idle = [a for p in self.pools.values() for a in p.actors.values()
                if a.in_flight == 0 and a.tasks_done and a.alloc.node in nodes]
        lent = sum(t.alloc.cpus for t in self.tasks.values()
                   if t.alloc is not None and t.alloc.borrowed)
        if lent + req.num_cpus > sum(a.alloc.cpus for a in idle) + 1e-9 and self.tasks:
            return None
        node = idle[0].alloc.node if idle else nodes[0]
        return Allocation(req.num_cpus, borrowed=True, node=node)


def _partitions(st: StageState):
    """Every partition a stage holds: queued, inputs of running tasks, reordered, out."""
    for queue in st.inputs.values():
        yield from queue
    for task in st.running.values():
        yield from task.inputs
    for parts in st.reorder.values():
        yield from parts
    yield from st.outputs
