"""The executor's memory accounting: bytes a plan holds, what a new source task
must leave free, and how much source output waits downstream. Pure functions of
the stage states, so the admission policy sees the same numbers the stats report.

>>> from streambatch.executor.stage import PhysicalStage
>>> from streambatch.executor.stage_state import StageState
>>> states = [StageState(0, PhysicalStage("Read"), None)]
>>> used_bytes(states, {}), in_pipeline(states), downstream_headroom(states, lambda st: (1.0, "cpu"))
(0, 0, 0)
"""

from __future__ import annotations

from collections.abc import Callable

from streambatch.executor.stage_state import StageState


def used_bytes(states: list[StageState], tasks: dict) -> int:
    """Buffered bytes plus what running tasks are still expected to make."""
    buffered = sum(st.buffered_bytes() for st in states)
    in_flight = sum(max(0, t.est_bytes - t.produced_bytes) for t in tasks.values())
    return buffered + in_flight


def in_pipeline(states: list[StageState]) -> int:
    """Source output already made and not yet consumed: what waits for or runs in
    the stages after the sources, or for the consumer (a read still running is
    not counted: its output may come late, while the stage after it runs dry)."""
    return sum(st.output_bytes() if st.stage.is_source else st.buffered_bytes()
               for st in states)


def downstream_headroom(states: list[StageState], slots_of: Callable) -> int:
    """Room a new source task leaves for the outputs of downstream tasks not yet
    running: their output exists beside their input while they run, and they are
    always admitted (they drain the pipeline), so the source keeps it free."""
    room = 0
    for st in states:
        if st.stage.is_source or st.stage.kind != "task" or st.finished:
            continue
        per_task = st.avg_output_per_task() or 0
        room += max(0, int(slots_of(st)[0]) - len(st.running)) * per_task
    return room
