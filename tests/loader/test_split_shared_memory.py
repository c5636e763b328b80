"""A rank process gets its batches through shared memory: each batch is written once
by the driver into one of the rank's files and mapped by the rank; a file is written
over only once the rank has dropped the batch it carried, and the files go when the
rank's epoch ends, so nothing is left behind, and nothing is readable by another user.

A batch cut from two blocks reaches the server with two chunks per column; its
fixed-width columns are written chunk by chunk into the file (no join in the driver)
and the rank rebuilds each as one contiguous array over the map."""

from __future__ import annotations

import os
import stat

import numpy as np
import pyarrow as pa
import pytest

from streambatch.loader import split_shm
from streambatch.loader.split_server import SplitServer, fetch_rank
from streambatch.loader.split_shm import read_batch, write_batch


def _tables(rank, epoch, options):
    for i in range(3):
        yield pa.table({"rank": [rank] * 4, "i": [i] * 4, "blob": [b"x" * 1000] * 4})


def _blob_only(rank, epoch, options):
    for i in range(2):  # no fixed-width column: the whole table as an Arrow IPC file
        part = pa.table({"s": [f"{rank}-{i}"] * 2})
        yield pa.concat_tables([part, part])


def _many(rank, epoch, options):
    for i in range(8):
        yield pa.table({"i": np.full(1000, i), "v": np.arange(1000, dtype=np.float64) * i})


def _serve_and_watch(open_rank, monkeypatch, hold=False):
    """Serve ``open_rank``; the batches rank 1 got (``hold``: the tables, all kept
    while it reads on; else their rows, each table dropped as it comes) and the
    (path, mode) of every file written."""
    server = SplitServer(open_rank)
    written = []
    store = server._shared()
    real_put, real_write = store.put, split_shm.BatchFiles.write

    def put(table):
        ref = real_put(table)
        written.append((ref.path, stat.S_IMODE(os.stat(ref.path).st_mode)))
        return ref

    def write(self, table):
        out = real_write(self, table)
        if out is not None:
            written.append((out[0], stat.S_IMODE(os.stat(out[0]).st_mode)))
        return out

    store.put = put
    monkeypatch.setattr(split_shm.BatchFiles, "write", write)
    try:
        it = fetch_rank(server.address, server.authkey, 1, 0, {})
        got = list(it) if hold else [t.to_pydict() for t in it]
        assert stat.S_IMODE(os.stat(store.root).st_mode) == 0o700
        assert os.listdir(store.root) == []  # the rank's files went when its epoch ended
    finally:
        server.close()
    assert not os.path.exists(store.root)
    return got, written


def test_batches_travel_through_shared_memory_and_leave_nothing(monkeypatch):
    got, written = _serve_and_watch(_tables, monkeypatch)
    assert [(d["rank"][0], d["i"][0]) for d in got] == [(1, 0), (1, 1), (1, 2)]
    assert got[0]["blob"] == [b"x" * 1000] * 4
    assert [mode for _, mode in written] == [0o600] * 3


def test_a_rank_that_drops_its_batches_gets_the_next_ones_in_the_same_files(monkeypatch):
    got, written = _serve_and_watch(_many, monkeypatch)
    assert [d["i"][0] for d in got] == list(range(8))
    assert all(d["v"] == [float(x * d["i"][0]) for x in range(1000)] for d in got)
    assert len({path for path, _ in written}) <= 3  # each dropped at once: files reused


def test_a_batch_the_rank_holds_is_never_written_over(monkeypatch):
    got, written = _serve_and_watch(_many, monkeypatch, hold=True)
    assert len({path for path, _ in written}) == 8  # every batch still held: a file each
    for i, table in enumerate(got):  # the maps stay valid after the files went
        assert table["i"].to_pylist() == [i] * 1000
        assert table["v"].to_pylist() == [float(x * i) for x in range(1000)]


def test_tables_without_fixed_width_columns_travel_as_ipc_joined(monkeypatch):
    got, written = _serve_and_watch(_blob_only, monkeypatch)
    assert [d["s"] for d in got] == [["1-0"] * 4, ["1-1"] * 4]
    assert [mode for _, mode in written] == [0o600] * 2


def _images(start, n):
    pixels = (np.arange(n * 3 * 4 * 4, dtype=np.int64).reshape(n, 3, 4, 4) + start) % 251
    return pa.table({
        "id": np.arange(start, start + n),
        "image": pa.FixedShapeTensorArray.from_numpy_ndarray(pixels.astype(np.uint8)),
        "emb": pa.FixedSizeListArray.from_arrays(pa.array(np.arange(2 * n, dtype=np.float32)), 2),
        "name": [f"r{i}" for i in range(start, start + n)],
        "score": pa.array([None if i % 3 == 0 else float(i) for i in range(start, start + n)]),
    })


@pytest.mark.parametrize("cuts", [[(0, 5)], [(2, 3), (0, 4)], [(4, 1), (0, 5), (1, 2)]])
def test_a_batch_of_several_chunks_is_rebuilt_whole_and_equal(tmp_path, cuts):
    a, b, c = _images(0, 5), _images(5, 5), _images(10, 5)
    table = pa.concat_tables([t.slice(o, n) for t, (o, n) in zip((a, b, c)[:len(cuts)], cuts, strict=True)])
    path, layout = write_batch(str(tmp_path), table)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    _, rows, _, regions = layout
    assert rows == table.num_rows
    # id, image and emb go as raw regions; the strings and the column with nulls by IPC
    assert [r is not None for r in regions] == [True, True, True, False, False]
    assert all(start % 64 == 0 for start, _ in filter(None, regions))
    got = read_batch(path, layout)
    assert not os.path.exists(path)
    assert got.schema == table.schema and got.equals(table)
    assert all(col.num_chunks == 1 for col in got.columns)
    image = got["image"].chunk(0).to_numpy_ndarray()  # one contiguous view over the map
    assert image.shape == (table.num_rows, 3, 4, 4) and image.flags["C_CONTIGUOUS"]
    want = np.concatenate([c.to_numpy_ndarray() for c in table["image"].chunks])
    assert np.array_equal(image, want)


def test_no_rows_or_no_fixed_width_column_is_left_to_the_caller(tmp_path):
    assert write_batch(str(tmp_path), _images(0, 3).slice(0, 0)) is None
    assert write_batch(str(tmp_path), pa.table({"s": ["a"]})) is None
    assert os.listdir(tmp_path) == []


def test_fixed_width_column_with_nulls_inside_a_fixed_size_list_goes_by_ipc(tmp_path):
    values = pa.array([1.0, None, 3.0, 4.0], pa.float32())
    table = pa.table({"v": pa.FixedSizeListArray.from_arrays(values, 2), "k": [1, 2]})
    path, layout = write_batch(str(tmp_path), table)
    assert [r is not None for r in layout[3]] == [False, True]
    assert read_batch(path, layout).equals(table)
