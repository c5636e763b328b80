"""streaming_split consumed from other processes (spawn and fork), as data-parallel ranks are."""

from __future__ import annotations

import multiprocessing as mp
import pickle
import queue
import time

import pytest

import streambatch as sb
from streambatch.loader.split import RankStuckError


def _rank_main(split, results, kwargs, epochs=1, stall_after=None):
    """A rank process: iterate its split, report (rank, epoch, batch ids, error)."""
    try:
        for epoch in range(epochs):
            ids = []
            for i, batch in enumerate(split.iter_batches(batch_format="numpy", **kwargs)):
                if stall_after is not None and i == stall_after:
                    time.sleep(30)  # never takes another batch (the driver times out first)
                ids.append(batch["id"].tolist())
            results.put((split.rank, epoch, ids, None))
    except BaseException as exc:  # noqa: BLE001 - inspected by the test
        results.put((split.rank, -1, None, f"{type(exc).__name__}: {exc}"))


def _torch_rank_main(split, results):
    try:
        out = [(tuple(b["img"].shape), str(b["img"].dtype), b["id"].tolist())
               for b in split.iter_torch_batches(batch_size=16)]
        results.put((split.rank, out, None))
    except BaseException as exc:  # noqa: BLE001
        results.put((split.rank, None, repr(exc)))


def _run(method, splits, target=_rank_main, args=(), expect=None, timeout=90):
    ctx = mp.get_context(method)
    results = ctx.Queue()
    procs = [ctx.Process(target=target, args=(s, results) + args) for s in splits]
    for p in procs:
        p.start()
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < (expect or len(splits)):
        try:
            got.append(results.get(timeout=max(0.1, deadline - time.monotonic())))
        except queue.Empty:
            break
    for p in procs:
        p.join(10)
        if p.is_alive():
            p.kill()
    return got


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_ranks_in_processes_get_every_row_once_in_equal_batch_counts(method):
    splits = sb.range(103, override_num_blocks=4).streaming_split(3, equal=True)
    got = _run(method, splits, args=({"batch_size": 10},))
    assert [err for *_, err in got] == [None, None, None]
    per_rank = {rank: ids for rank, _, ids, _ in got}
    assert sorted(per_rank) == [0, 1, 2]
    assert len({len(b) for b in per_rank.values()}) == 1, {r: len(b) for r, b in per_rank.items()}
    every = sorted(i for b in per_rank.values() for batch in b for i in batch)
    assert every == list(range(103))


def test_process_ranks_iterate_several_shuffled_epochs():
    splits = sb.range(200, override_num_blocks=4).streaming_split(2, equal=True)
    got = _run("fork", splits, args=({"batch_size": 16, "local_shuffle_buffer_size": 50}, 2),
               expect=4)
    assert all(err is None for *_, err in got) and len(got) == 4
    for epoch in (0, 1):
        ranks = [ids for _, e, ids, _ in got if e == epoch]
        assert len(ranks) == 2 and len(ranks[0]) == len(ranks[1])
        assert sorted(i for b in ranks for batch in b for i in batch) == list(range(200))


def test_torch_batches_in_a_forked_rank():
    from .conftest import image_table

    splits = sb.from_arrow(image_table(64), override_num_blocks=2).streaming_split(2, equal=True)
    got = _run("fork", splits, target=_torch_rank_main)
    assert [err for *_, err in got] == [None, None]
    for _, batches, _ in got:
        assert len(batches) == 2
        assert {(shape[1:], dtype) for shape, dtype, _ in batches} == {((3, 4, 4), "torch.uint8")}
    assert sorted(i for _, b, _ in got for *_, ids in b for i in ids) == list(range(64))


def test_a_stuck_rank_process_is_named_to_the_others():
    splits = sb.range(400, override_num_blocks=4).streaming_split(2, equal=True, timeout_s=1.0)
    ctx = mp.get_context("fork")
    results = ctx.Queue()
    stuck = ctx.Process(target=_rank_main, args=(splits[1], results, {"batch_size": 10}, 1, 1))
    fine = ctx.Process(target=_rank_main, args=(splits[0], results, {"batch_size": 10}))
    stuck.start()
    fine.start()
    rank, _, _, err = results.get(timeout=60)
    stuck.kill()
    fine.join(10)
    assert rank == 0 and err is not None
    assert "RankStuckError" in err and "rank 1 of 2" in err


def test_split_handles_pickle_to_a_server_address_and_the_error_survives_pickling():
    split = sb.range(10).streaming_split(2, equal=True)[1]
    clone = pickle.loads(pickle.dumps(split))
    assert (clone.rank, clone.n, clone.group) == (1, 2, None)
    err = pickle.loads(pickle.dumps(RankStuckError(1, 2.5, 2)))
    assert err.rank == 1 and "rank 1 of 2" in str(err)


def _pixels_rank_main(split, results):
    """A rank that checks every row's pixels and label against its id."""
    try:
        out, bad = [], 0
        for b in split.iter_torch_batches(batch_size=16, device="cpu"):
            ids = b["id"].numpy()
            img = b["img"].numpy()
            assert img.flags["C_CONTIGUOUS"] and img.shape[1:] == (3, 4, 4)
            bad += int((img != (ids % 251)[:, None, None, None]).any(axis=(1, 2, 3)).sum())
            bad += int((b["label"].numpy() != ids * 0.5).sum())
            out.append(ids.tolist())
        results.put((split.rank, out, bad, None))
    except BaseException as exc:  # noqa: BLE001
        results.put((split.rank, None, None, repr(exc)))


def test_batches_that_span_blocks_reach_a_rank_process_whole_and_right():
    """Batches of 16 cut from blocks of 37-38 rows hold two chunks per column in the
    driver; the rank gets each column as one array with the right rows."""
    from .conftest import image_table

    splits = sb.from_arrow(image_table(150), override_num_blocks=4).streaming_split(2, equal=True)
    got = _run("fork", splits, target=_pixels_rank_main)
    assert [err for *_, err in got] == [None, None]
    assert [bad for _, _, bad, _ in got] == [0, 0]
    assert len({len(batches) for _, batches, _, _ in got}) == 1  # equal batch counts
    assert sorted(i for _, b, _, _ in got for ids in b for i in ids) == list(range(150))


def _fails_at_70(batch):
    if (batch["id"] == 70).any():
        raise ValueError("bad row 70")
    return batch


def _catching_rank_main(split, results):
    try:
        for _ in split.iter_batches(batch_size=8):
            pass
        results.put((split.rank, "no error"))
    except ValueError as exc:  # the README: a UDF's ValueError is caught as one
        results.put((split.rank, type(exc).__name__))
    except BaseException as exc:  # noqa: BLE001
        results.put((split.rank, f"not a ValueError: {type(exc).__name__}"))


def test_a_udfs_error_reaches_a_rank_process_as_its_own_type():
    """(A rank in another process got a plain UserCodeError: except ValueError missed it.)"""
    splits = sb.range(100, override_num_blocks=4).map_batches(_fails_at_70).streaming_split(2)
    got = sorted(_run("fork", splits, target=_catching_rank_main))
    assert got == [(0, "UserCodeError[ValueError]"), (1, "UserCodeError[ValueError]")]
