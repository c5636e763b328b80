"""A simulated backend: the :class:`Backend` contract on a virtual clock.

Nothing runs: a task takes the time its stage declares per row (plus a fixed cost
per task), its output is the rows it was given, sized as the stage declares and
cut into blocks of the backend's target size (as the local backend does; with
``sized_blocks``, of the size the executor asks for each task), and emitted batch by
batch over the task's run as a real task streams them; a task's first block and its
end report its working memory (none: its blocks are all it holds). Actors run their
queued tasks one at a time after a declared start-up (then say they are ready). :meth:`poll` moves the clock to the next event (or by its
timeout when none comes sooner), so the unchanged executor and policy run a long
pipeline in a fraction of a second, and the same seed gives the same run.

Blocks carry the global row numbers they hold (``SimRef.spans``), so a run can be
checked to deliver every source row exactly once. With ``num_nodes`` the machine is
that many equal nodes: a block lives on the node of the task that made it (the
executor places tasks, :attr:`Task.node`), and the backend keeps each node's bytes
held and their peak (``held``, ``peaks``) from the blocks it made and was told to
free, independently of the executor's accounting.

>>> from streambatch.executor.backends.base import Task, TaskOutput, TaskDone
>>> from streambatch.executor.contract import TaskStage
>>> backend = SimulatedBackend([SimCost(0.5, 10)], num_cpus=2)
>>> stage = TaskStage("Read", read_tasks=[SimReadTask(0, 4)])
>>> backend.start([stage], target_bytes=20)
>>> backend.submit(Task(0, 0, 0))
>>> backend.poll(0), backend.clock()
([], 0.0)
>>> events = backend.poll(5.0)
>>> [(type(e).__name__, getattr(e, "rows", None)) for e in events], backend.clock()
([('TaskOutput', 2)], 1.0)
>>> [type(e).__name__ for e in backend.poll(5.0)], backend.clock()
(['TaskOutput', 'TaskDone'], 2.0)
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from dataclasses import dataclass, field

import pyarrow as pa
from streambatch.executor.backends.base import (
    ActorReady,
    Backend,
    Node,
    Task,
    TaskDone,
    TaskOutput,
)

Span = tuple[int, int]  # global row numbers [start, stop)


@dataclass(frozen=True)
class SimRef:
    """A simulated block: the source rows it holds and its declared size."""

    spans: tuple[Span, ...]
    nbytes: int
    node: int = 0  # the node that holds it

    @property
    def rows(self) -> int:
        """Rows in the block."""
        return sum(stop - start for start, stop in self.spans)

    def read(self) -> pa.Table:
        """The block's row numbers as a one-column table (``row``).

        >>> SimRef(((0, 2), (5, 6)), 30).read()["row"].to_pylist()
        [0, 1, 5]
        """
        return pa.table({"row": pa.array([r for a, b in self.spans for r in range(a, b)],
                                          pa.int64())})


@dataclass(frozen=True)
class SimCost:
    """What a stage's task costs: seconds per input row, output bytes per row, a fixed
    cost per task, and (actor stages) the time an actor takes to start."""

    seconds_per_row: float
    bytes_per_row: float
    seconds_per_task: float = 0.0
    startup_s: float = 0.0


@dataclass(frozen=True)
class SimReadTask:
    """A source's read task: rows ``[first_row, first_row + rows)``, with estimates."""

    first_row: int
    rows: int
    estimated_bytes: int | None = None

    @property
    def estimated_rows(self) -> int:
        """Rows the read makes (known exactly here)."""
        return self.rows

    @property
    def description(self) -> str:
        """For messages."""
        return f"rows {self.first_row}-{self.first_row + self.rows}"


@dataclass
class _Actor:
    ready_at: float
    node: int = 0
    queue: deque = field(default_factory=deque)
    busy: bool = False


