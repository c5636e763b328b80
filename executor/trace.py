"""A Chrome/Perfetto timeline of every task, recorded by an execution observer.

:class:`TraceRecorder` turns the executor's hooks into trace events and writes
them as one JSON file when the run ends; open it in ``chrome://tracing`` or
https://ui.perfetto.dev. The file holds:

- one complete event (``"ph": "X"``) per task: ``name`` is the stage name,
  ``tid`` a lane per worker, ``args`` the task description, rows out and
  whether it succeeded;
- counter events (``"ph": "C"``) per stage: ``"<stage> queued_bytes"`` and
  ``"<stage> actors"``, written only when the value changes;
- metadata events (``"ph": "M"``) naming the process and each lane.

Times are microseconds since ``on_start``. :func:`load_trace`,
:func:`task_intervals` and :func:`overlap_seconds` read a trace back, so a
test can check that two stages ran at the same time.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

from streambatch.executor.observe import ExecutionObserver, StageSnapshot

PID = 1


@dataclass
class _OpenTask:
    """A task handed to the backend whose end has not been seen yet."""

    stage_name: str
    description: str
    worker: str
    dispatch_us: int


class TraceRecorder(ExecutionObserver):
    """Records every task as a trace event and writes the trace file in ``on_finish``.

    A task's event ends when ``on_task_end`` arrives and lasts the ``seconds``
    the backend measured (never starting before the task was dispatched), so
    time a task spent queued behind another one on the same actor is not drawn
    as work. Tasks of one worker that overlap anyway (threads sharing a
    worker name) go to extra lanes named ``"<worker> #2"``, ``"#3"``...
    Tasks still running at ``on_finish`` are drawn up to the end with
    ``"finished": False`` in their args.

    ``clock`` returns seconds (``time.perf_counter`` by default; tests inject one).

    >>> import tempfile, os
    >>> now = [0.0]
    >>> with tempfile.TemporaryDirectory() as d:
    ...     rec = TraceRecorder(os.path.join(d, "trace.json"), clock=lambda: now[0])
    ...     rec.on_start(["Read"])
    ...     now[0] = 0.1; rec.on_task_start(0, "Read", 7, "partition 0", "worker-1")
    ...     now[0] = 0.5; rec.on_task_end(0, 7, seconds=0.3, rows_out=100, ok=True)
    ...     rec.on_finish([], wall_s=0.5, ok=True)
    ...     [(e["ts"], e["dur"], e["args"]["rows_out"]) for e in load_trace(rec.path) if e["ph"] == "X"]
    [(200000, 300000, 100)]
    """

    def __init__(self, path: str, *, clock: Callable[[], float] = time.perf_counter) -> None:
        self.path = path
        self._clock = clock
        self._reset()

    def _reset(self) -> None:
        self._t0 = self._clock()
        self._labels: list[str] = []
        self._open: dict[int, _OpenTask] = {}
        self._lanes: dict[str, list[list[int]]] = {}  # worker -> [[tid, last_end_us], ...]
        self._last_counter: dict[str, float] = {}
        self._meta: list[dict] = [_process_name("streambatch")]
        self._events: list[dict] = []

    # ---- hooks --------------------------------------------------------
    def on_start(self, stage_names: list[str]) -> None:
        """Begin a fresh trace; time zero is now."""
        self._reset()
        self._labels = stage_labels(stage_names)

    def on_task_start(self, stage_index: int, stage_name: str, task_id: int,
                      description: str, worker: str) -> None:
        """Remember the task until it ends; give its worker a lane."""
        self._lane_list(worker)
        self._open[task_id] = _OpenTask(stage_name, description, worker, self._now_us())

    def on_task_end(self, stage_index: int, task_id: int, seconds: float, rows_out: int,
                    ok: bool) -> None:
        """Add the task's complete event (an unknown ``task_id`` is ignored)."""
        task = self._open.pop(task_id, None)
        if task is None:
            return
        end = self._now_us()
        start = max(task.dispatch_us, end - round(seconds * 1e6))
        args = {"description": task.description, "rows_out": rows_out, "ok": ok}
        self._add_task(task, start, end, args)

    def on_actor_change(self, stage_index: int, stage_name: str, actors: int) -> None:
        """Add an actors counter point for the stage."""
        self._counter(self._label(stage_index, stage_name), "actors", actors, self._now_us())

    def on_tick(self, snapshots: list[StageSnapshot], wall_s: float) -> None:
        """Add counter points for queued bytes and actors that changed."""
        self._snapshot_counters(snapshots, self._now_us())

    def on_finish(self, snapshots: list[StageSnapshot], wall_s: float, ok: bool) -> None:
        """Close still-running tasks, add final counters and write the file."""
        end = self._now_us()
        self._snapshot_counters(snapshots, end)
        for task in self._open.values():
            args = {"description": task.description, "rows_out": 0, "ok": False,
                    "finished": False}
            self._add_task(task, task.dispatch_us, end, args)
        self._open.clear()
        write_json_atomic(self.path, {"traceEvents": self.events(), "displayTimeUnit": "ms",
                                      "otherData": {"ok": ok, "wall_s": wall_s}})

    # ---- events -------------------------------------------------------
    def events(self) -> list[dict]:
        """The events recorded so far: metadata first, then tasks and counters."""
        return self._meta + self._events

    def _now_us(self) -> int:
        return round((self._clock() - self._t0) * 1e6)

    def _label(self, stage_index: int, stage_name: str) -> str:
        if 0 <= stage_index < len(self._labels):
            return self._labels[stage_index]
        return stage_name

    def _add_task(self, task: _OpenTask, start: int, end: int, args: dict) -> None:
        event = {"name": task.stage_name, "cat": "task", "ph": "X", "ts": start,
                 "dur": end - start, "pid": PID, "tid": self._place(task.worker, start, end),
                 "args": args}
        if not args["ok"]:
            event["cname"] = "terrible"  # drawn red in chrome://tracing
        self._events.append(event)

    def _snapshot_counters(self, snapshots: list[StageSnapshot], ts: int) -> None:
        for snap in snapshots:
            label = self._label(snap.index, snap.name)
            self._counter(label, "queued_bytes", snap.queued_bytes, ts)
            if snap.actors or f"{label} actors" in self._last_counter:
                self._counter(label, "actors", snap.actors, ts)

    def _counter(self, label: str, series: str, value: float, ts: int) -> None:
        name = f"{label} {series}"
        if self._last_counter.get(name) == value:
            return
        self._last_counter[name] = value
        self._events.append({"name": name, "ph": "C", "ts": ts, "pid": PID,
                             "args": {series: value}})

    # ---- lanes --------------------------------------------------------
    def _lane_list(self, worker: str) -> list[list[int]]:
        lanes = self._lanes.get(worker)
        if lanes is None:
            lanes = self._lanes[worker] = []
            self._new_lane(worker, lanes)
        return lanes

    def _new_lane(self, worker: str, lanes: list[list[int]]) -> list[int]:
        tid = sum(len(v) for v in self._lanes.values()) + 1
        name = worker if not lanes else f"{worker} #{len(lanes) + 1}"
        lanes.append([tid, 0])
        self._meta.append(_thread_name(tid, name))
        return lanes[-1]

    def _place(self, worker: str, start: int, end: int) -> int:
        """The first lane of ``worker`` free at ``start`` (ends arrive in time order)."""
        lanes = self._lane_list(worker)
        lane = next((lane for lane in lanes if lane[1] <= start), None)
        if lane is None:
            lane = self._new_lane(worker, lanes)
        lane[1] = end
        return lane[0]


