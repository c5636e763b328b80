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


@dataclass
class ExecutionOptions:
    """How the streaming executor runs a plan.

    >>> opts = ExecutionOptions(preserve_order=True, memory_budget=64 * 2**20)
    >>> opts.preserve_order, opts.resolved_memory_budget()
    (True, 67108864)
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
    progress: bool | None = False
    local: LocalOptions = field(default_factory=LocalOptions)
    ray: RayOptions = field(default_factory=RayOptions)

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
