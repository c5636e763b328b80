"""The executor's memory accounting: bytes a plan holds, what a new source task
must leave free, and how much source output waits downstream. Pure functions of
the stage states, so the admission policy sees the same numbers the stats report.

>>> from streambatch.executor.contract import TaskStage
>>> from streambatch.executor.stage_state import StageState
>>> states = [StageState(0, TaskStage("Read"), None)]
>>> used_bytes(states, {}), in_pipeline(states), downstream_headroom(states, lambda st: (1.0, "cpu"))
(0, 0, 0)
"""

from __future__ import annotations

from collections.abc import Callable

from streambatch.executor.headroom import drain_headroom
from streambatch.executor.next_task import peek_bundle
from streambatch.executor.policy import MemoryView
from streambatch.executor.stage_state import StageState


def used_bytes(states: list[StageState], tasks: dict) -> int:
    """Buffered bytes, what running tasks are still expected to make, and the working
    memory (reader buffers, a UDF's temporaries) measured for their stages: once per
    actor, which runs one of the tasks queued on it at a time.

    >>> from types import SimpleNamespace as T
    >>> tasks = {1: T(est_bytes=10, produced_bytes=4, working=5, actor_id=None),
    ...          2: T(est_bytes=0, produced_bytes=0, working=7, actor_id=3),
    ...          3: T(est_bytes=0, produced_bytes=0, working=7, actor_id=3)}
    >>> used_bytes([], tasks)
    18
    """
    buffered = sum(st.buffered_bytes() for st in states)
    in_flight = sum(max(0, t.est_bytes - t.produced_bytes) for t in tasks.values())
    working = sum(t.working for t in tasks.values() if t.actor_id is None)
    per_actor: dict[int, int] = {}
    for t in tasks.values():
        if t.actor_id is not None:
            per_actor[t.actor_id] = max(per_actor.get(t.actor_id, 0), t.working)
    return buffered + in_flight + working + sum(per_actor.values())


def in_pipeline(states: list[StageState]) -> int:
    """Source output already made and not yet consumed: what waits for or runs in
    the stages after the sources, or for the consumer (a read still running is
    not counted: its output may come late, while the stage after it runs dry)."""
    return sum(st.output_bytes() if st.stage.is_source else st.buffered_bytes()
               for st in states)


def source_view(states: list[StageState], tasks: dict, budget: int, slots_of: Callable,
                working: int, bottleneck: str | None = None) -> MemoryView:
    """What the policy sees when a source task asks to start: the bytes in use with the
    room kept for stages that drain the pipeline (``drain_headroom``), the source output
    on its way, and whether a stage it feeds waits for a batch (:func:`batch_wanted`)."""
    used = used_bytes(states, tasks) + drain_headroom(states, slots_of)
    return MemoryView(used, budget, bool(tasks), in_pipeline(states), working,
                      batch_wanted(states, slots_of, bottleneck))


def batch_wanted(states: list[StageState], slots_of: Callable,
                 bottleneck: str | None = None) -> bool:
    """True when a stage that takes a source's output in fixed batches, on the pool of
    slots that bounds the pipeline (``bottleneck``), has room for another task and its
    queue does not hold a batch yet: it waits on the source alone, whatever the
    source's drain rate says (sweep seed 20: batches of 128 rows of a 2 ms read for two
    GPU actors; the rate, one actor's, read the second batch over 66 s while the other
    actor stood idle, 60% of the optimum). A stage that does not bound the pipeline
    waits for nobody: reading ahead for it took CPUs from the stages that did (seed
    358: 65.5% -> 55.8%).

    >>> from collections import deque
    >>> from types import SimpleNamespace as T
    >>> from streambatch.executor.contract import TaskStage
    >>> read = StageState(0, TaskStage("Read", read_tasks_fn=list), 1)
    >>> model = StageState(1, TaskStage("Model", upstream=(0,), ops=[T(batch_rows=4)]), None)
    >>> model.inputs[0] = deque([T(rows=3)])
    >>> slots_of = lambda st: (2.0, "actors-1")
    >>> batch_wanted([read, model], slots_of, "actors-1"), batch_wanted([read, model], slots_of, "cpu")
    (True, False)
    >>> model.inputs[0].append(T(rows=1)); batch_wanted([read, model], slots_of, "actors-1")
    False
    """
    for st in states:
        batch = getattr(st.stage, "batch_rows", None)
        if st.stage.is_source or st.finished or not batch or st.all_upstream_finished:
            continue
        if slots_of(st)[1] != bottleneck or \
                not all(states[up].stage.is_source for up in st.stage.upstream):
            continue
        if len(st.running) < slots_of(st)[0] and not peek_bundle(st):
            return True
    return False


