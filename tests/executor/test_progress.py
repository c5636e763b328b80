"""ProgressReporter and its pure rendering, driven with synthetic snapshots (no engine run)."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest
from streambatch.executor.observe import StageSnapshot
from streambatch.executor.progress import (
    ProgressReporter,
    backlog_seconds,
    bottleneck,
    eta_seconds,
    format_bytes,
    format_duration,
    render_lines,
    stage_line,
    summary_lines,
)

MiB = 2**20


def snap(index=0, name="Read", **fields) -> StageSnapshot:
    base = dict(rows_in=0, rows_out=0, tasks_done=0, tasks_running=0, queued_partitions=0,
                queued_bytes=0, actors=0, finished=False, backpressure_time_s=0.0,
                task_time_s=0.0, estimated_total_rows=None)
    base.update(fields)
    return StageSnapshot(index=index, name=name, **base)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


# ---- bottleneck -------------------------------------------------------------
def test_bottleneck_is_the_stage_with_the_largest_input_backlog():
    read = snap(0, "Read", tasks_done=100, task_time_s=50.0, tasks_running=8)
    pre = snap(1, "Preprocess", tasks_done=50, task_time_s=25.0, queued_partitions=4,
               tasks_running=4)                                  # 4 * 0.5 / 4 = 0.5 s
    model = snap(2, "Model", tasks_done=10, task_time_s=20.0, queued_partitions=3,
                 actors=2)                                       # 3 * 2.0 / 2 = 3.0 s
    assert backlog_seconds(pre) == pytest.approx(0.5)
    assert backlog_seconds(model) == pytest.approx(3.0)
    assert bottleneck([read, pre, model]) == "Model"


def test_backlog_is_divided_by_the_stage_parallelism():
    narrow = snap(0, "Narrow", tasks_done=1, task_time_s=1.0, queued_partitions=10)
    wide = snap(1, "Wide", tasks_done=1, task_time_s=1.0, queued_partitions=30,
                tasks_running=6)
    assert (backlog_seconds(narrow), backlog_seconds(wide)) == (10.0, 5.0)
    assert bottleneck([narrow, wide]) == "Narrow"


def test_without_backlog_the_stage_with_most_task_time_is_the_bottleneck():
    read = snap(0, "Read", tasks_done=20, task_time_s=30.0)
    mapper = snap(1, "Map(f)", tasks_done=20, task_time_s=2.0)
    assert bottleneck([read, mapper]) == "Read"


def test_a_stage_of_unknown_speed_does_not_win_on_backlog():
    read = snap(0, "Read", tasks_done=5, task_time_s=5.0)
    model = snap(1, "Model", queued_partitions=50)               # no task finished yet
    assert backlog_seconds(model) == 0.0
    assert bottleneck([read, model]) == "Read"


def test_finished_stages_are_never_the_bottleneck():
    read = snap(0, "Read", tasks_done=5, task_time_s=100.0, finished=True)
    mapper = snap(1, "Map(f)", tasks_done=5, task_time_s=1.0)
    assert bottleneck([read, mapper]) == "Map(f)"


def test_no_bottleneck_before_any_task_time_is_measured():
    assert bottleneck([]) is None
    assert bottleneck([snap(0, "Read"), snap(1, "Map(f)", queued_partitions=3)]) is None


def test_bottleneck_ties_go_to_the_earlier_stage():
    a = snap(0, "A", tasks_done=1, task_time_s=2.0)
    b = snap(1, "B", tasks_done=1, task_time_s=2.0)
    assert bottleneck([a, b]) == "A"


# ---- rendering --------------------------------------------------------------
def test_stage_line_with_estimate_shows_percent_rate_and_eta():
    s = snap(0, "Read", rows_out=2_500, estimated_total_rows=10_000, tasks_running=3,
             queued_bytes=0)
    assert eta_seconds(s, 10.0) == pytest.approx(30.0)
    assert stage_line(s, 10.0) == ("Stage 0 Read: 2,500/10,000 rows (25%), 250 rows/s, "
                                   "ETA 30s, 3 running, queued 0 B")


def test_stage_line_without_estimate_has_no_eta_and_shows_actors():
    s = snap(2, "Map(Model)", rows_out=1_200, tasks_running=2, actors=4,
             queued_bytes=int(12.5 * MiB))
    line = stage_line(s, 60.0)
    assert line == "Stage 2 Map(Model): 1,200 rows, 20 rows/s, 2 running, 4 actors, queued 12.5 MiB"
    assert "ETA" not in line


def test_stage_line_of_a_finished_stage_says_done():
    s = snap(0, "Read", rows_out=500, estimated_total_rows=400, finished=True, tasks_running=0)
    assert stage_line(s, 5.0) == "Stage 0 Read: 500/400 rows (100%), 100 rows/s, done"


def test_no_eta_before_any_row_comes_out():
    s = snap(0, "Read", estimated_total_rows=1000)
    assert eta_seconds(s, 3.0) is None
    assert eta_seconds(s, 0.0) is None
    assert stage_line(s, 0.0) == "Stage 0 Read: 0/1,000 rows (0%), 0 rows/s, 0 running, queued 0 B"


def test_render_lines_has_elapsed_stages_and_bottleneck():
    read = snap(0, "Read", rows_out=9_000, estimated_total_rows=10_000, tasks_done=9,
                task_time_s=4.5, tasks_running=1)
    model = snap(1, "Map(Model)", rows_out=3_000, tasks_done=3, task_time_s=9.0,
                 queued_partitions=6, queued_bytes=6 * MiB, actors=2, tasks_running=2)
    lines = render_lines([read, model], 125.0)
    assert lines == [
        "elapsed 2m05s",
        "Stage 0 Read: 9,000/10,000 rows (90%), 72 rows/s, ETA 14s, 1 running, queued 0 B",
        "Stage 1 Map(Model): 3,000 rows, 24 rows/s, 2 running, 2 actors, queued 6.0 MiB",
        "bottleneck: stage Map(Model)",
    ]


def test_render_lines_omits_the_bottleneck_line_when_unknown():
    assert render_lines([snap(0, "Read")], 0.5) == [
        "elapsed 0s", "Stage 0 Read: 0 rows, 0 rows/s, 0 running, queued 0 B"]


def test_summary_lines_per_stage_after_a_stopped_run():
    read = snap(0, "Read", rows_out=1_000, tasks_done=4, task_time_s=3.25, finished=True)
    mapper = snap(1, "Map(f)", rows_out=200, tasks_done=1, task_time_s=0.5,
                  backpressure_time_s=1.5)
    assert summary_lines([read, mapper], 10.0, ok=False) == [
        "stopped after 10s (error or early stop)",
        "Stage 0 Read: done, 1,000 rows, 100 rows/s, 4 tasks, task time 3.2s",
        "Stage 1 Map(f): not finished, 200 rows, 20 rows/s, 1 tasks, task time 0.5s, "
        "backpressure 1.5s",
    ]


def test_formatting_helpers():
    assert [format_bytes(n) for n in (0, 1023, 1024, 5 * 2**30, 3 * 2**50)] == [
        "0 B", "1023 B", "1.0 KiB", "5.0 GiB", "3072.0 TiB"]
    assert [format_duration(s) for s in (0.4, 59.6, 60, 3599, 3600, 90061)] == [
        "0s", "1m00s", "1m00s", "59m59s", "1h00m", "25h01m"]


# ---- plain mode -------------------------------------------------------------
def test_plain_mode_writes_at_most_one_report_per_interval():
    clock, out = FakeClock(), io.StringIO()
    rep = ProgressReporter(out, interval_s=5.0, clock=clock)
    assert rep.live is False
    rep.on_start(["Read"])
    written = []
    for t in (0.2, 1.0, 4.9, 5.0, 5.2, 9.9, 10.1, 10.3, 16.0):
        clock.now = t
        before = out.getvalue().count("elapsed")
        rep.on_tick([snap(0, "Read", rows_out=int(t * 10))], t)
        if out.getvalue().count("elapsed") > before:
            written.append(t)
    assert written == [5.0, 10.1, 16.0]
    assert "Stage 0 Read: 50 rows, 10 rows/s" in out.getvalue()


def test_plain_mode_interval_is_configurable():
    clock, out = FakeClock(), io.StringIO()
    rep = ProgressReporter(out, interval_s=1.0, clock=clock)
    rep.on_start(["Read"])
    for t in (0.5, 1.0, 1.5, 2.0, 2.5):
        clock.now = t
        rep.on_tick([snap()], t)
    assert out.getvalue().count("elapsed") == 2


def test_plain_mode_always_writes_the_final_summary():
    clock, out = FakeClock(), io.StringIO()
    rep = ProgressReporter(out, clock=clock)
    rep.on_start(["Read", "Map(f)"])
    clock.now = 1.0
    rep.on_tick([snap()], 1.0)
    assert out.getvalue() == ""
    rep.on_finish([snap(0, "Read", rows_out=10, finished=True),
                   snap(1, "Map(f)", rows_out=10, finished=True)], 1.0, ok=True)
    assert out.getvalue().splitlines() == [
        "finished in 1s",
        "Stage 0 Read: done, 10 rows, 10 rows/s, 0 tasks, task time 0.0s",
        "Stage 1 Map(f): done, 10 rows, 10 rows/s, 0 tasks, task time 0.0s",
    ]


def test_default_stream_is_stderr(capsys):
    rep = ProgressReporter(clock=FakeClock())
    rep.on_finish([snap(0, "Read", finished=True)], 2.0, ok=True)
    assert capsys.readouterr().err.startswith("finished in 2s\n")


# ---- live mode --------------------------------------------------------------
def test_live_mode_needs_a_terminal():
    assert ProgressReporter(io.StringIO()).live is False
    assert ProgressReporter(TTY()).live is True
    assert ProgressReporter(TTY(), live=False).live is False


def test_live_mode_redraws_in_place_then_leaves_only_the_summary():
    out, clock = TTY(), FakeClock()
    rep = ProgressReporter(out, clock=clock)
    assert rep.live is True
    rep.on_start(["Read"])
    s = snap(0, "Read", rows_out=10, tasks_done=1, task_time_s=1.0)
    clock.now = 1.0
    rep.on_tick([s], 1.0)
    clock.now = 1.2
    rep.on_tick([s], 1.2)
    rep.on_finish([snap(0, "Read", rows_out=10, finished=True)], 2.0, ok=True)
    up = "\r\x1b[3A\x1b[J"  # cursor up over the 3 lines drawn, erase them
    first = "".join(line + "\n" for line in render_lines([s], 1.0))
    second = "".join(line + "\n" for line in render_lines([s], 1.2))
    assert out.getvalue() == (first + up + second + up + "finished in 2s\n"
                              "Stage 0 Read: done, 10 rows, 5 rows/s, 0 tasks, task time 0.0s\n")


# ---- rich is never needed (the live display is plain ANSI) ------------------
def _rich_lookups_after(code: str) -> str:
    """Run ``code`` in a fresh interpreter; report attempts to find rich and whether it loaded.

    A meta-path finder sees every attempt, whether rich is installed or not.
    """
    script = (
        "import io, sys\n"
        "tried = []\n"
        "class Spy:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'rich' or name.startswith('rich.'):\n"
        "            tried.append(name)\n"
        "        return None\n"
        "sys.meta_path.insert(0, Spy())\n"
        f"{code}\n"
        "print(tried, 'rich' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


def test_importing_and_using_plain_progress_never_looks_for_rich():
    code = ("import streambatch\n"
            "from streambatch.executor import progress, trace\n"
            "rep = progress.ProgressReporter(io.StringIO(), live=True)\n"
            "rep.on_start(['Read'])\n"
            "rep.on_finish([], 1.0, True)")
    assert _rich_lookups_after(code) == "[] False"


def test_the_rich_spy_itself_sees_a_lookup():
    """Guard against a vacuous check: asking whether rich is available is seen."""
    code = "import importlib.util\nimportlib.util.find_spec('rich')"
    assert _rich_lookups_after(code).startswith("['rich']")
