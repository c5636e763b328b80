"""The executor's bookkeeping for one stage: queues, running tasks, reorder buffer."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from streambatch.executor import clock
from streambatch.executor.contract import Stage, TaskStage, as_task_stage
from streambatch.executor.partition import Partition
from streambatch.executor.resources import Allocation
from streambatch.executor.stats import StageStats

WORKING_SAMPLES = 4  # a stage's working memory: the largest of its last 4 measured tasks
# Working memory of a task before its stage's first measurement, as a multiple of its
# expected output. Measured here: a parquet row group read, mapped and written worked with
# ~6.5x the group's estimated size (decoder buffers, allocator slack); S1's read task with
# 2x. Erring high only runs a stage's first task alone until it is measured.
UNMEASURED_FACTOR = 6
FIRST_BLOCK_WAIT_S = 0.25  # the longest another task of such a stage waits for it to
# show its growth (:meth:`StageState.first_block_due`): short tasks measure well within it


@dataclass
class RunningTask:
    """A task in flight: its stage, order number, inputs, and outputs so far."""

    task_id: int
    stage_index: int
    seq: int
    inputs: list[Partition]
    description: str
    est_bytes: int
    produced_bytes: int = 0
    outputs: int = 0
    rows_out: int = 0
    alloc: Allocation | None = None
    actor_id: int | None = None
    read_index: int | None = None
    key: str = ""
    origins: frozenset = frozenset()
    attempts: int = 1
    attempt_outputs: int = 0
    dead: list = field(default_factory=list)
    submitted_at: float = field(default_factory=clock.now)
    working: int = 0  # working memory charged to it while it runs (measured per stage)
    sizes: dict | None = None  # Task.target_bytes/block_rows, chosen at its first launch:
    # every attempt (and a recomputation of a lost output) cuts its output the same way


@dataclass
class StageState:
    """Queues and counters of one stage while a plan runs."""

    index: int
    stage: Stage
    downstream: int | None
    inputs: dict[int, deque] = field(default_factory=dict)
    pending_reads: deque = field(default_factory=deque)
    retries: deque = field(default_factory=deque)
    outputs: deque = field(default_factory=deque)
    running: dict[int, RunningTask] = field(default_factory=dict)
    upstream_finished: dict[int, bool] = field(default_factory=dict)
    finished: bool = False
    cancelled: bool = False
    next_seq: int = 0
    release_seq: int = 0
    rows_numbered: int = 0  # a numbered stage: rows handed to it so far
    reorder: dict[int, list] = field(default_factory=dict)
    done_seqs: set = field(default_factory=set)
    bytes_in: int = 0  # input bytes of the tasks started
    done_in: int = 0  # ... and of those finished, with what they made
    done_out: int = 0
    remaining: int | None = None  # a limit stage's rows still to pass (None: no limit)
    stats: StageStats = None  # type: ignore[assignment]
    _bp_since: float | None = None
    working: deque = field(default_factory=lambda: deque(maxlen=WORKING_SAMPLES))
    warmup_working: deque = field(default_factory=lambda: deque(maxlen=WORKING_SAMPLES))
    so_far: dict = field(default_factory=dict)  # task id -> (its first block's measure, warmup)

    def __post_init__(self) -> None:
        self.stats = StageStats(self.stage.name)
        for up in self.stage.upstream:
            self.inputs[up] = deque()
            self.upstream_finished[up] = False

    @property
    def task_stage(self) -> TaskStage:
        """The stage as a :class:`TaskStage`, for code that runs only for a stage of tasks
        (a source, an actor stage, one whose ``runs_tasks`` is true); a TypeError for any
        other kind.

        >>> StageState(0, TaskStage("Read"), None).task_stage.name
        'Read'
        """
        return as_task_stage(self.stage)

    @property
    def limit_reached(self) -> bool:
        """True once a limit stage has passed all the rows it keeps."""
        return self.remaining is not None and self.remaining <= 0

    @property
    def all_upstream_finished(self) -> bool:
        """True when no more input will arrive."""
        return all(self.upstream_finished.values())

    def queued_inputs(self) -> int:
        """Number of partitions waiting as input."""
        return sum(len(q) for q in self.inputs.values())

    def buffered_bytes(self) -> int:
        """Bytes held in this stage's queues and reorder buffer."""
        queued = self.queued_bytes()
        held = sum(p.memory_bytes for t in self.running.values() for p in t.inputs)
        reordered = sum(p.memory_bytes for ps in self.reorder.values() for p in ps)
        return queued + held + reordered + sum(p.memory_bytes for p in self.outputs)

    def output_bytes(self) -> int:
        """Bytes this stage produced that wait for its consumer."""
        return sum(p.nbytes for p in self.outputs)

    def start_backpressure(self, reason: str) -> None:
        """The stage has work but may not start it; count the time until it can."""
        if self._bp_since is None:
            self._bp_since = clock.now()
        self.stats.backpressure_reason = reason

    def end_backpressure(self) -> None:
        """The stage started a task: close the backpressure interval, if any."""
        if self._bp_since is not None:
            self.stats.backpressure_time_s += clock.now() - self._bp_since
            self._bp_since = None

    def growth(self) -> float:
        """Output bytes per input byte: of the finished tasks; before one finished, per
        row of the output so far over per row of the input (a task streams its first
        block out long before it ends); 1.0 before any output.

        Counting the input of running tasks against the output of finished ones would
        make a stage with long tasks look as if it shrank its input.

        >>> st = StageState(1, TaskStage("Grow", upstream=(0,)), None)
        >>> st.bytes_in, st.stats.rows_in = 100, 10          # a task of 10 rows started
        >>> st.stats.bytes_out, st.stats.rows_out = 80, 2     # its first block: 40 a row
        >>> st.growth()
        4.0
        >>> st.task_finished(100, 350, 1.0); st.growth()
        3.5
        """
        if self.done_in > 0:
            return self.done_out / self.done_in
        if self.bytes_in > 0 and self.stats.rows_in and self.stats.rows_out:
            return (self.stats.bytes_out / self.stats.rows_out) / \
                (self.bytes_in / self.stats.rows_in)
        return 1.0

    def output_seen(self, rows: int, nbytes: int, peak_bytes: int = 0,
                    warmup: bool = False, task_id: int | None = None) -> None:
        """Count an output block of task ``task_id``; ``peak_bytes``: the working memory
        the task used so far, when the backend measured it (the first block of a long task
        tells it long before the task ends, and until then each task is charged
        ``UNMEASURED_FACTOR`` x its output). Such a measure stands in until the task's
        own measure at its end (it may count blocks the task made and has not handed
        out yet, which are its output); ``warmup``: see :meth:`measured_working`.

        >>> st = StageState(1, TaskStage("M", upstream=(0,)), None)
        >>> st.running[7] = RunningTask(7, 1, 0, [], "partition 0", 100, working=600)
        >>> st.output_seen(1, 10, peak_bytes=900, task_id=7); st.working_for(100)
        900
        >>> del st.running[7]
        >>> st.measured_working(300, task_id=7); st.working_for(100)
        300
        """
        unknown = not self.stats.rows_out and not self.stats.tasks
        self.stats.rows_out += rows
        self.stats.bytes_out += nbytes
        if peak_bytes and task_id is not None:
            self.so_far[task_id] = (peak_bytes, warmup)
            self._charge_running()
        if unknown and not self.stage.is_source:  # the growth is known now: what the
            growth = self.growth()  # running tasks reserve for their output follows
            for task in self.running.values():
                task.est_bytes = int(sum(p.nbytes for p in task.inputs) * growth)

    def measured_working(self, peak_bytes: int, warmup: bool = False,
                         task_id: int | None = None) -> None:
        """A task's working memory was measured (0: it was not): the stage's estimate,
        and what its running tasks are charged, follow (a task started before any
        measurement was charged ``UNMEASURED_FACTOR`` x its output for it).
        ``warmup``: the task was the stage's first in its worker, and the measure also
        holds what the worker keeps once started (a UDF's imports, a thread's allocator
        arena: 11 MiB for a task that works with 25 KiB); such measures count only
        until a later task of the stage is measured.

        >>> st = StageState(1, TaskStage("M", upstream=(0,)), None)
        >>> st.running[1] = RunningTask(1, 1, 0, [], "partition 0", 100, working=600)
        >>> st.measured_working(400, warmup=True); st.running[1].working
        400
        >>> st.measured_working(40); st.running[1].working, st.working_for(100)
        (40, 40)
        """
        self.so_far.pop(task_id, None)
        if not peak_bytes:
            return
        (self.warmup_working if warmup else self.working).append(peak_bytes)
        self._charge_running()

    def _charge_running(self) -> None:
        """Running tasks are charged at most the stage's measured estimate."""
        estimate = self.working_for(0)
        for task in self.running.values():
            task.working = min(task.working, estimate)

    def task_finished(self, bytes_in: int, bytes_out: int, seconds: float) -> None:
        """Count a finished task: its input and output bytes and its run time. A source's
        first finished task tells what its reads make: the reads running since before
        reserve at least that much for their output (each was admitted on its read's own
        estimate, which a fused map can grow 100,000x: 8 bytes for a range row made
        1 MiB, and the slots that started late made output the budget had not kept).

        >>> st = StageState(0, TaskStage("Read->Map", read_tasks_fn=list), None)
        >>> st.running[2] = RunningTask(2, 0, 1, [], "partition 1", 8, read_index=1)
        >>> st.task_finished(0, 1 << 20, 0.1); st.running[2].est_bytes
        1048576
        """
        self.done_in += bytes_in
        self.done_out += bytes_out
        self.stats.tasks += 1
        self.stats.task_time_s += seconds
        self.stats.mark_end()
        if self.stage.is_source and self.stats.tasks == 1:
            for task in self.running.values():
                task.est_bytes = max(task.est_bytes, bytes_out)

    def expected_output(self, est_bytes: int) -> int:
        """``est_bytes`` (a task's input x the measured growth), or ``UNMEASURED_FACTOR``
        times it while a task of the stage runs and none has made anything yet: its growth
        is unknown (a stage that grows its input 16x, its tasks admitted as if it made
        what it takes, went over the budget), and the next tasks start only where the
        budget has room for that much. The first task is admitted as estimated (it measures).

        >>> st = StageState(1, TaskStage("Grow", upstream=(0,)), None)
        >>> st.expected_output(100)
        100
        >>> st.running[1] = RunningTask(1, 1, 0, [], "partition 0", 100)
        >>> st.expected_output(100)
        600
        """
        unknown = not self.stage.is_source and self.running and not self.stats.tasks \
            and not self.stats.rows_out
        return est_bytes * UNMEASURED_FACTOR if unknown else est_bytes

    def first_block_due(self, now: float, behind_busy_actor: bool = False) -> bool:
        """True while the stage's growth is unknown (a task runs, none made anything)
        and its oldest running task started less than ``FIRST_BLOCK_WAIT_S`` ago: its
        first block, due soon, tells how much a task makes. The executor does not start
        another task of the stage meanwhile once half the budget is in use (a stage that
        grew 18.5x, four tasks admitted at the 6x guess, went to 147% of the budget).
        A task that would queue behind a busy actor (``behind_busy_actor``) waits as
        long as the growth is unknown: it would start only after the first ones, which
        will have shown the growth, but on memory admitted on the guess (three actors of
        an 18.8x stage, two tasks queued behind each, went to 120%).

        >>> st = StageState(1, TaskStage("Grow", upstream=(0,)), None)
        >>> st.first_block_due(5.0)
        False
        >>> st.running[1] = RunningTask(1, 1, 0, [], "partition 0", 100, submitted_at=5.0)
        >>> st.first_block_due(5.1), st.first_block_due(5.0 + FIRST_BLOCK_WAIT_S)
        (True, False)
        >>> st.first_block_due(9.0, behind_busy_actor=True)
        True
        """
        return bool(not self.stage.is_source and self.running and not self.stats.tasks
                    and not self.stats.rows_out) and (behind_busy_actor or (
                        now - min(t.submitted_at for t in self.running.values())
                        < FIRST_BLOCK_WAIT_S))

    def working_for(self, est_bytes: int) -> int:
        """Working memory a task of this stage needs beside its input and output: the
        largest measured over its last tasks; before any was measured, a guess of
        ``UNMEASURED_FACTOR`` x its expected output, so the first tasks of a stage do
        not all start at once under a budget they cannot share. Measures of workers'
        first tasks count while no later task was measured.

        >>> st = StageState(1, TaskStage("M", upstream=(0,)), None)
        >>> st.working_for(100)
        600
        >>> st.measured_working(9000, warmup=True); st.working_for(100)
        9000
        >>> st.measured_working(30); st.measured_working(8000, warmup=True); st.working_for(100)
        30
        """
        for measured in (self.working, self._so_far(warmup=False), self.warmup_working,
                         self._so_far(warmup=True)):
            if measured:
                return max(measured)
        return UNMEASURED_FACTOR * max(0, est_bytes)

    def first_to_measure(self) -> bool:
        """True for the first task of a stage after a source, while none of its tasks
        runs or ran: it measures the stage's growth and working memory, and it consumes
        input already made, so it is admitted on its expected output alone (charged the
        6x guess, S1's GPU stage waited 2 s for 48 MiB of a 96 MiB budget while the
        stage before it stood still); the tasks admitted beside it still see the guess.

        >>> st = StageState(1, TaskStage("M", upstream=(0,)), None)
        >>> st.first_to_measure()
        True
        >>> st.running[1] = RunningTask(1, 1, 0, [], "partition 0", 100)
        >>> st.first_to_measure()
        False
        """
        return not self.stage.is_source and not self.running and not self.stats.tasks \
            and not self.working and not self.warmup_working

    def _so_far(self, warmup: bool) -> list[int]:
        """First-block measures of the running tasks (of workers' first tasks or not)."""
        return [m for task_id, (m, warm) in self.so_far.items()
                if warm == warmup and task_id in self.running]

    def avg_input_per_task(self) -> int | None:
        """Mean input bytes of a started task, if any started."""
        return int(self.bytes_in / self.next_seq) if self.next_seq and self.bytes_in else None

    def queued_bytes(self) -> int:
        """Bytes of input waiting for a task of this stage (in memory: not spilled)."""
        return sum(p.memory_bytes for q in self.inputs.values() for p in q)

    def avg_output_per_task(self) -> int | None:
        """Mean output bytes of a finished task, if any finished: what the finished
        tasks made (the blocks of tasks still running are not theirs: counted in, S1's
        loads of 8 MiB were expected to make 22-26 MiB, and the budget ran 3 at once).

        >>> st = StageState(0, TaskStage("Read", read_tasks_fn=list), None)
        >>> st.task_finished(0, 8, 0.1); st.stats.bytes_out = 8 + 24  # others made 24 so far
        >>> st.avg_output_per_task()
        8
        """
        if not self.stats.tasks:
            return None
        return int(self.done_out / self.stats.tasks)


def release_ordered(st: StageState, preserve_order: bool) -> None:
    """Move finished outputs to the stage's output queue (in task order when asked)."""
    if not preserve_order:
        for seq in list(st.reorder):
            st.outputs.extend(st.reorder.pop(seq))
        return
    while True:
        st.outputs.extend(st.reorder.pop(st.release_seq, []))
        if st.release_seq not in st.done_seqs:
            return
        st.done_seqs.discard(st.release_seq)
        st.release_seq += 1
