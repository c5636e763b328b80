"""Progress of a running job, per stage, with rows/s, an ETA and the bottleneck stage.

:class:`ProgressReporter` is an execution observer. On a terminal, with
``rich`` installed, it keeps a live display up to date; otherwise it writes
plain log lines, at most one report every ``interval_s`` seconds, and a
summary line per stage when the run ends. ``rich`` stays optional: it is
imported only when a live display starts.

What is shown is a pure function of the stage snapshots
(:func:`render_lines`, :func:`summary_lines`, :func:`bottleneck`), so it is
tested without running anything.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from streambatch.executor.observe import ExecutionObserver, StageSnapshot


# ---- pure rendering --------------------------------------------------------
def format_bytes(n: float) -> str:
    """Bytes in binary units.

    >>> format_bytes(512), format_bytes(1536), format_bytes(10 * 2**20)
    ('512 B', '1.5 KiB', '10.0 MiB')
    """
    if n < 1024:
        return f"{int(n)} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        n /= 1024
        if n < 1024 or unit == "TiB":
            break
    return f"{n:.1f} {unit}"


def format_duration(seconds: float) -> str:
    """A short duration: ``42s``, ``2m05s``, ``1h02m``.

    >>> format_duration(42.4), format_duration(125), format_duration(3720)
    ('42s', '2m05s', '1h02m')
    """
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def is_write(snap: StageSnapshot) -> bool:
    """Whether the stage ends in a write (``...->Write[Parquet]``): its output is one
    record per file written, so its rows are the rows it took in, and its files are
    counted apart.

    >>> is_write(_example(name="Read[Range]->Write[JSON]")), is_write(_example(name="Map(f)"))
    (True, False)
    """
    return snap.name.rsplit("->", 1)[-1].startswith("Write[")


def rows_done(snap: StageSnapshot) -> int:
    """Rows the stage has produced (a write stage: the rows it has written, known when
    the write is a stage of its own; fused after a read, 0).

    >>> rows_done(_example(rows_out=7)), rows_done(_example(name="Write[Parquet]", rows_in=3000,
    ...                                                     rows_out=4))
    (7, 3000)
    """
    return snap.rows_in if is_write(snap) else snap.rows_out


def rows_per_second(snap: StageSnapshot, wall_s: float) -> float:
    """Output rows per second of the run so far (a write stage: rows written).

    >>> rows_per_second(_example(rows_out=300), 1.5)
    200.0
    """
    return rows_done(snap) / wall_s if wall_s > 0 else 0.0


def eta_seconds(snap: StageSnapshot, wall_s: float) -> float | None:
    """Seconds until the stage reaches ``estimated_total_rows`` at its rate so far.

    None when the total is unknown, nothing came out yet, or the stage finished.

    >>> eta_seconds(_example(rows_out=250, estimated_total_rows=1000), 5.0)
    15.0
    >>> eta_seconds(_example(rows_out=250), 5.0) is None
    True
    """
    rate = rows_per_second(snap, wall_s)
    if snap.finished or not snap.estimated_total_rows or rate <= 0:
        return None
    return max(0, snap.estimated_total_rows - rows_done(snap)) / rate


def stage_line(snap: StageSnapshot, wall_s: float) -> str:
    """One line for a stage: rows (of the estimate), rows/s, ETA, running, actors, queued.

    >>> stage_line(_example(rows_out=250, estimated_total_rows=1000, tasks_running=2,
    ...                     queued_bytes=3 * 2**20), 5.0)
    'Stage 1 Map(f): 250/1,000 rows (25%), 50 rows/s, ETA 15s, 2 running, queued 3.0 MiB'
    """
    parts = [*_rows_parts(snap), f"{rows_per_second(snap, wall_s):,.0f} rows/s"]
    if is_write(snap) and not snap.rows_in:
        parts.pop()  # fused after a read: its rows are not counted apart
    if snap.finished:
        parts.append("done")
    else:
        eta = eta_seconds(snap, wall_s)
        if eta is not None:
            parts.append(f"ETA {format_duration(eta)}")
        parts.append(f"{snap.tasks_running} running")
        if snap.actors:
            parts.append(f"{snap.actors} actor" + ("s" if snap.actors > 1 else ""))
        parts.append(f"queued {format_bytes(snap.queued_bytes)}")
    return f"Stage {snap.index} {snap.name}: " + ", ".join(parts)


def _rows_parts(snap: StageSnapshot) -> list[str]:
    """Rows (of the estimate); for a write stage, the rows written and the files.

    >>> _rows_parts(_example(name="Write[Parquet]", rows_in=3000, rows_out=4))
    ['3,000 rows', '4 files']
    >>> _rows_parts(_example(name="Read[Range]->Write[JSON]", rows_out=1))
    ['1 file']
    """
    files = [f"{snap.rows_out:,} file" + ("" if snap.rows_out == 1 else "s")] \
        if is_write(snap) else []
    rows, total = rows_done(snap), snap.estimated_total_rows
    if is_write(snap) and not rows:
        return files
    if not total:
        return [f"{rows:,} rows", *files]
    percent = min(100, 100 * rows // total)
    return [f"{rows:,}/{total:,} rows ({percent}%)", *files]


def bottleneck(snapshots: list[StageSnapshot]) -> str | None:
    """The name of the stage that limits the job now, or None when nothing tells yet.

    The rule, over the stages not finished:

    1. **Largest input backlog in seconds.** A stage's backlog is the time it
       needs to drain its input queue at its measured speed:
       ``queued_partitions * (task_time_s / tasks_done) / slots`` with
       ``slots = max(tasks_running, actors, 1)``. Work piling up in front of
       a stage means the stages before it produce faster than it consumes.
       Stages with no finished task yet (speed unknown) are left out here.
    2. **Otherwise, the largest share of task time** (``task_time_s``) — e.g.
       the read stage of a read-bound job, where nothing queues anywhere.
    3. None when no stage has recorded task time.

    Ties go to the earlier stage.

    >>> read = _example(index=0, name="Read", tasks_done=10, task_time_s=5.0)
    >>> model = _example(index=1, name="Map(Model)", tasks_done=4, task_time_s=8.0,
    ...                  queued_partitions=6, actors=2)
    >>> bottleneck([read, model])       # 6 queued * 2 s per task / 2 actors = 6 s backlog
    'Map(Model)'
    >>> model.queued_partitions = 0
    >>> bottleneck([read, model])       # no backlog: the most task time
    'Map(Model)'
    >>> bottleneck([_example()]) is None
    True
    """
    live = [s for s in snapshots if not s.finished]
    by_backlog = _argmax(live, backlog_seconds)
    if by_backlog is not None:
        return by_backlog.name
    by_time = _argmax(live, lambda s: s.task_time_s)
    return by_time.name if by_time is not None else None


def backlog_seconds(snap: StageSnapshot) -> float:
    """Seconds to drain the stage's queued input at its measured per-task speed.

    >>> backlog_seconds(_example(tasks_done=4, task_time_s=8.0, queued_partitions=6, actors=2))
    6.0
    >>> backlog_seconds(_example(queued_partitions=6))   # no task finished: unknown
    0.0
    """
    if not snap.tasks_done:
        return 0.0
    slots = max(snap.tasks_running, snap.actors, 1)
    return snap.queued_partitions * (snap.task_time_s / snap.tasks_done) / slots


def _argmax(snaps: list[StageSnapshot], key: Callable[[StageSnapshot], float]):
    """The first snapshot with the largest positive key, or None."""
    best, best_value = None, 0.0
    for snap in snaps:
        value = key(snap)
        if value > best_value:
            best, best_value = snap, value
    return best


def render_lines(snapshots: list[StageSnapshot], wall_s: float) -> list[str]:
    """The progress report: elapsed time, one line per stage, the bottleneck.

    >>> read = _example(index=0, name="Read", rows_out=1000, estimated_total_rows=1000,
    ...                 finished=True, tasks_done=4, task_time_s=2.0)
    >>> model = _example(index=1, name="Map(Model)", rows_out=400, estimated_total_rows=1000,
    ...                  tasks_done=2, task_time_s=3.0, tasks_running=1, actors=1,
    ...                  queued_partitions=2, queued_bytes=2**20)
    >>> for line in render_lines([read, model], 10.0): print(line)
    elapsed 10s
    Stage 0 Read: 1,000/1,000 rows (100%), 100 rows/s, done
    Stage 1 Map(Model): 400/1,000 rows (40%), 40 rows/s, ETA 15s, 1 running, 1 actor, queued 1.0 MiB
    bottleneck: stage Map(Model)
    """
    lines = [f"elapsed {format_duration(wall_s)}"]
    lines += [stage_line(s, wall_s) for s in snapshots]
    slowest = bottleneck(snapshots)
    if slowest is not None:
        lines.append(f"bottleneck: stage {slowest}")
    return lines


def summary_lines(snapshots: list[StageSnapshot], wall_s: float, ok: bool) -> list[str]:
    """The final report: how the run ended, then one summary line per stage.

    >>> snap = _example(index=0, name="Read", rows_out=1000, tasks_done=4, task_time_s=2.5,
    ...                 finished=True)
    >>> write = _example(index=1, name="Write[Parquet]", rows_in=1000, rows_out=4, tasks_done=4,
    ...                  task_time_s=0.1, finished=True)
    >>> for line in summary_lines([snap, write], 4.0, ok=True): print(line)
    finished in 4s
    Stage 0 Read: done, 1,000 rows, 250 rows/s, 4 tasks, task time 2.5s
    Stage 1 Write[Parquet]: done, 1,000 rows, 4 files, 250 rows/s, 4 tasks, task time 0.1s
    """
    head = f"finished in {format_duration(wall_s)}" if ok else \
        f"stopped after {format_duration(wall_s)} (error or early stop)"
    return [head] + [_summary_line(s, wall_s) for s in snapshots]


def _summary_line(snap: StageSnapshot, wall_s: float) -> str:
    rate = [] if is_write(snap) and not snap.rows_in else \
        [f"{rows_per_second(snap, wall_s):,.0f} rows/s"]
    parts = ["done" if snap.finished else "not finished",
             *(p.split("/")[0] + " rows" if "/" in p else p for p in _rows_parts(snap)),
             *rate, f"{snap.tasks_done} tasks", f"task time {snap.task_time_s:.1f}s"]
    if snap.backpressure_time_s > 0:
        parts.append(f"backpressure {snap.backpressure_time_s:.1f}s")
    return f"Stage {snap.index} {snap.name}: " + ", ".join(parts)


def _example(**fields) -> StageSnapshot:
    """A snapshot with zero defaults, for examples and tests."""
    base: dict[str, Any] = dict(
        index=1, name="Map(f)", rows_in=0, rows_out=0, tasks_done=0, tasks_running=0,
        queued_partitions=0, queued_bytes=0, actors=0, finished=False,
        backpressure_time_s=0.0, task_time_s=0.0, estimated_total_rows=None)
    base.update(fields)
    return StageSnapshot(**base)


# ---- the observer ----------------------------------------------------------
def rich_available() -> bool:
    """Whether ``rich`` can be imported (checked without importing it).

    >>> isinstance(rich_available(), bool)
    True
    """
    if "rich" in sys.modules:
        return True
    return importlib.util.find_spec("rich") is not None


def is_tty(stream: TextIO) -> bool:
    """Whether ``stream`` is a terminal.

    >>> import io
    >>> is_tty(io.StringIO())
    False
    """
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class ProgressReporter(ExecutionObserver):
    """Shows per-stage progress while a job runs and a summary when it ends.

    ``live``: True for a rich live display, False for plain lines, None (the
    default) for live when ``rich`` is installed and ``stream`` is a terminal.
    Plain mode writes :func:`render_lines` at most once every ``interval_s``
    seconds of ``clock`` (injectable for tests), then :func:`summary_lines`.

    >>> import io
    >>> now = [0.0]
    >>> out = io.StringIO()
    >>> rep = ProgressReporter(out, interval_s=5, clock=lambda: now[0])
    >>> rep.on_start(["Read"])
    >>> snap = _example(index=0, name="Read", rows_out=50, tasks_done=1, task_time_s=1.0)
    >>> now[0] = 1.0; rep.on_tick([snap], 1.0)       # too soon: nothing written
    >>> now[0] = 5.0; rep.on_tick([snap], 5.0)
    >>> print(out.getvalue(), end="")
    elapsed 5s
    Stage 0 Read: 50 rows, 10 rows/s, 0 running, queued 0 B
    bottleneck: stage Read
    """

    def __init__(self, stream: TextIO | None = None, *, interval_s: float = 5.0,
                 live: bool | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.interval_s = interval_s
        self.live = (is_tty(self.stream) and rich_available()) if live is None else live
        self._clock = clock
        self._last_report = clock()
        self._display: _LiveDisplay | None = None

    def on_start(self, stage_names: list[str]) -> None:
        """Start the live display (live mode) and the report interval."""
        self._last_report = self._clock()
        if self.live:
            self._display = _LiveDisplay(self.stream)

    def on_tick(self, snapshots: list[StageSnapshot], wall_s: float) -> None:
        """Refresh the live display, or write a plain report if ``interval_s`` passed."""
        if self._display is not None:
            self._display.show(render_lines(snapshots, wall_s))
            return
        now = self._clock()
        if now - self._last_report >= self.interval_s:
            self._last_report = now
            self._write(render_lines(snapshots, wall_s))

    def on_finish(self, snapshots: list[StageSnapshot], wall_s: float, ok: bool) -> None:
        """Show the summary and stop the live display."""
        lines = summary_lines(snapshots, wall_s, ok)
        if self._display is not None:
            self._display.close(lines)
            self._display = None
        else:
            self._write(lines)

    def _write(self, lines: list[str]) -> None:
        self.stream.write("\n".join(lines) + "\n")
        self.stream.flush()


class _LiveDisplay:
    """A rich ``Live`` region showing lines of text (rich is imported here, lazily)."""

    def __init__(self, stream: TextIO) -> None:
        from rich.console import Console
        from rich.live import Live
        from rich.text import Text

        self._text = Text
        self._live = Live(Text(""), console=Console(file=stream), refresh_per_second=4,
                          transient=False)
        self._live.start()

    def show(self, lines: list[str]) -> None:
        self._live.update(self._text("\n".join(lines)))

    def close(self, lines: list[str]) -> None:
        self._live.update(self._text("\n".join(lines)), refresh=True)
        self._live.stop()
