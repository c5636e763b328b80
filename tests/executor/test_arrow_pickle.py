"""Tables of Arrow C++-only extension types (ragged tensors, ``arrow.variable_shape_tensor``)
reach worker processes: pyarrow pickles such a type as a name it cannot read back, so a
read task holding one failed in the worker ("No type alias for extension<...>"; 8 of 60
property cases, seeds 91000-91059, before executor/arrow_pickle.py)."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
from streambatch.connectors.tensors import variable_shape_tensor_type

import streambatch as sb


def _ragged(rows: int) -> pa.Table:
    typ = variable_shape_tensor_type(pa.int16(), 2)
    cells = [{"data": list(range(i % 4 + 1)), "shape": [1, i % 4 + 1]} for i in range(rows)]
    tensors = pa.ExtensionArray.from_storage(typ, pa.array(cells, type=typ.storage_type))
    return pa.table({"id": np.arange(rows), "t": tensors})


def _pid(batch: pa.Table) -> pa.Table:
    return batch.append_column("pid", pa.array([os.getpid()] * batch.num_rows))


def test_a_ragged_tensor_table_goes_through_a_worker_process_unchanged():
    table = _ragged(40)
    out = sb.from_arrow(table).map_batches(_pid, batch_format="pyarrow",
                                           releases_gil=False).to_arrow()
    assert os.getpid() not in set(out["pid"].to_pylist())  # it ran in a worker
    out = out.sort_by("id")
    assert out["t"].type == table["t"].type
    assert out["t"].to_pylist() == table["t"].to_pylist()