def downstream_headroom(states: list[StageState], slots_of: Callable) -> int:
    """Room a new source task leaves for the outputs of downstream tasks not yet
    running: their output exists beside their input while they run, and they are
    always admitted (they drain the pipeline), so the source keeps it free."""
    room = 0
    for st in states:
        if st.stage.is_source or not st.stage.runs_tasks or st.finished:
            continue
        per_task = st.avg_output_per_task() or 0
        room += max(0, int(slots_of(st)[0]) - len(st.running)) * per_task
    return room


QUEUED_TASKS_PER_SLOT = 2  # input a stage may have waiting, in tasks per slot it can run
# A queue smaller than this never holds its producer: it costs no memory worth stalling
# for, and the producer may be the bottleneck (W1: the model actor was held 11-26 s while
# two parquet writes of 2 KB each waited for a CPU, and the decode ran free meanwhile).
HOLD_FLOOR_BYTES = 2**20


def queued_on_actors(st: StageState) -> int:
    """Input bytes of the tasks handed to an actor behind the one it runs: they wait
    in memory as the stage's own queue does (an actor takes ``actor_queue_depth``
    tasks so that fetching overlaps compute). The oldest task of each actor counts
    as running; a stage of plain tasks has none waiting.

    >>> from types import SimpleNamespace as T
    >>> from streambatch.executor.contract import TaskStage
    >>> st = StageState(1, TaskStage("Model", upstream=(0,)), None)
    >>> part = T(memory_bytes=10)
    >>> st.running = {4: T(actor_id=0, inputs=[part]), 5: T(actor_id=0, inputs=[part, part]),
    ...               6: T(actor_id=1, inputs=[part]), 7: T(actor_id=None, inputs=[part])}
    >>> queued_on_actors(st)
    20
    """
    first: dict[int, int] = {}
    for task_id, task in st.running.items():
        if task.actor_id is not None:
            first[task.actor_id] = min(task_id, first.get(task.actor_id, task_id))
    running = set(first.values())
    return sum(p.memory_bytes for task_id, task in st.running.items()
               if task.actor_id is not None and task_id not in running for p in task.inputs)


def downstream_has_enough(states: list[StageState], st: StageState, slots_of: Callable,
                          budget: int | None = None) -> bool:
    """True when the task stage that ``st`` feeds has, per slot it can run, at least
    :data:`QUEUED_TASKS_PER_SLOT` tasks' worth of input waiting, and enough for its
    next task: more would only wait in memory, however large the budget, so ``st``
    holds its next task (its running tasks still finish: the queue stays between
    that depth and that plus their output, whatever the size of the data, and the
    slow stage never starves). Waiting input counts the stage's queue, what ``st``
    made that was not yet routed to it, and the tasks queued on its actors behind
    the one each runs (:func:`queued_on_actors`); under :data:`HOLD_FLOOR_BYTES`
    it is never enough. Under a ``budget``, a stage runs no more tasks at once than
    the budget holds (:func:`budget_slots`), whatever its slots; when that is fewer,
    one task's input waiting for each is enough (a task of such a stage starts when
    one ends and frees its memory).

    >>> from collections import deque
    >>> from types import SimpleNamespace
    >>> from streambatch.executor.contract import TaskStage
    >>> up = StageState(0, TaskStage("Read"), 1)
    >>> down = StageState(1, TaskStage("Model", upstream=(0,)), None)
    >>> mib = 2**20
    >>> down.next_seq, down.bytes_in = 4, 4 * mib  # 1 MiB per task
    >>> down.inputs[0] = deque(SimpleNamespace(nbytes=mib, memory_bytes=mib) for _ in range(3))
    >>> downstream_has_enough([up, down], up, lambda st: (1.0, "cpu"))
    True
    >>> downstream_has_enough([up, down], up, lambda st: (2.0, "cpu"))
    False
    """
    if st.downstream is None:
        return False
    down = states[st.downstream]
    per_task = down.avg_input_per_task()
    if not down.stage.runs_tasks or down.finished or not per_task or not peek_bundle(down):
        return False  # (a stage whose queue makes no task yet must get more input)
    waiting = down.queued_bytes() + queued_on_actors(down) + st.output_bytes()
    slots, held_by_budget = slots_of(down)[0], budget_slots(down, per_task, budget)
    if held_by_budget < slots:  # a task starts as one ends and frees its memory: one
        return waiting >= max(HOLD_FLOOR_BYTES, held_by_budget * per_task)  # each is enough
    return waiting >= max(HOLD_FLOOR_BYTES, QUEUED_TASKS_PER_SLOT * slots * per_task)


