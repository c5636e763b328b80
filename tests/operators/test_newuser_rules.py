"""Issue 20 (the new-user S1 pipeline): rules that plan a user's first code well.

- ``map_batches`` without ``batch_size``: 1024 is only a cap (as Ray Data 2.60's
  ``batch_size=None``): no bundling up to 1024 rows, fusion after a ``flat_map``.
- A read fused with a user function plans FUSED_TASKS_PER_CPU tasks per CPU (at most
  one per item), not two.
"""

from __future__ import annotations

import numpy as np
from streambatch.operators.block_ops import MapBatchesOp
from streambatch.operators.optimizer import optimize
from streambatch.operators.planner import (
    FUSED_TASKS_PER_CPU,
    PlanSettings,
    default_parallelism,
    plan_stages,
)

import streambatch as sb


def load(row):
    return [{"item": row["item"], "j": j} for j in range(8)]


def ident(batch):
    return batch


def batch_len(batch):
    return {"n": np.array([len(np.asarray(batch["id"]))], dtype=np.int64)}


def _plan(ds, cpus=8):
    return plan_stages(optimize(ds._plan), PlanSettings(num_cpus=cpus))


def test_default_batch_size_is_a_cap_not_a_bundle_size():
    ds = sb.from_items(list(range(4))).map_batches(ident)
    op = next(o for s in _plan(ds) for o in s.ops if isinstance(o, MapBatchesOp))
    assert (op.op.batch_size, op.batch_rows) == (1024, None)
    ds = sb.from_items(list(range(4))).map_batches(ident, batch_size=1024)
    op = next(o for s in _plan(ds) for o in s.ops if isinstance(o, MapBatchesOp))
    assert op.batch_rows == 1024


def test_the_new_users_load_and_transform_fuse_into_one_task_per_item():
    ds = (sb.from_items(list(range(32))).flat_map(load).map_batches(ident)
          .map_batches(ident, num_gpus=1, concurrency=4, batch_size=8))
    stages = _plan(ds)
    assert [s.name for s in stages] == ["Read[Items]->FlatMap(load)->MapBatches(ident)",
                                        "MapBatches(ident)"]
    assert len(stages[0].read_tasks) == 32  # 4 per CPU x 8 CPUs, one item each
    assert [t.estimated_rows for t in stages[0].read_tasks[:2]] == [1, 1]


def test_a_given_batch_size_still_keeps_a_row_count_change_out():
    ds = sb.from_items(list(range(32))).flat_map(load).map_batches(ident, batch_size=8)
    assert [s.name for s in _plan(ds)] == ["Read[Items]->FlatMap(load)", "MapBatches(ident)"]


def test_fused_reads_plan_four_tasks_per_cpu_unless_the_user_says():
    assert FUSED_TASKS_PER_CPU == 4
    assert [default_parallelism(c, 0, 100, fused=f) for c in (2, 8) for f in (False, True)] == \
        [4, 8, 16, 32]
    ds = sb.from_items(list(range(100))).flat_map(load)
    assert len(_plan(ds)[0].read_tasks) == 32
    assert len(_plan(sb.from_items(list(range(100))))[0].read_tasks) == 16  # no UDF: 2 per CPU
    ds = sb.from_items(list(range(100)), override_num_blocks=5).flat_map(load)
    assert len(_plan(ds)[0].read_tasks) == 5
    assert len(_plan(sb.from_items(list(range(3))).flat_map(load))[0].read_tasks) == 3


def test_an_unfused_default_batch_stage_takes_each_block_as_it_comes():
    # num_cpus=0.5 keeps the stage out of the read; before, its one task waited for all
    # 40 rows (a 1024-row batch); now each 10-row block is a batch of its own
    ds = sb.range(40, override_num_blocks=4).map_batches(batch_len, num_cpus=0.5,
                                                         releases_gil=False)
    batches = [int(r["n"]) for r in ds.take_all()]  # blocks of at most a read's 10 rows
    assert sum(batches) == 40 and max(batches) <= 10, batches  # (cut smaller for idle slots)
    ds = sb.range(2500, override_num_blocks=1).map_batches(batch_len, releases_gil=False)
    assert sorted(int(r["n"]) for r in ds.take_all()) == [452, 1024, 1024]  # still cut at 1024
