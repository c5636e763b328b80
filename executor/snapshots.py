"""Views of the executor's state for observers and for the adaptive policy."""

from __future__ import annotations

from streambatch.executor.observe import StageSnapshot
from streambatch.executor.policy import StageRate
from streambatch.executor.stage_state import StageState


def snapshot(st: StageState, actors: int) -> StageSnapshot:
    """A stage's counters now.

    >>> from streambatch.executor.stage import PhysicalStage
    >>> snapshot(StageState(0, PhysicalStage("Read"), None), 0).name
    'Read'
    """
    queued = [p for q in st.inputs.values() for p in q]
    total = None
    if st.stage.is_source and st.stage.read_tasks:
        rows = [getattr(t, "estimated_rows", None) for t in st.stage.read_tasks]
        total = sum(rows) if all(r is not None for r in rows) else None
    return StageSnapshot(st.index, st.stage.name, st.stats.rows_in, st.stats.rows_out,
                         st.stats.tasks, len(st.running), len(queued),
                         sum(p.nbytes for p in queued), actors, st.finished,
                         st.stats.backpressure_time_s, st.stats.task_time_s, total)


def source_rates(states: list[StageState], source: StageState, default_bytes: int,
                 slots_of=None) -> tuple[list[StageRate], float]:
    """Per-stage rates for the adaptive policy, and the mean source partition bytes.

    A stage's tasks per source task is its finished tasks over the source's;
    ``slots_of(state) -> (slots, pool)`` says how many tasks it may run at once and
    which pool of resources it shares (default: its running tasks, one pool).
    """
    done = max(1, source.stats.tasks)
    source_bytes = source.stats.bytes_out / source.stats.tasks if source.stats.tasks else \
        float(default_bytes)
    rates = []
    for st in states:
        if st.stage.kind != "task" or not st.stats.tasks:
            continue
        mean = st.stats.task_time_s / st.stats.tasks
        slots, pool = slots_of(st) if slots_of else (max(1, len(st.running)), "cpu")
        rates.append(StageRate(mean, slots, st.stats.tasks / done, pool))
    return rates, max(1.0, source_bytes)
