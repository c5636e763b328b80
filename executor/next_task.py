"""The input of a stage's next task, read off its queues (pure functions of a
StageState): a retry, a read, or a bundle of partitions lined up with the stage's
batch size; and estimates of its output."""

from __future__ import annotations

from streambatch.executor.contract import TaskStage
from streambatch.executor.partition import Partition
from streambatch.executor.stage_state import StageState


def next_work(st: StageState, default_bytes: int, slots: float = 1.0):
    """``(read_index, input partitions, estimated output bytes)`` of the stage's next
    task (a retry first), or None when it has nothing ready. ``slots``: tasks the
    stage may run at once (its tasks are cut smaller while some of them would idle).

    >>> from streambatch.executor.contract import TaskStage
    >>> next_work(StageState(0, TaskStage("Map", upstream=(1,)), None), 100) is None
    True
    """
    if st.retries:
        task = st.retries[0]
        return task.read_index, task.inputs, task.est_bytes
    if st.stage.is_source:
        if not st.pending_reads:
            return None
        index = st.pending_reads[0]
        return index, [], read_estimate(st, index, default_bytes)
    bundle = peek_bundle(st, WHOLE_BATCHES_WITHIN)
    if bundle and idle_slots(st, slots, _batches_in(st, bundle)):
        bundle = peek_bundle(st, 1)
    if not bundle:
        return None
    return None, bundle, int(sum(p.nbytes for p in bundle) * st.growth())


def read_estimate(st: StageState, index: int, default_bytes: int) -> int:
    """Expected output bytes of read task ``index``: measured mean, else its estimate."""
    avg = st.avg_output_per_task()
    if avg is not None:
        return avg
    estimate = getattr(st.task_stage.resolved_read_tasks()[index], "estimated_bytes", None)
    return int(estimate) if estimate else default_bytes


WHOLE_BATCHES_WITHIN = 4  # batches a task may take to end on a whole batch


def idle_slots(st: StageState, slots: float, batches_per_task: int = 1) -> bool:
    """True when the stage's running tasks and the tasks its queued batches make, at
    ``batches_per_task`` each, leave some of its ``slots`` idle: its next task then
    takes one batch (ending it on a whole number of batches would take up to
    ``WHOLE_BATCHES_WITHIN`` and leave slots idle: 462 rows in blocks of 6 for 7
    actors with batches of 64 made 3 tasks of 192 rows, 4 actors idle).

    >>> from streambatch.executor.contract import TaskStage
    >>> from types import SimpleNamespace
    >>> from collections import deque
    >>> op = SimpleNamespace(batch_rows=32)
    >>> st = StageState(1, TaskStage("M", upstream=(0,), ops=[op]), None)
    >>> st.inputs[0] = deque(SimpleNamespace(rows=6) for _ in range(16))
    >>> idle_slots(st, 32), idle_slots(st, 3), idle_slots(st, 3, batches_per_task=3)
    (True, False, True)
    """
    return len(st.running) + queued_bundles(st) / max(1, batches_per_task) < slots


