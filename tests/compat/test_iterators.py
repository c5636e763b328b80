"""Ray Data's iterators, with only the import changed: ``ds.iterator()`` (a DataIterator),
``iter_batches(local_shuffle_buffer_size=, local_shuffle_seed=)`` on a dataset and on a
``streaming_split`` shard, and shards' ``iter_rows`` / ``materialize``."""

from __future__ import annotations

import threading

import pytest

import streambatch as sb


@pytest.fixture(autouse=True)
def _two_cpus():
    sb.init(num_cpus=2)
    yield
    sb.init()


def test_dataset_iterator_offers_batches_rows_tensors_and_materialize():
    it = sb.range(10, override_num_blocks=3).iterator()
    assert isinstance(it, sb.DataIterator)
    assert sorted(int(x) for b in it.iter_batches(batch_size=4, batch_format="numpy")
                  for x in b["id"]) == list(range(10))
    assert sorted(r["id"] for r in it.iter_rows()) == list(range(10))
    assert sorted(int(x) for b in it.iter_torch_batches(batch_size=3) for x in b["id"]) == \
        list(range(10))
    m = it.materialize()
    assert isinstance(m, sb.MaterializedDataset) and m.count() == 10


def test_iter_batches_with_a_local_shuffle_buffer():
    ds = sb.range(1000, override_num_blocks=4)
    plain = [int(x) for b in ds.iter_batches(batch_size=100, batch_format="numpy")
             for x in b["id"]]

    def shuffled(seed):
        return [int(x) for b in ds.iter_batches(batch_size=100, batch_format="numpy",
                                                local_shuffle_buffer_size=200,
                                                local_shuffle_seed=seed) for x in b["id"]]

    one = shuffled(3)
    assert sorted(one) == list(range(1000)) and one != sorted(one)
    assert len([b for b in ds.iter_batches(batch_size=100, local_shuffle_buffer_size=50)]) == 10
    assert sorted(plain) == list(range(1000))
    with pytest.raises(ValueError, match="local_shuffle_buffer_size"):
        ds.iter_batches(local_shuffle_seed=1)


def _in_threads(shards, consume):
    out, errors = {}, []

    def run(shard):
        try:
            out[shard.rank] = consume(shard)
        except Exception as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in shards]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    return out


def test_streaming_split_shards_iterate_rows_and_materialize():
    ds = sb.range(300, override_num_blocks=6)
    shards = ds.streaming_split(2, equal=True)
    assert all(isinstance(s, sb.DataIterator) for s in shards)
    rows = _in_threads(shards, lambda s: [r["id"] for r in s.iter_rows()])
    assert sorted(rows[0] + rows[1]) == list(range(300)) and len(rows[0]) == len(rows[1])
    held = _in_threads(ds.streaming_split(2), lambda s: s.materialize().count())
    assert held[0] + held[1] == 300


def test_streaming_split_shards_take_a_local_shuffle_buffer():
    shards = sb.range(400, override_num_blocks=4).streaming_split(2)
    got = _in_threads(shards, lambda s: [int(x) for b in s.iter_batches(
        batch_size=50, batch_format="numpy", local_shuffle_buffer_size=100,
        local_shuffle_seed=1) for x in b["id"]])
    assert sorted(got[0] + got[1]) == list(range(400))
    assert got[0] != sorted(got[0])
