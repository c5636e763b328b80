"""flat_map does not hold its UDF's rows once they are in its output block: the next
op of the fused chain works on the block alone (S1: each task held the load's 8 MiB
of numpy rows beside the block made of them while the transform ran)."""

from __future__ import annotations

import weakref

import numpy as np
import pyarrow as pa
from streambatch.executor.contract import TaskContext
from streambatch.operators import logical as L
from streambatch.operators.block_ops import FlatMapOp


def test_the_udfs_rows_are_let_go_once_they_are_in_the_block():
    made: list[weakref.ref] = []

    def explode(row):
        rows = [{"x": np.full(1000, row["i"] * 10 + j, dtype=np.int64)} for j in range(3)]
        made.extend(weakref.ref(r["x"]) for r in rows)
        return rows

    op = FlatMapOp(L.FlatMap(input=L.Read(source=None), fn=explode))
    blocks = op.apply(iter([pa.table({"i": [1, 2]})]), TaskContext("S", 0, "p", {}, "0"))
    block = next(blocks)  # the generator is suspended here, as while the next op runs
    assert [v[0] for v in block.column("x").to_pylist()] == [10, 11, 12, 20, 21, 22]
    assert len(made) == 6 and all(ref() is None for ref in made)
