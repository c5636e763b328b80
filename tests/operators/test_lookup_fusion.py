"""A lookup after a process-worker stage keeps its own thread stage, so its cache's
statistics reach the user's FreshCache (a lookup fused into forked workers counted
nothing in the driver)."""

from __future__ import annotations

from streambatch.connectors.lookup import DictTable, FreshCache
from streambatch.operators.optimizer import optimize
from streambatch.operators.planner import PlanSettings, plan_stages

import streambatch as sb


def add_ten(batch):
    return {"id": batch["id"], "x": batch["id"] + 10}


def test_lookup_after_a_gil_holding_map_counts_in_the_users_cache():
    users = DictTable({i: {"name": f"u{i}"} for i in range(50)}, key="id")
    cache = FreshCache()
    ds = sb.range(200, override_num_blocks=4).map_batches(add_ten, batch_format="numpy").lookup(
        users, on="id", how="inner", cache=cache)
    rows = ds.take_all()
    assert sorted(r["id"] for r in rows) == list(range(50))
    assert all(r["name"] == f"u{r['id']}" and r["x"] == r["id"] + 10 for r in rows)
    stats = cache.stats()
    assert stats["hits"] + stats["cold_misses"] + stats["stale_misses"] == 200, stats
    assert stats["backend_keys"] == 200 and stats["backend_rows"] == 50, stats


def test_the_lookup_is_not_fused_into_process_workers_but_row_ops_still_are():
    users = DictTable({1: {"name": "a"}}, key="id")
    plan = sb.range(10).map_batches(add_ten, batch_format="numpy").lookup(users, on="id")._plan
    stages = plan_stages(optimize(plan), PlanSettings(num_cpus=2))
    assert [(s.name, s.worker) for s in stages] == [  # (no batch size: fused into the read)
        ("Read[Range]->MapBatches(add_ten)", "auto"),
        ("Lookup[DictTable(key=id) on id, left]", "thread")]
    plan = sb.range(10).lookup(users, on="id")._plan  # thread stages still fuse
    assert len(plan_stages(optimize(plan), PlanSettings(num_cpus=2))) == 1
