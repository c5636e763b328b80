"""The backend contract: submit tasks, poll events, release blocks, shut down."""

from __future__ import annotations

import pickle
import queue
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

from streambatch.executor.contract import UDFFailure, UDFReturnTypeError
from streambatch.executor.partition import BlockRef


@dataclass
class Task:
    """One unit of work: a stage applied to one read task or a bundle of partitions."""

    task_id: int
    stage_index: int
    read_index: int | None
    input_refs: list = field(default_factory=list)
    description: str = ""
    actor_id: int | None = None
    key: str = ""
    first_row: int | None = None  # TaskContext.first_row
    read_payload: bytes | None = None  # the read task, cloudpickled, for a worker that
    # did not inherit the stage's read tasks (a worker started from the zygote)
    target_bytes: int | None = None  # split its outputs to about this size (None: the
    # backend's target): sized for the task's consumer (executor/output_sizing.py)
    block_rows: int | None = None  # ... and to at most this many rows (None: no cap)
    node: int = 0  # the node the executor placed it on (its index in Backend.nodes())
    row_base: int | None = 0  # where its input starts among its read partition's rows


@dataclass(frozen=True)
class Node:
    """One machine of a backend: its logical resources and its memory (bytes; the job's
    memory budget is shared among nodes in proportion to it; 0 on every node: equally).

    >>> Node(16, 8).num_gpus
    8
    """

    num_cpus: float
    num_gpus: float = 0.0
    custom: tuple = ()  # (name, amount) pairs
    memory: int = 0


@dataclass
class TaskOutput:
    """A task produced one output block; ``peak_bytes``: how far its worker's memory
    rose so far, beside its input and outputs (0: not measured); ``warmup``: the task
    is the first of its stage in its worker (thread, process or actor), so the measure
    also holds what the worker keeps once started (imports, allocator arenas)."""

    task_id: int
    ref: BlockRef
    rows: int
    nbytes: int
    peak_bytes: int = 0
    warmup: bool = False


@dataclass
class ActorReady:
    """An actor finished its start-up (its constructor ran) and takes tasks now.
    Optional: an actor of a backend that does not send it counts as started once it
    finished a task."""

    actor_id: int


@dataclass
class TaskStarted:
    """A task began running in its worker. A cluster backend may hold a task in a
    queue first (e.g. while Ray starts a worker process); the executor counts this
    event as progress, so that wait is not blamed on the stage."""

    task_id: int


@dataclass
class TaskDeadLetters:
    """Rows a task sent aside (``on_error="skip"``); sent just before its TaskDone."""

    task_id: int
    rows: list


@dataclass
class TaskDone:
    """A task finished; ``seconds`` is its run time inside the worker, ``peak_bytes``
    how far its worker's resident memory rose while it ran (0: not measured),
    ``warmup`` as for :class:`TaskOutput`."""

    task_id: int
    seconds: float
    peak_bytes: int = 0
    warmup: bool = False


@dataclass
class FailureInfo:
    """Why a task failed, in a form that crosses process boundaries."""

    kind: str  # "user", "return_type", "died", "lost" (an input block), "system"
    op: str | None
    where: str | None
    error: str
    traceback_text: str
    original: BaseException | None = None
    exitcode: int | None = None


@dataclass
class TaskFailed:
    """A task failed; the executor turns this into a user-facing error."""

    task_id: int
    failure: FailureInfo


@dataclass
class ActorFailed:
    """An actor could not start (its constructor raised) or died while idle."""

    actor_id: int
    failure: FailureInfo


@dataclass
class WorkerSetupFailed:
    """A worker process could not load the job's stages (e.g. a module a UDF needs is not
    importable there); the job fails with :class:`WorkerSetupError`."""

    failure: FailureInfo


def describe_failure(exc: BaseException) -> FailureInfo:
    """Classify an exception raised while running a task.

    >>> info = describe_failure(UDFFailure("Map(f)", "row 2", KeyError("x")))
    >>> info.kind, info.op, info.where, info.error
    ('user', 'Map(f)', 'row 2', "KeyError: 'x'")
    """
    if isinstance(exc, UDFReturnTypeError):
        return FailureInfo("return_type", exc.stage, None, str(exc), "", exc)
    op = where = None
    original = exc
    kind = "system"
    if isinstance(exc, UDFFailure):
        op, where, original, kind = exc.op, exc.where, exc.original, "user"
    text = "".join(traceback.format_exception(type(original), original, original.__traceback__))
    return FailureInfo(kind, op, where, f"{type(original).__name__}: {original}", text, original)


