"""Simulated pipelines: a linear pipeline described by its costs, run by the unchanged
streaming executor and admission policy on :class:`SimulatedBackend`'s virtual clock.

A :class:`PipelineSpec` is a source (read tasks of some rows, seconds and bytes per
row) and the stages after it (seconds per row, output bytes over input bytes, a
batch size, CPU tasks or an actor pool of CPUs/GPUs), on a machine of logical CPUs
and GPUs under a memory budget. :func:`simulate` runs it and checks that every
source row reached the end exactly once.

>>> spec = PipelineSpec(SourceSpec(read_tasks=8, rows_per_task=100, seconds_per_row=0.01,
...                                bytes_per_row=1000),
...                     (StageSpec("Model", 0.005, 0.5, batch_rows=50, num_cpus=0, num_gpus=1,
...                                actors=(1, 2)),),
...                     num_cpus=4, num_gpus=2)
>>> result = simulate(spec)
>>> result.rows, round(result.seconds, 1), result.over_budget
(800, 3.0, False)
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from streambatch.executor import clock
from streambatch.executor.backends.simulated import SimCost, SimReadTask, SimulatedBackend
from streambatch.executor.contract import Resources, Stage, TaskStage
from streambatch.executor.options import ExecutionOptions

UNLIMITED = 2**50  # a budget no simulated pipeline reaches


@dataclass(frozen=True)
class SourceSpec:
    """The read: ``read_tasks`` tasks of ``rows_per_task`` rows each."""

    read_tasks: int
    rows_per_task: int
    seconds_per_row: float
    bytes_per_row: float
    num_cpus: float = 1.0

    @property
    def rows(self) -> int:
        """Rows the source makes."""
        return self.read_tasks * self.rows_per_task


@dataclass(frozen=True)
class StageSpec:
    """A stage after the source: time per input row, output/input bytes, batch size, and
    where it runs (CPU tasks; an actor pool when ``actors`` is set or it needs GPUs)."""

    name: str
    seconds_per_row: float
    bytes_ratio: float
    batch_rows: int | None = None
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    actors: tuple[int, int] | None = None
    startup_s: float = 0.0

    @property
    def uses_actors(self) -> bool:
        """True for an actor pool."""
        return self.actors is not None or self.num_gpus > 0


@dataclass(frozen=True)
class PipelineSpec:
    """A source, the stages after it, and the machine: logical CPUs and GPUs, a memory
    budget (None: unlimited), a fixed cost per task, the executor's options."""

    source: SourceSpec
    stages: tuple[StageSpec, ...]
    num_cpus: float = 8
    num_gpus: float = 0
    budget_bytes: int | None = None
    seconds_per_task: float = 0.0
    scheduler: str = "adaptive"
    nodes: int = 1  # equal nodes sharing the CPUs, GPUs and budget

    def bytes_per_row(self) -> list[float]:
        """Bytes of a row as each stage outputs it (the source's first)."""
        out = [self.source.bytes_per_row]
        for stage in self.stages:
            out.append(out[-1] * stage.bytes_ratio)
        return out

    def with_budget(self, budget_bytes: int | None) -> PipelineSpec:
        """The same pipeline under another budget."""
        return replace(self, budget_bytes=budget_bytes)


@dataclass(frozen=True)
class SimResult:
    """What a simulated run did: virtual seconds, rows out, peak buffered bytes, and
    whether that peak went over the budget; on several nodes, each node's peak (as
    the backend saw its blocks) against its share of the budget."""

    seconds: float
    rows: int
    peak_buffered_bytes: int
    budget_bytes: int
    stats: object
    node_peaks: tuple[int, ...] = ()
    node_budget: int = 0

    @property
    def over_node_budget(self) -> bool:
        """True when some node held more than its share of the budget."""
        return any(peak > self.node_budget for peak in self.node_peaks)

    @property
    def over_budget(self) -> bool:
        """True when buffered memory went over the budget."""
        return self.peak_buffered_bytes > self.budget_bytes


class SimulationError(AssertionError):
    """A simulated run lost or duplicated rows."""


def physical_stages(spec: PipelineSpec) -> list[TaskStage]:
    """The stages the planner would make: a read, then one stage per spec (no fusion)."""
    src = spec.source
    reads = [SimReadTask(i * src.rows_per_task, src.rows_per_task,
                         int(src.rows_per_task * src.bytes_per_row))
             for i in range(src.read_tasks)]
    stages = [TaskStage("Read", ops=[], read_tasks_fn=lambda: list(reads),
                        resources=Resources(num_cpus=src.num_cpus))]
    for i, s in enumerate(spec.stages):
        op = _SimOp(s.name, s.batch_rows, s.uses_actors)
        stages.append(TaskStage(s.name, upstream=(i,), ops=[op],
                                resources=Resources(num_cpus=s.num_cpus, num_gpus=s.num_gpus),
                                concurrency=s.actors))
        stages[i].out_batch_rows = s.batch_rows
    return stages


@dataclass(frozen=True)
class _SimOp:
    """The op of a simulated stage: what the executor reads of one (never applied)."""

    name: str
    batch_rows: int | None
    is_actor: bool
    holds_gil: bool | None = False
    changes_row_count: bool = False
    stays_in_driver: bool = False


def costs_of(spec: PipelineSpec) -> list[SimCost]:
    """Each stage's costs for the simulated backend."""
    per_row = spec.bytes_per_row()
    costs = [SimCost(spec.source.seconds_per_row, per_row[0], spec.seconds_per_task)]
    for s, nbytes in zip(spec.stages, per_row[1:], strict=True):
        costs.append(SimCost(s.seconds_per_row, nbytes, spec.seconds_per_task, s.startup_s))
    return costs


def simulate(spec: PipelineSpec, options: ExecutionOptions | None = None,
             node_memory: bool = True) -> SimResult:
    """Run ``spec`` on the simulated backend; a SimulationError if a row was lost or
    delivered twice, or a block was not freed exactly once.
    ``node_memory=False``: tasks placed by resources and locality only, not by each
    node's share of the budget (for comparison)."""
    from streambatch.executor.streaming import StreamingExecutor

    budget = spec.budget_bytes or UNLIMITED
    options = options or ExecutionOptions(num_cpus=max(1, int(spec.num_cpus)),
                                          num_gpus=spec.num_gpus, memory_budget=budget,
                                          scheduler=spec.scheduler)
    backend = SimulatedBackend(costs_of(spec), spec.num_cpus, spec.num_gpus,
                               sized_blocks=True, num_nodes=spec.nodes)
    executor = StreamingExecutor(list[Stage](physical_stages(spec)), backend, options)
    executor.placement.memory_aware = node_memory
    seen = np.zeros(spec.source.rows, np.int64)
    with clock.use(backend.clock):
        for part in executor.run():
            np.add.at(seen, part.get()["row"].to_numpy(), 1)
    missing, twice = int((seen == 0).sum()), int((seen > 1).sum())
    if missing or twice:
        raise SimulationError(f"{missing} rows missing, {twice} delivered more than once, "
                              f"in {spec}")
    if any(backend.held):
        raise SimulationError(f"bytes still held per node after the run: {backend.held}")
    stats = executor.stats
    return SimResult(backend.clock(), spec.source.rows, stats.peak_buffered_bytes, budget,
                     stats, tuple(backend.peaks) if spec.nodes > 1 else (),
                     budget // spec.nodes)
