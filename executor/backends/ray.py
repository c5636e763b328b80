"""The Ray backend: the same stages on Ray Core (tasks, actors, object store).

Stateless stages run as Ray tasks with streaming generators: each output block
goes into the object store where the worker made it, and the driver receives
only its ObjectRef plus a small metadata record (rows, bytes). Actor stages run
as Ray actors that ask Ray for the stage's resources (Ray places GPU actors and
sets their CUDA_VISIBLE_DEVICES). The stages are put in the object store once
per execution and unpickled once per worker. Ray never retries anything
(``max_retries=0``): the executor owns retries, a dead worker, actor or
node is reported as ``FailureInfo("died")``, and a task whose input block was
lost with its node as ``FailureInfo("lost")``: the executor recomputes the
block from its lineage (executor/recovery.py) and runs the task again. A task's
stream is read by ``ray_stream.task_records``, so every task ends in exactly one
TaskDone or TaskFailed, also when Ray cuts the stream between an output's record
and its block, and the driver never waits on an object no live node holds.
Block inputs are passed as top-level task arguments, so Ray schedules a task next
to its input partitions when it can (locality) and resolves them zero-copy from
the object store.

Use it with ``streambatch.init(backend="ray", address="auto")`` (or a
``ray://`` address); without an address an embedded Ray instance is started.
"""

from __future__ import annotations

import os
import queue
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, NoReturn

import pyarrow as pa
from streambatch.executor.backends.base import (
    ActorFailed,
    ActorReady,
    Backend,
    FailureInfo,
    Task,
    TaskDone,
    TaskFailed,
    TaskOutput,
    TaskStarted,
    describe_failure,
    drain,
    portable,
)
from streambatch.executor.backends.fast_start import defer_pandas_probe
from streambatch.executor.backends.heap import keep_heap
from streambatch.executor.backends.ray_stream import (
    StreamCut,
    UnreachableObjectError,
    fetch,
    task_records,
)
from streambatch.executor.backends.task_runner import run_task
from streambatch.executor.cancel import JobCancelled
from streambatch.executor.errors import BlockLostError
from streambatch.executor.partition import InMemoryRef

from streambatch._dependencies import import_optional

ray = import_optional("ray", extra="ray", what="the ray backend")

_EXIT_KEY = "streambatch-exit-"


@dataclass
class RayRef:
    """A block in Ray's object store; the driver holds only the reference.

    >>> RayRef.__doc__.startswith("A block")
    True
    """

    ref: object

    def read(self) -> pa.Table:
        """Fetch the block (zero-copy from the local object store); a block whose node
        left raises :class:`BlockLostError` (the executor then recomputes it). The
        driver waits only while a live node holds the block (``ray_stream.fetch``)."""
        rex = ray.exceptions
        try:
            return fetch(self.ref)
        except (rex.ObjectLostError, rex.NodeDiedError, rex.WorkerCrashedError,
                rex.RayActorError, UnreachableObjectError) as exc:
            # NodeDiedError & co: the block came from a task that then died with its node
            raise BlockLostError("(driver)", "a block fetched by the driver",
                                 f"{type(exc).__name__}") from exc


# ---- worker side -----------------------------------------------------------
_STAGES: dict = {}
_STATE: dict = {}


def _stages(key: str, blob: bytes) -> list:
    """The execution's stages, unpickled once per worker process."""
    if key not in _STAGES:
        import cloudpickle

        defer_pandas_probe()  # a fresh Ray worker's first pa.array() would import pandas
        from streambatch.executor.arrow_pickle import register

        register()  # the blocks it puts may hold C++-only extension types
        _STAGES.clear()
        _STATE.clear()
        _STAGES[key] = cloudpickle.loads(blob)
    return _STAGES[key]


def _record_exit_code(exit_key: str):
    """Ray does not report a crashed worker's exit code: note a Python-level exit
    (``os._exit``) in Ray's KV store, where the driver looks for it."""
    real = os._exit

    def _exit(status: int) -> NoReturn:  # os._exit's signature
        try:
            from ray.experimental import internal_kv

            internal_kv._internal_kv_put(exit_key, str(int(status)), overwrite=True)
        finally:
            real(status)

    os._exit = _exit
    return real


def _stream(stage, task: Task, target_bytes: int, state: dict, exit_key: str):
    """Yield ("started",); ("out", rows, nbytes) then the block, per output; then
    ("done", s) or ("failed", info). Exceptions never escape: the executor classifies
    them."""
    start = time.perf_counter()
    real_exit = _record_exit_code(exit_key)
    yield ("started",)
    try:
        for table in run_task(stage, task, target_bytes, state):
            yield ("out", table.num_rows, table.nbytes)
            yield table
        yield ("done", time.perf_counter() - start)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
        yield ("failed", FailureInfo("died", None, None, f"worker exited with code {code}", "",
                                     None, code))
    except Exception as exc:  # noqa: BLE001 - every failure goes back to the executor
        yield ("failed", portable(describe_failure(exc)))
    finally:
        os._exit = real_exit


