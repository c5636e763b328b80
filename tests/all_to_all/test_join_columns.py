"""A join's output columns: no two of one name (a clash of a suffixed name with a column
that has it lost one column's values, silently)."""

from __future__ import annotations

import pickle

import pyarrow as pa
import pytest
from streambatch.operators.join_columns import JoinColumnsError

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
