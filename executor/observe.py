"""Observers: what the executor tells progress bars, tracers and tests as it runs.

The executor calls these hooks from its control loop (one thread). An observer
must be cheap: it runs between scheduling decisions.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class StageSnapshot:
    """A stage's state at one instant of the run."""

    index: int
    name: str
    rows_in: int
    rows_out: int
    tasks_done: int
    tasks_running: int
    queued_partitions: int
    queued_bytes: int
    actors: int
    finished: bool
    backpressure_time_s: float
    task_time_s: float
    estimated_total_rows: int | None


class ExecutionObserver:
    """Base observer: every hook does nothing; subclasses override what they need.

    >>> obs = ExecutionObserver()
    >>> obs.on_task_start(0, "Read", 1, "partition 0", "worker-1")
    """

    def on_start(self, stage_names: list[str]) -> None:
        """The run starts with these stages (in order)."""

    def on_task_start(self, stage_index: int, stage_name: str, task_id: int,
                      description: str, worker: str) -> None:
        """A task was handed to the backend."""

    def on_task_end(self, stage_index: int, task_id: int, seconds: float, rows_out: int,
                    ok: bool) -> None:
        """A task finished (``ok``) or failed."""

    def on_actor_change(self, stage_index: int, stage_name: str, actors: int) -> None:
        """An actor pool grew or shrank to ``actors``."""

    def on_tick(self, snapshots: list[StageSnapshot], wall_s: float) -> None:
        """Periodic state (about every 0.2 s while the run makes progress)."""

    def on_finish(self, snapshots: list[StageSnapshot], wall_s: float, ok: bool) -> None:
        """The run ended (``ok`` False on error or early stop by the consumer)."""
