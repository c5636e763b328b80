"""While an actor is starting (its constructor runs), the CPU it holds is not lent
to the tasks that feed it: the model's start-up gets its core (W1 on 2 cores: the
first model batch came 2.6 s into the job when two decode tasks ran beside the
actor's torch import, 1.5-1.9 s when one did)."""

from __future__ import annotations

import time

import pyarrow as pa
from streambatch.executor.trace import load_trace, task_intervals

import streambatch as sb


class SlowToStart:
    def __init__(self) -> None:
        time.sleep(1.5)  # stands in for importing torch and building a model

    def __call__(self, batch: pa.Table) -> pa.Table:
        return batch


def feed(batch: pa.Table) -> pa.Table:
    time.sleep(0.2)
    return batch


def most_at_once(spans: list[tuple[int, int]], before_us: int) -> int:
    """Most intervals running at one instant before ``before_us``."""
    edges = sorted([(s, 1) for s, e in spans if s < before_us] +
                   [(min(e, before_us), -1) for s, e in spans if s < before_us])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


def test_a_starting_actor_keeps_its_cpu(tmp_path):
    trace = str(tmp_path / "trace.json")
    sb.init(num_cpus=2, trace=trace)
    try:
        ds = (sb.range(40, override_num_blocks=20).map_batches(feed, batch_size=None)
              .map_batches(SlowToStart, batch_size=None, num_cpus=1, concurrency=1))
        assert sorted(r["id"] for r in ds.take_all()) == list(range(40))
    finally:
        sb.init(num_cpus=2)
    events = load_trace(trace)
    first_model_task = task_intervals(events, "SlowToStart")[0][0]
    feeding = task_intervals(events, "feed")
    assert feeding[0][1] < first_model_task  # input was ready while the actor started
    assert most_at_once(feeding, first_model_task) == 1
    assert most_at_once(feeding, feeding[-1][1]) == 2  # once it has run, it lends its CPU