class SimulatedBackend(Backend):
    """Runs stages on a virtual clock with the declared costs (``costs[i]``: stage i)."""

    def __init__(self, costs: list[SimCost], num_cpus: float, num_gpus: float = 0.0,
                 sized_blocks: bool = False, num_nodes: int = 1) -> None:
        self.costs, self._cpus, self.num_gpus = costs, num_cpus, num_gpus
        self.num_nodes = num_nodes  # equal nodes sharing the CPUs and GPUs
        self.held = [0] * num_nodes  # bytes of the blocks each node holds now ...
        self.peaks = [0] * num_nodes  # ... and at most
        self._placed: dict[int, int] = {}  # actor id -> its node
        self.sized_blocks = sized_blocks  # cut outputs as Task.target_bytes/block_rows ask
        self.now = 0.0
        self._events: list = []
        self._order = itertools.count()
        self._actors: dict[int, _Actor] = {}
        self._actor_of: dict[int, int] = {}
        self.stages: list = []
        self.target_bytes = 1

    def clock(self) -> float:
        """The virtual time: seconds since the backend was made."""
        return self.now

    def start(self, stages: list, target_bytes: int) -> None:
        self.stages, self.target_bytes = stages, max(1, target_bytes)

    def submit(self, task: Task) -> None:
        if task.actor_id is None:
            self._run(task, self.now)
            return
        actor = self._actors[task.actor_id]
        if task.node != actor.node:
            raise AssertionError(f"task {task.task_id} placed on node {task.node}, its actor "
                                 f"{task.actor_id} is on node {actor.node}")
        actor.queue.append(task)
        self._next_on(task.actor_id)

    def _next_on(self, actor_id: int) -> None:
        actor = self._actors.get(actor_id)
        if actor is None or actor.busy or not actor.queue:
            return
        task = actor.queue.popleft()
        actor.busy = True
        self._actor_of[task.task_id] = actor_id
        self._run(task, max(self.now, actor.ready_at))

    def _run(self, task: Task, start: float) -> None:
        spans = self._input_spans(task)
        rows = sum(b - a for a, b in spans)
        cost = self.costs[task.stage_index]
        seconds = cost.seconds_per_task + rows * cost.seconds_per_row
        sized = self.sized_blocks
        blocks = self._cut(spans, rows, rows * cost.bytes_per_row,
                           task.target_bytes if sized else None,
                           task.block_rows if sized else None,
                           getattr(self.stages[task.stage_index], "out_batch_rows", None))
        batch = getattr(self.stages[task.stage_index], "batch_rows", None) or 1
        done = 0
        for part, nbytes in blocks:  # a block is out once the batch holding its last row is
            ref = SimRef(part, nbytes, task.node)
            done += ref.rows
            through = min(rows, -(-done // batch) * batch)
            at = min(start + cost.seconds_per_task + through * cost.seconds_per_row,
                     start + seconds)
            self._push(at, TaskOutput(task.task_id, ref, ref.rows, nbytes,  # the first block
                                      0 if done > ref.rows else 1))  # tells the working memory
        self._push(start + seconds, TaskDone(task.task_id, seconds, 1))  # (no working memory)

    def _input_spans(self, task: Task) -> list[Span]:
        if task.read_index is not None:
            read = self.stages[task.stage_index].read_tasks[task.read_index]
            return [(read.first_row, read.first_row + read.rows)]
        return [span for ref in task.input_refs for span in ref.spans]

    def _cut(self, spans: list[Span], rows: int, nbytes: float, target: int | None,
             most_rows: int | None, multiple: int | None) -> list[tuple[tuple[Span, ...], int]]:
        """The output blocks: about the target size each, at most ``most_rows`` rows,
        whole multiples of ``multiple``."""
        if rows == 0:
            return []
        per_row = nbytes / rows
        target = max(1, target or self.target_bytes)
        per_block = max(1, math.ceil(rows / max(1, math.ceil(nbytes / target))))
        per_block = min(per_block, most_rows or per_block)
        if multiple:
            per_block = max(multiple, per_block // multiple * multiple)
        out, current, have = [], [], 0
        for a, b in spans:
            while a < b:
                take = min(b - a, per_block - have)
                current.append((a, a + take))
                a, have = a + take, have + take
                if have == per_block:
                    out.append(tuple(current))
                    current, have = [], 0
        if current:
            out.append(tuple(current))
        return [(block, max(1, round(per_row * sum(y - x for x, y in block)))) for block in out]

    def _push(self, at: float, event) -> None:
        heapq.heappush(self._events, (at, next(self._order), event))

    def poll(self, timeout: float) -> list:
        """Events due now; with a timeout, the clock first moves to the next event (or
        by the timeout, when none comes sooner)."""
        due = self._events and self._events[0][0] <= self.now + 1e-12
        if not due and timeout > 0:
            upcoming = self._events[0][0] if self._events else math.inf
            self.now = min(upcoming, self.now + timeout)
        out = []
        while self._events and self._events[0][0] <= self.now + 1e-12:
            at, _, event = heapq.heappop(self._events)
            self.now = max(self.now, at)
            out.append(event)
            if isinstance(event, TaskOutput) and isinstance(event.ref, SimRef):
                self._hold(event.ref.node, event.nbytes)
            if isinstance(event, TaskDone) and event.task_id in self._actor_of:
                actor_id = self._actor_of.pop(event.task_id)
                if actor_id in self._actors:
                    self._actors[actor_id].busy = False
                    self._next_on(actor_id)
        return out

    def _hold(self, node: int, nbytes: int) -> None:
        self.held[node] += nbytes
        self.peaks[node] = max(self.peaks[node], self.held[node])

    def nodes(self) -> list[Node]:
        """``num_nodes`` equal nodes (one: the whole machine, as the default)."""
        k = self.num_nodes
        return [Node(self._cpus / k, self.num_gpus / k) for _ in range(k)]

    def place_actor(self, actor_id: int, node: int) -> None:
        self._placed[actor_id] = node

    def start_actor(self, stage_index: int, actor_id: int, env: dict) -> None:
        ready_at = self.now + self.costs[stage_index].startup_s
        self._actors[actor_id] = _Actor(ready_at, self._placed.pop(actor_id, 0))
        self._push(ready_at, ActorReady(actor_id))

    def stop_actor(self, actor_id: int) -> None:
        self._actors.pop(actor_id, None)

    def release(self, ref) -> None:
        """The block is consumed: its node holds it no more."""
        self.held[ref.node] -= ref.nbytes

    def shutdown(self) -> None:
        self._events.clear()
        self._actors.clear()

    @property
    def num_cpus(self) -> int:
        return int(self._cpus)

    def total_resources(self) -> tuple[float, float, dict]:
        return float(self._cpus), float(self.num_gpus), {}