def _batches_in(st: StageState, bundle: list[Partition]) -> int:
    """Whole batches of the stage's batch size in ``bundle`` (1 without a batch size)."""
    batch_rows = st.stage.batch_rows
    return max(1, sum(p.rows for p in bundle) // batch_rows) if batch_rows else 1


def peek_bundle(st: StageState,
                whole_batches_within: int = WHOLE_BATCHES_WITHIN) -> list[Partition]:
    """The input partitions the next task takes: one, or enough rows for a fixed batch
    size (a short bundle only once no more input will come). Among the queued
    prefixes of up to ``whole_batches_within`` batches, the first that ends on a
    whole number of batches is taken (blocks of 4 rows for batches of 10: 4+4+2,
    or 5 blocks, not 4+4+4, which ends the task with a short batch of 2).

    >>> from streambatch.executor.contract import TaskStage
    >>> from types import SimpleNamespace
    >>> from collections import deque
    >>> def ready(*rows, batch_rows=10):
    ...     op = SimpleNamespace(batch_rows=batch_rows)
    ...     st = StageState(1, TaskStage("M", upstream=(0,), ops=[op]), None)
    ...     st.inputs[0] = deque(SimpleNamespace(rows=r) for r in rows)
    ...     return [p.rows for p in peek_bundle(st)]
    >>> ready(4, 4, 4, 4, 4), ready(4, 4, 2, 4), ready(4, 4, 4, 3), ready(4, 4)
    ([4, 4, 4, 4, 4], [4, 4, 2], [4, 4, 4], [])
    """
    queue = st.inputs[st.stage.upstream[0]]
    if not queue:
        return []
    if getattr(st.stage, "grouped", False):  # one bucket's partitions (they come together)
        return [p for p in _same_index_prefix(queue)]
    batch_rows = st.stage.batch_rows
    if not batch_rows:
        return [queue[0]]
    bundle, rows, first_full = [], 0, 0
    for part in queue:
        bundle.append(part)
        rows += part.rows
        if rows >= batch_rows:
            if rows % batch_rows == 0:
                return bundle
            first_full = first_full or len(bundle)
            if rows >= whole_batches_within * batch_rows:
                break
    if first_full:
        return bundle[:first_full]
    return bundle if st.all_upstream_finished else []


def queued_bundles(st: StageState) -> int:
    """About how many tasks the queued input makes (for actor-pool scaling): whole
    batches, and the short rest once no more input will come.

    >>> from streambatch.executor.contract import TaskStage
    >>> from types import SimpleNamespace
    >>> from collections import deque
    >>> op = SimpleNamespace(batch_rows=64)
    >>> st = StageState(1, TaskStage("M", upstream=(0,), ops=[op]), None)
    >>> st.inputs[0] = deque([SimpleNamespace(rows=66), SimpleNamespace(rows=33)])
    >>> queued_bundles(st)
    1
    >>> st.upstream_finished[0] = True
    >>> queued_bundles(st)
    2
    """
    queued = st.queued_inputs()
    batch_rows = st.stage.batch_rows
    if not batch_rows or not queued:
        return queued
    rows = sum(p.rows for q in st.inputs.values() for p in q)
    if st.all_upstream_finished:  # the short rest is a task of its own
        return -(-rows // batch_rows)
    return max(1, rows // batch_rows)


def upstream_rows(states: list[StageState], st: StageState) -> int:
    """Rows on their way to ``st`` along its chain of upstream stages: queued, in running
    tasks' inputs (less what they made), and the estimates of reads not done. 0 when
    not known: a stage with several upstreams (a union, a join) or none that runs tasks
    (a limit, an exchange), a stage that changes row counts (a filter, a flat_map), a
    read that filters or has no estimate.

    >>> from types import SimpleNamespace
    >>> from collections import deque
    >>> reads = [SimpleNamespace(estimated_rows=10) for _ in range(3)]
    >>> src = StageState(0, TaskStage("Read", read_tasks_fn=list, read_tasks=reads), 1)
    >>> src.pending_reads = deque([1, 2])
    >>> mid = StageState(1, TaskStage("Map", upstream=(0,)), 2)
    >>> mid.inputs[0] = deque([SimpleNamespace(rows=10)])
    >>> model = StageState(2, TaskStage("Model", upstream=(1,)), None)
    >>> upstream_rows([src, mid, model], model)
    30
    >>> mid.stage.ops = [SimpleNamespace(changes_row_count=True)]  # a filter
    >>> upstream_rows([src, mid, model], model)
    0
    """
    rows, up = 0, st
    while up.stage.upstream:
        if len(up.stage.upstream) != 1:
            return 0
        up = states[up.stage.upstream[0]]
        if not isinstance(up.stage, TaskStage) or up.stage.changes_row_count:
            return 0
        rows += sum(p.rows for q in up.inputs.values() for p in q)
        rows += sum(max(0, sum(p.rows for p in t.inputs) - t.rows_out)
                    for t in up.running.values())
    return rows + _unread_rows(up) if up.stage.is_source else 0


def _unread_rows(source: StageState) -> int:
    """Estimated rows of the source's reads not done (0 when one is not known or filters)."""
    reads = source.task_stage.resolved_read_tasks()
    rows = 0
    for i in list(source.pending_reads) + [t.read_index for t in source.running.values()]:
        estimate = getattr(reads[i], "estimated_rows", None)
        if estimate is None or getattr(reads[i], "filtered", False):
            return 0
        limit = getattr(reads[i], "per_task_row_limit", None)
        rows += min(int(estimate), limit) if limit else int(estimate)
    return rows


def describe_read(read_task, index: int) -> str:
    """``partition N (what the read task reads)`` for messages."""
    detail = getattr(read_task, "description", "")
    return f"partition {index}" + (f" ({detail})" if detail else "")


def _same_index_prefix(queue) -> list:
    """The queue's first partitions that share the first one's index (one bucket)."""
    first, out = queue[0].index, []
    for part in queue:
        if part.index != first:
            break
        out.append(part)
    return out
