"""Progress by default on a terminal only, its switches, the in-place display, and the
bottleneck named from the age of tasks still running (issue 18).

The bottleneck is checked with synthetic task events and a fake clock; the real
pipelines hold their slow UDF on a threading.Event until what they check was seen,
so no assertion depends on how long something took.
"""

from __future__ import annotations

import io
import re
import sys
import threading
import time

import pytest
from streambatch.executor import progress
from streambatch.executor.observe import StageSnapshot
from streambatch.executor.options import ExecutionOptions
from streambatch.executor.progress import ProgressReporter, bottleneck, progress_enabled

import streambatch as sb
from streambatch.context import DataContext
from streambatch.session import observers_for


class TTY(io.StringIO):
    """A stderr that says it is a terminal."""

    def isatty(self) -> bool:
        return True


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def snap(index, name, **fields) -> StageSnapshot:
    base = dict(rows_in=0, rows_out=0, tasks_done=0, tasks_running=0, queued_partitions=0,
                queued_bytes=0, actors=0, finished=False, backpressure_time_s=0.0,
                task_time_s=0.0, estimated_total_rows=None)
    base.update(fields)
    return StageSnapshot(index=index, name=name, **base)


def reporters(options: ExecutionOptions) -> list[ProgressReporter]:
    return [o for o in observers_for(options) if isinstance(o, ProgressReporter)]


@pytest.fixture
def context():
    """The process context, restored after the test (init() replaces its options)."""
    ctx = DataContext.get_current()
    saved = ctx.backend, ctx.execution_options
    yield ctx
    ctx.backend, ctx.execution_options = saved


# ---- on by default on a terminal only ---------------------------------------------
def test_the_default_is_auto():
    assert ExecutionOptions().progress is None
    assert DataContext().execution_options.progress is None


