"""The streaming_split socket under clients that misbehave: one that connects and
says nothing, one that dies mid-epoch, one that stops on purpose. None of them
may block or starve the other ranks; a rank that dies is named to the others.

Every wait here is bounded (threads joined with a timeout, socket reads with a
timeout), so a regression fails instead of hanging the suite."""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import socket
import threading

import pyarrow as pa
import pytest

import streambatch as sb
from streambatch.loader.split import RankLostError, RankStuckError
from streambatch.loader.split_server import SplitServer, fetch_rank

BOUND_S = 30.0  # generous: the real work takes well under a second


def _silent_client(address: str) -> socket.socket:
    """A client that connects to the split socket and never says anything."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(address)
    return s


def _iterate_ranks(splits, batch_size: int = 10) -> tuple[dict, dict, list]:
    """Iterate every split on its own thread; (ids per rank, error per rank, threads still running)."""
    ids: dict = {}
    errors: dict = {}

    def run(split):
        try:
            ids[split.rank] = [i for b in split.iter_batches(batch_size=batch_size, batch_format="pyarrow")
                               for i in b["id"].to_pylist()]
        except BaseException as exc:  # noqa: BLE001 - inspected by the test
            errors[split.rank] = exc

    threads = [threading.Thread(target=run, args=(s,), daemon=True) for s in splits]
    for t in threads:
        t.start()
    for t in threads:
        t.join(BOUND_S)
    return ids, errors, [t for t in threads if t.is_alive()]


def test_a_silent_client_does_not_block_the_ranks():
    splits = sb.range(120, override_num_blocks=4).streaming_split(3, equal=True)
    silent = [_silent_client(splits[0].group.server.address) for _ in range(2)]
    try:
        remote = [pickle.loads(pickle.dumps(s)) for s in splits]  # fetch over the socket
        ids, errors, running = _iterate_ranks(remote)
    finally:
        for s in silent:
            s.close()
    assert not running, "the ranks were blocked behind a client that said nothing"
    assert errors == {}
    assert sorted(i for rank in ids.values() for i in rank) == list(range(120))
    assert len({len(v) for v in ids.values()}) == 1


def test_a_client_that_says_nothing_is_dropped_after_the_handshake_deadline():
    server = SplitServer(lambda rank, epoch, opts: iter([pa.table({"r": [rank]})]),
                         handshake_timeout=0.2)
    try:
        silent = _silent_client(server.address)
        silent.settimeout(BOUND_S)
        received = b""
        while chunk := silent.recv(4096):  # the challenge, then EOF when the server drops us
            received += chunk
        silent.close()
        assert received  # the server did speak first (its auth challenge)
        got = [t["r"].to_pylist() for t in fetch_rank(server.address, server.authkey, 4, 0, {})]
        assert got == [[4]]  # and still serves real ranks
    finally:
        server.close()


def test_a_client_with_the_wrong_key_is_refused_and_others_are_served():
    server = SplitServer(lambda rank, epoch, opts: iter([pa.table({"r": [rank]})]))
    try:
        with pytest.raises(Exception, match="(?i)auth|digest|closed"):
            list(fetch_rank(server.address, b"x" * 32, 0, 0, {}))
        assert [t["r"].to_pylist() for t in fetch_rank(server.address, server.authkey, 1, 0, {})] \
            == [[1]]
    finally:
        server.close()


def _die_after_one_batch(split) -> None:
    for _ in split.iter_batches(batch_size=10, batch_format="pyarrow"):
        os._exit(3)  # a crash: no clean close of the connection


def _stop_after_one_batch(split) -> None:
    it = split.iter_batches(batch_size=10, batch_format="pyarrow")
    next(it)
    it.close()  # stops on purpose


def _ranks_with_one_process(target, rows: int = 400):
    splits = sb.range(rows, override_num_blocks=4).streaming_split(2, equal=True, timeout_s=BOUND_S)
    proc = mp.get_context("fork").Process(target=target, args=(splits[1],))
    proc.start()
    try:
        ids, errors, running = _iterate_ranks([splits[0]])
    finally:
        proc.join(BOUND_S)
        if proc.is_alive():
            proc.kill()
    return ids, errors, running, proc.exitcode


def test_a_rank_process_that_dies_mid_epoch_is_named_to_the_others():
    ids, errors, running, code = _ranks_with_one_process(_die_after_one_batch)
    assert not running and code == 3
    error = errors.get(0)
    assert isinstance(error, RankLostError) and isinstance(error, RankStuckError), (ids, errors)
    assert error.rank == 1 and "rank 1 of 2" in str(error) and "epoch 0" in str(error)


def test_a_rank_process_that_stops_on_purpose_does_not_fail_the_others():
    ids, errors, running, code = _ranks_with_one_process(_stop_after_one_batch)
    assert not running and code == 0
    assert errors == {} and len(ids[0]) >= 20
