"""streaming_split when one rank waits for another (issue 18: "if rank 0 waits for
rank 1 to finish, both stall").

Orderings: a rank finishes and then waits (a barrier, a join) for the other; a
rank races into the next epoch while the other is still on the previous one; a
rank stops early; a rank waits for the other to finish before it starts
reading (equal=False: the reading rank takes the rest; equal=True, as in Ray
Data, every rank must read at the same time, so the wait is named with a
RankStuckError after timeout_s); a rank that never starts. Each in threads, and
the main ones in spawned processes with the split pickled to the child. Every
row must reach exactly one rank. Every wait is bounded, so a regression fails
instead of hanging."""

from __future__ import annotations

import multiprocessing as mp
import threading
import time

import pytest

import streambatch as sb
from streambatch.loader.split import RankStuckError

ROWS, BATCH = 600, 20
BOUND_S = 40.0


def _dataset(rows: int = ROWS):
    return sb.range(rows, override_num_blocks=6)


def _read(split, batch_size: int = BATCH, stop_after: int | None = None, sleep: float = 0.0,
          **kwargs) -> list[list[int]]:
    """One epoch of ``split``: the ids of each batch (the first ``stop_after`` batches only)."""
    out: list[list[int]] = []
    for batch in split.iter_batches(batch_size=batch_size, batch_format="numpy", **kwargs):
        out.append(batch["id"].tolist())
        if stop_after is not None and len(out) >= stop_after:
            break
        if sleep:
            time.sleep(sleep)
    return out