def test_auto_is_off_when_stderr_is_not_a_terminal(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert progress_enabled(None) is False
    assert reporters(ExecutionOptions()) == []


def test_auto_is_on_when_stderr_is_a_terminal(monkeypatch):
    fake = TTY()
    monkeypatch.setattr(sys, "stderr", fake)
    assert progress_enabled(None) is True
    [rep] = reporters(ExecutionOptions())
    assert rep.stream is fake and rep.live is True


def test_explicit_true_and_false_are_honoured(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    [rep] = reporters(ExecutionOptions(progress=True))
    assert rep.live is False  # forced into a log: plain lines at a low rate
    monkeypatch.setattr(sys, "stderr", TTY())
    assert reporters(ExecutionOptions(progress=False)) == []


def test_init_defaults_to_auto_and_takes_true_or_false(context, monkeypatch):
    monkeypatch.setattr(sys, "stderr", TTY())
    assert sb.init(num_cpus=1).execution_options.progress is None
    assert len(reporters(context.execution_options)) == 1
    assert sb.init(num_cpus=1, progress=False).execution_options.progress is False
    assert reporters(context.execution_options) == []
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert sb.init(num_cpus=1, progress=True).execution_options.progress is True
    assert len(reporters(context.execution_options)) == 1


def test_enable_progress_bars_false_turns_it_off(context, monkeypatch):
    monkeypatch.setattr(sys, "stderr", TTY())
    sb.init(num_cpus=1)
    assert context.enable_progress_bars is True
    DataContext.get_current().enable_progress_bars = False
    assert context.enable_progress_bars is False
    assert reporters(context.execution_options) == []
    context.enable_progress_bars = True  # back to the default: auto
    assert context.execution_options.progress is None
    assert len(reporters(context.execution_options)) == 1
    sb.init(num_cpus=1, progress=True)
    context.enable_progress_bars = True  # keeps a forced True
    assert context.execution_options.progress is True


# ---- the bottleneck from running tasks, with synthetic events -----------------------
def test_a_slow_stage_is_named_while_its_first_task_still_runs():
    clock, out = FakeClock(), io.StringIO()
    rep = ProgressReporter(out, interval_s=0.5, clock=clock)
    rep.on_start(["Read", "Map(fast)", "Map(slow)"])
    for task in range(4):  # the fast stage: 4 tasks of 0.05 s
        rep.on_task_start(1, "Map(fast)", task, f"partition {task}", "worker-1")
        clock.now += 0.05
        rep.on_task_end(1, task, 0.05, 10, True)
    rep.on_task_start(2, "Map(slow)", 10, "partition 0", "worker-2")
    rep.on_task_start(1, "Map(fast)", 11, "partition 4", "worker-1")
    read = snap(0, "Read", tasks_done=5, task_time_s=0.1, finished=True)
    fast = snap(1, "Map(fast)", tasks_done=4, task_time_s=0.2, tasks_running=1,
                queued_partitions=1)
    slow = snap(2, "Map(slow)", tasks_running=1, queued_partitions=3)
    clock.now += 0.01  # the slow task has run 0.01 s, shorter than a fast task: no evidence
    assert bottleneck([read, fast, slow], rep.running_ages()) == "Map(fast)"
    clock.now += 0.5  # 0.51 s, ten times a fast task's mean, and none of its tasks done
    assert rep.running_ages() == {1: [pytest.approx(0.51)], 2: [pytest.approx(0.51)]}
    assert bottleneck([read, fast, slow], rep.running_ages()) == "Map(slow)"
    assert bottleneck([read, fast, slow]) == "Map(fast)"  # what the task counters alone say
    rep.on_tick([read, fast, slow], clock.now)
    assert out.getvalue().splitlines()[-1] == "bottleneck: stage Map(slow)"


def test_with_nothing_queued_running_time_counts_as_busy_time():
    clock = FakeClock()
    rep = ProgressReporter(io.StringIO(), clock=clock)
    rep.on_start(["Read", "Map(slow)"])
    rep.on_task_start(1, "Map(slow)", 1, "partition 0", "w")
    rep.on_task_start(1, "Map(slow)", 2, "partition 1", "w")
    clock.now = 0.4
    read = snap(0, "Read", tasks_done=6, task_time_s=0.6, tasks_running=1)
    slow = snap(1, "Map(slow)", tasks_running=2)
    assert bottleneck([read, slow]) == "Read"
    assert bottleneck([read, slow], rep.running_ages()) == "Map(slow)"  # 0.8 s > 0.6 s


def test_ended_and_failed_tasks_stop_counting():
    clock = FakeClock()
    rep = ProgressReporter(io.StringIO(), clock=clock)
    rep.on_start(["Map"])
    rep.on_task_start(0, "Map", 1, "p0", "w")
    rep.on_task_start(0, "Map", 2, "p1", "w")
    clock.now = 1.0
    rep.on_task_end(0, 1, 1.0, 5, True)
    rep.on_task_end(0, 2, 0.0, 0, False)
    assert rep.running_ages() == {}


# ---- the terminal display ---------------------------------------------------------
def screen(text: str) -> list[str]:
    """What a terminal shows after ``text`` (newline, carriage return, cursor up, erase
    down): enough to check that redrawing in place leaves nothing behind."""
    rows, row, col = [""], 0, 0
    for token in re.findall(r"\x1b\[\d*[AJ]|\r|\n|[^\x1b\r\n]+", text):
        if token == "\n":
            row, col = row + 1, 0
            rows += [""] * (row + 1 - len(rows))
        elif token == "\r":
            col = 0
        elif token.endswith("A"):
            row = max(0, row - int(token[2:-1] or 1))
        elif token.endswith("J"):
            rows[row] = rows[row][:col]
            del rows[row + 1:]
        else:
            rows[row] = rows[row][:col].ljust(col) + token + rows[row][col + len(token):]
            col += len(token)
    return [r for r in rows if r]


def test_redraws_are_rate_limited_to_five_a_second():
    clock, out = FakeClock(), TTY()
    rep = ProgressReporter(out, clock=clock)
    rep.on_start(["Read"])
    for tick in range(50):  # 5 s of ticks 0.1 s apart
        clock.now = tick * 0.1
        rep.on_tick([snap(0, "Read", rows_out=tick)], clock.now)
    assert out.getvalue().count("elapsed") == 25
    rep.on_finish([snap(0, "Read", rows_out=50, finished=True)], 5.0, ok=True)
    assert screen(out.getvalue()) == [
        "finished in 5s", "Stage 0 Read: done, 50 rows, 10 rows/s, 0 tasks, task time 0.0s"]
    before = out.getvalue()
    rep.on_tick([snap(0, "Read")], 6.0)  # after the end: nothing more
    rep.on_finish([snap(0, "Read")], 6.0, ok=True)
    assert out.getvalue() == before


def test_two_runs_share_the_terminal_and_each_leaves_its_summary():
    clock, out = FakeClock(), TTY()
    outer, inner = ProgressReporter(out, clock=clock), ProgressReporter(out, clock=clock)
    outer.on_start(["Read"])
    outer.on_tick([snap(0, "Read", rows_out=1)], 0.0)
    inner.on_start(["Other"])
    clock.now = 1.0
    inner.on_tick([snap(0, "Other", rows_out=2)], 1.0)
    assert screen(out.getvalue()) == [
        "elapsed 0s", "Stage 0 Read: 1 rows, 0 rows/s, 0 running, queued 0 B",
        "elapsed 1s", "Stage 0 Other: 2 rows, 2 rows/s, 0 running, queued 0 B"]
    inner.on_finish([snap(0, "Other", rows_out=2, finished=True)], 1.0, ok=True)
    assert screen(out.getvalue()) == [
        "finished in 1s", "Stage 0 Other: done, 2 rows, 2 rows/s, 0 tasks, task time 0.0s",
        "elapsed 0s", "Stage 0 Read: 1 rows, 0 rows/s, 0 running, queued 0 B"]
    outer.on_finish([snap(0, "Read", rows_out=1)], 2.0, ok=False)
    assert screen(out.getvalue())[2:] == [
        "stopped after 2s (error or early stop)",
        "Stage 0 Read: not finished, 1 rows, 0 rows/s, 0 tasks, task time 0.0s"]
    assert progress._boards == {}


def test_long_lines_are_cut_to_the_terminal_width(monkeypatch):
    monkeypatch.setenv("COLUMNS", "30")
    out = TTY()
    rep = ProgressReporter(out, clock=FakeClock())
    rep.on_start(["Read"])
    rep.on_tick([snap(0, "Read[Parquet]->MapBatches(Preprocess)", rows_out=5)], 1.0)
    assert max(len(line) for line in screen(out.getvalue())) == 29
    rep.on_finish([], 1.0, ok=True)


# ---- real pipelines on a fake terminal ------------------------------------------------
def _release_when(stream: io.StringIO, wanted: str, gate: threading.Event) -> threading.Thread:
    """Open ``gate`` once ``wanted`` was written to ``stream`` (or after 15 s, so a
    failing test fails instead of hanging)."""
    def watch() -> None:
        deadline = time.monotonic() + 15
        while wanted not in stream.getvalue() and time.monotonic() < deadline:
            time.sleep(0.02)
        gate.set()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_pipeline_names_the_slow_stage_before_its_first_task_ends(context, monkeypatch):
    fake = TTY()
    monkeypatch.setattr(sys, "stderr", fake)
    sb.init(num_cpus=2, worker_mode="threads")  # progress: auto, and stderr is a terminal
    gate = threading.Event()

    def fast(batch):
        return batch

    def slow(batch):  # held until the live lines name this stage: none of its tasks ended
        gate.wait(20)
        return batch

    watcher = _release_when(fake, "bottleneck: stage MapBatches(slow)", gate)
    # (concurrency=1 keeps the slow function a stage of its own: maps without a batch
    # size fuse, as Ray Data's do)
    ds = sb.range(40, override_num_blocks=4).map_batches(fast).map_batches(slow, concurrency=1)
    assert ds.count() == 40
    watcher.join()
    text = fake.getvalue()
    assert "bottleneck: stage MapBatches(slow)" in text
    assert "\x1b[" in text  # redrawn in place
    shown = screen(text)
    assert shown[0].startswith("finished in ")
    assert [line.split(":")[0] for line in shown[1:]] == [
        "Stage 0 Read[Range]->MapBatches(fast)", "Stage 1 MapBatches(slow)"]
    assert progress._boards == {}


def test_an_early_stop_leaves_only_the_summary(context, monkeypatch):
    fake = TTY()
    monkeypatch.setattr(sys, "stderr", fake)
    sb.init(num_cpus=2, worker_mode="threads")
    gate = threading.Event()

    def hold(batch):
        gate.wait(20)
        return batch

    watcher = _release_when(fake, "elapsed", gate)  # something was drawn first
    rows = sb.range(1000, override_num_blocks=10).map_batches(hold, batch_size=10).take(1)
    assert len(rows) == 1
    watcher.join()
    shown = screen(fake.getvalue())
    assert "elapsed" in fake.getvalue()
    assert shown[0].startswith("stopped after ") or shown[0].startswith("finished in ")
    assert all(line.startswith("Stage ") for line in shown[1:])
    assert progress._boards == {}
