"""The streaming executor: one control loop that owns every scheduling decision.

Each task consumes one read task or one bundle of input partitions and streams
its outputs back; the driver moves only metadata and references. Stages run
when they have input, free slots and memory-budget room; the stage holding the
fewest buffered output bytes goes first.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

from streambatch.executor.backends.base import Backend, Task, TaskDone, TaskFailed, TaskOutput
from streambatch.executor.driver_stages import step_limit, step_repartition, step_union
from streambatch.executor.errors import StageStuckError
from streambatch.executor.failures import to_error
from streambatch.executor.options import ExecutionOptions
from streambatch.executor.partition import InMemoryRef, Partition
from streambatch.executor.policy import BudgetAdmission, MemoryView
from streambatch.executor.stage import PhysicalStage
from streambatch.executor.stage_state import RunningTask, StageState
from streambatch.executor.stats import DatasetStats


class StreamingExecutor:
    """Runs physical stages (in topological order, last one is the output) on a backend.

    >>> from streambatch.executor.backends.local import LocalBackend
    >>> from streambatch.executor.stage import PhysicalStage
    >>> import pyarrow as pa
    >>> src = PhysicalStage("Read", read_tasks_fn=lambda: [lambda: iter([pa.table({"x": [1, 2]})])])
    >>> ex = StreamingExecutor([src], LocalBackend(num_cpus=1), ExecutionOptions())
    >>> [p.get()["x"].to_pylist() for p in ex.run()]
    [[1, 2]]
    """

    def __init__(self, stages: list[PhysicalStage], backend: Backend,
                 options: ExecutionOptions) -> None:
        self.stages, self.backend, self.options = stages, backend, options
        self.policy = BudgetAdmission()
        self.budget = options.resolved_memory_budget()
        self.target_bytes = options.partition_bytes()
        self.stats = DatasetStats(memory_budget=self.budget)
        self._ids = itertools.count()
        self._tasks: dict[int, RunningTask] = {}
        self._orphans: set[int] = set()

    def run(self) -> Iterator[Partition]:
        """Execute, yielding output partitions as they are ready (blocks in memory)."""
        self._start()
        try:
            yield from self._loop()
        finally:
            self._finish()

    def _start(self) -> None:
        self._t0 = time.perf_counter()
        downstream = {up: i for i, s in enumerate(self.stages) for up in s.upstream}
        self.states = [StageState(i, s, downstream.get(i)) for i, s in enumerate(self.stages)]
        for st in self.states:
            if st.stage.is_source:
                if st.stage.read_tasks is None:
                    st.stage.read_tasks = st.stage.read_tasks_fn()
                st.pending_reads.extend(range(len(st.stage.read_tasks)))
        self.backend.start(self.stages, self.target_bytes)
        self._last_progress = time.monotonic()

    def _finish(self) -> None:
        self.backend.shutdown()
        self.stats.finish([st.stats for st in self.states], time.perf_counter() - self._t0)

    def _loop(self) -> Iterator[Partition]:
        final = self.states[-1]
        idle = False
        while True:
            self._handle(self.backend.poll(0.25 if idle else 0))
            self._advance()
            while final.outputs:
                yield self._hand_out(final.outputs.popleft())
            if final.finished:
                return
            idle = not self._dispatch()
            if idle:
                self._check_stuck()

    # ---- events -------------------------------------------------------
    def _handle(self, events: list) -> None:
        for event in events:
            self._last_progress = time.monotonic()
            if isinstance(event, TaskOutput):
                self._on_output(event)
            elif isinstance(event, TaskDone):
                self._on_done(event)
            elif isinstance(event, TaskFailed):
                self._on_failed(event)

    def _on_output(self, event: TaskOutput) -> None:
        task = self._tasks.get(event.task_id)
        if task is None or event.task_id in self._orphans:
            self.backend.release(event.ref)
            return
        st = self.states[task.stage_index]
        part = Partition(event.ref, event.rows, event.nbytes, st.index,
                         tuple(p.pid for p in task.inputs) or (("read", task.description),))
        task.produced_bytes += event.nbytes
        task.outputs += 1
        st.stats.rows_out += event.rows
        st.stats.bytes_out += event.nbytes
        st.reorder.setdefault(task.seq, []).append(part)
        self._release_ordered(st)

    def _on_done(self, event: TaskDone) -> None:
        task = self._tasks.pop(event.task_id, None)
        if task is None:
            return
        st = self.states[task.stage_index]
        st.running.pop(event.task_id, None)
        for part in task.inputs:
            self.backend.release(part.ref)
        if event.task_id in self._orphans:
            self._orphans.discard(event.task_id)
            return
        st.stats.tasks += 1
        st.stats.task_time_s += event.seconds
        st.stats.mark_end()
        st.done_seqs.add(task.seq)
        self._release_ordered(st)

    def _on_failed(self, event: TaskFailed) -> None:
        task = self._tasks.get(event.task_id)
        if task is None or event.task_id in self._orphans:
            self._tasks.pop(event.task_id, None)
            return
        stage = self.stages[task.stage_index]
        raise to_error(event.failure, stage.name, task.description)

    def _release_ordered(self, st: StageState) -> None:
        if not self.options.preserve_order:
            for seq in list(st.reorder):
                st.outputs.extend(st.reorder.pop(seq))
            return
        while True:
            st.outputs.extend(st.reorder.pop(st.release_seq, []))
            if st.release_seq not in st.done_seqs:
                return
            st.done_seqs.discard(st.release_seq)
            st.release_seq += 1

    # ---- moving partitions and driver stages --------------------------
    def _advance(self) -> None:
        for st in self.states:
            self._route(st)
            self._step_driver(st)
            self._route(st)
            self._update_finished(st)

    def _route(self, st: StageState) -> None:
        if st.downstream is None:
            return
        target = self.states[st.downstream].inputs[st.index]
        while st.outputs:
            target.append(st.outputs.popleft())

    def _step_driver(self, st: StageState) -> None:
        kind = st.stage.kind
        if kind == "limit" and not st.finished and step_limit(st, self._release):
            self._cancel_upstream(st)
        elif kind == "union":
            step_union(st, self.options.preserve_order)
        elif kind == "repartition":
            step_repartition(st, self._release)

    def _update_finished(self, st: StageState) -> None:
        if st.finished:
            self._propagate_finished(st)
            return
        idle = not st.running and not st.pending_reads and not st.reorder
        if st.stage.kind == "limit" and st.remaining <= 0:
            idle = True
        elif idle:
            idle = st.all_upstream_finished and st.queued_inputs() == 0
        if idle and (st.cancelled or not st.outputs or st.downstream is None):
            st.finished = True
            self._propagate_finished(st)

    def _propagate_finished(self, st: StageState) -> None:
        if st.downstream is not None and not st.outputs:
            self.states[st.downstream].upstream_finished[st.index] = True

    def _cancel_upstream(self, st: StageState) -> None:
        st.finished = True
        for up in st.stage.upstream:
            self._cancel(self.states[up])

    def _cancel(self, st: StageState) -> None:
        st.cancelled = st.finished = True
        st.pending_reads.clear()
        for queue in st.inputs.values():
            while queue:
                self._release(queue.popleft())
        for part in st.outputs:
            self._release(part)
        st.outputs.clear()
        for parts in st.reorder.values():
            for part in parts:
                self._release(part)
        st.reorder.clear()
        self._orphans.update(st.running)
        for up in st.stage.upstream:
            self._cancel(self.states[up])

    def _release(self, part: Partition) -> None:
        self.backend.release(part.ref)

    def _hand_out(self, part: Partition) -> Partition:
        table = part.get()
        self.backend.release(part.ref)
        return Partition(InMemoryRef(table), part.rows, part.nbytes, part.stage, part.lineage)

    # ---- dispatch -----------------------------------------------------
    def _dispatch(self) -> bool:
        dispatched = False
        order = sorted((st for st in self.states if st.stage.kind == "task" and not st.finished),
                       key=lambda st: (st.output_bytes(), -st.index))
        for st in order:
            while self._free_cpus() >= st.stage.resources.num_cpus or not self._tasks:
                if not self._try_start(st):
                    break
                dispatched = True
        self._note_peak()
        return dispatched

    def _free_cpus(self) -> float:
        used = sum(self.states[t.stage_index].stage.resources.num_cpus for t in self._tasks.values())
        return self.backend.num_cpus - used

    def _try_start(self, st: StageState) -> bool:
        work = self._next_work(st)
        if work is None:
            return False
        read_index, inputs, est = work
        view = MemoryView(self._used_bytes(), self.budget, bool(self._tasks))
        growth = est - sum(p.nbytes for p in inputs)
        if not self.policy.admit(view, growth):
            self._note_backpressure(st)
            return False
        self._start_task(st, read_index, inputs, est)
        return True

    def _next_work(self, st: StageState):
        if st.stage.is_source:
            if not st.pending_reads:
                return None
            index = st.pending_reads[0]
            return index, [], self._read_estimate(st, index)
        bundle = self._peek_bundle(st)
        if not bundle:
            return None
        est = int(sum(p.nbytes for p in bundle) * st.growth())
        return None, bundle, est

    def _read_estimate(self, st: StageState, index: int) -> int:
        avg = st.avg_output_per_task()
        if avg is not None:
            return avg
        task = st.stage.read_tasks[index]
        estimate = getattr(task, "estimated_bytes", None)
        return int(estimate) if estimate else self.target_bytes

    def _peek_bundle(self, st: StageState) -> list[Partition]:
        queue = st.inputs[st.stage.upstream[0]]
        if not queue:
            return []
        want = st.stage.min_rows_per_task
        if not want:
            return [queue[0]]
        bundle, rows = [], 0
        for part in queue:
            bundle.append(part)
            rows += part.rows
            if rows >= want:
                return bundle
        return bundle if st.all_upstream_finished else []

    def _start_task(self, st: StageState, read_index, inputs, est: int) -> None:
        if st.stage.is_source:
            st.pending_reads.popleft()
            desc = _describe_read(st.stage.read_tasks[read_index], read_index)
        else:
            queue = st.inputs[st.stage.upstream[0]]
            for _ in inputs:
                queue.popleft()
            desc = f"partition {st.next_seq}"
        task_id = next(self._ids)
        running = RunningTask(task_id, st.index, st.next_seq, inputs, desc, est)
        st.next_seq += 1
        st.running[task_id] = running
        self._tasks[task_id] = running
        st.bytes_in += sum(p.nbytes for p in inputs) if inputs else 0
        st.stats.rows_in += sum(p.rows for p in inputs)
        st.stats.mark_start()
        self.backend.submit(Task(task_id, st.index, read_index, [p.ref for p in inputs], desc))

    def _used_bytes(self) -> int:
        buffered = sum(st.buffered_bytes() for st in self.states)
        in_flight = sum(max(0, t.est_bytes - t.produced_bytes) for t in self._tasks.values())
        return buffered + in_flight

    def _note_peak(self) -> None:
        actual = sum(st.buffered_bytes() for st in self.states)
        self.stats.peak_buffered_bytes = max(self.stats.peak_buffered_bytes, actual)

    def _note_backpressure(self, st: StageState) -> None:
        now = time.perf_counter()
        last = getattr(st, "_bp_since", None)
        if last is not None:
            st.stats.backpressure_time_s += now - last
        st._bp_since = now  # type: ignore[attr-defined]
        st.stats.backpressure_reason = "memory budget"

    def _check_stuck(self) -> None:
        if not self._tasks:
            return
        waited = time.monotonic() - self._last_progress
        if waited > self.options.no_progress_timeout_s:
            task = min(self._tasks.values(), key=lambda t: t.task_id)
            stage = self.stages[task.stage_index].name
            raise StageStuckError(stage, waited, f"{len(self._tasks)} task(s) running, "
                                                 f"oldest on {task.description}")


def _describe_read(read_task, index: int) -> str:
    detail = getattr(read_task, "description", "")
    return f"partition {index}" + (f" ({detail})" if detail else "")
