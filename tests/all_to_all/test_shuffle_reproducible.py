"""A seeded shuffle gives the same order wherever it runs: on any number of blocks, CPUs,
buckets, memory budget or worker mode, after any row-wise steps (the order depends on
the seed and on the input rows in their order, nothing else). A different seed gives
another order; no seed, another order each run; the order looks random.

Random data and layouts (hypothesis); each layout's order is compared with the order
on one block and one CPU.
"""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

import streambatch as sb
from tests.all_to_all.test_adversarial_properties import FAST, STEPS, _run, pipelines, tables

# (blocks, cpus, buckets or None, worker mode, memory budget in MiB or None)
shuffle_layouts = st.tuples(st.integers(1, 9), st.integers(1, 3),
                            st.sampled_from([None, 1, 2, 7]), st.sampled_from(["auto", "threads"]),
                            st.sampled_from([None, 8]))


def shuffled(rows: list[dict], steps: list[str], layout, seed: int | None,
             backend: str = "local") -> list:
    """The rows after ``steps`` and a shuffle by ``seed`` on ``layout``, as ``i`` values
    tagged with their input position (rows may repeat)."""
    blocks, cpus, buckets, mode, budget = layout
    options = {"worker_mode": mode} if backend == "local" else {}
    if budget:
        options["memory_budget"] = budget * 2**20
    sb.init(num_cpus=cpus, backend=backend, **options)
    tagged = [dict(r, pos=j) for j, r in enumerate(rows)]
    ds = sb.from_items(tagged, override_num_blocks=max(1, min(blocks, len(tagged))))
    ds, _ = _run(steps, ds, tagged)
    return [r["pos"] for r in ds.random_shuffle(seed=seed, num_blocks=buckets).take_all()]


BASE = (1, 1, None, "threads", None)


@FAST
@given(tables(max_rows=80), pipelines, shuffle_layouts, st.integers(0, 2**31))
def test_a_seeded_shuffle_is_the_same_on_every_layout(data, steps, layout, seed):
    _, rows = data
    want = shuffled(rows, steps, BASE, seed)
    assert shuffled(rows, steps, layout, seed) == want
    expected = [dict(r, pos=j) for j, r in enumerate(rows)]
    for name in steps:  # the oracle: the steps on plain rows
        expected = STEPS[name][1](expected)
    assert Counter(want) == Counter(r["pos"] for r in expected)


def test_seeds_give_other_orders_and_no_seed_a_new_order_each_run():
    rows = [{"i": j} for j in range(2000)]
    layout = (4, 2, None, "threads", None)
    one, again = shuffled(rows, [], layout, 1), shuffled(rows, [], layout, 1)
    assert one == again and sorted(one) == list(range(2000))
    assert shuffled(rows, [], layout, 2) != one
    assert shuffled(rows, [], layout, None) != shuffled(rows, [], layout, None)


@pytest.mark.parametrize("seed", [0, 1, None])
def test_the_order_looks_random(seed):
    """Where a row lands does not depend on where it was: the rank correlation of input and
    output positions is near 0, and each quarter of the output holds about a quarter of
    each quarter of the input."""
    n = 8000
    got = shuffled([{"i": j} for j in range(n)], [], (8, 2, None, "threads", None), seed)
    mean = (n - 1) / 2
    cov = sum((a - mean) * (b - mean) for a, b in zip(got, range(n), strict=True))
    var = sum((a - mean) ** 2 for a in range(n))
    assert abs(cov / var) < 0.05
    quarters = Counter((pos * 4 // n, out * 4 // n) for out, pos in enumerate(got))
    assert all(abs(c - n / 16) < n / 16 * 0.2 for c in quarters.values()), quarters


def test_repartition_with_shuffle_makes_the_same_partitions_on_every_layout():
    rows = [{"i": j, "s": str(j)} for j in range(900)]

    def parts(blocks, cpus):
        sb.init(num_cpus=cpus)
        ds = sb.from_items(rows, override_num_blocks=blocks).repartition(4, shuffle=True, seed=3)
        return [b["i"].to_pylist() for b in ds.iter_batches(batch_size=None,
                                                               batch_format="pyarrow")]

    want = parts(1, 1)
    assert len(want) == 4 and sorted(x for p in want for x in p) == list(range(900))
    assert parts(7, 3) == want and parts(3, 2) == want


def test_steps_between_read_and_shuffle_keep_the_order_reproducible():
    """A flat_map that multiplies rows and a filter, on different layouts."""
    rows = [{"i": j} for j in range(500)]

    def order(blocks, cpus):
        sb.init(num_cpus=cpus)
        ds = sb.from_items(rows, override_num_blocks=blocks)
        ds = ds.flat_map(lambda r: [r, {"i": -r["i"]}]).filter(lambda r: r["i"] % 3 != 0)
        return [r["i"] for r in ds.random_shuffle(seed=11).take_all()]

    want = order(1, 1)
    assert order(6, 2) == want and order(9, 3) == want
    assert sorted(want) == sorted(x for j in range(500) for x in (j, -j) if x % 3 != 0)


@FAST
@given(st.integers(1, 300), st.integers(1, 9), st.integers(1, 3), st.integers(0, 2**31))
def test_the_default_bucket_count_changes_no_order(rows, blocks, cpus, seed):
    """A random shuffle that names no bucket count makes many small buckets (16 per CPU,
    so a seeded shuffle's ordered output reaches the next stage a block or two at a
    time); its order is the one of any other count, every row once."""
    from streambatch.operators.all_to_all import shuffle_buckets

    items = [{"i": j} for j in range(rows)]
    layout = (blocks, cpus, None, "threads", None)
    got = shuffled(items, [], layout, seed)
    assert sorted(got) == list(range(rows))
    assert got == shuffled(items, [], (blocks, cpus, 4, "threads", None), seed)
    assert got == shuffled(items, [], (1, 1, shuffle_buckets(cpus), "threads", None), seed)


def test_a_random_shuffle_plans_small_buckets_and_its_blocks_follow_them():
    from streambatch.session import Session

    sb.init(num_cpus=2)
    ds = sb.from_items([{"i": j} for j in range(3200)], override_num_blocks=4)
    stages = Session.current().stages(ds.random_shuffle(seed=5).logical_plan)
    map_side = next(s for s in stages if s.name.endswith(".map"))
    assert map_side.ops[0].n == 32  # 16 buckets per CPU
    sizes = [b.num_rows for b in ds.random_shuffle(seed=5).iter_batches(
        batch_size=None, batch_format="pyarrow")]
    assert sum(sizes) == 3200 and len(sizes) == 32 and max(sizes) < 200  # ~100 rows each
    # an explicit count is kept
    assert len(list(ds.random_shuffle(seed=5, num_blocks=3).iter_batches(
        batch_size=None, batch_format="pyarrow"))) == 3
