"""Per-stage execution statistics, reported by ``Dataset.stats()``."""

from __future__ import annotations

from dataclasses import dataclass, field

from streambatch.executor import clock


@dataclass
class StageStats:
    """Counters for one physical stage.

    >>> s = StageStats("Map(f)", rows_in=10, rows_out=5, wall_time_s=2.0)
    >>> s.rows_per_s
    2.5
    """

    name: str
    rows_in: int = 0
    rows_out: int = 0
    bytes_out: int = 0
    tasks: int = 0
    task_time_s: float = 0.0
    wall_time_s: float = 0.0
    backpressure_time_s: float = 0.0
    backpressure_reason: str = ""
    actors_peak: int = 0
    retries: int = 0
    errored_rows: int = 0
    actor_restarts: int = 0
    recomputed: int = 0  # tasks re-run to remake lost blocks (executor/recovery.py)
    spilled_bytes: int = 0  # input an exchange moved to disk while it waited (spill.py)
    worker: str = ""  # where a stage whose place was chosen at run time ran, and why
    first_start: float | None = None
    last_end: float | None = None

    @property
    def rows_per_s(self) -> float:
        """Output rows per second of stage wall time."""
        return self.rows_out / self.wall_time_s if self.wall_time_s else 0.0

    def mark_start(self) -> None:
        """Record the first time a task of this stage started."""
        if self.first_start is None:
            self.first_start = clock.now()

    def mark_end(self) -> None:
        """Record a task end and update the stage wall time."""
        self.last_end = clock.now()
        if self.first_start is not None:
            self.wall_time_s = self.last_end - self.first_start


@dataclass
class DatasetStats:
    """What one execution did, stage by stage; ``str()`` is a readable report.

    >>> st = DatasetStats([StageStats("Read", rows_out=3, tasks=1)], 0.5, 100, 1000)
    >>> "Read" in str(st) and st.stages[0].rows_out == 3
    True
    """

    stages: list[StageStats] = field(default_factory=list)
    wall_time_s: float = 0.0
    peak_buffered_bytes: int = 0
    memory_budget: int = 0
    parent: DatasetStats | None = None

    def finish(self, own: list[StageStats], wall_time_s: float,
               workers: dict[int, str] | None = None) -> None:
        """Record this run's stages after those of the run that produced its input;
        ``workers``: where own stages chosen at run time ran (Backend.worker_notes)."""
        for index, note in (workers or {}).items():
            own[index].worker = note
        self.stages = (list(self.parent.stages) if self.parent else []) + own
        self.wall_time_s = wall_time_s

    def __str__(self) -> str:
        lines = [f"Execution: {self.wall_time_s:.3f}s wall, peak buffered "
                 f"{self.peak_buffered_bytes / 2**20:.1f} MiB of {self.memory_budget / 2**20:.0f} MiB budget"]
        for i, s in enumerate(self.stages):
            lines.append(
                f"Stage {i} {s.name}: {s.tasks} tasks, rows in {s.rows_in} out {s.rows_out}, "
                f"{s.bytes_out / 2**20:.2f} MiB out, task time {s.task_time_s:.3f}s, "
                f"wall {s.wall_time_s:.3f}s, {s.rows_per_s:,.0f} rows/s, "
                f"backpressure {s.backpressure_time_s:.3f}s{' (' + s.backpressure_reason + ')' if s.backpressure_reason else ''}"
                + (f", actors up to {s.actors_peak}" if s.actors_peak else "")
                + (f", {s.retries} retried task(s)" if s.retries else "")
                + (f", {s.errored_rows} errored row(s) skipped" if s.errored_rows else "")
                + (f", {s.actor_restarts} actor restart(s)" if s.actor_restarts else "")
                + (f", {s.recomputed} lost block(s) recomputed" if s.recomputed else "")
                + (f", {s.spilled_bytes / 2**20:.1f} MiB spilled to disk" if s.spilled_bytes
                   else "")
                + (f", on {s.worker}" if s.worker else "")
            )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)