def _task_of(meta: tuple, blocks: tuple) -> Task:
    task_id, stage_index, read_index, description, key, first_row, sizes, row_base = meta
    return Task(task_id, stage_index, read_index, [InMemoryRef(b) for b in blocks], description,
                key=key, first_row=first_row, target_bytes=sizes[0], block_rows=sizes[1],
                row_base=row_base)


@ray.remote(max_retries=0, num_returns="streaming")
def _run_task(key, blob, meta, target_bytes, exit_key, *blocks):
    stage = _stages(key, blob)[meta[1]]
    state = _STATE.setdefault(meta[1], {})
    yield from _stream(stage, _task_of(meta, blocks), target_bytes, state, exit_key)


@ray.remote(max_restarts=0, max_task_retries=0)
class _StageActor:
    """One actor of an actor stage: builds the stage's classes once, then runs tasks."""

    def __init__(self, key, blob, stage_index: int, env: dict) -> None:
        os.environ.update(env)
        keep_heap()
        self.stage = _stages(key, blob)[stage_index]
        self.state: dict = {}
        self.failure = None
        try:
            self.stage.setup(self.state)
        except Exception as exc:  # noqa: BLE001 - reported as ActorFailed
            self.failure = portable(describe_failure(exc))

    def ready(self):
        """None once built, else why the constructor failed."""
        return self.failure

    def run(self, meta, target_bytes, exit_key, *blocks):
        """Run one task (a streaming generator, like ``_run_task``)."""
        if self.failure is not None:
            yield ("started",)
            yield ("failed", self.failure)
            return
        yield from _stream(self.stage, _task_of(meta, blocks), target_bytes, self.state,
                           exit_key)


