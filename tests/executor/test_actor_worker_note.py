"""An actor stage always runs in its actor processes: ``stats()`` must not say it ran
"on threads (auto: ...)" because its UDF did not say whether it releases the GIL
(the text-embedding benchmark of issue 20 showed that note on its model stage)."""

from __future__ import annotations

import os

import streambatch as sb


class Tag:
    """A class UDF: built once per actor."""

    def __init__(self) -> None:
        self.pid = os.getpid()

    def __call__(self, batch: dict) -> dict:
        return {"id": batch["id"], "pid": [self.pid] * len(batch["id"])}


def plain(batch: dict) -> dict:
    return {"id": batch["id"], "pid": [os.getpid()] * len(batch["id"])}


def test_an_actor_stage_has_no_thread_or_process_note():
    sb.init(num_cpus=2)
    try:
        ds = sb.range(20, override_num_blocks=4).map_batches(Tag, batch_size=5, concurrency=1)
        rows = ds.take_all()
        stats = ds.stats()
    finally:
        sb.init()
    assert sorted(r["id"] for r in rows) == list(range(20))
    pids = {r["pid"] for r in rows}
    assert len(pids) == 1 and os.getpid() not in pids  # one actor process
    actor_stage = [s for s in stats.stages if "Tag" in s.name]
    assert [s.worker for s in actor_stage] == [""]
    assert "on threads" not in str(stats)


def test_a_function_stage_still_reports_where_it_ran():
    sb.init(num_cpus=2)
    try:
        ds = sb.range(20, override_num_blocks=4).map_batches(plain, batch_size=5)
        rows = ds.take_all()
        worker = ds.stats().stages[-1].worker
    finally:
        sb.init()
    assert sorted(r["id"] for r in rows) == list(range(20))
    assert worker.startswith(("threads (auto", "processes (auto")), worker
