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

from streambatch.executor.stage import PhysicalStage


def align_blocks(stages: list[PhysicalStage]) -> list[PhysicalStage]:
    """Set ``block_rows`` on each task stage whose only consumer takes fixed batches,
    or passes its blocks on whole (no batch size) to a stage that has ``block_rows``:
    a read feeding a per-block transform feeding a model lines up with the model.
    (Blocks smaller than a batch are cut to a divisor of it, see aligned_step, so a
    tight budget keeps small blocks.)

    >>> from streambatch.operators.block_ops import MapBatchesOp
    >>> from streambatch.operators import logical as L
    >>> def batches(n): return [MapBatchesOp(L.MapBatches(None, fn=dict, batch_size=n))]
    >>> stages = [PhysicalStage("Read"), PhysicalStage("A", upstream=(0,), ops=batches(None)),
    ...           PhysicalStage("B", upstream=(1,), ops=batches(8))]
    >>> [s.block_rows for s in align_blocks(stages)]
    [8, 8, None]
    """
    consumers: dict[int, list[int]] = {}
    for i, st in enumerate(stages):
        for up in st.upstream:
            consumers.setdefault(up, []).append(i)
    aligned = list(stages)
    for i in reversed(range(len(stages))):  # consumers come after their inputs
        users = consumers.get(i, [])
        if aligned[i].kind != "task" or len(users) != 1 or aligned[users[0]].kind != "task":
            continue
        user = aligned[users[0]]
        rows = user.min_rows_per_task or user.block_rows
        if rows:
            aligned[i] = replace(aligned[i], block_rows=rows)
    return aligned
