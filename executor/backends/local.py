"""The embedded local backend: worker processes, actors and threads on this machine.

Stages whose ops hold the GIL run in worker processes, started from a clean
zygote process by default (``worker_start.py``: none of the driver's threads,
locks or CUDA state; the plan travels by cloudpickle); blocks cross processes as
Arrow IPC files in shared memory. Stages that release the GIL run on threads
with no copy at all. Actor stages get dedicated long-lived processes, each
with its own CUDA_VISIBLE_DEVICES.

Stopping: :meth:`LocalBackend.cancel` (any thread; the consumer's when it goes
away) kills every worker process at once (their tasks are re-runnable from
lineage, and nobody wants their output now) and abandons thread tasks, whose
late outputs are dropped. Until :meth:`~LocalBackend.shutdown`, an exit hook
kills the workers and removes the store if the driver exits or gets SIGTERM.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection, wait
from typing import Protocol, cast

from streambatch.executor.backends.base import (
    ActorFailed,
    Backend,
    FailureInfo,
    Task,
    TaskDeadLetters,
    TaskDone,
    TaskFailed,
    TaskOutput,
    WorkerSetupFailed,
    describe_failure,
    drain,
)
from streambatch.executor.backends.heap import (
    BIG_TASK_BYTES,
    HEAP_BYTES,
    REUSE_BYTES,
    arrow_pool_for_driver,
    heap_bytes_for,
    release_arrow_pool,
)
from streambatch.executor.backends.shared_store import SharedStore
from streambatch.executor.backends.task_memory import ArrowGrowth, first_of_stage
from streambatch.executor.backends.task_runner import run_task, task_context
from streambatch.executor.backends.thread_imports import imports_into
from streambatch.executor.backends.worker_choice import Probe, WorkerChoice, recall, udf_key
from streambatch.executor.backends.worker_start import (
    Shipped,
    installed_modules,
    may_use_processes,
    runs_in_processes,
    ship_read,
    ship_stages,
    start_worker,
)
from streambatch.executor.cancel import JobCancelled
from streambatch.executor.contract import StreamBatchError, TaskAbandoned, TaskStage
from streambatch.executor.errors import WorkerSetupError
from streambatch.executor.exit_cleanup import at_exit
from streambatch.executor.options import check_start_method
from streambatch.executor.partition import BlockRef, InMemoryRef
from streambatch.executor.thread_pool import shared_pool

_WAKE = object()  # put on the event queue so that a waiting poll() sees a cancel at once


class _Cancelled(Exception):
    pass


class NestedWorkerError(StreamBatchError):
    """A dataset ran inside a worker process forked from the driver
    (``worker_start_method="fork"``) and needed worker processes of its own, which a
    forked (daemonic) worker cannot start. With the default start method it works.

    >>> print(NestedWorkerError(1234))  # doctest: +ELLIPSIS
    a dataset was executed inside streambatch worker process 1234 ...='forkserver' ...
    """

    def __init__(self, pid: int) -> None:
        self._init_args = (pid,)
        super().__init__(
            f"a dataset was executed inside streambatch worker process {pid} (from a UDF "
            f"of another dataset), and its stages need worker processes, which a worker "
            f"forked from the driver (worker_start_method='fork') cannot start. Use the "
            f"default worker_start_method='forkserver' (or 'spawn'), run the inner dataset "
            f"in the driver and pass its result in, or let the outer UDF run on a thread in "
            f"the driver (map_batches(..., releases_gil=True)).")


class _Process(Protocol):
    """A worker process as the backend handles it: a :class:`multiprocessing.Process`
    ("fork"), or a :class:`~streambatch.executor.backends.zygote.Child` (from the
    zygote, or spawned)."""

    @property
    def sentinel(self) -> int | None: ...

    @property
    def exitcode(self) -> int | None: ...

    def is_alive(self) -> bool: ...

    def join(self, timeout: float | None = None) -> object: ...

    def kill(self) -> None: ...


@dataclass(eq=False)
class _Worker:
    proc: _Process
    conn: Connection  # the driver's end of the worker's pipe (or socket)
    actor_id: int | None = None
    tasks: deque = field(default_factory=deque)
    alive: bool = True
    stopping: bool = False


class LocalBackend(Backend):
    """Runs tasks on this machine.

    >>> LocalBackend(num_cpus=2).num_cpus
    2
    """

    can_spill = True  # workers are processes and threads of this machine
    sized_blocks = True  # task outputs cut as Task.target_bytes/block_rows ask

    def __init__(self, num_cpus: int, num_gpus: float = 0.0, resources: dict | None = None,
                 start_method: str = "forkserver", trim_bytes: int = BIG_TASK_BYTES,
                 reuse_bytes: int = 0, heap_bytes: int = HEAP_BYTES) -> None:
        self._num_cpus = num_cpus
        self._trim_bytes = trim_bytes
        self._reuse_bytes = reuse_bytes
        self._heap_bytes = heap_bytes
        self.num_gpus = num_gpus
        self.custom_resources = dict(resources or {})
        self._start_method = check_start_method(start_method)
        self._shipped: Shipped | None = None
        self._imported: dict[int, set[str]] = {}  # "auto" stage -> what its threads imported
        self._choices: dict[int, WorkerChoice] = {}  # stages whose worker is "auto"
        self.events: queue.Queue = queue.Queue()
        self._cancelled = threading.Event()
        self._thread_state = threading.local()
        self._workers: list[_Worker] = []
        self._actors: dict[int, _Worker] = {}
        self._idle: deque = deque()
        self._pending: deque = deque()
        self._busy: dict = {}
        self._temp_refs: dict = {}
        self._listener: threading.Thread | None = None
        self._threads: list[threading.Event] = []  # set when each thread task ends
        self.store: SharedStore | None = None
        self._stop_requested = False  # cancel(): poll raises JobCancelled from now on
        self._forget_exit_hook: Callable[[], None] | None = None

    @classmethod
    def from_options(cls, options) -> LocalBackend:
        """The backend for these options. A thread task that worked with a sixteenth of
        the memory budget or more gives what it freed back to the OS at once (smaller
        leftovers are small beside the budget, and giving them back made the next task
        fault them in again: a 10 M-row shuffle's reducers took 2-3x longer). The store
        keeps up to a sixteenth of the budget (at most REUSE_BYTES) of released block
        files for workers to write over, and each task worker keeps freed memory for its
        next task as ``heap_bytes_for`` says (little under a tight budget)."""
        budget, cpus = options.resolved_memory_budget(), options.resolved_num_cpus()
        return cls(num_cpus=cpus, num_gpus=options.resolved_num_gpus(),
                   resources=options.resources, start_method=options.local.worker_start_method,
                   trim_bytes=max(BIG_TASK_BYTES, budget // 16),
                   reuse_bytes=min(REUSE_BYTES, budget // 16),
                   heap_bytes=heap_bytes_for(budget, cpus))

    @property
    def num_cpus(self) -> int:
        """CPU slots for tasks."""
        return self._num_cpus

    def start(self, stages: list, target_bytes: int) -> None:
        """Create the shared store; fork generic workers if a stage needs processes.

        If this fails part-way, :meth:`shutdown` still stops what was started."""
        self._stages, self._target = stages, target_bytes
        arrow_pool_for_driver()  # thread tasks allocate in this process
        release_arrow_pool()  # what this thread's allocator holds freed goes back now: purged
        # later, while a thread task measures the process's memory, it hid the task's use
        self.store = SharedStore.create(self._reuse_bytes)
        self._forget_exit_hook = at_exit(self._kill_and_remove)
        generic = [s for s in stages if isinstance(s, TaskStage) and s.worker == "process"
                   and not s.uses_actors]
        self._to_shared = {up for s in stages if runs_in_processes(s) for up in s.upstream}
        if self._start_method != "fork" and any(may_use_processes(s) for s in stages):
            self._shipped = ship_stages(stages, self.store)
        self._choices = {i: self._choice(i) for i, s in enumerate(stages)  # actors: processes
                         if isinstance(s, TaskStage) and s.worker == "auto" and not s.uses_actors}
        for _ in range(self._num_cpus if generic else 0):
            self._idle.append(self._spawn())

    def _choice(self, index: int) -> WorkerChoice:
        """An "auto" stage starts on threads; one that could not be shipped to worker
        processes (its UDF does not pickle) stays there."""
        if self._shipped is not None and self._shipped.blobs[index] is None:
            return WorkerChoice(decided=True, note="its UDF cannot be pickled for processes")
        key = udf_key(self._stages[index].ops) if self._num_cpus >= 2 else None  # (one CPU:
        # tasks never run beside each other; nothing was measured there)
        choice = recall(key, on_lean=lambda: self._warm_for(index))
        if choice.where == "process":  # an earlier job of this process chose
            self._warm_for(index)
        return choice

    def _warm_for(self, index: int) -> None:
        """The stage's first measure leans to worker processes: the zygote imports what
        they need while the stage's threads measure on, so a move forks them at once
        (W2: the first fork took 88 ms with the imports, then 3 ms), with what its
        threads imported as they ran the UDF (``thread_imports``). Not earlier: a
        stage that stays on threads would have the zygote import its modules for
        nothing (torch: hundreds of MB)."""
        if self._start_method != "forkserver" or self._num_cpus < 2 or self._shipped is None:
            return
        from streambatch.executor.backends.zygote import warm_zygote

        noted = installed_modules(self._imported.get(index, set()).copy())
        warm_zygote(tuple(sorted({*self._shipped.preload([index]), *noted})))

    def worker_notes(self) -> dict[int, str]:
        """Where each "auto" stage ran and why."""
        return {i: c.describe() for i, c in self._choices.items()}

    def _spawn(self, env: dict | None = None, actor: tuple | None = None) -> _Worker:
        if self._cancelled.is_set():
            raise JobCancelled("the local backend was stopped; no new worker is started")
        if self._start_method == "fork" and multiprocessing.current_process().daemon:
            raise NestedWorkerError(os.getpid())
        inherited = [w.conn for w in self._workers if w.alive]
        proc, conn = start_worker(self._start_method, self._stages, self._shipped,
                                  self._started_store().ensure(), self._target, inherited, env,
                                  actor, self._heap_bytes)
        worker = _Worker(proc, conn, actor[0] if actor else None)
        self._workers.append(worker)
        self._ensure_listener()
        return worker

    def _started_store(self) -> SharedStore:
        """The job's shared store, which :meth:`start` makes before any worker or task."""
        if self.store is None:
            raise RuntimeError("LocalBackend.start() was not called: there is no shared store")
        return self.store

    def _ensure_listener(self) -> None:
        if self._listener is None:
            self._listener = threading.Thread(target=self._listen, daemon=True)
            self._listener.start()

    # ---- actors -------------------------------------------------------
    def start_actor(self, stage_index: int, actor_id: int, env: dict) -> None:
        """Fork a dedicated worker that builds the stage's classes with ``env`` set."""
        self._actors[actor_id] = self._spawn(env, (actor_id, stage_index))

    def stop_actor(self, actor_id: int) -> None:
        """Ask an actor to exit once its queued tasks are done."""
        worker = self._actors.pop(actor_id, None)
        if worker is not None and worker.alive:
            worker.stopping = True
            self._send(worker, None)

    # ---- tasks --------------------------------------------------------
    def submit(self, task: Task) -> None:
        """Queue a task on an actor, a worker process or a thread, by its stage."""
        if task.actor_id is not None:
            worker = self._actors[task.actor_id]
            task = self._with_shared_inputs(task)
            worker.tasks.append(task)
            self._busy[task.task_id] = worker
            self._send(worker, task)
        elif self._where(task.stage_index) == "process":
            self._pending.append(self._with_shared_inputs(task))
            self._assign()
        else:
            self._threads = [t for t in self._threads if not t.is_set()]
            self._threads.append(shared_pool().run(self._run_on_thread, task,
                                                   name="streambatch-thread"))

    def _where(self, index: int) -> str:
        """"thread" or "process": the stage's worker, or its choice for an "auto" one
        (made now, if its measures are in)."""
        choice = self._choices.get(index)
        return choice.place() if choice is not None else self._stages[index].worker

    def _with_shared_inputs(self, task: Task) -> Task:
        """The task as a worker process takes it: inputs in shared memory, and its read
        task with it when the worker did not inherit the stages (not forked)."""
        if self._start_method != "fork":
            task = ship_read(task, self._stages[task.stage_index])
        return replace(task, input_refs=[self._shareable(task, r) for r in task.input_refs])

    def _shareable(self, task: Task, ref):
        if not isinstance(ref, InMemoryRef):
            return ref
        shared = self._started_store().put(ref.table)
        self._temp_refs.setdefault(task.task_id, []).append(shared)
        return shared

    def _assign(self) -> None:
        while self._pending:
            if not self._idle:
                self._idle.append(self._spawn())  # more concurrent tasks than workers
            worker, task = self._idle.popleft(), self._pending.popleft()
            worker.tasks.append(task)
            self._busy[task.task_id] = worker
            self._send(worker, task)

    def _send(self, worker: _Worker, message) -> None:
        try:
            worker.conn.send(message)
        except (OSError, BrokenPipeError):
            pass  # the listener reports the dead worker

    # ---- events -------------------------------------------------------
    def _listen(self) -> None:
        while not self._cancelled.is_set():
            live = [w for w in self._workers if w.alive]
            by_handle = {w.conn: w for w in live} | {w.proc.sentinel: w for w in live
                                                     if w.proc.sentinel is not None}
            if not by_handle:
                time.sleep(0.05)
                continue
            # wait() returns some of the handles it was given (typeshed widens their type)
            ready = cast("list[Connection | int]", wait(list(by_handle), timeout=0.2))
            for handle in ready:
                self._read_handle(handle, by_handle[handle])

    def _read_handle(self, handle, worker: _Worker) -> None:
        if handle is worker.conn:
            try:
                self.events.put(handle.recv())
                return
            except (EOFError, OSError):
                pass
        if worker.alive:
            self._drain(worker.conn)
            worker.proc.join(0.1)
            worker.alive = False
            self.events.put(("died", worker))

    def _drain(self, conn) -> None:
        try:
            while conn.poll():
                self.events.put(conn.recv())
        except (EOFError, OSError):
            pass

    def poll(self, timeout: float) -> list:
        """Events ready within ``timeout`` seconds (at least one unless it timed out).

        Raises JobCancelled once :meth:`cancel` was called."""
        self._check_stopped()
        events = drain(self.events, timeout)
        self._check_stopped()
        return [e for event in events if event is not _WAKE for e in self._track(event)]

    def _check_stopped(self) -> None:
        if self._stop_requested:
            raise JobCancelled("the job was cancelled: its consumer stopped iterating")

    def _track(self, event) -> list:
        if isinstance(event, tuple) and event[0] == "died":
            return self._worker_died(event[1])
        if isinstance(event, WorkerSetupFailed):
            info = event.failure
            raise WorkerSetupError(info.error, info.traceback_text)
        if isinstance(event, (TaskDone, TaskFailed)) and event.task_id in self._busy:
            self._free_worker(event.task_id)
        return [event]

    def _free_worker(self, task_id: int) -> None:
        worker = self._busy.pop(task_id)
        if worker.tasks and worker.tasks[0].task_id == task_id:
            worker.tasks.popleft()
        else:
            worker.tasks = deque(t for t in worker.tasks if t.task_id != task_id)
        for ref in self._temp_refs.pop(task_id, []):
            self.release(ref)
        if worker.actor_id is None and worker.alive:
            self._idle.append(worker)
            self._assign()

    def _worker_died(self, worker: _Worker) -> list:
        if worker in self._idle:
            self._idle.remove(worker)
        if worker.stopping and not worker.tasks:
            return []
        code = worker.proc.exitcode
        failed: list[TaskFailed | ActorFailed] = []
        for task in worker.tasks:
            self._busy.pop(task.task_id, None)
            for ref in self._temp_refs.pop(task.task_id, []):
                self.release(ref)
            info = FailureInfo("died", None, None, f"worker exited with code {code}", "", None,
                               code)
            failed.append(TaskFailed(task.task_id, info))
        worker.tasks.clear()
        if worker.actor_id is not None and not failed:
            info = FailureInfo("died", None, None, f"actor exited with code {code}", "", None,
                               code)
            failed.append(ActorFailed(worker.actor_id, info))
        return failed

    # ---- threads ------------------------------------------------------
    def _run_on_thread(self, task: Task) -> None:
        """One task on a kept pool thread (state per thread: a UDF built on a thread is
        used by that thread only)."""
        if self._cancelled.is_set():
            return
        choice = self._choices.get(task.stage_index)
        probe = choice.probe() if choice is not None else None
        noting = nullcontext() if choice is None else \
            imports_into(self._imported.setdefault(task.stage_index, set()))
        try:
            with noting:
                self._run_thread_task(task, probe)
        finally:
            if probe is not None:
                probe.end()

    def _run_thread_task(self, task: Task, probe: Probe | None) -> None:
        state = self._thread_state.__dict__
        start = time.perf_counter()
        arrow: ArrowGrowth | None = None
        try:  # (all of it: a task whose set-up raised would otherwise never end)
            stage = self._stages[task.stage_index]
            ctx = task_context(stage, task, state, self._cancelled.is_set)
            arrow, first = ArrowGrowth(), True  # the first block tells the working memory
            warmup = first_of_stage(state, task.stage_index)  # so far
            for table in run_task(stage, task, self._target, ctx, arrow.sample):
                arrow.sample()
                if self._cancelled.is_set():
                    raise _Cancelled  # abandoned: nothing more goes to the store
                ref: BlockRef
                if task.stage_index in self._to_shared:  # a process reads it next: one copy
                    ref = self._started_store().put(table)
                else:
                    ref = InMemoryRef(table)
                    arrow.handed_over(table.nbytes)  # charged as buffered from now on
                self._emit(TaskOutput(task.task_id, ref, table.num_rows, table.nbytes,
                                      max(1, arrow.sample()) if first else 0, warmup))
                first = False
                if probe is not None:
                    probe.output()
            if ctx.dead_letters:
                self._emit(TaskDeadLetters(task.task_id, ctx.dead_letters))
            working = arrow.finish()
            if probe is not None:
                probe.end()  # before the executor can start the next task in its place
            self._emit(TaskDone(task.task_id, time.perf_counter() - start, max(1, working),
                                warmup))
            if working >= self._trim_bytes:
                release_arrow_pool()  # what it freed goes back to the OS, not kept for later
        except (_Cancelled, TaskAbandoned):
            return
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the executor
            if not self._cancelled.is_set():
                self.events.put(TaskFailed(task.task_id, describe_failure(exc)))
        finally:
            if arrow is not None:
                arrow.finish()

    def _emit(self, event) -> None:
        """Hand a thread task's event to the executor; a task abandoned by cancel() or
        shutdown() (a hung UDF that returned late) stops here, its output dropped."""
        if self._cancelled.is_set():
            raise _Cancelled
        self.events.put(event)

    # ---- cleanup ------------------------------------------------------
    def release(self, ref) -> None:
        """Delete a shared-memory block."""
        if self.store is not None:
            self.store.release(ref)

    def cancel(self) -> None:
        """Stop the job now, from any thread: kill every worker process and actor (a
        hung UDF too), abandon thread tasks, and make :meth:`poll` raise JobCancelled.
        Nothing here waits; :meth:`shutdown` reaps the processes and removes the store."""
        self._stop_requested = True
        self._cancelled.set()
        for worker in list(self._workers):
            _kill(worker)
        self.events.put(_WAKE)

    def shutdown(self) -> None:
        """Stop workers (queued thread tasks see the cancel and skip) and delete the store.
        Safe after a start that failed part-way, and after :meth:`cancel`."""
        self._cancelled.set()
        try:
            self._stop_workers()
            self._wait_for_threads(2.0)
        finally:
            if self.store is not None:
                self.store.destroy()
            if self._forget_exit_hook is not None:
                self._forget_exit_hook()

    def _stop_workers(self) -> None:
        for worker in list(self._workers):
            if self._stop_requested or (worker.alive and (worker.tasks or worker.stopping)):
                _kill(worker)
            else:
                self._send(worker, None)
        deadline = time.monotonic() + 2.0
        for worker in list(self._workers):
            worker.proc.join(max(0.0, deadline - time.monotonic()))
            if worker.proc.is_alive():
                worker.proc.kill()
                worker.proc.join(1.0)
        if self._listener is not None:  # it may be reading a connection: let it finish
            self._listener.join(1.0)
        for worker in list(self._workers):
            worker.conn.close()

    def _wait_for_threads(self, timeout: float) -> None:
        """Let running thread tasks reach their next check of the cancel (a sink checks
        before each commit), so nothing they write lands after the caller's cleanup; a
        hung UDF is left behind after ``timeout``."""
        deadline = time.monotonic() + timeout
        for done in self._threads:
            done.wait(max(0.0, deadline - time.monotonic()))

    def _kill_and_remove(self) -> None:
        """The exit hook (normal exit or SIGTERM before shutdown ran): kill the workers,
        wait briefly for them to be gone, remove the store."""
        self._cancelled.set()
        workers = list(self._workers)
        for worker in workers:
            _kill(worker)
        deadline = time.monotonic() + 1.0
        for worker in workers:
            worker.proc.join(max(0.0, deadline - time.monotonic()))
        if self.store is not None:
            self.store.destroy()


def _kill(worker: _Worker) -> None:
    try:
        worker.proc.kill()
    except (OSError, ValueError, AttributeError):  # already reaped, or never started
        pass


__all__ = ["LocalBackend"]
