"""A source whose reads start before any of them finished reserves what a read makes
once the first one tells: a fused map grew each range row (8 bytes estimated) to
1 MiB, three first-wave tasks started late (slow worker start on a loaded machine),
the fourth slot ran on and filled the budget with later partitions (held in order
behind them), and the three
then added their 3 MiB on top (peak buffered 14 MiB of a 12 MiB budget, 1 fresh-clone
suite in 8 and 1 run in 6 under load)."""

from __future__ import annotations

import os
import time

import pyarrow as pa

import streambatch as sb

MiB = 2**20
BUDGET = 12 * MiB
LATE = {1, 2, 3}  # the first wave's late starters
RAN_ON = 10  # later partitions they wait for: only a budget that ignores them admits so many


def _grow_late(marks: str):
    def grow(batch: pa.Table) -> pa.Table:
        row = batch["id"][0].as_py()
        if row in LATE:  # held until the fourth slot ran on (or, where the budget stops
            deadline = time.monotonic() + 3  # it first, for 3 s)
            while len(os.listdir(marks)) < RAN_ON and time.monotonic() < deadline:
                time.sleep(0.01)
        elif row > max(LATE):
            open(os.path.join(marks, str(row)), "w").close()
        return pa.table({"id": batch["id"], "blob": pa.array(["x" * MiB] * batch.num_rows)})

    return grow


def test_reads_started_before_the_first_finished_reserve_what_a_read_makes(tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    sb.init(num_cpus=4, memory_budget=BUDGET, target_partition_bytes=MiB,
            preserve_order=True)  # later partitions wait for the late ones, buffered
    ds = sb.range(32, override_num_blocks=32).map_batches(
        _grow_late(str(marks)), batch_size=None, batch_format="pyarrow", releases_gil=False)
    rows = ds.take_all()
    stats = ds.stats()
    assert [r["id"] for r in rows] == list(range(32))
    assert stats.peak_buffered_bytes <= BUDGET, str(stats)
