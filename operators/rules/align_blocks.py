"""Block alignment: a stage that feeds a fixed-batch-size stage (directly, or
through stages that take whole blocks) cuts its output blocks to line up with
that batch size, so each batch is whole blocks, read in place when it is one.

A batch that spans blocks is a copy, made in the consumer: in an actor, on the
model's critical path and beside the blocks the budget counts. And a task whose
blocks overshoot its batch size ends on a short batch (blocks of 4 rows for
batches of 10). Aligned blocks make any copy in the producing task instead,
which runs in parallel and returns its memory when it ends.
"""

from __future__ import annotations

from dataclasses import replace

from streambatch.executor.contract import Stage, TaskStage


def align_blocks(stages: list[Stage]) -> list[Stage]:
    """Set ``out_batch_rows`` on each task stage whose only consumer takes fixed batches
    (its ``batch_rows``), or passes its blocks on whole (no batch size) to a stage that
    has ``out_batch_rows``:
    a read feeding a per-block transform feeding a model lines up with the model.
    (Blocks smaller than a batch are cut to a divisor of it, see aligned_step, so a
    tight budget keeps small blocks.)

    >>> from streambatch.operators.block_ops import MapBatchesOp
    >>> from streambatch.operators import logical as L
    >>> def batches(n): return [MapBatchesOp(L.MapBatches(None, fn=dict, batch_size=n))]
    >>> stages = [TaskStage("Read"), TaskStage("A", upstream=(0,), ops=batches(None)),
    ...           TaskStage("B", upstream=(1,), ops=batches(8))]
    >>> [s.out_batch_rows for s in align_blocks(stages)]
    [8, 8, None]
    """
    consumers: dict[int, list[int]] = {}
    for i, st in enumerate(stages):
        for up in st.upstream:
            consumers.setdefault(up, []).append(i)
    aligned = list(stages)
    for i in reversed(range(len(stages))):  # consumers come after their inputs
        users = consumers.get(i, [])
        stage = aligned[i]
        user = aligned[users[0]] if len(users) == 1 else None
        if not isinstance(stage, TaskStage) or not isinstance(user, TaskStage):
            continue
        rows = user.batch_rows or user.out_batch_rows
        if rows:
            aligned[i] = replace(stage, out_batch_rows=rows)
    return aligned
