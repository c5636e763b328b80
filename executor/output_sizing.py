"""How big a task's output blocks should be: sized for the stage that consumes them.

A block is one task's input downstream (or a share of one, for a batch size), so
the block size sets what that task holds and how long it runs. The executor's
target (about 128 MiB, less under a tight budget) is right for a stage that
neither grows its input nor takes long per row; otherwise it is cut:

- **growth**: a consumer that makes ``g`` times its input (decoding, embedding)
  gets blocks of ``target / g``, so its task's output, not its input, is about the
  target. A 20x stage fed 1 MiB blocks under a 4 MiB budget runs one task at a
  time (each needs 20 MiB); fed 50 KiB blocks, forty.
- **time**: a consumer that spends long on each row gets blocks of at most
  :data:`TASK_SECONDS` of its work (at least one batch), so its slots share the
  work: one block of 315 rows at 0.3 s a row is one 92 s task on one CPU, with
  the rest idle. Before its speed is known, a consumer with a batch size gets one
  batch a block, and a stage with fewer tasks left than its consumer has slots
  cuts each task's output into that many blocks, so the consumer's first tasks
  spread over its slots (ten reads feeding 64 CPUs: seven blocks each).

>>> from streambatch.executor.contract import TaskStage
>>> from streambatch.executor.stage_state import StageState
>>> up = StageState(0, TaskStage("Read"), 1)
>>> down = StageState(1, TaskStage("Grow", upstream=(0,)), None)
>>> output_target([up, down], up, 100_000)
100000
>>> down.task_finished(100, 2000, 5.0)                  # grew 20x, in 5 s
>>> output_target([up, down], up, 100_000)
5000
>>> up.stats.rows_out, up.stats.bytes_out = 10, 10_000  # 1000 bytes a row
>>> down.stats.rows_in = 10                             # 0.5 s a row
>>> output_target([up, down], up, 100_000)             # 2 rows: 1 s of work
2000
"""

from __future__ import annotations

import math
from collections.abc import Callable

from streambatch.executor.stage_state import StageState

TASK_SECONDS = 1.0  # the most work (measured) one block should hand its consumer
SMALLEST = 1024  # bytes: below this a block costs more than it holds


def output_target(states: list[StageState], st: StageState, target: int,
                  est_bytes: int = 0, slots_of: Callable | None = None) -> int:
    """Bytes of the output blocks of ``st``'s next task (``target``: the executor's;
    ``est_bytes``: what the task is expected to make; ``slots_of(state)``: the tasks a
    stage may run at once, and its pool)."""
    if st.downstream is None:
        return target
    down = states[st.downstream]
    if not down.stage.runs_tasks:
        return target
    down_slots = slots_of(down)[0] if slots_of else 1.0
    sized = target / max(1.0, down.growth())
    per_row = _seconds_per_row(down)
    bytes_per_row = _bytes_per_row_out(st)
    batch = down.stage.batch_rows
    whole_batch = (batch or 0) * bytes_per_row  # less would be joined again: a copy
    if per_row and bytes_per_row:
        rows = max(batch or 1, math.ceil(TASK_SECONDS / per_row))
        return max(SMALLEST, int(max(whole_batch, min(sized, rows * bytes_per_row))))
    if batch and bytes_per_row:  # speed not known yet: a batch a block, for its slots
        sized = min(sized, batch * bytes_per_row)
    spread = math.ceil(down_slots / max(1, _tasks_left(st)))
    if spread > 1 and est_bytes:  # few tasks left to feed many slots: cut finer
        sized = min(sized, max(est_bytes / spread, (batch or 1) * bytes_per_row))
    return max(SMALLEST, int(max(whole_batch, sized)))


def output_rows(states: list[StageState], st: StageState, task_rows: int = 0,
                slots_of: Callable | None = None) -> int | None:
    """The most rows an output block of ``st``'s next task should hold (None: no cap):
    the rows of :data:`TASK_SECONDS` of the consumer's measured work, or one of its
    batches before its speed is known. (Bytes alone miss it while ``st``'s own growth
    is a guess: a stage that shrinks its input 4x would fill 4 batches a block.)

    >>> from streambatch.executor.contract import TaskStage
    >>> from types import SimpleNamespace
    >>> up = StageState(0, TaskStage("Read"), 1)
    >>> down = StageState(1, TaskStage("M", upstream=(0,), ops=[SimpleNamespace(batch_rows=8)]),
    ...                   None)
    >>> output_rows([up, down], up)
    8
    >>> down.task_finished(10, 10, 0.1); down.stats.rows_in = 10    # 0.01 s a row
    >>> output_rows([up, down], up)
    100
    """
    if st.downstream is None or not states[st.downstream].stage.runs_tasks:
        return None
    down = states[st.downstream]
    per_row, batch = _seconds_per_row(down), down.stage.batch_rows
    if per_row:
        return max(batch or 1, math.ceil(TASK_SECONDS / per_row))
    spread = math.ceil(slots_of(down)[0] / max(1, _tasks_left(st))) if slots_of else 1
    if spread > 1 and task_rows:  # (the rows of the spread rule of output_target)
        return max(batch or 1, math.ceil(task_rows / spread))
    return batch


def block_size(states: list[StageState], st: StageState, target: int, task,
               slots_of: Callable) -> dict:
    """``target_bytes`` and ``block_rows`` of the output blocks of the task about to
    start (a RunningTask of ``st``): the :class:`~streambatch.executor.backends.base.Task`
    fields."""
    rows = sum(p.rows for p in task.inputs)
    if task.read_index is not None:
        read = st.task_stage.resolved_read_tasks()[task.read_index]
        rows = getattr(read, "estimated_rows", None) or 0
    return {"target_bytes": output_target(states, st, target, task.est_bytes, slots_of),
            "block_rows": output_rows(states, st, rows, slots_of)}


def _tasks_left(st: StageState) -> int:
    """About how many tasks ``st`` has to run still (running, reads, queued input)."""
    queued = st.queued_bytes() // max(1, st.avg_input_per_task() or 1) if st.stage.upstream \
        else 0
    return len(st.running) + len(st.pending_reads) + int(queued)


def _bytes_per_row_out(st: StageState) -> float:
    """Bytes of a row ``st`` makes: measured, else its input's x its growth (0: unknown)."""
    if st.stats.rows_out:
        return st.stats.bytes_out / st.stats.rows_out
    if st.stats.rows_in and st.bytes_in:
        return st.bytes_in / st.stats.rows_in * st.growth()
    return 0.0


def _seconds_per_row(st: StageState) -> float:
    """Measured task seconds per input row (0 before a task finished)."""
    if not st.stats.tasks or not st.stats.rows_in:
        return 0.0
    rows_done = st.stats.rows_in * st.stats.tasks / max(1, st.next_seq)
    return st.stats.task_time_s / max(1.0, rows_done)
