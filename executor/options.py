"""Execution options: one small object instead of a growing keyword list."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

MiB = 2**20


def detected_cpus() -> int:
    """CPUs this process may use (affinity-aware).

    >>> detected_cpus() >= 1
    True
    """
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


START_METHODS = ("forkserver", "spawn", "fork")


def check_start_method(method: str) -> str:
    """``method`` if it names how worker processes start, else a ValueError listing them.

    "forkserver" (the default) forks workers from a clean zygote process, "spawn"
    starts each in a fresh interpreter, "fork" forks them from the driver (fastest,
    but unsafe once the driver runs threads: Polars, torch, CUDA).

    >>> check_start_method("thread")
    Traceback (most recent call last):
    ...
    ValueError: worker_start_method='thread' is not one of 'forkserver', 'spawn', 'fork' ...
    """
    if method not in START_METHODS:
        raise ValueError(
            f"worker_start_method={method!r} is not one of "
            f"{', '.join(repr(m) for m in START_METHODS)} ('forkserver', the default, "
            f"starts workers from a clean process; 'fork' is faster to start but unsafe "
            f"once the driver runs threads)")
    return method


WORKER_MODES = ("auto", "threads", "processes")


@dataclass(frozen=True)
class LocalOptions:
    """Options of the embedded local backend.

    ``worker_start_method``: see :func:`check_start_method`. ``worker_mode``: where
    UDF stages run: "auto" (processes for functions that hold the GIL, threads for
    those that release it), or all on "threads", or all in "processes".

    >>> LocalOptions(worker_mode="threads").worker_start_method
    'forkserver'
    >>> LocalOptions(worker_mode="gpu")
    Traceback (most recent call last):
    ...
    ValueError: worker_mode='gpu'; expected one of: auto, threads, processes
    """

    worker_start_method: str = "forkserver"
    worker_mode: str = "auto"

    def __post_init__(self) -> None:
        check_start_method(self.worker_start_method)
        if self.worker_mode not in WORKER_MODES:
            raise ValueError(f"worker_mode={self.worker_mode!r}; expected one of: "
                             f"{', '.join(WORKER_MODES)}")


@dataclass(frozen=True)
class RayOptions:
    """Options of the Ray backend: the cluster to join (``address``: "auto" on a cluster
    node, "ray://host:10001"; None starts a private local instance) and how often Ray
    itself re-runs a task whose worker died (``max_retries``; 0: the executor recovers
    from lineage instead).

    >>> RayOptions(address="auto").max_retries
    0
    """

    address: str | None = None
    max_retries: int = 0


def default_memory_budget() -> int:
    """Half of the memory available now, at least 256 MiB.

    >>> default_memory_budget() >= 256 * 2**20
    True
    """
    import psutil

    return max(256 * MiB, psutil.virtual_memory().available // 2)


_LIMITS = ("cpu", "gpu", "object_store_memory", "memory")


@dataclass
class ExecutionResources:
    """Ray Data's resource limits, as ``execution_options.resource_limits`` reads and sets
    them: ``cpu`` is ``num_cpus``, ``gpu`` is ``num_gpus``, ``object_store_memory`` is
    the memory budget (None: the default). Setting an attribute of the object read from
    ``resource_limits`` sets the options it came from (as in Ray). ``memory`` (Ray's
    logical heap memory) is accepted and not applied.

    >>> opts = ExecutionOptions()
    >>> opts.resource_limits = ExecutionResources(cpu=4, object_store_memory=2e9)
    >>> opts.num_cpus, opts.memory_budget
    (4, 2000000000)
    >>> opts.resource_limits.gpu = 1
    >>> opts.num_gpus, opts.resource_limits.copy(cpu=2).cpu
    (1, 2)
    """

    cpu: float | None = None
    gpu: float | None = None
    object_store_memory: float | str | None = None
    memory: float | None = None
    _owner: ExecutionOptions | None = field(default=None, repr=False, compare=False)

    def __setattr__(self, name: str, value) -> None:
        object.__setattr__(self, name, value)
        owner = self.__dict__.get("_owner")
        if owner is not None and name in _LIMITS:
            owner.resource_limits = self

    @classmethod
    def for_limits(cls, cpu: float | None = None, gpu: float | None = None,
                   object_store_memory: float | None = None,
                   memory: float | None = None) -> ExecutionResources:
        """Limits (Ray's constructor for them; None: the default)."""
        return cls(cpu, gpu, object_store_memory, memory)

    def copy(self, **changes) -> ExecutionResources:
        """A detached copy with ``changes`` (``cpu=``, ``gpu=``...)."""
        values = {name: getattr(self, name) for name in _LIMITS}
        return ExecutionResources(**{**values, **changes})


def _cpu_slots(cpu) -> int | None:
    """``resource_limits.cpu`` as whole CPU slots.

    >>> _cpu_slots(4.0), _cpu_slots(None)
    (4, None)
    """
    if cpu is None:
        return None
    if isinstance(cpu, bool) or not isinstance(cpu, (int, float)) or cpu < 1 or cpu != int(cpu):
        raise ValueError(f"execution_options.resource_limits.cpu={cpu!r}; expected a whole "
                         "number of CPU slots >= 1 (or None for every detected core)")
    return int(cpu)


@dataclass
class ExecutionOptions:
    """How the streaming executor runs a plan.

    ``memory_budget`` is bytes or a size such as ``"2GB"`` (parsed as ``sb.init``'s,
    also when set on the object later); ``resource_limits`` is Ray Data's view of
    ``num_cpus``, ``num_gpus`` and ``memory_budget`` (see :class:`ExecutionResources`).

    >>> opts = ExecutionOptions(preserve_order=True, memory_budget=64 * 2**20)
    >>> opts.preserve_order, opts.resolved_memory_budget()
    (True, 67108864)
    >>> opts.memory_budget = "1GB"
    >>> opts.memory_budget
    1000000000
    """

    preserve_order: bool = False
    memory_budget: int | None = None
    num_cpus: int | None = None
    num_gpus: float | None = None
    resources: dict = field(default_factory=dict)
    target_partition_bytes: int = 128 * MiB
    no_progress_timeout_s: float = 1800.0
    scheduler: str = "adaptive"
    max_task_retries: int = 3
    max_errored_rows: int | None = None
    actor_queue_depth: int = 2
    actor_idle_timeout_s: float = 1.0
    trace_path: str | None = None
    progress: bool | None = None  # None: on when stderr is a terminal (progress.py)
    local: LocalOptions = field(default_factory=LocalOptions)
    ray: RayOptions = field(default_factory=RayOptions)

    def __setattr__(self, name: str, value) -> None:
        if name == "memory_budget" and isinstance(value, (str, float)):
            from streambatch.validate import byte_size

            value = byte_size(value, f"execution_options.memory_budget={value!r}")
        object.__setattr__(self, name, value)

    @property
    def resource_limits(self) -> ExecutionResources:
        """Ray Data's limits: ``cpu`` = ``num_cpus``, ``gpu`` = ``num_gpus``,
        ``object_store_memory`` = ``memory_budget``; setting them sets those."""
        return ExecutionResources(self.num_cpus, self.num_gpus, self.memory_budget,
                                  _owner=self)

    @resource_limits.setter
    def resource_limits(self, limits: ExecutionResources) -> None:
        if not isinstance(limits, ExecutionResources):
            raise TypeError("execution_options.resource_limits must be an ExecutionResources "
                            f"(streambatch.executor.options), got {type(limits).__name__}")
        if limits.gpu is not None and (isinstance(limits.gpu, bool) or limits.gpu < 0):
            raise ValueError(f"execution_options.resource_limits.gpu={limits.gpu!r}; "
                             "expected a number >= 0")
        self.num_cpus = _cpu_slots(limits.cpu)
        self.num_gpus = limits.gpu
        memory = limits.object_store_memory
        if memory is not None:
            from streambatch.validate import byte_size

            memory = byte_size(memory, "execution_options.resource_limits.object_store_memory="
                                       f"{memory!r}")
        self.memory_budget = memory

    def resolved_memory_budget(self) -> int:
        """The memory budget in bytes (derived from RAM when unset)."""
        return self.memory_budget if self.memory_budget else default_memory_budget()

    def resolved_num_cpus(self) -> int:
        """CPU slots for tasks (detected cores when unset)."""
        return self.num_cpus if self.num_cpus else detected_cpus()

    def resolved_num_gpus(self) -> float:
        """Logical GPUs (detected CUDA devices when unset).

        >>> ExecutionOptions(num_gpus=0.5).resolved_num_gpus()
        0.5
        """
        if self.num_gpus is not None:
            return self.num_gpus
        from streambatch.executor.resources import detected_gpus

        return float(detected_gpus())

    def partition_bytes(self) -> int:
        """Target output partition size, kept small enough to fit the budget.

        Several partitions per CPU must fit in the budget at once, so the
        target shrinks under a tight budget.

        >>> ExecutionOptions(memory_budget=64 * 2**20, num_cpus=2).partition_bytes() == 4 * 2**20
        True
        """
        share = self.resolved_memory_budget() // (8 * self.resolved_num_cpus())
        return max(1 * MiB, min(self.target_partition_bytes, share))