def _in_threads(*bodies) -> tuple[dict, dict]:
    """Run ``bodies[r]()`` on thread r; (result per rank, error per rank)."""
    out, errors = {}, {}

    def run(rank, body):
        try:
            out[rank] = body()
        except BaseException as exc:  # noqa: BLE001 - inspected by the test
            errors[rank] = exc

    threads = [threading.Thread(target=run, args=(r, b), daemon=True) for r, b in enumerate(bodies)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(BOUND_S)
    assert not any(t.is_alive() for t in threads), "a rank is still running: stalled"
    return out, errors


def _flat(batches: list[list[int]]) -> list[int]:
    return [i for b in batches for i in b]


def _exactly_once(*per_rank: list[list[int]], rows: int = ROWS) -> None:
    ids = sorted(i for batches in per_rank for i in _flat(batches))
    assert ids == list(range(rows)), (len(ids), len(set(ids)))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("equal", [True, False])
def test_a_rank_that_finishes_then_waits_for_the_other(equal):
    splits = _dataset().streaming_split(2, equal=equal)
    barrier = threading.Barrier(2, timeout=BOUND_S)

    def rank(r):
        got = _read(splits[r], sleep=0.01 if r == 1 else 0.0)  # rank 1 is the slow one
        barrier.wait()  # e.g. the end of an epoch in a training loop
        return got

    out, errors = _in_threads(lambda: rank(0), lambda: rank(1))
    assert not errors
    _exactly_once(out[0], out[1])
    if equal:
        assert len(out[0]) == len(out[1]) == ROWS // BATCH // 2
        assert len(_flat(out[0])) == len(_flat(out[1])) == ROWS // 2
    else:
        assert out[0] and out[1]


@pytest.mark.timeout(60)
def test_a_rank_that_joins_the_other_before_reading_does_not_stall_with_equal_false():
    splits = _dataset().streaming_split(2, equal=False, timeout_s=BOUND_S)
    other: dict = {}
    t = threading.Thread(target=lambda: other.update(ids=_read(splits[1])), daemon=True)
    started = time.monotonic()
    t.start()
    t.join(BOUND_S)  # rank 0 waits for rank 1 to finish, then reads its own split
    assert not t.is_alive() and "ids" in other, "rank 1 stalled waiting for rank 0"
    mine = _read(splits[0])
    assert time.monotonic() - started < 15
    _exactly_once(mine, other["ids"])
    assert len(_flat(other["ids"])) >= ROWS - 2 * 2 * BATCH  # at most its queued batches left


@pytest.mark.timeout(60)
def test_a_rank_that_waits_for_the_other_before_reading_is_named_with_equal_true():
    # equal=True needs every rank's share: as in Ray Data, the ranks must read at the
    # same time; the rank that does not is named (after timeout_s) instead of a hang
    splits = _dataset().streaming_split(2, equal=True, timeout_s=1.0)
    done = threading.Event()

    def rank0():
        done.wait(BOUND_S)  # waits for rank 1 to finish before reading
        return _read(splits[0])

    def rank1():
        try:
            return _read(splits[1])
        finally:
            done.set()

    out, errors = _in_threads(rank0, rank1)
    assert set(errors) == {0, 1}
    for error in errors.values():
        assert isinstance(error, RankStuckError) and error.rank == 0
        assert "rank 0 of 2 has not started" in str(error) and "equal=False" in str(error)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("equal", [True, False])
def test_a_rank_in_the_next_epoch_while_the_other_is_on_the_previous(equal):
    splits = _dataset().streaming_split(2, equal=equal)

    def rank(r):
        return [_read(splits[r], sleep=0.01 if r == 1 else 0.0) for _ in range(2)]

    out, errors = _in_threads(lambda: rank(0), lambda: rank(1))
    assert not errors
    for epoch in range(2):
        _exactly_once(out[0][epoch], out[1][epoch])
        if equal:
            assert len(out[0][epoch]) == len(out[1][epoch])


@pytest.mark.timeout(60)
@pytest.mark.parametrize("equal,prefetch", [(True, 1), (False, 1), (True, 0), (False, 4)])
def test_a_rank_that_stops_early_leaves_the_rest_to_the_other(equal, prefetch):
    splits = _dataset().streaming_split(2, equal=equal)
    barrier = threading.Barrier(2, timeout=BOUND_S)

    def rank(r):
        got = _read(splits[r], stop_after=2 if r == 0 else None, prefetch_batches=prefetch,
                    sleep=0.005 if r == 1 else 0.0)
        barrier.wait()
        return got

    out, errors = _in_threads(lambda: rank(0), lambda: rank(1))
    assert not errors
    assert len(out[0]) == 2
    _exactly_once(out[0], out[1])  # what rank 0 fetched ahead and never saw goes to rank 1


@pytest.mark.timeout(60)
def test_a_rank_that_stops_early_in_torch_batches_leaves_the_rest():
    splits = _dataset().streaming_split(2)

    def rank0():
        out = []
        for batch in splits[0].iter_torch_batches(batch_size=BATCH, device="cpu"):
            out.append(batch["id"].tolist())
            if len(out) == 3:
                break
        return out

    out, errors = _in_threads(rank0, lambda: _read(splits[1], sleep=0.005))
    assert not errors and len(out[0]) == 3
    _exactly_once(out[0], out[1])


@pytest.mark.timeout(60)
def test_a_rank_that_never_starts_leaves_every_row_to_the_others_with_equal_false():
    splits = _dataset().streaming_split(3, equal=False, timeout_s=BOUND_S)
    out, errors = _in_threads(lambda: _read(splits[0]), lambda: _read(splits[1]))
    assert not errors
    _exactly_once(out[0], out[1])
    assert _read(splits[2]) == []  # starting after the epoch ended: nothing left for it


# ---- processes: each rank is a spawned process with its split pickled to it -------------

def _rank_process(split, results, sync, order, stop_after, read_kw=None):
    try:
        if order == "wait_first" and split.rank == 0:
            sync.wait(BOUND_S)  # for the other rank to finish
        got = _read(split, stop_after=stop_after, **(read_kw or {}))
        if order == "wait_first" and split.rank == 1:
            sync.set()
        elif order == "barrier":
            sync.wait(BOUND_S)
        results.put((split.rank, got, None))
    except BaseException as exc:  # noqa: BLE001 - inspected by the test
        results.put((split.rank, None, f"{type(exc).__name__}: {exc}"))


def _in_processes(splits, order: str, stop_after=(None, None), read_kw=None) -> dict:
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    sync = ctx.Barrier(2) if order == "barrier" else ctx.Event()
    procs = [ctx.Process(target=_rank_process,
                         args=(s, results, sync, order, stop_after[s.rank], read_kw))
             for s in splits]
    for p in procs:
        p.start()
    try:
        got = {}
        for _ in procs:
            rank, ids, err = results.get(timeout=BOUND_S)
            assert err is None, err
            got[rank] = ids
        return got
    finally:
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("equal", [True, False])
def test_rank_processes_that_finish_then_wait_and_one_that_stops_early(equal):
    got = _in_processes(_dataset().streaming_split(2, equal=equal), "barrier")
    _exactly_once(got[0], got[1])
    if equal:
        assert len(got[0]) == len(got[1])
    got = _in_processes(_dataset().streaming_split(2, equal=equal), "barrier", (2, None))
    assert len(got[0]) == 2
    _exactly_once(got[0], got[1])


@pytest.mark.timeout(90)
@pytest.mark.parametrize("prefetch", [0, 4])
def test_a_rank_process_with_deep_prefetch_that_stops_early_loses_nothing(prefetch):
    """The driver keeps only the batches a rank's consumer can have fetched without
    seeing them (its prefetch depth plus two): those still go back to the other rank."""
    got = _in_processes(_dataset().streaming_split(2, equal=True), "barrier", (2, None),
                        {"prefetch_batches": prefetch})
    assert len(got[0]) == 2
    _exactly_once(got[0], got[1])


@pytest.mark.timeout(60)
def test_a_rank_process_that_waits_for_the_other_before_reading_with_equal_false():
    got = _in_processes(_dataset().streaming_split(2, equal=False, timeout_s=BOUND_S),
                        "wait_first")
    _exactly_once(got[0], got[1])
