"""Resumable iteration: a saved mid-epoch position resumes with exactly the remaining rows."""

from __future__ import annotations

import json
import re

import pytest

import streambatch as sb

from .conftest import ids_of


def consume(it, batches):
    """Take ``batches`` batches of one epoch of ``it``; return their ids and the saved state."""
    seen = []
    epoch = iter(it)
    for _ in range(batches):
        seen += next(epoch)["id"].tolist()
    state = json.loads(json.dumps(it.state_dict()))  # the state survives a JSON round trip
    epoch.close()
    return seen, state


@pytest.mark.parametrize("shuffle,seed", [(None, None), (200, 4), (200, None), (5000, 9)])
@pytest.mark.parametrize("ordered", [False, True])
def test_mid_epoch_resume_yields_exactly_the_remaining_rows(images, shuffle, seed, ordered):
    sb.DataContext.get_current().execution_options.preserve_order = ordered
    kwargs = dict(batch_size=64, device="cpu", local_shuffle_buffer_size=shuffle,
                  local_shuffle_seed=seed)
    before, state = consume(images.iter_torch_batches(**kwargs), 6)
    assert len(before) == 6 * 64
    resumed = images.iter_torch_batches(**kwargs).load_state_dict(state)
    after = ids_of(resumed)
    assert sorted(before + after) == list(range(1000))
    assert not set(before) & set(after)


def test_resume_skips_read_partitions_already_delivered(images, tmp_path):
    sb.DataContext.get_current().execution_options.preserve_order = True
    before, state = consume(images.iter_torch_batches(batch_size=100, device="cpu"), 4)
    # 8 read partitions of 125 rows: 400 rows = 3 whole partitions and 25 rows of the 4th
    assert state["done"] == [0, 1, 2] and state["partial"] == {"3": [[0, 25]]}
    resumed = images.iter_torch_batches(batch_size=100, device="cpu").load_state_dict(state)
    assert ids_of(resumed) == list(range(400, 1000))
    assert images.stats().stages[0].rows_out == 625  # the 3 done partitions were not read


def test_resume_then_continue_with_the_next_epoch(images):
    before, state = consume(images.iter_torch_batches(batch_size=64, device="cpu"), 3)
    it = images.iter_torch_batches(batch_size=64, device="cpu").load_state_dict(state)
    assert sorted(before + ids_of(it)) == list(range(1000))
    assert sorted(ids_of(it)) == list(range(1000))  # the following epoch is whole again
    assert it.state_dict()["epoch"] == 1


def test_state_after_a_full_epoch_resumes_to_nothing(images):
    it = images.iter_torch_batches(batch_size=100, device="cpu")
    assert len(ids_of(it)) == 1000
    state = it.state_dict()
    assert state["done"] == list(range(8)) and state["partial"] == {}
    assert ids_of(images.iter_torch_batches(batch_size=100).load_state_dict(state)) == []


def test_resume_when_the_plan_does_not_run_in_its_read_tasks(images):
    """An actor stage keeps the plan out of the read tasks: the position is a row count
    in output order, deterministic with preserve_order (turned on by a seed)."""
    class Same:
        def __call__(self, batch):
            return batch

    # (a given batch size bundles blocks of several reads, as the 1024-row default did)
    ds = images.map_batches(Same, concurrency=1, batch_format="pyarrow", batch_size=1024)
    kwargs = dict(batch_size=64, device="cpu", local_shuffle_buffer_size=300,
                  local_shuffle_seed=2)
    before, state = consume(ds.iter_torch_batches(**kwargs), 5)
    assert state["mode"] == "ordered"
    after = ids_of(ds.iter_torch_batches(**kwargs).load_state_dict(state))
    assert sorted(before + after) == list(range(1000)) and not set(before) & set(after)


def test_unordered_plan_outside_read_tasks_cannot_save_a_position(images):
    ds = images.limit(500)
    it = ds.iter_torch_batches(batch_size=64, device="cpu")
    epoch = iter(it)
    next(epoch)
    with pytest.raises(ValueError, match="preserve_order=True"):
        it.state_dict()
    epoch.close()


def test_state_from_another_layout_is_refused(images):
    _, state = consume(images.iter_torch_batches(batch_size=64, device="cpu"), 1)
    other = sb.from_arrow(images.to_arrow(), override_num_blocks=5)
    with pytest.raises(ValueError, match="5 read partitions"):
        list(other.iter_torch_batches(batch_size=64).load_state_dict(state))
    with pytest.raises(ValueError, match="state saved by state_dict"):
        images.iter_torch_batches().load_state_dict({"rows": 3})


