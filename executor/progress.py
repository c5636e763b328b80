"""Progress of a running job, per stage, with rows/s, an ETA and the bottleneck stage.

:class:`ProgressReporter` is an execution observer. On a terminal it keeps a few
lines (one per stage) at the bottom of the screen and redraws them in place, at
most ``max_redraws_per_s`` times a second; otherwise (a log, a pipe) it writes
plain lines, at most one report every ``interval_s`` seconds. When the run ends
(completed, failed or stopped early by its consumer) the live lines are erased
and a summary line per stage is written; nothing is written after that.

Whether a run reports at all: :func:`progress_enabled` (``progress=None``, the
default: only when stderr is a terminal).

What is shown is a pure function of the stage snapshots and of the ages of the
tasks running now (:func:`render_lines`, :func:`summary_lines`,
:func:`bottleneck`), so it is tested without running anything.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
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


RunningAges = Mapping[int, Sequence[float]]
"""Per stage index, the seconds each of its running tasks has run so far."""


def bottleneck(snapshots: list[StageSnapshot], running: RunningAges | None = None) -> str | None:
    """The name of the stage that limits the job now, or None when nothing tells yet.

    ``running`` gives, per stage index, the ages of its tasks still running: a task
    that has run for a while is evidence of the stage's speed before it finishes
    (see :func:`task_time_estimate`), so a slow stage is named while its first
    tasks are still running. The rule, over the stages not finished:

    1. **Largest input backlog in seconds.** A stage's backlog is the time it
       needs to drain its input queue at its estimated speed:
       ``queued_partitions * task_time_estimate / slots`` with
       ``slots = max(tasks_running, actors, 1)``. Work piling up in front of
       a stage means the stages before it produce faster than it consumes.
       Stages with no finished or running task (speed unknown) are left out here.
    2. **Otherwise, the most busy time**: task time of finished tasks plus the
       ages of running ones -- e.g. the read stage of a read-bound job, where
       nothing queues anywhere.
    3. None when no stage has recorded task time or runs a task.

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

    A slow stage none of whose tasks has finished, with a task running for 2 s:

    >>> fast = _example(index=0, name="Map(fast)", tasks_done=8, task_time_s=0.4,
    ...                 queued_partitions=1)
    >>> slow = _example(index=1, name="Map(slow)", tasks_running=1, queued_partitions=3)
    >>> bottleneck([fast, slow]), bottleneck([fast, slow], {1: [2.0]})
    ('Map(fast)', 'Map(slow)')
    """
    ages = {s.index: _executing(s, (running or {}).get(s.index, ())) for s in snapshots}
    live = [s for s in snapshots if not s.finished]
    by_backlog = _argmax(live, lambda s: backlog_seconds(s, ages[s.index]))
    if by_backlog is not None:
        return by_backlog.name
    by_time = _argmax(live, lambda s: s.task_time_s + sum(ages[s.index]))
    return by_time.name if by_time is not None else None


def _executing(snap: StageSnapshot, ages: Sequence[float]) -> Sequence[float]:
    """The ages of the tasks that run now: on an actor pool, tasks wait in each actor's
    queue behind the one it runs, so only the oldest (one per actor) count.

    >>> _executing(_example(actors=2), [0.1, 3.0, 0.2, 2.0])
    [3.0, 2.0]
    """
    return sorted(ages, reverse=True)[:snap.actors] if snap.actors else ages


def task_time_estimate(snap: StageSnapshot, ages: Sequence[float] = ()) -> float | None:
    """The stage's mean task time as far as known now: the finished tasks' times,
    and, as lower bounds of their times, the ages of running tasks that have already
    run longer than that mean (all running tasks while none has finished). None
    when the stage has no finished task and no running one.

    >>> task_time_estimate(_example(tasks_done=4, task_time_s=2.0))
    0.5
    >>> task_time_estimate(_example(tasks_done=4, task_time_s=2.0), [0.1, 3.0])  # (2 + 3) / 5
    1.0
    >>> task_time_estimate(_example(), [1.0, 2.0]), task_time_estimate(_example()) is None
    (1.5, True)
    """
    mean = snap.task_time_s / snap.tasks_done if snap.tasks_done else 0.0
    longer = [a for a in ages if a > mean]
    count = snap.tasks_done + len(longer)
    return (snap.task_time_s + sum(longer)) / count if count else None


def backlog_seconds(snap: StageSnapshot, ages: Sequence[float] = ()) -> float:
    """Seconds to drain the stage's queued input at its estimated per-task speed
    (``ages``: of its running tasks, see :func:`task_time_estimate`).

    >>> backlog_seconds(_example(tasks_done=4, task_time_s=8.0, queued_partitions=6, actors=2))
    6.0
    >>> backlog_seconds(_example(queued_partitions=6))   # nothing finished or running: unknown
    0.0
    >>> backlog_seconds(_example(queued_partitions=6, tasks_running=2), [1.0, 0.5])
    2.25
    """
    estimate = task_time_estimate(snap, ages)
    if not estimate:
        return 0.0
    slots = max(snap.tasks_running, snap.actors, 1)
    return snap.queued_partitions * estimate / slots


def _argmax(snaps: list[StageSnapshot], key: Callable[[StageSnapshot], float]):
    """The first snapshot with the largest positive key, or None."""
    best, best_value = None, 0.0
    for snap in snaps:
        value = key(snap)
        if value > best_value:
            best, best_value = snap, value
    return best


def render_lines(snapshots: list[StageSnapshot], wall_s: float,
                 running: RunningAges | None = None) -> list[str]:
    """The progress report: elapsed time, one line per stage, the bottleneck
    (``running``: see :func:`bottleneck`).

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
    slowest = bottleneck(snapshots, running)
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


