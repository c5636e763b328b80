"""The embedded local backend: forked worker processes and threads on this machine.

Stages whose ops hold the GIL run in worker processes (forked once per executor,
inheriting the plan, so closures need no pickling); blocks cross processes as
Arrow IPC files in shared memory. Stages that release the GIL run on threads
with no copy at all.
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
import time
from collections import deque
from dataclasses import replace
from multiprocessing.connection import wait

from streambatch.executor.backends.base import (
    Backend,
    FailureInfo,
    Task,
    TaskDone,
    TaskFailed,
    TaskOutput,
    describe_failure,
)
from streambatch.executor.backends.process_worker import worker_main
from streambatch.executor.backends.task_runner import run_task
from streambatch.executor.partition import InMemoryRef, SharedStore


class _Cancelled(Exception):
    pass


class LocalBackend(Backend):
    """Runs tasks on this machine.

    >>> LocalBackend(num_cpus=2).num_cpus
    2
    """

    def __init__(self, num_cpus: int, start_method: str = "fork") -> None:
        self._num_cpus = num_cpus
        self._start_method = start_method
        self.events: queue.Queue = queue.Queue()
        self._cancelled = threading.Event()
        self._threads: list[threading.Thread] = []
        self._thread_tasks: queue.Queue = queue.Queue()
        self._procs: list = []
        self._idle: deque = deque()
        self._pending: deque = deque()
        self._busy: dict = {}
        self._temp_refs: dict = {}

    @property
    def num_cpus(self) -> int:
        """CPU slots for tasks."""
        return self._num_cpus

    def start(self, stages: list, target_bytes: int) -> None:
        """Create the shared store and fork workers if any stage needs processes."""
        self.store = SharedStore.create()
        self._stages, self._target = stages, target_bytes
        if any(s.kind == "task" and s.worker == "process" for s in stages):
            for _ in range(self._num_cpus):
                self._spawn_worker()
            self._listener = threading.Thread(target=self._listen, daemon=True)
            self._listener.start()

    def _spawn_worker(self) -> None:
        ctx = multiprocessing.get_context(self._start_method)
        parent, child = ctx.Pipe(duplex=True)
        inherited = [w["conn"] for w in self._procs]
        proc = ctx.Process(target=worker_main, daemon=True, name="streambatch-worker",
                           args=(child, self._stages, self.store.root, self._target, inherited))
        proc.start()
        child.close()
        worker = {"proc": proc, "conn": parent, "task": None, "alive": True}
        self._procs.append(worker)
        self._idle.append(worker)

    def submit(self, task: Task) -> None:
        """Queue a task on a thread or a worker process, by its stage's worker kind."""
        if self._stages[task.stage_index].worker == "process":
            self._submit_process(task)
        else:
            self._ensure_threads()
            self._thread_tasks.put(task)

    def _submit_process(self, task: Task) -> None:
        refs = [self._shareable(task, r) for r in task.input_refs]
        self._pending.append(replace(task, input_refs=refs))
        self._assign()

    def _shareable(self, task: Task, ref):
        if not isinstance(ref, InMemoryRef):
            return ref
        shared = self.store.put(ref.table)
        self._temp_refs.setdefault(task.task_id, []).append(shared)
        return shared

    def _assign(self) -> None:
        while self._pending and self._idle:
            worker, task = self._idle.popleft(), self._pending.popleft()
            worker["task"] = task
            self._busy[task.task_id] = worker
            worker["conn"].send(task)

    def _listen(self) -> None:
        while not self._cancelled.is_set():
            live = [w for w in self._procs if w["alive"]]
            by_handle = {w["conn"]: w for w in live} | {w["proc"].sentinel: w for w in live}
            for handle in wait(list(by_handle), timeout=0.2):
                self._read_handle(handle, by_handle[handle])

    def _read_handle(self, handle, worker) -> None:
        if handle is worker["conn"]:
            try:
                self.events.put(handle.recv())
                return
            except (EOFError, OSError):
                pass
        if worker["alive"]:
            self._drain(worker["conn"])
            worker["proc"].join(0.1)
            worker["alive"] = False
            self.events.put(("died", worker))

    def _drain(self, conn) -> None:
        try:
            while conn.poll():
                self.events.put(conn.recv())
        except (EOFError, OSError):
            pass

    def _ensure_threads(self) -> None:
        while len(self._threads) < self._num_cpus:
            thread = threading.Thread(target=self._thread_loop, daemon=True,
                                      name="streambatch-thread")
            thread.start()
            self._threads.append(thread)

    def _thread_loop(self) -> None:
        state: dict = {}
        while not self._cancelled.is_set():
            task = self._thread_tasks.get()
            if task is None:
                return
            self._run_on_thread(task, state)

    def _run_on_thread(self, task: Task, state: dict) -> None:
        start = time.perf_counter()
        stage = self._stages[task.stage_index]
        try:
            for table in run_task(stage, task, self._target, state):
                if self._cancelled.is_set():
                    raise _Cancelled
                self.events.put(TaskOutput(task.task_id, InMemoryRef(table),
                                           table.num_rows, table.nbytes))
            self.events.put(TaskDone(task.task_id, time.perf_counter() - start))
        except _Cancelled:
            return
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the executor
            self.events.put(TaskFailed(task.task_id, describe_failure(exc)))

    def poll(self, timeout: float) -> list:
        """Events ready within ``timeout`` seconds (at least one unless it timed out)."""
        out = []
        try:
            out.append(self.events.get(timeout=timeout) if timeout else self.events.get_nowait())
            while True:
                out.append(self.events.get_nowait())
        except queue.Empty:
            pass
        return [e for e in (self._track(e) for e in out) if e is not None]

    def _track(self, event):
        if isinstance(event, tuple) and event[0] == "died":
            return self._worker_died(event[1])
        if isinstance(event, (TaskDone, TaskFailed)) and event.task_id in self._busy:
            self._free_worker(event.task_id)
        return event

    def _free_worker(self, task_id: int) -> None:
        worker = self._busy.pop(task_id)
        worker["task"] = None
        for ref in self._temp_refs.pop(task_id, []):
            self.store.release(ref)
        if worker["alive"]:
            self._idle.append(worker)
        self._assign()

    def _worker_died(self, worker):
        task = worker["task"]
        if worker in self._idle:
            self._idle.remove(worker)
        if not self._cancelled.is_set():
            self._spawn_worker()
        if task is None:
            self._assign()
            return None
        self._busy.pop(task.task_id, None)
        code = worker["proc"].exitcode
        info = FailureInfo("died", None, None, f"worker exited with code {code}", "", None, code)
        self._assign()
        return TaskFailed(task.task_id, info)

    def release(self, ref) -> None:
        """Delete a shared-memory block."""
        self.store.release(ref)

    def shutdown(self) -> None:
        """Stop threads and workers and delete the shared store."""
        self._cancelled.set()
        for _ in self._threads:
            self._thread_tasks.put(None)
        for worker in self._procs:
            self._stop_worker(worker)
        self.store.destroy()

    def _stop_worker(self, worker) -> None:
        proc = worker["proc"]
        if worker["task"] is not None and proc.is_alive():
            proc.kill()
        else:
            try:
                worker["conn"].send(None)
            except (OSError, BrokenPipeError):
                pass
        proc.join(1.0)
        if proc.is_alive():
            proc.kill()
            proc.join(1.0)
        worker["conn"].close()


__all__ = ["LocalBackend", "describe_failure"]
