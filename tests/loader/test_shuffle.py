"""Shuffling: exactly-once coverage, seeded reproducibility, block order, the buffer itself."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import streambatch as sb
from streambatch.loader.epochs import epoch_chunks, make_config
from streambatch.loader.shuffle import ShuffleBuffer, block_order, pack_ids, unpack_ids

from .conftest import ids_of, image_table


@pytest.mark.parametrize("shuffle", [None, 1, 100, 5000])
def test_every_row_exactly_once_per_epoch(images, shuffle):
    it = images.iter_torch_batches(batch_size=64, device="cpu",
                                   local_shuffle_buffer_size=shuffle)
    for _ in range(2):  # two epochs
        seen = ids_of(it)
        assert sorted(seen) == list(range(1000))


def test_shuffled_batches_keep_rows_intact(images):
    for b in images.iter_torch_batches(batch_size=50, local_shuffle_buffer_size=200,
                                       local_shuffle_seed=1, device="cpu"):
        assert (b["img"][:, 2, 3, 1].numpy() == b["id"].numpy() % 251).all()
        assert (b["label"].numpy() == b["id"].numpy() * 0.5).all()


def test_shuffling_changes_the_order(images):
    plain = ids_of(images.iter_torch_batches(batch_size=64, device="cpu"))
    shuffled = ids_of(images.iter_torch_batches(batch_size=64, local_shuffle_buffer_size=200,
                                                device="cpu"))
    assert plain != shuffled and sorted(plain) == sorted(shuffled)
    # a buffer mixes rows from beyond one batch: the first batch is not a run of neighbours
    first = sorted(shuffled[:64])
    assert first[-1] - first[0] > 64


def test_same_seed_same_order_another_seed_another(images):
    def order(seed):
        return ids_of(images.iter_torch_batches(batch_size=32, local_shuffle_buffer_size=300,
                                                local_shuffle_seed=seed, device="cpu"))

    a, b, c = order(7), order(7), order(8)
    assert a == b
    assert a != c and sorted(a) == sorted(c) == list(range(1000))


def test_seeded_epochs_differ_but_repeat_across_runs(images):
    def epochs(seed):
        it = images.iter_torch_batches(batch_size=32, local_shuffle_buffer_size=300,
                                       local_shuffle_seed=seed, device="cpu")
        return ids_of(it), ids_of(it)

    first = epochs(3)
    assert first[0] != first[1]
    assert epochs(3) == first


def test_block_order_is_seeded_and_per_epoch():
    assert block_order(8, None, 5) == list(range(8))
    orders = {tuple(block_order(8, 11, e)) for e in range(4)}
    assert len(orders) > 1 and all(sorted(o) == list(range(8)) for o in orders)
    assert block_order(8, 11, 2) == block_order(8, 11, 2)


def test_shuffled_read_order_reaches_the_executor():
    ds = sb.range(80, override_num_blocks=8)
    for epoch in (0, 1):
        cfg = make_config(10, False, 4, 5)
        chunks = list(epoch_chunks(ds, cfg, epoch, None))
        reads = [int(unpack_ids(ids)[0][0]) for _, ids in chunks]
        assert reads == block_order(8, 5, epoch) != list(range(8))
        # each read partition's rows are the ones the source holds for it
        for (table, _), read in zip(chunks, reads, strict=True):
            assert table["id"].to_pylist() == list(range(10 * read, 10 * read + 10))


@pytest.mark.parametrize("seed", [9, None])
@pytest.mark.parametrize("tail", ["limit", "union_of_limits", "seeded_sample"])
def test_a_shuffled_epoch_holds_the_rows_the_plan_keeps(tail, seed):
    """A limit keeps the first rows: reading the partitions in a shuffled order changed
    which rows (limit(2500) of 3000 gave 500 rows past 2499). The epoch holds the rows
    of ``take_all()``, shuffled, with a seed or without (a limit reads its input in
    order either way)."""
    ds = sb.range(3000, override_num_blocks=12).map(lambda r: {"id": r["id"]})
    ds = {"limit": ds.limit(2500),
          "union_of_limits": ds.limit(700).union(ds.limit(300)),
          "seeded_sample": ds.random_sample(0.5, seed=3)}[tail]
    expected = sorted(r["id"] for r in ds.take_all())
    batches = ds.iter_batches(batch_size=64, local_shuffle_buffer_size=400,
                              local_shuffle_seed=seed)
    assert sorted(int(x) for b in batches for x in b["id"]) == expected
    loader = ds.iter_torch_batches(batch_size=64, device="cpu",
                                   local_shuffle_buffer_size=400, local_shuffle_seed=seed)
    for _ in range(2):  # two epochs, each in its own read order
        assert sorted(int(x) for b in loader for x in b["id"]) == expected


def test_shuffle_buffer_gathers_rows_with_their_ids_across_blocks():
    buf = ShuffleBuffer(buffer_size=10, seed=0)
    tables = [image_table(7, start=0), image_table(9, start=7), image_table(5, 16)]
    for i, t in enumerate(tables):
        buf.add(t, pack_ids(i, 0, t.num_rows))
    seen = []
    while buf.rows:
        batch, ids = buf.pop(4)
        reads, offsets = unpack_ids(ids)
        starts = np.array([0, 7, 16])[reads]
        assert batch["id"].to_numpy().tolist() == (starts + offsets).tolist()
        img = batch["img"].chunk(0).to_numpy_ndarray()
        assert (img[:, 1, 2, 3] == batch["id"].to_numpy() % 251).all()
        seen += batch["id"].to_pylist()
    assert sorted(seen) == list(range(21))


def test_shuffle_buffer_handles_columns_without_a_numpy_view():
    buf = ShuffleBuffer(buffer_size=2, seed=1)
    buf.add(pa.table({"s": ["a", "b", None], "x": [1, 2, 3]}), pack_ids(0, 0, 3))
    buf.add(pa.table({"s": ["d", "e"], "x": [4, 5]}), pack_ids(1, 0, 2))
    rows = []
    while buf.rows:
        batch, _ = buf.pop(2)
        rows += batch.to_pylist()
    expected = [{"s": "a", "x": 1}, {"s": "b", "x": 2}, {"s": None, "x": 3},
                {"s": "d", "x": 4}, {"s": "e", "x": 5}]
    assert sorted(rows, key=lambda r: r["x"]) == expected


def test_shuffle_buffer_matches_columns_by_name_not_position():
    """Blocks whose columns come in another order, lack one or widen a type: every
    value stays in its own column (taking by position swapped a and b)."""
    buf = ShuffleBuffer(buffer_size=2, seed=0)
    buf.add(pa.table({"a": [10, 20], "b": [1, 2]}), pack_ids(0, 0, 2))
    buf.add(pa.table({"b": [3, 4], "a": [30, 40]}), pack_ids(1, 0, 2))
    buf.add(pa.table({"a": [50.5], "c": ["x"]}), pack_ids(2, 0, 1))
    rows = sorted((r for t, _ in buf.drain(2) for r in t.to_pylist()), key=lambda r: r["a"])
    assert rows == [{"a": 10.0, "b": 1, "c": None}, {"a": 20.0, "b": 2, "c": None},
                    {"a": 30.0, "b": 3, "c": None}, {"a": 40.0, "b": 4, "c": None},
                    {"a": 50.5, "b": None, "c": "x"}]


@pytest.mark.parametrize("method", ["iter_batches", "iter_torch_batches"])
def test_a_local_shuffle_without_a_batch_size_is_refused_as_in_ray_data(method):
    """(It gave 100 batches of one row each.)"""
    with pytest.raises(ValueError, match="local_shuffle_buffer_size needs a batch_size"):
        next(iter(getattr(sb.range(100), method)(batch_size=None, local_shuffle_buffer_size=10)))