# ---- driver side -----------------------------------------------------------
def connect(address: str | None = None, num_cpus=None, num_gpus=None,
            resources: dict | None = None) -> None:
    """Join the Ray cluster at ``address`` ("auto", "ray://host:10001"), or start an
    embedded instance with the declared resources when there is none (a new one:
    ``address="local"``, never a cluster that happens to run on this machine, which
    is what ``address="auto"`` asks for); no-op when Ray is already initialized in
    this process."""
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=True)
        return
    ray.init(address="local", num_cpus=None if num_cpus is None else max(1, int(num_cpus)),
             num_gpus=None if num_gpus is None else int(-(-num_gpus // 1)),
             resources=resources or None, include_dashboard=False)


def _died(exc: BaseException, code: int | None) -> FailureInfo:
    what = f"exited with code {code}" if code is not None else "died"
    return FailureInfo("died", None, None, f"Ray worker {what}: {type(exc).__name__}: {exc}",
                       "", None, code)


@dataclass(eq=False)
class _Actor:
    handle: Any  # a Ray ActorHandle of _StageActor (ray has no type information)
    stage_index: int
    cpus: float


_WAKE = object()  # put on the event queue so that a waiting poll() sees a cancel at once


class RayBackend(Backend):
    """Runs tasks and actors on a Ray cluster (joined, or started on this machine).

    The resources it hands out are the cluster's, capped by what
    ``streambatch.init`` declared (``num_cpus=2`` uses at most 2 of the cluster's
    CPUs). Needs ``pip install "streambatch[ray]"``.

    >>> RayBackend.__mro__[1].__name__
    'Backend'
    """

    reports_task_starts = True  # a task may wait in Ray's queue before TaskStarted
    sized_blocks = True  # task outputs cut as Task.target_bytes/block_rows ask

    def __init__(self, num_cpus=None, num_gpus=None, resources: dict | None = None,
                 address: str | None = None, max_retries: int = 0, **_ignored) -> None:
        connect(address, num_cpus, num_gpus, resources)
        self._max_retries = max_retries
        self._declared = (num_cpus, num_gpus, dict(resources or {}))
        self._discover()
        self.events: queue.Queue = queue.Queue()
        self._cancelled = threading.Event()
        self._stop_requested = False  # cancel(): poll raises JobCancelled from now on
        self._running: dict[int, object] = {}  # task id -> generator
        self._task_cpus: dict[int, float] = {}
        self._actor_tasks: set[int] = set()
        self._stopping: list = []
        self._actors: dict[int, _Actor] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_options(cls, options) -> RayBackend:
        """Build from :class:`ExecutionOptions` (unset resources mean "the cluster's")."""
        return cls(options.num_cpus, options.num_gpus, options.resources,
                   options.ray.address, options.ray.max_retries)

    @property
    def num_cpus(self) -> int:
        """CPU slots for tasks: the cluster's CPUs (capped by the declared number)."""
        return int(self._cpus)

    def total_resources(self) -> tuple[float, float, dict]:
        """(CPUs, GPUs, custom) of the cluster now, capped by the declared amounts (the
        executor asks every few seconds: nodes that joined or left change it)."""
        self._discover()
        return self._cpus, self._gpus, dict(self._custom)

    def _discover(self) -> None:
        num_cpus, num_gpus, declared = self._declared
        cluster = ray.cluster_resources()
        self._cpus = float(cluster.get("CPU", 0))
        self._gpus = float(cluster.get("GPU", 0))
        if num_cpus is not None:
            self._cpus = min(self._cpus, float(num_cpus))
        if num_gpus is not None:
            self._gpus = min(self._gpus, float(num_gpus))
        self._custom = {k: min(float(v), float(cluster.get(k, 0))) for k, v in declared.items()}

    def start(self, stages: list, target_bytes: int) -> None:
        """Put the pickled stages in the object store once for every worker."""
        import cloudpickle

        self._stages, self._target = stages, target_bytes
        self._key = uuid.uuid4().hex
        from streambatch.executor.arrow_pickle import register

        register()  # (read tasks may hold tables of C++-only extension types)
        self._blob = ray.put(cloudpickle.dumps(stages))

    # ---- tasks --------------------------------------------------------
    def submit(self, task: Task) -> None:
        """Start a Ray task (or an actor call) whose outputs stream back as refs."""
        meta = (task.task_id, task.stage_index, task.read_index, task.description, task.key,
                task.first_row, (task.target_bytes, task.block_rows), task.row_base)
        blocks = [self._object_ref(r) for r in task.input_refs]
        exit_key = f"{_EXIT_KEY}{self._key}-{task.task_id}"
        if task.actor_id is not None:
            self._actor_tasks.add(task.task_id)
            actor = self._actors[task.actor_id].handle
            gen = actor.run.options(num_returns="streaming").remote(
                meta, self._target, exit_key, *blocks)
        else:
            res = self._stages[task.stage_index].resources
            gen = _run_task.options(**self._task_options(task.task_id, res)).remote(
                self._key, self._blob, meta, self._target, exit_key, *blocks)
        with self._lock:
            self._running[task.task_id] = gen
        threading.Thread(target=self._follow, args=(task.task_id, gen, exit_key), daemon=True,
                         name="streambatch-ray-follow").start()

    def _task_options(self, task_id: int, res) -> dict:
        cpus = res.num_cpus
        held = sum(self._task_cpus.values()) + sum(a.cpus for a in self._actors.values())
        if not res.num_gpus and held + cpus > self._cpus + 1e-9:
            cpus = 0.0  # the executor lent an idle actor's CPU; Ray still counts it held
        self._task_cpus[task_id] = cpus
        opts = {"num_cpus": cpus, "num_gpus": res.num_gpus, "max_retries": self._max_retries}
        if res.custom:
            opts["resources"] = dict(res.custom)
        if res.memory:
            opts["memory"] = res.memory
        return opts

    @staticmethod
    def _object_ref(ref):
        if isinstance(ref, RayRef):
            return ref.ref
        return ray.put(ref.read())  # a block the driver made (limit, repartition)

    def _follow(self, task_id: int, gen, exit_key: str) -> None:
        """Turn one task's records into events, ending with exactly one TaskDone or
        TaskFailed (task_records raises where the stream ends without a final record)."""
        try:
            for record in task_records(gen):
                if record[0] == "out":
                    self.events.put(TaskOutput(task_id, RayRef(record[3]), record[1], record[2]))
                elif record[0] == "started":
                    self.events.put(TaskStarted(task_id))
                elif record[0] == "done":
                    self.events.put(TaskDone(task_id, record[1]))
                else:
                    self.events.put(TaskFailed(task_id, record[1]))
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - a dead worker, actor or node
            # (SystemExit: Ray raises it in this thread when the driver disconnects)
            if not self._cancelled.is_set():
                self.events.put(TaskFailed(task_id, self._classify(exc, exit_key)))

    def _classify(self, exc: BaseException, exit_key: str) -> FailureInfo:
        from ray import exceptions as rex

        if isinstance(exc, rex.TaskCancelledError):
            return FailureInfo("system", None, None, "task cancelled", "", None)
        # An input block's node (or owner) is gone. Our tasks catch their own errors, so
        # a RayTaskError caused by a lost object or a dead node came from fetching inputs.
        fetching = isinstance(exc, rex.RayTaskError) and isinstance(
            exc.cause, (rex.ObjectLostError, rex.NodeDiedError))
        if isinstance(exc, rex.ObjectLostError) or fetching:
            return FailureInfo("lost", None, None, f"{type(exc).__name__}: {exc}"[:500], "")
        if isinstance(exc, (rex.WorkerCrashedError, rex.RayActorError, rex.NodeDiedError,
                            StreamCut, UnreachableObjectError)):
            # StreamCut: Ray ended the stream early; UnreachableObjectError: a record
            # whose node left. Either way the task's worker or node is gone.
            return _died(exc, self._exit_code(exit_key))
        return portable(describe_failure(exc))

    @staticmethod
    def _exit_code(exit_key: str) -> int | None:
        try:
            from ray.experimental import internal_kv

            value = internal_kv._internal_kv_get(exit_key)
            if value is None:
                return None
            internal_kv._internal_kv_del(exit_key)
            return int(value)
        except Exception:  # noqa: BLE001 - the code is a detail of the message
            return None

    # ---- actors -------------------------------------------------------
    def start_actor(self, stage_index: int, actor_id: int, env: dict) -> None:
        """Create a Ray actor with the stage's resources; Ray picks its node and GPUs
        (and sets CUDA_VISIBLE_DEVICES), so ``env``'s device list is not applied."""
        res = self._stages[stage_index].resources
        opts = {"num_cpus": res.num_cpus, "num_gpus": res.num_gpus}
        if res.custom:
            opts["resources"] = dict(res.custom)
        if res.memory:
            opts["memory"] = res.memory
        env = {k: v for k, v in env.items() if k != "CUDA_VISIBLE_DEVICES"}
        # Ignored below: @ray.remote made _StageActor an ActorClass (with .options), but
        # mypy keeps a decorated class's own type.
        handle = _StageActor.options(**opts).remote(  # type: ignore[attr-defined]
            self._key, self._blob, stage_index, env)
        self._actors[actor_id] = _Actor(handle, stage_index, res.num_cpus)
        threading.Thread(target=self._watch_actor, args=(actor_id, handle), daemon=True,
                         name="streambatch-ray-actor").start()

    def _watch_actor(self, actor_id: int, handle) -> None:
        try:
            failure = ray.get(handle.ready.remote())
        except Exception as exc:  # noqa: BLE001 - died while starting
            if self._cancelled.is_set():
                return
            failure = _died(exc, None)
        self.events.put(ActorReady(actor_id) if failure is None
                        else ActorFailed(actor_id, failure))

    def stop_actor(self, actor_id: int) -> None:
        """Let an actor exit once its queued calls are done."""
        actor = self._actors.pop(actor_id, None)
        if actor is not None:
            actor.handle.__ray_terminate__.remote()
            self._stopping.append(actor.handle)

    # ---- events -------------------------------------------------------
    def poll(self, timeout: float) -> list:
        """Events ready within ``timeout`` seconds (at least one unless it timed out).

        Raises JobCancelled once :meth:`cancel` was called."""
        self._check_stopped()
        out = [e for e in drain(self.events, timeout) if e is not _WAKE]
        self._check_stopped()
        for event in out:
            if isinstance(event, (TaskDone, TaskFailed)):
                with self._lock:
                    self._running.pop(event.task_id, None)
                self._task_cpus.pop(event.task_id, None)
                self._actor_tasks.discard(event.task_id)
        return out

    # ---- cleanup ------------------------------------------------------
    def release(self, ref) -> None:
        """Nothing to do: Ray frees a block when its last reference is dropped."""

    def _check_stopped(self) -> None:
        if self._stop_requested:
            raise JobCancelled("the job was cancelled: its consumer stopped iterating")

    def cancel(self) -> None:
        """Stop the job now, from any thread: force-cancel its running tasks (a hung
        UDF too) and kill its actors; :meth:`poll` raises JobCancelled from now on."""
        self._stop_requested = True
        self.events.put(_WAKE)
        self.shutdown(wait=False)

    def shutdown(self, wait: bool = True) -> None:
        """Cancel tasks still running and kill this execution's actors (``wait``: until
        Ray has freed their resources, so the next job finds them)."""
        self._cancelled.set()
        with self._lock:
            running = list(self._running.items())
            self._running.clear()
        on_actors = self._actor_tasks
        for task_id, gen in running:
            try:  # force: a task stuck in user code must not keep its CPU
                ray.cancel(gen, force=task_id not in on_actors)
            except Exception:  # noqa: BLE001 - already finished
                pass
        handles = [a.handle for a in self._actors.values()] + self._stopping
        for handle in handles:
            ray.kill(handle, no_restart=True)
        self._actors.clear()
        self._stopping.clear()
        self._blob = None
        if handles and wait:  # until Ray has freed their CPUs/GPUs, so the next job finds them
            ray.wait([h.ready.remote() for h in handles], num_returns=len(handles), timeout=5.0)


__all__ = ["RayBackend", "RayRef", "connect"]
