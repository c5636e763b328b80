"""Joins against a plain-Python oracle with SQL's semantics (a null key matches nothing),
for every join type, random data and layouts."""

from __future__ import annotations

import random

import pytest

import streambatch as sb


def _side(seed: int, rows: int, name: str) -> list[dict]:
    rng = random.Random(seed)
    return [{"k": None if rng.random() < 0.1 else rng.randrange(0, 15),
             name: rng.randrange(1000), "same": rng.randrange(5)} for _ in range(rows)]


def _oracle(left, right, how):
    out = []
    matched_right = set()
    for lrow in left:
        hits = [(j, r) for j, r in enumerate(right) if lrow["k"] is not None and r["k"] == lrow["k"]]
        if how == "semi":
            out += [lrow] if hits else []
            continue
        if how == "anti":
            out += [] if hits else [lrow]
            continue
        for j, r in hits:
            matched_right.add(j)
            out.append({"k": lrow["k"], "a": lrow["a"], "same": lrow["same"], "b": r["b"], "same_1": r["same"]})
        if not hits and how in ("left", "outer"):
            out.append({"k": lrow["k"], "a": lrow["a"], "same": lrow["same"], "b": None, "same_1": None})
    if how in ("right", "outer"):
        for j, r in enumerate(right):
            if j not in matched_right:
                out.append({"k": r["k"], "a": None, "same": None, "b": r["b"], "same_1": r["same"]})
    return out


def _key(row):
    return tuple((v is None, v if v is not None else 0) for v in
                 (row.get("k"), row.get("a"), row.get("b"), row.get("same"), row.get("same_1")))


@pytest.fixture(autouse=True)
def _context():
    sb.init(num_cpus=2)
    yield
    sb.init()


@pytest.mark.parametrize("how", ["inner", "left", "right", "outer", "semi", "anti"])
@pytest.mark.parametrize("seed,blocks", [(1, 1), (2, 4), (3, 7)])
def test_join_matches_sql_semantics(how, seed, blocks):
    left, right = _side(seed, 120, "a"), _side(seed + 100, 90, "b")
    got = sb.from_items(left, override_num_blocks=blocks).join(
        sb.from_items(right, override_num_blocks=max(1, blocks - 1)), on="k", how=how).take_all()
    expected = _oracle(left, right, how)
    if how in ("semi", "anti"):
        expected = [dict(r) for r in expected]
    assert sorted(map(_key, got)) == sorted(map(_key, expected))
    assert len(got) == len(expected)


def test_join_with_other_key_names_and_ray_join_type_names():
    users = sb.from_items([{"uid": i, "name": f"u{i}"} for i in range(5)])
    orders = sb.from_items([{"user": i % 3, "total": i} for i in range(9)])
    got = users.join(orders, on="uid", right_on="user", how="left_outer").take_all()
    assert len(got) == 9 + 2  # users 3 and 4 have no order
    assert sorted((r["uid"], r["total"]) for r in got if r["total"] is not None) == \
        sorted((i % 3, i) for i in range(9))
    with pytest.raises(ValueError, match="join_type='sideways'"):
        users.join(orders, on="uid", right_on="user", how="sideways")


def test_join_takes_ray_datas_signature_as_it_is():
    """Ray Data: ``join(ds, join_type, num_partitions, on=("id",), right_on=None,
    left_suffix=None, right_suffix=None)``; the call below was a TypeError."""
    users = sb.from_items([{"id": i, "name": f"u{i}"} for i in range(5)])
    orders = sb.from_items([{"id": i % 3, "total": i} for i in range(9)])
    got = users.join(orders, "left_outer", 4, on=("id",), right_on=("id",),
                     left_suffix=None, right_suffix=None, partition_size_hint=1 << 20).take_all()
    assert sorted((r["id"], r["total"]) for r in got) == \
        sorted([(i % 3, i) for i in range(9)] + [(3, None), (4, None)], key=str)
    assert users.join(orders, "inner", 2).count() == 9  # on=("id",) by default, as Ray's
    assert users.join(orders, join_type="left_anti", num_partitions=2).count() == 2
    with pytest.raises(ValueError, match="pass one of them"):
        users.join(orders, "right", how="left")
    assert users.join(orders, "left", how="left").count() == 11


def test_join_with_an_empty_side():
    left = sb.from_items([{"k": 1, "a": 1}, {"k": 2, "a": 2}])
    empty = sb.from_items([{"k": 1, "b": 1}]).filter(lambda r: False)
    assert left.join(empty, on="k", how="inner").take_all() == []
    assert sorted(r["a"] for r in left.join(empty, on="k", how="left").take_all()) == [1, 2]
    assert sorted(r["a"] for r in left.join(empty, on="k", how="anti").take_all()) == [1, 2]


@pytest.mark.parametrize("how", ["inner", "left", "right", "outer", "semi", "anti"])
@pytest.mark.parametrize("nulls", ["a", "k"])
def test_join_where_a_column_is_all_null(how, nulls):
    """A column whose values are all None has Arrow's null type, which Arrow's hash join
    refuses (key or not): the join failed, blaming the user's code. Here every left "a"
    (a column that is not a key) or every right key is None."""
    left, right = _side(5, 60, "a"), _side(105, 50, "b")
    for row in left if nulls == "a" else right:
        row[nulls] = None
    got = sb.from_items(left, override_num_blocks=3).join(
        sb.from_items(right, override_num_blocks=2), on="k", how=how).take_all()
    expected = _oracle(left, right, how)
    assert sorted(map(_key, got)) == sorted(map(_key, expected))
    assert len(got) == len(expected)


