"""Run one task's op chain over its inputs; shared by thread and process workers."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pyarrow as pa
from streambatch.executor.backends.base import Task
from streambatch.executor.block_split import split_blocks
from streambatch.executor.contract import TaskContext, TaskStage
from streambatch.executor.partition import read_ref


def input_blocks(stage: TaskStage, task: Task,
                 each: Callable[[], object] | None = None) -> Iterator[pa.Table]:
    """The tables a task consumes: a read task's output or its input partitions;
    ``each`` is called as each one is taken (the task's last block is processed then)."""
    tables = read_task_of(stage, task)() if task.read_index is not None else \
        (read_ref(ref) for ref in task.input_refs)
    for table in tables:
        if each is not None:
            each()
        yield table


def read_task_of(stage: TaskStage, task: Task):
    """The task's read task: the one it carries (shipped to a worker with the task), else
    the stage's."""
    if task.read_payload is not None:
        import cloudpickle

        return cloudpickle.loads(task.read_payload)
    if task.read_index is None:
        raise ValueError(f"task {task.task_id} of stage {stage.name!r} reads no read task "
                         "(its read_index is None)")
    return stage.resolved_read_tasks()[task.read_index]


def task_context(stage: TaskStage, task: Task, worker_state: dict,
                 cancelled: Callable[[], bool] | None = None) -> TaskContext:
    """The context a task's ops see (its dead letters collect in ``ctx.dead_letters``;
    ``cancelled`` tells a thread task that its job has stopped)."""
    ctx = TaskContext(stage.name, task.task_id, task.description, worker_state,
                      task.key or str(task.task_id), first_row=task.first_row,
                      row_base=task.row_base)
    if cancelled is not None:
        ctx.cancelled = cancelled
    return ctx


def run_task(stage: TaskStage, task: Task, target_bytes: int,
             ctx: TaskContext | dict, each_input: Callable[[], object] | None = None
             ) -> Iterator[pa.Table]:
    """Yield the output blocks of ``task``, split to its own size when the executor
    gave one (``task.target_bytes``, ``task.block_rows``: sized for the stage that
    consumes them), else to ``target_bytes``.

    ``ctx`` is a :func:`task_context` (or a worker-state dict, for callers that do
    not collect dead letters); ``each_input`` is called as each input block is taken.
    """
    if isinstance(ctx, dict):
        ctx = task_context(stage, task, ctx)
    blocks = stage.apply(input_blocks(stage, task, each_input), ctx)
    if stage.bucketed:  # output i is bucket i: passed on as it is
        return blocks
    split = split_blocks(blocks, task.target_bytes or target_bytes, stage.out_batch_rows)
    return cap_rows(split, task.block_rows, stage.out_batch_rows) if task.block_rows else split


def cap_rows(blocks: Iterator[pa.Table], most: int, batch_rows: int | None) -> Iterator[pa.Table]:
    """Blocks of at most ``most`` rows (a multiple of ``batch_rows``, at least one batch):
    longer ones are cut into slices, without a copy.

    >>> t = pa.table({"x": list(range(10))})
    >>> [b.num_rows for b in cap_rows(iter([t]), 4, None)], \\
    ...     [b.num_rows for b in cap_rows(iter([t]), 5, 2)]
    ([4, 4, 2], [4, 4, 2])
    """
    if batch_rows:
        most = max(batch_rows, most // batch_rows * batch_rows)
    for block in blocks:
        if block.num_rows <= most:
            yield block
            continue
        for start in range(0, block.num_rows, most):
            yield block.slice(start, most)
