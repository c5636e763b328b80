"""Stages the driver runs itself, moving only metadata and zero-copy slices:
limit, union and repartition. Each stage kind's step is registered in
:data:`DRIVER_STEPS` under its contract type; the executor calls
``run_driver_step(state, executor)`` each time partitions move, which runs
``driver_step(stage)`` and counts what it passed on.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

from streambatch.connectors.block_joins import even_cut, join_blocks
from streambatch.executor.contract import (
    ExchangeStage,
    LimitStage,
    RepartitionStage,
    Stage,
    UnionStage,
)
from streambatch.executor.partition import InMemoryRef, Partition
from streambatch.executor.spill import SpilledRef, buckets_for, spill_excess
from streambatch.executor.stage_state import StageState


def _keep(new: Partition, old: list) -> Partition:
    return new


def step_limit(st: StageState, release, adopt=_keep) -> bool:
    """Pass partitions through until ``limit`` rows; True when the limit is reached.

    >>> import pyarrow as pa
    >>> st = StageState(1, LimitStage("Limit[3]", upstream=(0,), limit=3), None)
    >>> st.inputs[0].append(Partition.from_table(pa.table({"x": [1, 2]}), 0))
    >>> st.inputs[0].append(Partition.from_table(pa.table({"x": [3, 4]}), 0))
    >>> step_limit(st, release=lambda p: None), [p.get()["x"].to_pylist() for p in st.outputs]
    (True, [[1, 2], [3]])
    """
    stage = st.stage
    if not isinstance(stage, LimitStage):  # DRIVER_STEPS calls it for limit stages only
        raise TypeError(f"step_limit runs a LimitStage, not a {type(stage).__name__}")
    queue = st.inputs[stage.upstream[0]]
    if st.remaining is None:
        st.remaining = stage.limit
    while queue and st.remaining > 0:
        part = queue.popleft()
        if part.rows <= st.remaining:
            st.outputs.append(part)
        else:
            table = part.get().slice(0, st.remaining)
            st.outputs.append(adopt(Partition.from_table(table, st.index, (part.pid,)), [part]))
            release(part)
        st.remaining -= min(part.rows, st.remaining)
        st.stats.rows_in += part.rows
    return st.remaining <= 0


def step_union(st: StageState, preserve_order: bool) -> None:
    """Forward inputs; in order mode, drain each input fully before the next."""
    for up in st.stage.upstream:
        queue = st.inputs[up]
        while queue:
            part = queue.popleft()
            st.stats.rows_in += part.rows
            st.outputs.append(part)
        if preserve_order and not st.upstream_finished[up]:
            return


def step_repartition(st: StageState, release, adopt=_keep) -> None:
    """Once all input arrived, cut it into ``num_partitions`` equal row ranges."""
    stage = st.stage
    if not isinstance(stage, RepartitionStage):  # DRIVER_STEPS calls it for these only
        raise TypeError(f"step_repartition runs a RepartitionStage, not a "
                        f"{type(stage).__name__}")
    if not st.all_upstream_finished:
        return
    parts = list(st.inputs[st.stage.upstream[0]])
    st.inputs[st.stage.upstream[0]].clear()
    tables = [p.get() for p in parts]
    st.stats.rows_in += sum(t.num_rows for t in tables)
    if not tables:
        return
    table = join_blocks(tables, f"stage '{st.stage.name}': the partitions it repartitions")
    for piece in even_cut(table, stage.num_partitions):
        new = Partition.from_table(piece, st.index, tuple(p.pid for p in parts))
        st.outputs.append(adopt(new, parts))
    for part in parts:
        release(part)


def limit_feeders(stages: list) -> set[int]:
    """Indices of the stages a limit reads through: they hand their output on in input
    order whatever ``preserve_order`` says, so a limit keeps the *first* rows, the same
    ones ``take`` shows (in completion order ``limit(700)`` of 3000 rows kept rows past
    699 when a later partition finished first).

    >>> from streambatch.executor.contract import TaskStage
    >>> stages = [TaskStage("Read"), TaskStage("Map", upstream=(0,)),
    ...           LimitStage("Limit[5]", (1,), 5), TaskStage("Write", upstream=(2,))]
    >>> sorted(limit_feeders(stages))
    [0, 1]
    """
    feeders: set[int] = set()
    todo = [up for s in stages if isinstance(s, LimitStage) for up in s.upstream]
    while todo:
        index = todo.pop()
        if index not in feeders:
            feeders.add(index)
            todo.extend(stages[index].upstream)
    return feeders


def _limit(st: StageState, executor) -> None:
    if not st.finished and step_limit(st, executor.release, executor.adopt):
        executor.cancel_upstream(st)


def _union(st: StageState, executor) -> None:
    step_union(st, executor.keeps_order(st))


def _repartition(st: StageState, executor) -> None:
    step_repartition(st, executor.release, executor.adopt)


def _exchange(st: StageState, executor) -> None:
    """Once all the map side's output is in: its partitions bucket by bucket (bucket =
    output number), or, with a ``split``, every block cut into the buckets' spans (more
    buckets when the input is large for the memory budget). Until then, what it holds
    beyond its share of the budget is spilled to disk."""
    if not st.all_upstream_finished:
        spill_excess(st, executor.backend, executor.spiller,
                     executor.options.resolved_memory_budget())
        return
    parts = [p for up in st.stage.upstream for p in st.inputs[up]]  # a join has two
    for up in st.stage.upstream:
        st.inputs[up].clear()
    st.stats.rows_in += sum(p.rows for p in parts)
    split = getattr(st.stage, "split", None)
    if not getattr(st.stage, "ordered", False):  # arrival order is not the input order
        parts.sort(key=lambda p: p.key)
    if split is None:
        st.outputs.extend(sorted(parts, key=lambda p: p.index))  # stable: arrival order
        return
    tables = [p.get() for p in parts]
    at_least = buckets_for(sum(p.nbytes for p in parts), executor.options.resolved_memory_budget())
    for bucket, spans in enumerate(split(tables, at_least)):
        for i, start, length in spans:
            piece = tables[i].slice(start, length)
            ref = parts[i].ref
            new = Partition(ref.slice(start, length) if isinstance(ref, SpilledRef)
                            else InMemoryRef(piece), length, piece.nbytes, st.index,
                            (parts[i].pid,), index=bucket)
            st.outputs.append(executor.adopt(new, [parts[i]]))
    for part in parts:  # a spilled block's file stays for its slices (removed at the end)
        executor.release(part, keep_block=isinstance(part.ref, SpilledRef))


def _no_step(st: StageState, executor) -> None:
    """Task stages: their work is tasks the executor dispatches, not a driver step."""


DRIVER_STEPS: dict[type, Callable[[StageState, object], None]] = {
    LimitStage: _limit,
    UnionStage: _union,
    RepartitionStage: _repartition,
    ExchangeStage: _exchange,
}


def run_driver_step(st: StageState, executor) -> None:
    """Run the driver's step for ``st``'s kind and count the rows and bytes it passed on
    (a limit, union, repartition or exchange showed 0 rows out in ``stats()``).

    >>> from collections import deque
    >>> from types import SimpleNamespace
    >>> import pyarrow as pa
    >>> st = StageState(1, LimitStage("Limit[2]", (0,), 2), None)
    >>> st.inputs[0] = deque([Partition.from_table(pa.table({"x": [1, 2, 3]}), 0)])
    >>> run_driver_step(st, SimpleNamespace(release=lambda p: None, adopt=_keep,
    ...                                     cancel_upstream=lambda st: None))
    >>> st.stats.rows_in, st.stats.rows_out
    (3, 2)
    """
    before = len(st.outputs)
    driver_step(st.stage)(st, executor)
    made = list(itertools.islice(st.outputs, before, None))
    st.stats.rows_out += sum(p.rows for p in made)
    st.stats.bytes_out += sum(p.nbytes for p in made)


def driver_step(stage: Stage) -> Callable[[StageState, object], None]:
    """The driver's step for ``stage``'s kind (nothing for a stage of tasks).

    >>> driver_step(LimitStage("Limit[1]", (0,), 1)).__name__
    '_limit'
    """
    return DRIVER_STEPS.get(type(stage), _no_step)
