"""The planner: an optimized logical plan becomes a list of physical stages."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

from streambatch.connectors.datasource import Piece, PieceSet, Pushdowns, ReadTask
from streambatch.connectors.manifest import ResumeMismatchError
from streambatch.executor.contract import (
    LimitStage,
    RepartitionStage,
    Stage,
    TaskStage,
    UnionStage,
)
from streambatch.operators import logical as L
from streambatch.operators.all_to_all import AllToAll, exchange_stages
from streambatch.operators.block_ops import block_op
from streambatch.operators.read_errors import read_ops
from streambatch.operators.rules.align_blocks import align_blocks
from streambatch.operators.rules.fuse_stages import fuse_stages

MiB = 2**20


@dataclass(frozen=True)
class PlanSettings:
    """What the planner needs to know of the run: the CPUs (read parallelism), the
    partition size the executor aims for, and where UDFs run (``worker_mode``: "auto"
    puts one that holds the GIL in processes, one that releases it on threads, and one
    that did not say on "auto": the backend measures its first tasks; "processes" or
    "threads" puts every stage there, except an op whose state the user reads in the
    driver, which always runs on threads there).

    >>> [PlanSettings(num_cpus=2).worker_for(holds_gil=h) for h in (True, False, None)]
    ['process', 'thread', 'auto']
    >>> PlanSettings(worker_mode="processes").worker_for(holds_gil=False, stays_in_driver=True)
    'thread'
    """

    num_cpus: int = 1
    partition_bytes: int = 128 * MiB
    worker_mode: str = "auto"

    def worker_for(self, holds_gil: bool | None, stays_in_driver: bool = False) -> str:
        """Where a stage whose UDF holds (or releases) the GIL runs; an op that
        ``stays_in_driver`` (a lookup, whose FreshCache statistics the user reads) runs
        on threads in the driver whatever ``worker_mode`` says."""
        if stays_in_driver:
            return "thread"
        if self.worker_mode == "auto":
            return {True: "process", False: "thread", None: "auto"}[holds_gil]
        return "process" if self.worker_mode == "processes" else "thread"


def plan_stages(plan: L.LogicalOp, settings: PlanSettings,
                done: dict[int, PieceSet] | None = None) -> list[Stage]:
    """Physical stages in topological order; the last one produces the output.

    ``done`` maps a source's ordinal (its place among the plan's reads, in
    :func:`~streambatch.operators.logical.walk` order) to the pieces a resumed
    write has already: its read tasks leave them out.

    >>> from streambatch.connectors.memory import RangeSource
    >>> p = L.Filter(L.MapRows(L.Read(RangeSource(4), "Range"), fn=dict), fn=bool)
    >>> [(s.name, s.worker) for s in plan_stages(p, PlanSettings(num_cpus=1))]
    [('Read[Range]->Map(dict)->Filter(bool)', 'process')]
    """
    stages: list[Stage] = []
    _visit(plan, stages, settings, _Sources(done or {}))
    return align_blocks([_per_piece(s) for s in fuse_stages(stages)])


def _per_piece(stage: Stage) -> Stage:
    """A read fused with a user function reads one piece per task (``Pushdowns.per_piece``):
    a source that would group small pieces into one scan per CPU (fast when reading is
    all the task does) would otherwise leave one long task per CPU, with the first
    rows late and the last CPU idle while another finishes its group."""
    if not (isinstance(stage, TaskStage) and stage.is_source and stage.read_tasks_fn) or \
            not any(isinstance(getattr(op, "op", None), L.UDFArgs) for op in stage.ops):
        return stage
    planned: Callable[..., list] = stage.read_tasks_fn  # a partial of _read_tasks
    make = partial(planned, per_piece=True)  # (and FUSED_TASKS_PER_CPU tasks per CPU)
    return replace(stage, read_tasks_fn=make, read_tasks=make())


class _Sources:
    """Hands each Read its ordinal and the pieces done for it."""

    def __init__(self, done: dict[int, PieceSet]) -> None:
        self.done, self.count = done, 0

    def next(self) -> PieceSet | None:
        self.count += 1
        return self.done.get(self.count - 1)


def _visit(op: L.LogicalOp, stages: list[Stage], settings: PlanSettings,
           sources: _Sources) -> int:
    ups = tuple(_visit(child, stages, settings, sources) for child in op.inputs)
    done = sources.next() if isinstance(op, L.Read) else None
    built = _builder(op)(op, ups, settings, done)
    base = len(stages)  # a builder's list names its own stages as upstream -1, -2, ...
    for stage in built if isinstance(built, list) else [built]:
        stage.upstream = tuple(base - u - 1 if u < 0 else u for u in stage.upstream)
        stages.append(stage)
    return len(stages) - 1


def _builder(op: L.LogicalOp):
    """The stage builder registered for the op's type or its nearest base class."""
    for cls in type(op).__mro__:
        if cls in STAGE_BUILDERS:
            return STAGE_BUILDERS[cls]
    raise TypeError(f"the planner has no physical stage for {type(op).__name__}")


def _read_stage(op: L.Read, ups, settings: PlanSettings, done: PieceSet | None) -> Stage:
    read_tasks = partial(_read_tasks, op, settings, done)
    return TaskStage(op.label, read_tasks_fn=read_tasks, read_tasks=read_tasks(), ops=read_ops(op))


def _map_stage(op: L.MapLike, ups, settings: PlanSettings, done) -> Stage:
    bop = block_op(op)
    return TaskStage(op.label, upstream=ups, ops=[bop], resources=op.resources,
                     concurrency=op.concurrency,
                     worker=settings.worker_for(bop.holds_gil, bop.stays_in_driver))


