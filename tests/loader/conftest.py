"""Fixtures for the training-loader tests: two CPU slots, a small memory budget,
and datasets whose rows carry a unique ``id`` so coverage can be checked exactly."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import streambatch as sb

MiB = 2**20


@pytest.fixture(autouse=True, scope="module")
def _engine():
    sb.init(num_cpus=2, memory_budget=256 * MiB)
    yield


@pytest.fixture(autouse=True)
def _restore_preserve_order():
    opts = sb.DataContext.get_current().execution_options
    before = opts.preserve_order
    yield
    opts.preserve_order = before


def image_table(rows: int, start: int = 0) -> pa.Table:
    """``id`` (int64), ``label`` (float32), ``img`` (uint8 tensor 3x4x4 filled with id % 251)."""
    ids = np.arange(start, start + rows, dtype=np.int64)
    img = np.broadcast_to((ids % 251).astype(np.uint8)[:, None, None, None], (rows, 3, 4, 4))
    return pa.table({
        "id": ids,
        "label": (ids * 0.5).astype(np.float32),
        "img": pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(img)),
    })


@pytest.fixture
def images():
    """1,000 rows in 8 read partitions."""
    return sb.from_arrow(image_table(1000), override_num_blocks=8)


def ids_of(batches) -> list[int]:
    """Every ``id`` in a sequence of torch/numpy/arrow batches, in order."""
    out: list[int] = []
    for b in batches:
        col = b["id"]
        out.extend(col.tolist() if hasattr(col, "tolist") else col.to_pylist())
    return out
