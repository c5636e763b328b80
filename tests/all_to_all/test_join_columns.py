"""A join's output columns: no two of one name (a clash of a suffixed name with a column
that has it lost one column's values, silently), and columns of types Arrow's hash join
does not carry (list, struct, tensor), which failed the join, joined by row number."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pyarrow as pa
import pytest
from streambatch.operators.join_columns import JoinColumnsError, joinable

import streambatch as sb


@pytest.fixture(autouse=True)
def _context():
    sb.init(num_cpus=2, progress=False)
    yield
    sb.init()


# ---- names that clash -----------------------------------------------------------------
def test_a_suffixed_name_that_the_left_side_has_is_refused_naming_it():
    """left v, v_1 and right v: right v became v_1 beside left v_1, and a row kept one."""
    left = sb.from_items([{"k": 1, "v": 10, "v_1": 11}])
    right = sb.from_items([{"k": 1, "v": 20}])
    joined = left.join(right, on="k")
    with pytest.raises(ValueError, match=r"'v_1'.*right_suffix '_1'.*another right_suffix"):
        joined.columns()
    with pytest.raises(JoinColumnsError, match="right_suffix='_right'"):
        joined.take_all()
    got = left.join(right, on="k", right_suffix="_right").take_all()
    assert got == [{"k": 1, "v": 10, "v_1": 11, "v_right": 20}]


def test_the_clash_is_refused_when_the_join_is_made_where_the_columns_are_known():
    left = sb.from_arrow(pa.table({"k": [1], "v": [10], "v_1": [11]}))
    right = sb.from_arrow(pa.table({"k": [1], "v": [20]}))
    with pytest.raises(ValueError, match="output column 'v_1'"):
        left.join(right, on="k")  # nothing runs
    assert left.join(right, on="k", how="semi").take_all() == [{"k": 1, "v": 10, "v_1": 11}]


@pytest.mark.parametrize("how", ["inner", "left", "right", "outer"])
def test_a_left_suffix_clash_and_no_suffix_at_all_are_refused(how):
    left = sb.from_items([{"k": 1, "v": 10}])
    right = sb.from_items([{"k": 1, "v": 20, "v_l": 21}])
    with pytest.raises(ValueError, match=r"left side's column 'v' \(renamed 'v_l' by "
                                         r"left_suffix '_l'.*another left_suffix"):
        left.join(right, on="k", how=how, left_suffix="_l", right_suffix="_r").take_all()
    with pytest.raises(ValueError, match="left side's column 'v' and the right side's "
                                         "column 'v'.*another right_suffix"):
        left.join(right, on="k", how=how, right_suffix="").take_all()


def test_the_error_crosses_processes():
    err = pickle.loads(pickle.dumps(JoinColumnsError("join: clash")))
    assert isinstance(err, ValueError) and str(err) == "join: clash"


# ---- columns Arrow's join does not carry ------------------------------------------------
def test_types_arrow_joins_and_those_it_does_not():
    assert joinable(pa.string()) and joinable(pa.dictionary(pa.int32(), pa.string()))
    for kind in (pa.list_(pa.int64()), pa.struct([("a", pa.int8())]), pa.null(),
                 pa.fixed_shape_tensor(pa.float64(), [3], permutation=[0])):
        assert not joinable(kind)


def _rows(rng: random.Random, n: int, side: str) -> list[dict]:
    rows = []
    for i in range(n):
        row = {"k": None if rng.random() < 0.1 else rng.randrange(8), "x": rng.randrange(100),
               "tags": None if rng.random() < 0.2 else
               [rng.randrange(9) for _ in range(rng.randrange(4))]}
        if side == "left":
            row["meta"] = {"a": i, "b": str(rng.randrange(3))}
            row["emb"] = np.full(2, float(i))
        else:
            row["shape"] = np.zeros(1 + rng.randrange(3))  # a tensor of varying shape
        rows.append(row)
    return rows


def _oracle(left: list[dict], right: list[dict], how: str) -> list[dict]:
    """SQL's join of the rows: a null key matches nothing; right's k is dropped and its
    columns that left has too get "_1"."""
    lcols, rcols = list(left[0]), [c for c in right[0] if c != "k"]
    rname = {c: c + "_1" if c in lcols else c for c in rcols}
    out, matched = [], set()
    for lrow in left:
        hits = [j for j, r in enumerate(right) if lrow["k"] is not None and r["k"] == lrow["k"]]
        matched.update(hits)
        for j in hits or ([None] if how in ("left", "outer") else []):
            out.append({**lrow, **{rname[c]: None if j is None else right[j][c] for c in rcols}})
    if how in ("right", "outer"):
        for j, rrow in enumerate(right):
            if j not in matched:
                out.append({**{c: None for c in lcols}, "k": rrow["k"],
                            **{rname[c]: rrow[c] for c in rcols}})
    return out


def _plain(row: dict) -> str:
    return repr(sorted((k, v.tolist() if isinstance(v, np.ndarray) else v)
                       for k, v in row.items()))


@pytest.mark.parametrize("how", ["inner", "left", "right", "outer"])
@pytest.mark.parametrize("seed,blocks", [(1, 1), (2, 3), (3, 5)])
def test_list_struct_and_tensor_columns_join_as_the_oracle_does(how, seed, blocks):
    rng = random.Random(seed)
    left, right = _rows(rng, 40, "left"), _rows(rng, 30, "right")
    got = sb.from_items(left, override_num_blocks=blocks).join(
        sb.from_items(right, override_num_blocks=max(1, blocks - 1)), on="k", how=how)
    rows = got.take_all()
    assert sorted(map(_plain, rows)) == sorted(map(_plain, _oracle(left, right, how)))
    assert got.columns() == (["x", "tags", "meta", "emb", "k", "x_1", "tags_1", "shape"]
                             if how == "right" else
                             ["k", "x", "tags", "meta", "emb", "x_1", "tags_1", "shape"])


@pytest.mark.parametrize("how", ["semi", "anti"])
def test_semi_and_anti_joins_keep_the_left_columns_of_any_type(how):
    left = [{"k": i, "tags": [i], "emb": np.ones(2) * i} for i in range(4)]
    right = sb.from_items([{"k": 1, "tags": [9, 9]}, {"k": 3, "tags": []}])
    rows = sb.from_items(left).join(right, on="k", how=how).take_all()
    keep = {1, 3} if how == "semi" else {0, 2}
    assert sorted(map(_plain, rows)) == sorted(_plain(r) for r in left if r["k"] in keep)


def test_the_repro_rows_of_lists_structs_and_tensors():
    left = sb.from_items([{"id": i, "tags": [i, i + 1], "meta": {"a": i}, "emb": np.ones(3) * i}
                          for i in range(4)])
    right = sb.from_items([{"id": 1, "w": "x"}, {"id": 3, "w": "y"}])
    rows = sorted(left.join(right, on="id").take_all(), key=lambda r: r["id"])
    assert [(r["id"], r["tags"], r["meta"], r["emb"].tolist(), r["w"]) for r in rows] == [
        (1, [1, 2], {"a": 1}, [1.0, 1.0, 1.0], "x"), (3, [3, 4], {"a": 3}, [3.0] * 3, "y")]
