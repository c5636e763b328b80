"""Issue 18: a user error's retry waits out an exponential backoff with jitter (it ran
3.8, 4.1, 0.9 ms after each failure), and the driver runs other work meanwhile."""

from __future__ import annotations

import threading
import time

import pytest
from streambatch.executor import task_failures
from streambatch.executor.task_failures import retry_delay

import streambatch as sb


@pytest.fixture()
def one_cpu():
    yield sb.init(num_cpus=1)
    sb.init()


def test_retry_delays_double_up_to_the_cap_with_jitter_in_the_upper_half():
    highs = [retry_delay(n, rng=lambda: 0.999999) for n in range(1, 9)]
    lows = [retry_delay(n, rng=lambda: 0.0) for n in range(1, 9)]
    assert lows == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.5, 2.5]
    assert [round(h, 3) for h in highs] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    draws = {retry_delay(3) for _ in range(50)}
    assert len(draws) > 40 and all(0.2 <= d <= 0.4 for d in draws)  # jittered, in range


def test_user_retries_are_spaced_by_the_backoff(monkeypatch, one_cpu):
    monkeypatch.setattr(task_failures, "RETRY_BASE_S", 0.2)
    tries: list[float] = []

    def flaky(batch):
        tries.append(time.monotonic())
        if len(tries) < 3:
            raise ValueError("flaky")
        return batch

    rows = sb.from_items([{"x": 1}]).map_batches(flaky, max_retries=3,
                                                 releases_gil=True).take_all()
    assert rows == [{"x": 1}] and len(tries) == 3
    gaps = [b - a for a, b in zip(tries, tries[1:], strict=False)]
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2, gaps  # 0.2 * 2**(n-1), at least half of it


def test_the_driver_runs_other_tasks_while_a_retry_waits(monkeypatch, one_cpu):
    monkeypatch.setattr(task_failures, "RETRY_BASE_S", 1.0)  # waits 0.5-1 s
    log: list[tuple[int, str, float]] = []
    lock = threading.Lock()

    def first_call_fails(batch):
        with lock:
            first = not log
            log.append((int(batch["x"][0]), "fail" if first else "ok", time.monotonic()))
        if first:
            raise ValueError("once")
        return batch

    ds = sb.from_items([{"x": i} for i in range(4)], override_num_blocks=4)
    rows = ds.map_batches(first_call_fails, max_retries=1, releases_gil=True,
                          batch_size=1).take_all()
    assert sorted(r["x"] for r in rows) == [0, 1, 2, 3]
    failed, at = log[0][0], log[0][2]
    retry = next(t for x, kind, t in log[1:] if x == failed)
    others = [t for x, _, t in log[1:] if x != failed]
    assert retry - at >= 0.5  # waited out its backoff...
    assert others and min(others) < retry  # ...while the other blocks ran
