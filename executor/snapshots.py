"""Views of the executor's state for observers and for the adaptive policy."""

from __future__ import annotations

from streambatch.executor import clock
from streambatch.executor.contract import TaskStage
from streambatch.executor.next_task import peek_bundle
from streambatch.executor.observe import StageSnapshot
from streambatch.executor.policy import StageRate, busiest_pool
from streambatch.executor.stage_state import StageState


def snapshot(st: StageState, actors: int) -> StageSnapshot:
    """A stage's counters now.

    >>> from streambatch.executor.contract import TaskStage
    >>> snapshot(StageState(0, TaskStage("Read"), None), 0).name
    'Read'
    """
    queued = [p for q in st.inputs.values() for p in q]
    total = None
    stage = st.stage
    if isinstance(stage, TaskStage) and stage.is_source and stage.read_tasks:
        rows = [getattr(t, "estimated_rows", None) for t in stage.read_tasks]
        known = [r for r in rows if r is not None]
        total = sum(known) if len(known) == len(rows) else None
    return StageSnapshot(st.index, st.stage.name, st.stats.rows_in, st.stats.rows_out,
                         st.stats.tasks, len(st.running), len(queued),
                         sum(p.nbytes for p in queued), actors, st.finished,
                         st.stats.backpressure_time_s, st.stats.task_time_s, total)


def source_rates(states: list[StageState], source: StageState, default_bytes: int,
                 slots_of=None, now: float | None = None) -> tuple[list[StageRate], float]:
    """Per-stage rates for the adaptive policy, and the mean source partition bytes.

    A stage's tasks per source task comes from bytes (see _tasks_per_source_task);
    ``slots_of(state) -> (slots, pool)`` says how many tasks it may run at once and
    which pool of resources it shares (default: its running tasks, one pool).
    A stage that has finished no task yet (a model actor still loading, a slow
    first batch) counts with the age of its oldest running task, or of its oldest
    waiting input: a lower bound of its task time that grows while it waits, so a
    slow stage slows the source from its start rather than after its first task ends.

    >>> from streambatch.executor.contract import TaskStage
    >>> from streambatch.executor.stage_state import RunningTask
    >>> src, model = StageState(0, TaskStage("Read"), 1), StageState(1, TaskStage("Model"), None)
    >>> model.running[7] = RunningTask(7, 1, 0, [], "partition 0", 0, submitted_at=10.0)
    >>> rates, _ = source_rates([src, model], src, 100, now=13.0)
    >>> [(r.task_time_s, r.tasks_per_source_task) for r in rates]
    [(3.0, 1.0)]
    """
    now = clock.now() if now is None else now
    source_bytes = float(source.avg_output_per_task() or default_bytes)
    rates = []
    for st in states:
        task_time = _mean_task_time(st, now)
        if not st.stage.runs_tasks or task_time is None:
            continue
        slots, pool = slots_of(st) if slots_of else (max(1, len(st.running)), "cpu")
        share = 1.0 if st is source else _tasks_per_source_task(st, states, source, source_bytes)
        rates.append(StageRate(task_time, slots, share, pool))
    return rates, max(1.0, source_bytes)


def _mean_task_time(st: StageState, now: float) -> float | None:
    """Mean task time from finished tasks, else the age of the oldest running task,
    else of the oldest input of a task it could start (an actor pool still starting:
    not input waiting for more to make a batch, which says nothing of the stage's
    speed); None for a stage that has nothing yet."""
    if st.stats.tasks:
        return st.stats.task_time_s / st.stats.tasks
    since = [t.submitted_at for t in st.running.values()] or \
        ([p.created_at for p in peek_bundle(st)] if st.stage.upstream else [])
    return max(0.0, now - min(since)) if since else None


def _tasks_per_source_task(st: StageState, states: list[StageState], source: StageState,
                           source_bytes: float) -> float:
    """How many of this stage's tasks one source partition makes, from bytes: the
    bytes a source partition becomes by this stage (the growth of the stages between)
    over the input bytes of one of its tasks. Counting finished tasks instead would
    under-count a stage that lags behind the source."""
    if not st.next_seq or st.bytes_in <= 0:
        return 1.0
    flow, up = 1.0, st.stage.upstream[0] if st.stage.upstream else None
    while up is not None and states[up] is not source:
        flow *= states[up].growth()
        up = states[up].stage.upstream[0] if states[up].stage.upstream else None
    return source_bytes * flow / (st.bytes_in / st.next_seq)


def observe_sources(states: list, policy, target_bytes: int, slots_of) -> str | None:
    """Tell the admission policy the pipeline's rates as seen from its first source;
    return the pool of slots that bounds the pipeline (:func:`busiest_pool`; None
    while a stage that runs tasks has no time yet)."""
    sources = [st for st in states if st.stage.is_source]
    if not sources:
        return None
    rates, source_bytes = source_rates(states, sources[0], target_bytes, slots_of)
    burst = slots_of(sources[0])[0]
    # (its first output block shows how big a row is: the read's own estimate is kept
    # for the task size until a task finished, and the working memory guess until then)
    measured = any(st.stats.tasks or st.stats.rows_out for st in sources)
    policy.observe(rates, source_bytes, clock.now(), burst_tasks=burst, measured=measured)
    timed = len(rates) == sum(1 for st in states if st.stage.runs_tasks)
    return busiest_pool(rates) if timed else None
