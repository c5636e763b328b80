"""Training batches are slices of the blocks the pipeline made wherever the rows' order
is free: only the rows left over at blocks' ends are joined (copied). A task of 200 rows
mapped in batches of 64 makes blocks of 64, 64, 64 and 8 rows; cut in arrival order,
every batch after the first 8-row block spanned two blocks and was copied (9.6 MB into
fresh memory per W2 batch)."""

from __future__ import annotations

import numpy as np
import pytest

import streambatch as sb

ROWS, PARTS, BATCH = 800, 4, 64  # partitions of 200 rows: blocks of 64, 64, 64, 8


def _ids(batch) -> list[int]:
    return batch["id"].tolist()


def _pipeline():
    return sb.range(ROWS, override_num_blocks=PARTS).map_batches(
        lambda b: {"id": b["id"], "x": np.asarray(b["id"]) * 2}, batch_size=BATCH,
        batch_format="numpy")


def _from_one_block(ids: list[int]) -> bool:
    """Consecutive rows of one 64-row block (a slice, no copy)."""
    start = ids[0]
    return ids == list(range(start, start + BATCH)) and start % 200 in (0, 64, 128)


@pytest.mark.parametrize("attempt", range(2))
def test_whole_batches_are_slices_of_blocks_and_the_leftovers_go_together(attempt):
    sb.init(num_cpus=2)
    batches = [_ids(b) for b in _pipeline().iter_torch_batches(batch_size=BATCH, device="cpu")]
    assert sorted(i for b in batches for i in b) == list(range(ROWS))
    assert [len(b) for b in batches] == [BATCH] * 12 + [PARTS * 8]
    assert sum(_from_one_block(b) for b in batches) == 12  # every full batch: one block
    assert sorted(i % 200 for i in batches[-1]) == sorted(list(range(192, 200)) * PARTS)


def test_with_preserve_order_batches_follow_the_rows_order():
    sb.init(num_cpus=2, preserve_order=True)
    try:
        batches = [_ids(b) for b in _pipeline().iter_torch_batches(batch_size=BATCH,
                                                                   device="cpu")]
    finally:
        sb.init(num_cpus=2)
    assert [i for b in batches for i in b] == list(range(ROWS))
    assert [len(b) for b in batches] == [BATCH] * 12 + [ROWS - 12 * BATCH]


def test_after_a_sort_batches_keep_the_sorted_order():
    """A sort's order is its output: no batch is cut out of order for fewer copies."""
    sb.init(num_cpus=2)
    ds = _pipeline().sort("id", descending=True)
    want = list(range(ROWS))[::-1]
    torch_ids = [i for b in ds.iter_torch_batches(batch_size=BATCH, device="cpu")
                 for i in _ids(b)]
    numpy_ids = [i for b in ds.iter_batches(batch_size=BATCH, batch_format="numpy")
                 for i in b["id"].tolist()]
    assert torch_ids == want and numpy_ids == want


def test_iter_batches_slices_blocks_too():
    sb.init(num_cpus=2)
    batches = [b["id"].tolist() for b in _pipeline().iter_batches(batch_size=BATCH,
                                                                  batch_format="numpy")]
    assert sorted(i for b in batches for i in b) == list(range(ROWS))
    assert sum(_from_one_block(b) for b in batches) == 12