def test_join_on_an_integer_and_a_float_key_matches_as_sql_does():
    """Arrow's join refused keys of two types (int64 and double); SQL compares 1 = 1.0."""
    left = sb.from_items([{"k": 1, "a": 1}, {"k": 3, "a": 3}])
    right = sb.from_items([{"k": 1.0, "b": 2}, {"k": 2.5, "b": 3}])
    got = sorted(left.join(right, on="k", how="outer").take_all(), key=lambda r: r["k"])
    assert got == [{"k": 1.0, "a": 1, "b": 2}, {"k": 2.5, "a": None, "b": 3},
                   {"k": 3.0, "a": 3, "b": None}]


@pytest.mark.parametrize("job", ["join", "sort"])
def test_keys_of_kinds_that_do_not_compare_fail_naming_them(job):
    """A number on one side and text on the other failed deep in the key-range cut with
    Python's "'<' not supported between instances of 'str' and 'int'"."""
    numbers = sb.from_items([{"k": 1}, {"k": 2}])
    texts = sb.from_items([{"k": "1"}])
    ds = numbers.join(texts, on="k") if job == "join" else numbers.union(texts).sort("k")
    with pytest.raises(TypeError, match="key 'k' holds int64 in one input and string"):
        ds.take_all()


@pytest.mark.parametrize("partitions", [1, 3])
@pytest.mark.parametrize("how,want", [
    ("inner", [(0.0, 1, 10), (2.5, 2, 20)]), ("left", [(0.0, 1, 10), (2.5, 2, 20), (7.0, 3, None)]),
    ("outer", [(0.0, 1, 10), (2.5, 2, 20), (7.0, 3, None), (9.0, None, 30)]),
    ("semi", [(0.0, 1), (2.5, 2)]), ("anti", [(7.0, 3)]),
])
def test_a_negative_zero_key_matches_zero_as_in_sql(how, want, partitions):
    """Arrow's hash join compares a float key's bits: -0.0 did not match 0.0 (inner and
    semi lost the row, left gave it no match, outer made two rows), while groupby made
    them one group."""
    left = sb.from_items([{"f": 0.0, "l": 1}, {"f": 2.5, "l": 2}, {"f": 7.0, "l": 3}],
                         override_num_blocks=2)
    right = sb.from_items([{"f": -0.0, "r": 10}, {"f": 2.5, "r": 20}, {"f": 9.0, "r": 30}],
                          override_num_blocks=2)
    got = left.join(right, on="f", how=how, num_partitions=partitions).take_all()
    assert sorted(str(tuple(r.values())) for r in got) == sorted(map(str, want))


@pytest.mark.parametrize("before", ["none", "sort", "shuffle", "repartition"])
def test_an_empty_side_keeps_its_columns_through_a_sort_or_shuffle(before):
    """An empty left that went through a sort or a random_shuffle lost its columns: an
    outer join then gave rows without 'id' and 'v' (later steps failed naming them)."""
    left = sb.from_items([{"id": 0, "k": 1, "v": "x"}]).filter(lambda r: False)
    left = {"none": left, "sort": left.sort("k"), "shuffle": left.random_shuffle(seed=1),
            "repartition": left.repartition(3)}[before]
    right = sb.from_items([{"k": 1, "r": 10}, {"k": 2, "r": 20}])
    got = left.join(right, on="k", how="outer").take_all()
    assert sorted(got, key=lambda r: r["k"]) == [{"id": None, "k": 1, "v": None, "r": 10},
                                                 {"id": None, "k": 2, "v": None, "r": 20}]
    assert left.columns() == ["id", "k", "v"] and left.take_all() == []


@pytest.mark.parametrize("blocks", [1, 3])
def test_ray_datas_right_semi_and_right_anti_joins(blocks):
    """Ray Data's join types right_semi/right_anti (the other side's rows that have a
    match, or none) were refused."""
    left = sb.from_items([{"k": 1, "a": 1}, {"k": 2, "a": 2}, {"k": None, "a": 0}],
                         override_num_blocks=blocks)
    right = sb.from_items([{"k": 2, "b": 20}, {"k": 3, "b": 30}, {"k": 3, "b": 31},
                           {"k": None, "b": 0}], override_num_blocks=blocks)
    semi = left.join(right, "right_semi", 2, on=("k",)).take_all()
    anti = left.join(right, "right_anti", 2, on=("k",)).take_all()
    assert semi == [{"k": 2, "b": 20}]
    assert sorted(map(str, anti)) == sorted(map(str, [{"k": 3, "b": 30}, {"k": 3, "b": 31},
                                                      {"k": None, "b": 0}]))


def test_a_shuffle_makes_no_empty_blocks_for_buckets_that_drew_no_row():
    """(Keeping an empty dataset's columns through a shuffle made every empty bucket a
    block: 3 rows came out in 32 blocks.)"""
    assert sb.range(3).random_shuffle(seed=2).materialize().num_blocks() <= 3
    empty = sb.range(3).filter(lambda r: False).random_shuffle(seed=2).materialize()
    assert empty.num_blocks() == 1 and empty.columns() == ["id"] and empty.count() == 0
