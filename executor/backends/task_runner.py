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
                      task.key or str(task.task_id), first_row=task.first_row)
    if cancelled is not None:
        ctx.cancelled = cancelled
    return ctx


def run_task(stage: TaskStage, task: Task, target_bytes: int,
             ctx: TaskContext | dict, each_input: Callable[[], object] | None = None
             ) -> Iterator[pa.Table]:
    """Yield the output blocks of ``task``, split to ``target_bytes``.

    ``ctx`` is a :func:`task_context` (or a worker-state dict, for callers that do
    not collect dead letters); ``each_input`` is called as each input block is taken.
    """
    if isinstance(ctx, dict):
        ctx = task_context(stage, task, ctx)
    blocks = stage.apply(input_blocks(stage, task, each_input), ctx)
    if stage.bucketed:  # output i is bucket i: passed on as it is
        return blocks
    return split_blocks(blocks, target_bytes, stage.out_batch_rows)
