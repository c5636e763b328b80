"""Reading a Ray task's stream of records without losing its end or waiting forever.

A stateless stage runs as a Ray streaming generator (``_run_task`` in ray.py) that
yields records: ``("started",)``, then ``("out", rows, nbytes)`` followed by the
output block, once per output, then ``("done", seconds)`` or ``("failed", info)``.
When the task dies (worker crash, its node removed), Ray ends the stream early
and hands out one more ref in place of the next item: the generator's own ref
(``gen.completed()``), which holds the system error. That ref can arrive where a
block was announced, right after an ``("out", ...)`` record, and must not be taken
for the block: the task would then end without a final record and stay
"running" for ever (the intermittent hang of tests/executor/test_ray_node_loss.py).

:func:`task_records` pairs each ``"out"`` record with its block, raises the
task's error wherever it shows up, and guarantees that the records end with
exactly one ``"done"`` or ``"failed"`` record, or raise. :func:`fetch` is a
``ray.get`` that never waits on an object no live node holds any more.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import ray

FETCH_SLICE_S = 10.0  # how often a waiting fetch checks that a live node holds the object


class StreamCut(Exception):
    """A task's stream ended without its final record (``"done"`` or ``"failed"``).

    >>> "ended" in str(StreamCut("the stream ended after ('started',)"))
    True
    """


class UnreachableObjectError(Exception):
    """No live node holds a copy of the object a fetch waits for (its node left).

    >>> str(UnreachableObjectError("ab12")).startswith("no live node holds")
    True
    """

    def __init__(self, object_hex: str) -> None:
        super().__init__(f"no live node holds object {object_hex} (its node left the cluster)")


def held_by_live_node(ref) -> bool:
    """True while some live node holds a copy of ``ref`` (or Ray cannot tell yet).

    Objects under 100 KiB live in the owner's memory store and have no node; a
    ``ray.get`` of those never waits on a node, so :func:`fetch` asks this only after
    a slice of waiting ended without the object. An object not made yet has no node
    either, so ask only about objects that exist (a reported stream item, a block).
    Needs a connected Ray driver.

    >>> callable(held_by_live_node)
    True
    """
    from ray.experimental import get_object_locations

    try:
        where = get_object_locations([ref], timeout_ms=int(FETCH_SLICE_S * 1000)).get(ref)
    except ray.exceptions.GetTimeoutError:
        return True  # the owner did not answer in time: ask again after the next slice
    if where is None:
        return True  # the lookup failed; the next slice asks again
    alive = {node["NodeID"] for node in ray.nodes() if node.get("Alive")}
    return bool(set(where.get("node_ids") or ()) & alive)


def fetch(ref, slice_s: float = FETCH_SLICE_S,
          held: Callable[[object], bool] = held_by_live_node, get: Callable = ray.get):
    """``ray.get(ref)`` in slices of ``slice_s`` seconds: after each slice that ends
    without the object, it goes on waiting only while ``held(ref)`` says a live node
    still has a copy, else raises :class:`UnreachableObjectError`. Ray's own errors
    (ObjectLostError, NodeDiedError, ...) pass through.

    >>> def never_ready(ref, timeout):
    ...     raise ray.exceptions.GetTimeoutError(f"not ready in {timeout} s")
    >>> answers = iter([True, False])  # a live node has it, then none has
    >>> try:
    ...     fetch("ab12", 0.01, held=lambda ref: next(answers), get=never_ready)
    ... except UnreachableObjectError as exc:
    ...     print(exc)
    no live node holds object ab12 (its node left the cluster)
    >>> next(answers, "asked twice")
    'asked twice'
    """
    while True:
        try:
            return get(ref, timeout=slice_s)
        except ray.exceptions.GetTimeoutError:
            if not held(ref):
                raise UnreachableObjectError(ref.hex() if hasattr(ref, "hex") else str(ref)) \
                    from None


def task_records(gen, get: Callable = fetch) -> Iterator[tuple]:
    """The records of one streaming task, with each block's ref appended to its
    ``"out"`` record: ``("started",)``, ``("out", rows, nbytes, block_ref)``...,
    then ``("done", seconds)`` or ``("failed", info)``, after which it stops.

    Raises the task's system error (WorkerCrashedError, NodeDiedError,
    RayActorError, ...) where Ray ends the stream early, :class:`StreamCut` if the
    stream ends without a final record, and whatever ``get`` raises for a record it
    cannot fetch. It never hands out the generator's error ref as a block.

    A stand-in for Ray's generator shows the pairing; ``get`` plays ``ray.get``:

    >>> class Stream:  # refs in the order Ray hands them out
    ...     def __init__(self, refs): self.refs = iter(refs)
    ...     def completed(self): return "gen"  # the generator's own ref
    ...     def __iter__(self): return self
    ...     def __next__(self): return next(self.refs)
    >>> def get(ref):
    ...     if ref == "gen":
    ...         raise RuntimeError("NodeDiedError")  # the task died: its error is here
    ...     return {"s": ("started",), "o": ("out", 20, 160), "d": ("done", 0.1)}[ref]
    >>> list(task_records(Stream(["s", "o", "block", "d"]), get))
    [('started',), ('out', 20, 160, 'block'), ('done', 0.1)]
    >>> list(task_records(Stream(["s", "o", "gen"]), get))  # died before its block
    Traceback (most recent call last):
    ...
    RuntimeError: NodeDiedError
    >>> try:
    ...     list(task_records(Stream(["s", "o", "block"]), get))  # no final record
    ... except StreamCut as exc:
    ...     print(exc)
    the stream ended after ('out', 20, 160) without a 'done' or 'failed' record
    """
    error_ref = gen.completed()  # Ray hands this out in place of an item when the task dies
    last = None
    for ref in gen:
        record = get(ref)  # raises the task's error when ref is error_ref
        if ref == error_ref:  # pragma: no cover - Ray stores an error there, so get raised
            raise StreamCut(f"the stream ended with the task's return value {record!r}")
        kind = record[0]
        if kind == "out":
            block = next(gen, None)
            if block is None:
                raise StreamCut(f"the stream ended after {record!r}, before its block")
            if block == error_ref:
                get(block)  # raises the task's error (it died before its block arrived)
                raise StreamCut(f"the task ended after {record!r}, before its block")
            yield ("out", record[1], record[2], block)
        elif kind in ("done", "failed"):
            yield record
            return
        else:
            yield record
        last = record
    raise StreamCut(f"the stream ended after {last!r} without a 'done' or 'failed' record")


__all__ = ["FETCH_SLICE_S", "StreamCut", "UnreachableObjectError", "fetch", "held_by_live_node",
           "task_records"]