def progress_enabled(setting: bool | None, stream: TextIO | None = None) -> bool:
    """Whether a run reports progress: ``setting`` True or False forces it on or off;
    None (the default) turns it on only when ``stream`` (default: ``sys.stderr``, as it
    is now) is a terminal, so logs, pipes, pytest and doctests stay clean.

    >>> import io
    >>> progress_enabled(None, io.StringIO()), progress_enabled(True, io.StringIO())
    (False, True)
    """
    if setting is not None:
        return bool(setting)
    return is_tty(sys.stderr if stream is None else stream)


class ProgressReporter(ExecutionObserver):
    """Shows per-stage progress while a job runs and a summary when it ends.

    ``live``: True to redraw the report in place on a terminal, False for plain
    lines, None (the default) for live when ``stream`` is a terminal. Live mode
    redraws at most ``max_redraws_per_s`` times a second; plain mode writes
    :func:`render_lines` at most once every ``interval_s`` seconds. Both end with
    :func:`summary_lines`. Times come from ``clock`` (injectable for tests); the ages
    of running tasks, which name a slow stage before its first task ends, come from
    the task start and end events.

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
                 live: bool | None = None, clock: Callable[[], float] = time.monotonic,
                 max_redraws_per_s: float = 5.0) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.interval_s = interval_s
        self.live = is_tty(self.stream) if live is None else live
        self.redraw_s = 1.0 / max_redraws_per_s
        self._clock = clock
        self._last_report = clock()
        self._started: dict[int, tuple[int, float]] = {}  # task id -> stage, start time
        self._board: _Board | None = None
        self._done = False

    def on_start(self, stage_names: list[str]) -> None:
        """Start the report interval (and, live, this run's lines on the terminal)."""
        self._last_report = self._clock()
        self._started.clear()
        self._done = False
        if self.live:
            self._board = _board_for(self.stream, self)

    def on_task_start(self, stage_index: int, stage_name: str, task_id: int,
                      description: str, worker: str) -> None:
        """Note when the task started: its age is evidence of its stage's speed."""
        self._started[task_id] = (stage_index, self._clock())

    def on_task_end(self, stage_index: int, task_id: int, seconds: float, rows_out: int,
                    ok: bool) -> None:
        self._started.pop(task_id, None)

    def running_ages(self) -> dict[int, list[float]]:
        """Per stage index, how long each of its running tasks has run so far."""
        now = self._clock()
        ages: dict[int, list[float]] = {}
        for stage, started in self._started.values():
            ages.setdefault(stage, []).append(max(0.0, now - started))
        return ages

    def on_tick(self, snapshots: list[StageSnapshot], wall_s: float) -> None:
        """Redraw the live lines (rate-limited), or write a plain report if
        ``interval_s`` passed."""
        if self._done:
            return
        now = self._clock()
        if self._board is not None:
            self._board.show(self, render_lines(snapshots, wall_s, self.running_ages()),
                             now, self.redraw_s)
            return
        if now - self._last_report >= self.interval_s:
            self._last_report = now
            self._write(render_lines(snapshots, wall_s, self.running_ages()))

    def on_finish(self, snapshots: list[StageSnapshot], wall_s: float, ok: bool) -> None:
        """Erase the live lines and write the summary; nothing is written after it."""
        if self._done:
            return
        self._done = True
        self._started.clear()
        lines = summary_lines(snapshots, wall_s, ok)
        if self._board is not None:
            self._board.leave(self, lines)
            self._board = None
        else:
            self._write(lines)

    def _write(self, lines: list[str]) -> None:
        _write(self.stream, "\n".join(lines) + "\n")


def _write(stream: TextIO, text: str) -> None:
    """Write and flush; a closed or broken stream never fails the job."""
    try:
        stream.write(text)
        stream.flush()
    except (OSError, ValueError):
        pass


UP, CLEAR_DOWN = "\x1b[{}A", "\x1b[J"  # cursor up n lines; erase to the end of the screen


class _Board:
    """The live lines at the bottom of one terminal: those of every run reporting to
    it (runs nested in a UDF or iterated side by side share it), redrawn in place --
    cursor up over what was drawn, erase, draw -- at most once per ``min_s``. A run
    that ends leaves its summary above the others' lines.

    >>> import io
    >>> out = io.StringIO()
    >>> board = _Board(out)
    >>> board.join("a"); board.show("a", ["elapsed 0s", "Stage 0 Read: 5 rows"], 1.0, 0.2)
    >>> board.show("a", ["elapsed 0s", "Stage 0 Read: 9 rows"], 1.1, 0.2)  # too soon
    >>> board.show("a", ["elapsed 1s", "Stage 0 Read: 9 rows"], 1.5, 0.2)
    >>> board.leave("a", ["finished in 1s"])
    >>> for line in out.getvalue().split("\\n"): print(repr(line.replace("\\x1b", "ESC")))
    'elapsed 0s'
    'Stage 0 Read: 5 rows'
    '\\rESC[2AESC[Jelapsed 1s'
    'Stage 0 Read: 9 rows'
    '\\rESC[2AESC[Jfinished in 1s'
    ''
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.lock = threading.Lock()
        self.runs: dict[int, list[str]] = {}  # id of a reporter -> its lines, in join order
        self.drawn = 0  # terminal rows the live lines take now
        self.last_draw = float("-inf")

    def join(self, run: object) -> None:
        with self.lock:
            self.runs[id(run)] = []

    def show(self, run: object, lines: list[str], now: float, min_s: float) -> None:
        with self.lock:
            self.runs[id(run)] = lines
            if now - self.last_draw >= min_s - 1e-9:  # 5 a second: 0.2 s apart
                self.last_draw = now
                _write(self.stream, self._erase() + self._draw())

    def leave(self, run: object, summary: list[str]) -> None:
        with _boards_lock, self.lock:
            self.runs.pop(id(run), None)
            text = self._erase() + "".join(line + "\n" for line in summary)
            _write(self.stream, text + self._draw())
            if not self.runs and _boards.get(id(self.stream)) is self:
                del _boards[id(self.stream)]

    def _erase(self) -> str:
        text = "\r" + UP.format(self.drawn) + CLEAR_DOWN if self.drawn else ""
        self.drawn = 0
        return text

    def _draw(self) -> str:
        columns, rows = _terminal_size(self.stream)
        lines = [line for run in self.runs.values() for line in run][-max(1, rows - 1):]
        self.drawn = len(lines)
        return "".join(line[:columns - 1] + "\n" for line in lines)


_boards: dict[int, _Board] = {}
_boards_lock = threading.Lock()


def _board_for(stream: TextIO, run: object) -> _Board:
    """The board of ``stream`` (one per stream while runs report to it), joined by
    ``run``."""
    with _boards_lock:
        board = _boards.get(id(stream))
        if board is None or board.stream is not stream:
            board = _boards[id(stream)] = _Board(stream)
        board.join(run)
        return board


def _terminal_size(stream: TextIO) -> tuple[int, int]:
    """Columns and rows of the terminal ``stream`` writes to (else $COLUMNS / $LINES,
    else 120 x 40): live lines are cut to fit, as a wrapped line would break the
    redraw."""
    try:
        columns, rows = os.get_terminal_size(stream.fileno())
    except (AttributeError, ValueError, OSError):
        columns = rows = 0
    if columns <= 0 or rows <= 0:  # not a terminal, or one that does not say its size
        env = os.environ
        columns = int(env["COLUMNS"]) if env.get("COLUMNS", "").isdigit() else 120
        rows = int(env["LINES"]) if env.get("LINES", "").isdigit() else 40
    return max(20, columns), max(2, rows)
