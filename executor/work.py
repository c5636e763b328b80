"""What a stage can run next, read off its queues (pure functions of a StageState)."""

from __future__ import annotations

import hashlib

from streambatch.executor.partition import Partition
from streambatch.executor.stage_state import StageState


def next_work(st: StageState, default_bytes: int):
    """``(read_index, input partitions, estimated output bytes)`` of the stage's next
    task (a retry first), or None when it has nothing ready.

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
    bundle = peek_bundle(st)
    if not bundle:
        return None
    return None, bundle, int(sum(p.nbytes for p in bundle) * st.growth())


def read_estimate(st: StageState, index: int, default_bytes: int) -> int:
    """Expected output bytes of read task ``index``: measured mean, else its estimate."""
    avg = st.avg_output_per_task()
    if avg is not None:
        return avg
    estimate = getattr(st.stage.read_tasks[index], "estimated_bytes", None)
    return int(estimate) if estimate else default_bytes


def peek_bundle(st: StageState, whole_batches_within: int = 4) -> list[Partition]:
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
    """About how many tasks the queued input makes (for actor-pool scaling)."""
    queued = st.queued_inputs()
    batch_rows = st.stage.batch_rows
    if not batch_rows or not queued:
        return queued
    rows = sum(p.rows for q in st.inputs.values() for p in q)
    return max(1, rows // batch_rows)


def task_lineage(st: StageState, ordinal: int | None, read_index,
                 inputs: list[Partition]) -> tuple[str, frozenset]:
    """A task's deterministic key and the (source, read) origins it descends from."""
    if st.stage.is_source:
        key = read_key(ordinal, st.stage.read_tasks[read_index]) or f"s{ordinal}r{read_index}"
        return key, frozenset({(ordinal, read_index)})
    key = inputs[0].key + (f"b{len(inputs)}" if len(inputs) > 1 else "")
    return f"{key}t{st.index}", frozenset().union(*(p.origins for p in inputs))


def read_key(ordinal: int | None, read_task) -> str | None:
    """A read task's lineage key, from what it reads (its pieces), not from its place in
    this run's layout: the same rows give the same key (and sink file name) however
    the source was split. None for a task that names no pieces.

    >>> from streambatch.connectors.datasource import Piece, ReadTask
    >>> read_key(0, ReadTask(None, pieces=(Piece("range", 0, 10),)))
    's0-85591472498f'
    """
    pieces = getattr(read_task, "pieces", None)
    if not pieces:
        return None
    text = ";".join(f"{p.item}|{p.start}|{p.stop}" for p in pieces)
    return f"s{ordinal}-{hashlib.sha1(text.encode()).hexdigest()[:12]}"


def release_ordered(st: StageState, preserve_order: bool) -> None:
    """Move finished outputs to the stage's output queue (in task order when asked)."""
    if not preserve_order:
        for seq in list(st.reorder):
            st.outputs.extend(st.reorder.pop(seq))
        return
    while True:
        st.outputs.extend(st.reorder.pop(st.release_seq, []))
        if st.release_seq not in st.done_seqs:
            return
        st.done_seqs.discard(st.release_seq)
        st.release_seq += 1


def describe_read(read_task, index: int) -> str:
    """``partition N (what the read task reads)`` for messages."""
    detail = getattr(read_task, "description", "")
    return f"partition {index}" + (f" ({detail})" if detail else "")
