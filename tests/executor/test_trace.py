"""TraceRecorder driven directly with synthetic hook calls (no engine run)."""

from __future__ import annotations

import json
import os

import pytest
from streambatch.executor.observe import StageSnapshot
from streambatch.executor.trace import (
    TraceRecorder,
    load_trace,
    overlap_seconds,
    task_intervals,
    union_intervals,
)


class FakeClock:
    """A clock the test moves by hand (seconds)."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def at(self, seconds_since_start: float) -> None:
        self.now = 100.0 + seconds_since_start


def snap(index: int, name: str, queued_bytes: int = 0, actors: int = 0) -> StageSnapshot:
    return StageSnapshot(index=index, name=name, rows_in=0, rows_out=0, tasks_done=0,
                         tasks_running=0, queued_partitions=0, queued_bytes=queued_bytes,
                         actors=actors, finished=False, backpressure_time_s=0.0,
                         task_time_s=0.0, estimated_total_rows=None)


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def rec(tmp_path, clock):
    recorder = TraceRecorder(str(tmp_path / "trace.json"), clock=clock)
    recorder.on_start(["Read", "Map(Model)"])
    return recorder


def run_task(rec, clock, task_id, stage, worker, dispatch, end, seconds, rows=10, ok=True,
             index=0):
    clock.at(dispatch)
    rec.on_task_start(index, stage, task_id, f"partition {task_id}", worker)
    clock.at(end)
    rec.on_task_end(index, task_id, seconds, rows, ok)


def kinds(events, ph):
    return [e for e in events if e["ph"] == ph]


def test_task_event_ends_at_task_end_and_lasts_the_measured_seconds(rec, clock):
    run_task(rec, clock, 1, "Read", "worker-1", dispatch=0.5, end=2.0, seconds=1.25, rows=42)
    [event] = kinds(rec.events(), "X")
    assert event["ts"] == 750_000 and event["dur"] == 1_250_000
    assert event["name"] == "Read" and event["pid"] == 1 and event["tid"] == 1
    assert event["args"] == {"description": "partition 1", "rows_out": 42, "ok": True}
    assert "cname" not in event


def test_task_never_starts_before_its_dispatch(rec, clock):
    run_task(rec, clock, 1, "Read", "w", dispatch=1.0, end=1.5, seconds=3.0)
    [event] = kinds(rec.events(), "X")
    assert (event["ts"], event["dur"]) == (1_000_000, 500_000)


def test_each_worker_gets_a_lane_named_by_metadata(rec, clock):
    run_task(rec, clock, 1, "Read", "worker-a", dispatch=0.0, end=1.0, seconds=1.0)
    run_task(rec, clock, 2, "Map(Model)", "actor-0", dispatch=1.0, end=2.0, seconds=1.0,
             index=1)
    run_task(rec, clock, 3, "Read", "worker-a", dispatch=2.0, end=3.0, seconds=1.0)
    tids = [e["tid"] for e in kinds(rec.events(), "X")]
    assert tids == [1, 2, 1]
    names = {e["tid"]: e["args"]["name"] for e in kinds(rec.events(), "M")
             if e["name"] == "thread_name"}
    assert names == {1: "worker-a", 2: "actor-0"}
    [process] = [e for e in kinds(rec.events(), "M") if e["name"] == "process_name"]
    assert process["args"] == {"name": "streambatch"}


def test_tasks_queued_on_one_actor_share_its_lane(rec, clock):
    # task 2 is dispatched while task 1 runs but only starts when task 1 ends
    clock.at(0.0)
    rec.on_task_start(1, "Map(Model)", 1, "p1", "actor-0")
    clock.at(0.1)
    rec.on_task_start(1, "Map(Model)", 2, "p2", "actor-0")
    clock.at(1.0)
    rec.on_task_end(1, 1, 1.0, 5, True)
    clock.at(2.0)
    rec.on_task_end(1, 2, 1.0, 5, True)
    events = kinds(rec.events(), "X")
    assert [(e["ts"], e["dur"], e["tid"]) for e in events] == [
        (0, 1_000_000, 1), (1_000_000, 1_000_000, 1)]
    assert len([e for e in rec.events() if e["name"] == "thread_name"]) == 1


def test_overlapping_tasks_of_one_worker_go_to_an_extra_lane(rec, clock):
    clock.at(0.0)
    rec.on_task_start(0, "Read", 1, "p1", "threads")
    rec.on_task_start(0, "Read", 2, "p2", "threads")
    clock.at(1.0)
    rec.on_task_end(0, 1, 1.0, 1, True)
    clock.at(1.5)
    rec.on_task_end(0, 2, 1.5, 1, True)
    assert [e["tid"] for e in kinds(rec.events(), "X")] == [1, 2]
    names = [e["args"]["name"] for e in rec.events() if e["name"] == "thread_name"]
    assert names == ["threads", "threads #2"]


def test_failed_task_is_marked_not_ok_and_red(rec, clock):
    run_task(rec, clock, 1, "Read", "w", dispatch=0.0, end=0.5, seconds=0.5, rows=0, ok=False)
    [event] = kinds(rec.events(), "X")
    assert event["args"]["ok"] is False and event["cname"] == "terrible"


def test_unknown_task_end_is_ignored(rec, clock):
    rec.on_task_end(0, 999, 1.0, 1, True)
    assert kinds(rec.events(), "X") == []


def test_tasks_running_at_finish_are_closed_there(rec, clock, tmp_path):
    clock.at(1.0)
    rec.on_task_start(1, "Map(Model)", 5, "partition 3", "actor-0")
    clock.at(4.0)
    rec.on_finish([], 4.0, ok=False)
    [event] = kinds(load_trace(rec.path), "X")
    assert (event["ts"], event["dur"]) == (1_000_000, 3_000_000)
    assert event["args"] == {"description": "partition 3", "rows_out": 0, "ok": False,
                             "finished": False}


def test_tick_counters_are_written_only_when_values_change(rec, clock):
    clock.at(0.2)
    rec.on_tick([snap(0, "Read", 100), snap(1, "Map(Model)", 0, actors=2)], 0.2)
    clock.at(0.4)
    rec.on_tick([snap(0, "Read", 100), snap(1, "Map(Model)", 0, actors=2)], 0.4)
    clock.at(0.6)
    rec.on_tick([snap(0, "Read", 300), snap(1, "Map(Model)", 0, actors=0)], 0.6)
    counters = [(e["name"], e["ts"], e["args"]) for e in kinds(rec.events(), "C")]
    assert counters == [
        ("Read queued_bytes", 200_000, {"queued_bytes": 100}),
        ("Map(Model) queued_bytes", 200_000, {"queued_bytes": 0}),
        ("Map(Model) actors", 200_000, {"actors": 2}),
        ("Read queued_bytes", 600_000, {"queued_bytes": 300}),
        ("Map(Model) actors", 600_000, {"actors": 0}),
    ]
    assert all(e["pid"] == 1 for e in kinds(rec.events(), "C"))


def test_actor_change_adds_an_actor_counter_point(rec, clock):
    clock.at(1.0)
    rec.on_actor_change(1, "Map(Model)", 3)
    rec.on_actor_change(1, "Map(Model)", 3)
    clock.at(2.0)
    rec.on_actor_change(1, "Map(Model)", 1)
    counters = [(e["name"], e["ts"], e["args"]) for e in kinds(rec.events(), "C")]
    assert counters == [("Map(Model) actors", 1_000_000, {"actors": 3}),
                        ("Map(Model) actors", 2_000_000, {"actors": 1})]


def test_repeated_stage_names_get_separate_counter_tracks(tmp_path, clock):
    rec = TraceRecorder(str(tmp_path / "t.json"), clock=clock)
    rec.on_start(["Map(f)", "Map(f)"])
    rec.on_tick([snap(0, "Map(f)", 1), snap(1, "Map(f)", 2)], 0.2)
    assert [e["name"] for e in kinds(rec.events(), "C")] == ["Map(f) #0 queued_bytes",
                                                            "Map(f) #1 queued_bytes"]


def test_finish_writes_a_valid_chrome_trace_file(rec, clock, tmp_path):
    run_task(rec, clock, 1, "Read", "w1", dispatch=0.0, end=1.0, seconds=1.0)
    run_task(rec, clock, 2, "Map(Model)", "a0", dispatch=1.0, end=2.0, seconds=0.5, index=1)
    rec.on_tick([snap(0, "Read", 10)], 2.0)
    rec.on_finish([snap(0, "Read", 0)], 2.0, ok=True)
    data = json.loads((tmp_path / "trace.json").read_text())
    assert data["displayTimeUnit"] == "ms"
    assert data["otherData"] == {"ok": True, "wall_s": 2.0}
    events = data["traceEvents"]
    assert len(kinds(events, "X")) == 2
    assert len(kinds(events, "C")) == 2  # queued 10 at the tick, then 0 at finish
    assert len(kinds(events, "M")) == 3  # process name + two lanes
    assert os.listdir(tmp_path) == ["trace.json"]  # no temporary file left behind


def test_failed_write_leaves_the_old_file_and_no_temporary(rec, tmp_path, monkeypatch):
    path = tmp_path / "trace.json"
    path.write_text("old")

    def broken_dump(obj, f):
        f.write("partial")
        raise OSError("disk full")

    monkeypatch.setattr("streambatch.executor.trace.json.dump", broken_dump)
    with pytest.raises(OSError, match="disk full"):
        rec.on_finish([], 1.0, ok=True)
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["trace.json"]


def test_on_start_begins_a_fresh_trace(rec, clock):
    run_task(rec, clock, 1, "Read", "w", dispatch=0.0, end=1.0, seconds=1.0)
    clock.at(10.0)
    rec.on_start(["Read"])
    run_task(rec, clock, 2, "Read", "w", dispatch=10.0, end=10.5, seconds=0.5)
    [event] = kinds(rec.events(), "X")
    assert (event["ts"], event["dur"]) == (0, 500_000)


def test_trace_shows_two_stages_running_at_the_same_time(rec, clock):
    # Read tasks on two workers over [0, 2] s; Model tasks on an actor over [1, 3] s
    run_task(rec, clock, 1, "Read", "w1", dispatch=0.0, end=1.0, seconds=1.0)
    run_task(rec, clock, 2, "Map(Model)", "a0", dispatch=1.0, end=2.0, seconds=1.0, index=1)
    clock.at(1.0)
    rec.on_task_start(0, "Read", 3, "p3", "w2")
    clock.at(2.0)
    rec.on_task_end(0, 3, 1.0, 1, True)
    run_task(rec, clock, 4, "Map(Model)", "a0", dispatch=2.0, end=3.0, seconds=1.0, index=1)
    rec.on_finish([], 3.0, ok=True)
    events = load_trace(rec.path)
    reads, models = task_intervals(events, "Read"), task_intervals(events, "Model")
    assert reads == [(0, 1_000_000), (1_000_000, 2_000_000)]
    assert models == [(1_000_000, 2_000_000), (2_000_000, 3_000_000)]
    assert overlap_seconds(reads, models) == pytest.approx(1.0)


def test_overlap_of_disjoint_stages_is_zero():
    assert overlap_seconds([(0, 10), (20, 30)], [(10, 20), (30, 40)]) == 0.0
    assert overlap_seconds([], [(0, 10)]) == 0.0


def test_overlap_counts_overlapping_tasks_of_one_stage_once():
    a = [(0, 4_000_000), (1_000_000, 3_000_000)]  # two concurrent tasks, union [0, 4] s
    b = [(2_000_000, 6_000_000)]
    assert overlap_seconds(a, b) == pytest.approx(2.0)
    assert overlap_seconds(b, a) == pytest.approx(2.0)


def test_union_intervals_merges_touching_and_nested_spans():
    assert union_intervals([(3, 4), (0, 10), (12, 13), (13, 15)]) == [(0, 10), (12, 15)]


def test_load_trace_accepts_the_bare_array_form(tmp_path):
    path = tmp_path / "array.json"
    path.write_text(json.dumps([{"ph": "X", "name": "Read", "ts": 1, "dur": 2}]))
    assert task_intervals(load_trace(str(path)), "Read") == [(1, 3)]
