"""A rank process gets its batches through shared memory: each batch is written once
by the driver, mapped by the rank and unlinked as soon as it is mapped, so nothing
is left behind, and nothing is readable by another user."""

from __future__ import annotations

import os
import stat

import pyarrow as pa

from streambatch.loader.split_server import SplitServer, fetch_rank


def _tables(rank, epoch, options):
    for i in range(3):
        yield pa.table({"rank": [rank] * 4, "i": [i] * 4, "blob": [b"x" * 1000] * 4})


def test_batches_travel_through_shared_memory_and_leave_nothing():
    server = SplitServer(_tables)
    seen_modes = []
    real_put = None
    try:
        store = server._shared()
        real_put = store.put

        def put(table):
            ref = real_put(table)
            seen_modes.append(stat.S_IMODE(os.stat(ref.path).st_mode))
            return ref

        store.put = put
        got = [t.to_pydict() for t in fetch_rank(server.address, server.authkey, 1, 0, {})]
        assert [(d["rank"][0], d["i"][0]) for d in got] == [(1, 0), (1, 1), (1, 2)]
        assert got[0]["blob"] == [b"x" * 1000] * 4
        assert seen_modes == [0o600] * 3
        assert stat.S_IMODE(os.stat(store.root).st_mode) == 0o700
        assert os.listdir(store.root) == []  # each batch unlinked once mapped
    finally:
        server.close()
    assert not os.path.exists(store.root)
