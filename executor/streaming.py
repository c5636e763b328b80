"""The streaming executor: one control loop that owns every scheduling decision.

Each task consumes one read task or one bundle of input partitions and streams
its outputs back; the driver moves only metadata and references. Stages run
when they have input, resources and memory-budget room; the stage holding the
fewest buffered output bytes goes first. Source tasks are admitted by the
scheduling policy (adaptive by default); actor stages scale their pools.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

from streambatch.executor import clock
from streambatch.executor import partition as parts_of
from streambatch.executor.accounting import holds, source_view, used_bytes
from streambatch.executor.actor_stages import ActorStages
from streambatch.executor.backends.base import (
    ActorFailed,
    ActorReady,
    Backend,
    Task,
    TaskDeadLetters,
    TaskDone,
    TaskFailed,
    TaskOutput,
)
from streambatch.executor.contract import OutputListener, Stage, TaskStage, as_task_stage
from streambatch.executor.driver_stages import limit_feeders, run_driver_step
from streambatch.executor.errors import (
    BlockLostError,
    NonDeterministicError,
    StageStuckError,
    TooManyErrorsError,
    UnplaceableError,
)
from streambatch.executor.lineage import OriginTracker, describe_origins, task_lineage
from streambatch.executor.liveness import StartedTasks
from streambatch.executor.next_task import describe_read, next_work
from streambatch.executor.nodes import NodeLedger
from streambatch.executor.observe import ExecutionObserver
from streambatch.executor.options import ExecutionOptions
from streambatch.executor.output_sizing import block_size
from streambatch.executor.partition import InMemoryRef, Partition, first_row_of
from streambatch.executor.placement import Placement
from streambatch.executor.policy import MemoryView, make_policy
from streambatch.executor.recovery import LostInputRecovery, recipe_of
from streambatch.executor.snapshots import observe_sources, snapshot
from streambatch.executor.spill import SpilledRef, Spiller
from streambatch.executor.stage_state import RunningTask, StageState, release_ordered
from streambatch.executor.stats import DatasetStats
from streambatch.executor.task_failures import RetryBackoff, should_retry, to_error


class StreamingExecutor:
    """Runs physical stages (in topological order, last one is the output) on a backend.

    >>> from streambatch.executor.backends.local import LocalBackend
    >>> from streambatch.executor.contract import OutputListener, Stage, TaskStage
    >>> import pyarrow as pa
    >>> src = TaskStage("Read", read_tasks_fn=lambda: [lambda: iter([pa.table({"x": [1, 2]})])])
    >>> ex = StreamingExecutor([src], LocalBackend(num_cpus=1), ExecutionOptions(num_cpus=1))
    >>> [p.get()["x"].to_pylist() for p in ex.run()]
    [[1, 2]]
    """

    def __init__(self, stages: list[Stage], backend: Backend,
                 options: ExecutionOptions, observers: Sequence[ExecutionObserver] = (),
                 listener: OutputListener | None = None, skip_reads: set | None = None) -> None:
        self.stages, self.backend, self.options = stages, backend, options
        self.listener = listener or OutputListener()
        self.skip_reads = set(skip_reads or ())
        self.origins = OriginTracker()
        self._adopted = 0
        self.dead_letters: list[dict] = []
        self.observers = list(observers)
        self.policy = make_policy(options.scheduler)
        self.budget = options.resolved_memory_budget()
        self.target_bytes = options.partition_bytes()
        self.ledger = NodeLedger(backend.nodes())
        self.stats = DatasetStats(memory_budget=self.budget)
        self._ids = itertools.count()
        self._tasks: dict[int, RunningTask] = {}
        self._orphans: set[int] = set()
        self.actors = ActorStages(backend, self.ledger, options.actor_queue_depth,
                                  options.actor_idle_timeout_s, self.observers)
        self.pools = self.actors.pools
        self.placement = Placement(self.ledger, self.pools, self._tasks, self.budget)
        self.spiller, self.backoff = Spiller(), RetryBackoff()
        self.recovery = LostInputRecovery(backend, stages, self.pools, self._ids,
                                          options.max_task_retries,
                                          lambda i: self.states[i].stats,
                                          lambda i, a: self.actors.actor_died(self.states[i], a),
                                          lambda i: self.states[i].finished)
        self.started = StartedTasks(getattr(backend, "reports_task_starts", False))
        self._limit_feeders = limit_feeders(stages)
        self.listener.attach(self.identify)

    def keeps_order(self, st: StageState) -> bool:
        """Whether ``st`` hands its output on in input order (asked, or a limit reads it)."""
        return self.options.preserve_order or st.index in self._limit_feeders

    def identify(self, origin: tuple[int, int]) -> list[list]:
        """An origin named by what its read task reads: ``[[source, item, start, stop], ...]``
        (stable across layouts; see :class:`~streambatch.connectors.datasource.Piece`)."""
        ordinal, read_index = origin
        read_tasks = as_task_stage([s for s in self.stages if s.is_source][ordinal]) \
            .resolved_read_tasks()
        pieces = getattr(read_tasks[read_index], "pieces", None)
        if not pieces:
            return [[ordinal, f"read {read_index} of {len(read_tasks)}", 0, None]]
        return [p.to_json(ordinal) for p in pieces]

    def run(self) -> Iterator[Partition]:
        """Execute, yielding output partitions as they are ready (blocks in memory).

        Whatever ends the run early (an error, in the start too; ``close()``; Ctrl-C;
        the consumer's :class:`~streambatch.executor.cancel.CancelScope` being
        cancelled, which raises JobCancelled here) stops the backend's workers at once
        and frees its processes and blocks."""
        from streambatch.executor.cancel import on_cancel

        ok = False
        forget = on_cancel(self.backend.cancel)
        try:
            self._start()
            yield from self._loop()
            ok = True
        finally:
            forget()
            self._finish(ok)

    def _start(self) -> None:
        self._t0 = clock.now()
        self._backend_started = self._observers_started = False  # what _finish undoes
        self.states = []
        downstream = {up: i for i, s in enumerate(self.stages) for up in s.upstream}
        self.states = [StageState(i, s, downstream.get(i)) for i, s in enumerate(self.stages)]
        self.source_ordinal = {st.index: k for k, st in
                               enumerate(s for s in self.states if s.stage.is_source)}
        self._source_stage = {k: index for index, k in self.source_ordinal.items()}
        for st in self.states:
            self._check_placeable(st.stage)
            stage = st.stage
            if isinstance(stage, TaskStage) and stage.read_tasks_fn is not None:  # a source
                if stage.read_tasks is None:
                    stage.read_tasks = stage.read_tasks_fn()
                ordinal = self.source_ordinal[st.index]
                st.pending_reads.extend(r for r in range(len(stage.read_tasks))
                                        if (ordinal, r) not in self.skip_reads)
        self._backend_started = True  # set first: a start that fails part-way is undone too
        self.backend.start(self.stages, self.target_bytes)
        for obs in self.observers:
            obs.on_start([s.name for s in self.stages])
        self._observers_started = True
        self.actors.start(self.states)
        self._last_progress = clock.now()
        self._busiest: str | None = None  # the pool of slots bounding the pipeline ...
        self._bottleneck: str | None = None  # ... and while over half the budget is used
        self._last_tick = 0.0
        self._last_resources = clock.now()

    def _check_placeable(self, stage: Stage) -> None:
        if not isinstance(stage, TaskStage):
            return
        missing = self.ledger.fits_ever(stage.resources)
        if missing:
            raise UnplaceableError(stage.name, missing)

    def _finish(self, ok: bool) -> None:
        """Stop the backend (at once, killing its workers, unless the run completed) and
        record the stats; also after a start that failed part-way."""
        try:
            if self._backend_started:
                if not ok:
                    self.backend.cancel()
                self.backend.shutdown()
        finally:
            self.spiller.close()
            wall = clock.now() - self._t0
            self.stats.finish([st.stats for st in self.states], wall, self.backend.worker_notes())
            if self._observers_started:
                for obs in self.observers:
                    obs.on_finish(self._snapshots(), wall, ok)

    def _loop(self) -> Iterator[Partition]:
        final = self.states[-1]
        idle = False
        while True:
            self._handle(self.backend.poll(0.05 if idle else 0))
            self._advance()
            self._note_peak()  # (the last stage's blocks are counted before they go out)
            while final.outputs:
                part = self._hand_out(final.outputs.popleft())
                if part is not None:
                    yield part
            if final.finished:
                return
            self.actors.scale(self.states)
            self.recovery.submit_waiting()
            idle = not self._dispatch()
            self._tick()
            if idle:
                self._check_stuck()

    # ---- events -------------------------------------------------------
    def _handle(self, events: list) -> None:
        for event in events:
            self._last_progress = clock.now()
            self.started.saw(event)
            if self.recovery.owns(event):  # a re-run that recomputes a lost block
                self.recovery.on_event(event)
            elif isinstance(event, TaskOutput):
                self._on_output(event)
            elif isinstance(event, TaskDone):
                self._on_done(event)
            elif isinstance(event, TaskFailed):
                self._on_failed(event)
            elif isinstance(event, ActorFailed):
                self._on_actor_failed(event)
            elif isinstance(event, ActorReady):
                self.actors.ready(event.actor_id)
            elif isinstance(event, TaskDeadLetters):
                task = self._tasks.get(event.task_id)
                if task is not None:
                    task.dead = event.rows

    def _on_output(self, event: TaskOutput) -> None:
        task = self._tasks.get(event.task_id)
        if task is None or event.task_id in self._orphans:
            self.backend.release(event.ref)
            return
        st = self.states[task.stage_index]
        task.attempt_outputs += 1
        if task.attempt_outputs <= task.outputs:  # a retry re-made an output already passed on
            self.backend.release(event.ref)
            return
        part = Partition(event.ref, event.rows, event.nbytes, st.index,
                         tuple(p.pid for p in task.inputs) or (("read", task.description),),
                         key=f"{task.key}o{task.outputs}", origins=task.origins,
                         recipe=recipe_of(task, task.outputs), index=task.outputs,
                         node=self.placement.node_of(task),
                         row_offset=parts_of.output_offset(task, st.task_stage.changes_row_count))
        if st.downstream is None:
            self.listener.on_final_output(part, task.origins)
        else:
            self.origins.add(task.origins)
        task.produced_bytes += event.nbytes
        task.outputs += 1
        task.rows_out += event.rows
        st.output_seen(event.rows, event.nbytes, event.peak_bytes, event.warmup, task.task_id)
        st.reorder.setdefault(task.seq, []).append(part)
        release_ordered(st, self.keeps_order(st))

    def _on_done(self, event: TaskDone) -> None:
        task = self._end_task(event.task_id)
        if task is None:
            return
        st = self.states[task.stage_index]
        st.measured_working(event.peak_bytes, event.warmup, task.task_id)  # beside its input
        for obs in self.observers:
            obs.on_task_end(st.index, task.task_id, event.seconds, task.rows_out, True)
        if event.task_id in self._orphans:
            self._orphans.discard(event.task_id)
            return
        if task.attempt_outputs < task.outputs:
            raise NonDeterministicError(st.stage.name, task.description, task.outputs,
                                        task.attempt_outputs)
        self._take_dead_letters(st, task)
        st.task_finished(sum(p.nbytes for p in task.inputs), task.produced_bytes, event.seconds)
        st.done_seqs.add(task.seq)
        release_ordered(st, self.keeps_order(st))
        self._settle(self.origins.remove(task.origins))
        for part in task.inputs:
            self._settle(self.origins.remove(part.origins))
        if st.stage.is_source:
            self._settle(self.origins.read_done(next(iter(task.origins))))

    def _take_dead_letters(self, st: StageState, task: RunningTask) -> None:
        if not task.dead:
            return
        self.dead_letters.extend(task.dead)
        self.listener.on_dead_letters(task.dead, task.origins)
        st.stats.errored_rows += len(task.dead)
        limit = self.options.max_errored_rows
        if limit is not None and len(self.dead_letters) > limit:
            raise TooManyErrorsError(st.stage.name, len(self.dead_letters), limit,
                                     self.dead_letters[-1]["error"])

    def _settle(self, origins: list) -> None:
        for origin in origins:
            self.listener.on_settled(origin)

    def _end_task(self, task_id: int, keep_inputs: bool = False) -> RunningTask | None:
        task = self._tasks.pop(task_id, None)
        if task is None:
            return None
        st = self.states[task.stage_index]
        st.running.pop(task_id, None)
        if task.alloc is not None and not task.alloc.borrowed:
            self.ledger.release(task.alloc)
        task.alloc = None
        if task.actor_id is not None and st.index in self.pools:
            self.pools[st.index].task_ended(task.actor_id)
        if not keep_inputs:
            for part in task.inputs:
                self._free(part.ref)
        return task

    def _on_failed(self, event: TaskFailed) -> None:
        task = self._tasks.get(event.task_id)
        if task is None or event.task_id in self._orphans:
            self._end_task(event.task_id)
            return
        for obs in self.observers:
            obs.on_task_end(task.stage_index, task.task_id, 0.0, task.rows_out, False)
        st = self.states[task.stage_index]
        if event.failure.kind == "died" and task.actor_id is not None:
            self.actors.actor_died(st, task.actor_id)
        if not should_retry(event.failure, task.attempts, st.stage, self.options.max_task_retries):
            raise to_error(event.failure, st.stage.name, task.description)
        self._end_task(event.task_id, keep_inputs=True)
        task.attempts += 1
        st.stats.retries += 1
        if event.failure.kind == "lost":  # recompute its inputs from lineage first
            self.recovery.recover_inputs(task, st.stage.name, st.retries.append)
        else:  # a user error's retry waits out its backoff; the loop goes on meanwhile
            self.backoff.later(st, task, event.failure.kind)

    def _on_actor_failed(self, event: ActorFailed) -> None:
        for index, pool in self.pools.items():
            if event.actor_id in pool.actors:
                if event.failure.kind == "died":
                    self.actors.actor_died(self.states[index], event.actor_id)
                    return
                raise to_error(event.failure, self.stages[index].name,
                               f"actor {event.actor_id} (while starting)")

    # ---- moving partitions and driver stages --------------------------
    def _advance(self) -> None:
        for st in self.states:
            self._route(st)
            run_driver_step(st, self)
            self._route(st)
            self._update_finished(st)

    def _route(self, st: StageState) -> None:
        if st.downstream is None:
            return
        down = self.states[st.downstream]
        target = down.inputs[st.index]
        numbered = getattr(down.stage, "numbered", False)
        while st.outputs:
            part = st.outputs.popleft()
            if numbered:
                part.first_row, down.rows_numbered = down.rows_numbered, down.rows_numbered + part.rows
            target.append(part)

    def adopt(self, new: Partition, parts: list[Partition]) -> Partition:
        """A driver stage made ``new`` out of ``parts``: it inherits their lineage."""
        new.origins = frozenset().union(*(p.origins for p in parts))
        new.row_offset = None  # (re-cut by the driver: its place in its read is not kept)
        self._adopted += 1
        new.key = f"{parts[0].key}d{new.stage}n{self._adopted}"
        if self.states[new.stage].downstream is None:
            self.listener.on_final_output(new, new.origins)
        else:
            self.origins.add(new.origins)
        return new

    def _update_finished(self, st: StageState) -> None:
        if st.finished:
            self._propagate_finished(st)
            return
        idle = not st.running and not st.pending_reads and not st.reorder and not st.retries \
            and not self.recovery.busy(st.index) and not self.backoff.holds(st.index)
        if st.limit_reached:
            idle = True
        elif idle:
            idle = st.all_upstream_finished and st.queued_inputs() == 0
        if idle and (st.cancelled or not st.outputs or st.downstream is None):
            st.finished = True
            self._propagate_finished(st)

    def _propagate_finished(self, st: StageState) -> None:
        self.actors.release(st)
        if st.downstream is not None and not st.outputs:
            self.states[st.downstream].upstream_finished[st.index] = True

    def cancel_upstream(self, st: StageState) -> None:
        st.finished = True
        for up in st.stage.upstream:
            self._cancel(self.states[up])

    def _cancel(self, st: StageState) -> None:
        st.cancelled = st.finished = True
        st.pending_reads.clear()
        for queue in st.inputs.values():
            while queue:
                self.release(queue.popleft())
        for part in st.outputs:
            self.release(part)
        st.outputs.clear()
        for parts in st.reorder.values():
            for part in parts:
                self.release(part)
        st.reorder.clear()
        self._orphans.update(st.running)
        for up in st.stage.upstream:
            self._cancel(self.states[up])

    def release(self, part: Partition, keep_block: bool = False) -> None:
        """The partition is consumed; ``keep_block``: its block stays (slices of it live on)."""
        if not keep_block:
            self._free(part.ref)
        self._settle(self.origins.remove(part.origins))

    def _free(self, ref) -> None:
        """Give a block's memory (or its spill file) back."""
        if isinstance(ref, SpilledRef):
            ref.delete()
        else:
            self.backend.release(ref)

    def _hand_out(self, part: Partition) -> Partition | None:
        try:
            table = part.get()
        except BlockLostError:  # its node left before the driver fetched it: recompute
            st = self.states[part.stage]
            self.recovery.recover_partition(part, st.stage.name, st.outputs.append)
            return None
        self._free(part.ref)
        return Partition(InMemoryRef(table), part.rows, part.nbytes, part.stage, part.made_from,
                         key=part.key, origins=part.origins)

    # ---- dispatch -----------------------------------------------------
    def _dispatch(self) -> bool:
        dispatched = self.backoff.release() > 0  # retries whose backoff is over
        order = sorted((st for st in self.states if st.stage.runs_tasks and not st.finished),
                       key=lambda st: (st.output_bytes(), -st.index))
        self._bottleneck = observe_sources(self.states, self.policy, self.target_bytes,
                                           self._slots_of)
        self._busiest = self._bottleneck
        if self._busiest and 2 * used_bytes(self.states, self._tasks) > self.budget:  # run
            # ahead: half the budget at most (summed only when the rule could apply)
            self._busiest = None
        for st in order:
            while self._try_start(st):
                dispatched = True
        self._note_peak()
        return dispatched

    def _slots_of(self, st: StageState) -> tuple[float, str]:
        """Tasks a stage may run at once, and the resource pool it shares."""
        if st.index in self.pools:
            return float(max(1, self.pools[st.index].high)), f"actors-{st.index}"
        stage = st.task_stage  # (asked only of stages that run tasks)
        cpus = stage.resources.num_cpus
        slots = self.ledger.num_cpus / cpus if cpus > 0 else float(len(st.running) or 1)
        if stage.concurrency:
            slots = min(slots, stage.concurrency[1])
        return max(1.0, slots), "cpu" if cpus > 0 else f"free-{st.index}"

    def _try_start(self, st: StageState) -> bool:
        concurrency = st.task_stage.concurrency  # (_dispatch starts stages of tasks only)
        if concurrency and st.index not in self.pools and len(st.running) >= concurrency[1]:
            return False
        work = next_work(st, self.target_bytes, self._slots_of(st)[0])
        if work is None:
            return False
        read_index, inputs, est = work
        if not st.retries and holds(self.states, st, self._slots_of, self._busiest, self.budget):
            st.start_backpressure("the next stage has enough input queued")
            return False
        if not self._admitted(st, inputs, est):
            st.start_backpressure(self.policy.blocked_by)
            return False
        return self._place(st, read_index, inputs, est)

    def _admitted(self, st: StageState, inputs: list[Partition], est: int) -> bool:
        working, est = st.working_for(est), st.expected_output(est)
        if st.first_block_due(clock.now(), self.actors.all_busy(st.index)) and \
                2 * (used_bytes(self.states, self._tasks) + working + est) > self.budget:
            self.policy.blocked_by = "memory budget (the stage's first block shows its growth)"
            return False  # (half the budget in use: another task may wait for its growth)
        if st.first_to_measure():  # (what it reserves once running stays the guess)
            working = est
        if st.stage.is_source:
            view = source_view(self.states, self._tasks, self.budget, self._slots_of, working,
                               self._bottleneck)
            return self.policy.admit_source(view, est, clock.now())
        view = MemoryView(used_bytes(self.states, self._tasks), self.budget, bool(self._tasks),
                          working_bytes=working)
        # inputs read from disk (spilled) free no memory when the task consumes them
        return self.policy.admit(view, est - sum(p.memory_bytes for p in inputs))

    def _place(self, st: StageState, read_index, inputs, est: int) -> bool:
        where = self.placement.place(self.states, st, inputs, st.expected_output(est))
        if where is None:
            return False
        self._start_task(st, read_index, inputs, est, *where)
        if where[1] is not None:
            self.pools[st.index].task_started(where[1])
        return True

    def _start_task(self, st: StageState, read_index, inputs, est: int, alloc,
                    actor_id) -> None:
        if st.retries:
            self._resubmit(st, st.retries.popleft(), alloc, actor_id)
            return
        if st.stage.is_source:
            st.pending_reads.popleft()
            desc = describe_read(st.task_stage.resolved_read_tasks()[read_index], read_index)
            self.policy.source_started(est)
        else:
            queue = st.inputs[st.stage.upstream[0]]
            for _ in inputs:
                queue.popleft()
        key, origins = task_lineage(st, self.source_ordinal.get(st.index), read_index, inputs)
        if not st.stage.is_source:
            desc = describe_origins(origins, self.stages, self._source_stage) \
                or f"partition {st.next_seq}"
        self.origins.add(origins)
        task = RunningTask(0, st.index, st.next_seq, inputs, desc, st.expected_output(est),
                           read_index=read_index, key=key, origins=origins,
                           working=st.working_for(est))
        st.next_seq += 1
        st.bytes_in += sum(p.nbytes for p in inputs)
        st.stats.rows_in += sum(p.rows for p in inputs)
        st.stats.mark_start()
        st.end_backpressure()
        self._launch(st, task, alloc, actor_id, desc)

    def _resubmit(self, st: StageState, task: RunningTask, alloc, actor_id) -> None:
        task.attempt_outputs = 0
        self._launch(st, task, alloc, actor_id, f"{task.description} (attempt {task.attempts})")

    def _launch(self, st: StageState, task: RunningTask, alloc, actor_id, label: str) -> None:
        """Register a task (first run or retry), tell the observers, hand it to the backend."""
        task.task_id, task.alloc, task.actor_id = next(self._ids), alloc, actor_id
        st.running[task.task_id] = task
        self._tasks[task.task_id] = task
        worker = f"actor {actor_id}" if actor_id is not None else st.task_stage.worker
        for obs in self.observers:
            obs.on_task_start(st.index, st.stage.name, task.task_id, label, worker)
        if task.sizes is None:  # chosen once: a retry cuts its output as the first attempt
            task.sizes = block_size(self.states, st, self.target_bytes, task, self._slots_of) \
                if self.backend.sized_blocks and not getattr(self.listener, "stable_blocks", False) \
                else {}
        self.backend.submit(Task(task.task_id, st.index, task.read_index,
                                 [p.ref for p in task.inputs], task.description, actor_id,
                                 task.key, first_row_of(task.inputs),
                                 node=self.placement.node_of(task), **task.sizes,
                                 row_base=0 if task.read_index is not None
                                 else parts_of.input_offset(task.inputs, task.origins)))

    def _note_peak(self) -> None:
        actual = sum(st.buffered_bytes() for st in self.states)
        self.stats.peak_buffered_bytes = max(self.stats.peak_buffered_bytes, actual)
        self.placement.note_peaks(self.states)

    # ---- observation and liveness -------------------------------------
    def _snapshots(self) -> list:
        return [snapshot(st, self.actors.count(st.index)) for st in self.states]

    def _follow_cluster(self, now: float) -> None:
        """Every few seconds, pick up resources that joined or left (cluster backends)."""
        if now - self._last_resources < 2.0:
            return
        self._last_resources = now
        self.ledger.resize(*self.backend.total_resources())

    def _tick(self) -> None:
        now = clock.now()
        self._follow_cluster(now)
        if not self.observers or now - self._last_tick < 0.2:
            return
        self._last_tick = now
        snaps = self._snapshots()
        for obs in self.observers:
            obs.on_tick(snaps, now - self._t0)

    def _check_stuck(self) -> None:
        waited = clock.now() - self._last_progress
        if waited <= self.options.no_progress_timeout_s:
            return
        running = self.started.blamable(self._tasks)  # not tasks still queued in a cluster
        if running:
            task = min(running, key=lambda t: t.task_id)
            stage = self.stages[task.stage_index].name
            raise StageStuckError(stage, waited, f"{len(running)} task(s) running, "
                                                 f"oldest on {task.description}")
        waiting = self.recovery.waiting_for_actors()
        if waiting:
            raise StageStuckError(waiting[0], waited, "lost partitions wait to be recomputed "
                                                      "on an actor the pool cannot place (did "
                                                      "the cluster lose the resources it needs?)")

