"""Room a new source task leaves for the stages after it (the adaptive policy's
reserve): their tasks are admitted when their net growth fits the budget, and a
source that took that room would stall them.

>>> from streambatch.executor.contract import TaskStage
>>> from streambatch.executor.stage_state import StageState
>>> read = StageState(0, TaskStage("Read"), 1)
>>> grow = StageState(1, TaskStage("Grow", upstream=(0,)), None)
>>> grow.next_seq, grow.bytes_in = 2, 200      # 100 bytes in per task
>>> grow.stats.tasks, grow.done_out = 2, 1000  # 500 out: grows 400 per task
>>> drain_headroom([read, grow], lambda st: (32.0, "cpu"))  # one task's growth, not 32
400
"""

from __future__ import annotations

from collections.abc import Callable

from streambatch.executor.stage_state import StageState


def drain_headroom(states: list[StageState], slots_of: Callable) -> int:
    """Bytes to keep free for the downstream tasks that could start now or on the next
    source output: per stage, the net growth (output less the input it frees) of as
    many tasks as its queued input makes (at least one: the next input), up to its
    free slots. Reserving for every free slot instead (32 CPUs x a stage that grows
    its input 12x) can exceed a budget the pipeline needs a tenth of, and holds the
    source to one task at a time."""
    room = 0
    for st in states:
        if st.stage.is_source or not st.stage.runs_tasks or st.finished:
            continue
        out, into = st.avg_output_per_task(), st.avg_input_per_task()
        if not out:
            continue
        growth = max(0, out - (into or 0))
        per_task_in = into or out
        ready = -(-st.queued_bytes() // max(1, per_task_in))  # tasks its queue makes
        free = max(0, int(slots_of(st)[0]) - len(st.running))
        room += min(free, max(1, ready)) * growth
    return room