# One builder per logical operator type (found along the op's class hierarchy): a new
# kind of operator registers its own here.
STAGE_BUILDERS = {
    L.Read: _read_stage,
    L.MapLike: _map_stage,
    L.Limit: lambda op, ups, settings, done: LimitStage(op.label, upstream=ups, limit=op.n),
    L.Repartition: lambda op, ups, settings, done: RepartitionStage(
        op.label, upstream=ups, num_partitions=op.n),
    L.Union: lambda op, ups, settings, done: UnionStage(op.label, upstream=ups),
    AllToAll: lambda op, ups, settings, done: exchange_stages(
        op, ups, settings.num_cpus, settings.worker_for),
}


def _read_tasks(op: L.Read, settings: PlanSettings, done: PieceSet | None = None,
                per_piece: bool = False) -> list:
    """The read's tasks; under a pushed filter each is marked ``filtered`` (its
    ``estimated_rows`` counts rows before the filter: an upper bound, see fuse_stages)."""
    pushdowns = Pushdowns(op.columns, op.filter, op.limit, done or None, per_piece)
    parallelism = getattr(op.source, "parallelism", None) or default_parallelism(
        settings.num_cpus, 0, settings.partition_bytes, fused=per_piece)
    tasks = identified(op, op.source.read_tasks(parallelism, pushdowns), done)
    return tasks if op.filter is None else [replace(t, filtered=True) for t in tasks]


def identified(op: L.Read, tasks: list, done: PieceSet | None) -> list:
    """The read tasks, each naming its pieces: a task that names none is named by its
    place in the layout (``read 3 of 8``), so a write over such a source resumes only
    with the same layout, and refuses another one instead of duplicating rows.

    >>> from streambatch.connectors.datasource import Piece, ReadTask
    >>> tasks = [ReadTask(lambda: iter(())), ReadTask(lambda: iter(()))]
    >>> [t.pieces[0].item for t in identified(L.Read(None, "Mine"), tasks, None)]
    ['read 0 of 2', 'read 1 of 2']
    >>> len(identified(L.Read(None, "Mine"), tasks, PieceSet([Piece("read 0 of 2")])))
    1
    >>> identified(L.Read(None, "Mine"), tasks, PieceSet([Piece("read 0 of 3")]))
    Traceback (most recent call last):
    ...
    streambatch.connectors.manifest.ResumeMismatchError: resume: Read[Mine] ...
    """
    named: list[ReadTask] = []
    pieces: list[tuple[Piece, ...]] = []
    for index, task in enumerate(tasks):
        task = task if isinstance(task, ReadTask) else ReadTask(task)
        if task.pieces is None:
            task = replace(task, pieces=(Piece(f"read {index} of {len(tasks)}"),))
        named.append(task)
        pieces.append(task.pieces or ())
    if not done:
        return named
    unnamed = any(getattr(t, "pieces", None) is None for t in tasks)
    if unnamed:
        items = {p.item for ps in pieces for p in ps}
        unknown = sorted(done.items - items)
        if unknown:
            raise ResumeMismatchError(op.label, f"it was split into other reads before "
                                      f"({unknown[0]!r} is not one of this run's {len(named)})")
        return [t for t, ps in zip(named, pieces, strict=True)
                if not all(done.covers(p) for p in ps)]
    overlap = next((p for ps in pieces for p in ps if done.overlaps(p)), None)
    if overlap is not None:
        raise ResumeMismatchError(op.label, f"its source read {overlap} again, which the "
                                  "earlier run wrote already (the source ignores Pushdowns.done)")
    return named


WORKERS = {"thread": "thread workers", "process": "process workers",
           "auto": "thread workers, process workers if its first tasks hold the GIL"}


def render_stages(stages: list[Stage]) -> str:
    """One line per physical stage: name, where it runs, resources, inputs.

    >>> print(render_stages([TaskStage("Read[Range]"), LimitStage("Limit[2]", (0,), 2)]))
    Stage 0: Read[Range] (tasks on thread workers; cpu=1)
    Stage 1: Limit[2] (in the driver; input from stage 0)
    """
    lines = []
    for i, st in enumerate(stages):
        where = f"tasks on {WORKERS[st.worker]}; {st.resources.describe()}" \
            if isinstance(st, TaskStage) else "in the driver"
        ups = f"; input from stage {', '.join(map(str, st.upstream))}" if st.upstream else ""
        lines.append(f"Stage {i}: {st.name} ({where}{ups})")
    return "\n".join(lines)


# Read tasks per CPU slot when a user function runs in the read's tasks (``fused``).
FUSED_TASKS_PER_CPU = 4


def default_parallelism(num_cpus: int, estimated_bytes: int, target_bytes: int,
                        fused: bool = False) -> int:
    """Read tasks for a source the user gave no ``override_num_blocks``: two per CPU,
    more when the data is large; :data:`FUSED_TASKS_PER_CPU` per CPU when a user
    function is fused into the read (``fused``). Such a task's time is the function's,
    unknown when planning and often far above the read's (a 0.5 s load per item):
    two per CPU ran 32 items as 16 tasks of two loads in series, so the slots could
    not move to the next stage at item boundaries and the last wave ended unevenly.
    Sources cap the count at one task per item (row, file).

    >>> default_parallelism(2, 10, 100), default_parallelism(8, 10, 100, fused=True)
    (4, 32)
    """
    per_cpu = FUSED_TASKS_PER_CPU if fused else 2
    return max(per_cpu * num_cpus, math.ceil(estimated_bytes / max(1, target_bytes)))