def budget_slots(st: StageState, per_task: int, budget: int | None) -> float:
    """Tasks of ``st`` the whole ``budget`` holds at once, each with its input, its
    output (the measured growth) and its measured working memory; at least one. A
    stage whose tasks grow their input 4x on 32 CPUs under 32 MiB runs a few tasks at
    once, not 32: sized by its CPUs, its queue was "enough" only at 141 MiB, and the
    stage before it filled 28 MiB of a 32 MiB budget with input it could not take
    (sweep seed 687, 119% of the budget once its outputs came).

    >>> from streambatch.executor.contract import TaskStage
    >>> st = StageState(1, TaskStage("Grow", upstream=(0,)), None)
    >>> st.done_in, st.done_out = 100, 400  # grows 4x
    >>> budget_slots(st, 10, 500), budget_slots(st, 10, None), budget_slots(st, 10, 20)
    (10.0, inf, 1.0)
    """
    if not budget:
        return float("inf")
    footprint = per_task * (1 + st.growth()) + max(st.working, default=0)
    return max(1.0, budget / max(1, footprint))


def holds(states: list[StageState], st: StageState, slots_of: Callable,
          busiest: str | None, budget: int | None = None) -> bool:
    """Whether ``st`` holds its next task: the stage it feeds has enough input waiting
    (:func:`downstream_has_enough`), unless ``st`` runs on the pool of slots that
    bounds the pipeline (``busiest``) and feeds a stage on another: its slots would
    idle while the pipeline is short of exactly them (the paper's Fig. 9: CPU stages
    held while four GPU actors had enough queued left the CPUs 18% idle, and the CPUs,
    not the GPUs, bound the job), and what it makes ahead is work the busiest pool
    will not have to do later. The executor passes ``busiest`` only while less than
    half the budget is used: what runs ahead is bounded below the budget, whose
    accounting of a task's memory is an estimate (read -> one actor -> write under
    128 MiB ran ahead to a peak PSS 13% over the budget's allowance).

    >>> from collections import deque
    >>> from types import SimpleNamespace
    >>> from streambatch.executor.contract import TaskStage
    >>> up = StageState(0, TaskStage("Decode"), 1)
    >>> down = StageState(1, TaskStage("Model", upstream=(0,)), None)
    >>> down.next_seq, down.bytes_in = 4, 4 * 2**20
    >>> down.inputs[0] = deque(SimpleNamespace(nbytes=2**20, memory_bytes=2**20) for _ in range(3))
    >>> pools = lambda st: (1.0, "cpu" if st is up else "actors-1")
    >>> holds([up, down], up, pools, "actors-1"), holds([up, down], up, pools, "cpu")
    (True, False)
    """
    if not downstream_has_enough(states, st, slots_of, budget):
        return False
    pool = slots_of(st)[1]
    return busiest != pool or slots_of(states[st.downstream])[1] == pool  # type: ignore[index]


def held_stages(states: list[StageState], slots_of: Callable) -> set[int]:
    """Stages whose running tasks should pause before their next output block: the
    stage they feed has enough input waiting (:func:`downstream_has_enough`), so
    another block would only wait in memory. A task is the unit the executor
    starts, but one read task may make gigabytes (a large file decoded): the rule
    that holds a stage's next task has to reach inside the tasks already running,
    or memory grows with the size of a task instead of with the pipeline's depth.
    A backend that can pause a task between blocks (the local backend's threads)
    applies it. Only a consumer that is running tasks holds its producer: it will
    take the waiting input without help, whereas one that waits for a slot may be
    waiting for the very slots the paused tasks hold (a paused task keeps its CPU
    allocation), so its producers run on.

    >>> from collections import deque
    >>> from types import SimpleNamespace
    >>> from streambatch.executor.contract import TaskStage
    >>> up = StageState(0, TaskStage("Read"), 1)
    >>> down = StageState(1, TaskStage("Model", upstream=(0,)), None)
    >>> down.next_seq, down.bytes_in = 4, 4 * 2**20
    >>> down.inputs[0] = deque(SimpleNamespace(nbytes=2**20, memory_bytes=2**20) for _ in range(2))
    >>> held_stages([up, down], lambda st: (1.0, "cpu"))  # nothing of Read runs
    set()
    >>> up.running[1] = SimpleNamespace(actor_id=None, inputs=[])
    >>> held_stages([up, down], lambda st: (1.0, "cpu"))  # Model runs nothing: Read goes on
    set()
    >>> down.running[2] = SimpleNamespace(actor_id=None, inputs=[])
    >>> held_stages([up, down], lambda st: (1.0, "cpu")), held_stages([up, down], lambda st: (2.0, "cpu"))
    ({0}, set())
    """
    return {st.index for st in states
            if st.running and not st.finished and st.downstream is not None
            and states[st.downstream].running and downstream_has_enough(states, st, slots_of)}
