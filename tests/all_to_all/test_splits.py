"""Cutting a dataset into several (in its order) and pairing two, with Ray Data's names."""

from __future__ import annotations

import pytest

import streambatch as sb


@pytest.fixture(autouse=True)
def _context():
    sb.init(num_cpus=2)
    yield
    sb.init()


def _ids(ds) -> list[int]:
    return [r["id"] for r in ds.take_all()]


@pytest.mark.parametrize("blocks", [1, 3, 7])
def test_split_at_indices_cuts_the_dataset_in_its_order(blocks):
    ds = sb.range(50, override_num_blocks=blocks).map(lambda r: {"id": r["id"]})
    parts = ds.split_at_indices([0, 10, 10, 33, 80])
    assert [_ids(p) for p in parts] == [[], list(range(10)), [], list(range(10, 33)),
                                        list(range(33, 50)), []]


@pytest.mark.parametrize("n,equal", [(3, False), (3, True), (7, False), (60, False)])
def test_split_gives_every_row_once_in_n_parts(n, equal):
    parts = sb.range(50, override_num_blocks=4).split(n, equal=equal)
    sizes = [p.count() for p in parts]
    assert len(parts) == n and max(sizes) - min(sizes) <= (0 if equal else 1)
    got = [i for p in parts for i in _ids(p)]
    assert got == list(range(sum(sizes)))
    assert sum(sizes) == (50 // n * n if equal else 50)


def test_split_proportionately_and_train_test_split():
    assert [p.count() for p in sb.range(100).split_proportionately([0.1, 0.25])] == [10, 25, 65]
    train, test = sb.range(100).train_test_split(0.25)
    assert _ids(train) == list(range(75)) and _ids(test) == list(range(75, 100))
    train, test = sb.range(100).train_test_split(10, shuffle=True, seed=5)
    again_train, again_test = sb.range(100).train_test_split(10, shuffle=True, seed=5)
    assert sorted(_ids(train) + _ids(test)) == list(range(100)) and len(_ids(test)) == 10
    assert _ids(test) == _ids(again_test) and _ids(test) != list(range(90, 100))
    with pytest.raises(ValueError, match="test_size"):
        sb.range(10).train_test_split(1.5)


@pytest.mark.parametrize("rows,proportions,sizes", [
    (10, [0.1, 0.1], [1, 1, 8]), (3, [0.34, 0.33], [1, 1, 1]), (100, [0.07], [7, 93]),
    (7, [0.5, 0.49], [3, 3, 1]), (20, [0.1, 0.04], [1, 1, 18]),  # (was [2, 0, 18])
])
def test_split_proportionately_cuts_as_ray_data_and_makes_no_empty_part(rows, proportions, sizes):
    parts = sb.range(rows).split_proportionately(proportions)
    assert [p.count() for p in parts] == sizes
    assert sorted(i for p in parts for i in _ids(p)) == list(range(rows))


@pytest.mark.parametrize("call", [
    lambda: sb.range(3).split_proportionately([0.1, 0.1]),  # was [0, 0, 3]
    lambda: sb.range(10).train_test_split(0.99),  # was train 0 rows, test 10
    lambda: sb.range(1).train_test_split(0.5),
    lambda: sb.range(5).train_test_split(5),  # no train row (Ray refuses it too)
])
def test_too_few_rows_for_non_empty_parts_is_an_error(call):
    with pytest.raises(ValueError, match="cannot make .* non-empty parts|leaves no row"):
        call()


def test_take_batch_of_an_empty_dataset_is_an_error_as_in_ray_data():
    with pytest.raises(ValueError, match="the dataset is empty"):  # (it returned None)
        sb.range(4).filter(lambda r: r["id"] > 9).take_batch(2)


def test_zip_pairs_rows_in_order_and_renames_clashing_columns():
    a = sb.range(20, override_num_blocks=3)
    b = sb.range(20, override_num_blocks=5).map(lambda r: {"id": r["id"] * 10, "x": r["id"]})
    rows = a.zip(b).take_all()
    assert rows == [{"id": i, "id_1": i * 10, "x": i} for i in range(20)]
    with pytest.raises(ValueError, match="same number of rows"):
        a.zip(sb.range(3)).take_all()


@pytest.mark.parametrize("before, message", [
    (lambda ds: ds.limit(100), "change the rows the limit keeps"),
    (lambda ds: ds.sort("id", descending=True), "cannot change the order"),
    (lambda ds: ds.random_shuffle(seed=1), "cannot change the order")])
def test_randomize_block_order_after_a_limit_or_an_all_to_all_is_refused(before, message):
    """It reorders the reads: after limit(100) of 1000 rows it kept rows 800-899; after a
    sort it did nothing. Both are an error saying to call it earlier."""
    ds = before(sb.range(1000, override_num_blocks=10))
    with pytest.raises(ValueError, match=message):
        ds.randomize_block_order(seed=1)


def test_random_sample_keeps_about_the_fraction_and_a_seed_repeats_it():
    ds = sb.range(4000, override_num_blocks=4)
    first = sorted(_ids(ds.random_sample(0.25, seed=7)))
    assert first == sorted(_ids(ds.random_sample(0.25, seed=7)))
    assert 800 < len(first) < 1200 and len(set(first)) == len(first)
    assert ds.random_sample(0.0).count() == 0 and ds.random_sample(1.0).count() == 4000


def test_randomize_block_order_keeps_the_rows_and_moves_blocks():
    ds = sb.range(100, override_num_blocks=10)
    sb.DataContext.get_current().execution_options.preserve_order = True
    try:
        order = _ids(ds.randomize_block_order(seed=3))
        assert sorted(order) == list(range(100)) and order != list(range(100))
        assert order == _ids(ds.randomize_block_order(seed=3))
        unseeded = ds.randomize_block_order()  # another order each run, as Ray's (every
        runs = [_ids(unseeded) for _ in range(4)]  # epoch read the same order)
        assert all(sorted(r) == list(range(100)) for r in runs)
        assert len({tuple(r) for r in runs}) > 1
    finally:
        sb.DataContext.get_current().execution_options.preserve_order = False
