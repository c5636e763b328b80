"""Released block files are written over only when nobody maps them: the data a user
holds (a table, a numpy view, a torch tensor made from a block) never changes under
them, and files nobody maps are reused (their pages are not faulted in afresh)."""

from __future__ import annotations

import multiprocessing
import os

import numpy as np
import pyarrow as pa
import pytest
from streambatch.executor.backends import block_recycling
from streambatch.executor.backends.shared_store import SharedStore

import streambatch as sb


def _table(value: int, rows: int = 4096) -> pa.Table:
    return pa.table({"x": np.full(rows, value, dtype=np.int64)})


@pytest.fixture
def store():
    s = SharedStore.create(reuse_bytes=64 << 20)
    yield s
    s.destroy()


def test_a_released_file_nobody_maps_is_written_over(store):
    ref = store.put(_table(1))
    inode = os.stat(ref.path).st_ino
    store.release(ref)
    again = store.put(_table(2, rows=100))
    assert os.stat(again.path).st_ino == inode  # the same file, under a new name
    assert again.read()["x"].to_pylist() == [2] * 100  # cut to the new length
    assert os.listdir(os.path.join(store.root, block_recycling.FREE_DIR)) == []


def test_a_table_still_held_keeps_its_data(store):
    ref = store.put(_table(1))
    held = ref.read()  # maps the file
    view = held["x"].chunk(0).to_numpy()
    store.release(ref)
    for value in range(2, 6):
        store.put(_table(value))
    assert set(view.tolist()) == {1}
    assert held["x"].to_pylist() == [1] * 4096


def _hold(path, ready, done):
    table = pa.ipc.open_file(pa.memory_map(path)).read_all()
    ready.set()
    done.wait(30)
    assert table.num_rows


def test_a_file_mapped_by_another_process_is_not_taken(store):
    ref = store.put(_table(1))
    ctx = multiprocessing.get_context("fork")
    ready, done = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_hold, args=(ref.path, ready, done))
    child.start()
    try:
        assert ready.wait(30)
        inode = os.stat(ref.path).st_ino
        store.release(ref)
        fresh = store.put(_table(2))
        assert os.stat(fresh.path).st_ino != inode  # mapped elsewhere: a fresh file
        kept = os.listdir(os.path.join(store.root, block_recycling.FREE_DIR))
        assert len(kept) == 1  # left for a later try
    finally:
        done.set()
        child.join(30)
    assert os.stat(store.put(_table(3)).path).st_ino == inode  # unmapped now: reused


def test_the_free_files_stay_under_their_byte_limit():
    store = SharedStore.create(reuse_bytes=100 << 10)
    try:
        refs = [store.put(_table(i)) for i in range(6)]  # ~33 KiB files
        for ref in refs:
            store.release(ref)
        free = os.path.join(store.root, block_recycling.FREE_DIR)
        held = sum(os.path.getsize(os.path.join(free, n)) for n in os.listdir(free))
        assert 0 < held <= 100 << 10
        assert len(os.listdir(free)) < 6
    finally:
        store.destroy()


def test_no_limit_keeps_nothing():
    store = SharedStore.create()
    try:
        ref = store.put(_table(1))
        store.release(ref)
        assert not os.path.exists(ref.path)
        assert not os.path.exists(os.path.join(store.root, block_recycling.FREE_DIR))
    finally:
        store.destroy()


def _tagged(batch):
    """Pure Python (so the stage moves to worker processes) and 1 MiB a row."""
    total = 0
    for i in range(20_000):
        total += i % 3
    ids = batch["id"]
    return {"id": ids, "pix": np.repeat(ids.astype(np.uint8)[:, None], 1 << 20, axis=1)}


def test_batches_a_training_loop_keeps_are_unchanged_at_the_end():
    """Every batch kept (as torch tensors) while workers write later blocks over
    released files: each keeps the pixels it was handed."""
    torch = pytest.importorskip("torch")
    sb.init(num_cpus=2)
    try:
        ds = sb.range(96, override_num_blocks=12).map_batches(_tagged, batch_size=4,
                                                              releases_gil=False)
        kept = list(ds.iter_torch_batches(batch_size=8))
    finally:
        sb.init()
    ids = torch.cat([b["id"] for b in kept])
    assert sorted(ids.tolist()) == list(range(96))
    for batch in kept:
        expected = (batch["id"] % 256).to(torch.uint8)
        assert torch.equal(batch["pix"][:, 0], expected)
        assert torch.equal(batch["pix"][:, -1], expected)

