"""Fusion: run adjacent task stages as one task when nothing forbids it.

Never fuse across a resource change, never fuse an actor-pool stage as the
upstream side, and never fuse a row-count-changing op into a fixed-batch-size
op (its batches would be cut short at every partition boundary); a read fuses
into a fixed-batch-size op only when its read tasks hold a full batch each.
An op whose state the user reads in the driver (``stays_in_driver``: a lookup's
FreshCache statistics) is never fused into a stage that runs (or may run: "auto") in
worker processes. A fused stage runs where its most isolated part must: processes, else
"auto", else threads.

An actor-pool stage is any stage that ``uses_actors``: a class UDF, and also a
function UDF that asks for GPUs (it runs in a pool of GPU actors too), so a GPU
stage is never the upstream side: the ops after it would run on its GPU actors,
holding their GPUs, instead of in a pool sized for them.

A row-count-changing op is one that says so (``changes_row_count``) or one that
skips errors (``on_error="skip"``: a failed row goes to the dead letters, not on).
A read with a pushed filter (its tasks ``filtered``) drops rows its
``estimated_rows`` counted, so it is never fused into a fixed-batch-size op: its
estimates do not tell whether a task holds a batch, and the op takes its batches
whole from the blocks of several read tasks instead, as it does when the filter
is not pushed.
"""

from __future__ import annotations

from dataclasses import replace

from streambatch.executor.contract import Stage, TaskStage


def can_fuse(up: Stage, down: Stage) -> bool:
    """True when ``down`` may run inside ``up``'s tasks.

    >>> a, b = TaskStage("A"), TaskStage("B", upstream=(0,))
    >>> can_fuse(a, b)
    True
    >>> from streambatch.executor.contract import Resources
    >>> can_fuse(a, replace(b, resources=Resources(num_gpus=1)))
    False
    """
    if not isinstance(up, TaskStage) or not isinstance(down, TaskStage) or down.is_source:
        return False
    if up.bucketed or down.grouped or down.numbered:  # an exchange's buckets are not
        return False  # blocks to stream on; the driver numbers a numbered stage's rows
    if up.resources != down.resources or up.concurrency != down.concurrency:
        return False
    if up.uses_actors:  # a class UDF or a GPU function: an actor pool
        return False
    if {"process", "auto"} & {up.worker, down.worker} and any(
            op.stays_in_driver for op in up.ops + down.ops):
        return False
    batch = down.batch_rows
    if not batch:
        return True
    if any(_changes_row_count(op) for op in up.ops):
        return False
    return not up.is_source or _read_tasks_hold(up, batch)


def _changes_row_count(op) -> bool:
    """True when ``op`` may yield another number of rows than it takes: it says so, or
    it sends failed rows to the dead letters (``on_error="skip"``).

    >>> from streambatch.operators.block_ops import block_op
    >>> from streambatch.operators import logical as L
    >>> [_changes_row_count(block_op(L.MapRows(None, fn=dict, on_error=e))) for e in ("raise", "skip")]
    [False, True]
    """
    return op.changes_row_count or getattr(op, "skips_errors", False)


def _read_tasks_hold(source: TaskStage, batch: int) -> bool:
    """True when a typical read task yields at least ``batch`` rows.

    As in Ray Data, the batch that ends a partition may then be short; a
    source of many tiny read tasks is not fused, so its rows are bundled.
    A task with a pushed filter (``filtered``) yields an unknown part of its
    ``estimated_rows``: such a read never holds a batch.
    """
    tasks = source.read_tasks or []
    if any(getattr(t, "filtered", False) for t in tasks):
        return False
    rows = sorted(getattr(t, "estimated_rows", None) or batch for t in tasks)
    return not rows or rows[len(rows) // 2] >= batch


def fuse(up: TaskStage, down: TaskStage) -> TaskStage:
    """One stage running ``up``'s ops then ``down``'s."""
    worker = next(w for w in ("process", "auto", "thread") if w in (up.worker, down.worker))
    return replace(up, name=f"{up.name}->{down.name}", ops=up.ops + down.ops, worker=worker,
                   bucketed=down.bucketed)


def fuse_stages(stages: list[Stage]) -> list[Stage]:
    """Fuse every fusable single-consumer chain; re-index ``upstream`` links."""
    consumers: dict[int, int] = {}
    for st in stages:
        for up in st.upstream:
            consumers[up] = consumers.get(up, 0) + 1
    merged: dict[int, int] = {}
    out: list[Stage] = []
    for i, st in enumerate(stages):
        ups = tuple(merged[u] for u in st.upstream)
        st = replace(st, upstream=ups)
        if len(ups) == 1 and consumers.get(_orig(merged, ups[0]), 0) == 1 and can_fuse(out[ups[0]], st):
            out[ups[0]] = fuse(out[ups[0]], st)  # type: ignore[arg-type]
            merged[i] = ups[0]
        else:
            out.append(st)
            merged[i] = len(out) - 1
    return out


def _orig(merged: dict[int, int], new_index: int) -> int:
    return max(k for k, v in merged.items() if v == new_index)