def _multi_stage(images):
    """Read -> filter (fused into the read) -> an actor stage -> another filter: the plan
    does not run inside its read tasks, and the filters change row counts."""
    class Tag:
        def __call__(self, batch):
            return batch.append_column("tag", batch["id"])

    return (images.filter(lambda r: r["id"] % 3 != 0)
            .map_batches(Tag, concurrency=1, batch_size=None, batch_format="pyarrow")
            .filter(lambda r: r["id"] % 5 != 0))


@pytest.mark.parametrize("shuffle,seed", [(None, None), (200, 4), (200, None)])
def test_multi_stage_plan_with_filters_resumes_exactly_by_lineage_keys(images, shuffle, seed):
    ds = _multi_stage(images)
    expected = [i for i in range(1000) if i % 3 and i % 5]
    kwargs = dict(batch_size=50, device="cpu", local_shuffle_buffer_size=shuffle,
                  local_shuffle_seed=seed)
    before, state = consume(ds.iter_torch_batches(**kwargs), 5)
    assert state["mode"] == "keys" and len(before) == 250
    after = ids_of(ds.iter_torch_batches(**kwargs).load_state_dict(state))
    assert sorted(before + after) == expected
    assert not set(before) & set(after)


def test_multi_stage_resume_does_not_reread_partitions_fully_delivered(images):
    sb.DataContext.get_current().execution_options.preserve_order = True
    ds = _multi_stage(images)
    before, state = consume(ds.iter_torch_batches(batch_size=50, device="cpu"), 4)
    # the 125-row read partitions keep 67, 66, 67... rows: 200 rows = reads 0, 1 and 2;
    # 0 and 1 are known to be settled (the one actor ran their tasks before read 2's),
    # read 2 is listed as done once its settling has been seen, else by its partition keys
    assert state["done"] in ([0, 1], [0, 1, 2])
    resumed = ds.iter_torch_batches(batch_size=50, device="cpu").load_state_dict(state)
    after = ids_of(resumed)
    assert before + after == [i for i in range(1000) if i % 3 and i % 5]
    reread = [i for i in range(1000) if i // 125 not in state["done"] and i % 3]
    assert ds.stats().stages[0].rows_out == len(reread)  # done reads were not read again


@pytest.mark.parametrize("started", [False, True])
def test_a_state_saved_before_the_first_batch_resumes_the_whole_epoch(images, started):
    """A step-0 checkpoint (state_dict before any batch) could not be loaded: "the
    dataset now has 8 read partitions; the state was saved with 0". It resumes the epoch
    from its start, with the same shuffle."""
    kwargs = dict(batch_size=64, device="cpu", local_shuffle_buffer_size=200, local_shuffle_seed=5)
    first = ids_of(images.iter_torch_batches(**kwargs))
    it = images.iter_torch_batches(**kwargs)
    if started:
        iter(it)  # an epoch begun, no batch taken
    state = json.loads(json.dumps(it.state_dict()))
    resumed = images.iter_torch_batches(**kwargs).load_state_dict(state)
    assert ids_of(resumed) == first and sorted(first) == list(range(1000))
    assert resumed.state_dict()["epoch"] == 0


@pytest.mark.parametrize("make,named", [
    (lambda ds: ds.random_shuffle(), "random_shuffle()"),
    (lambda ds: ds.repartition(4, shuffle=True), "repartition(shuffle=True)"),
    (lambda ds: ds.random_sample(0.9), "random_sample()"),
    (lambda ds: ds.randomize_block_order(), "randomize_block_order()"),
])
def test_a_position_in_an_unseeded_random_plan_is_refused(make, named):
    """The state held a row count or read keys; an unseeded shuffle, sample or block
    order reads another order on the resumed run: 242 of 1000 rows came twice, as many
    never."""
    sb.DataContext.get_current().execution_options.preserve_order = True
    try:
        it = make(sb.range(200, override_num_blocks=4)).iter_torch_batches(batch_size=10,
                                                                           device="cpu")
        epoch = iter(it)
        next(epoch)
        with pytest.raises(ValueError, match=re.escape(named) + " has no seed"):
            it.state_dict()
        epoch.close()
    finally:
        sb.DataContext.get_current().execution_options.preserve_order = False


def test_a_position_in_a_seeded_shuffle_resumes_exactly():
    sb.DataContext.get_current().execution_options.preserve_order = True
    try:
        ds = sb.range(300, override_num_blocks=4).random_shuffle(seed=3)
        it = ds.iter_torch_batches(batch_size=10, device="cpu")
        epoch = iter(it)
        first = [i for _ in range(7) for i in next(epoch)["id"].tolist()]
        state = json.loads(json.dumps(it.state_dict()))
        epoch.close()
        again = ds.iter_torch_batches(batch_size=10, device="cpu").load_state_dict(state)
        rest = [i for b in again for i in b["id"].tolist()]
        assert sorted(first + rest) == list(range(300))
    finally:
        sb.DataContext.get_current().execution_options.preserve_order = False
