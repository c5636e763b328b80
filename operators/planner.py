"""The planner: an optimized logical plan becomes a list of physical stages."""

from __future__ import annotations

from functools import partial

from streambatch.connectors.datasource import Pushdowns
from streambatch.connectors.memory import default_parallelism
from streambatch.executor.options import ExecutionOptions
from streambatch.executor.stage import PhysicalStage
from streambatch.operators import logical as L
from streambatch.operators.block_ops import block_op
from streambatch.operators.read_errors import read_ops
from streambatch.operators.rules.align_blocks import align_blocks
from streambatch.operators.rules.fuse_stages import fuse_stages

WORKER_MODES = ("auto", "threads", "processes")


def plan_stages(plan: L.LogicalOp, options: ExecutionOptions) -> list[PhysicalStage]:
    """Physical stages in topological order; the last one produces the output.

    >>> from streambatch.connectors.memory import RangeSource
    >>> p = L.Filter(L.MapRows(L.Read(RangeSource(4), "Range"), fn=dict), fn=bool)
    >>> [(s.name, s.worker) for s in plan_stages(p, ExecutionOptions(num_cpus=1))]
    [('Read[Range]->Map(dict)->Filter(bool)', 'process')]
    """
    stages: list[PhysicalStage] = []
    _visit(plan, stages, options)
    return align_blocks(fuse_stages(stages))


def _visit(op: L.LogicalOp, stages: list[PhysicalStage], options: ExecutionOptions) -> int:
    ups = tuple(_visit(child, stages, options) for child in op.inputs)
    stages.append(_stage_for(op, ups, options))
    return len(stages) - 1


def _stage_for(op: L.LogicalOp, ups: tuple[int, ...], options: ExecutionOptions) -> PhysicalStage:
    if isinstance(op, L.Read):
        stage = PhysicalStage(op.label, read_tasks_fn=partial(_read_tasks, op, options),
                              ops=read_ops(op))
        stage.read_tasks = stage.read_tasks_fn()
        return stage
    if isinstance(op, L.MapLike):
        bop = block_op(op)
        return PhysicalStage(op.label, upstream=ups, ops=[bop], resources=op.resources,
                             concurrency=op.concurrency, worker=_worker(bop, options))
    if isinstance(op, L.Limit):
        return PhysicalStage(op.label, kind="limit", upstream=ups, limit=op.n)
    if isinstance(op, L.Repartition):
        return PhysicalStage(op.label, kind="repartition", upstream=ups, num_partitions=op.n)
    if isinstance(op, L.Union):
        return PhysicalStage(op.label, kind="union", upstream=ups)
    raise TypeError(f"the planner has no physical stage for {type(op).__name__}")


def _worker(bop, options: ExecutionOptions) -> str:
    mode = options.extra.get("worker_mode", "auto")
    if mode not in WORKER_MODES:
        raise ValueError(f"worker_mode={mode!r}; expected one of: {', '.join(WORKER_MODES)}")
    if mode == "auto":
        return "process" if bop.holds_gil else "thread"
    return "process" if mode == "processes" else "thread"


def _read_tasks(op: L.Read, options: ExecutionOptions) -> list:
    pushdowns = Pushdowns(op.columns, op.filter, op.limit)
    parallelism = getattr(op.source, "parallelism", None) or default_parallelism(
        options.resolved_num_cpus(), 0, options.partition_bytes())
    return op.source.read_tasks(parallelism, pushdowns)


def render_stages(stages: list[PhysicalStage]) -> str:
    """One line per physical stage: name, kind, worker, resources, inputs.

    >>> print(render_stages([PhysicalStage("Read[Range]")]))
    Stage 0: Read[Range] (tasks on thread workers; cpu=1)
    """
    lines = []
    for i, st in enumerate(stages):
        where = f"tasks on {st.worker} workers" if st.kind == "task" else "in the driver"
        ups = f"; input from stage {', '.join(map(str, st.upstream))}" if st.upstream else ""
        lines.append(f"Stage {i}: {st.name} ({where}; {st.resources.describe()}{ups})")
    return "\n".join(lines)
