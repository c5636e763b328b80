"""streaming_split: one pipeline, n ranks, equal batch counts, backpressure, stuck ranks."""

from __future__ import annotations

import threading

import pytest
import torch

import streambatch as sb
from streambatch.loader.split import RankStuckError

from .conftest import ids_of


def run_ranks(splits, **kwargs):
    """Iterate every split on its own thread (as ranks would); return batches per rank."""
    out, errors = {}, {}

    def rank(split):
        try:
            out[split.rank] = list(split.iter_batches(batch_format="numpy", **kwargs))
        except BaseException as exc:  # noqa: BLE001 - inspected by the test
            errors[split.rank] = exc

    threads = [threading.Thread(target=rank, args=(s,)) for s in splits]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return [out.get(i) for i in range(len(splits))], errors


@pytest.mark.parametrize("rows,n,batch", [(103, 3, 10), (1000, 4, 64), (7, 2, 2), (10, 3, 4),
                                          (65, 2, 32), (30, 3, 10)])
def test_equal_batch_counts_and_every_row_once(rows, n, batch):
    splits = sb.range(rows, override_num_blocks=4).streaming_split(n, equal=True)
    per_rank, errors = run_ranks(splits, batch_size=batch)
    assert not errors
    counts = [len(b) for b in per_rank]
    assert len(set(counts)) == 1, counts
    assert all(len(x["id"]) <= batch for r in per_rank for x in r)
    assert sorted(sum((ids_of(r) for r in per_rank), [])) == list(range(rows))


def test_drop_last_gives_equal_counts_of_full_batches():
    splits = sb.range(103, override_num_blocks=4).streaming_split(3, equal=True)
    per_rank, errors = run_ranks(splits, batch_size=10, drop_last=True)
    assert not errors
    assert [len(b) for b in per_rank] == [3, 3, 3]
    assert {len(x["id"]) for r in per_rank for x in r} == {10}
    assert len(set(sum((ids_of(r) for r in per_rank), []))) == 90


def test_unequal_split_keeps_every_row():
    splits = sb.range(103, override_num_blocks=4).streaming_split(3, equal=False)
    per_rank, errors = run_ranks(splits, batch_size=10)
    assert not errors
    assert sorted(len(b) for b in per_rank) == [3, 4, 4]
    assert sorted(sum((ids_of(r) for r in per_rank), [])) == list(range(103))


def test_too_few_rows_for_equal_batches_says_what_to_do():
    splits = sb.range(2).streaming_split(3, equal=True)
    per_rank, errors = run_ranks(splits, batch_size=4)
    assert errors and all("drop_last=True" in str(e) for e in errors.values())


def test_several_epochs_and_shuffled_splits():
    splits = sb.range(200, override_num_blocks=4).streaming_split(2, equal=True)
    for _ in range(2):
        per_rank, errors = run_ranks(splits, batch_size=16, local_shuffle_buffer_size=50)
        assert not errors and len(per_rank[0]) == len(per_rank[1])
        assert sorted(sum((ids_of(r) for r in per_rank), [])) == list(range(200))


def test_torch_batches_per_rank():
    splits = sb.range(50).streaming_split(2, equal=True)
    out = {}
    t = threading.Thread(target=lambda: out.update(
        b=list(splits[1].iter_torch_batches(batch_size=8, device="cpu"))))
    t.start()
    a = list(splits[0].iter_torch_batches(batch_size=8, device="cpu"))
    t.join(60)
    assert len(a) == len(out["b"]) and isinstance(a[0]["id"], torch.Tensor)
    assert sorted(ids_of(a) + ids_of(out["b"])) == list(range(50))


def test_a_rank_that_stops_taking_batches_is_named():
    splits = sb.range(5000, override_num_blocks=4).streaming_split(2, equal=True, timeout_s=1.0)
    # rank 1 never iterates: rank 0 gets its share until rank 1's queue is full
    with pytest.raises(RankStuckError, match="rank 1 of 2") as info:
        for _ in splits[0].iter_batches(batch_size=10):
            pass
    assert info.value.rank == 1


def test_ranks_must_agree_on_batch_size():
    splits = sb.range(100).streaming_split(2, equal=True, timeout_s=5)
    first = splits[0].iter_batches(batch_size=10)
    with pytest.raises(ValueError, match="same batch_size"):
        list(splits[1].iter_batches(batch_size=20))
    first.close()


def test_ranks_in_this_process_get_one_chunk_per_column():
    """The coordinator deals batches cut from two blocks as they are (a chunk per block);
    a rank in this process gets each one joined."""
    from .conftest import image_table

    splits = sb.from_arrow(image_table(150), override_num_blocks=4).streaming_split(2, equal=True)
    out = {}
    t = threading.Thread(target=lambda: out.update(b=list(splits[1].iter_batches(
        batch_size=16, batch_format="pyarrow"))))
    t.start()
    a = list(splits[0].iter_batches(batch_size=16, batch_format="pyarrow"))
    t.join(60)
    assert len(a) == len(out["b"])
    assert all(c.num_chunks == 1 for b in a + out["b"] for c in b.columns)
    ids = sorted(i for b in a + out["b"] for i in b["id"].to_pylist())
    assert ids == list(range(150))