def portable(info: FailureInfo) -> FailureInfo:
    """Drop the original exception when it cannot be pickled (to cross a pipe)."""
    try:
        pickle.loads(pickle.dumps(info.original))
    except Exception:
        info.original = None
    return info


def drain(events: queue.Queue, timeout: float) -> list:
    """Every event ready in ``events``, waiting up to ``timeout`` seconds for the first.

    >>> q = queue.Queue(); q.put(1); q.put(2)
    >>> drain(q, 0), drain(q, 0)
    ([1, 2], [])
    """
    out = []
    try:
        out.append(events.get(timeout=timeout) if timeout else events.get_nowait())
        while True:
            out.append(events.get_nowait())
    except queue.Empty:
        pass
    return out


class Backend(ABC):
    """Where tasks run. The streaming executor owns every scheduling decision."""

    can_spill = False  # True: every worker reads this machine's disk (spilled blocks)
    sized_blocks = False  # True: it cuts a task's outputs as Task.target_bytes/block_rows
    # ask (the executor then works them out per task, once, from run-time measurements)

    @classmethod
    def from_options(cls, options) -> Backend:
        """Build the backend from :class:`ExecutionOptions` (a backend may read more
        fields, e.g. the Ray backend's ``address``).

        This default is for a backend whose constructor takes these four keywords, as
        LocalBackend's does; a backend built otherwise overrides it (RayBackend)."""
        make: Callable[..., Backend] = cls  # (Backend itself declares no constructor)
        return make(num_cpus=options.resolved_num_cpus(), num_gpus=options.resolved_num_gpus(),
                    resources=options.resources, start_method=options.local.worker_start_method)

    @abstractmethod
    def start(self, stages: list, target_bytes: int) -> None:
        """Prepare workers for these stages (read tasks are already resolved)."""

    @abstractmethod
    def submit(self, task: Task) -> None:
        """Start a task; its events arrive through :meth:`poll`."""

    @abstractmethod
    def poll(self, timeout: float) -> list:
        """Events (TaskOutput, TaskDone, TaskFailed, ActorFailed; optionally TaskStarted)
        ready within ``timeout`` seconds."""

    @abstractmethod
    def start_actor(self, stage_index: int, actor_id: int, env: dict) -> None:
        """Start a long-lived worker for an actor stage; it builds the stage's
        classes once, with ``env`` (e.g. CUDA_VISIBLE_DEVICES) set first."""

    @abstractmethod
    def stop_actor(self, actor_id: int) -> None:
        """Stop an idle actor and free its worker."""

    @abstractmethod
    def release(self, ref: BlockRef) -> None:
        """Free a block no one needs any more."""

    def worker_notes(self) -> dict[int, str]:
        """Per stage index, where a stage whose worker was chosen at run time ran and
        why (for ``stats()``). Default: none chosen."""
        return {}

    def cancel(self) -> None:
        """Stop the job now, from any thread (its consumer went away): stop running
        tasks, hung ones too; ``poll`` then raises JobCancelled. Default: nothing
        until :meth:`shutdown`."""
        return None

    @abstractmethod
    def shutdown(self) -> None:
        """Stop workers and free every block."""

    @property
    @abstractmethod
    def num_cpus(self) -> int:
        """CPU slots for tasks."""

    def nodes(self) -> list[Node]:
        """The machines tasks run on. Default: one, with all of :meth:`total_resources`
        (the executor then follows their changes). A backend of several nodes places
        each task on :attr:`Task.node` and actor ``a`` on the node it is given in
        :meth:`place_actor`."""
        cpus, gpus, custom = self.total_resources()
        return [Node(cpus, gpus, tuple(sorted(custom.items())))]

    def place_actor(self, actor_id: int, node: int) -> None:
        """The executor chose ``node`` for the actor it starts next with this id
        (called just before :meth:`start_actor`). Default: one node, nothing to do."""
        return None

    def total_resources(self) -> tuple[float, float, dict]:
        """(CPUs, GPUs, custom resources) the executor may hand out.

        Local: what ``streambatch.init`` declared; a cluster backend reports the cluster.
        """
        return float(self.num_cpus), float(getattr(self, "num_gpus", 0.0)), \
            dict(getattr(self, "custom_resources", {}))