def stage_labels(names: list[str]) -> list[str]:
    """Stage names made unique for counter tracks (repeats get ``#index``).

    >>> stage_labels(["Read", "Map(f)", "Map(f)"])
    ['Read', 'Map(f) #1', 'Map(f) #2']
    """
    return [n if names.count(n) == 1 else f"{n} #{i}" for i, n in enumerate(names)]


def _process_name(name: str) -> dict:
    return {"name": "process_name", "ph": "M", "pid": PID, "args": {"name": name}}


def _thread_name(tid: int, name: str) -> dict:
    return {"name": "thread_name", "ph": "M", "pid": PID, "tid": tid, "args": {"name": name}}


def write_json_atomic(path: str, obj: object) -> None:
    """Write ``obj`` as JSON to ``path`` through a temporary file and a rename.

    A reader never sees a half-written file; missing parent folders are created.

    >>> import tempfile, os
    >>> with tempfile.TemporaryDirectory() as d:
    ...     p = os.path.join(d, "sub", "t.json")
    ...     write_json_atomic(p, {"a": 1})
    ...     open(p).read(), os.listdir(os.path.dirname(p))
    ('{"a": 1}', ['t.json'])
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".trace-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


# ---- reading a trace back ------------------------------------------------
def load_trace(path: str) -> list[dict]:
    """The events of a trace file (object form ``{"traceEvents": [...]}`` or a bare list).

    >>> import tempfile, os
    >>> with tempfile.TemporaryDirectory() as d:
    ...     p = os.path.join(d, "t.json")
    ...     write_json_atomic(p, {"traceEvents": [{"ph": "X", "name": "Read"}]})
    ...     load_trace(p)
    [{'ph': 'X', 'name': 'Read'}]
    """
    with open(path) as f:
        data = json.load(f)
    return data["traceEvents"] if isinstance(data, dict) else data


def task_intervals(events: list[dict], stage_substring: str) -> list[tuple[int, int]]:
    """``(start_us, end_us)`` of the task events whose stage name contains ``stage_substring``.

    Sorted by start.

    >>> evs = [{"ph": "X", "name": "Map(Model)", "ts": 50, "dur": 10},
    ...        {"ph": "X", "name": "Read", "ts": 0, "dur": 40},
    ...        {"ph": "X", "name": "Map(Model)", "ts": 5, "dur": 20},
    ...        {"ph": "C", "name": "Map(Model) queued_bytes", "ts": 7, "args": {}}]
    >>> task_intervals(evs, "Model")
    [(5, 25), (50, 60)]
    """
    spans = [(e["ts"], e["ts"] + e["dur"]) for e in events
             if e.get("ph") == "X" and stage_substring in e.get("name", "")]
    return sorted(spans)


def overlap_seconds(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> float:
    """Seconds during which some interval of ``a`` and some interval of ``b`` both run.

    Intervals are ``(start_us, end_us)`` in microseconds, as :func:`task_intervals`
    returns them; overlaps inside ``a`` (or ``b``) are counted once.

    >>> overlap_seconds([(0, 2_000_000)], [(1_500_000, 3_000_000)])
    0.5
    >>> overlap_seconds([(0, 1_000_000), (500_000, 1_500_000)], [(0, 3_000_000)])
    1.5
    >>> overlap_seconds([(0, 1)], [(1, 2)])
    0.0
    """
    ua, ub = union_intervals(a), union_intervals(b)
    total, i, j = 0.0, 0, 0
    while i < len(ua) and j < len(ub):
        lo, hi = max(ua[i][0], ub[j][0]), min(ua[i][1], ub[j][1])
        total += max(0, hi - lo)
        if ua[i][1] < ub[j][1]:
            i += 1
        else:
            j += 1
    return total / 1e6


def union_intervals(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Sorted, non-overlapping intervals covering the same time as ``spans``.

    >>> union_intervals([(5, 8), (0, 2), (1, 3), (8, 9)])
    [(0, 3), (5, 9)]
    """
    merged: list[tuple[float, float]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged
